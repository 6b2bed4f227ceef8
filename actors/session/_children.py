"""The part of a session that deals with its children: starting them, and handing them to tasks.

A mixin of ``SessionSupervisor`` (split out to keep modules small). Every child starts in parallel; the network
proxy is first in start order (it stops last); the shell gets the proxy's environment before the session's start
completes; required MCP servers gate the transactional start; tasks see the children as ``services``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import pykka
from google.protobuf.message import Message

import actors.session._specs as kids
from actors.agents import AgentRegistry, AgentsConfig, AgentTools
from actors.core import (
    HISTORY_KINDS,
    TRACER_NAME,
    ChildSpec,
    EventLog,
    Restart,
    Supervisor,
    extract_context,
    get_host,
)
from actors.errors import StartupFailed
from actors.session._enforcement import Enforcement
from actors.session._setup import SessionSetup
from actors.shell import InheritedShell
from protos.supervisor.v1 import config_pb2, events_pb2

__all__ = ["SessionChildrenMixin"]

logger = logging.getLogger(__name__)

#: Upper bound on waiting for required MCP servers (each is bounded by its own startup_timeout_sec too).
MCP_REQUIRED_WAIT_S = 600.0
#: How long a spawn waits for the parent's shell snapshot to exist before the child runs without one.
SNAPSHOT_WAIT_S = 15.0
#: How much longer than its slowest SessionEnd hook's timeout a stop waits for those hooks.
SESSION_END_GRACE_S = 5.0

#: Per parent session: child id -> (the child's ref, what it answered), so that a thousand spawns ask once.
_FROM_CHILD: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _fetch_snapshot(ref: Any) -> Any:
    future: concurrent.futures.Future[Any] = ref.proxy().snapshot().get(timeout=SNAPSHOT_WAIT_S)
    try:
        return future.result(SNAPSHOT_WAIT_S)
    except (concurrent.futures.TimeoutError, Exception):
        return None


def _ask_child(ref: Any, *, method: str) -> Any:
    return getattr(ref.proxy(), method)().get(timeout=SNAPSHOT_WAIT_S)


class SessionChildrenMixin(Supervisor):
    """Children and services of a ``SessionSupervisor`` (which provides the attributes declared here)."""

    setup: SessionSetup
    session_id: str
    configuration: config_pb2.SessionConfiguration
    proxy_env: dict[str, str]
    _proxy_state: Any
    _inherited_shell: Any
    _mcp_required: bool
    _running: Any
    #: The shell child's spec (its kwargs are what a restarted shell starts with); None without a shell actor.
    _shell_spec: ChildSpec | None = None
    #: False from the session's commit until its SessionEnd hooks ran (a start that failed runs none).
    _session_end_ran: bool = True

    def emit(self, msg: Message, *, task_id: str = "", traceparent: str = "") -> None:
        """Append an event (implemented by ``SessionSupervisor``)."""
        raise NotImplementedError

    # --- what agent control needs of a parent (``AgentHost``) -------------------------------------------
    @property
    def agent_path(self) -> str:
        """This session's path in its tree (``/root``, ``/root/ada``)."""
        return self.setup.agent_path

    @property
    def history(self) -> list[events_pb2.Event]:
        """The conversation so far, from the log (what a ``fork_context`` subagent inherits)."""
        return self.setup.log.read_kinds(self.session_id, HISTORY_KINDS)

    @property
    def log(self) -> EventLog:
        """The event log the tree writes to."""
        return self.setup.log

    @property
    def agents_config(self) -> AgentsConfig:
        """``[agents]``/``[agent_types]``, parsed once per tree (the root parses; descendants share it)."""
        parsed: AgentsConfig | None = self.setup.services.get("agents_config")
        if parsed is None:
            parsed = self.setup.services["agents_config"] = AgentsConfig.from_loaded(
                self.setup.services.get("loaded_config"))
        return parsed

    @property
    def agent_registry(self) -> AgentRegistry:
        """The tree's registry (created by the root from ``[agents]``, shared by descendants)."""
        registry: AgentRegistry | None = self.setup.services.get("agent_registry")
        if registry is None:
            agents = self.agents_config
            registry = AgentRegistry(max_threads=agents.max_threads, max_depth=agents.max_depth)
            self.setup.services["agent_registry"] = registry
        return registry

    def _from_child(self, child_id: str, fetch: Callable[[Any], Any]) -> Any:
        """``fetch(ref)`` of a live child, remembered until the child is replaced (a restart gives a new ref)."""
        ref = self.child_ref(child_id)
        if ref is None:
            return None
        cache = _FROM_CHILD.setdefault(self, {})
        hit = cache.get(child_id)
        if hit is not None and hit[0] is ref:
            return hit[1]
        value = fetch(ref)
        if value is not None:
            cache[child_id] = (ref, value)
        return value

    def _parent_snapshot(self) -> Any:
        inherit = self.setup.services.get("inherit")
        if inherit is not None and inherit.snapshot is not None:
            return inherit.snapshot
        return self._from_child("shell_snapshot", _fetch_snapshot)

    def _inheritance(self, snapshot: Any, configuration: config_pb2.SessionConfiguration,
                     agent_path: str) -> kids.Inheritance:
        """What the child takes over: the snapshot, and its own view on the tree's proxy (policy and audit
        tagged with its agent path; approvals remembered for the whole tree)."""
        parent = self.setup.services.get("inherit")
        proxy = parent.proxy if parent is not None and parent.proxy is not None else self.child_actor("proxy")
        if proxy is None:
            return kids.Inheritance(snapshot=snapshot, proxy_env=dict(self.proxy_env))
        token = proxy.add_view(configuration.permission_profile.network, agent_path=agent_path)
        return kids.Inheritance(snapshot=snapshot, proxy_env=proxy.env(token), proxy_token=token, proxy=proxy)

    def start_subagent(self, agent_id: str, configuration: config_pb2.SessionConfiguration, *, start_kind: str,
                       nickname: str, history: list[events_pb2.Event], restart: Restart,
                       traceparent: str = "") -> pykka.ActorRef[Any]:
        """Start a subagent session (new or resumed) as a supervised child; returns its ref.

        It inherits this session's services, snapshot (no capture), hooks runner and MCP tools, and gets its own
        view on the tree's proxy.
        """
        agent_path = configuration.session_source.agent_path
        services = dict(self.setup.services)
        services.pop("shell", None)
        services["agent_role"] = configuration.session_source.role or "worker"
        services["agent_nickname"] = nickname
        hooks = self._from_child("hooks", functools.partial(_ask_child, method="runner"))  # asked once per child
        if hooks is not None:
            services["hooks"] = hooks
        hooks_ref = self.child_ref("hooks")
        if hooks_ref is not None:  # the tree's hooks actor runs the subagent's own lifecycle hooks
            services["hooks_ref"] = hooks_ref
        services["inherit"] = self._inheritance(self._parent_snapshot(), configuration, agent_path)
        services["agent_registry"] = self.agent_registry
        services["agents_config"] = self.agents_config
        setup = SessionSetup(
            session_id=agent_id, start_kind=start_kind, configuration=configuration,
            constraints=self.setup.constraints, log=self.setup.log, task_runner=self.setup.task_runner,
            start_traceparent=traceparent, agent_path=agent_path, services=services, history=history,
            on_exit=self.setup.services.get("forget_session"), relay=self.relay,
        )
        self.start_child(ChildSpec(agent_id, type(self), {"setup": setup}, restart=restart, kind="subagent"))
        child_ref = self.child_ref(agent_id)
        assert child_ref is not None
        register = self.setup.services.get("register_session")
        if register is not None:
            register(agent_id, child_ref)
        return child_ref

    def relay(self, event: events_pb2.Event) -> None:
        """Log a copy of a subagent's event in this session's stream (implemented by ``SessionSupervisor``)."""
        raise NotImplementedError

    # --- children -------------------------------------------------------------------------------------
    def _record_child_span(self, child_id: str, duration_ms: int) -> None:
        if not self.setup.start_traceparent:
            return
        from opentelemetry import trace  # traced starts only (cold start)

        end = time.time_ns()
        ctx = extract_context(self.setup.start_traceparent)
        span = trace.get_tracer(TRACER_NAME).start_span(
            f"child.start {child_id}", context=ctx, start_time=end - duration_ms * 1_000_000,
            attributes={"session.id": self.session_id, "child.id": child_id},
        )
        span.end(end_time=end)

    def _start_standard_children(self) -> None:
        """All children in parallel: the proxy first in order (it stops last), shell, hooks, MCP, extras.

        The shell needs the proxy's environment, known only once the proxy has bound its port: the shell's spec
        holds ``self.proxy_env`` itself (a restarted shell copies it then), filled in once the proxy is up, and
        the running shell gets it before ``on_start`` returns, so before any command can run.
        """
        setup = self.setup
        loaded = setup.services.get("loaded_config")
        inherit = setup.services.get("inherit")
        enforcement = self._start_enforcement(loaded)
        phase1, self._proxy_state = kids.child_phases(loaded, self.configuration, self.session_id, self.emit,
                                                      agent_path=setup.agent_path, inherit=inherit)
        self.proxy_env = dict(inherit.proxy_env) if inherit is not None else {}
        proxy_env = self.proxy_env
        phase2: list[ChildSpec] = list(phase1)
        if inherit is not None:
            shell_program = loaded.table("shell").get("program") if loaded is not None else None
            self._inherited_shell = InheritedShell(inherit.snapshot, emit=self.emit, cwd=self.configuration.cwd,
                                                   extra_env=proxy_env, shell_program=shell_program,
                                                   sandbox=enforcement.sandbox)
        elif loaded is not None:
            shell = kids.shell_spec(loaded, self.configuration, session_id=self.session_id, emit=self.emit,
                                    proxy_env=proxy_env, inherit=inherit,
                                    live_session_ids=setup.services.get("live_session_ids"),
                                    sandbox=enforcement.sandbox)
            if shell is not None:
                phase2.append(shell)
                self._shell_spec = shell
            hooks = kids.hooks_spec(loaded, self.configuration, self.session_id, self.emit, inherit)
            if hooks is not None:
                phase2.append(hooks[0])
                setup.warnings.extend(hooks[1])
            mcp = kids.mcp_spec(loaded, self.configuration, self.emit)
            if mcp is not None:  # one child per server; tasks (and subagents) reach them through one McpTools
                phase2.extend(mcp.specs)
                setup.services["mcp"] = mcp.tools
                self._mcp_required = mcp.required
        phase2.extend(setup.children)
        if phase2:
            self.start_children(phase2)
        proxy = self.child_actor("proxy")
        if proxy is not None:  # plain reads of started children: no pykka proxy needed (building one costs ~1 ms)
            proxy_env.update(proxy.env())
            shell = self.child_actor("shell_snapshot")
            if shell is not None:
                shell.shell().extra_env.update(proxy_env)
        netns = enforcement.attach_proxy(proxy_env)
        if netns is not None:
            self.run_task(self._serve_netns, netns, critical=False, name="sandbox-netns")

    def _start_enforcement(self, loaded: Any) -> Enforcement:
        """This session's sandbox, rules and approvals: the root's own, a subagent's derived from its parent's
        (raises ``SandboxUnavailable`` when the sandbox cannot be built here: the start fails, clearly)."""
        parent: Enforcement | None = self.setup.services.get("enforcement")
        if parent is not None:
            enforcement = parent.for_child(self.configuration)
        else:
            enforcement, warning = Enforcement.for_root(loaded, self.configuration, self.setup.constraints,
                                                        self.setup.services)
            if warning:
                self.setup.warnings.append(warning)
        self.setup.services["enforcement"] = enforcement
        return enforcement

    @property
    def enforcement(self) -> Enforcement:
        """This session's sandbox, exec policy rules and approval questions."""
        enforcement: Enforcement = self.setup.services["enforcement"]
        return enforcement

    @staticmethod
    async def _serve_netns(netns: Any) -> None:
        try:
            await netns.serve()
        finally:
            netns.close()

    def _await_mcp_startup(self) -> None:
        """MCP servers start in the background; a required one that fails fails this start (transactional)."""
        tools = self.setup.services.get("mcp")
        if tools is None or self.setup.services.get("inherit") is not None:  # none, or the parent's (shared)
            return
        startup: concurrent.futures.Future[Any] = tools.startup

        def warn(done: concurrent.futures.Future[Any]) -> None:
            if done.exception() is None:
                for warning in done.result().warnings:
                    self.emit(events_pb2.Warning(message=warning))

        if not self._mcp_required:
            startup.add_done_callback(warn)
            return
        from actors.mcp import McpRequiredServersFailed  # cold start: only sessions with MCP servers get here

        try:
            report = startup.result(timeout=MCP_REQUIRED_WAIT_S)
        except McpRequiredServersFailed as exc:
            raise StartupFailed(str(exc)) from exc
        for warning in report.warnings:
            self.emit(events_pb2.Warning(message=warning))

    def set_shell_cwd(self, cwd: str) -> None:
        """The next command (Exec, the shell tools of the next turn) runs in ``cwd``; a restarted shell too."""
        if self._shell_spec is not None:
            self._shell_spec.kwargs["cwd"] = cwd
        shell = self._inherited_shell or self._child_object("shell_snapshot", "shell")
        if shell is not None:
            shell.set_cwd(cwd)

    @property
    def inherited_shell(self) -> Any:
        """A subagent's shell (the parent's snapshot, its own runner), or None for a session with a shell actor."""
        return self._inherited_shell

    def _child_object(self, child_id: str, getter: str) -> Any:
        """A live child's plain getter (``shell()``, ``runner()``), read directly: building a pykka proxy per task
        start would cost ~1 ms each. None when the child is absent or restarting."""
        actor = self.child_actor(child_id)
        return None if actor is None else getattr(actor, getter)()

    def _run_hook_soon(self, event_name: str, fields: dict[str, Any]) -> None:
        """Start the ``event_name`` hooks in the tree's hooks actor (a subagent uses its root's); no wait."""
        ref = self.child_ref("hooks") or self.setup.services.get("hooks_ref")
        if ref is not None and ref.is_alive():
            ref.proxy().run(event_name, fields, self.setup.start_traceparent or None)

    def _run_start_hooks(self, resumed: bool) -> None:
        """SessionStart for a root session; SubagentStart (its id and type) for a subagent."""
        source = self.configuration.session_source
        if not source.parent_session_id:
            self._run_hook_soon("SessionStart", {"source": "resume" if resumed else "startup"})
        else:
            self._run_hook_soon("SubagentStart", {"agent_id": self.session_id,
                                                  "agent_type": source.role or "worker"})

    def _run_session_end_hooks(self, reason: str) -> None:
        """A root session's SessionEnd hooks, before its children stop; waits for them (bounded by their
        timeouts) so that they run to the end. Once per session; a failing hook is logged, never fatal."""
        if self._session_end_ran or self.configuration.session_source.parent_session_id:
            return
        self._session_end_ran = True
        runner = self._child_object("hooks", "runner")
        fields = {"reason": reason}
        handlers = [] if runner is None else runner.registry.matching("SessionEnd", runner.build_input(
            "SessionEnd", fields))
        if not handlers:
            return
        wait_s = max(h.timeout_s for h in handlers) + SESSION_END_GRACE_S
        try:
            get_host().call(functools.partial(runner.run, "SessionEnd", fields,
                                              traceparent=self.setup.start_traceparent or None), timeout=wait_s)
        except Exception:
            logger.warning("SessionEnd hooks of %s failed", self.session_id, exc_info=True)

    def task_services(self) -> dict[str, Any]:
        """What a task may use: the session's children, looked up now (they may have restarted)."""
        services = dict(self.setup.services)
        services["proxy_env"] = dict(self.proxy_env)
        shell = self._inherited_shell or self._child_object("shell_snapshot", "shell")
        if shell is not None:
            services["shell"] = shell
        hooks = self._child_object("hooks", "runner")
        if hooks is not None:
            services["hooks"] = hooks
        # services["mcp"] (the McpTools of the mcp:NAME children, or a parent's) comes with setup.services
        services["agents"] = AgentTools(self.actor_ref, self.session_id, self.agent_registry)
        services.setdefault("agent_role", "root")
        services["agent_path"] = self.agent_path
        return services

    def _set_approval_mode(self) -> None:
        """Deny network approvals without asking when the policy is never or no turn is active."""
        never = self.configuration.approval_policy == config_pb2.APPROVAL_POLICY_NEVER
        ref = self.child_ref("proxy")
        if ref is not None:
            ref.proxy().set_deny_without_asking(never or self._running is None)
