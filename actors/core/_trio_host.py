"""The process's shared trio loop, and the bridge between actor threads and it.

Contract:
- One trio loop runs in one daemon thread per process (``get_host()``); every actor's I/O runs there.
- ``TrioHost.submit`` starts a task and returns a ``concurrent.futures.Future``. A task's exception is
  caught by its wrapper and set on the future: it never reaches the shared nursery, so one failing task
  cannot cancel its siblings or take the loop down. ``trio.Cancelled`` becomes ``TaskCancelled``.
- ``TrioHost.open_scope`` gives an actor a ``TaskScope``: its own cancel scope in the shared loop.
  ``TaskScope.close`` (from any thread) cancels it and waits until every task in it has exited.
- Never call ``future.result()`` from inside the trio thread: use ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import trio

__all__ = [
    "TaskCancelled",
    "TaskScope",
    "TrioHost",
    "collapse_cancelled",
    "get_host",
    "leaf_exceptions",
    "set_event_soon",
    "single_error",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long start-up of the loop thread may take before we call it broken.
LOOP_START_TIMEOUT_S = 10.0
#: Default bound on waiting for a scope's tasks to exit after cancellation.
SCOPE_CLOSE_TIMEOUT_S = 10.0
#: How long an idle trio worker thread lives (trio's default is 10 s): a burst of calls must not leave its
#: threads behind for long. trio has no public setting; its thread cache reads this module global per wait.
WORKER_THREAD_IDLE_EXIT_S = 1.0
_thread_cache = getattr(getattr(trio, "_core", None), "_thread_cache", None)
if _thread_cache is not None and hasattr(_thread_cache, "IDLE_TIMEOUT"):
    _thread_cache.IDLE_TIMEOUT = WORKER_THREAD_IDLE_EXIT_S
#: Name of the loop thread; leak checks recognise it as process-wide, not per session.
HOST_THREAD_NAME = "trio-host"


class TaskCancelled(Exception):
    """Raised from a task's future when its scope was cancelled before it finished."""


