"""Agent control: spawn, input, wait, close and resume subagents of a session.

The operations run in the parent session's actor thread (they change its supervised children) and are reached
two ways: as feature requests over gRPC (an outside orchestrator drives a tree without a model), and from the
turn loop's agent tools (``AgentTools``), which send the same requests from the trio loop.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from actors.agents._registry import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_THREADS,
    AgentRegistry,
    agent_type_settings,
)
from actors.core import _tracing
from actors.core._supervision import ChildSpec, Restart
from actors.core._trio_host import get_host
from actors.errors import SessionStateError, UnknownSession
from actors.session import _requests as _session_requests
from protos.supervisor.v1 import agents_pb2, config_pb2, envelope_pb2, session_pb2

if TYPE_CHECKING:
    from actors.session._actor import SessionSupervisor

__all__ = ["AgentTools", "registry_for"]

#: How long a spawn waits for the parent's shell snapshot to exist before the child runs without one.
SNAPSHOT_WAIT_S = 15.0
ON_PARENT_END = ("wait", "cancel", "detach")
#: Longest a parent's turn waits for its children under the wait policy.
PARENT_WAIT_S = 3600.0


def registry_for(session: SessionSupervisor) -> AgentRegistry:
    """The tree's registry (created by the root from `[agents]`, shared by descendants)."""
    registry: AgentRegistry | None = session.setup.services.get("agent_registry")
    if registry is None:
        agents = _agents_table(session)
        registry = AgentRegistry(max_threads=int(agents.get("max_threads", DEFAULT_MAX_THREADS)),
                                 max_depth=int(agents.get("max_depth", DEFAULT_MAX_DEPTH)))
        session.setup.services["agent_registry"] = registry
    return registry


def _agents_table(session: SessionSupervisor) -> dict[str, Any]:
    loaded = session.setup.services.get("loaded_config")
    return loaded.table("agents") if loaded is not None else {}


def on_parent_end(session: SessionSupervisor) -> str:
    """What happens to running children when the parent's turn ends: wait (default), cancel or detach."""
    policy = str(_agents_table(session).get("on_parent_end", "wait"))
    return policy if policy in ON_PARENT_END else "wait"


def wake_parent_turn(session: SessionSupervisor) -> bool:
    """Whether a finished child starts a turn of its idle parent (the notification event is always logged)."""
    return bool(_agents_table(session).get("wake_parent_turn", False))


#: Per parent session: child id -> (the child's ref, what it answered), so that a thousand spawns ask once.
_FROM_CHILD: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _from_child(session: SessionSupervisor, child_id: str, fetch: Callable[[Any], Any]) -> Any:
    """``fetch(ref)`` of a live child, remembered until the child is replaced (a restart gives a new ref)."""
    ref = session.child_ref(child_id)
    if ref is None:
        return None
    cache = _FROM_CHILD.setdefault(session, {})
    hit = cache.get(child_id)
    if hit is not None and hit[0] is ref:
        return hit[1]
    value = fetch(ref)
    if value is not None:
        cache[child_id] = (ref, value)
    return value


def _fetch_snapshot(ref: Any) -> Any:
    future: concurrent.futures.Future[Any] = ref.proxy().snapshot().get(timeout=SNAPSHOT_WAIT_S)
    try:
        return future.result(SNAPSHOT_WAIT_S)
    except (concurrent.futures.TimeoutError, Exception):
        return None


def _ask_child(ref: Any, *, method: str) -> Any:
    return getattr(ref.proxy(), method)().get(timeout=SNAPSHOT_WAIT_S)


def _parent_snapshot(session: SessionSupervisor) -> Any:
    inherit = session.setup.services.get("inherit")
    if inherit is not None and inherit.snapshot is not None:
        return inherit.snapshot
    return _from_child(session, "shell_snapshot", _fetch_snapshot)


def _inheritance(session: SessionSupervisor, snapshot: Any, configuration: config_pb2.SessionConfiguration,
                 agent_path: str) -> Any:
    """What the child takes over: the snapshot, and its own view on the tree's proxy (policy and audit tagged
    with its agent path; approvals remembered for the whole tree)."""
    from actors.session._specs import Inheritance

    parent = session.setup.services.get("inherit")
    proxy = parent.proxy if parent is not None and parent.proxy is not None else session.child_actor("proxy")
    if proxy is None:
        return Inheritance(snapshot=snapshot, proxy_env=dict(session.proxy_env))
    token = proxy.add_view(configuration.permission_profile.network, agent_path=agent_path)
    return Inheritance(snapshot=snapshot, proxy_env=proxy.env(token), proxy_token=token, proxy=proxy)


