"""What a hook run means: Claude Code's exit-code and stdout-JSON protocol, and aggregation over hooks.

Contract (compatible with Claude Code hooks, so existing scripts work unchanged):
- Exit 0: success. Stdout may be empty, plain text, or a JSON object. Plain text becomes additional
  context for SessionStart and UserPromptSubmit and is otherwise ignored. Stdout that looks like JSON
  (starts with ``{`` or ``[``) but does not parse to an object is an ``error`` outcome, never an exception.
  JSON fields: ``continue`` (false stops the agent; ``stopReason`` says why), ``suppressOutput``,
  ``systemMessage``, ``decision`` ("block" with ``reason``, or "approve") and ``hookSpecificOutput``
  (``hookEventName``, ``permissionDecision`` allow|deny|ask with ``permissionDecisionReason``,
  ``additionalContext``, ``updatedInput`` for PreToolUse, ``decision {behavior, message, updatedInput}``
  for PermissionRequest, and ``updatedPrompt`` for UserPromptSubmit, an extension of ours).
- Exit 2: the hook blocks; its stderr is the reason given back to the model. For events that cannot be
  blocked (SessionStart, SubagentStart) it is a non-blocking error instead, as in Claude Code.
- Any other exit code: a non-blocking error whose stderr is shown to the client.
- ``aggregate``: any block or deny wins; reasons and additional contexts are concatenated in
  configuration order; otherwise ``ask`` beats ``allow``; the last updated input or prompt in configuration
  order wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.hooks._model import (
    PERMISSION_REQUEST,
    POST_TOOL_USE,
    PRE_TOOL_USE,
    SESSION_START,
    STOP,
    SUBAGENT_STOP,
    USER_PROMPT_SUBMIT,
    HookHandler,
)

__all__ = ["AggregateResult", "HookRunResult", "HookVerdict", "aggregate", "interpret"]

Outcome = Literal["success", "blocked", "error", "timeout"]
Decision = Literal["allow", "deny", "ask", "block"]

#: The exit code by which a hook blocks (Claude Code's protocol).
BLOCKING_EXIT_CODE = 2
#: Events a hook can block (exit 2, decision "block" or permissionDecision "deny").
BLOCKABLE_EVENTS = frozenset(
    {PRE_TOOL_USE, PERMISSION_REQUEST, POST_TOOL_USE, USER_PROMPT_SUBMIT, STOP, SUBAGENT_STOP}
)
#: Events whose plain-text stdout is added to the model's context.
PLAIN_TEXT_CONTEXT_EVENTS = frozenset({SESSION_START, USER_PROMPT_SUBMIT})
#: How reasons and contexts of several hooks are joined.
JOIN_SEPARATOR = "\n"


class InvalidHookOutput(ValueError):
    """Raised (internally) when a hook's stdout JSON has a field of the wrong type or value."""


@dataclass(frozen=True)
class HookVerdict:
    """What one hook run decided, from its exit code and output."""

    outcome: Outcome
    message: str = ""
    decision: Decision | None = None
    additional_context: str | None = None
    updated_input: Mapping[str, Any] | None = None
    updated_prompt: str | None = None
    continue_processing: bool = True
    stop_reason: str | None = None
    suppress_output: bool = False
    system_message: str | None = None

    @property
    def blocks(self) -> bool:
        """True if this run blocks the action (or stops the agent)."""
        return self.decision in ("block", "deny") or not self.continue_processing


@dataclass(frozen=True)
class HookRunResult:
    """One finished hook run: which hook, how it ended, and its raw output."""

    handler: HookHandler
    run_id: str
    verdict: HookVerdict
    exit_code: int | None
    duration_ms: int
    stdout: str = ""
    stderr: str = ""

    @property
    def outcome(self) -> Outcome:
        """success, blocked, error or timeout."""
        return self.verdict.outcome


@dataclass(frozen=True)
class AggregateResult:
    """The combined effect of every hook that ran for one event."""

    event_name: str
    results: tuple[HookRunResult, ...] = ()
    blocked: bool = False
    decision: Decision | None = None
    reason: str | None = None
    additional_context: str | None = None
    updated_input: Mapping[str, Any] | None = None
    updated_prompt: str | None = None
    continue_processing: bool = True
    stop_reason: str | None = None
    system_messages: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default=())


def interpret(event_name: str, exit_code: int, stdout: str, stderr: str) -> HookVerdict:
    """The verdict for a hook that exited with ``exit_code`` (see the module docstring)."""
    if exit_code == 0:
        return _interpret_stdout(event_name, stdout)
    detail = stderr.strip()
    if exit_code == BLOCKING_EXIT_CODE and event_name in BLOCKABLE_EVENTS:
        return HookVerdict(
            outcome="blocked",
            decision="block",
            message=detail or f"{event_name} hook exited with code {BLOCKING_EXIT_CODE}",
        )
    if exit_code < 0:
        return HookVerdict(outcome="error", message=detail or f"hook was killed by signal {-exit_code}")
    return HookVerdict(outcome="error", message=detail or f"hook exited with code {exit_code}")


