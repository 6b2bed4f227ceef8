"""Hook runner: run every matching hook for one lifecycle event, concurrently, and combine the results.

Contract:
- ``HookRunner.run(event_name, fields)`` (or the one-shot ``run_hooks``) builds the Claude Code hook input
  (``session_id``, ``transcript_path``, ``cwd``, ``hook_event_name`` plus the event's own ``fields`` such as
  ``tool_name``/``tool_input``/``tool_response``, ``prompt``, ``source``, ``stop_hook_active``), picks the
  registry's matching hooks and runs them all at once through the user's shell (``shell_program + [command]``,
  default ``[$SHELL, "-c"]``) with the input as JSON on stdin, cwd = the session cwd, and the environment
  plus ``CLAUDE_PROJECT_DIR`` (and ``PLUGIN_ROOT``/``CLAUDE_PLUGIN_ROOT`` for plugin hooks).
- Each run is bounded by its hook's timeout; a timed-out hook's process group is killed (see
  ``actors.core.run_command``). Results come back in configuration order and are combined by
  ``_hooks_output.aggregate``. A failing hook never raises here: it is an ``error`` result.
- Runs entirely on trio; cancelling the caller's scope kills every running hook's process group and reaps
  it before the cancellation propagates.
- Per run: ``emit(HookStarted)`` then ``emit(HookCompleted)`` (``hooks_pb2``), an OpenTelemetry span
  (tracer ``actors.hooks._actor``, child of the ``traceparent`` argument; none without one, so no orphan traces)
  and one ``hook_runs`` counter increment tagged by source, event and outcome. OpenTelemetry is imported
  lazily.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from actors.core import leaf_exceptions, run_command
from actors.errors import ProcessStartError
from actors.hooks._model import HOOK_EVENTS, HookHandler, HookRegistry, source_to_proto
from actors.hooks._output import AggregateResult, HookRunResult, HookVerdict, aggregate, interpret
from protos.supervisor.v1 import hooks_pb2

if TYPE_CHECKING:
    from google.protobuf.message import Message

__all__ = ["EmitFn", "HookRunner", "UnknownHookEvent", "default_shell_program", "run_hooks"]

logger = logging.getLogger(__name__)

#: How long a hook's output is still read after it exited (a background child may hold the pipe open).
HOOK_OUTPUT_DRAIN_GRACE_S = 0.5

EmitFn = Callable[["Message"], None]

#: Tracer and meter name for hook runs.
INSTRUMENTATION_NAME = "actors.hooks"
#: The counter incremented once per hook run.
RUN_COUNTER_NAME = "hook_runs"
#: Shell used when neither ``shell_program`` nor $SHELL is set.
FALLBACK_SHELL = "/bin/sh"
#: Milliseconds per second, for durations in events.
MS_PER_S = 1000

#: ``hook_runs`` counters per meter provider (None: the global one), so each is created once.
_counters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_global_counter: list[Any] = []


class UnknownHookEvent(ValueError):
    """Raised by ``run`` when asked to run hooks for an event name that does not exist."""


def default_shell_program() -> list[str]:
    """The user's shell and the flag that makes it run one command: ``[$SHELL, "-c"]``."""
    return [os.environ.get("SHELL") or FALLBACK_SHELL, "-c"]


def _discard(_message: Message) -> None:
    pass


