"""The tool router of one turn: which tools the model is offered, and where each call goes.

Contract:
- ``router_for(ctx)`` (in ``_builtin``) builds the tool set from the task's services, in this order (the first
  registration of a name wins, later duplicates are dropped with a log line): ``shell`` when
  ``services["shell"]`` is a ``SessionShell``; every tool of ``services["mcp"]`` (the ``McpTools`` of the
  per-server actors, or an ``McpConnectionManager``) under its qualified name ``mcp__SERVER__TOOL``; the
  agent tools of
  ``services["agents"].specs()``; the client's ``configuration.dynamic_tools``.
- ``ToolRouter.dispatch(call, ctx)`` never raises for a tool's sake: an unknown tool, bad arguments or a
  tool that raises all become a ``ToolOutput`` with ``is_error=True`` whose text the model reads. Only
  cancellation (``trio.Cancelled``, an interrupt) propagates, never swallowed.
- Every output is bounded to ``max_output_bytes`` of UTF-8 (head and tail kept around a marker that says how
  much was cut), so one chatty tool cannot flood the model's context.
- A call made in a namespace (Responses API) goes to ``NAMESPACE__NAME`` when that is routed (Codex 0.169
  calls an MCP tool as ``echo`` in namespace ``mcp__toolbox``), else to its plain name.
- Tools named in ``serialize(...)`` run one call at a time, in the order the calls arrived (``reserve``, called
  by the turn loop as each call streams in; a call never reserved queues when it is dispatched), as Codex runs
  the tools that do not support parallel calls (the multi-agent ones): their items never interleave.
- Handlers live in ``_builtin``; this module imports neither them nor any wing (no ``mcp``, no ``openai``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from actors.errors import TurnAbortRequested
from actors.providers import ToolCall, ToolSpec

if TYPE_CHECKING:
    from actors.turn._task import TaskContext

__all__ = [
    "DEFAULT_MAX_TOOL_OUTPUT_BYTES",
    "ToolError",
    "ToolHandler",
    "ToolOutput",
    "ToolRouter",
    "bound_output",
]

logger = logging.getLogger(__name__)

#: Most bytes of one tool's output fed back to the model (Codex keeps a similar head + tail window).
DEFAULT_MAX_TOOL_OUTPUT_BYTES = 64 * 1024
#: Most tool names listed in an "unknown tool" answer (the model needs a hint, not the whole catalogue).
MAX_NAMES_IN_UNKNOWN_TOOL_ERROR = 50
#: Between a namespace and a tool's name in its routed name (``mcp__SERVER`` + ``__`` + ``TOOL``).
NAMESPACE_DELIMITER = "__"


class ToolError(Exception):
    """Raised by a tool handler when the call cannot be served (bad arguments, no handler); the text is the
    error the model sees."""


@dataclass(frozen=True)
class ToolOutput:
    """What the model sees for one tool call: text, and whether the call failed."""

    text: str
    is_error: bool = False


ToolHandler = Callable[[ToolCall, "TaskContext"], Awaitable[ToolOutput]]


class ToolRouter:
    """The tools of one turn: their specs for the model, and a handler per name."""

    def __init__(self, *, max_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES) -> None:
        self.max_output_bytes = max_output_bytes
        self._specs: dict[str, ToolSpec] = {}
        self._handlers: dict[str, ToolHandler] = {}
        self._fallbacks: list[tuple[str, ToolHandler]] = []
        self._resources: list[AbstractAsyncContextManager[Any]] = []
        self._stack: AsyncExitStack | None = None
        self._serial: set[str] = set()
        self._queue: list[str] = []  # call ids of the serial calls not finished yet, in arrival order
        self._queue_moved = trio.Event()

    def add_resource(self, resource: AbstractAsyncContextManager[Any]) -> None:
        """Enter ``resource`` when the turn enters the router and leave it when the turn ends (e.g. the unified
        exec's processes, killed then)."""
        self._resources.append(resource)

    async def __aenter__(self) -> ToolRouter:
        stack = AsyncExitStack()
        await stack.__aenter__()
        self._stack = stack
        try:
            for resource in self._resources:
                await stack.enter_async_context(resource)
        except BaseException:
            self._stack = None
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    def alias(self, name: str, handler: ToolHandler) -> None:
        """Route calls to ``name`` to ``handler`` without offering it (the other tool set's names keep working
        for a model or playbook that calls them); an offered tool of that name wins."""
        self._handlers.setdefault(name, handler)

    def register(self, spec: ToolSpec, handler: ToolHandler) -> bool:
        """Offer ``spec`` to the model and route its calls to ``handler``; False if the name was taken."""
        if spec.name in self._specs:
            logger.warning("tool %r is offered twice; keeping the first one", spec.name)
            return False
        self._specs[spec.name] = spec
        self._handlers.pop(spec.name, None)  # an alias of that name gives way
        self._handlers[spec.name] = handler
        return True

    def set_fallback(self, prefix: str, handler: ToolHandler) -> None:
        """Route calls to unlisted tools whose name starts with ``prefix`` to ``handler`` (e.g. an MCP tool of a
        server started on first use, not listed at turn start)."""
        self._fallbacks.append((prefix, handler))

    def specs(self) -> list[ToolSpec]:
        """Every tool offered to the model, in registration order."""
        return list(self._specs.values())

    def names(self) -> list[str]:
        """The names of the offered tools, in registration order."""
        return list(self._specs)

    def serialize(self, *names: str) -> None:
        """Run calls to ``names`` one at a time, in arrival order (tools that must not run in parallel)."""
        self._serial.update(names)

    def reserve(self, call: ToolCall) -> None:
        """Note that ``call`` arrived (before it is dispatched), so a serial call keeps its place in line."""
        if self._resolve(call).name in self._serial and call.call_id not in self._queue:
            self._queue.append(call.call_id)

    def _resolve(self, call: ToolCall) -> ToolCall:
        if call.namespace:
            qualified = f"{call.namespace}{NAMESPACE_DELIMITER}{call.name}"
            if qualified in self._handlers or self._fallback(qualified) is not None:
                return replace(call, name=qualified)
        return call

    async def dispatch(self, call: ToolCall, ctx: TaskContext) -> ToolOutput:
        """Run one tool call; failures become error outputs, cancellation propagates."""
        call = self._resolve(call)
        if call.name not in self._serial:
            return await self._dispatch(call, ctx)
        if call.call_id not in self._queue:
            self._queue.append(call.call_id)
        try:
            while self._queue[0] != call.call_id:
                await self._queue_moved.wait()
            return await self._dispatch(call, ctx)
        finally:
            self._queue.remove(call.call_id)
            moved, self._queue_moved = self._queue_moved, trio.Event()
            moved.set()

    async def _dispatch(self, call: ToolCall, ctx: TaskContext) -> ToolOutput:
        handler = self._handlers.get(call.name)
        if handler is None:
            handler = self._fallback(call.name)
        if handler is None:
            return self._bounded(ToolOutput(self._unknown_tool_text(call.name), is_error=True))
        try:
            output = await handler(call, ctx)
        except ToolError as exc:
            output = ToolOutput(f"{call.name}: {exc}", is_error=True)
        except TurnAbortRequested:
            raise  # an approval answer ends the turn, not just this call
        except Exception as exc:  # a failing tool is an answer for the model, not the end of the turn
            logger.info("tool %s (%s) failed: %r", call.name, call.call_id, exc)
            output = ToolOutput(f"tool {call.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        return self._bounded(output)

    def _fallback(self, name: str) -> ToolHandler | None:
        for prefix, handler in self._fallbacks:
            if name.startswith(prefix):
                return handler
        return None

    def _unknown_tool_text(self, name: str) -> str:
        names = self.names()
        shown = ", ".join(names[:MAX_NAMES_IN_UNKNOWN_TOOL_ERROR]) or "(none)"
        hidden = len(names) - MAX_NAMES_IN_UNKNOWN_TOOL_ERROR
        more = f" and {hidden} more" if hidden > 0 else ""
        return f"unknown tool {name!r}; available tools: {shown}{more}"

    def _bounded(self, output: ToolOutput) -> ToolOutput:
        text = bound_output(output.text, self.max_output_bytes)
        return output if text is output.text else ToolOutput(text, output.is_error)


def bound_output(text: str, max_bytes: int) -> str:
    """``text`` if its UTF-8 fits ``max_bytes``, else its head and tail around a marker naming the cut.

    A limit smaller than the marker itself keeps only the marker.
    """
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    marker_budget = len(_marker(len(data)).encode())
    keep = max(0, max_bytes - marker_budget)
    head_len = keep // 2
    tail_len = keep - head_len
    head = data[:head_len].decode("utf-8", "ignore")
    tail = data[len(data) - tail_len :].decode("utf-8", "ignore") if tail_len else ""
    omitted = len(data) - len(head.encode("utf-8", "surrogatepass")) - len(tail.encode("utf-8", "surrogatepass"))
    return f"{head}{_marker(omitted)}{tail}"


def _marker(omitted: int) -> str:
    return f"\n[... {omitted} bytes of tool output omitted ...]\n"