def _start_subagent(session: SessionSupervisor, agent_id: str, configuration: config_pb2.SessionConfiguration, *,
                    start_kind: str, nickname: str, history: list[Any], restart: Restart,
                    traceparent: str = "") -> Any:
    """Start a subagent session (new or resumed) as a supervised child of ``session``; returns its ref.

    It inherits the parent's services, snapshot (no capture), hooks runner and MCP tools, and gets its own view
    on the tree's proxy.
    """
    from actors.session._actor import SessionSetup

    agent_path = configuration.session_source.agent_path
    services = dict(session.setup.services)
    services.pop("shell", None)
    services["agent_role"] = configuration.session_source.role or "worker"
    services["agent_nickname"] = nickname
    hooks = _from_child(session, "hooks", functools.partial(_ask_child, method="runner"))  # asked once per child
    if hooks is not None:
        services["hooks"] = hooks
    services["inherit"] = _inheritance(session, _parent_snapshot(session), configuration, agent_path)
    services["agent_registry"] = registry_for(session)
    setup = SessionSetup(
        session_id=agent_id, start_kind=start_kind, configuration=configuration,
        constraints=session.setup.constraints, log=session.setup.log, task_runner=session.setup.task_runner,
        start_traceparent=traceparent, agent_path=agent_path, services=services, history=history,
        on_exit=session.setup.services.get("forget_session"), relay=session.relay,
    )
    session.start_child(ChildSpec(agent_id, type(session), {"setup": setup}, restart=restart, kind="subagent"))
    child_ref = session.child_ref(agent_id)
    assert child_ref is not None
    register = session.setup.services.get("register_session")
    if register is not None:
        register(agent_id, child_ref)
    return child_ref


def spawn(session: SessionSupervisor, request: agents_pb2.SpawnAgentRequest) -> agents_pb2.SpawnAgentResponse:
    """Start a subagent as a supervised child of ``session`` and give it its first task."""
    registry = registry_for(session)
    source = session.configuration.session_source
    depth = source.depth + 1
    registry.reserve(depth)  # LimitExceeded leaves the count unchanged
    try:
        loaded = session.setup.services.get("loaded_config")
        settings = agent_type_settings(loaded.table("agent_types") if loaded else {}, request.agent_type)
        nickname = registry.nickname()
        agent_id = uuid.uuid4().hex
        agent_path = f"{session.setup.agent_path.rstrip('/')}/{nickname}"
        configuration = config_pb2.SessionConfiguration()
        configuration.CopyFrom(session.configuration)
        configuration.session_source.CopyFrom(config_pb2.SessionSource(
            kind=config_pb2.SessionSource.KIND_SUBAGENT, parent_session_id=session.session_id, depth=depth,
            nickname=nickname, role=request.agent_type or str(settings.get("role", "")), agent_path=agent_path))
        model = request.model or str(settings.get("model", ""))
        if model:
            configuration.collaboration_mode.model = model
        if settings.get("instructions"):
            configuration.developer_instructions = str(settings["instructions"])
        history = list(session.setup.history) if request.fork_context else []
        restart = Restart.TRANSIENT if settings.get("restart", "") == "transient" else Restart.TEMPORARY
        with _tracing.span("agent.spawn", request.traceparent, new_root_if_untraced=False,
                           attributes={"agent.nickname": nickname, "agent.depth": depth}) as spawn_tp, \
                _tracing.span("subagent.session", spawn_tp, new_root_if_untraced=False,
                              attributes={"session.id": agent_id, "agent.path": agent_path}) as session_tp:
            child_ref = _start_subagent(session, agent_id, configuration, start_kind="new", nickname=nickname,
                                        history=history, restart=restart, traceparent=session_tp)
    except BaseException:
        registry.unreserve()
        raise
    info = agents_pb2.AgentInfo(agent_id=agent_id, nickname=nickname, role=configuration.session_source.role,
                                agent_path=agent_path, depth=depth, status=agents_pb2.AGENT_STATUS_PENDING_INIT)
    registry.add(info, session.session_id)
    session.emit(agents_pb2.AgentSpawned(agent=info))
    if request.message:
        child_ref.tell(envelope_pb2.Envelope(
            sender=session.setup.agent_path, trace=envelope_pb2.TraceContext(traceparent=session_tp),
            submit=session_pb2.SubmitRequest(session_id=agent_id, input=request.message)))
    return agents_pb2.SpawnAgentResponse(agent_id=agent_id, nickname=nickname)


def _child(session: SessionSupervisor, agent_id: str) -> Any:
    registry = registry_for(session)
    record = registry.get(agent_id)
    if record.parent_id != session.session_id:
        raise UnknownSession(f"{agent_id} is not a subagent of {session.session_id}")
    return record


