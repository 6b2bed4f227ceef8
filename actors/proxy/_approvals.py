"""Approvals for hosts the allowlist does not cover: the proxy's gate and the session's broker.

Contract:
- An ``Approver`` is ``async (host, protocol, port) -> Decision``. The proxy calls it only on an allowlist
  miss, never for a denylist, method or local-address block.
- ``ApprovalGate`` (proxy side, one per view) asks its approver at most once at a time per
  ``(host, protocol, port)``: concurrent requests for the same key share that one pending question and all
  get its answer. No answer within ``timeout_s`` (default 60 s), an approver error, or no approver at all
  means ``DENY``. ``APPROVE_FOR_SESSION`` is stored in the injected ``RememberedApprovals`` (a thread-safe
  set the session may share with its subagents), after which the key never asks again.
- ``ApprovalBroker`` (session side) is an ``Approver``: it files each question under a fresh id, emits
  ``NetworkApprovalRequested`` and waits until ``resolve(id, decision)`` is called from any thread. With
  ``deny_without_asking`` set (approval policy ``never``, or no active turn) it denies at once without
  emitting, and setting the flag denies every question still pending. A question whose waiter gives up
  (timeout, cancellation) is withdrawn: ``resolve`` then returns False.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trio
from google.protobuf.message import Message

from actors.core import set_event_soon
from protos.supervisor.v1 import network_pb2

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT_S",
    "ApprovalBroker",
    "ApprovalGate",
    "ApprovalKey",
    "Approver",
    "Decision",
    "Emit",
    "RememberedApprovals",
]

logger = logging.getLogger(__name__)

#: How long a request waits for a human before the answer counts as "deny".
DEFAULT_APPROVAL_TIMEOUT_S = 60.0
#: Random bytes in an approval id (hex-encoded, so twice as many characters).
APPROVAL_ID_BYTES = 8

Emit = Callable[[Message], None]


class Decision(enum.StrEnum):
    """An answer to an approval question."""

    APPROVE_ONCE = "approve_once"
    APPROVE_FOR_SESSION = "approve_for_session"
    DENY = "deny"


ApprovalKey = tuple[str, str, int]
Approver = Callable[[str, str, int], Awaitable[Decision]]


class RememberedApprovals:
    """Thread-safe set of ``(host, protocol, port)`` approved for the session; shareable with subagents."""

    def __init__(self, keys: tuple[ApprovalKey, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._keys: set[ApprovalKey] = set(keys)

    def add(self, key: ApprovalKey) -> None:
        """Remember ``key`` as approved."""
        with self._lock:
            self._keys.add(key)

    def discard(self, key: ApprovalKey) -> None:
        """Forget ``key``."""
        with self._lock:
            self._keys.discard(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def __iter__(self) -> Iterator[ApprovalKey]:
        with self._lock:
            return iter(sorted(self._keys))

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    decision: Decision = Decision.DENY
    waiters: int = 0


class ApprovalGate:
    """Deduplicates, times out and remembers approval questions for one proxy view (trio only)."""

    def __init__(
        self,
        approver: Approver | None,
        remembered: RememberedApprovals | None = None,
        timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
    ) -> None:
        self.approver = approver
        self.remembered = remembered if remembered is not None else RememberedApprovals()
        self.timeout_s = timeout_s
        self._pending: dict[ApprovalKey, _Pending] = {}
        self.questions_asked = 0

    def waiting(self, host: str, protocol: str, port: int) -> int:
        """How many requests currently wait on the question for this key (0 if none is pending)."""
        pending = self._pending.get((host, protocol, port))
        return 0 if pending is None else pending.waiters

    async def decide(self, host: str, protocol: str, port: int) -> Decision:
        """The decision for ``(host, protocol, port)``: remembered, shared with a pending one, or asked."""
        key = (host, protocol, port)
        if key in self.remembered:
            return Decision.APPROVE_FOR_SESSION
        if self.approver is None:
            return Decision.DENY
        pending = self._pending.get(key)
        if pending is not None:
            pending.waiters += 1
            try:
                await pending.done.wait()
            finally:
                pending.waiters -= 1
            return pending.decision
        pending = _Pending(waiters=1)
        self._pending[key] = pending
        try:
            pending.decision = await self._ask(self.approver, key)
        finally:
            # a cancelled asker leaves DENY behind for anyone who shared its question
            if self._pending.get(key) is pending:
                del self._pending[key]
            pending.waiters -= 1
            pending.done.set()
        return pending.decision

    async def _ask(self, approver: Approver, key: ApprovalKey) -> Decision:
        self.questions_asked += 1
        decision = Decision.DENY
        with trio.move_on_after(self.timeout_s) as scope:
            try:
                decision = Decision(await approver(*key))
            except Exception:
                logger.exception("approver failed for %s; denying", key)
                return Decision.DENY
        if scope.cancelled_caught:
            logger.info("approval for %s timed out after %.1f s; denying", key, self.timeout_s)
            return Decision.DENY
        if decision is Decision.APPROVE_FOR_SESSION:
            self.remembered.add(key)
        return decision


@dataclass
class _Question:
    token: trio.lowlevel.TrioToken
    done: trio.Event = field(default_factory=trio.Event)
    decision: Decision = Decision.DENY


class ApprovalBroker:
    """The session's approver: emits each question as an event and waits for ``resolve`` from any thread."""

    def __init__(self, emit: Emit, *, deny_without_asking: bool = False, agent_path: str = "") -> None:
        self._emit = emit
        self._agent_path = agent_path
        self._lock = threading.Lock()
        self._questions: dict[str, _Question] = {}
        self._deny_without_asking = deny_without_asking

    @property
    def deny_without_asking(self) -> bool:
        """True when questions are denied at once (approval policy ``never`` or no active turn)."""
        return self._deny_without_asking

    @deny_without_asking.setter
    def deny_without_asking(self, value: bool) -> None:
        self._deny_without_asking = value
        if value:
            self.deny_all()

    def pending_ids(self) -> list[str]:
        """Ids of the questions still waiting for an answer."""
        with self._lock:
            return list(self._questions)

    async def __call__(self, host: str, protocol: str, port: int) -> Decision:
        """Ask the session about ``host`` (an ``Approver``)."""
        return await self.ask(host, protocol, port, self._agent_path)

    def for_agent(self, agent_path: str) -> Approver:
        """An ``Approver`` whose questions name ``agent_path`` (a subagent's view asking its parent)."""

        async def ask(host: str, protocol: str, port: int) -> Decision:
            return await self.ask(host, protocol, port, agent_path)

        return ask

    async def ask(self, host: str, protocol: str, port: int, agent_path: str) -> Decision:
        """Emit a question on behalf of ``agent_path`` and wait for its answer."""
        if self._deny_without_asking:
            return Decision.DENY
        approval_id = secrets.token_hex(APPROVAL_ID_BYTES)
        question = _Question(token=trio.lowlevel.current_trio_token())
        with self._lock:
            self._questions[approval_id] = question
        try:
            self._emit(
                network_pb2.NetworkApprovalRequested(
                    id=approval_id, host=host, protocol=protocol, port=port, agent_path=agent_path
                )
            )
            await question.done.wait()
            return question.decision
        finally:
            with self._lock:
                self._questions.pop(approval_id, None)

    def resolve(self, approval_id: str, decision: Decision | str) -> bool:
        """Answer a pending question (any thread); False if the id is unknown or was withdrawn."""
        decision = Decision(decision)
        with self._lock:
            question = self._questions.pop(approval_id, None)
        if question is None:
            return False
        question.decision = decision
        set_event_soon(question.token, question.done)
        return True

    def deny_all(self) -> int:
        """Deny every pending question (e.g. when the turn ends); returns how many there were."""
        with self._lock:
            questions = list(self._questions.values())
            self._questions.clear()
        for question in questions:
            question.decision = Decision.DENY
            set_event_soon(question.token, question.done)
        return len(questions)
