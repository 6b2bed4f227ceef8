"""The part of a session that deals with its children: starting them, and handing them to tasks.

A mixin of ``SessionSupervisor`` (split out to keep modules small). Every child starts in parallel; the network
proxy is first in start order (it stops last); the shell gets the proxy's environment before the session's start
completes; required MCP servers gate the transactional start; tasks see the children as ``services``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from actors.core import _tracing
from actors.core._supervision import ChildSpec, Supervisor
from actors.errors import StartupFailed
from protos.supervisor.v1 import config_pb2, events_pb2

if TYPE_CHECKING:
    from actors.session._actor import SessionSetup, SessionSupervisor

__all__ = ["SessionChildrenMixin"]

logger = logging.getLogger(__name__)

#: Upper bound on waiting for required MCP servers (each is bounded by its own startup_timeout_sec too).
MCP_REQUIRED_WAIT_S = 600.0


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

    def emit(self, msg: Message, *, task_id: str = "", traceparent: str = "") -> None:
        """Append an event (implemented by ``SessionSupervisor``)."""
        raise NotImplementedError

    def _session(self) -> SessionSupervisor:
        return cast("SessionSupervisor", self)

    def _record_child_span(self, child_id: str, duration_ms: int) -> None:
        from opentelemetry import trace

        if not self.setup.start_traceparent:
            return
        end = time.time_ns()
        ctx = _tracing.extract_context(self.setup.start_traceparent)
        span = trace.get_tracer(_tracing.TRACER_NAME).start_span(
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
        from actors.session import _specs as kids

        setup = self.setup
        loaded = setup.services.get("loaded_config")
        inherit = setup.services.get("inherit")
        phase1, self._proxy_state = kids.child_phases(loaded, self.configuration, self.session_id, self.emit,
                                                      agent_path=setup.agent_path, inherit=inherit)
        self.proxy_env = dict(inherit.proxy_env) if inherit is not None else {}
        proxy_env = self.proxy_env
        phase2: list[ChildSpec] = list(phase1)
        if inherit is not None:
            from actors.agents._registry import InheritedShell

            shell_program = loaded.table("shell").get("program") if loaded is not None else None
            self._inherited_shell = InheritedShell(inherit.snapshot, emit=self.emit, cwd=self.configuration.cwd,
                                                   extra_env=proxy_env, shell_program=shell_program)
        elif loaded is not None:
            shell = kids.shell_spec(loaded, self.configuration, session_id=self.session_id, emit=self.emit,
                                    proxy_env=proxy_env, inherit=inherit,
                                    live_session_ids=setup.services.get("live_session_ids"))
            if shell is not None:
                phase2.append(shell)
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
        from actors.mcp._errors import McpRequiredServersFailed

        try:
            report = startup.result(timeout=MCP_REQUIRED_WAIT_S)
        except McpRequiredServersFailed as exc:
            raise StartupFailed(str(exc)) from exc
        for warning in report.warnings:
            self.emit(events_pb2.Warning(message=warning))

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
        ref = self.child_ref("hooks")
        if ref is not None:
            ref.proxy().run(event_name, fields, self.setup.start_traceparent or None)

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
        from actors.agents._control import AgentTools, registry_for

        services["agents"] = AgentTools(self.actor_ref, self.session_id, registry_for(self._session()))
        services.setdefault("agent_role", "root")
        return services

    def _set_approval_mode(self) -> None:
        """Deny network approvals without asking when the policy is never or no turn is active."""
        never = self.configuration.approval_policy == config_pb2.APPROVAL_POLICY_NEVER
        ref = self.child_ref("proxy")
        if ref is not None:
            ref.proxy().set_deny_without_asking(never or self._running is None)
