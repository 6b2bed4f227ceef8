"""Approval questions: asked once, shared, remembered, timed out; the guardian and its circuit breaker."""

from __future__ import annotations

import threading

import trio
from google.protobuf.message import Message

from actors.approvals import (
    ESCALATE,
    ExecApprovals,
    ExecDecision,
    ExecPolicy,
    Question,
    Review,
    Verdict,
    assess,
    parse_assessment,
    parse_rules,
)
from protos.supervisor.v1 import approvals_pb2
from protos.supervisor.v1 import config_pb2 as cfg

BOUND_S = 10.0


class Sink:
    """Collects emitted events; ``requested`` wakes waiters."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self.requested = trio.Event()

    def __call__(self, event: Message) -> None:
        self.items.append(event)
        if isinstance(event, approvals_pb2.ExecApprovalRequested):
            self.requested.set()

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.items if isinstance(e, kind)]


def _question(command: str = "rm x", turn: str = "t1") -> Question:
    return Question(command=command, cwd="/w", reason="untrusted", turn_id=turn)


async def test_identical_questions_share_one_and_session_approval_is_remembered() -> None:
    approvals = ExecApprovals(timeout_s=BOUND_S)
    sink = Sink()
    answers: list[ExecDecision] = []

    async def ask() -> None:
        answers.append(await approvals.decide(_question(), sink))

    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(ask)
            await sink.requested.wait()
            (request,) = sink.of(approvals_pb2.ExecApprovalRequested)
            # the client answers from another thread, as the gRPC server does
            worker = threading.Thread(target=approvals.resolve, args=(request.id, "approve_for_session"))
            worker.start()
        worker.join()
        again = await approvals.decide(_question(), sink)
    assert answers == [ExecDecision.APPROVE_FOR_SESSION] * 3 and again is ExecDecision.APPROVE_FOR_SESSION
    assert approvals.questions_asked == 1 and len(sink.of(approvals_pb2.ExecApprovalRequested)) == 1
    assert approvals.resolve(request.id, "deny") is False  # answered already


async def test_no_answer_times_out_into_a_denial() -> None:
    approvals = ExecApprovals(timeout_s=0.05)
    sink = Sink()
    with trio.fail_after(BOUND_S):
        assert await approvals.decide(_question(), sink) is ExecDecision.DENY
    (resolved,) = sink.of(approvals_pb2.ExecApprovalResolved)
    assert resolved.reviewer == approvals_pb2.APPROVAL_REVIEWER_TIMEOUT and resolved.decision == "deny"
    assert approvals.pending_ids() == []


async def test_guardian_rejections_are_remembered_and_the_breaker_aborts_the_turn() -> None:
    reviewed: list[str] = []

    async def reviewer(question: Question) -> Review:
        reviewed.append(question.command)
        if question.command.startswith("ls"):
            return Review(ExecDecision.APPROVE_ONCE, "harmless")
        return Review(ExecDecision.DENY, "destructive")

    approvals = ExecApprovals(timeout_s=BOUND_S, reviewer=reviewer, max_consecutive_denials=2)
    sink = Sink()
    with trio.fail_after(BOUND_S):
        assert await approvals.decide(_question("ls -la"), sink) is ExecDecision.APPROVE_ONCE
        assert await approvals.decide(_question("rm -rf a"), sink) is ExecDecision.DENY
        assert await approvals.decide(_question("rm -rf a"), sink) is ExecDecision.DENY  # remembered
        assert await approvals.decide(_question("rm -rf b"), sink) is ExecDecision.ABORT  # 2nd denial in t1
        assert await approvals.decide(_question("rm -rf c", turn="t2"), sink) is ExecDecision.DENY  # new turn
    assert reviewed == ["ls -la", "rm -rf a", "rm -rf b", "rm -rf c"]
    kinds = {e.reviewer for e in sink.of(approvals_pb2.ExecApprovalResolved)}
    assert kinds == {approvals_pb2.APPROVAL_REVIEWER_GUARDIAN}


def test_guardian_output_fails_closed() -> None:
    assert parse_assessment('{"outcome": "allow", "rationale": "fine"}').decision is ExecDecision.APPROVE_ONCE
    assert parse_assessment('sure! {"outcome": "deny"}').decision is ExecDecision.DENY
    for text in ("", "allow", '{"outcome": "maybe"}', "{not json}"):
        assert parse_assessment(text).decision is ExecDecision.DENY, text


def test_assess_follows_codex_approval_policies() -> None:
    none = ExecPolicy()
    untrusted, on_request, never = (cfg.APPROVAL_POLICY_UNTRUSTED, cfg.APPROVAL_POLICY_ON_REQUEST,
                                    cfg.APPROVAL_POLICY_NEVER)
    assert assess("rm x", approval_policy=untrusted, rules=none).verdict is Verdict.ASK
    assert assess("ls", approval_policy=untrusted, rules=none).verdict is Verdict.RUN
    assert assess("rm x", approval_policy=on_request, rules=none).verdict is Verdict.RUN
    escalated = assess("rm x", approval_policy=on_request, rules=none, escalate=True, justification="needs /etc")
    assert (escalated.verdict, escalated.reason, escalated.bypass_sandbox) == (Verdict.ASK, "needs /etc", True)
    assert assess("rm x", approval_policy=never, rules=none, escalate=True).verdict is Verdict.FORBID
    assert assess("rm x", approval_policy=on_request, rules=none, hook_asks="").verdict is Verdict.ASK
    rules = ExecPolicy(tuple(parse_rules(
        'prefix_rule(pattern=["rm"], decision="forbidden", justification="no rm")\n'
        'prefix_rule(pattern=["git", "push"], decision="prompt")\n'
        'prefix_rule(pattern=["make"], decision="allow")\n', "t.rules")))
    refused = assess("ls && rm x", approval_policy=never, rules=rules)
    assert (refused.verdict, refused.reason) == (Verdict.FORBID, "no rm")
    assert assess("git push", approval_policy=on_request, rules=rules).verdict is Verdict.ASK
    assert assess("git push", approval_policy=never, rules=rules).verdict is Verdict.FORBID
    allowed = assess("make test", approval_policy=untrusted, rules=rules)
    assert (allowed.verdict, allowed.bypass_sandbox) == (Verdict.RUN, True)
    assert ESCALATE == "require_escalated"
