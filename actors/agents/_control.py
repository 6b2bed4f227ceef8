"""Agent control: spawn, input, wait, close and resume subagents of a session.

The operations run in the parent session's actor thread (they change its supervised children) and are reached
two ways: as feature requests over gRPC (an outside orchestrator drives a tree without a model), and from the
turn loop's agent tools (``AgentTools``), which send the same requests from the trio loop. They decide *when and
what* (limits, nickname, derived configuration, registry); the parent, an ``AgentHost``, decides *how* a child
session is built (``host.start_subagent``).
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from actors.agents._host import AgentHost
from actors.agents._registry import AgentRecord, AgentRegistry
from actors.core import HISTORY_KINDS, Restart, get_host, span
from actors.errors import SessionStateError, UnknownSession
from protos.supervisor.v1 import agents_pb2, config_pb2, envelope_pb2, session_pb2

__all__ = ["PARENT_WAIT_S", "REQUESTS", "close_all", "registry_for"]

#: Longest a parent's turn waits for its children under the wait policy.
PARENT_WAIT_S = 3600.0
#: How long a request to a child session (new input) may take to be acknowledged.
CHILD_ASK_TIMEOUT_S = 10.0


def registry_for(host: AgentHost) -> AgentRegistry:
    """The tree's registry (created by the root from ``[agents]``, shared by descendants)."""
    return host.agent_registry


def spawn(host: AgentHost, request: agents_pb2.SpawnAgentRequest) -> agents_pb2.SpawnAgentResponse:
    """Start a subagent as a supervised child of ``host`` and give it its first task."""
    registry = registry_for(host)
    source = host.configuration.session_source
    depth = source.depth + 1
    registry.reserve(depth)  # LimitExceeded leaves the count unchanged
    try:
        settings = host.agents_config.agent_type(request.agent_type)
        nickname = registry.nickname()
        agent_id = uuid.uuid4().hex
        agent_path = f"{host.agent_path.rstrip('/')}/{nickname}"
        configuration = config_pb2.SessionConfiguration()
        configuration.CopyFrom(host.configuration)
        configuration.session_source.CopyFrom(config_pb2.SessionSource(
            kind=config_pb2.SessionSource.KIND_SUBAGENT, parent_session_id=host.session_id, depth=depth,
            nickname=nickname, role=request.agent_type or str(settings.get("role", "")), agent_path=agent_path))
        model = request.model or str(settings.get("model", ""))
        if model:
            configuration.collaboration_mode.model = model
        if settings.get("instructions"):
            configuration.developer_instructions = str(settings["instructions"])
        history = list(host.history) if request.fork_context else []
        restart = Restart.TRANSIENT if settings.get("restart", "") == "transient" else Restart.TEMPORARY
        with span("agent.spawn", request.traceparent, new_root_if_untraced=False,
                  attributes={"agent.nickname": nickname, "agent.depth": depth}) as spawn_tp, \
                span("subagent.session", spawn_tp, new_root_if_untraced=False,
                     attributes={"session.id": agent_id, "agent.path": agent_path}) as session_tp:
            child_ref = host.start_subagent(agent_id, configuration, start_kind="new", nickname=nickname,
                                            history=history, restart=restart, traceparent=session_tp)
    except BaseException:
        registry.unreserve()
        raise
    info = agents_pb2.AgentInfo(agent_id=agent_id, nickname=nickname, role=configuration.session_source.role,
                                agent_path=agent_path, depth=depth, status=agents_pb2.AGENT_STATUS_PENDING_INIT)
    registry.add(info, host.session_id)
    host.emit(agents_pb2.AgentSpawned(agent=info))
    if request.message:
        child_ref.tell(envelope_pb2.Envelope(
            sender=host.agent_path, trace=envelope_pb2.TraceContext(traceparent=session_tp),
            submit=session_pb2.SubmitRequest(session_id=agent_id, input=request.message)))
    return agents_pb2.SpawnAgentResponse(agent_id=agent_id, nickname=nickname)


def _child(host: AgentHost, agent_id: str) -> AgentRecord:
    record = registry_for(host).get(agent_id)
    if record.parent_id != host.session_id:
        raise UnknownSession(f"{agent_id} is not a subagent of {host.session_id}")
    return record


