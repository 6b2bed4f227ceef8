"""The tool router of one turn: which tools the model is offered, and where each call goes.

Contract:
- ``ToolRouter.from_context(ctx)`` builds the tool set from the task's services, in this order (the first
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
- Handlers live in ``_tools_builtin``; this module imports nothing heavy (no ``mcp``, no ``openai``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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

    def register(self, spec: ToolSpec, handler: ToolHandler) -> bool:
        """Offer ``spec`` to the model and route its calls to ``handler``; False if the name was taken."""
        if spec.name in self._specs:
            logger.warning("tool %r is offered twice; keeping the first one", spec.name)
            return False
        self._specs[spec.name] = spec
        self._handlers[spec.name] = handler
        return True

    @classmethod
    def from_context(
        cls, ctx: TaskContext, *, max_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES
    ) -> ToolRouter:
        """The router for ``ctx``'s services and configuration (see the module docstring)."""
        from actors.turn import _builtin as _tools_builtin

        router = cls(max_output_bytes=max_output_bytes)
        services: Mapping[str, Any] = ctx.services
        if services.get("shell") is not None:
            router.register(_tools_builtin.SHELL_SPEC, _tools_builtin.run_shell)
        manager = services.get("mcp")
        if manager is not None:
            for spec in _tools_builtin.mcp_specs(manager):
                router.register(spec, _tools_builtin.call_mcp)
        agents = services.get("agents")
        if agents is not None:
            for spec, handler in _tools_builtin.agent_tools(agents):
                router.register(spec, handler)
        for spec, handler in _tools_builtin.dynamic_tools(ctx.configuration, services.get("dynamic_tools")):
            router.register(spec, handler)
        return router

    def specs(self) -> list[ToolSpec]:
        """Every tool offered to the model, in registration order."""
        return list(self._specs.values())

    def names(self) -> list[str]:
        """The names of the offered tools, in registration order."""
        return list(self._specs)

    async def dispatch(self, call: ToolCall, ctx: TaskContext) -> ToolOutput:
        """Run one tool call; failures become error outputs, cancellation propagates."""
        handler = self._handlers.get(call.name)
        if handler is None:
            handler = self._fallback(call.name, ctx)
        if handler is None:
            return self._bounded(ToolOutput(self._unknown_tool_text(call.name), is_error=True))
        try:
            output = await handler(call, ctx)
        except ToolError as exc:
            output = ToolOutput(f"{call.name}: {exc}", is_error=True)
        except Exception as exc:  # a failing tool is an answer for the model, not the end of the turn
            logger.info("tool %s (%s) failed: %r", call.name, call.call_id, exc)
            output = ToolOutput(f"tool {call.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        return self._bounded(output)

    def _fallback(self, name: str, ctx: TaskContext) -> ToolHandler | None:
        # an MCP tool not listed at turn start (an on_first_use server) is still routed: the manager starts it
        from actors.mcp._names import DELIMITER, TOOL_NAME_PREFIX
        from actors.turn._builtin import call_mcp

        if ctx.services.get("mcp") is not None and name.startswith(TOOL_NAME_PREFIX + DELIMITER):
            return call_mcp
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