class HookRunner:
    """Runs a session's hooks: holds the registry and the session facts every hook input carries."""

    def __init__(
        self,
        registry: HookRegistry,
        *,
        cwd: str | os.PathLike[str],
        emit: EmitFn = _discard,
        session_id: str = "",
        transcript_path: str | None = None,
        shell_program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        self.registry = registry
        self.cwd = os.fspath(cwd)
        self.session_id = session_id
        self.transcript_path = transcript_path
        self.shell_program = list(shell_program) if shell_program else default_shell_program()
        self._emit_sink = emit
        self._env = dict(env) if env is not None else None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider

    def build_input(self, event_name: str, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON object a hook receives on stdin for this event."""
        payload: dict[str, Any] = {
            "session_id": self.session_id,
            "transcript_path": self.transcript_path or "",
            "cwd": self.cwd,
        }
        payload.update(fields or {})
        payload["hook_event_name"] = event_name
        return payload

    async def run(
        self, event_name: str, fields: Mapping[str, Any] | None = None, *, traceparent: str | None = None
    ) -> AggregateResult:
        """Run every hook matching ``event_name`` and these fields; return their combined result."""
        if event_name not in HOOK_EVENTS:
            raise UnknownHookEvent(f"unknown hook event {event_name!r}; expected one of {HOOK_EVENTS}")
        payload = self.build_input(event_name, fields)
        handlers = self.registry.matching(event_name, payload)
        if not handlers:
            return AggregateResult(event_name=event_name)
        stdin = json.dumps(payload, default=str).encode("utf-8")  # odd values (paths, enums) as text
        results: list[HookRunResult | None] = [None] * len(handlers)

        async def run_into(index: int, handler: HookHandler) -> None:
            results[index] = await self._run_one(handler, event_name, stdin, traceparent)

        try:
            async with trio.open_nursery() as nursery:
                for index, handler in enumerate(handlers):
                    nursery.start_soon(run_into, index, handler)
        except BaseExceptionGroup as group:
            leaves = list(leaf_exceptions(group))
            if all(isinstance(exc, trio.Cancelled) for exc in leaves):
                raise leaves[0] from None  # callers recognise a cancelled task by a bare trio.Cancelled
            raise
        return aggregate(event_name, [r for r in results if r is not None])

    async def _run_one(
        self, handler: HookHandler, event_name: str, stdin: bytes, traceparent: str | None
    ) -> HookRunResult:
        run_id = uuid.uuid4().hex
        span = _start_span(self._tracer_provider, handler, run_id, traceparent)
        self._emit(
            hooks_pb2.HookStarted(
                run_id=run_id,
                event_name=event_name,
                source=source_to_proto(handler.source),
                command=handler.command,
                status_message=handler.status_message or "",
                plugin_id=handler.origin.plugin_id or "",
                source_path=handler.origin.path,
            )
        )
        started = time.monotonic()
        exit_code: int | None = None
        stdout = stderr = ""
        verdict = HookVerdict(outcome="error", message="hook run was cancelled")
        try:
            outcome = await run_command(
                [*self.shell_program, handler.command],
                stdin=stdin,
                cwd=self.cwd,
                env={**(self._env if self._env is not None else os.environ), **handler.extra_env(self.cwd)},
                timeout_s=handler.timeout_s,
                # a hook that exits normally is not killed: a background process it started may live on
                kill_leftovers=False,
                drain_grace_s=HOOK_OUTPUT_DRAIN_GRACE_S,
            )
            exit_code, stdout, stderr = outcome.exit_code, outcome.stdout, outcome.stderr
            if outcome.timed_out:
                verdict = HookVerdict(
                    outcome="timeout",
                    message=f"hook timed out after {handler.timeout_s:g}s; its process group was killed",
                )
            else:
                assert exit_code is not None
                verdict = interpret(event_name, exit_code, stdout, stderr)
        except ProcessStartError as exc:
            verdict = HookVerdict(outcome="error", message=f"could not start hook shell: {exc}")
        except Exception as exc:  # a bug of ours must not take the other hooks (or the session) down
            logger.exception("hook run %s failed unexpectedly", run_id)
            verdict = HookVerdict(outcome="error", message=f"hook runner failed: {exc!r}")
        finally:
            result = HookRunResult(
                handler=handler,
                run_id=run_id,
                verdict=verdict,
                exit_code=exit_code,
                duration_ms=int((time.monotonic() - started) * MS_PER_S),
                stdout=stdout,
                stderr=stderr,
            )
            self._emit(
                hooks_pb2.HookCompleted(
                    run_id=run_id,
                    event_name=event_name,
                    source=source_to_proto(handler.source),
                    duration_ms=result.duration_ms,
                    outcome=_OUTCOME_TO_PROTO[verdict.outcome],
                    exit_code=exit_code,
                    message=verdict.message,
                    plugin_id=handler.origin.plugin_id or "",
                )
            )
            _record_telemetry(span, self._meter_provider, result)
        return result

    def _emit(self, message: Message) -> None:
        try:
            self._emit_sink(message)
        except Exception:
            logger.exception("hook event sink failed for %s", type(message).__name__)


async def run_hooks(
    registry: HookRegistry,
    event_name: str,
    hook_input: Mapping[str, Any] | None = None,
    *,
    cwd: str | os.PathLike[str],
    emit: EmitFn = _discard,
    session_id: str = "",
    transcript_path: str | None = None,
    shell_program: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    traceparent: str | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> AggregateResult:
    """One-shot ``HookRunner(...).run(event_name, hook_input)``."""
    runner = HookRunner(
        registry,
        cwd=cwd,
        emit=emit,
        session_id=session_id,
        transcript_path=transcript_path,
        shell_program=shell_program,
        env=env,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    return await runner.run(event_name, hook_input, traceparent=traceparent)


#: Outcome names as ``hooks_pb2.HookOutcome`` values.
_OUTCOME_TO_PROTO: dict[str, hooks_pb2.HookOutcome.ValueType] = {
    "success": hooks_pb2.HOOK_OUTCOME_SUCCESS,
    "blocked": hooks_pb2.HOOK_OUTCOME_BLOCKED,
    "error": hooks_pb2.HOOK_OUTCOME_ERROR,
    "timeout": hooks_pb2.HOOK_OUTCOME_TIMEOUT,
}


def _start_span(tracer_provider: Any, handler: HookHandler, run_id: str, traceparent: str | None) -> Any:
    if not traceparent:
        return None
    try:
        return _open_span(tracer_provider, handler, run_id, traceparent)
    except Exception:  # telemetry must never change a hook's result
        logger.exception("starting a span for hook run %s failed", run_id)
        return None


def _open_span(tracer_provider: Any, handler: HookHandler, run_id: str, traceparent: str) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return None
    tracer = (
        tracer_provider.get_tracer(INSTRUMENTATION_NAME)
        if tracer_provider is not None
        else trace.get_tracer(INSTRUMENTATION_NAME)
    )
    return tracer.start_span(
        f"hook {handler.event_name}",
        context=parent,
        attributes={
            "hook.run_id": run_id,
            "hook.event_name": handler.event_name,
            "hook.source": handler.source,
            "hook.command": handler.command,
            "hook.plugin_id": handler.origin.plugin_id or "",
        },
    )


def _record_telemetry(span: Any, meter_provider: Any, result: HookRunResult) -> None:
    try:
        _end_span(span, result)
        _count(meter_provider, result)
    except Exception:  # telemetry must never change a hook's result
        logger.exception("recording telemetry for hook run %s failed", result.run_id)


def _end_span(span: Any, result: HookRunResult) -> None:
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("hook.outcome", result.outcome)
    span.set_attribute("hook.duration_ms", result.duration_ms)
    if result.exit_code is not None:
        span.set_attribute("hook.exit_code", result.exit_code)
    if result.outcome in ("error", "timeout"):
        span.set_status(Status(StatusCode.ERROR, result.verdict.message[:256]))
    span.end()


def _count(meter_provider: Any, result: HookRunResult) -> None:
    counter = _global_counter[0] if meter_provider is None and _global_counter else None
    if meter_provider is not None:
        counter = _counters.get(meter_provider)
    if counter is None:
        from opentelemetry import metrics

        meter = (
            meter_provider.get_meter(INSTRUMENTATION_NAME)
            if meter_provider is not None
            else metrics.get_meter(INSTRUMENTATION_NAME)
        )
        counter = meter.create_counter(RUN_COUNTER_NAME, unit="1", description="Hook command runs")
        if meter_provider is None:
            _global_counter.append(counter)
        else:
            _counters[meter_provider] = counter
    counter.add(
        1,
        {"source": result.handler.source, "event": result.handler.event_name, "outcome": result.outcome},
    )
