"""The turn loop: a session task that answers one user input with the model and the tools it calls.

Contract (``make_turn_runner(...)`` returns the ``TaskRunner``; services are read from ``ctx.services``):
- The conversation lives in ``ctx.state["conversation"]`` (a list of provider ``Message``s) and grows across
  turns; a session's first turn starts it from the ``HistoryItem``s in ``ctx.history`` (resume, fork), and
  every entry added is emitted as a ``HistoryItem`` (the log is the conversation). The provider is
  ``services["provider"]``, else one of kind ``services["provider_kind"]`` (default ``configuration.provider``)
  built with ``services["provider_options"]`` and cached in ``ctx.state["provider"]`` (``close_turn_state``
  closes it).
- UserPromptSubmit hooks run first: a block ends the turn with the reason as the agent message (the prompt
  is not kept); an updated prompt replaces the input; additional context follows the user message as a
  system message.
- Each round trip sends the whole conversation and the router's tool specs. Text streams out as
  ``AgentMessage(delta=True)``. Tool calls are announced (``ToolCallBegin``) and started as they arrive and
  all calls of one response run concurrently; each runs PreToolUse hooks (a block or deny: the tool does not
  run and the hook's reason is its output), the tool, then PostToolUse hooks, whose additional context (or
  block reason) reaches the next request as a system message after the tool results. ``ToolCallEnd``
  follows each call; results join the conversation in the model's call order. ``TokenCount`` follows
  every response.
- A response without tool calls ends the turn: its text is emitted as ``AgentMessage(delta=False)``, then
  Stop hooks run (SubagentStop in a subagent); a block continues the turn once more with the reason as a user
  message (``stop_hook_active``), at most ``max_stop_continuations`` times. The result sums every response's usage.
- A tool hook answering ``continue: false`` ends the turn once the current response's tools are done, with
  its ``stopReason`` as the agent message (Claude Code's semantics); on a Stop hook it means "do stop".
- A PreToolUse ``ask`` decision makes the shell tool ask for approval (``HOOK_ASKS_KEY``); other tools run.
- Compaction (``_compact``): ``/compact [instructions]`` as the input compacts the conversation and ends the
  task (its summary is the result); a turn compacts by itself before its user message and before each further
  request when the last response's context (``total_tokens``) reached the auto-compact limit. Every request
  names its context window (``window_id`` = ``<session id>:<window generation>``), restored from the log.
- Bounded: at most ``max_round_trips`` model requests per turn (``TurnLimitExceeded`` after that) and
  ``max_tool_output_bytes`` of each tool's output fed back.
- Interrupt = cancellation of the task's scope: it propagates (tool processes are killed by their
  runners); tool calls left without a result get an "aborted" result so the conversation stays valid for
  the next turn.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from actors.core import collapse_cancelled, single_error
from actors.providers import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ProviderError,
    Reasoning,
    TextDelta,
    ToolCall,
    ToolCallItem,
    create_provider,
)
from actors.turn._builtin import HOOK_ASKS_KEY, router_for
from actors.turn._compact import COMPACT_COMMAND, auto_compact_limit, compact
from actors.turn._history import history_item, messages_from_history, window_generation
from actors.turn._router import DEFAULT_MAX_TOOL_OUTPUT_BYTES, ToolOutput, ToolRouter
from actors.turn._task import TaskContext, TaskResult, TaskRunner, builtin_runner
from protos.supervisor.v1 import config_pb2, events_pb2, turn_pb2

if TYPE_CHECKING:
    from actors.hooks import AggregateResult

__all__ = [
    "CONVERSATION_KEY",
    "MAX_MODEL_ROUND_TRIPS",
    "MAX_STOP_HOOK_CONTINUATIONS",
    "PROVIDER_KEY",
    "TurnLimitExceeded",
    "close_turn_state",
    "default_runner",
    "make_turn_runner",
]

logger = logging.getLogger(__name__)

#: Key of the conversation (list of ``Message``) in ``TaskContext.state``.
CONVERSATION_KEY = "conversation"
#: Key of the provider built from the configuration, cached in ``TaskContext.state``.
PROVIDER_KEY = "provider"
#: Key of the conversation's window generation (how many compactions it went through) in ``TaskContext.state``.
WINDOW_KEY = "window_generation"
#: Key of the context size (tokens) the last model response reported, in ``TaskContext.state``.
CONTEXT_TOKENS_KEY = "context_tokens"
#: Most model requests in one turn: a model that never stops calling tools must not run forever.
MAX_MODEL_ROUND_TRIPS = 64
#: Most times Stop hooks may send the model back to work in one turn (Claude Code's loop guard, bounded).
MAX_STOP_HOOK_CONTINUATIONS = 3
#: The role of the root session, for ``ModelRequest.agent_role``.
ROOT_ROLE = "root"
#: Output the model sees for a call the interrupt cut short.
ABORTED_OUTPUT = "aborted: the turn was interrupted before this tool call finished"
MS_PER_S = 1000

_EFFORTS: dict[int, str] = {
    config_pb2.REASONING_EFFORT_MINIMAL: "minimal",
    config_pb2.REASONING_EFFORT_LOW: "low",
    config_pb2.REASONING_EFFORT_MEDIUM: "medium",
    config_pb2.REASONING_EFFORT_HIGH: "high",
    config_pb2.REASONING_EFFORT_XHIGH: "xhigh",
}


class TurnLimitExceeded(Exception):
    """Raised when a turn reaches its bound of model round trips without a final answer."""


@dataclass(frozen=True)
class TurnSettings:
    """The bounds of every turn a runner plays."""

    max_round_trips: int = MAX_MODEL_ROUND_TRIPS
    max_stop_continuations: int = MAX_STOP_HOOK_CONTINUATIONS
    max_tool_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES


def make_turn_runner(
    *,
    max_round_trips: int = MAX_MODEL_ROUND_TRIPS,
    max_stop_continuations: int = MAX_STOP_HOOK_CONTINUATIONS,
    max_tool_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES,
) -> TaskRunner:
    """The turn loop as a session ``TaskRunner`` (see the module docstring)."""
    settings = TurnSettings(max_round_trips, max_stop_continuations, max_tool_output_bytes)

    async def run_turn(ctx: TaskContext) -> TaskResult:
        return await _Turn(ctx, settings).run()

    run_turn.__name__ = "run_turn"
    return run_turn


async def default_runner(ctx: TaskContext) -> TaskResult:
    """The turn loop (model + tools), or the model-free ``builtin_runner`` when the provider is "builtin"."""
    if ctx.configuration.provider == "builtin":
        return await builtin_runner(ctx)
    runner = ctx.state.get("_turn_runner")
    if runner is None:
        runner = ctx.state["_turn_runner"] = make_turn_runner()
    result: TaskResult = await runner(ctx)
    return result


async def close_turn_state(state: dict[str, Any]) -> None:
    """Close the provider a turn cached in a session's ``state`` (call when the session stops)."""
    provider = state.pop(PROVIDER_KEY, None)
    if provider is not None:
        await provider.aclose()


