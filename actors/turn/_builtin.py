"""The tools a session offers its model: shell, MCP tools, agent tools and the client's dynamic tools.

Contract:
- Each handler is ``async (call: ToolCall, ctx: TaskContext) -> ToolOutput`` and reads its service from
  ``ctx.services``; argument errors raise ``ToolError`` (the router turns them into error outputs).
- ``shell`` runs ``{"command": str, "timeout_ms"?: int, "workdir"?: str, "sandbox_permissions"?:
  "use_default" | "require_escalated", "justification"?: str}`` through the session's
  ``SessionShell`` (its snapshot and proxy environment), with the model's ``call_id`` so ``ExecBegin`` /
  ``ExecEnd`` pair with the tool call. A relative ``workdir`` resolves against the shell's cwd. The output
  is the exit code, the wall time and the command's combined output; a non-zero exit or a timeout is an
  error output. Before it runs, ``services["enforcement"].gate`` decides (exec policy rules, the approval
  policy, a question to the client or the guardian, which PermissionRequest hooks may answer first): a refusal
  or denial is the output; an abort ends the turn.
- MCP tools keep the manager's qualified names; arguments pass through unchanged; the result's text (or its
  structured content when there is no text) is the output, ``is_error`` as the server reported it.
- Agent tools are the ``specs()`` of ``services["agents"]``; each name calls the method of that name with
  ``(arguments, ctx)`` and the returned dict is the output, as JSON.
- Dynamic tools are listed from the configuration; a call is answered by ``services["dynamic_tools"][name]``
  (``async (arguments, ctx) -> str | dict``) when present, else with an error: the client answers them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actors.agents import AgentToolError
from actors.approvals import ESCALATE
from actors.errors import TurnAbortRequested
from actors.mcp import DELIMITER, TOOL_NAME_PREFIX
from actors.providers import ToolCall, ToolSpec
from actors.shell import UnifiedExec
from actors.turn import _codex, _codex_specs
from actors.turn._router import DEFAULT_MAX_TOOL_OUTPUT_BYTES, ToolError, ToolHandler, ToolOutput, ToolRouter
from protos.supervisor.v1 import tools_pb2

if TYPE_CHECKING:
    from actors.mcp import McpRouter
    from actors.turn._task import TaskContext
    from protos.supervisor.v1 import config_pb2

__all__ = [
    "DYNAMIC_TOOL_UNANSWERED",
    "MAX_SHELL_TIMEOUT_MS",
    "SHELL_SPEC",
    "agent_tools",
    "call_mcp",
    "dynamic_tools",
    "mcp_specs",
    "router_for",
    "run_shell",
]

logger = logging.getLogger(__name__)

#: Longest a model may ask one shell command to run (a runaway timeout must not pin the turn for hours).
MAX_SHELL_TIMEOUT_MS = 10 * 60 * 1000
MS_PER_S = 1000.0
#: Answer for a dynamic tool this session has no handler for.
DYNAMIC_TOOL_UNANSWERED = "dynamic tools are answered by the client"
#: Schema used when a tool declares none (or an unparsable one): an object with any properties.
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

SHELL_SPEC = ToolSpec(
    name="shell",
    description=(
        "Run a shell command in the session's shell (the user's environment, aliases and functions) and "
        "return its exit code and combined stdout/stderr."
    ),
    parameters_json_schema={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command line to run."},
            "timeout_ms": {"type": "integer", "description": "Time limit in milliseconds.", "minimum": 1},
            "workdir": {"type": "string", "description": "Working directory (default: the session's)."},
            "sandbox_permissions": {
                "type": "string", "enum": ["use_default", "require_escalated"],
                "description": "require_escalated asks the user to run this command outside the sandbox "
                               "(approval policy on-request); give a justification.",
            },
            "justification": {"type": "string",
                              "description": "Why the command needs to run outside the sandbox (shown to the user)."},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
)


# --- shell -------------------------------------------------------------------------------------------
async def run_shell(call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """Run the ``shell`` tool through ``ctx.services["shell"]``."""
    shell = ctx.services["shell"]
    args = call.arguments
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolError("`command` must be a non-empty string")
    unknown = sorted(set(args) - _SHELL_ARGS)
    if unknown:
        raise ToolError(f"unknown argument(s) {unknown}; expected {', '.join(sorted(_SHELL_ARGS))}")
    timeout_ms = args.get("timeout_ms")
    if timeout_ms is not None and (isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0):
        raise ToolError("`timeout_ms` must be a positive integer")
    workdir = args.get("workdir")
    if workdir is not None and not isinstance(workdir, str):
        raise ToolError("`workdir` must be a string")
    permissions = args.get("sandbox_permissions", "use_default")
    if permissions not in ("use_default", ESCALATE):
        raise ToolError("`sandbox_permissions` must be use_default or require_escalated")
    justification = args.get("justification", "")
    if not isinstance(justification, str):
        raise ToolError("`justification` must be a string")
    cwd = Path(shell.cwd) / workdir if workdir else None
    timeout_s = min(timeout_ms, MAX_SHELL_TIMEOUT_MS) / MS_PER_S if timeout_ms is not None else None
    sandboxed = True
    enforcement = ctx.services.get("enforcement")
    if enforcement is not None:
        gate = await enforcement.gate(
            command, cwd or shell.cwd, emit=ctx.emit, call_id=call.call_id,
            agent_path=ctx.services.get("agent_path", "/root"), turn_id=ctx.task_id,
            escalate=permissions == ESCALATE, justification=justification,
            hook_asks=ctx.state.get(HOOK_ASKS_KEY, {}).pop(call.call_id, None), context=recent_context(ctx),
            permission_hooks=_permission_hooks(ctx, call.name, args),
        )  # fmt: skip
        if gate.abort:
            raise TurnAbortRequested(gate.message)
        if not gate.run:
            return ToolOutput(gate.message, is_error=True)
        sandboxed = not gate.bypass_sandbox
    result = await shell.exec(command, cwd, timeout_s=timeout_s, call_id=call.call_id, sandboxed=sandboxed)
    lines = [f"Exit code: {result.exit_code}", f"Wall time: {result.duration_ms / MS_PER_S:.1f} seconds"]
    if result.timed_out:
        lines.append(f"command timed out after {(timeout_s or shell.default_timeout_s) * MS_PER_S:.0f} ms")
    if result.truncated:
        lines.append(f"Total output bytes: {result.total_bytes}")
    lines.append("Output:")
    text = "\n".join(lines) + "\n" + result.output
    return ToolOutput(text, is_error=result.exit_code != 0 or result.timed_out)


def _permission_hooks(ctx: TaskContext, tool_name: str, args: dict[str, Any]
                      ) -> Callable[[], Awaitable[tuple[bool, str] | None]] | None:
    """The PermissionRequest hooks for an approval question: (allowed, reason), or None when no hook decided
    (or they failed: the question is asked as if there were none)."""
    hooks = ctx.services.get("hooks")
    if hooks is None:
        return None

    async def ask() -> tuple[bool, str] | None:
        try:
            result = await hooks.run("PermissionRequest", {"tool_name": tool_name, "tool_input": dict(args)},
                                     traceparent=ctx.traceparent or None)
        except Exception:
            logger.exception("PermissionRequest hooks failed; asking as usual")
            return None
        if result.decision == "allow" and not result.blocked:
            return True, result.reason or ""
        if result.blocked or result.decision == "deny":
            return False, result.reason or ""
        return None

    return ask


_SHELL_ARGS = frozenset({"command", "timeout_ms", "workdir", "sandbox_permissions", "justification"})
#: ``ctx.state`` key: call id -> the reason of a PreToolUse hook that answered ``ask`` (set by the turn loop).
HOOK_ASKS_KEY = "hook_asks"
#: Messages of the conversation the guardian sees (Codex bounds its transcript the same way).
CONTEXT_MESSAGES = 12
#: Characters of one message the guardian sees.
CONTEXT_MESSAGE_CHARS = 2000


def recent_context(ctx: TaskContext) -> str:
    """The last messages of the conversation, as ``role: text`` lines (for a reviewer)."""
    conversation = ctx.state.get("conversation", [])
    lines = [f"{m.role}: {m.content[:CONTEXT_MESSAGE_CHARS]}" for m in conversation[-CONTEXT_MESSAGES:]
             if getattr(m, "content", "")]
    return "\n".join(lines)


# --- MCP ---------------------------------------------------------------------------------------------
def mcp_specs(manager: McpRouter) -> list[ToolSpec]:
    """Every tool the manager offers, under its qualified name."""
    return [
        ToolSpec(tool.name, tool.description, _schema(tool.input_schema_json, tool.name))
        for tool in manager.list_tools()
    ]


def _mcp_parts(manager: McpRouter, name: str) -> tuple[str, str]:
    """(server, tool) of a qualified name, from the manager's listing (a server name may contain the
    delimiter), else by splitting it."""
    for listed in manager.list_tools():
        if listed.name == name:
            return listed.server, listed.tool
    server, _, tool = name.removeprefix(TOOL_NAME_PREFIX + DELIMITER).partition(DELIMITER)
    return server, tool


async def call_mcp(call: ToolCall, ctx: TaskContext) -> ToolOutput:
    """Call an MCP tool by its qualified name through ``ctx.services["mcp"]``, framed by
    ``McpToolCallBegin``/``McpToolCallEnd`` (Codex's mcp_tool_call item)."""
    manager: McpRouter = ctx.services["mcp"]
    server, tool = _mcp_parts(manager, call.name)
    arguments_json = json.dumps(call.arguments, ensure_ascii=False)
    ctx.emit(tools_pb2.McpToolCallBegin(call_id=call.call_id, server=server, tool=tool,
                                        arguments_json=arguments_json))
    started = time.monotonic()
    end = tools_pb2.McpToolCallEnd(call_id=call.call_id, server=server, tool=tool, is_error=True,
                                   error="the call was interrupted")
    try:
        result = await manager.call_tool(call.name, dict(call.arguments), traceparent=ctx.traceparent)
        content = [{"type": "text", "text": result.text}] if result.text else []
        structured = json.loads(result.structured_content_json) if result.structured_content_json else None
        end.result_json = json.dumps({"content": content, "structured_content": structured}, ensure_ascii=False)
        end.is_error, end.error = result.is_error, ""
    except Exception as exc:
        end.error = str(exc)
        raise
    finally:
        end.duration_ms = int((time.monotonic() - started) * MS_PER_S)
        ctx.emit(end)
    text = result.text or result.structured_content_json
    return ToolOutput(text, is_error=result.is_error)


# --- agents ------------------------------------------------------------------------------------------
AgentMethod = Callable[[dict[str, Any], "TaskContext"], Awaitable[Mapping[str, Any]]]


def agent_tools(agents: Any) -> Iterator[tuple[ToolSpec, Any]]:
    """(spec, method) for each agent tool ``agents.specs()`` lists that has a method of its name (agents
    without the two tool sets of ``AgentTools``)."""
    for spec in agents.specs():
        method = getattr(agents, spec.name, None) if not spec.name.startswith("_") else None
        if spec.name == "specs" or not callable(method):
            logger.warning("agent tool %r has no method of that name; not offered", spec.name)
            continue
        yield spec, method


def _agent_handler(method: AgentMethod) -> ToolHandler:
    async def handle(call: ToolCall, ctx: TaskContext) -> ToolOutput:
        answer = await method(dict(call.arguments), ctx)
        return ToolOutput(json.dumps(answer, default=str, ensure_ascii=False))

    return handle


def _codex_agent_handler(method: Callable[..., Awaitable[Mapping[str, Any]]]) -> ToolHandler:
    async def handle(call: ToolCall, ctx: TaskContext) -> ToolOutput:
        try:
            answer = await method(dict(call.arguments), ctx, call.call_id)
        except AgentToolError as exc:
            return ToolOutput(str(exc), is_error=True)
        # Codex answers with compact JSON (serde's): {"agent_id":"...","nickname":"..."}
        return ToolOutput(json.dumps(answer, default=str, ensure_ascii=False, separators=(",", ":")))

    return handle


# --- dynamic tools -----------------------------------------------------------------------------------
DynamicHandler = Callable[[dict[str, Any], "TaskContext"], Awaitable[str | Mapping[str, Any]]]


def dynamic_tools(
    configuration: config_pb2.SessionConfiguration, handlers: Mapping[str, DynamicHandler] | None
) -> Iterator[tuple[ToolSpec, ToolHandler]]:
    """(spec, handler) for each dynamic tool of the configuration."""
    for tool in configuration.dynamic_tools:
        spec = ToolSpec(tool.name, tool.description, _schema(tool.input_schema_json, tool.name))
        handler = (handlers or {}).get(tool.name)
        yield spec, (_dynamic_handler(handler) if handler is not None else _unanswered)


def _dynamic_handler(handler: DynamicHandler) -> ToolHandler:
    async def handle(call: ToolCall, ctx: TaskContext) -> ToolOutput:
        answer = await handler(dict(call.arguments), ctx)
        text = answer if isinstance(answer, str) else json.dumps(answer, default=str, ensure_ascii=False)
        return ToolOutput(text)

    return handle


async def _unanswered(call: ToolCall, ctx: TaskContext) -> ToolOutput:
    raise ToolError(f"{DYNAMIC_TOOL_UNANSWERED}, and this session has no handler for it")


def _schema(text: str, name: str) -> dict[str, Any]:
    if not text:
        return dict(ANY_OBJECT_SCHEMA)
    try:
        schema = json.loads(text)
    except ValueError:
        logger.warning("tool %r has an input schema that is not JSON; offering it without one", name)
        return dict(ANY_OBJECT_SCHEMA)
    return schema if isinstance(schema, dict) else dict(ANY_OBJECT_SCHEMA)


#: The tool sets: Codex 0.169's (exec_command, write_stdin, update_plan, apply_patch, the multi_agent_v1
#: namespace) and the classic one (shell, wait, ...) the playbook's plans are written against.
CODEX_TOOL_SET = "codex"
CLASSIC_TOOL_SET = "classic"


def tool_set_for(ctx: TaskContext) -> str:
    """``services["tool_set"]`` if given, else Codex's set for a provider of the ``openai`` kind (Codex's own
    ``[model_providers.X]`` tables are of that kind whatever their name), the classic one otherwise."""
    chosen = ctx.services.get("tool_set")
    if chosen in (CODEX_TOOL_SET, CLASSIC_TOOL_SET):
        return str(chosen)
    kind = ctx.services.get("provider_kind") or ctx.configuration.provider
    return CODEX_TOOL_SET if kind == "openai" else CLASSIC_TOOL_SET


def _bind(function: Callable[..., Awaitable[ToolOutput]], first: Any) -> ToolHandler:
    async def handle(call: ToolCall, ctx: TaskContext) -> ToolOutput:
        return await function(first, call, ctx)

    return handle


def _shell_tools(router: ToolRouter, ctx: TaskContext, shell: Any, *, codex: bool) -> None:
    unified = UnifiedExec(shell.runner, cwd=shell.cwd, emit=ctx.emit, extra_env=shell.extra_env,
                          ready=getattr(shell, "wait_ready", None))
    router.add_resource(unified)
    cwd = Path(shell.cwd)
    tools: list[tuple[ToolSpec, ToolHandler]] = [
        (_codex_specs.EXEC_COMMAND_SPEC, _bind(_codex.exec_command, unified)),
        (_codex_specs.WRITE_STDIN_SPEC, _bind(_codex.write_stdin, unified)),
        (_codex_specs.UPDATE_PLAN_SPEC, _codex.update_plan),
        (_apply_patch_spec(ctx), _bind(_codex.apply_patch, cwd)),
    ]
    if codex:
        for spec, handler in tools:
            router.register(spec, handler)
        router.alias(SHELL_SPEC.name, run_shell)
    else:
        router.register(SHELL_SPEC, run_shell)
        for spec, handler in tools:
            router.alias(spec.name, handler)


def _apply_patch_spec(ctx: TaskContext) -> ToolSpec:
    # Chat Completions has no freeform tools: the JSON form there (the provider would convert it anyway)
    api = ctx.services.get("provider_options", {}).get("api")
    return _codex_specs.APPLY_PATCH_FUNCTION_SPEC if api == "chat" else _codex_specs.APPLY_PATCH_SPEC


def router_for(ctx: TaskContext, *, max_output_bytes: int = DEFAULT_MAX_TOOL_OUTPUT_BYTES) -> ToolRouter:
    """The router for ``ctx``'s services and configuration (see ``_router``'s module docstring): Codex's tool
    set or the classic one (``tool_set_for``); the other set's names are routed but not offered."""
    router = ToolRouter(max_output_bytes=max_output_bytes)
    services: Mapping[str, Any] = ctx.services
    codex = tool_set_for(ctx) == CODEX_TOOL_SET
    shell = services.get("shell")
    if shell is not None:
        _shell_tools(router, ctx, shell, codex=codex)
    manager = services.get("mcp")
    if manager is not None:
        for spec in mcp_specs(manager):
            router.register(spec, call_mcp)
        # an MCP tool not listed at turn start (an on_first_use server) is still routed: the manager starts it
        router.set_fallback(TOOL_NAME_PREFIX + DELIMITER, call_mcp)
    agents = services.get("agents")
    if agents is not None:
        if hasattr(agents, "codex_tools"):
            methods = agents.codex_tools()
            codex_tools = [(spec, _codex_agent_handler(methods[spec.name])) for spec in _codex_specs.AGENT_SPECS]
            classic_tools = [(spec, _agent_handler(method)) for spec, method in agents.classic_tools()]
            offered, hidden = (codex_tools, classic_tools) if codex else (classic_tools, codex_tools)
        else:
            offered, hidden = [(spec, _agent_handler(method)) for spec, method in agent_tools(agents)], []
        for spec, handler in offered:
            router.register(spec, handler)
        for spec, handler in hidden:
            router.alias(spec.name, handler)
        if codex:  # as in Codex, its multi-agent tools take no parallel calls
            router.serialize(*(spec.name for spec in _codex_specs.AGENT_SPECS))
    for spec, handler in dynamic_tools(ctx.configuration, services.get("dynamic_tools")):
        router.register(spec, handler)
    return router
