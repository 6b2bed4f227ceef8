"""OTP-style supervision for pykka actors. Knows nothing about sessions.

pykka has no supervision, and an actor that stopped cannot be restarted, so a "restart" here starts a fresh
actor (fresh state) from the child's spec. The contract:

- ``SupervisedActor`` reports its own end to its supervisor by a ``ChildExited`` envelope (death watch), whatever
  ended it: a normal stop, an exception in ``on_start``, in a ``tell`` handler, in ``on_stop`` or
  ``on_failure``, or a failed trio task started with ``run_task``. The reporting lives in pykka's loop
  internals, so a subclass that overrides ``on_start``/``on_stop``/``on_failure`` cannot disable it.
  No ``BaseException`` escapes an actor: one is converted into an ordinary failure of that actor, so pykka
  never calls ``ActorRegistry.stop_all()`` because of it.
- ``Supervisor`` starts children (in parallel), restarts them per ``Restart`` policy and ``Strategy``
  (one_for_one, rest_for_one), with exponential backoff and jitter, within a restart intensity
  (``max_restarts`` within ``period_s``; past it the supervisor fails and so escalates to its own supervisor),
  holds messages sent to a restarting child in a bounded stash (over the bound the sender gets
  ``StashFull``), and stops children in reverse start order, each within its shutdown timeout, abandoning (and
  reporting) one that does not stop in time.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import pykka
import trio
from pykka._envelope import Envelope as _PykkaEnvelope

from actors.core._parking import InboxParked, ParkingInbox, get_pool
from actors.core._trio_host import TaskScope, get_host
from actors.errors import ChildStartError, StashFull, SupervisorEscalation
from protos.supervisor.v1 import envelope_pb2

__all__ = [
    "ChildSpec",
    "Restart",
    "Strategy",
    "SupervisedActor",
    "Supervisor",
    "actor_of",
    "exc_text",
    "put_with_reply",
    "start_actor",
]

logger = logging.getLogger(__name__)

#: Default time a child gets to stop before it is abandoned.
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0
#: Default time a child's ``on_start`` may take before its start counts as failed.
DEFAULT_START_TIMEOUT_S = 30.0
#: Default restart intensity: this many restarts ...
DEFAULT_MAX_RESTARTS = 3
#: ... within this many seconds; one more escalates.
DEFAULT_PERIOD_S = 5.0
#: First restart backoff; doubles per restart in the window, capped by the maximum.
DEFAULT_BACKOFF_BASE_S = 0.01
DEFAULT_BACKOFF_MAX_S = 2.0
#: Backoff is multiplied by a random factor in [1 - JITTER, 1 + JITTER].
BACKOFF_JITTER = 0.2
#: Messages held for one restarting child before senders get ``StashFull``.
DEFAULT_STASH_LIMIT = 1000


class Restart(enum.Enum):
    """When a child that ended is started again (OTP restart types)."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after a crash
    TEMPORARY = "temporary"  # never


