"""Any OpenAI-compatible server, streamed on trio through a lean HTTP client (no SDK on the hot path).

Contract:
- Speaks the Responses API (``POST /responses``, ``stream=True``, function tools, tool results fed back as
  ``function_call_output`` items; freeform ``custom`` tools and tool ``namespace`` groups as Codex sends
  them, their calls fed back as ``custom_tool_call`` / ``function_call`` with its namespace) or Chat
  Completions (``api = "chat"``; freeform tools become functions of ``{"input"}``, namespaces are flattened).
  With ``api = "auto"`` (the default) a 404/405 on ``/responses`` switches this provider to Chat Completions for good.
- The wire is ``_http.HttpClient`` (h11 over trio sockets) and ``_sse.SseDecoder``; events are plain dicts
  from ``json.loads``. Nothing of the ``openai`` SDK is imported (it costs ~0.7 s to import and ~0.5 s to
  build its pydantic models on the first stream, on the shared trio thread). Importing this module costs
  ~15 ms (h11).
- A stream is cancelled by the caller's trio cancel scope, which closes its connection at once. A provider
  is bound to the trio loop that first uses it; connections are kept alive between requests.
- Retries: up to ``max_retries`` more attempts when the server cannot be reached or answers 408/409/429/5xx
  before the stream started, after ``RETRY_BASE_S`` * 2^attempt (or the server's ``Retry-After``), at most
  ``RETRY_MAX_S``. Nothing is retried once a stream has begun.
- Base URL, API key: options first, then ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``; ``OPENAI_ORG_ID`` and
  ``OPENAI_PROJECT_ID`` are sent as the SDK sends them; a request's ``window_id`` as ``x-codex-window-id``.
- Every failure is a ``ProviderError``: ``ProviderUnavailable`` when the server cannot be reached or the
  connection breaks or times out, ``ProviderStatusError`` (with ``status``) for an HTTP error answer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import trio

from actors.providers._http import HttpClient, StreamingResponse
from actors.providers._sse import SseDecoder
from actors.providers.base import (
    Completed,
    Message,
    ModelRequest,
    ProviderError,
    ProviderStatusError,
    ProviderUnavailable,
    Reasoning,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    ToolSpec,
)

__all__ = ["OpenAIOptions", "OpenAIProvider"]

logger = logging.getLogger(__name__)

#: Retries when the server is unreachable or busy; a turn loop wants a failure reported soon.
DEFAULT_MAX_RETRIES = 2
#: Longest silence between two reads of a stream (models can think for a while before the first token).
DEFAULT_TIMEOUT_S = 300.0
#: Longest wait to establish a connection.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Bound on reading the rest of a finished stream (so its connection can be reused) or closing it.
STREAM_CLOSE_TIMEOUT_S = 2.0
#: HTTP statuses on ``/responses`` meaning "this server has no Responses API".
NO_RESPONSES_API_STATUSES = frozenset({404, 405})
#: Statuses worth another attempt (the SDK's set): timeout, conflict, rate limit, server errors.
RETRY_STATUSES = frozenset({408, 409, 429})
SERVER_ERROR_MIN = 500
#: Backoff between attempts: base * 2^attempt, capped (also caps a server's Retry-After).
RETRY_BASE_S = 0.5
RETRY_MAX_S = 8.0
#: The header naming the conversation's context window (Codex's: ``<thread id>:<window generation>``).
WINDOW_ID_HEADER = "x-codex-window-id"
#: The name Codex gives the ``--output-schema`` format.
OUTPUT_SCHEMA_NAME = "codex_output_schema"
#: Where requests go when neither the options nor OPENAI_BASE_URL say.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Chat Completions' end-of-stream marker.
CHAT_DONE = "[DONE]"

Api = Literal["auto", "responses", "chat"]
#: A stream parser: the events' JSON objects in, stream items out.
_Parser = Callable[[AsyncIterator[dict[str, Any]]], AsyncGenerator[StreamItem, None]]


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
        self.base_url = self.options.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        api_key = self.options.api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ProviderError("openai provider needs an API key: set options.api_key or OPENAI_API_KEY")
        headers = {"authorization": f"Bearer {api_key}", "accept": "text/event-stream"}
        for header, var in (("openai-organization", "OPENAI_ORG_ID"), ("openai-project", "OPENAI_PROJECT_ID")):
            if os.environ.get(var):
                headers[header] = os.environ[var]
        headers.update({k.lower(): v for k, v in self.options.headers.items()})
        self._http = HttpClient(self.base_url, headers=headers, query=self.options.query_params,
                                connect_timeout_s=self.options.connect_timeout_s,
                                read_timeout_s=self.options.timeout_s)
        self._api: Api = self.options.api

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OpenAIProvider:
        """Build from a plain options table (``create_provider("openai", {...})``)."""
        return cls(OpenAIOptions.from_mapping(options))

    @property
    def api(self) -> Api:
        """The wire API in use: ``chat`` once a fallback happened."""
        return self._api

    async def warm(self) -> None:
        """Connect ahead of the first request (a failure here is left for the request to report)."""
        try:
            await self._http.warm()
        except ProviderError as exc:
            logger.debug("pre-connecting to %s failed: %s", self.base_url, exc)

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamItem, None]:
        """Send ``request``; yield text deltas and tool calls as they arrive, then ``Completed``."""
        model = request.model or self.options.model
        if not model:
            raise ProviderError("no model: set ModelRequest.model or the provider option model")
        parse: _Parser
        if self._api == "chat":
            path, params, parse, done = "chat/completions", self._chat_params(model, request), _parse_chat_stream, \
                CHAT_DONE
        else:
            path, params, parse, done = "responses", self._responses_params(model, request), \
                _parse_responses_stream, None
        completed: Completed | None = None
        try:
            headers = {WINDOW_ID_HEADER: request.window_id} if request.window_id else {}
            async with self._post(path, params, headers) as response:
                async with aclosing(_sse_data(response, done)) as data, aclosing(parse(data)) as items:
                    async for item in items:
                        if isinstance(item, Completed):
                            completed = item  # held back until the body is read: the connection stays usable
                        else:
                            yield item
                await _finish(response)
        except ProviderStatusError as exc:
            if path != "responses" or self._api != "auto" or exc.status not in NO_RESPONSES_API_STATUSES:
                raise
            logger.info("%s has no Responses API (HTTP %s); using Chat Completions", self.base_url, exc.status)
            self._api = "chat"
            async for item in self.stream(request):
                yield item
            return
        assert completed is not None  # both parsers end with Completed or raise
        yield completed

    async def aclose(self) -> None:
        """Close the kept-alive connections (idempotent)."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + STREAM_CLOSE_TIMEOUT_S
            await self._http.aclose()

    @asynccontextmanager
    async def _post(self, path: str, payload: dict[str, Any],
                    headers: Mapping[str, str] | None = None) -> AsyncGenerator[StreamingResponse, None]:
        """POST ``payload``; yield a 2xx response; retry what may pass (see the module docstring)."""
        body = json.dumps(payload).encode()
        attempt = 0
        while True:
            streamed = False
            try:
                async with self._http.post(path, body, headers) as response:
                    if response.status < 400:
                        streamed = True
                        yield response
                        return
                    error = await self._status_error(response)
                delay = _retry_after(response.headers.get("retry-after"))
            except ProviderUnavailable as exc:
                if streamed or attempt >= self.options.max_retries:
                    raise ProviderUnavailable(f"model request to {self.base_url} failed: {exc}") from exc
                delay = None
            else:
                retryable = error.status in RETRY_STATUSES or error.status >= SERVER_ERROR_MIN
                if not retryable or attempt >= self.options.max_retries:
                    raise error
            delay = min(RETRY_MAX_S, delay if delay is not None else RETRY_BASE_S * 2**attempt)
            logger.info("model request to %s: attempt %d failed; retrying in %.1f s", self.base_url,
                        attempt + 1, delay)
            attempt += 1
            await trio.sleep(delay)

    async def _status_error(self, response: StreamingResponse) -> ProviderStatusError:
        try:
            raw = await response.read_error_body()
        except ProviderError:
            raw = b""
        detail = raw.decode(errors="replace").strip()
        try:
            error = json.loads(raw).get("error")
            if isinstance(error, dict) and error.get("message"):
                detail = str(error["message"])
            elif isinstance(error, str):
                detail = error
        except (ValueError, AttributeError):
            pass
        return ProviderStatusError(
            f"model request to {self.base_url} failed: HTTP {response.status}: {detail[:500] or '(no body)'}",
            response.status)

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
        if request.output_schema is not None:  # as Codex sends --output-schema
            params["text"] = {"format": {"type": "json_schema", "name": OUTPUT_SCHEMA_NAME,
                                         "schema": request.output_schema, "strict": True}}
        return params

    def _chat_params(self, model: str, request: ModelRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
        params: dict[str, Any] = {
            "model": model,
            "messages": messages + chat_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.output_schema is not None:
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": OUTPUT_SCHEMA_NAME, "schema": request.output_schema, "strict": True}}
        if request.tools:
            params["tools"] = [chat_tool(spec) for spec in request.tools]
        if request.reasoning_effort:
            params["reasoning_effort"] = request.reasoning_effort
        return params


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the HTTP-date form is not worth parsing here)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def _sse_data(response: StreamingResponse, done: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
    """The JSON objects of a response's SSE ``data`` fields, until the body ends (or the ``done`` marker)."""
    decoder = SseDecoder()
    async for chunk in response.chunks():
        for event in decoder.feed(chunk):
            if done is not None and event.data == done:
                return
            try:
                value = json.loads(event.data)
            except ValueError as exc:
                raise ProviderError(f"model stream sent an event that is not JSON: {event.data[:200]!r}") from exc
            if isinstance(value, dict):
                yield value
    decoder.close()


async def _finish(response: StreamingResponse) -> None:
    """Read what is left of a finished stream (normally nothing), bounded, so its connection can be reused."""
    with trio.move_on_after(STREAM_CLOSE_TIMEOUT_S):
        async for _ in response.chunks():
            pass


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
        if message.images:
            parts = [{"type": "input_image", "image_url": url} for url in message.images]
            items.append({"type": "message", "role": message.role,
                          "content": [*parts, {"type": "input_text", "text": message.content}]})
        elif message.content or not message.tool_calls:
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
        elif message.images:
            parts = [{"type": "image_url", "image_url": {"url": url}} for url in message.images]
            out.append({"role": message.role, "content": [*parts, {"type": "text", "text": message.content}]})
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


async def _parse_responses_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncGenerator[StreamItem, None]:
    arguments: dict[str, list[str]] = {}
    saw_call = False
    async for event in events:
        kind = event.get("type", "")
        if kind == "response.output_text.delta":
            if event.get("delta"):
                yield TextDelta(event["delta"])
        elif kind == "response.function_call_arguments.delta":
            arguments.setdefault(event.get("item_id", ""), []).append(event.get("delta") or "")
        elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            name = item.get("name", "")
            raw = item.get("arguments") or "".join(arguments.pop(item.get("id") or "", []))
            saw_call = True
            yield ToolCallItem(ToolCall(item.get("call_id", ""), name, parse_arguments(name, raw),
                                        namespace=item.get("namespace") or ""))
        elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "custom_tool_call":
            item = event["item"]
            saw_call = True
            yield ToolCallItem(ToolCall(item.get("call_id", ""), item.get("name", ""),
                                        {"input": item.get("input") or ""}, kind="custom",
                                        namespace=item.get("namespace") or ""))
        elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "reasoning":
            summary = [part.get("text") or "" for part in event["item"].get("summary") or []
                       if isinstance(part, dict)]
            if any(summary):
                yield Reasoning("\n\n".join(text for text in summary if text))
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            if kind == "response.completed":
                finish = "tool_calls" if saw_call else "stop"
            else:
                finish = (response.get("incomplete_details") or {}).get("reason") or "incomplete"
            yield Completed(_responses_usage(response.get("usage")), finish)
            return
        elif kind == "response.failed":
            error = (event.get("response") or {}).get("error")
            message = error.get("message") if isinstance(error, dict) else error
            raise ProviderError(f"model response failed: {message}")
        elif kind == "error":
            raise ProviderError(f"model stream error: {event.get('message') or event}")
    raise ProviderError("model stream ended before response.completed")


def _detail(usage: dict[str, Any], table: str, key: str) -> int:
    details = usage.get(table)
    return int(details.get(key) or 0) if isinstance(details, dict) else 0


def _responses_usage(usage: dict[str, Any] | None) -> TokenUsage:
    if not usage:
        return TokenUsage()
    return TokenUsage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
                      int(usage.get("total_tokens") or 0),
                      _detail(usage, "input_tokens_details", "cached_tokens"),
                      _detail(usage, "output_tokens_details", "reasoning_tokens"))


async def _parse_chat_stream(events: AsyncIterator[dict[str, Any]]) -> AsyncGenerator[StreamItem, None]:
    pending: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage = TokenUsage()
    async for chunk in events:
        if chunk.get("usage"):
            u = chunk["usage"]
            usage = TokenUsage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0),
                               int(u.get("total_tokens") or 0),
                               _detail(u, "prompt_tokens_details", "cached_tokens"),
                               _detail(u, "completion_tokens_details", "reasoning_tokens"))
        if chunk.get("error"):
            error = chunk["error"]
            raise ProviderError(f"model stream error: {error.get('message') if isinstance(error, dict) else error}")
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield TextDelta(delta["content"])
            for part in delta.get("tool_calls") or []:
                slot = pending.setdefault(int(part.get("index") or 0), {"id": "", "name": "", "arguments": []})
                slot["id"] = part.get("id") or slot["id"]
                function = part.get("function") or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"].append(function.get("arguments") or "")
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
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
