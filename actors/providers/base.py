"""The provider interface the session's turn loop talks to: plain data in, a stream of items out.

Contract:
- A ``ModelProvider`` turns one ``ModelRequest`` (the whole conversation so far, stateless) into an async
  stream of ``StreamItem``s, run on trio: any number of ``TextDelta``s and ``ToolCallItem``s in the order
  the model produced them, then exactly one ``Completed`` as the last item. A stream that ends without
  ``Completed`` raised instead.
- Failures surface as ``ProviderError`` (or a subclass), never as an SDK or transport exception.
- Consumers close streams they abandon: ``async with contextlib.aclosing(provider.stream(req)) as items``.
  Cancelling the consumer (a trio cancel scope) closes the underlying connection.
- ``aclose()`` releases the provider's connections; a provider is reusable for many requests until then.
- This module imports nothing heavy; ``create_provider`` imports the concrete provider module on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "PROVIDER_KINDS",
    "Completed",
    "Message",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ProviderError",
    "ProviderStatusError",
    "ProviderUnavailable",
    "Reasoning",
    "Role",
    "StreamItem",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolCallItem",
    "ToolKind",
    "ToolSpec",
    "collect_response",
    "create_provider",
    "estimate_tokens",
]

Role = Literal["system", "user", "assistant", "tool"]

#: Rough characters per token, for providers that estimate usage instead of measuring it.
CHARS_PER_TOKEN = 4

#: Provider kind -> "module:factory" (the module is imported only when that kind is created).
PROVIDER_KINDS: dict[str, str] = {
    "openai": "actors.providers.openai_provider:OpenAIProvider",
    "playbook": "actors.providers.playbook:PlaybookProvider",
}


class ProviderError(Exception):
    """Raised when a provider cannot be configured or a model request fails."""


class ProviderUnavailable(ProviderError):
    """The model server cannot be reached, or the connection broke or timed out (a dependency is down)."""


class ProviderStatusError(ProviderError):
    """The model server answered with an HTTP error status (``status``); the message carries its reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


ToolKind = Literal["function", "custom"]


@dataclass(frozen=True)
class ToolCall:
    """One tool invocation requested by the model; ``call_id`` pairs it with its result message.

    A freeform (``custom``) tool's raw input arrives as ``arguments == {"input": TEXT}``; ``namespace`` is the
    namespace the model called the tool in (Responses API namespaces), "" for none.
    """

    call_id: str
    name: str
    arguments: dict[str, Any]
    kind: ToolKind = "function"
    namespace: str = ""


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, what it does, and a JSON schema of its arguments.

    ``kind="custom"`` is a freeform tool (Responses API): no JSON arguments, its input constrained by
    ``format`` (e.g. a Lark grammar); providers without custom tools offer it as a function taking
    ``{"input": string}``. Tools with the same ``namespace`` are offered grouped under it (Responses API),
    flattened elsewhere.
    """

    name: str
    description: str
    parameters_json_schema: dict[str, Any]
    kind: ToolKind = "function"
    format: dict[str, Any] | None = None
    namespace: str = ""
    namespace_description: str = ""


@dataclass(frozen=True)
class Message:
    """One conversation entry. ``tool`` messages carry ``tool_call_id``; assistant ones may carry calls; a user
    message may carry images (``data:`` URLs, sent before its text, as Codex sends ``exec --image``)."""

    role: Role
    content: str = ""
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    images: tuple[str, ...] = ()

    @classmethod
    def system(cls, content: str) -> Message:
        """A system message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str, images: tuple[str, ...] = ()) -> Message:
        """A user message (with images: ``data:`` URLs)."""
        return cls("user", content, images=tuple(images))

    @classmethod
    def assistant(cls, content: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        """What the model answered: text, tool calls, or both."""
        return cls("assistant", content, None, list(tool_calls or []))

    @classmethod
    def tool_result(cls, call_id: str, output: str) -> Message:
        """The output of the tool call ``call_id``, fed back to the model."""
        return cls("tool", output, call_id)


@dataclass(frozen=True)
class ModelRequest:
    """Everything a provider needs for one model call (providers keep no conversation state).

    ``agent_role`` and ``agent_nickname`` identify a subagent (None for the root session); providers
    that script behaviour per agent (the playbook) select on them, others ignore them. ``window_id`` names the
    conversation's context window (``<session id>:<window generation>``, Codex's ``x-codex-window-id``).
    """

    model: str
    instructions: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    reasoning_effort: str | None = None
    agent_role: str | None = None
    agent_nickname: str | None = None
    window_id: str | None = None
    #: A JSON Schema the final answer must follow (``exec --output-schema``), sent as a strict JSON format.
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one model call."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    #: Of the input tokens, those served from the prompt cache (Responses ``input_tokens_details``).
    cached_input_tokens: int = 0
    #: Of the output tokens, those spent reasoning (Responses ``output_tokens_details``).
    reasoning_output_tokens: int = 0


@dataclass(frozen=True)
class TextDelta:
    """A piece of the model's answer text, in order."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """A complete reasoning summary the model produced (one per reasoning item); consumers may ignore it."""

    text: str


@dataclass(frozen=True)
class ToolCallItem:
    """A complete tool call (arguments fully received and parsed)."""

    call: ToolCall


@dataclass(frozen=True)
class Completed:
    """The last item of every stream: usage, and why the model stopped (``stop``, ``tool_calls``, ...)."""

    usage: TokenUsage
    finish_reason: str


StreamItem = TextDelta | Reasoning | ToolCallItem | Completed


@runtime_checkable
class ModelProvider(Protocol):
    """A model backend. ``stream`` is an async generator running on trio (close it with ``aclosing``)."""

    def stream(self, request: ModelRequest) -> AsyncGenerator[StreamItem, None]:
        """Send ``request`` and yield the model's output as it arrives, ending with ``Completed``."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources (idempotent)."""
        ...


@dataclass(frozen=True)
class ModelResponse:
    """A whole stream gathered: the text, the tool calls in order, and the final ``Completed``."""

    text: str
    tool_calls: list[ToolCall]
    completed: Completed

    def as_message(self) -> Message:
        """The assistant message to append to the conversation."""
        return Message.assistant(self.text, self.tool_calls)


async def collect_response(provider: ModelProvider, request: ModelRequest) -> ModelResponse:
    """Run ``request`` to the end and gather its stream (for callers that need no incremental output)."""
    from contextlib import aclosing

    parts: list[str] = []
    calls: list[ToolCall] = []
    async with aclosing(provider.stream(request)) as items:
        async for item in items:
            if isinstance(item, TextDelta):
                parts.append(item.text)
            elif isinstance(item, ToolCallItem):
                calls.append(item.call)
            elif isinstance(item, Completed):
                return ModelResponse("".join(parts), calls, item)
    raise ProviderError("provider stream ended without a Completed item")


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: characters / 4, rounded up."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def create_provider(kind: str, options: Mapping[str, Any] | None = None) -> ModelProvider:
    """Build the provider ``kind`` (``openai`` or ``playbook``) from its options, importing it lazily."""
    target = PROVIDER_KINDS.get(kind)
    if target is None:
        known = ", ".join(sorted(PROVIDER_KINDS))
        raise ProviderError(f"unknown provider kind {kind!r} (known: {known})")
    module_name, _, factory_name = target.partition(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, factory_name)
    provider: ModelProvider = factory.from_options(dict(options or {}))
    return provider
