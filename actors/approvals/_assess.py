"""Does a command need a question? Codex's exec approval requirement, for one command line.

``assess(command, ...)`` gives one of three verdicts:
- ``FORBID``: a ``forbidden`` rule matches (its justification is the reason), or a ``prompt`` rule matches
  or the model asks to leave the sandbox while the approval policy is ``never`` (nobody may be asked);
- ``ASK``: a ``prompt`` rule matches; under ``untrusted`` anything not known to be safe; under
  ``on-request`` an escalation the model asked for (``sandbox_permissions = "require_escalated"``); a
  PreToolUse hook that answered ``ask`` (under ``never`` that is a refusal);
- ``RUN``: everything else, inside the sandbox. An ``allow`` rule runs the command outside the sandbox, as
  in Codex (rules say what may run *outside* it); so does an approved escalation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from actors.approvals._commands import is_known_safe_script
from actors.approvals._rules import ExecPolicy, RuleDecision
from protos.supervisor.v1 import config_pb2 as cfg

__all__ = ["ESCALATE", "Assessment", "Verdict", "assess"]

#: The model's ``sandbox_permissions`` value that asks to run outside the sandbox (Codex's name).
ESCALATE = "require_escalated"


class Verdict(enum.Enum):
    """What happens to a command before it runs."""

    RUN = "run"
    ASK = "ask"
    FORBID = "forbid"


@dataclass(frozen=True)
class Assessment:
    """The verdict for one command, why, and whether it runs outside the sandbox once allowed."""

    verdict: Verdict
    reason: str = ""
    bypass_sandbox: bool = False
    #: True when the question is an escalation (approving it lifts the sandbox).
    escalation: bool = False


def assess(
    command: str,
    *,
    approval_policy: int,
    rules: ExecPolicy,
    escalate: bool = False,
    justification: str = "",
    hook_asks: str | None = None,
) -> Assessment:
    """The verdict for ``command`` under ``approval_policy`` and ``rules``; see the module docstring."""
    never = approval_policy == cfg.APPROVAL_POLICY_NEVER
    found = rules.evaluate(command)
    if found is not None and found.decision is RuleDecision.FORBIDDEN:
        return Assessment(Verdict.FORBID, found.justification or f"forbidden by the exec policy ({found.source})")
    if found is not None and found.decision is RuleDecision.PROMPT:
        reason = found.justification or f"the exec policy asks first ({found.source})"
        if never:
            return Assessment(Verdict.FORBID, f"{reason}; approval policy is never, so it cannot be approved")
        return Assessment(Verdict.ASK, reason, bypass_sandbox=escalate, escalation=escalate)
    if escalate:
        if never:
            return Assessment(Verdict.FORBID, "running outside the sandbox needs approval, and the approval "
                                              "policy is never")
        if approval_policy in (cfg.APPROVAL_POLICY_ON_REQUEST, cfg.APPROVAL_POLICY_UNTRUSTED):
            return Assessment(Verdict.ASK, justification or "the model asks to run this outside the sandbox",
                              bypass_sandbox=True, escalation=True)
    if hook_asks is not None:
        reason = hook_asks or "a PreToolUse hook asks for approval"
        if never:
            return Assessment(Verdict.FORBID, f"{reason}; approval policy is never, so it cannot be approved")
        return Assessment(Verdict.ASK, reason)
    if found is not None and found.decision is RuleDecision.ALLOW:
        return Assessment(Verdict.RUN, "allowed by the exec policy", bypass_sandbox=True)
    if approval_policy == cfg.APPROVAL_POLICY_UNTRUSTED and not is_known_safe_script(command):
        return Assessment(Verdict.ASK, "approval policy untrusted: the command is not known to be safe")
    return Assessment(Verdict.RUN)