class TaskScope:
    """A group of trio tasks owned by one actor, cancellable as a whole from any thread."""

    def __init__(self, host: TrioHost, name: str) -> None:
        self._host = host
        self.name = name
        self._nursery: trio.Nursery | None = None
        self._cancel_scope: trio.CancelScope | None = None
        self._exited = threading.Event()
        self._closed = False

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as cancel_scope:
                self._cancel_scope = cancel_scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._exited.set()

    def submit(
        self, fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` in this scope; its result or exception lands on the returned future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._closed:
            future.set_exception(TaskCancelled(f"scope {self.name} is closed"))
            return future

        def start() -> None:
            if self._nursery is None or self._closed:
                _settle_cancelled(future, self.name)
                return
            self._nursery.start_soon(_guarded, fn, args, future, name=name or getattr(fn, "__name__", None))

        try:
            self._host.run_sync_soon(start)
        except trio.RunFinishedError:
            _settle_cancelled(future, self.name)
        return future

    def start_soon_from_trio(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> concurrent.futures.Future[Any]:
        """Like ``submit`` but for callers already in the trio thread."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._nursery is None or self._closed:
            _settle_cancelled(future, self.name)
        else:
            self._nursery.start_soon(_guarded, fn, args, future)
        return future

    def cancel(self) -> None:
        """Cancel every task in the scope without waiting (any thread)."""
        self._closed = True
        scope = self._cancel_scope
        if scope is None:
            return
        if self._host.in_loop_thread():
            scope.cancel()
            return
        try:
            self._host.run_sync_soon(scope.cancel)
        except trio.RunFinishedError:
            pass

    def close(self, timeout: float = SCOPE_CLOSE_TIMEOUT_S) -> bool:
        """Cancel the scope and wait until its tasks exited; returns False if they did not in time."""
        self.cancel()
        if self._host.in_loop_thread():
            return self._exited.is_set()
        return self._exited.wait(timeout)

    @property
    def closed(self) -> bool:
        """True once ``cancel`` or ``close`` was called."""
        return self._closed


def _settle_cancelled(future: concurrent.futures.Future[Any], scope_name: str) -> None:
    if not future.done():
        future.set_exception(TaskCancelled(f"scope {scope_name} was cancelled"))


async def _guarded(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], future: concurrent.futures.Future[Any]
) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = await fn(*args)
    except trio.Cancelled:
        future.set_exception(TaskCancelled("task was cancelled"))
        raise
    except BaseExceptionGroup as group:
        # a task whose nursery was cancelled ends with a group of Cancelled: that is a cancellation too
        _, rest = group.split(trio.Cancelled)
        if rest is None:
            future.set_exception(TaskCancelled("task was cancelled"))
            raise
        first = rest.exceptions[0] if len(rest.exceptions) == 1 else rest
        future.set_exception(first if isinstance(first, Exception) else RuntimeError(f"task ended with {first!r}"))
    except Exception as exc:
        future.set_exception(exc)
    except BaseException as exc:  # KeyboardInterrupt, BaseExceptionGroup: report, never propagate
        future.set_exception(RuntimeError(f"task ended with {exc!r}"))
    else:
        future.set_result(result)


class TrioHost:
    """One trio loop in its own daemon thread, shared by every actor of the process."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._stop_event: trio.Event | None = None

    def start(self) -> None:
        """Start the loop thread if it is not running yet (idempotent, thread-safe)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._started.clear()
                self._thread = threading.Thread(target=self._main, name=HOST_THREAD_NAME, daemon=True)
                self._thread.start()
        # every caller, not only the one that started the thread, waits until the loop has its token
        if not self._started.wait(LOOP_START_TIMEOUT_S):
            raise RuntimeError("trio host loop did not start")

    def _main(self) -> None:
        trio.run(self._root)

    async def _root(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._started.set()
            await self._stop_event.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The loop's token, for ``trio.from_thread`` calls."""
        self.start()
        assert self._token is not None
        return self._token

    def in_loop_thread(self) -> bool:
        """True when called from the loop thread itself."""
        return self._thread is threading.current_thread()

    def run_sync_soon(self, fn: Callable[[], Any]) -> None:
        """Schedule a plain callable on the loop (any thread, never blocks)."""
        self.token.run_sync_soon(fn)

    def submit(
        self, fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None
    ) -> concurrent.futures.Future[T]:
        """Start ``fn(*args)`` as a task of the host itself; see ``TaskScope.submit``."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def start() -> None:
            if self._nursery is None:
                _settle_cancelled(future, "host")
                return
            self._nursery.start_soon(_guarded, fn, args, future, name=name)

        self.run_sync_soon(start)
        return future

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``fn(*args)`` on the loop and block this (non-loop) thread for its result."""
        if self.in_loop_thread():
            raise RuntimeError("TrioHost.call() from the trio thread would deadlock")
        return self.submit(fn, *args).result(timeout)

    def open_scope(self, name: str) -> TaskScope:
        """Create a ``TaskScope`` in the loop and return once it accepts tasks (any non-loop thread)."""
        scope = TaskScope(self, name)
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def opener() -> None:
            assert self._nursery is not None
            await self._nursery.start(scope._run)

        if self.in_loop_thread():
            raise RuntimeError("open_scope_in_loop() must be used from the trio thread")
        self.submit(opener).add_done_callback(
            lambda f: started.set_exception(f.exception()) if f.exception() else started.set_result(None)
        )
        started.result(LOOP_START_TIMEOUT_S)
        return scope

    async def open_scope_in_loop(self, name: str) -> TaskScope:
        """``open_scope`` for callers already running in the loop."""
        scope = TaskScope(self, name)
        assert self._nursery is not None
        await self._nursery.start(scope._run)
        return scope

    def stop(self, timeout: float = SCOPE_CLOSE_TIMEOUT_S) -> None:
        """Cancel everything and end the loop thread (used at process exit and by tests)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        event = self._stop_event
        if event is not None:
            try:
                self.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass
        thread.join(timeout)


_host: TrioHost | None = None
_host_lock = threading.Lock()


def get_host() -> TrioHost:
    """The process-wide ``TrioHost``, started on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = TrioHost()
    _host.start()
    return _host


@contextlib.contextmanager
def collapse_cancelled() -> Iterator[None]:
    """Re-raise a nursery's group made only of ``trio.Cancelled`` as one plain ``Cancelled``.

    Callers outside trio (``TrioHost`` task wrappers, ``except trio.Cancelled``) then see a cancellation as a
    cancellation rather than as a ``BaseExceptionGroup``.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(leaf_exceptions(group))
        if leaves and all(isinstance(exc, trio.Cancelled) for exc in leaves):
            raise leaves[0] from None
        raise


def leaf_exceptions(exc: BaseException) -> Iterator[BaseException]:
    """The non-group exceptions inside ``exc`` (itself when it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_exceptions(inner)
    else:
        yield exc


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one non-cancellation error inside ``group`` (e.g. a provider failure in a nursery), else the group."""
    _, rest = group.split(trio.Cancelled)
    if rest is not None and len(rest.exceptions) == 1:
        return rest.exceptions[0]
    return group


def set_event_soon(token: trio.lowlevel.TrioToken, event: trio.Event) -> None:
    """Set ``event`` of the trio run behind ``token`` from any thread (at once when already in that run); a run
    that has finished has nobody left to wake."""
    try:
        current = trio.lowlevel.current_trio_token()
    except RuntimeError:
        current = None
    if current is token:
        event.set()
        return
    try:
        token.run_sync_soon(event.set)
    except trio.RunFinishedError:
        pass
