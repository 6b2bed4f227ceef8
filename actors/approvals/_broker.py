"""Command approval questions: asked once, answered by the client or the guardian, remembered, timed out.

Contract:
- ``ExecApprovals`` is shared by a session and all its subagents (one per session tree). ``decide(question,
  emit)`` (trio) returns an ``ExecDecision``:
  - a command approved for the session (same command line, same escalation) is approved without asking;
    one the guardian rejected is rejected without asking again;
  - identical questions asked at the same time (three subagents running the same command) share one
    question and all get its answer;
  - otherwise it emits ``ExecApprovalRequested`` through ``emit`` (the asking agent's own stream; a
    subagent's events reach the root's stream with its agent path) and waits for ``resolve(id, decision)``
    from any thread (the ResolveApproval RPC), or asks the ``reviewer`` (the guardian) when there is one;
  - no answer within ``timeout_s`` is a denial; every answer is followed by ``ExecApprovalResolved``.
- With a reviewer, a circuit breaker counts its denials per turn (Codex: 3 in a row, or 10 of the last 50,
  aborts the turn): past the limit the decision is ``ABORT``.
- ``deny_all()`` denies every pending question (the session stops).
"""

from __future__ import annotations

import collections
import enum
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from google.protobuf.message import Message

from actors.core import set_event_soon
from protos.supervisor.v1 import approvals_pb2

__all__ = [
    "DEFAULT_EXEC_APPROVAL_TIMEOUT_S",
    "DEFAULT_MAX_CONSECUTIVE_DENIALS",
    "ExecApprovals",
    "ExecDecision",
    "Question",
    "Review",
    "Reviewer",
]

logger = logging.getLogger(__name__)

#: How long a command waits for an answer before it counts as denied.
DEFAULT_EXEC_APPROVAL_TIMEOUT_S = 60.0
#: Guardian denials in a row, within one turn, that abort the turn (Codex's value).
DEFAULT_MAX_CONSECUTIVE_DENIALS = 3
#: Guardian denials among the last ``DENIAL_WINDOW`` reviews of one turn that abort it (Codex's values).
MAX_RECENT_DENIALS = 10
DENIAL_WINDOW = 50
APPROVAL_ID_BYTES = 8

Emit = Callable[[Message], None]


class ExecDecision(enum.StrEnum):
    """An answer to a command approval question."""

    APPROVE_ONCE = "approve_once"
    APPROVE_FOR_SESSION = "approve_for_session"
    DENY = "deny"
    ABORT = "abort"

    @property
    def approved(self) -> bool:
        """True for both approvals."""
        return self in (ExecDecision.APPROVE_ONCE, ExecDecision.APPROVE_FOR_SESSION)


@dataclass(frozen=True)
class Question:
    """One command waiting for approval."""

    command: str
    cwd: str
    reason: str
    agent_path: str = "/root"
    call_id: str = ""
    escalation: bool = False
    turn_id: str = ""
    #: Recent conversation, for the guardian (the user's request, the model's last messages).
    context: str = ""

    @property
    def key(self) -> tuple[str, bool]:
        """What an approval for the session is remembered by."""
        return self.command, self.escalation


@dataclass(frozen=True)
class Review:
    """A reviewer's answer and its reason."""

    decision: ExecDecision
    rationale: str = ""


Reviewer = Callable[[Question], Awaitable[Review]]


@dataclass
class _Pending:
    token: trio.lowlevel.TrioToken
    done: trio.Event = field(default_factory=trio.Event)
    decision: ExecDecision = ExecDecision.DENY
    approval_id: str = ""