def send_input(session: SessionSupervisor, request: agents_pb2.SendAgentInputRequest) -> Any:
    """Give a subagent another task (re-reserving its slot if it had finished)."""
    _child(session, request.agent_id)
    ref = session.child_ref(request.agent_id)
    if ref is None:
        raise SessionStateError(f"subagent {request.agent_id} is closed; resume it first")
    registry_for(session).try_reactivate(request.agent_id)
    reply = ref.ask(envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(
        session_id=request.agent_id, input=request.message, interrupt=request.interrupt)), timeout=10)
    assert isinstance(reply, envelope_pb2.Envelope)
    return agents_pb2.SendAgentInputResponse(task_id=reply.submit_reply.task_id)


def wait(session: SessionSupervisor, request: agents_pb2.WaitAgentsRequest) -> concurrent.futures.Future[Any]:
    """A future of the first agents to finish (the parent's mailbox is not held while waiting)."""
    registry = registry_for(session)
    ids = list(request.agent_ids) or [r.info.agent_id for r in registry.children_of(session.session_id)]
    for agent_id in ids:
        _child(session, agent_id)
    timeout_s = (request.timeout_ms or 30_000) / 1000

    async def waiting() -> agents_pb2.WaitAgentsResponse:
        wait_for = registry.wait_all if request.all else registry.wait
        finished, timed_out = await wait_for(ids, timeout_s)
        return agents_pb2.WaitAgentsResponse(finished=finished, timed_out=timed_out)

    return get_host().submit(waiting)


def close(session: SessionSupervisor, request: agents_pb2.CloseAgentRequest) -> agents_pb2.CloseAgentResponse:
    """Stop a subagent's session (and its own subagents); its slot is freed at once."""
    record = _child(session, request.agent_id)
    previous = record.info.status
    session.stop_children([request.agent_id])
    changed = registry_for(session).set_status(request.agent_id, agents_pb2.AGENT_STATUS_CLOSED)
    if changed is not None:
        session.emit(agents_pb2.AgentStatusChanged(agent=changed[0], previous=changed[1]))  # type: ignore[arg-type]
    return agents_pb2.CloseAgentResponse(previous=previous)  # type: ignore[arg-type]


def close_all(session: SessionSupervisor) -> None:
    """Close every live subagent of the session (the cancel policy, or the parent's interrupt)."""
    for record in registry_for(session).children_of(session.session_id):
        if record.info.status != agents_pb2.AGENT_STATUS_CLOSED:
            close(session, agents_pb2.CloseAgentRequest(agent_id=record.info.agent_id))


def list_agents(session: SessionSupervisor, request: agents_pb2.ListAgentsRequest) -> agents_pb2.ListAgentsResponse:
    """Every agent below the session."""
    return agents_pb2.ListAgentsResponse(agents=[r.info for r in registry_for(session).descendants_of(
        session.session_id)])


def resume(session: SessionSupervisor, request: agents_pb2.ResumeAgentRequest) -> agents_pb2.ResumeAgentResponse:
    """Start a closed subagent again from its log, under the same id."""
    from actors.session._actor import HISTORY_KINDS

    record = _child(session, request.agent_id)
    if session.child_ref(request.agent_id) is not None:
        raise SessionStateError(f"subagent {request.agent_id} is running")
    registry = registry_for(session)
    registry.try_reactivate(request.agent_id)
    logged = session.setup.log.session(request.agent_id)
    if logged is None:
        raise UnknownSession(f"subagent {request.agent_id} is not in the log")
    configuration = config_pb2.SessionConfiguration.FromString(logged.config)
    history = session.setup.log.read_kinds(request.agent_id, HISTORY_KINDS)
    _start_subagent(session, request.agent_id, configuration, start_kind="resume", nickname=record.info.nickname,
                    history=history, restart=Restart.TEMPORARY)
    changed = registry.set_status(request.agent_id, agents_pb2.AGENT_STATUS_COMPLETED)
    info = changed[0] if changed else record.info
    return agents_pb2.ResumeAgentResponse(agent=info)


for _cls, _handler in (
    (agents_pb2.SpawnAgentRequest, spawn),
    (agents_pb2.SendAgentInputRequest, send_input),
    (agents_pb2.WaitAgentsRequest, wait),
    (agents_pb2.CloseAgentRequest, close),
    (agents_pb2.ResumeAgentRequest, resume),
    (agents_pb2.ListAgentsRequest, list_agents),
):
    _session_requests.register(_cls, _handler)


