"""Any OpenAI-compatible server through the official ``openai`` SDK, streamed on trio.

Contract:
- Speaks the Responses API (``POST /responses``, ``stream=True``, function tools, tool results fed back as
  ``function_call_output`` items; freeform ``custom`` tools and tool ``namespace`` groups as Codex sends
  them, their calls fed back as ``custom_tool_call`` / ``function_call`` with its namespace) or Chat
  Completions (``api = "chat"``; freeform tools become functions of ``{"input"}``, namespaces are flattened).
  With ``api = "auto"`` (the default) a 404/405 on ``/responses`` switches this provider to Chat Completions for good.
- The SDK's ``AsyncOpenAI`` runs directly on trio (it is built on anyio + httpx2, both trio-capable), so a
  stream is cancelled by the caller's trio cancel scope and its connection is closed within
  ``STREAM_CLOSE_TIMEOUT_S``. A provider is bound to the trio loop that first uses it.
- ``openai`` is imported on first use, in a worker thread (the import takes ~0.7 s and must not stall the
  shared loop). Retries are the SDK's (``max_retries``, small by default).
- Base URL, API key: options first, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
- Every SDK or transport failure surfaces as ``ProviderError``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import trio

from actors.providers.base import (
    Completed,
    Message,
    ModelRequest,
    ProviderError,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    ToolSpec,
)

__all__ = ["OpenAIOptions", "OpenAIProvider"]

logger = logging.getLogger(__name__)

#: SDK retries on 408/409/429/5xx and connection errors; a turn loop wants a failure reported soon.
DEFAULT_MAX_RETRIES = 2
#: Longest silence between two reads of a stream (models can think for a while before the first token).
DEFAULT_TIMEOUT_S = 300.0
#: Longest wait to establish a connection.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Bound on closing a stream's connection when the consumer stops or is cancelled.
STREAM_CLOSE_TIMEOUT_S = 2.0
#: HTTP statuses on ``/responses`` meaning "this server has no Responses API".
NO_RESPONSES_API_STATUSES = frozenset({404, 405})

Api = Literal["auto", "responses", "chat"]


@dataclass(frozen=True)
class OpenAIOptions:
    """Configuration of an ``OpenAIProvider`` (all optional; see the module docstring for defaults)."""

    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    api: Api = "auto"
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    store: bool = False
    #: Extra HTTP headers and query parameters on every request (Codex's ``http_headers``, ``query_params``).
    headers: Mapping[str, str] = field(default_factory=dict)
    query_params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> OpenAIOptions:
        """Validate a plain options table (e.g. from TOML); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ProviderError(f"unknown openai provider option(s) {unknown}; known: {sorted(known)}")
        api = options.get("api", "auto")
        if api not in ("auto", "responses", "chat"):
            raise ProviderError(f"openai provider option api must be auto, responses or chat, not {api!r}")
        try:
            return cls(
                base_url=_opt_str(options, "base_url"),
                api_key=_opt_str(options, "api_key"),
                model=_opt_str(options, "model"),
                api=api,
                max_retries=int(options.get("max_retries", DEFAULT_MAX_RETRIES)),
                timeout_s=float(options.get("timeout_s", DEFAULT_TIMEOUT_S)),
                connect_timeout_s=float(options.get("connect_timeout_s", DEFAULT_CONNECT_TIMEOUT_S)),
                store=bool(options.get("store", False)),
                headers={str(k): str(v) for k, v in dict(options.get("headers", {})).items()},
                query_params={str(k): str(v) for k, v in dict(options.get("query_params", {})).items()},
            )
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"bad openai provider option: {exc}") from exc


