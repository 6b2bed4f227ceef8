"""A thread pool that shrinks back: threads up to a maximum while there is work, none once it is idle.

Contract: ``ElasticThreadPool`` is a ``concurrent.futures.Executor`` (grpc's ``migration_thread_pool`` takes it).
``submit`` hands the job to an idle thread if there is one, else starts a thread while fewer than
``max_workers`` run, else queues it (the order is kept). A thread idle for ``idle_exit_s`` exits, so a burst of
200 calls leaves no threads behind (``ThreadPoolExecutor`` keeps every thread it ever started).
``shutdown(wait=True)`` lets queued jobs run (or cancels them with ``cancel_futures``) and joins the threads.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

__all__ = ["ElasticThreadPool"]

T = TypeVar("T")
_Job = tuple["futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ElasticThreadPool(futures.Executor):
    """See the module docstring."""

    def __init__(self, max_workers: int, idle_exit_s: float, thread_name_prefix: str) -> None:
        self._max = max_workers
        self._idle_exit_s = idle_exit_s
        self._prefix = thread_name_prefix
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued = 0  # jobs put and not yet taken by a thread
        self._waiting = 0  # threads blocked waiting for a job
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._counter = itertools.count(1)
        self._shutdown = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        """Run ``fn(*args, **kwargs)`` on a pool thread."""
        future: futures.Future[T] = futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put((future, fn, args, kwargs))
            self._queued += 1
            if self._queued > self._waiting and len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._prefix}-{next(self._counter)}")
                self._threads.add(thread)
                thread.start()
        return future

    def thread_count(self) -> int:
        """Threads alive now (busy or idle)."""
        with self._lock:
            return len(self._threads)

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                self._waiting += 1
            try:
                job = self._jobs.get(timeout=self._idle_exit_s)
            except queue.Empty:
                with self._lock:
                    self._waiting -= 1
                    if self._queued == 0:  # nothing was put meanwhile: idle for long enough
                        self._threads.discard(me)
                        return
                continue
            with self._lock:
                self._waiting -= 1
                if job is None:
                    self._threads.discard(me)
                    return
                self._queued -= 1
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
            del job, future, fn, args, kwargs  # an idle thread must not keep its last job alive

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; run (or cancel) the queued ones; join the threads when ``wait``."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
                    with self._lock:
                        self._queued -= 1
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()