def _interpret_stdout(event_name: str, stdout: str) -> HookVerdict:
    text = stdout.strip()
    if not text:
        return HookVerdict(outcome="success")
    if not text.startswith(("{", "[")):
        context = text if event_name in PLAIN_TEXT_CONTEXT_EVENTS else None
        return HookVerdict(outcome="success", additional_context=context)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return HookVerdict(outcome="error", message=f"hook printed invalid JSON on stdout: {exc}")
    if not isinstance(data, dict):
        return HookVerdict(outcome="error", message="hook printed JSON that is not an object on stdout")
    try:
        return _interpret_json(event_name, data)
    except InvalidHookOutput as exc:
        return HookVerdict(outcome="error", message=f"invalid hook output: {exc}")


def _interpret_json(event_name: str, data: Mapping[str, Any]) -> HookVerdict:
    continue_processing = _get(data, "continue", bool, True)
    stop_reason = _get(data, "stopReason", str, None)
    suppress_output = _get(data, "suppressOutput", bool, False)
    system_message = _get(data, "systemMessage", str, None)
    reason = _get(data, "reason", str, None)
    legacy = _get(data, "decision", str, None)
    specific = _get(data, "hookSpecificOutput", dict, None) or {}
    additional_context = _get(specific, "additionalContext", str, None)
    decision: Decision | None = None
    updated_input: Mapping[str, Any] | None = None
    updated_prompt: str | None = None
    if legacy is not None:
        if legacy not in ("block", "approve"):
            raise InvalidHookOutput(f"decision must be \"block\" or \"approve\", got {legacy!r}")
        decision = "block" if legacy == "block" else "allow"
    if event_name == PRE_TOOL_USE:
        permission = _get(specific, "permissionDecision", str, None)
        if permission is not None:
            if permission not in ("allow", "deny", "ask"):
                raise InvalidHookOutput(f"permissionDecision must be allow, deny or ask, got {permission!r}")
            decision = permission  # type: ignore[assignment]  # checked just above
            reason = _get(specific, "permissionDecisionReason", str, None) or reason
        if decision not in ("deny", "block"):
            updated_input = _get(specific, "updatedInput", dict, None)
    elif event_name == PERMISSION_REQUEST:
        nested = _get(specific, "decision", dict, None)
        if nested is not None:
            behavior = _get(nested, "behavior", str, None)
            if behavior not in ("allow", "deny"):
                raise InvalidHookOutput(f"decision.behavior must be allow or deny, got {behavior!r}")
            decision = "allow" if behavior == "allow" else "deny"
            reason = _get(nested, "message", str, None) or reason
            if decision == "allow":
                updated_input = _get(nested, "updatedInput", dict, None)
    elif event_name == USER_PROMPT_SUBMIT:
        updated_prompt = _get(specific, "updatedPrompt", str, None)
    if decision in ("block", "deny") and event_name not in BLOCKABLE_EVENTS:
        decision = None
    blocked = decision in ("block", "deny") or not continue_processing
    if decision in ("block", "deny"):
        message = (reason or "").strip() or f"{event_name} hook blocked without a reason"
    elif not continue_processing:
        message = (stop_reason or "").strip() or f"{event_name} hook stopped the agent"
    else:
        message = ""
    return HookVerdict(
        outcome="blocked" if blocked else "success",
        message=message,
        decision=decision,
        additional_context=additional_context,
        updated_input=updated_input,
        updated_prompt=updated_prompt,
        continue_processing=continue_processing,
        stop_reason=stop_reason,
        suppress_output=suppress_output,
        system_message=system_message,
    )


def _get(data: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidHookOutput(f"{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def aggregate(event_name: str, results: Sequence[HookRunResult]) -> AggregateResult:
    """Combine the results of one event's hooks (given in configuration order)."""
    verdicts = [r.verdict for r in results]
    blockers = [v for v in verdicts if v.blocks]
    decision: Decision | None = None
    for candidate in ("deny", "block", "ask", "allow"):
        if any(v.decision == candidate for v in verdicts):
            decision = candidate  # type: ignore[assignment]  # one of the Decision literals
            break
    contexts = [v.additional_context for v in verdicts if v.additional_context]
    updated_inputs = [v.updated_input for v in verdicts if v.updated_input is not None]
    updated_prompts = [v.updated_prompt for v in verdicts if v.updated_prompt is not None]
    stop_reasons = [v.stop_reason for v in verdicts if not v.continue_processing and v.stop_reason]
    return AggregateResult(
        event_name=event_name,
        results=tuple(results),
        blocked=bool(blockers),
        decision=decision,
        reason=JOIN_SEPARATOR.join(v.message for v in blockers if v.message) or None,
        additional_context=JOIN_SEPARATOR.join(c for c in contexts if c) or None,
        updated_input=None if blockers or not updated_inputs else updated_inputs[-1],
        updated_prompt=None if blockers or not updated_prompts else updated_prompts[-1],
        continue_processing=all(v.continue_processing for v in verdicts),
        stop_reason=stop_reasons[0] if stop_reasons else None,
        system_messages=tuple(v.system_message for v in verdicts if v.system_message),
        errors=tuple(v.message for v in verdicts if v.outcome in ("error", "timeout") and v.message),
    )