class AgentTools:
    """The model's agent tools for one session, called by the turn loop on the trio loop."""

    def __init__(self, session_ref: Any, session_id: str, registry: AgentRegistry) -> None:
        self._ref = session_ref
        self._session_id = session_id
        self._registry = registry

    def specs(self) -> list[Any]:
        """Tool specs in the provider interface's form."""
        from actors.providers.base import ToolSpec

        def obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
            return {"type": "object", "properties": props, "required": required}

        text = {"type": "string"}
        return [
            ToolSpec("spawn_agent", "Start a subagent with a task; returns its agent_id and nickname.",
                     obj({"message": text, "agent_type": text, "model": text, "fork_context": {"type": "boolean"}},
                         ["message"])),
            ToolSpec("send_input", "Send more input to a subagent.",
                     obj({"agent_id": text, "message": text, "interrupt": {"type": "boolean"}},
                         ["agent_id", "message"])),
            ToolSpec("wait", "Wait until one of the subagents finishes (all of them with all=true), or the timeout.",
                     obj({"agent_ids": {"type": "array", "items": text}, "timeout_ms": {"type": "integer"},
                          "all": {"type": "boolean"}}, [])),
            ToolSpec("close_agent", "Close a subagent; returns its previous status.", obj({"agent_id": text},
                                                                                          ["agent_id"])),
            ToolSpec("resume_agent", "Resume a closed subagent from its log.", obj({"agent_id": text}, ["agent_id"])),
        ]

    async def _request(self, message: Any, timeout: float = 60.0) -> Any:
        envelope = envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(type_url=message.DESCRIPTOR.full_name,
                                                                    data=message.SerializeToString()))
        reply = await trio.to_thread.run_sync(lambda: self._ref.ask(envelope, timeout=timeout))
        if isinstance(reply, concurrent.futures.Future):
            return await trio.to_thread.run_sync(reply.result, abandon_on_cancel=True)
        return reply

    @staticmethod
    def _info(info: agents_pb2.AgentInfo) -> dict[str, Any]:
        return {"agent_id": info.agent_id, "nickname": info.nickname,
                "status": agents_pb2.AgentStatus.Name(info.status).removeprefix("AGENT_STATUS_").lower(),
                "message": info.last_message, "duration_ms": info.duration_ms}

    async def spawn_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """spawn_agent{message, agent_type?, model?, fork_context?} -> {agent_id, nickname}."""
        reply = await self._request(agents_pb2.SpawnAgentRequest(
            session_id=self._session_id, message=str(args.get("message", "")),
            agent_type=str(args.get("agent_type", "") or ""), model=str(args.get("model", "") or ""),
            fork_context=bool(args.get("fork_context", False)), traceparent=getattr(ctx, "traceparent", "")))
        return {"agent_id": reply.agent_id, "nickname": reply.nickname}

    async def send_input(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """send_input{agent_id, message, interrupt?}."""
        reply = await self._request(agents_pb2.SendAgentInputRequest(
            session_id=self._session_id, agent_id=str(args["agent_id"]), message=str(args.get("message", "")),
            interrupt=bool(args.get("interrupt", False))))
        return {"task_id": reply.task_id}

    async def wait(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """wait{agent_ids, timeout_ms} -> the first to finish plus any already final, or timed_out."""
        ids = args.get("agent_ids") or []
        if isinstance(ids, str):
            ids = json.loads(ids) if ids.startswith("[") else [ids]
        timeout_s = float(args.get("timeout_ms", 30_000)) / 1000
        for agent_id in ids:
            self._registry.get(str(agent_id))
        if not ids:
            ids = [r.info.agent_id for r in self._registry.children_of(self._session_id)]
        wait_for = self._registry.wait_all if args.get("all") else self._registry.wait
        finished, timed_out = await wait_for([str(i) for i in ids], timeout_s)
        return {"finished": [self._info(i) for i in finished], "timed_out": timed_out}

    async def close_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """close_agent{agent_id} -> previous status."""
        reply = await self._request(agents_pb2.CloseAgentRequest(session_id=self._session_id,
                                                                 agent_id=str(args["agent_id"])))
        return {"previous_status": agents_pb2.AgentStatus.Name(reply.previous).removeprefix("AGENT_STATUS_").lower()}

    async def resume_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """resume_agent{agent_id}."""
        reply = await self._request(agents_pb2.ResumeAgentRequest(session_id=self._session_id,
                                                                  agent_id=str(args["agent_id"])))
        return self._info(reply.agent)

    async def wait_children(self, timeout_s: float) -> None:
        """The wait policy: hold the parent's turn until its running children are final."""
        ids = [r.info.agent_id for r in self._registry.children_of(self._session_id)]
        with trio.move_on_after(timeout_s):
            while True:
                pending = [i for i in ids if self._registry.get(i).info.status not in
                           (agents_pb2.AGENT_STATUS_COMPLETED, agents_pb2.AGENT_STATUS_ERRORED,
                            agents_pb2.AGENT_STATUS_CLOSED)]
                if not pending:
                    return
                await self._registry.wait(pending[:1], timeout_s)
