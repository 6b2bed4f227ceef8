"""SessionSupervisor: one actor per session, supervising its children and running one task at a time.

Start-up (``on_start``), as in Codex's ``Session::new``:
1. the session record is created in the log, invisible until committed;
2. every child starts in parallel (``start_children``), each in a span under the session's start span;
   their events are held back;
3. ``SessionConfigured`` is appended: always the first event of a start; then deprecation notices and
   warnings, then the held-back child events;
4. the record is committed. Any failure before that discards the record (a new session leaves nothing
   behind) and fails the start.

Tasks: at most one runs; a second ``Submit`` queues (``TaskQueued``), or with ``interrupt`` aborts the running
one (``TurnAborted``, reason ``interrupted``) and runs now. A task is a trio task in its own cancel scope.
Stop: the running task is aborted (reason ``shutdown``), every queued one ends with ``TurnAborted`` (reason
``session stopped``), a root's SessionEnd hooks run (waited for), children stop newest first,
``SessionStopped`` is the last event, the log closes the session's streams.

Nothing acknowledged vanishes: a Submit is in the log (``TurnStarted``, else ``TaskQueued``) before its reply.
A resume ends each task its log left open (queued, or running when the process died) with ``TurnAborted``
(reason ``server restarted: ...``), so every acknowledged task and every ``TurnStarted`` gets an end.

Children, the services tasks see and the building of subagent sessions live in ``_children``
(``SessionChildrenMixin``); subagent bookkeeping in ``_agents`` (``SessionAgentsMixin``); the feature request
table in ``_requests``; ``SessionSetup`` and ``event_for`` in ``_setup``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from actors.agents import PARENT_WAIT_S
from actors.config import apply
from actors.core import HISTORY_KINDS, STOPPED, SessionClosed, TaskCancelled, TaskScope, exc_text, get_host
from actors.errors import LimitExceeded, TurnAbortRequested
from actors.session._agents import SessionAgentsMixin
from actors.session._children import SessionChildrenMixin
from actors.session._requests import handle_feature_request
from actors.session._setup import SessionSetup, event_for, is_delta
from actors.turn import TaskContext, TaskResult, close_turn_state, current_window
from protos.supervisor.v1 import agents_pb2, config_pb2, envelope_pb2, events_pb2, session_pb2

__all__ = ["SessionSupervisor"]

logger = logging.getLogger(__name__)

#: Tasks that may wait behind the running one before Submit is refused.
MAX_QUEUED_TASKS = 64
#: How long a cancelled task gets to unwind before the session stops waiting for it.
TASK_CANCEL_TIMEOUT_S = 5.0
#: The end a stop gives each task still queued.
STOPPED_WHILE_QUEUED = "session stopped"
#: The end a resume gives each task its log left open (the process that ran it died).
RESTARTED_WHILE_QUEUED = "server restarted: the task was queued when the server stopped"
RESTARTED_WHILE_RUNNING = "server restarted: the turn was running when the server stopped"
#: The events that open and end a task in the log.
_TASK_KINDS = ("task_queued", "turn_started", "turn_completed", "turn_aborted")

@dataclass
class _Task:
    task_id: str
    input: str
    traceparent: str
    scope: TaskScope | None = None
    started: float = 0.0
    abort_reason: str = ""


class SessionSupervisor(SessionAgentsMixin, SessionChildrenMixin):
    """A session: supervisor of its children, owner of its event stream, runner of one task at a time."""

    #: An idle session holds no thread (10,000 live sessions must not mean 10,000 threads).
    park_when_idle = True

    def __init__(self, setup: SessionSetup, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.setup = setup
        self.session_id = setup.session_id
        self.configuration = setup.configuration
        self._log = setup.log
        self._configured = False
        self._held: list[events_pb2.Event] = []
        self._emit_lock = threading.Lock()
        self._running: _Task | None = None
        self._queue: deque[_Task] = deque()
        self._committed = False
        self._stop_reason = "requested"
        self._finished = False
        self.configured_seq = 0
        self._created_ns = time.time_ns()
        self._proxy_state: Any = None
        self._inherited_shell: Any = None
        self._mcp_required = False
        self.proxy_env: dict[str, str] = {}
        #: Per-session state that tasks keep across turns (the conversation, a provider).
        self.task_state: dict[str, Any] = {}

    # --- events ---------------------------------------------------------------------------------------
    def emit(self, msg: Message, *, task_id: str = "", traceparent: str = "") -> None:
        """Append an event (thread-safe); before SessionConfigured, events are held back."""
        event = event_for(msg, task_id=task_id, agent_path=self.setup.agent_path, traceparent=traceparent)
        if isinstance(msg, events_pb2.ContextCompacted):  # GetSession reports the window in use
            self.setup.window_generation = msg.window_generation
        with self._emit_lock:
            if not self._configured:
                self._held.append(event)
                return
        self._append(event)

    def _append(self, event: events_pb2.Event) -> None:
        try:
            self._log.append(self.session_id, event)
        except SessionClosed:  # a child reporting after a failed start was discarded, or after the stop
            logger.debug("%s: dropped %s after the session closed", self.session_id, event.WhichOneof("msg"))
            return
        if self.setup.relay is not None and not is_delta(event):
            self.setup.relay(event)

    def relay(self, event: events_pb2.Event) -> None:
        """Log a copy of a subagent's event in this session's stream (any thread), keeping its agent path."""
        if not self._log.is_open(self.session_id):
            return
        copy = events_pb2.Event()
        copy.CopyFrom(event)
        self._log.append(self.session_id, copy)
        if self.setup.relay is not None:
            self.setup.relay(event)

    def on_child_event(self, event: str, child_id: str, **details: Any) -> None:
        """Turn supervision notices into session events (and child-start spans)."""
        if event == "started":
            self._record_child_span(child_id, details.get("duration_ms", 0))
            self.emit(events_pb2.ChildStarted(child_id=child_id, kind=details.get("kind", ""),
                                              duration_ms=details.get("duration_ms", 0)))
        elif event == "restarted":
            self.emit(events_pb2.ChildRestarted(child_id=child_id, attempt=details.get("attempt", 0),
                                                reason=details.get("reason", ""),
                                                backoff_ms=details.get("backoff_ms", 0)))
            self._subagent_ended(child_id, agents_pb2.AGENT_STATUS_COMPLETED, "restarted from its log")
        elif event == "stopped":
            self.emit(events_pb2.ChildStopped(child_id=child_id, reason=details.get("reason", ""),
                                              abandoned=bool(details.get("abandoned"))))
            reason = str(details.get("reason", ""))
            if reason != "shutdown":  # close_agent and the session's own stop record their status themselves
                status = agents_pb2.AGENT_STATUS_CLOSED if reason == "normal" else agents_pb2.AGENT_STATUS_ERRORED
                self._subagent_ended(child_id, status, f"crashed: {reason}" if reason != "normal" else "")

    def on_escalation(self, child_id: str, reason: str) -> None:
        """A child crashed too often: the session reports it and fails."""
        self._stop_reason = f"failed: {reason}"
        self.emit(events_pb2.SessionError(message=reason, code="restart_intensity"))

    # --- start-up -------------------------------------------------------------------------------------
    def on_start(self) -> None:
        """Create the record, start children in parallel, emit SessionConfigured first, commit."""
        setup = self.setup
        if self.incarnation > 1:  # a supervised restart (a subagent) continues from its own log
            setup.start_kind = "resume"
        resumed = setup.start_kind == "resume"
        self._log.create_session(
            self.session_id, self.configuration.SerializeToString(), forked_from=setup.forked_from,
            fork_seq=setup.fork_seq, parent_id=self.configuration.session_source.parent_session_id,
            resume=resumed,
        )
        try:
            self._start_standard_children()
            history_items = sum(1 for e in setup.history if e.WhichOneof("msg") in ("turn_started", "agent_message"))
            configured = events_pb2.SessionConfigured(
                session_id=self.session_id, configuration=self.configuration, forked_from_id=setup.forked_from,
                window_generation=setup.window_generation, start_kind=setup.start_kind,
                history_items=history_items,
            )
            first = event_for(configured, agent_path=setup.agent_path, traceparent=setup.start_traceparent)
            self._append(first)
            self.configured_seq = first.seq
            with self._emit_lock:
                self._configured = True
                held, self._held = self._held, []
            for summary, details in setup.deprecations:
                self.emit(events_pb2.DeprecationNotice(summary=summary, details=details))
            for warning in setup.warnings:
                self.emit(events_pb2.Warning(message=warning))
            for event in held:
                self._append(event)
            if resumed:
                self._end_orphaned_tasks()
            self._adopt_history(resumed)
            self._await_mcp_startup()
            self._run_start_hooks(resumed)
        except BaseException:
            self._log.discard_session(self.session_id, resumed=resumed)
            raise
        self._log.commit_session(self.session_id)
        self._committed = True
        self._session_end_ran = False

    def _end_orphaned_tasks(self) -> None:
        """End, in log order, each of this session's tasks the log left open (queued, or started and never
        ended): the process that ran them died (a stop or a failure of the session ends them itself)."""
        open_tasks: dict[str, str] = {}
        for event in self._log.read_kinds(self.session_id, _TASK_KINDS):
            if event.session_id != self.session_id or not event.task_id:  # a subagent's relayed copy
                continue
            opened = event.WhichOneof("msg")
            if opened in ("task_queued", "turn_started"):
                open_tasks[event.task_id] = str(opened)
            else:
                open_tasks.pop(event.task_id, None)
        for task_id, state in open_tasks.items():
            reason = RESTARTED_WHILE_RUNNING if state == "turn_started" else RESTARTED_WHILE_QUEUED
            self.emit(events_pb2.TurnAborted(reason=reason), task_id=task_id)

    def _adopt_history(self, resumed: bool) -> None:
        """Make the conversation this session starts from its own: a fork or a ``fork_context`` subagent logs
        the inherited entries as its own ``HistoryItem``s (so its own resume needs only its own log); a
        supervised restart reads its own log again."""
        setup = self.setup
        if resumed:
            if self.incarnation > 1:
                setup.history = self._log.read_kinds(self.session_id, HISTORY_KINDS)
            return
        source = setup.forked_from or self.configuration.session_source.parent_session_id
        # the source's own entries (not its subagents' relayed ones); a compacted source's from its summary on
        inherited = current_window(setup.history, (source,) if source else ())
        for event in inherited:
            self.emit(event.history_item)
        if inherited:
            setup.history = self._log.read_kinds(self.session_id, HISTORY_KINDS)

    # --- requests (Envelope in, Envelope out) -------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        """Serve session requests and internal notices carried in envelopes."""
        if isinstance(message, envelope_pb2.Envelope):
            kind = message.WhichOneof("payload")
            handler = self._handlers().get(kind or "")
            if handler is not None:
                return handler(self, message)
        return super().on_receive(message)

    @staticmethod
    def _handlers() -> dict[str, Callable[[SessionSupervisor, envelope_pb2.Envelope], Any]]:
        return {
            "submit": SessionSupervisor._on_submit,
            "interrupt": SessionSupervisor._on_interrupt,
            "update_settings": SessionSupervisor._on_update_settings,
            "get_session": SessionSupervisor._on_get_session,
            "task_done": SessionSupervisor._on_task_done,
            "opaque": SessionSupervisor._on_feature_request,
            "event": SessionSupervisor._on_agent_event,
        }

    def _on_feature_request(self, env: envelope_pb2.Envelope) -> Any:
        return handle_feature_request(self, env.opaque.type_url, env.opaque.data)

    def _on_submit(self, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        req = env.submit
        task = _Task(task_id=uuid.uuid4().hex[:12], input=req.input, traceparent=env.trace.traceparent)
        queued = False
        if self._running is not None and req.interrupt:
            self._abort_running("interrupted")
            self._queue.appendleft(task)  # runs once the aborted one unwound; logged before the reply
            self.emit(events_pb2.TaskQueued(position=1, input=req.input), task_id=task.task_id)
        elif self._running is not None:
            if len(self._queue) >= MAX_QUEUED_TASKS:
                raise LimitExceeded(f"session {self.session_id}: {MAX_QUEUED_TASKS} tasks already queued")
            self._queue.append(task)
            queued = True
            self.emit(events_pb2.TaskQueued(position=len(self._queue), input=req.input), task_id=task.task_id)
        else:
            self._start_task(task)
        return envelope_pb2.Envelope(correlation_id=env.correlation_id,
                                     submit_reply=session_pb2.SubmitResponse(task_id=task.task_id, queued=queued))

    def _on_interrupt(self, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        running = self._running
        if running is not None:
            self._abort_running("interrupted")
        reply = session_pb2.InterruptResponse(interrupted=running is not None,
                                              task_id=running.task_id if running else "")
        return envelope_pb2.Envelope(correlation_id=env.correlation_id, interrupt_reply=reply)

    def _on_update_settings(self, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        new = apply(self.configuration, env.update_settings.update, self.setup.constraints)
        self.configuration = new
        self._log.update_config(self.session_id, new.SerializeToString())
        self.emit(events_pb2.SettingsUpdated(configuration=new))
        enforcement = self.setup.services.get("enforcement")
        if enforcement is not None:
            enforcement.update(new)
        self.on_settings_changed(new)
        ref = self.child_ref("proxy")
        inherit = self.setup.services.get("inherit")
        if ref is not None:
            ref.proxy().set_policy(new.permission_profile.network)
        elif inherit is not None and inherit.proxy is not None and inherit.proxy_token:
            inherit.proxy.set_policy(new.permission_profile.network, inherit.proxy_token)
        self._set_approval_mode()
        return envelope_pb2.Envelope(correlation_id=env.correlation_id,
                                     update_settings_reply=session_pb2.UpdateSettingsResponse(configuration=new))

    def on_settings_changed(self, configuration: config_pb2.SessionConfiguration) -> None:
        """Tell children about a new configuration: the shell's cwd (the next command runs there)."""
        self.set_shell_cwd(configuration.cwd)

    def info(self, into: session_pb2.SessionInfo | None = None) -> session_pb2.SessionInfo:
        """What GetSession reports for this live session (written into ``into`` when given: no copy)."""
        info = into if into is not None else session_pb2.SessionInfo()
        info.session_id = self.session_id
        info.status = session_pb2.SESSION_STATUS_RUNNING
        info.configuration.CopyFrom(self.configuration)
        info.forked_from_id = self.setup.forked_from
        info.window_generation = self.setup.window_generation
        info.task_running = self._running is not None
        info.queued_tasks = len(self._queue)
        info.last_seq = max(self._log.last_seq(self.session_id), 0)
        info.created.FromNanoseconds(self._created_ns)
        return info

    def _on_get_session(self, env: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        reply = envelope_pb2.Envelope(correlation_id=env.correlation_id)
        self.info(into=reply.get_session_reply.session)
        return reply

    # --- tasks ----------------------------------------------------------------------------------------
    def _start_task(self, task: _Task) -> None:
        self._running = task
        task.started = time.monotonic()
        task.scope = get_host().open_scope(f"task:{task.task_id}")
        self._set_approval_mode()
        self._report_agent_status(agents_pb2.AGENT_STATUS_RUNNING, "")
        self.emit(events_pb2.TurnStarted(input=task.input), task_id=task.task_id, traceparent=task.traceparent)
        ctx = TaskContext(
            session_id=self.session_id, task_id=task.task_id, input=task.input,
            configuration=self.configuration, traceparent=task.traceparent,
            emit=lambda msg: self.emit(msg, task_id=task.task_id), services=self.task_services(),
            history=self.setup.history, state=self.task_state,
        )
        future = task.scope.submit(self._run_task, ctx, name=f"task:{task.task_id}")
        me = self.actor_ref

        def done(fut: concurrent.futures.Future[TaskResult]) -> None:
            note = envelope_pb2.TaskDone(task_id=task.task_id,
                                         duration_ms=int((time.monotonic() - task.started) * 1000))
            exc = fut.exception()
            if exc is None:
                result = fut.result()
                note.outcome = "completed"
                note.last_agent_message = result.last_agent_message
                note.usage.input_tokens = result.input_tokens
                note.usage.output_tokens = result.output_tokens
                note.usage.total_tokens = result.input_tokens + result.output_tokens
                note.usage.cached_input_tokens = result.cached_input_tokens
                note.usage.reasoning_output_tokens = result.reasoning_output_tokens
            elif isinstance(exc, TaskCancelled):
                note.outcome = task.abort_reason or "interrupted"
            elif isinstance(exc, TurnAbortRequested):
                note.outcome = f"aborted: {exc}"
            else:
                note.outcome = "failed"
                note.error = exc_text(exc)
            if me.is_alive():
                me.tell(envelope_pb2.Envelope(task_done=note))

        future.add_done_callback(done)

    async def _run_task(self, ctx: TaskContext) -> TaskResult:
        """The task, then the ``on_parent_end`` policy for subagents it left running."""
        result = await self.setup.task_runner(ctx)
        agents = ctx.services.get("agents")
        if agents is not None and self.agents_config.on_parent_end == "wait":
            await agents.wait_children(PARENT_WAIT_S)
        return result

    def _abort_running(self, reason: str) -> None:
        task = self._running
        if task is None or task.scope is None:
            return
        task.abort_reason = reason
        task.scope.cancel()

    def _on_task_done(self, env: envelope_pb2.Envelope) -> None:
        note = env.task_done
        task = self._running
        if task is None or task.task_id != note.task_id:
            return
        self._running = None
        if task.scope is not None:
            task.scope.close(TASK_CANCEL_TIMEOUT_S)
        if note.outcome == "completed":
            self.emit(events_pb2.TurnCompleted(last_agent_message=note.last_agent_message, usage=note.usage,
                                               duration_ms=note.duration_ms), task_id=task.task_id)
        elif note.outcome == "failed":
            self.emit(events_pb2.TurnAborted(reason=f"failed: {note.error}"), task_id=task.task_id)
        else:
            self.emit(events_pb2.TurnAborted(reason=note.outcome), task_id=task.task_id)
        self._end_of_turn_for_agents(note)
        if self._queue:
            self._start_task(self._queue.popleft())
        else:
            self._set_approval_mode()

    # --- stopping -------------------------------------------------------------------------------------
    def _stop(self) -> None:
        self._shutdown_tasks()
        self._run_session_end_hooks(self._stop_reason)
        super()._stop()

    def _shutdown_tasks(self) -> None:
        task, self._running = self._running, None
        if task is not None and task.scope is not None:
            task.abort_reason = "shutdown"
            task.scope.close(TASK_CANCEL_TIMEOUT_S)
            self.emit(events_pb2.TurnAborted(reason="shutdown"), task_id=task.task_id)
        while self._queue:  # acknowledged tasks: each gets its end
            self.emit(events_pb2.TurnAborted(reason=STOPPED_WHILE_QUEUED), task_id=self._queue.popleft().task_id)

    def on_stop(self) -> None:
        """A requested stop: children are down already; SessionStopped is the last event."""
        self._finish()

    def _after_exit(self) -> None:
        self._shutdown_tasks()
        self._run_session_end_hooks(self._stop_reason)
        super()._after_exit()  # children stop here if a failure ended the session
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        inherit = self.setup.services.get("inherit")
        enforcement = self.setup.services.get("enforcement")
        if inherit is None and enforcement is not None:
            enforcement.approvals.deny_all()  # the tree's questions die with its root
        if inherit is not None and inherit.proxy is not None and inherit.proxy_token:
            inherit.proxy.remove_view(inherit.proxy_token)  # its token is refused from now on
        if "provider" in self.task_state:
            try:
                get_host().call(close_turn_state, self.task_state, timeout=TASK_CANCEL_TIMEOUT_S)
            except Exception:  # a provider that fails to close must not keep the session alive
                logger.warning("closing the model provider of %s failed", self.session_id, exc_info=True)
        if self._committed:
            with self._emit_lock:
                self._configured = True
            self.emit(events_pb2.SessionStopped(reason=self._stop_reason))
            self._log.set_status(self.session_id, STOPPED)
            self._log.close_session(self.session_id)
        if self.setup.on_exit is not None:
            self.setup.on_exit(self.session_id)

    def _handle_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if self._committed and self._stop_reason == "requested":
            self._stop_reason = f"failed: {exc_text(exception_value)}"
        super()._handle_failure(exception_type, exception_value, traceback)

