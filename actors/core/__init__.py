"""The kernel: the shared trio host, OTP-style supervision, parked actors, the event log, tracing and process
groups. It knows no session and imports no other wing.
"""

from __future__ import annotations

from actors.core._bounds import TRUNCATION_MARKER, shrink_message
from actors.core._eventlog import (
    HISTORY_KINDS,
    MAX_EVENT_BYTES,
    READ_BATCH,
    RUNNING,
    STOPPED,
    EventLog,
    SessionClosed,
    SessionRecord,
)
from actors.core._executor import ElasticThreadPool
from actors.core._parking import WORKER_THREAD_PREFIX, get_pool
from actors.core._process import (
    MAX_OUTPUT_BYTES,
    SPAWNER_THREAD_NAME,
    GroupProcess,
    ProcessOutcome,
    exit_status,
    run_command,
    signal_group,
    supervise,
)
from actors.core._supervision import (
    ChildSpec,
    Restart,
    Strategy,
    SupervisedActor,
    Supervisor,
    actor_of,
    exc_text,
    put_with_reply,
    start_actor,
)
from actors.core._tracing import TRACER_NAME, carrier, current_traceparent, extract_context, span, trace_id_of
from actors.core._trio_host import (
    HOST_THREAD_NAME,
    TaskCancelled,
    TaskScope,
    TrioHost,
    collapse_cancelled,
    get_host,
    leaf_exceptions,
    set_event_soon,
    single_error,
)
from actors.core._watchdog import (
    OWNER_ENV,
    Watchdog,
    active_watchdog,
    forget_group,
    install_watchdog,
    owner_environment,
    owner_token,
    watch_group,
)

__all__ = [
    "HISTORY_KINDS",
    "HOST_THREAD_NAME",
    "MAX_EVENT_BYTES",
    "MAX_OUTPUT_BYTES",
    "OWNER_ENV",
    "READ_BATCH",
    "RUNNING",
    "SPAWNER_THREAD_NAME",
    "STOPPED",
    "TRACER_NAME",
    "TRUNCATION_MARKER",
    "WORKER_THREAD_PREFIX",
    "ChildSpec",
    "ElasticThreadPool",
    "EventLog",
    "GroupProcess",
    "ProcessOutcome",
    "Restart",
    "SessionClosed",
    "SessionRecord",
    "Strategy",
    "SupervisedActor",
    "Supervisor",
    "TaskCancelled",
    "TaskScope",
    "TrioHost",
    "Watchdog",
    "active_watchdog",
    "actor_of",
    "carrier",
    "collapse_cancelled",
    "current_traceparent",
    "exc_text",
    "exit_status",
    "extract_context",
    "forget_group",
    "get_host",
    "get_pool",
    "install_watchdog",
    "leaf_exceptions",
    "owner_environment",
    "owner_token",
    "put_with_reply",
    "run_command",
    "set_event_soon",
    "shrink_message",
    "signal_group",
    "single_error",
    "span",
    "start_actor",
    "supervise",
    "trace_id_of",
    "watch_group",
]
