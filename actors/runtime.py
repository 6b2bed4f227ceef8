"""SessionRuntime: the process's sessions, their log, and the operations the API offers on them.

The runtime is the one place that knows every live session. It starts sessions transactionally (a start
that fails leaves nothing behind: no live actor, no record in the log), resolves resume and fork from the
log, and turns a request for an unknown or stopped session into a narrow error the gateway maps to a status.

An ephemeral session (``ephemeral = true``, Codex's ``config.ephemeral``) persists nothing: its events (and its
subagents') go to an in-memory log whose rows are dropped when it ends; it streams as any other while it runs,
is not listed, and cannot be resumed.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from actors.config import apply, load_config, resolve_provider
from actors.core import (
    HISTORY_KINDS,
    MAX_EVENT_BYTES,
    RUNNING,
    ChildSpec,
    EventLog,
    SessionRecord,
    TaskCancelled,
    actor_of,
    exc_text,
    shrink_message,
    span,
    start_actor,
)
from actors.errors import ConfigError, ConstraintError, InvalidRequest, SessionStateError, StartupFailed, UnknownSession
from actors.limits import DEFAULT_PAGE_SIZE, LIST_ENTRY_BYTES, LIST_PAGE_BYTES, MAX_PAGE_SIZE
from actors.session import SessionSetup, SessionSupervisor
from actors.turn import TaskRunner, default_runner, window_generation
from protos.supervisor.v1 import config_pb2, envelope_pb2, events_pb2, session_pb2

__all__ = ["RuntimeOptions", "SessionRuntime"]

logger = logging.getLogger(__name__)

#: How long StartSession waits for a session's start-up (children included).
START_TIMEOUT_S = 120.0
#: How long a request to a live session may wait for its answer.
REQUEST_TIMEOUT_S = 30.0
#: How long StopSession waits for the session and its children.
STOP_TIMEOUT_S = 60.0
#: Longest a feature request (an Exec, an MCP call) may take before the caller stops waiting.
FEATURE_TIMEOUT_S = 3600.0
EVENT_LOG_FILE = "events.sqlite3"
#: Records read at a time while filtering a ``ListSessions`` page for a principal.
FILTER_BATCH = 256
#: The in-memory log of ephemeral sessions (SQLite's name for a database that never touches a file).
MEMORY_LOG = ":memory:"
#: Last sequence numbers of ended ephemeral sessions kept for StopSession's answer (their rows are gone).
ENDED_EPHEMERAL_KEPT = 1024


@dataclass
class RuntimeOptions:
    """How the runtime builds sessions."""

    home: Path
    managed_dir: Path | None = None
    task_runner: TaskRunner = default_runner
    #: Extra children for every session (tests use it to add slow or crashing children).
    extra_children: Callable[[SessionSetup], list[ChildSpec]] | None = None
    services: dict[str, Any] = field(default_factory=dict)
    #: Codex's home, read as a config layer (``exec`` sets it; see ``load_config``).
    codex_home: Path | None = None
    #: Values below every config layer (``exec``: Codex's defaults).
    config_defaults: dict[str, Any] = field(default_factory=dict)


def _provider_options(loaded: Any, provider: str) -> tuple[str, dict[str, Any]]:
    """The provider kind and its options (`[model_providers.NAME]`, Codex's tables too; `playbook = PATH`)."""
    kind, options = resolve_provider(loaded.values, provider)
    if kind == "playbook" and loaded.values.get("playbook") and "path" not in options:
        options["path"] = str(loaded.values["playbook"])
    return kind, options


def _drop_caller_frames(exc: BaseException) -> None:
    """Keep only the actor's own frames in a start failure re-raised here: the failed actor keeps the
    exception, and our callers' frames (a gRPC handler's context) must not live as long as it does."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_name in ("start_session", "result", "__get_result"):
        tb = tb.tb_next
    exc.__traceback__ = tb


def _encode_page_token(created: float, session_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, session_id]).encode()).decode()


def _decode_page_token(token: str) -> tuple[float, str]:
    try:
        created, session_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(created), str(session_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidRequest(f"page_token: {token[:64]!r} is not a token from ListSessions") from exc


class SessionRuntime:
    """Starts, finds, drives and stops the sessions of one process."""

    def __init__(self, options: RuntimeOptions) -> None:
        self.options = options
        options.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log = EventLog(options.home / EVENT_LOG_FILE)
        self._live: dict[str, SessionSupervisor] = {}
        self._lock = threading.Lock()
        self._memory_log: EventLog | None = None
        self._ended_ephemeral: dict[str, int] = {}

    # --- start ----------------------------------------------------------------------------------------
    def start_session(self, request: session_pb2.StartSessionRequest, traceparent: str = "",
                      tracestate: str = "") -> session_pb2.StartSessionResponse:
        """Start a new, resumed or forked session; raise a narrow error if it cannot start."""
        mode = request.mode or session_pb2.START_MODE_NEW
        with span("session.start", traceparent, tracestate,
                           attributes={"session.start_mode": session_pb2.StartMode.Name(mode)}) as span_tp:
            setup = self._setup_for(request, mode)
            setup.start_traceparent = span_tp
            actor = SessionSupervisor(setup)
            with self._lock:
                self._live[setup.session_id] = actor
            start_actor(actor)
            try:
                actor.started.result(timeout=START_TIMEOUT_S)
            except Exception as exc:
                _drop_caller_frames(exc)
                self._forget(setup.session_id)
                if actor.actor_ref.is_alive():
                    actor.actor_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
                raise StartupFailed(f"session start failed: {exc_text(exc)}") from exc
            return session_pb2.StartSessionResponse(
                session_id=setup.session_id, configuration=actor.configuration,
                configured_seq=actor.configured_seq,
            )

    def _setup_for(self, request: session_pb2.StartSessionRequest, mode: int) -> SessionSetup:
        cwd = request.cwd or os.getcwd()
        if not os.path.isabs(cwd):  # relative to what? the server's own cwd is no answer a client can rely on
            raise ConfigError(f"cwd: {cwd!r} is not an absolute path")
        if not os.path.isdir(cwd):
            raise ConfigError(f"cwd: {cwd!r} is not a directory")
        loaded = load_config(cwd=cwd, home=self.options.home, managed_dir=self.options.managed_dir,
                             profile=request.profile or None, overrides=list(request.config_overrides),
                             codex_home=self.options.codex_home, defaults=self.options.config_defaults)
        configuration = loaded.session
        configuration.session_source.kind = config_pb2.SessionSource.KIND_GRPC
        if request.thread_name:
            configuration.thread_name = request.thread_name
        if request.client_name:
            configuration.app_server_client_name = request.client_name
        if request.client_version:
            configuration.app_server_client_version = request.client_version
        setup = SessionSetup(
            session_id=uuid.uuid4().hex, start_kind="new", configuration=configuration,
            constraints=loaded.constraints, log=self.log, warnings=list(loaded.warnings),
            deprecations=list(loaded.deprecations), task_runner=self.options.task_runner,
            on_exit=self._forget, services=dict(self.options.services),
        )
        setup.services["live_session_ids"] = self.live_ids
        kind, setup.services["provider_options"] = _provider_options(loaded, configuration.provider)
        setup.services["provider_kind"] = kind
        setup.services["register_session"] = self._register
        setup.services["forget_session"] = self._forget
        setup.services["loaded_config"] = loaded
        if loaded.values.get("ephemeral") is True:
            setup.log = self._ephemeral_log()
        if mode in (session_pb2.START_MODE_RESUME, session_pb2.START_MODE_FORK):
            record = self.log_of(request.session_id).session(request.session_id) if request.session_id else None
            if record is None:
                raise UnknownSession(f"session {request.session_id!r} is not in the log")
            configuration = self._restored(record, configuration, loaded.constraints, request, setup.warnings)
            setup.configuration = configuration
            if mode == session_pb2.START_MODE_RESUME:
                with self._lock:
                    if request.session_id in self._live or record.status == RUNNING:
                        raise SessionStateError(f"session {request.session_id} is running; it cannot be resumed")
                setup.session_id = request.session_id
                setup.start_kind = "resume"
                setup.history = setup.log.read_kinds(request.session_id, HISTORY_KINDS)
                setup.window_generation = window_generation(setup.history, request.session_id)
            else:
                setup.start_kind = "fork"
                setup.forked_from = request.session_id
                source = self.log_of(request.session_id)
                setup.fork_seq = self._fork_point(request, record.last_seq, source)
                setup.history = source.read_kinds(request.session_id, HISTORY_KINDS, up_to=setup.fork_seq)
                if source is not self.log:  # a fork of an ephemeral session is ephemeral too: nothing leaks to disk
                    setup.log = source
        if self.options.extra_children is not None:
            setup.children.extend(self.options.extra_children(setup))
        return setup

    @staticmethod
    def _restored(record: Any, loaded: config_pb2.SessionConfiguration, constraints: config_pb2.Constraints,
                  request: session_pb2.StartSessionRequest, warnings: list[str]) -> config_pb2.SessionConfiguration:
        """The configuration last in force in the log (every UpdateSettings applied), under today's
        constraints: a logged value they no longer allow falls back to the config files' value."""
        restored = config_pb2.SessionConfiguration.FromString(record.config)
        restored.session_source.CopyFrom(loaded.session_source)
        update = config_pb2.SessionSettingsUpdate()
        if request.cwd:
            update.cwd = loaded.cwd
        if request.thread_name:
            update.thread_name = request.thread_name
        restored = apply(restored, update)
        try:
            return apply(restored, config_pb2.SessionSettingsUpdate(), constraints)
        except ConstraintError as exc:
            warnings.append(f"the logged settings are no longer allowed ({exc}); using the configured ones")
            restored.approval_policy = loaded.approval_policy
            restored.permission_profile.CopyFrom(loaded.permission_profile)
            return apply(restored, config_pb2.SessionSettingsUpdate(), constraints)

    def _fork_point(self, request: session_pb2.StartSessionRequest, last_seq: int, log: EventLog) -> int:
        """The last sequence number a fork copies: all, ``fork_at_seq``, or the end of turn ``fork_after_turn``."""
        if request.fork_after_turn and request.fork_at_seq:
            raise ConfigError("fork: set fork_after_turn or fork_at_seq, not both")
        if request.fork_at_seq:
            if request.fork_at_seq > last_seq:
                raise ConfigError(f"fork_at_seq: {request.fork_at_seq} is past the source's last event {last_seq}")
            return int(request.fork_at_seq)
        if not request.fork_after_turn:
            return last_seq
        ends = [e.seq for e in log.read_kinds(request.session_id, ("turn_completed", "turn_aborted"))
                if e.session_id == request.session_id]
        if request.fork_after_turn > len(ends):
            raise ConfigError(f"fork_after_turn: the source has {len(ends)} finished turns, "
                              f"not {request.fork_after_turn}")
        return int(ends[request.fork_after_turn - 1])

    def _register(self, session_id: str, ref: Any) -> None:
        actor = actor_of(ref)  # the instance, for configured_seq and direct emit in tests
        if actor is not None:
            with self._lock:
                self._live[session_id] = actor

    def _forget(self, session_id: str) -> None:
        with self._lock:
            actor = self._live.pop(session_id, None)
        if actor is not None and actor.setup.log is self._memory_log:  # ephemeral: its rows go with it
            record = actor.setup.log.session(session_id)
            actor.setup.log.discard_session(session_id)
            with self._lock:
                self._ended_ephemeral[session_id] = max(record.last_seq, 0) if record is not None else 0
                while len(self._ended_ephemeral) > ENDED_EPHEMERAL_KEPT:
                    self._ended_ephemeral.pop(next(iter(self._ended_ephemeral)))

    def _ephemeral_log(self) -> EventLog:
        with self._lock:
            if self._memory_log is None:
                self._memory_log = EventLog(MEMORY_LOG)
            return self._memory_log

    def log_of(self, session_id: str) -> EventLog:
        """The log a session writes to: the in-memory one for a live ephemeral session, else the file."""
        with self._lock:
            actor = self._live.get(session_id)
        return actor.setup.log if actor is not None else self.log

    # --- lookup and requests --------------------------------------------------------------------------
    def live(self, session_id: str) -> SessionSupervisor:
        """The live session, or a narrow error (NOT_FOUND / FAILED_PRECONDITION)."""
        with self._lock:
            actor = self._live.get(session_id)
        if actor is not None and actor.actor_ref.is_alive():
            return actor
        if self.log.session(session_id) is None and (actor is None or actor.setup.log is self.log):
            raise UnknownSession(f"no session {session_id!r}")
        raise SessionStateError(f"session {session_id} is stopped; resume it first")

    def request(self, session_id: str, envelope: envelope_pb2.Envelope,
                timeout: float = REQUEST_TIMEOUT_S) -> envelope_pb2.Envelope:
        """Send a request envelope to a live session and wait for its reply envelope."""
        reply = self._ask(session_id, envelope, timeout)
        assert isinstance(reply, envelope_pb2.Envelope)
        return reply

    def _ask(self, session_id: str, envelope: envelope_pb2.Envelope, timeout: float) -> Any:
        actor = self.live(session_id)
        try:
            return actor.actor_ref.ask(envelope, timeout=timeout)
        except pykka.ActorDeadError as exc:
            raise SessionStateError(f"session {session_id} stopped while handling the request") from exc

    def request_feature(self, session_id: str, envelope: envelope_pb2.Envelope,
                        timeout: float = FEATURE_TIMEOUT_S) -> Any:
        """Send a feature request (``Envelope.opaque``); wait for its reply message, or for its future."""
        reply = self._ask(session_id, envelope, REQUEST_TIMEOUT_S)
        if isinstance(reply, concurrent.futures.Future):
            try:
                return reply.result(timeout)
            except TaskCancelled as exc:
                raise SessionStateError(f"session {session_id} stopped before the request finished") from exc
        return reply

    def stop_session(self, session_id: str) -> session_pb2.StopSessionResponse:
        """Stop a live session (children newest first); its log stays."""
        actor = self.live(session_id)
        log = actor.setup.log
        try:
            actor.actor_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
        except pykka.ActorDeadError:
            pass
        record = log.session(session_id)
        if record is None:
            with self._lock:
                return session_pb2.StopSessionResponse(last_seq=self._ended_ephemeral.pop(session_id, 0))
        return session_pb2.StopSessionResponse(last_seq=max(record.last_seq, 0))

    def get_session(self, session_id: str) -> session_pb2.SessionInfo:
        """A live session's info, or a logged one's."""
        with self._lock:
            actor = self._live.get(session_id)
        if actor is not None and actor.actor_ref.is_alive():
            reply = self.request(session_id, envelope_pb2.Envelope(
                get_session=session_pb2.GetSessionRequest(session_id=session_id)))
            return reply.get_session_reply.session
        record = self.log_of(session_id).session(session_id)
        if record is None:
            raise UnknownSession(f"no session {session_id!r}")
        info = self._info_from_record(record)
        info.window_generation = window_generation(self.log_of(session_id).read_kinds(session_id, ("compacted",)),
                                                   session_id)
        shrink_message(info, MAX_EVENT_BYTES)  # a record logged before the request limits existed
        return info

    @staticmethod
    def _info_from_record(record: Any) -> session_pb2.SessionInfo:
        info = session_pb2.SessionInfo(
            session_id=record.session_id,
            status=(session_pb2.SESSION_STATUS_RUNNING if record.status == RUNNING
                    else session_pb2.SESSION_STATUS_STOPPED),
            configuration=config_pb2.SessionConfiguration.FromString(record.config),
            forked_from_id=record.forked_from, last_seq=max(record.last_seq, 0),
        )
        info.created.FromNanoseconds(int(record.created * 1e9))
        return info

    def list_sessions(self, include_stopped: bool = False) -> list[session_pb2.SessionInfo]:
        """Sessions in the log (live ones only unless ``include_stopped``), newest first."""
        return [self._info_from_record(r) for r in self.log.list_sessions(include_stopped=include_stopped)]

    def list_sessions_page(self, request: session_pb2.ListSessionsRequest,
                           keep: Callable[[SessionRecord], bool] | None = None) -> session_pb2.ListSessionsResponse:
        """One page of ``list_sessions``: at most ``page_size`` entries of at most ``LIST_ENTRY_BYTES`` each
        (longer configuration texts cut with a marker) and ``LIST_PAGE_BYTES`` in all, newest first; only the
        sessions ``keep`` accepts, if given (a principal's own)."""
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_page_token(request.page_token) if request.page_token else None
        records = self._kept_records(request.include_stopped, size + 1, after, keep)
        response = session_pb2.ListSessionsResponse()
        used = 0
        last: Any = None
        for record in records[:size]:
            info = self._info_from_record(record)
            shrink_message(info, LIST_ENTRY_BYTES)
            cost = info.ByteSize() + 8
            if response.sessions and used + cost > LIST_PAGE_BYTES:
                break
            response.sessions.append(info)
            used += cost
            last = record
        if last is not None and (len(response.sessions) < len(records)):
            response.next_page_token = _encode_page_token(last.created, last.session_id)
        return response

    def _kept_records(self, include_stopped: bool, limit: int, after: tuple[float, str] | None,
                      keep: Callable[[SessionRecord], bool] | None) -> list[SessionRecord]:
        if keep is None:
            return self.log.list_sessions(include_stopped=include_stopped, limit=limit, after=after)
        kept: list[SessionRecord] = []
        while len(kept) < limit:
            batch = self.log.list_sessions(include_stopped=include_stopped, limit=FILTER_BATCH, after=after)
            kept += [r for r in batch if keep(r)]
            if len(batch) < FILTER_BATCH:
                break
            after = (batch[-1].created, batch[-1].session_id)
        return kept[:limit]

    def stream(self, session_id: str, from_seq: int = 0, *, stop: threading.Event | None = None,
               follow: bool = True) -> Iterator[events_pb2.Event]:
        """A session's events from ``from_seq``: logged, then live until it stops (or ``stop`` is set)."""
        log = self.log_of(session_id)
        if log.session(session_id) is None:
            raise UnknownSession(f"no session {session_id!r}")
        return log.follow(session_id, from_seq, stop=stop, live=follow)

    def live_ids(self) -> list[str]:
        """Ids of the live sessions."""
        with self._lock:
            return list(self._live)

    def shutdown(self) -> None:
        """Stop every live session and close the log."""
        with self._lock:
            actors = list(self._live.values())
        for actor in actors:
            try:
                actor.actor_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
            except pykka.ActorDeadError:
                pass
        self.log.close()
        if self._memory_log is not None:
            self._memory_log.close()
