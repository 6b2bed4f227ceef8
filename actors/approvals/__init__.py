"""Command approvals: exec policy rules, the known-safe list, and the questions a session asks before running.

See ``docs/design.md``, "Approvals".
"""

from __future__ import annotations

from actors.approvals._commands import command_segments, is_known_safe_command, is_known_safe_script, plain_commands
from actors.approvals._rules import ExecPolicy, PrefixRule, RuleDecision, RuleMatch, load_rules, parse_rules

__all__ = [
    "ExecPolicy",
    "PrefixRule",
    "RuleDecision",
    "RuleMatch",
    "command_segments",
    "is_known_safe_command",
    "is_known_safe_script",
    "load_rules",
    "parse_rules",
    "plain_commands",
]
