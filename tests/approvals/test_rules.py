"""Exec policy rules (Codex's prefix_rule files) and the known-safe command list."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.approvals import (
    ExecPolicy,
    RuleDecision,
    command_segments,
    is_known_safe_command,
    is_known_safe_script,
    load_rules,
    parse_rules,
)
from actors.errors import ConfigError

RULES = """
# Codex's own syntax: comments, keyword arguments, alternatives, examples
prefix_rule(
    pattern = ["git", ["push", "fetch"]],
    decision = "prompt",
    justification = "talks to a remote",
    match = ["git push origin main", ["git", "fetch"]],
    not_match = [["git", "status"]],
)
prefix_rule(pattern = ["rm", "-rf"], decision = "forbidden", justification = "no recursive deletes")
prefix_rule(pattern = ["git"], decision = "allow")
"""


def test_strictest_matching_rule_wins_and_segments_cannot_dodge_it() -> None:
    policy = load_rules([])
    assert policy.evaluate("rm -rf /") is None
    policy = ExecPolicy(tuple(parse_rules(RULES, "test.rules")))
    assert policy.evaluate("git status").decision is RuleDecision.ALLOW  # type: ignore[union-attr]
    found = policy.evaluate("git push origin main")
    assert found is not None and found.decision is RuleDecision.PROMPT and found.justification == "talks to a remote"
    for script in ("rm -rf build", "ls; rm -rf x", "echo $(rm -rf x)", "ls > f && rm -rf x", "FOO=1 rm -rf x",
                   "ls\nrm -rf x", "git status | rm -rf x", "echo `rm -rf x`"):
        found = policy.evaluate(script)
        assert found is not None and found.decision is RuleDecision.FORBIDDEN, script
        assert found.justification == "no recursive deletes" and found.source == "test.rules:10"
    assert policy.evaluate("rm x") is None


@pytest.mark.parametrize(("text", "message"), [
    ('prefix_rule(pattern = [], decision = "allow")', "test.rules:1: pattern must be a non-empty list"),
    ('prefix_rule(pattern = ["a"], decision = "maybe")', "decision must be one of"),
    ('prefix_rule(pattern = ["a"], colour = "red")', "unknown prefix_rule argument 'colour'"),
    ('prefix_rule(pattern = ["a"], match = ["b"])', "match example 'b' should match but does not"),
    ('prefix_rule(pattern = ["a"], not_match = ["a b"])', "not_match example 'a b' should not match but does"),
    ('import os', "test.rules:1: only prefix_rule(...) calls are supported"),
    ('prefix_rule(pattern = [open("x")])', "only literal strings and lists"),
    ('prefix_rule(', "test.rules:1: syntax error"),
])
def test_bad_rules_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rules(text, "test.rules")


def test_rules_load_from_every_layer_in_order(tmp_path: Path) -> None:
    low, high = tmp_path / "managed", tmp_path / "project"
    (low / "rules").mkdir(parents=True)
    (high / "rules").mkdir(parents=True)
    (low / "rules" / "a.rules").write_text('prefix_rule(pattern = ["curl"], decision = "forbidden")\n')
    (high / "rules" / "b.rules").write_text('prefix_rule(pattern = ["curl"], decision = "allow")\n')
    (high / "rules" / "ignored.txt").write_text("not a rules file")
    policy = load_rules([low, high, tmp_path / "missing"])
    assert len(policy.rules) == 2
    found = policy.evaluate("curl http://x")
    assert found is not None and found.decision is RuleDecision.FORBIDDEN  # a higher layer cannot loosen it


def test_known_safe_commands_follow_codex() -> None:
    for argv in (["ls"], ["ls", "-la"], ["cat", "f"], ["sed", "-n", "1,5p", "f"], ["find", ".", "-name", "x"],
                 ["rg", "x", "-n"], ["bash", "-lc", "ls && pwd"], ["zsh", "-lc", "ls | wc -l"],
                 ["bash", "-lc", "grep -R 'x' -n || true"]):
        assert is_known_safe_command(argv), argv
    for argv in (["rm", "x"], ["git", "status"], ["find", ".", "-delete"], ["find", ".", "-exec", "rm", "{}", ";"],
                 ["rg", "--pre", "sh", "x"], ["base64", "-o", "out"], ["sed", "-n", "xp", "f"],
                 ["bash", "-lc", "ls && rm -rf /"], ["bash", "-lc", "(ls)"], ["bash", "-lc", "ls > out.txt"],
                 ["bash", "-lc", "echo $(rm x)"], ["bash", "-lc", "'git status'"], ["bash", "-lc", "ls &"]):
        assert not is_known_safe_command(argv), argv
    assert is_known_safe_script("ls") and not is_known_safe_script("rm x") and not is_known_safe_script("")


def test_command_segments_split_on_all_punctuation() -> None:
    assert command_segments("a b; c && d | e") == [["a", "b"], ["c"], ["d"], ["e"]]
    assert command_segments("X=1 Y=2 rm -f z") == [["rm", "-f", "z"]]