def provider_for(ctx: TaskContext) -> ModelProvider:
    """The task's provider: ``services["provider"]``, else the one cached in (or built into) ``ctx.state``."""
    given = ctx.services.get("provider")
    if given is not None:
        return given  # type: ignore[no-any-return]
    cached = ctx.state.get(PROVIDER_KEY)
    if cached is None:
        options: Mapping[str, Any] = ctx.services.get("provider_options", {})
        kind = ctx.services.get("provider_kind") or ctx.configuration.provider or "playbook"
        cached = create_provider(kind, options)
        ctx.state[PROVIDER_KEY] = cached
    return cached  # type: ignore[no-any-return]


def instructions_for(configuration: config_pb2.SessionConfiguration) -> str:
    """Base, developer, collaboration-mode and user instructions, joined in that order."""
    parts = (
        configuration.base_instructions,
        configuration.developer_instructions,
        configuration.collaboration_mode.developer_instructions,
        configuration.user_instructions,
    )
    return "\n\n".join(part for part in parts if part)


class _Turn:
    """One run of the loop for one task."""

    def __init__(self, ctx: TaskContext, settings: TurnSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        if CONVERSATION_KEY not in ctx.state:
            ctx.state[CONVERSATION_KEY] = messages_from_history(ctx.history, (ctx.session_id,))
            ctx.state[WINDOW_KEY] = window_generation(ctx.history, ctx.session_id)
        self.conversation: list[Message] = ctx.state[CONVERSATION_KEY]
        self.hooks = ctx.services.get("hooks")
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.reasoning_output_tokens = 0
        #: Set when a tool hook answered ``continue: false``: the turn ends after the current round trip.
        self.halt_reason: str | None = None

    async def run(self) -> TaskResult:
        prompt = self.ctx.input
        command, _, extra = prompt.strip().partition(" ")
        if command == COMPACT_COMMAND:  # on demand: no user turn, a new context window
            provider = provider_for(self.ctx)
            summary = await self._compact(provider, self._request(None), "manual", extra.strip())
            return self._result(summary)
        verdict = await self._hook("UserPromptSubmit", {"prompt": prompt})
        if verdict is not None and (verdict.blocked or not verdict.continue_processing):
            reason = verdict.reason or verdict.stop_reason or "UserPromptSubmit hook blocked the prompt"
            self.ctx.emit(events_pb2.AgentMessage(text=reason, delta=False))
            return self._result(reason)
        if verdict is not None and verdict.updated_prompt is not None:
            prompt = verdict.updated_prompt
        provider = provider_for(self.ctx)
        await self._maybe_compact(provider)  # the context the last turn left is too large: compact it first
        self._add(Message.user(prompt, self._input_images()))
        if verdict is not None and verdict.additional_context:
            self._add(Message.system(verdict.additional_context))
        router = router_for(self.ctx, max_output_bytes=self.settings.max_tool_output_bytes)
        async with router:  # the tools' per-turn resources: background processes die with the turn
            return await self._loop(provider, router)

    async def _maybe_compact(self, provider: ModelProvider) -> None:
        """Compact when the last response's context passed the auto-compact limit."""
        limit = auto_compact_limit(self.ctx.configuration)
        if limit > 0 and self.ctx.state.get(CONTEXT_TOKENS_KEY, 0) >= limit:
            await self._compact(provider, self._request(None), "auto", "")

    async def _compact(self, provider: ModelProvider, request: ModelRequest, trigger: str, extra: str) -> str:
        """Summarize the conversation and start a new window from the summary (see ``_compact``)."""
        generation = self.ctx.state.get(WINDOW_KEY, 0) + 1
        summary, completed = await compact(
            provider=provider, request=request, conversation=self.conversation,
            configuration=self.ctx.configuration, trigger=trigger, instructions=extra, generation=generation,
            emit=self.ctx.emit, hook=self._hook, record=lambda message: self.ctx.emit(history_item(message)))
        self._count(completed)
        self.ctx.state[WINDOW_KEY] = generation
        self.ctx.state[CONTEXT_TOKENS_KEY] = 0  # the summary's size is unknown until the next response
        return summary

    async def _loop(self, provider: ModelProvider, router: ToolRouter) -> TaskResult:
        stop_continuations = 0
        for round_trip in range(self.settings.max_round_trips):
            if round_trip:
                await self._maybe_compact(provider)  # a long run of tool calls compacts mid-turn
            text, calls = await self._round_trip(provider, router)
            if self.halt_reason is not None:
                self.ctx.emit(events_pb2.AgentMessage(text=self.halt_reason, delta=False))
                return self._result(self.halt_reason)
            if calls:
                continue
            final = await self._hook(*self._stop_event(stop_continuations > 0))
            if (
                final is not None
                and final.decision == "block"
                and final.continue_processing
                and stop_continuations < self.settings.max_stop_continuations
            ):
                stop_continuations += 1
                self._add(Message.user(final.reason or "Stop hook asked to continue"))
                continue
            return self._result(text)
        raise TurnLimitExceeded(
            f"turn stopped after {self.settings.max_round_trips} model requests without a final answer"
        )

    def _stop_event(self, active: bool) -> tuple[str, dict[str, Any]]:
        """``Stop`` for a root session; ``SubagentStop`` (with the agent's id and type) for a subagent."""
        source = self.ctx.configuration.session_source
        if not source.parent_session_id:
            return "Stop", {"stop_hook_active": active}
        return "SubagentStop", {"stop_hook_active": active, "agent_id": self.ctx.session_id,
                                "agent_type": self.ctx.services.get("agent_role") or source.role or "worker",
                                "agent_transcript_path": ""}

    def _input_images(self) -> tuple[str, ...]:
        """``exec --image``: the images of the root agent's prompt (``services["input_images"]``, data URLs)."""
        if self.ctx.services.get("agent_role", ROOT_ROLE) != ROOT_ROLE:
            return ()
        return tuple(self.ctx.services.get("input_images", ()))

    def _add(self, message: Message) -> None:
        """Add a conversation entry and log it."""
        self.conversation.append(message)
        self.ctx.emit(history_item(message))

    def _result(self, text: str) -> TaskResult:
        return TaskResult(last_agent_message=text, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                          cached_input_tokens=self.cached_input_tokens,
                          reasoning_output_tokens=self.reasoning_output_tokens)

    def _request(self, router: ToolRouter | None) -> ModelRequest:
        configuration = self.ctx.configuration
        services = self.ctx.services
        return ModelRequest(
            model=configuration.collaboration_mode.model,
            instructions=instructions_for(configuration),
            messages=list(self.conversation),
            tools=router.specs() if router is not None else [],
            reasoning_effort=_EFFORTS.get(configuration.collaboration_mode.reasoning_effort),
            agent_role=services.get("agent_role", ROOT_ROLE),
            agent_nickname=services.get("agent_nickname"),
            window_id=f"{self.ctx.session_id}:{self.ctx.state.get(WINDOW_KEY, 0)}",
            # exec --output-schema shapes the root agent's answer only, as in Codex
            output_schema=services.get("output_schema") if services.get("agent_role", ROOT_ROLE) == ROOT_ROLE
            else None,
        )

    async def _round_trip(self, provider: ModelProvider, router: ToolRouter) -> tuple[str, list[ToolCall]]:
        """One model request; tools start as their calls arrive. Returns the text and the calls."""
        request = self._request(router)
        text = ""
        parts: list[str] = []
        calls: list[ToolCall] = []
        outputs: dict[str, ToolOutput] = {}
        contexts: dict[str, str] = {}
        completed: Completed | None = None
        flushed = 0  # parts[:flushed] were emitted as a finished message
        try:
            with collapse_cancelled():
                async with trio.open_nursery() as nursery:
                    async with aclosing(provider.stream(request)) as items:
                        async for item in items:
                            if isinstance(item, TextDelta):
                                parts.append(item.text)
                                self.ctx.emit(events_pb2.AgentMessage(text=item.text, delta=True))
                            elif isinstance(item, Reasoning):
                                self.ctx.emit(events_pb2.AgentReasoning(text=item.text))
                            elif isinstance(item, ToolCallItem):
                                # the text before a call is a message of its own, done before the call starts
                                # (Codex completes the message item first): its tool's events come after it
                                flushed = self._flush_message(parts, flushed)
                                calls.append(item.call)
                                self.ctx.emit(turn_pb2.ToolCallBegin(
                                    call_id=item.call.call_id, name=item.call.name,
                                    arguments_json=json.dumps(item.call.arguments, ensure_ascii=False),
                                ))
                                router.reserve(item.call)
                                nursery.start_soon(self._run_call, router, item.call, outputs, contexts)
                            else:
                                completed = item
                                break
                    if completed is None:
                        raise ProviderError("provider stream ended without a Completed item")
                    self._count(completed)
                    text = "".join(parts)
                    self._flush_message(parts, flushed)
        except BaseExceptionGroup as group:
            raise single_error(group) from None
        finally:
            if completed is not None:
                self._record(text, calls, outputs, contexts)
        return text, calls

    def _flush_message(self, parts: list[str], flushed: int) -> int:
        """Emit ``parts[flushed:]`` as one finished ``AgentMessage`` (if any text); the new flushed count."""
        text = "".join(parts[flushed:])
        if text:
            self.ctx.emit(events_pb2.AgentMessage(text=text, delta=False))
        return len(parts)

    def _record(
        self, text: str, calls: list[ToolCall], outputs: dict[str, ToolOutput], contexts: dict[str, str]
    ) -> None:
        """Append the assistant message, the results in call order (aborted ones too) and hook context."""
        if text or calls:
            self._add(Message.assistant(text, calls))
        for call in calls:
            output = outputs.get(call.call_id)
            self._add(Message.tool_result(call.call_id, output.text if output else ABORTED_OUTPUT))
        for call in calls:
            if call.call_id in contexts:
                self._add(Message.system(contexts[call.call_id]))

    def _count(self, completed: Completed) -> None:
        usage = completed.usage
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_input_tokens += usage.cached_input_tokens
        self.reasoning_output_tokens += usage.reasoning_output_tokens
        total = usage.total_tokens or usage.input_tokens + usage.output_tokens
        self.ctx.state[CONTEXT_TOKENS_KEY] = total
        self.ctx.emit(turn_pb2.TokenCount(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, total_tokens=total,
            cached_input_tokens=usage.cached_input_tokens, reasoning_output_tokens=usage.reasoning_output_tokens,
        ))

    async def _run_call(
        self, router: ToolRouter, call: ToolCall, outputs: dict[str, ToolOutput], contexts: dict[str, str]
    ) -> None:
        """PreToolUse hooks, the tool, PostToolUse hooks; then ``ToolCallEnd``."""
        started = time.monotonic()
        arguments: Mapping[str, Any] = call.arguments
        pre = await self._hook("PreToolUse", {"tool_name": call.name, "tool_input": dict(arguments)})
        if pre is not None and pre.decision == "ask" and not pre.blocked:  # the shell tool's gate asks
            self.ctx.state.setdefault(HOOK_ASKS_KEY, {})[call.call_id] = pre.reason or ""
        if pre is not None and pre.blocked:
            self._note_halt(pre)
            output = ToolOutput(pre.reason or f"PreToolUse hook blocked {call.name}", is_error=True)
        else:
            if pre is not None and pre.updated_input is not None:
                arguments = pre.updated_input
                call = ToolCall(call.call_id, call.name, dict(arguments), call.kind, call.namespace)
            output = await router.dispatch(call, self.ctx)
            post = await self._hook(
                "PostToolUse",
                {"tool_name": call.name, "tool_input": dict(arguments), "tool_response": output.text},
            )
            if post is not None:
                self._note_halt(post)
                notes = [note for note in (post.reason if post.blocked else None, post.additional_context) if note]
                if notes:
                    heading = f"PostToolUse hook on {call.name} ({call.call_id}):"
                    contexts[call.call_id] = "\n".join([heading, *notes])
        outputs[call.call_id] = output
        self.ctx.emit(turn_pb2.ToolCallEnd(
            call_id=call.call_id, name=call.name, output=output.text, is_error=output.is_error,
            duration_ms=int((time.monotonic() - started) * MS_PER_S),
        ))

    def _note_halt(self, verdict: AggregateResult) -> None:
        if not verdict.continue_processing and self.halt_reason is None:
            self.halt_reason = verdict.stop_reason or verdict.reason or f"{verdict.event_name} hook stopped the turn"

    async def _hook(self, event_name: str, fields: Mapping[str, Any]) -> AggregateResult | None:
        """The hooks' ``AggregateResult`` (None without hooks); a broken runner is logged, never fatal."""
        if self.hooks is None:
            return None
        try:
            result: AggregateResult = await self.hooks.run(event_name, fields, traceparent=self.ctx.traceparent or None)
        except Exception:
            logger.exception("%s hooks failed; continuing without them", event_name)
            return None
        for message in result.system_messages:
            self.ctx.emit(events_pb2.Warning(message=message))
        return result