def send_input(host: AgentHost, request: agents_pb2.SendAgentInputRequest) -> agents_pb2.SendAgentInputResponse:
    """Give a subagent another task (re-reserving its slot if it had finished)."""
    _child(host, request.agent_id)
    ref = host.child_ref(request.agent_id)
    if ref is None:
        raise SessionStateError(f"subagent {request.agent_id} is closed; resume it first")
    registry_for(host).try_reactivate(request.agent_id)
    reply = ref.ask(envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(
        session_id=request.agent_id, input=request.message, interrupt=request.interrupt)),
        timeout=CHILD_ASK_TIMEOUT_S)
    assert isinstance(reply, envelope_pb2.Envelope)
    return agents_pb2.SendAgentInputResponse(task_id=reply.submit_reply.task_id)


def wait(host: AgentHost, request: agents_pb2.WaitAgentsRequest) -> concurrent.futures.Future[Any]:
    """A future of the first agents to finish (the parent's mailbox is not held while waiting)."""
    registry = registry_for(host)
    ids = list(request.agent_ids) or [r.info.agent_id for r in registry.children_of(host.session_id)]
    for agent_id in ids:
        _child(host, agent_id)
    timeout_s = (request.timeout_ms or 30_000) / 1000

    async def waiting() -> agents_pb2.WaitAgentsResponse:
        wait_for = registry.wait_all if request.all else registry.wait
        finished, timed_out = await wait_for(ids, timeout_s)
        return agents_pb2.WaitAgentsResponse(finished=finished, timed_out=timed_out)

    return get_host().submit(waiting)


def close(host: AgentHost, request: agents_pb2.CloseAgentRequest) -> agents_pb2.CloseAgentResponse:
    """Stop a subagent's session (and its own subagents); its slot is freed at once."""
    record = _child(host, request.agent_id)
    previous = record.info.status
    host.stop_children([request.agent_id])
    changed = registry_for(host).set_status(request.agent_id, agents_pb2.AGENT_STATUS_CLOSED)
    if changed is not None:
        host.emit(agents_pb2.AgentStatusChanged(agent=changed[0], previous=changed[1]))  # type: ignore[arg-type]
    return agents_pb2.CloseAgentResponse(previous=previous)  # type: ignore[arg-type]


def close_all(host: AgentHost) -> None:
    """Close every live subagent of the session (the cancel policy, or the parent's interrupt)."""
    for record in registry_for(host).children_of(host.session_id):
        if record.info.status != agents_pb2.AGENT_STATUS_CLOSED:
            close(host, agents_pb2.CloseAgentRequest(agent_id=record.info.agent_id))


def list_agents(host: AgentHost, request: agents_pb2.ListAgentsRequest) -> agents_pb2.ListAgentsResponse:
    """Every agent below the session."""
    return agents_pb2.ListAgentsResponse(agents=[r.info for r in registry_for(host).descendants_of(
        host.session_id)])


def resume(host: AgentHost, request: agents_pb2.ResumeAgentRequest) -> agents_pb2.ResumeAgentResponse:
    """Start a closed subagent again from its log, under the same id."""
    record = _child(host, request.agent_id)
    if host.child_ref(request.agent_id) is not None:
        raise SessionStateError(f"subagent {request.agent_id} is running")
    registry = registry_for(host)
    registry.try_reactivate(request.agent_id)
    logged = host.log.session(request.agent_id)
    if logged is None:
        raise UnknownSession(f"subagent {request.agent_id} is not in the log")
    configuration = config_pb2.SessionConfiguration.FromString(logged.config)
    history = host.log.read_kinds(request.agent_id, HISTORY_KINDS)
    host.start_subagent(request.agent_id, configuration, start_kind="resume", nickname=record.info.nickname,
                        history=history, restart=Restart.TEMPORARY)
    changed = registry.set_status(request.agent_id, agents_pb2.AGENT_STATUS_COMPLETED)
    info = changed[0] if changed else record.info
    return agents_pb2.ResumeAgentResponse(agent=info)


AgentHandler = Callable[[AgentHost, Any], "Message | concurrent.futures.Future[Any]"]
#: The agent requests a session serves (its request table is built from this; no registration by import).
REQUESTS: tuple[tuple[type[Message], AgentHandler], ...] = (
    (agents_pb2.SpawnAgentRequest, spawn),
    (agents_pb2.SendAgentInputRequest, send_input),
    (agents_pb2.WaitAgentsRequest, wait),
    (agents_pb2.CloseAgentRequest, close),
    (agents_pb2.ResumeAgentRequest, resume),
    (agents_pb2.ListAgentsRequest, list_agents),
)
