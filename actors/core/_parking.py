"""Parking: an actor that holds no thread while its inbox is empty.

A pykka ``ThreadingActor`` keeps one thread for its whole life, so 10,000 idle sessions would hold 10,000
threads (and this machine's ``pid_max`` allows about 30,000 for the whole process tree). A parked actor runs
pykka's own message loop on a borrowed worker thread and gives the thread back as soon as its inbox is empty;
the next message wakes it on a worker again. Threads then follow the number of *busy* actors, not live ones.

Contract:
- ``ParkingInbox`` is the actor's inbox. Its ``get`` never blocks: on an empty inbox it marks the actor parked
  and raises ``InboxParked``, which ends the actor's current run. The ``put`` that finds the actor parked
  (checked under the same lock, so no message is stranded) dispatches exactly one new run. At most one run of
  an actor is active at a time, so messages are still handled one at a time, in order.
- ``WorkerPool`` lends threads: a job takes an idle worker, or starts a new one if none is idle (never a
  bounded pool, so an actor blocked waiting on another parked actor cannot starve it). A worker idle for
  ``WORKER_IDLE_EXIT_S`` exits, so an idle process holds no workers.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["InboxParked", "ParkingInbox", "WorkerPool", "get_pool"]

logger = logging.getLogger(__name__)

#: How long a worker waits for another job before its thread exits.
WORKER_IDLE_EXIT_S = 0.5
#: Worker threads' name prefix (they belong to no one session).
WORKER_THREAD_PREFIX = "actor-worker"

Job = Callable[[], None]


class InboxParked(Exception):
    """Raised by ``ParkingInbox.get`` on an empty inbox: the actor's run ends and its thread is given back."""


class ParkingInbox:
    """An actor inbox (pykka's ``ActorInbox`` protocol) that parks the actor instead of blocking a thread.

    A deque and one lock: no ``queue.Queue`` (three conditions per actor), since ``get`` never waits.
    """

    __slots__ = ("_items", "_lock", "_parked", "wake")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._parked = False
        self.wake: Job | None = None  # set when the actor starts: runs the actor's loop again

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Enqueue a message; the put that finds the actor parked starts its next run."""
        with self._lock:
            self._items.append(item)
            if not self._parked:
                return
            self._parked = False
        assert self.wake is not None
        get_pool().run(self.wake)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next message, or ``InboxParked`` (and the actor parked) when there is none."""
        with self._lock:
            if not self._items:
                self._parked = True
                raise InboxParked
            return self._items.popleft()

    def empty(self) -> bool:
        """True when no message waits."""
        return not self._items

    def qsize(self) -> int:
        """Messages waiting."""
        return len(self._items)

    @property
    def parked(self) -> bool:
        """True while the actor holds no thread."""
        with self._lock:
            return self._parked


class _Worker:
    def __init__(self, pool: WorkerPool, job: Job) -> None:
        self._pool = pool
        self.jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.jobs.put(job)  # not a thread argument: Thread keeps its arguments alive until the thread ends
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"{WORKER_THREAD_PREFIX}-{next(pool.counter)}")

    def _loop(self) -> None:
        job: Job | None = self.jobs.get()
        while job is not None:
            try:
                job()
            except BaseException:  # a job must not kill the worker; actors report their own failures
                logger.exception("actor run failed outside its actor")
            job = None  # an idle worker must not keep its last actor (and all it references) alive
            job = self._next()

    def _next(self) -> Job | None:
        pool = self._pool
        with pool.lock:
            pool.idle.append(self)
        try:
            return self.jobs.get(timeout=pool.idle_exit_s)
        except queue.Empty:
            with pool.lock:
                if self in pool.idle:
                    pool.idle.remove(self)
                    pool.threads -= 1
                    return None
            return self.jobs.get()  # taken from the idle list just now: its job is on the way


class WorkerPool:
    """Threads lent to parked actors: an idle one if any, a new one otherwise."""

    def __init__(self, idle_exit_s: float = WORKER_IDLE_EXIT_S) -> None:
        self.idle_exit_s = idle_exit_s
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.threads = 0
        self.counter = itertools.count(1)

    def run(self, job: Job) -> None:
        """Run ``job`` on a worker thread (never blocks on other jobs)."""
        with self.lock:
            worker = self.idle.pop() if self.idle else None
            if worker is None:
                self.threads += 1
        if worker is not None:
            worker.jobs.put(job)
            return
        _Worker(self, job).thread.start()

    def thread_count(self) -> int:
        """Worker threads alive now (busy or idle)."""
        with self.lock:
            return self.threads


_POOL = WorkerPool()


def get_pool() -> WorkerPool:
    """The process's worker pool."""
    return _POOL