def _opt_str(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is not None and not isinstance(value, str):
        raise ProviderError(f"openai provider option {key} must be a string")
    return value


class OpenAIProvider:
    """A ``ModelProvider`` for OpenAI-compatible servers (Responses API, Chat Completions fallback)."""

    def __init__(self, options: OpenAIOptions | None = None) -> None:
        self.options = options or OpenAIOptions()
        self.base_url = self.options.base_url or os.environ.get("OPENAI_BASE_URL") or None
        self._api_key = self.options.api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            raise ProviderError("openai provider needs an API key: set options.api_key or OPENAI_API_KEY")
        self._api: Api = self.options.api
        self._client: Any = None
        self._openai: Any = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OpenAIProvider:
        """Build from a plain options table (``create_provider("openai", {...})``)."""
        return cls(OpenAIOptions.from_mapping(options))

    @property
    def api(self) -> Api:
        """The wire API in use: ``chat`` once a fallback happened."""
        return self._api

    async def _ensure_client(self) -> Any:
        if self._openai is None:
            self._openai = await trio.to_thread.run_sync(importlib.import_module, "openai")
        if self._client is None:
            openai = self._openai
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=self.options.max_retries,
                default_headers=dict(self.options.headers) or None,
                default_query=dict(self.options.query_params) or None,
                timeout=openai.Timeout(self.options.timeout_s, connect=self.options.connect_timeout_s),
            )
        return self._client

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamItem, None]:
        """Send ``request``; yield text deltas and tool calls as they arrive, then ``Completed``."""
        model = request.model or self.options.model
        if not model:
            raise ProviderError("no model: set ModelRequest.model or the provider option model")
        client = await self._ensure_client()
        openai = self._openai
        try:
            if self._api != "chat":
                try:
                    sdk_stream = await client.responses.create(**self._responses_params(model, request))
                except openai.APIStatusError as exc:
                    if self._api != "auto" or exc.status_code not in NO_RESPONSES_API_STATUSES:
                        raise
                    logger.info("%s has no Responses API (HTTP %s); using Chat Completions",
                                self.base_url, exc.status_code)
                    self._api = "chat"
                else:
                    async with _closing(sdk_stream), aclosing(_parse_responses_stream(sdk_stream)) as items:
                        async for item in items:
                            yield item
                    return
            sdk_stream = await client.chat.completions.create(**self._chat_params(model, request))
            async with _closing(sdk_stream), aclosing(_parse_chat_stream(sdk_stream)) as chat_items:
                async for item in chat_items:
                    yield item
        except openai.OpenAIError as exc:
            raise ProviderError(f"model request to {self.base_url or 'OpenAI'} failed: {exc}") from exc

    async def aclose(self) -> None:
        """Close the SDK client and its connection pool (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + STREAM_CLOSE_TIMEOUT_S
                await client.close()

    def _responses_params(self, model: str, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "input": responses_input(request.messages),
            "stream": True,
            "store": self.options.store,
        }
        if request.instructions:
            params["instructions"] = request.instructions
        if request.tools:
            params["tools"] = responses_tools(request.tools)
            params["parallel_tool_calls"] = True
        if request.reasoning_effort:
            params["reasoning"] = {"effort": request.reasoning_effort}
        return params

    def _chat_params(self, model: str, request: ModelRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
        params: dict[str, Any] = {
            "model": model,
            "messages": messages + chat_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [chat_tool(spec) for spec in request.tools]
        if request.reasoning_effort:
            params["reasoning_effort"] = request.reasoning_effort
        return params


class _closing:
    """Close an SDK stream on exit, even when cancelled, within ``STREAM_CLOSE_TIMEOUT_S``."""

    def __init__(self, sdk_stream: Any) -> None:
        self._stream = sdk_stream

    async def __aenter__(self) -> Any:
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + STREAM_CLOSE_TIMEOUT_S
            await self._stream.close()


# --- request conversion ----------------------------------------------------------------------------


def responses_input(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as Responses API input items (a freeform tool's call and output as custom items)."""
    items: list[dict[str, Any]] = []
    custom_calls: set[str] = set()
    for message in messages:
        if message.role == "tool":
            call_id = _tool_call_id(message)
            kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
            items.append({"type": kind, "call_id": call_id, "output": message.content})
            continue
        if message.content or not message.tool_calls:
            items.append({"type": "message", "role": message.role, "content": message.content})
        for call in message.tool_calls:
            if call.kind == "custom":
                custom_calls.add(call.call_id)
                items.append({"type": "custom_tool_call", "call_id": call.call_id, "name": call.name,
                              "input": str(call.arguments.get("input", ""))})
                continue
            item = {"type": "function_call", "call_id": call.call_id, "name": call.name,
                    "arguments": json.dumps(call.arguments)}
            if call.namespace:
                item["namespace"] = call.namespace
            items.append(item)
    return items


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as Chat Completions messages."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            out.append({"role": "tool", "tool_call_id": _tool_call_id(message), "content": message.content})
        elif message.role == "assistant" and message.tool_calls:
            out.append({
                "role": "assistant",
                "content": message.content or None,
                "tool_calls": [
                    {"id": call.call_id, "type": "function",
                     "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
                    for call in message.tool_calls
                ],
            })
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def responses_tool(spec: ToolSpec) -> dict[str, Any]:
    """A function or freeform (custom) tool in Responses API shape."""
    if spec.kind == "custom":
        tool: dict[str, Any] = {"type": "custom", "name": spec.name, "description": spec.description}
        if spec.format is not None:
            tool["format"] = spec.format
        return tool
    return {"type": "function", "name": spec.name, "description": spec.description,
            "parameters": spec.parameters_json_schema, "strict": False}


def responses_tools(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    """The tools in Responses API shape; tools of one namespace grouped where its first tool stands."""
    tools: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for spec in specs:
        if not spec.namespace:
            tools.append(responses_tool(spec))
            continue
        group = groups.get(spec.namespace)
        if group is None:
            group = groups[spec.namespace] = {"type": "namespace", "name": spec.namespace,
                                              "description": spec.namespace_description, "tools": []}
            tools.append(group)
        group["tools"].append(responses_tool(spec))
    return tools


#: What a freeform tool takes when a wire API has no custom tools: its raw input as one string.
FREEFORM_AS_FUNCTION_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"],
    "additionalProperties": False,
}


def chat_tool(spec: ToolSpec) -> dict[str, Any]:
    """A tool in Chat Completions shape (a function; a freeform tool takes ``{"input": string}``)."""
    parameters = FREEFORM_AS_FUNCTION_SCHEMA if spec.kind == "custom" else spec.parameters_json_schema
    return {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                             "parameters": parameters}}