class Strategy(enum.Enum):
    """Which children restart when one crashes."""

    ONE_FOR_ONE = "one_for_one"  # only the one that died
    REST_FOR_ONE = "rest_for_one"  # it and every child started after it


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and how to treat its end."""

    child_id: str
    actor_class: type[SupervisedActor]
    kwargs: dict[str, Any] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    kind: str = "actor"


def exc_text(exc: BaseException | None) -> str:
    """A one-line description of an exception for events and logs."""
    if exc is None:
        return "unknown error"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SupervisedActor(pykka.ThreadingActor):
    """A pykka actor that tells its supervisor when it ends and keeps every ``BaseException`` in.

    Subclasses take their own keyword arguments and pass ``supervisor``, ``child_id`` and ``incarnation``
    through to this ``__init__`` (the supervisor supplies them). With ``park_when_idle`` the actor holds no
    thread while its inbox is empty (``actors.core._parking``): its runs borrow threads from a shared pool.
    """

    #: Give the thread back while the inbox is empty (many mostly idle actors, e.g. sessions).
    park_when_idle: ClassVar[bool] = False

    def __init__(
        self,
        *,
        supervisor: pykka.ActorRef[Any] | None = None,
        child_id: str = "",
        incarnation: int = 0,
    ) -> None:
        super().__init__()
        self.supervisor_ref = supervisor
        self.child_id = child_id
        self.incarnation = incarnation
        #: Resolves when ``on_start`` returned (result None) or failed (its exception).
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._failure: BaseException | None = None
        self._task_scope: TaskScope | None = None
        self._scope_lock = threading.Lock()

    # --- pykka internals, wrapped so that reporting cannot be disabled by subclasses -------------------
    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        if type(self).park_when_idle:
            return ParkingInbox()
        return super()._create_actor_inbox()

    def _start_actor_loop(self) -> None:
        inbox = self.actor_inbox
        if not isinstance(inbox, ParkingInbox):
            super()._start_actor_loop()
            return
        inbox.wake = self._resume_run
        get_pool().run(self._actor_loop)

    def _resume_run(self) -> None:
        self._run(first=False)

    def _actor_loop(self) -> None:
        self._run(first=True)

    def _run(self, *, first: bool) -> None:
        """One run of pykka's loop: to the actor's end, or (a parking actor) until its inbox is empty."""
        try:
            if first:
                self._actor_loop_setup()
            try:
                self._actor_loop_running()
            except InboxParked:
                return  # alive, holding no thread; the next message starts another run
            self._actor_loop_teardown()
        except BaseException as exc:
            self._failure = self._failure or exc
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
        self._after_exit()
        self._close_task_scope()
        if not self.started.done():
            self.started.set_exception(self._failure or ChildStartError(f"{self} stopped during start"))
        self._report_exit()

    def _actor_loop_setup(self) -> None:
        super()._actor_loop_setup()
        if self.actor_stopped.is_set():
            self.started.set_exception(self._failure or ChildStartError(f"{self} failed to start"))
        else:
            self.started.set_result(None)

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._failure is None:
            self._failure = exception_value or RuntimeError("unknown failure")
        super()._handle_failure(exception_type, exception_value, traceback)

    def _handle_receive(self, message: Any) -> Any:
        try:
            return super()._handle_receive(message)
        except Exception:
            raise
        except BaseException as exc:
            raise RuntimeError(f"{type(exc).__name__} in actor: {exc}") from exc

    def _after_exit(self) -> None:
        """Last cleanup in the actor's thread, however it ended (subclasses extend, never replace)."""

    def _report_exit(self) -> None:
        if self.supervisor_ref is None:
            return
        envelope = envelope_pb2.Envelope(
            sender=self.child_id,
            child_exited=envelope_pb2.ChildExited(
                child_id=self.child_id,
                incarnation=self.incarnation,
                abnormal=self._failure is not None,
                reason=exc_text(self._failure) if self._failure is not None else "normal",
            ),
        )
        try:
            self.supervisor_ref.tell(envelope)
        except pykka.ActorDeadError:
            pass

    # --- trio work owned by the actor ------------------------------------------------------------------
    @property
    def task_scope(self) -> TaskScope:
        """This actor's cancel scope in the shared trio loop; closed when the actor ends."""
        with self._scope_lock:
            if self._task_scope is None:
                self._task_scope = get_host().open_scope(f"{type(self).__name__}:{self.child_id}")
            return self._task_scope

    def run_task(
        self, fn: Callable[..., Any], *args: Any, critical: bool = True, name: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` in the actor's trio scope; a critical task's failure fails the actor."""
        future = self.task_scope.submit(fn, *args, name=name)
        if critical:
            task_name = name or getattr(fn, "__name__", "task")

            def check(done: concurrent.futures.Future[Any]) -> None:
                exc = None if done.cancelled() else done.exception()
                if exc is None or self.actor_stopped.is_set() or self._task_scope_closed():
                    return
                failed = envelope_pb2.Envelope(
                    task_failed=envelope_pb2.TaskFailed(task=str(task_name), error=exc_text(exc))
                )
                try:
                    self.actor_ref.tell(failed)
                except pykka.ActorDeadError:
                    pass

            future.add_done_callback(check)
        return future

    def _task_scope_closed(self) -> bool:
        scope = self._task_scope
        return scope is not None and scope.closed

    def _close_task_scope(self) -> None:
        with self._scope_lock:
            scope = self._task_scope
        if scope is not None and not scope.close():
            logger.warning("%s: trio tasks did not exit in time", self)

    def on_receive(self, message: Any) -> Any:
        """Handle the envelopes every supervised actor understands; subclasses call super() for the rest."""
        if isinstance(message, envelope_pb2.Envelope):
            kind = message.WhichOneof("payload")
            if kind == "ping":
                return message
            if kind == "task_failed":
                raise ChildTaskFailed(f"task {message.task_failed.task} failed: {message.task_failed.error}")
        return super().on_receive(message)


def start_actor(actor: SupervisedActor) -> pykka.ActorRef[Any]:
    """Start an already built actor (pykka's ``start()`` builds its own; we need the instance's futures)."""
    ref: pykka.ActorRef[Any] = actor.actor_ref
    pykka.ActorRegistry.register(ref)
    actor._start_actor_loop()
    return ref


class ChildTaskFailed(Exception):
    """Raised inside an actor whose critical trio task failed, so that the actor fails."""


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    incarnation: int = 0
    restarts: deque[float] = field(default_factory=deque)
    restarting: bool = False
    stash: deque[Any] = field(default_factory=deque)
    pending_restart: dict[str, Any] = field(default_factory=dict)


class Supervisor(SupervisedActor):
    """A ``SupervisedActor`` that supervises children. Hooks: ``on_child_event``, ``on_escalation``."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = DEFAULT_MAX_RESTARTS
    period_s: float = DEFAULT_PERIOD_S
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    stash_limit: int = DEFAULT_STASH_LIMIT
    #: Time source for the restart-intensity window (tests substitute a manual clock).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._children: dict[str, _Child] = {}  # insertion order = start order
        self._stopping = False
        self._clock: Callable[[], float] = type(self).clock

    # --- hooks ----------------------------------------------------------------------------------------
    def on_child_event(self, event: str, child_id: str, **details: Any) -> None:
        """Called for "started", "restarted" and "stopped"; sessions turn these into events."""

    def on_escalation(self, child_id: str, reason: str) -> None:
        """Called before the supervisor fails because a child exceeded the restart intensity."""

    # --- starting -------------------------------------------------------------------------------------
    def start_children(self, specs: Iterable[ChildSpec]) -> None:
        """Start children in parallel and wait until each ``on_start`` returned.

        On any failure every child started here is stopped (reverse order) and ``ChildStartError`` raised.
        """
        specs = list(specs)
        started: list[tuple[ChildSpec, SupervisedActor, float]] = []
        for spec in specs:
            if spec.child_id in self._children:
                raise ValueError(f"duplicate child id {spec.child_id!r}")
            child = _Child(spec=spec)
            self._children[spec.child_id] = child
            actor = self._spawn(child)
            started.append((spec, actor, time.monotonic()))
        errors = []
        for spec, actor, t0 in started:
            try:
                actor.started.result(timeout=spec.start_timeout_s)
            except concurrent.futures.TimeoutError:
                errors.append(f"{spec.child_id}: start timed out after {spec.start_timeout_s}s")
                continue
            except Exception as exc:
                errors.append(f"{spec.child_id}: {exc_text(exc)}")
                continue
            self.on_child_event("started", spec.child_id, kind=spec.kind,
                                duration_ms=int((time.monotonic() - t0) * 1000))
        if errors:
            self.stop_children([s.child_id for s, _, _ in started])
            raise ChildStartError("; ".join(errors))

    def start_child(self, spec: ChildSpec) -> pykka.ActorRef[Any]:
        """Start one child now and wait for its ``on_start``."""
        self.start_children([spec])
        ref = self._children[spec.child_id].ref
        assert ref is not None
        return ref

    def _spawn(self, child: _Child) -> SupervisedActor:
        child.incarnation += 1
        actor = child.spec.actor_class(
            supervisor=self.actor_ref,
            child_id=child.spec.child_id,
            incarnation=child.incarnation,
            **child.spec.kwargs,
        )
        child.ref = start_actor(actor)
        return actor

    # --- sending --------------------------------------------------------------------------------------
    def child_ref(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """The live ref of a child, or None while it restarts or after it stopped."""
        child = self._children.get(child_id)
        if child is None or child.restarting:
            return None
        return child.ref

    def child_actor(self, child_id: str) -> Any:
        """The live child's actor object, for its thread-safe plain reads; None while absent or restarting."""
        ref = self.child_ref(child_id)
        return None if ref is None else actor_of(ref)

    def children(self) -> list[str]:
        """Child ids in start order."""
        return list(self._children)

    def send_to_child(self, child_id: str, message: Any) -> None:
        """Tell a child a message; while it restarts, hold it in the bounded stash."""
        child = self._children.get(child_id)
        if child is None:
            raise KeyError(f"no child {child_id!r}")
        if child.restarting or child.ref is None or not child.ref.is_alive():
            if len(child.stash) >= self.stash_limit:
                raise StashFull(f"child {child_id!r} is restarting and {self.stash_limit} messages wait already")
            child.stash.append(message)
            return
        child.ref.tell(message)

    # --- death watch ----------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        """Handle death-watch and restart-timer envelopes; pass everything else to ``handle_message``."""
        if isinstance(message, envelope_pb2.Envelope):
            kind = message.WhichOneof("payload")
            if kind == "child_exited":
                self._on_child_exited(message.child_exited)
                return None
            if kind == "restart_child":
                self._restart_now(message.restart_child.child_id, message.restart_child.incarnation)
                return None
        return super().on_receive(message)

    def _on_child_exited(self, notice: envelope_pb2.ChildExited) -> None:
        child = self._children.get(notice.child_id)
        if child is None or notice.incarnation != child.incarnation or child.restarting:
            return
        if self._stopping:
            return
        wanted = child.spec.restart is Restart.PERMANENT or (
            child.spec.restart is Restart.TRANSIENT and notice.abnormal
        )
        if not wanted:
            child.ref = None
            self._children.pop(notice.child_id)
            self.on_child_event("stopped", notice.child_id, reason=notice.reason, abandoned=False)
            return
        now = self._clock()
        child.restarts.append(now)
        while child.restarts and now - child.restarts[0] > self.period_s:
            child.restarts.popleft()
        if len(child.restarts) > self.max_restarts:
            reason = (f"child {notice.child_id!r} exceeded restart intensity "
                      f"({self.max_restarts} in {self.period_s}s): {notice.reason}")
            self.on_child_event("stopped", notice.child_id, reason="restart intensity exceeded",
                                abandoned=False)
            self._children.pop(notice.child_id)
            self.on_escalation(notice.child_id, reason)
            raise SupervisorEscalation(reason)
        to_restart = [notice.child_id]
        if self.strategy is Strategy.REST_FOR_ONE:
            ids = list(self._children)
            later = ids[ids.index(notice.child_id) + 1:]
            self.stop_children(later, remove=False)
            to_restart += later
        attempt = len(child.restarts)
        delay = min(self.backoff_base_s * (2 ** (attempt - 1)), self.backoff_max_s)
        delay *= random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
        for child_id in to_restart:
            self._children[child_id].restarting = True
        child.pending_restart = {
            "attempt": attempt, "reason": notice.reason, "backoff_ms": int(delay * 1000), "with": to_restart,
        }
        self._schedule_restart(notice.child_id, child.incarnation, delay)

    def _schedule_restart(self, child_id: str, incarnation: int, delay: float) -> None:
        me = self.actor_ref
        timer = envelope_pb2.Envelope(
            restart_child=envelope_pb2.RestartChild(child_id=child_id, incarnation=incarnation)
        )

        async def fire() -> None:
            await trio.sleep(delay)
            try:
                me.tell(timer)
            except pykka.ActorDeadError:
                pass

        self.run_task(fire, critical=False, name=f"restart:{child_id}")

    def _restart_now(self, child_id: str, incarnation: int) -> None:
        first = self._children.get(child_id)
        if first is None or first.incarnation != incarnation:
            return
        details, first.pending_restart = first.pending_restart, {}
        group = details.get("with", [child_id])
        for cid in group:
            child = self._children.get(cid)
            if child is None:
                continue
            actor = self._spawn(child)
            try:
                actor.started.result(timeout=child.spec.start_timeout_s)
            except Exception as exc:  # the new incarnation failed in on_start: its exit notice follows
                logger.info("restart of %s failed: %s", cid, exc_text(exc))
                child.restarting = False
                continue
            child.restarting = False
            while child.stash and child.ref is not None:
                child.ref.tell(child.stash.popleft())
            self.on_child_event("restarted", cid, attempt=details.get("attempt", 1),
                                reason=details.get("reason", ""), backoff_ms=details.get("backoff_ms", 0))

    # --- stopping -------------------------------------------------------------------------------------
    def stop_children(self, child_ids: Iterable[str] | None = None, *, remove: bool = True) -> list[str]:
        """Stop children in reverse start order, each within its timeout; returns the abandoned ones."""
        ids = list(self._children) if child_ids is None else [c for c in child_ids if c in self._children]
        abandoned = []
        for child_id in reversed(ids):
            child = self._children[child_id]
            ref, child.ref = child.ref, None
            if remove:
                self._children.pop(child_id)
            else:
                child.restarting = True
            reason = "shutdown"
            is_abandoned = False
            if ref is not None and ref.is_alive():
                try:
                    future = ref.stop(block=False)
                    future.get(timeout=child.spec.shutdown_timeout_s)
                except pykka.Timeout:
                    is_abandoned = True
                    reason = f"abandoned after {child.spec.shutdown_timeout_s}s shutdown timeout"
                    abandoned.append(child_id)
                except pykka.ActorDeadError:
                    pass
            if remove:
                self.on_child_event("stopped", child_id, reason=reason, abandoned=is_abandoned)
        return abandoned

    def _stop(self) -> None:
        # A requested stop: children first (newest first), then the supervisor's own on_stop.
        self._stopping = True
        self.stop_children()
        super()._stop()

    def _after_exit(self) -> None:
        # However the supervisor ended (stop, crash, failed on_start), its children end with it: no orphans.
        self._stopping = True
        if self._children:
            self.stop_children()
        super()._after_exit()


# --- the two sanctioned shortcuts into pykka's internals (this is the only module that touches them) ---------
def put_with_reply(ref: pykka.ActorRef[Any], message: Any, reply: Any) -> None:
    """Put ``message`` in the actor's inbox with ``reply`` (anything with ``set(value)``/``set_exception``, like
    a ``pykka.Future``) as the reply target: an ``ask`` that blocks no thread while the actor works."""
    ref.actor_inbox.put(_PykkaEnvelope(message, reply_to=reply))


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    """The live actor object behind ``ref`` (for its thread-safe plain reads), or None once it is gone."""
    return ref._actor_weakref()