class ExecApprovals:
    """The approval questions of one session tree; see the module docstring."""

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_EXEC_APPROVAL_TIMEOUT_S,
        reviewer: Reviewer | None = None,
        max_consecutive_denials: int = DEFAULT_MAX_CONSECUTIVE_DENIALS,
    ) -> None:
        self.timeout_s = timeout_s
        self.reviewer = reviewer
        self.max_consecutive_denials = max_consecutive_denials
        self._lock = threading.Lock()
        self._approved: set[tuple[str, bool]] = set()
        self._rejected: set[tuple[str, bool]] = set()
        self._pending: dict[tuple[str, bool], _Pending] = {}
        self._by_id: dict[str, _Pending] = {}
        self._consecutive: dict[str, int] = collections.defaultdict(int)
        self._recent: dict[str, collections.deque[bool]] = collections.defaultdict(
            lambda: collections.deque(maxlen=DENIAL_WINDOW))
        #: Questions actually put to the client or the reviewer (not remembered, not shared).
        self.questions_asked = 0

    def pending_ids(self) -> list[str]:
        """Ids of the questions waiting for the client."""
        with self._lock:
            return list(self._by_id)

    async def decide(self, question: Question, emit: Emit) -> ExecDecision:
        """The answer to ``question``: remembered, shared with an identical pending one, or asked."""
        key = question.key
        with self._lock:
            if key in self._approved:
                return ExecDecision.APPROVE_FOR_SESSION
            if key in self._rejected:
                return ExecDecision.DENY
            pending = self._pending.get(key)
            if pending is None:
                pending = _Pending(token=trio.lowlevel.current_trio_token())
                self._pending[key] = pending
                asker = True
            else:
                asker = False
        if not asker:
            await pending.done.wait()
            return pending.decision
        try:
            pending.decision = await self._ask(question, pending, emit)
        finally:
            with self._lock:
                if self._pending.get(key) is pending:
                    del self._pending[key]
                self._by_id.pop(pending.approval_id, None)
            pending.done.set()
        return pending.decision

    async def _ask(self, question: Question, pending: _Pending, emit: Emit) -> ExecDecision:
        self.questions_asked += 1
        approval_id = secrets.token_hex(APPROVAL_ID_BYTES)
        pending.approval_id = approval_id
        emit(approvals_pb2.ExecApprovalRequested(
            id=approval_id, call_id=question.call_id, command=question.command, cwd=question.cwd,
            reason=question.reason, agent_path=question.agent_path, escalation=question.escalation,
        ))  # fmt: skip
        reviewer_kind = approvals_pb2.APPROVAL_REVIEWER_USER
        rationale = ""
        decision = ExecDecision.DENY
        with trio.move_on_after(self.timeout_s) as scope:
            if self.reviewer is not None:
                reviewer_kind = approvals_pb2.APPROVAL_REVIEWER_GUARDIAN
                try:
                    review = await self.reviewer(question)
                except Exception as exc:  # fail closed: a broken reviewer is a denial
                    logger.exception("the guardian failed on %r; denying", question.command)
                    review = Review(ExecDecision.DENY, f"the guardian failed: {exc}")
                decision, rationale = review.decision, review.rationale
                decision = self._after_review(question, decision)
            else:
                with self._lock:
                    self._by_id[approval_id] = pending
                await pending.done.wait()
                decision = pending.decision
        if scope.cancelled_caught:
            reviewer_kind = approvals_pb2.APPROVAL_REVIEWER_TIMEOUT
            rationale = f"no answer within {self.timeout_s:g} s"
            decision = ExecDecision.DENY
        with self._lock:
            if decision is ExecDecision.APPROVE_FOR_SESSION:
                self._approved.add(question.key)
        emit(approvals_pb2.ExecApprovalResolved(id=approval_id, decision=decision.value, reviewer=reviewer_kind,
                                                rationale=rationale, agent_path=question.agent_path))
        return decision

    def _after_review(self, question: Question, decision: ExecDecision) -> ExecDecision:
        """Remember a guardian's rejection and apply the per-turn circuit breaker."""
        turn = question.turn_id
        denied = not decision.approved
        with self._lock:
            recent = self._recent[turn]
            recent.append(denied)
            if not denied:
                self._consecutive[turn] = 0
                return decision
            self._rejected.add(question.key)
            self._consecutive[turn] += 1
            tripped = self._consecutive[turn] >= self.max_consecutive_denials or sum(recent) >= MAX_RECENT_DENIALS
        if tripped:
            logger.warning("guardian denied %d commands in turn %s; aborting it", self._consecutive[turn], turn)
            return ExecDecision.ABORT
        return ExecDecision.DENY

    def resolve(self, approval_id: str, decision: ExecDecision | str) -> bool:
        """Answer a pending question from any thread; False if no question waits under that id."""
        decision = ExecDecision(decision)
        with self._lock:
            pending = self._by_id.pop(approval_id, None)
        if pending is None:
            return False
        pending.decision = decision
        set_event_soon(pending.token, pending.done)
        return True

    def deny_all(self) -> int:
        """Deny every question waiting for the client; returns how many there were."""
        with self._lock:
            waiting = list(self._by_id.values())
            self._by_id.clear()
        for pending in waiting:
            pending.decision = ExecDecision.DENY
            set_event_soon(pending.token, pending.done)
        return len(waiting)
