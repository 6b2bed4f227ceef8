"""Feature requests a session serves for its children (Exec, network approvals, hooks, MCP).

They reach the session as ``Envelope.opaque`` (type name + serialized request) so that the envelope need not
grow a field per feature. A handler returns a reply message, or a ``concurrent.futures.Future`` of one when the
work takes time: the caller waits on the future, never the session's mailbox.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from actors.agents import REQUESTS as AGENT_REQUESTS
from actors.approvals import ExecDecision
from actors.errors import ConfigError, SessionStateError
from actors.session._children import SessionChildrenMixin as SessionSupervisor
from protos.supervisor.v1 import hooks_pb2, mcp_pb2, network_pb2, session_pb2, shell_pb2

__all__ = ["REQUEST_TYPES", "handle_feature_request"]

Reply = Message | concurrent.futures.Future[Any]


def _child(session: SessionSupervisor, child_id: str, what: str) -> Any:
    ref = session.child_ref(child_id)
    if ref is None:
        raise SessionStateError(f"session {session.session_id} has no {what} (child {child_id!r} not running)")
    return ref.proxy()


def _exec(session: SessionSupervisor, request: shell_pb2.ExecRequest) -> Reply:
    if not request.command:
        raise ConfigError("command: must not be empty")
    if request.cwd and not os.path.isdir(request.cwd):  # as StartSession checks its cwd: the client's mistake
        raise ConfigError(f"cwd: {request.cwd!r} is not a directory")
    for name in request.env:
        if not name or "=" in name or "\x00" in name:
            raise ConfigError(f"env: invalid variable name {name!r}")
    session.enforcement.refuse_forbidden(request.command)  # the client is the approver: only rules refuse
    inherited = session.inherited_shell
    if inherited is not None:  # a subagent: its own runner over the parent's snapshot, in its own scope
        return session.run_task(inherited.exec_request, request, critical=False, name="exec")
    shell = _child(session, "shell_snapshot", "shell")
    future: concurrent.futures.Future[Any] = shell.exec_request(request).get(timeout=10)
    return future


_EXEC_DECISIONS = {
    network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_ONCE: ExecDecision.APPROVE_ONCE,
    network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION: ExecDecision.APPROVE_FOR_SESSION,
    network_pb2.NETWORK_APPROVAL_DECISION_ABORT: ExecDecision.ABORT,
}


def _resolve_approval(session: SessionSupervisor, request: session_pb2.ResolveApprovalRequest) -> Reply:
    """A command approval question of the tree (any session of it may answer), else a network one."""
    decision = _EXEC_DECISIONS.get(request.decision, ExecDecision.DENY)
    if session.enforcement.approvals.resolve(request.approval_id, decision):
        return session_pb2.ResolveApprovalResponse(found=True)
    if session.child_ref("proxy") is None and session.setup.services.get("inherit") is not None:
        return session_pb2.ResolveApprovalResponse(found=False)  # a subagent: network questions are the root's
    proxy = _child(session, "proxy", "network proxy")
    resolved = network_pb2.ResolveNetworkApprovalRequest(id=request.approval_id, decision=request.decision)
    found = proxy.handle_request(resolved).get(timeout=10).found
    return session_pb2.ResolveApprovalResponse(found=found)


def _network(session: SessionSupervisor, request: session_pb2.SessionNetworkProxyRequest) -> Reply:
    proxy = _child(session, "proxy", "network proxy")
    reply: network_pb2.GetNetworkProxyResponse = proxy.handle_request(network_pb2.GetNetworkProxyRequest()).get(
        timeout=10)
    return reply


def _list_hooks(session: SessionSupervisor, request: hooks_pb2.ListHooksRequest) -> Reply:
    ref = session.child_ref("hooks")
    if ref is None:
        return hooks_pb2.ListHooksResponse()
    reply: hooks_pb2.ListHooksResponse = ref.proxy().list_hooks().get(timeout=10)
    return reply


def _mcp(session: SessionSupervisor) -> Any:
    """The session's ``McpTools`` (over its ``mcp:NAME`` children, or its parent's when shared)."""
    tools = session.setup.services.get("mcp")
    if tools is None:
        raise SessionStateError(f"session {session.session_id} has no MCP servers")
    return tools


def _on_loop(session: SessionSupervisor, name: str, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """Run ``fn()`` (a coroutine function) on the trio loop in the session's scope, ended with the session."""
    future: concurrent.futures.Future[Any] = session.run_task(fn, critical=False, name=name)
    return future


