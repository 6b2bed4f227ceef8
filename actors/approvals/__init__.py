"""Command approvals: exec policy rules, the known-safe list, the questions a session asks before running a
command, and the guardian reviewer. See ``docs/design.md``, "Approvals".
"""

from __future__ import annotations

from actors.approvals._assess import ESCALATE, Assessment, Verdict, assess
from actors.approvals._broker import (
    DEFAULT_EXEC_APPROVAL_TIMEOUT_S,
    DEFAULT_MAX_CONSECUTIVE_DENIALS,
    ExecApprovals,
    ExecDecision,
    Question,
    Review,
    Reviewer,
)
from actors.approvals._commands import command_segments, is_known_safe_command, is_known_safe_script, plain_commands
from actors.approvals._guardian import GUARDIAN_ROLE, GuardianReviewer, guardian_prompt, parse_assessment
from actors.approvals._rules import ExecPolicy, PrefixRule, RuleDecision, RuleMatch, load_rules, parse_rules

__all__ = [
    "DEFAULT_EXEC_APPROVAL_TIMEOUT_S",
    "DEFAULT_MAX_CONSECUTIVE_DENIALS",
    "ESCALATE",
    "GUARDIAN_ROLE",
    "Assessment",
    "ExecApprovals",
    "ExecDecision",
    "ExecPolicy",
    "GuardianReviewer",
    "PrefixRule",
    "Question",
    "Review",
    "Reviewer",
    "RuleDecision",
    "RuleMatch",
    "Verdict",
    "assess",
    "command_segments",
    "guardian_prompt",
    "is_known_safe_command",
    "is_known_safe_script",
    "load_rules",
    "parse_assessment",
    "parse_rules",
    "plain_commands",
]
