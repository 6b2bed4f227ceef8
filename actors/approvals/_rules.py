"""Exec policy rules: Codex's ``prefix_rule(...)`` files, loaded from the configuration layers.

File format: Codex's ``.rules`` files (Starlark), the prefix-rule subset, read with Python's ``ast`` (the
syntax is a subset of Python's; nothing is executed):

    prefix_rule(
        pattern = ["git", ["push", "fetch"]],    # tokens from the left; a list is a set of alternatives
        decision = "prompt",                     # "allow" (default) | "prompt" | "forbidden"
        justification = "pushes need a human",   # shown with the refusal or the question
        match = ["git push origin main"],        # examples that must match (checked at load)
        not_match = [["git", "status"]],         # examples that must not match
    )

Files: every ``rules/*.rules`` in each configuration layer's directory (managed ``/etc/session-supervisor``,
the user's ``$SESSION_SUPERVISOR_HOME``, the project's ``.session-supervisor``), in name order. Rules add up
across layers. When several rules match a command, the strictest decision wins (forbidden > prompt > allow),
as in Codex. A script is judged by every word run between its shell punctuation (``command_segments``: ``;``, ``&&``,
``|``, ``$(...)``, backticks, redirections), the strictest decision over them applying, so ``ls; rm x`` or
``echo $(rm x)`` cannot dodge a rule about ``rm``. Errors name the file, the line and the problem (``ConfigError``).
"""

from __future__ import annotations

import ast
import enum
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from actors.approvals._commands import command_segments
from actors.errors import ConfigError

__all__ = ["RULES_DIR", "ExecPolicy", "PrefixRule", "RuleDecision", "RuleMatch", "load_rules", "parse_rules"]

RULES_DIR = "rules"
RULES_SUFFIX = ".rules"


class RuleDecision(enum.IntEnum):
    """What a rule says about a command; a larger value is stricter."""

    ALLOW = 1
    PROMPT = 2
    FORBIDDEN = 3


_DECISIONS = {"allow": RuleDecision.ALLOW, "prompt": RuleDecision.PROMPT, "forbidden": RuleDecision.FORBIDDEN}
_KEYS = {"pattern", "decision", "justification", "match", "not_match"}


@dataclass(frozen=True)
class PrefixRule:
    """One ``prefix_rule``: a token prefix (each position a set of alternatives) and its decision."""

    pattern: tuple[frozenset[str], ...]
    decision: RuleDecision
    justification: str = ""
    source: str = ""

    def matches(self, argv: Sequence[str]) -> bool:
        """True when ``argv`` starts with this rule's pattern."""
        return len(argv) >= len(self.pattern) and all(a in alts for a, alts in zip(argv, self.pattern, strict=False))


@dataclass(frozen=True)
class RuleMatch:
    """The strictest rule that matched a command."""

    decision: RuleDecision
    justification: str
    source: str
    command: tuple[str, ...]


def _literal(node: ast.expr, where: str) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ConfigError(f"{where}: only literal strings and lists are allowed") from exc


def _example(raw: object, where: str) -> list[str]:
    if isinstance(raw, str):
        return shlex.split(raw)
    if isinstance(raw, list) and all(isinstance(t, str) for t in raw):
        return list(raw)
    raise ConfigError(f"{where}: an example is a string or a list of strings")


def _rule_from(call: ast.Call, source: str) -> PrefixRule:
    where = f"{source}:{call.lineno}"
    if call.args:
        raise ConfigError(f"{where}: prefix_rule takes keyword arguments only")
    values = {}
    for keyword in call.keywords:
        if keyword.arg not in _KEYS:
            raise ConfigError(f"{where}: unknown prefix_rule argument {keyword.arg!r}")
        values[keyword.arg] = _literal(keyword.value, f"{where}: {keyword.arg}")
    raw_pattern = values.get("pattern")
    if not isinstance(raw_pattern, list) or not raw_pattern:
        raise ConfigError(f"{where}: pattern must be a non-empty list")
    pattern = []
    for token in raw_pattern:
        alternatives = [token] if isinstance(token, str) else token
        if not isinstance(alternatives, list) or not alternatives or not all(isinstance(a, str) for a in alternatives):
            raise ConfigError(f"{where}: each pattern element is a string or a non-empty list of strings")
        pattern.append(frozenset(alternatives))
    decision_name = values.get("decision", "allow")
    if decision_name not in _DECISIONS:
        raise ConfigError(f"{where}: decision must be one of allow, prompt, forbidden (got {decision_name!r})")
    justification = values.get("justification", "")
    if not isinstance(justification, str):
        raise ConfigError(f"{where}: justification must be a string")
    rule = PrefixRule(tuple(pattern), _DECISIONS[str(decision_name)], justification, where)
    for key, expected in (("match", True), ("not_match", False)):
        examples = values.get(key, [])
        if not isinstance(examples, list):
            raise ConfigError(f"{where}: {key} must be a list")
        for example in examples:
            argv = _example(example, f"{where}: {key}")
            if rule.matches(argv) != expected:
                verb = "should match but does not" if expected else "should not match but does"
                raise ConfigError(f"{where}: {key} example {shlex.join(argv)!r} {verb}")
    return rule


def parse_rules(text: str, source: str) -> list[PrefixRule]:
    """The rules of one ``.rules`` file; ``ConfigError`` naming ``source`` and the line for anything else."""
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise ConfigError(f"{source}:{exc.lineno}: syntax error: {exc.msg}") from exc
    rules = []
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "prefix_rule"):
            raise ConfigError(f"{source}:{stmt.lineno}: only prefix_rule(...) calls are supported")
        rules.append(_rule_from(call, source))
    return rules


def load_rules(directories: Iterable[Path]) -> ExecPolicy:
    """Every ``rules/*.rules`` below ``directories`` (the configuration layers, lowest first)."""
    rules: list[PrefixRule] = []
    for directory in directories:
        folder = Path(directory) / RULES_DIR
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{RULES_SUFFIX}")):
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc}") from exc
            rules += parse_rules(text, str(path))
    return ExecPolicy(tuple(rules))


@dataclass(frozen=True)
class ExecPolicy:
    """A set of prefix rules; ``evaluate`` gives the strictest match for a command line, if any."""

    rules: tuple[PrefixRule, ...] = ()

    def evaluate_argv(self, argv: Sequence[str]) -> RuleMatch | None:
        """The strictest rule matching ``argv``, or None."""
        best: PrefixRule | None = None
        for rule in self.rules:
            if rule.matches(argv) and (best is None or rule.decision > best.decision):
                best = rule
        if best is None:
            return None
        return RuleMatch(best.decision, best.justification, best.source, tuple(argv))

    def evaluate(self, script: str) -> RuleMatch | None:
        """The strictest rule matching any command of the shell line ``script``, or None."""
        if not self.rules:
            return None
        best: RuleMatch | None = None
        for argv in command_segments(script):
            found = self.evaluate_argv(argv)
            if found is not None and (best is None or found.decision > best.decision):
                best = found
        return best