def _mcp_call(session: SessionSupervisor, request: mcp_pb2.McpToolCallRequest) -> Reply:
    try:
        arguments = json.loads(request.arguments_json) if request.arguments_json else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"arguments_json: not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise ConfigError("arguments_json: must be a JSON object")
    tools = _mcp(session)
    return _on_loop(session, f"mcp:call:{request.tool}",
                    lambda: tools.call_tool(request.tool, arguments, traceparent=request.traceparent))


def _mcp_list(session: SessionSupervisor, request: mcp_pb2.McpListToolsRequest) -> Reply:
    tools = _mcp(session)

    async def listing() -> mcp_pb2.McpListToolsResponse:
        return mcp_pb2.McpListToolsResponse(tools=tools.list_tools())

    return _on_loop(session, "mcp:list_tools", listing)


def _mcp_accept(session: SessionSupervisor, request: mcp_pb2.McpAcceptToolsRequest) -> Reply:
    tools = _mcp(session)

    async def accept() -> mcp_pb2.McpAcceptToolsResponse:
        return mcp_pb2.McpAcceptToolsResponse(accepted=tools.accept_tools(request.server))

    return _on_loop(session, "mcp:accept_tools", accept)


def _mcp_control(session: SessionSupervisor, request: mcp_pb2.McpServerControlRequest) -> Reply:
    tools = _mcp(session)
    return _on_loop(session, f"mcp:control:{request.server}", lambda: tools.control(request.server, request.action))


def _mcp_elicitation(session: SessionSupervisor, request: mcp_pb2.McpResolveElicitationRequest) -> Reply:
    resolved = _mcp(session).resolve_elicitation(request.id, request.action, request.content_json)
    return mcp_pb2.McpResolveElicitationResponse(resolved=bool(resolved))


Handler = Callable[[SessionSupervisor, Any], Reply]
REQUEST_TYPES: dict[str, tuple[type[Message], Handler]] = {
    shell_pb2.ExecRequest.DESCRIPTOR.full_name: (shell_pb2.ExecRequest, _exec),
    session_pb2.ResolveApprovalRequest.DESCRIPTOR.full_name: (session_pb2.ResolveApprovalRequest, _resolve_approval),
    session_pb2.SessionNetworkProxyRequest.DESCRIPTOR.full_name: (session_pb2.SessionNetworkProxyRequest, _network),
    hooks_pb2.ListHooksRequest.DESCRIPTOR.full_name: (hooks_pb2.ListHooksRequest, _list_hooks),
    mcp_pb2.McpToolCallRequest.DESCRIPTOR.full_name: (mcp_pb2.McpToolCallRequest, _mcp_call),
    mcp_pb2.McpListToolsRequest.DESCRIPTOR.full_name: (mcp_pb2.McpListToolsRequest, _mcp_list),
    mcp_pb2.McpAcceptToolsRequest.DESCRIPTOR.full_name: (mcp_pb2.McpAcceptToolsRequest, _mcp_accept),
    mcp_pb2.McpServerControlRequest.DESCRIPTOR.full_name: (mcp_pb2.McpServerControlRequest, _mcp_control),
    mcp_pb2.McpResolveElicitationRequest.DESCRIPTOR.full_name: (mcp_pb2.McpResolveElicitationRequest,
                                                                 _mcp_elicitation),
    # the agent requests: agent control takes the session as its ``AgentHost``
    **{cls.DESCRIPTOR.full_name: (cls, handler) for cls, handler in AGENT_REQUESTS},
}


def handle_feature_request(session: SessionSupervisor, type_url: str, data: bytes) -> Reply:
    """Parse and serve one feature request."""
    entry = REQUEST_TYPES.get(type_url)
    if entry is None:
        raise ConfigError(f"unknown request type {type_url!r}")
    request_cls, handler = entry
    return handler(session, request_cls.FromString(data))