def _tool_call_id(message: Message) -> str:
    if not message.tool_call_id:
        raise ProviderError("a tool message needs tool_call_id")
    return message.tool_call_id


def parse_arguments(name: str, raw: str) -> dict[str, Any]:
    """A tool call's JSON arguments as a dict (empty text means no arguments)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"model sent invalid JSON arguments for tool {name}: {exc}") from exc
    if not isinstance(value, dict):
        raise ProviderError(f"model sent arguments for tool {name} that are not a JSON object: {raw[:200]}")
    return value


# --- stream parsing --------------------------------------------------------------------------------


async def _parse_responses_stream(events: AsyncIterator[Any]) -> AsyncGenerator[StreamItem, None]:
    arguments: dict[str, list[str]] = {}
    saw_call = False
    completed: Completed | None = None
    events = aiter(events)  # one iterator for the loop and the drain below
    async for event in events:
        kind = getattr(event, "type", "")
        if kind == "response.output_text.delta":
            if event.delta:
                yield TextDelta(event.delta)
        elif kind == "response.function_call_arguments.delta":
            arguments.setdefault(event.item_id, []).append(event.delta)
        elif kind == "response.output_item.done" and getattr(event.item, "type", "") == "function_call":
            item = event.item
            raw = item.arguments or "".join(arguments.pop(item.id or "", []))
            saw_call = True
            namespace = getattr(item, "namespace", None) or ""
            yield ToolCallItem(ToolCall(item.call_id, item.name, parse_arguments(item.name, raw),
                                        namespace=namespace))
        elif kind == "response.output_item.done" and getattr(event.item, "type", "") == "custom_tool_call":
            item = event.item
            saw_call = True
            yield ToolCallItem(ToolCall(item.call_id, item.name, {"input": item.input or ""}, kind="custom",
                                        namespace=getattr(item, "namespace", None) or ""))
        elif kind in ("response.completed", "response.incomplete"):
            response = event.response
            if kind == "response.completed":
                finish = "tool_calls" if saw_call else "stop"
            else:
                details = getattr(response, "incomplete_details", None)
                finish = getattr(details, "reason", None) or "incomplete"
            completed = Completed(_responses_usage(getattr(response, "usage", None)), finish)
            break
        elif kind == "response.failed":
            error = getattr(event.response, "error", None)
            raise ProviderError(f"model response failed: {getattr(error, 'message', None) or error}")
        elif kind == "error":
            raise ProviderError(f"model stream error: {getattr(event, 'message', event)}")
    if completed is None:
        raise ProviderError("model stream ended before response.completed")
    # The SDK's generators are only cleaned up by running out: read the (empty) rest, bounded.
    with trio.move_on_after(STREAM_CLOSE_TIMEOUT_S):
        async for _ in events:
            pass
    yield completed


def _responses_usage(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    return TokenUsage(usage.input_tokens, usage.output_tokens, usage.total_tokens)


async def _parse_chat_stream(chunks: AsyncIterator[Any]) -> AsyncGenerator[StreamItem, None]:
    pending: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage = TokenUsage()
    async for chunk in chunks:
        if chunk.usage is not None:
            usage = TokenUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens,
                               chunk.usage.total_tokens)
        for choice in chunk.choices:
            delta = choice.delta
            if delta is not None and delta.content:
                yield TextDelta(delta.content)
            for part in (delta.tool_calls or []) if delta is not None else []:
                slot = pending.setdefault(part.index, {"id": "", "name": "", "arguments": []})
                slot["id"] = part.id or slot["id"]
                if part.function is not None:
                    slot["name"] = part.function.name or slot["name"]
                    slot["arguments"].append(part.function.arguments or "")
            if choice.finish_reason:
                finish = choice.finish_reason
                for item in _flush_chat_calls(pending):
                    yield item
    for item in _flush_chat_calls(pending):
        yield item
    yield Completed(usage, finish or "stop")


def _flush_chat_calls(pending: dict[int, dict[str, Any]]) -> list[ToolCallItem]:
    items = []
    for index in sorted(pending):
        slot = pending[index]
        raw = "".join(slot["arguments"])
        items.append(ToolCallItem(ToolCall(slot["id"], slot["name"], parse_arguments(slot["name"], raw))))
    pending.clear()
    return items
