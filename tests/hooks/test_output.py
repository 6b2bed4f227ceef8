"""Tests for the hook output protocol (exit codes, stdout JSON) and aggregation over several hooks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.hooks._model import HookHandler, HookOrigin
from actors.hooks._output import HookRunResult, HookVerdict, aggregate, interpret

HANDLER = HookHandler(event_name="PreToolUse", command="true", timeout_s=1.0, origin=HookOrigin("user", "x"))


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data)


def result(verdict: HookVerdict) -> HookRunResult:
    return HookRunResult(handler=HANDLER, run_id="r", verdict=verdict, exit_code=0, duration_ms=1)


def test_exit_zero_with_no_output_is_success() -> None:
    assert interpret("PreToolUse", 0, "", "noise on stderr") == HookVerdict(outcome="success")


def test_exit_two_blocks_with_stderr_as_the_reason() -> None:
    verdict = interpret("PreToolUse", 2, "ignored", "  not allowed here \n")
    assert (verdict.outcome, verdict.decision, verdict.message) == ("blocked", "block", "not allowed here")
    assert interpret("Stop", 2, "", "").message == "Stop hook exited with code 2"


def test_exit_two_on_an_unblockable_event_is_a_non_blocking_error() -> None:
    verdict = interpret("SessionStart", 2, "", "cannot block a start")
    assert (verdict.outcome, verdict.decision, verdict.message) == ("error", None, "cannot block a start")


@pytest.mark.parametrize(
    ("code", "message"), [(1, "hook exited with code 1"), (-9, "hook was killed by signal 9")]
)
def test_other_exit_codes_are_errors(code: int, message: str) -> None:
    assert interpret("PostToolUse", code, "", "") == HookVerdict(outcome="error", message=message)
    assert interpret("PostToolUse", code, "", "boom\n").message == "boom"


@pytest.mark.parametrize(
    "stdout", ['{"decision": ', "[1, 2]", '{"continue": "yes"}', '{"decision": "maybe"}']
)
def test_invalid_json_on_exit_zero_is_an_error_outcome(stdout: str) -> None:
    verdict = interpret("PreToolUse", 0, stdout, "")
    assert verdict.outcome == "error" and verdict.message


def test_plain_text_is_context_only_for_start_and_prompt_events() -> None:
    assert interpret("SessionStart", 0, "branch: main\n", "").additional_context == "branch: main"
    assert interpret("UserPromptSubmit", 0, "today is Monday", "").additional_context == "today is Monday"
    assert interpret("PostToolUse", 0, "just logging", "") == HookVerdict(outcome="success")


def test_permission_decision_deny_blocks_with_its_reason() -> None:
    stdout = as_json(
        {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": "writes outside the workspace",
            }
        }
    )
    verdict = interpret("PreToolUse", 0, stdout, "")
    assert (verdict.outcome, verdict.decision, verdict.message) == (
        "blocked",
        "deny",
        "writes outside the workspace",
    )


def test_permission_decision_allow_and_ask_with_updated_input() -> None:
    allow = interpret(
        "PreToolUse",
        0,
        as_json(
            {"hookSpecificOutput": {"permissionDecision": "allow", "updatedInput": {"command": "ls -a"}}}
        ),
        "",
    )
    assert (allow.outcome, allow.decision, allow.updated_input) == ("success", "allow", {"command": "ls -a"})
    ask = interpret("PreToolUse", 0, as_json({"hookSpecificOutput": {"permissionDecision": "ask"}}), "")
    assert ask.decision == "ask" and not ask.blocks
    bad = interpret("PreToolUse", 0, as_json({"hookSpecificOutput": {"permissionDecision": "perhaps"}}), "")
    assert bad.outcome == "error"


def test_legacy_decision_block_and_approve() -> None:
    block = interpret("PostToolUse", 0, as_json({"decision": "block", "reason": "tests fail"}), "")
    assert (block.outcome, block.message) == ("blocked", "tests fail")
    approve = interpret("PreToolUse", 0, as_json({"decision": "approve"}), "")
    assert (approve.outcome, approve.decision) == ("success", "allow")


def test_permission_request_decision() -> None:
    deny = {"hookSpecificOutput": {"decision": {"behavior": "deny", "message": "no network"}}}
    verdict = interpret("PermissionRequest", 0, as_json(deny), "")
    assert (verdict.outcome, verdict.decision, verdict.message) == ("blocked", "deny", "no network")
    allow = {"hookSpecificOutput": {"decision": {"behavior": "allow", "updatedInput": {"x": 1}}}}
    assert interpret("PermissionRequest", 0, as_json(allow), "").updated_input == {"x": 1}


def test_continue_false_stops_with_stop_reason_and_universal_fields() -> None:
    stdout = as_json(
        {"continue": False, "stopReason": "budget spent", "suppressOutput": True, "systemMessage": "hi"}
    )
    verdict = interpret("PostToolUse", 0, stdout, "")
    assert verdict.outcome == "blocked" and verdict.blocks
    assert (verdict.message, verdict.suppress_output, verdict.system_message) == ("budget spent", True, "hi")


def test_user_prompt_submit_rewrite_and_block() -> None:
    rewrite = {"hookSpecificOutput": {"updatedPrompt": "please be brief", "additionalContext": "ctx"}}
    verdict = interpret("UserPromptSubmit", 0, as_json(rewrite), "")
    assert (verdict.updated_prompt, verdict.additional_context) == ("please be brief", "ctx")
    assert interpret("UserPromptSubmit", 0, as_json({"decision": "block", "reason": "secret"}), "").blocks


def test_aggregate_block_wins_and_contexts_concatenate_in_order() -> None:
    verdicts = [
        HookVerdict(outcome="success", decision="allow", additional_context="first", updated_input={"a": 1}),
        HookVerdict(outcome="blocked", decision="block", message="reason one"),
        HookVerdict(outcome="error", message="hook exited with code 1"),
        HookVerdict(outcome="blocked", decision="deny", message="reason two", additional_context="second"),
        HookVerdict(outcome="timeout", message="timed out"),
    ]
    combined = aggregate("PreToolUse", [result(v) for v in verdicts])
    assert combined.blocked and combined.decision == "deny"
    assert combined.reason == "reason one\nreason two"
    assert combined.additional_context == "first\nsecond"
    assert combined.updated_input is None  # a blocked call runs with no input at all
    assert combined.errors == ("hook exited with code 1", "timed out")


def test_aggregate_without_blocks() -> None:
    verdicts = [
        HookVerdict(outcome="success", decision="allow", updated_input={"a": 1}),
        HookVerdict(outcome="success", decision="ask", updated_input={"a": 2}, system_message="note"),
    ]
    combined = aggregate("PreToolUse", [result(v) for v in verdicts])
    assert not combined.blocked and combined.reason is None
    assert (combined.decision, combined.updated_input, combined.system_messages) == (
        "ask",
        {"a": 2},
        ("note",),
    )
    assert aggregate("Stop", []).blocked is False
