"""The append-only event log (SQLite, WAL) and the live fan-out of appended events.

Contract:
- ``append`` gives an event the session's next sequence number and the time, and commits it before it
  returns; only then does the hub publish it. So every event anyone saw is in the log, and a process killed
  with SIGKILL loses nothing that was acknowledged (WAL + synchronous=NORMAL survives a process crash).
- Session records are transactional: ``create_session`` writes a row in state ``starting``; ``commit_session``
  makes it visible; ``discard_session`` deletes it with its events. Rows still ``starting`` when a log is
  opened belong to a start that never finished and are discarded then.
- ``Subscription`` queues are bounded. A subscriber that falls behind is marked ``lagging`` and dropped from
  the live feed instead of growing memory; ``follow`` then reads what it missed from the log, so the client
  still gets every event exactly once, in order.
- ``follow_raw`` is the same contract for asyncio servers: it yields runs of ``(seq, serialized event)``
  (at most ``max_batch`` each) and never blocks a thread while waiting; an event is serialized once, however
  many subscribers it goes to.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # asyncio is only for the gateway's streams; importing it costs the CLI's cold start
    import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.core._bounds import shrink_message
from protos.supervisor.v1 import events_pb2

__all__ = [
    "HISTORY_KINDS",
    "READ_BATCH",
    "RUNNING",
    "STOPPED",
    "EventHub",
    "EventLog",
    "SessionClosed",
    "SessionRecord",
    "Subscription",
]

#: Live events held for one subscriber before it is marked lagging and served from the log instead.
SUBSCRIBER_QUEUE_LIMIT = 4096
#: Events read from the log per query while catching up.
READ_BATCH = 1000
#: Largest serialized event the log stores (and a stream sends): larger ones have their biggest text fields
#: cut with a marker (``shrink_message``); well under the gateway's 4 MiB message limit, so any one event can
#: always be sent, alone or in a batch.
MAX_EVENT_BYTES = 2 * 1024 * 1024
#: Largest sequence number SQLite can store (a signed 64-bit INTEGER).
MAX_SEQ = 2**63 - 1
#: Logged event kinds that make up a conversation's history (replayed on resume and fork).
HISTORY_KINDS = ("turn_started", "agent_message", "turn_completed", "compacted", "history_item")
#: How long a follower waits for a live event before checking whether its session ended.
FOLLOW_POLL_S = 0.5
#: SQLite busy timeout (another process holding the write lock).
BUSY_TIMEOUT_MS = 5000

STARTING, RUNNING, STOPPED = "starting", "running", "stopped"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  created REAL NOT NULL,
  forked_from TEXT NOT NULL DEFAULT '',
  fork_seq INTEGER NOT NULL DEFAULT -1,
  parent_id TEXT NOT NULL DEFAULT '',
  config BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  session_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind TEXT NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
"""


class SessionClosed(KeyError):
    """Raised by ``append`` for a session that is not open (never started, discarded, or stopped)."""


@dataclass
class SessionRecord:
    """One row of the sessions table."""

    session_id: str
    status: str
    created: float
    forked_from: str
    fork_seq: int
    parent_id: str
    config: bytes
    last_seq: int


class EventLog:
    """SQLite-backed, thread-safe event log shared by every session of a process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._next_seq: dict[str, int] = {}
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM events WHERE session_id IN (SELECT id FROM sessions WHERE status=?)",
                             (STARTING,))
            self._db.execute("DELETE FROM sessions WHERE status=?", (STARTING,))
            self._db.execute("UPDATE sessions SET status=? WHERE status=?", (STOPPED, RUNNING))
            self._db.execute("COMMIT")
        self.hub = EventHub()

    def close(self) -> None:
        """Close the database (pending subscribers are ended)."""
        self.hub.close_all()
        with self._lock:
            self._db.close()

    # --- sessions -------------------------------------------------------------------------------------
    def create_session(self, session_id: str, config: bytes, *, forked_from: str = "", fork_seq: int = -1,
                       parent_id: str = "", resume: bool = False) -> None:
        """Start a session's record (invisible until committed), or reopen a logged one for resume."""
        with self._lock:
            if resume:
                self._db.execute("UPDATE sessions SET status=?, config=? WHERE id=?", (RUNNING, config, session_id))
                row = self._db.execute("SELECT MAX(seq) FROM events WHERE session_id=?", (session_id,)).fetchone()
                self._next_seq[session_id] = (row[0] + 1) if row[0] is not None else 0
                return
            self._db.execute(
                "INSERT INTO sessions (id, status, created, forked_from, fork_seq, parent_id, config) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_id, STARTING, time.time(), forked_from, fork_seq, parent_id, config),
            )
            self._next_seq[session_id] = 0

    def commit_session(self, session_id: str) -> None:
        """Make a started session visible."""
        with self._lock:
            self._db.execute("UPDATE sessions SET status=? WHERE id=? AND status=?", (RUNNING, session_id, STARTING))

    def discard_session(self, session_id: str, *, resumed: bool = False) -> None:
        """Undo a failed start: a new session vanishes with its events; a failed resume keeps its history."""
        with self._lock:
            if resumed:
                self._db.execute("UPDATE sessions SET status=? WHERE id=?", (STOPPED, session_id))
            else:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM events WHERE session_id=?", (session_id,))
                self._db.execute("DELETE FROM sessions WHERE id=?", (session_id,))
                self._db.execute("COMMIT")
            self._next_seq.pop(session_id, None)

    def set_status(self, session_id: str, status: str) -> None:
        """Record a session's lifecycle state."""
        with self._lock:
            self._db.execute("UPDATE sessions SET status=? WHERE id=?", (status, session_id))

    def update_config(self, session_id: str, config: bytes) -> None:
        """Record a session's current configuration."""
        with self._lock:
            self._db.execute("UPDATE sessions SET config=? WHERE id=?", (config, session_id))

    def session(self, session_id: str) -> SessionRecord | None:
        """A session's record (``starting`` ones are invisible), or None."""
        rows = self._sessions("WHERE s.id=? AND s.status!=?", (session_id, STARTING))
        return rows[0] if rows else None

    def list_sessions(self, *, include_stopped: bool = True, limit: int = -1,
                      after: tuple[float, str] | None = None) -> list[SessionRecord]:
        """Visible sessions, newest first (ties by id, descending); at most ``limit`` (-1: all), only those
        after ``after`` (the ``(created, id)`` of the previous page's last one)."""
        where = "WHERE s.status!=?" if include_stopped else "WHERE s.status=?"
        args: tuple[object, ...] = (STARTING,) if include_stopped else (RUNNING,)
        if after is not None:
            where += " AND (s.created < ? OR (s.created = ? AND s.id < ?))"
            args = (*args, after[0], after[0], after[1])
        return self._sessions(where, args, limit)

    def _sessions(self, where: str, args: tuple[object, ...], limit: int = -1) -> list[SessionRecord]:
        sql = ("SELECT s.id, s.status, s.created, s.forked_from, s.fork_seq, s.parent_id, s.config, "
               "(SELECT MAX(seq) FROM events e WHERE e.session_id = s.id) FROM sessions s "
               f"{where} ORDER BY s.created DESC, s.id DESC LIMIT {int(limit)}")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [SessionRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], -1 if r[7] is None else r[7]) for r in rows]

    # --- events ---------------------------------------------------------------------------------------
    def append(self, session_id: str, event: events_pb2.Event) -> events_pb2.Event:
        """Stamp ``event`` with the next sequence number and the time, commit it, then publish it."""
        with self._lock:
            seq = self._next_seq.get(session_id)
            if seq is None:
                raise SessionClosed(f"session {session_id} is not open for appending")
            if not event.session_id:  # relayed copies keep the id of the subagent that emitted them
                event.session_id = session_id
            event.seq = seq
            event.time.FromNanoseconds(time.time_ns())  # GetCurrentTime goes through datetime: slower
            data = event.SerializeToString()
            if len(data) > MAX_EVENT_BYTES:
                shrink_message(event, MAX_EVENT_BYTES)
                data = event.SerializeToString()
            self._db.execute(
                "INSERT INTO events (session_id, seq, kind, data) VALUES (?, ?, ?, ?)",
                (session_id, seq, event.WhichOneof("msg") or "", data),
            )
            self._next_seq[session_id] = seq + 1
            # publish under the lock so that subscribers see events in sequence order
            self.hub.publish(session_id, event, data)
        return event

    def close_session(self, session_id: str) -> None:
        """No more events for this session: end its live subscriptions."""
        with self._lock:
            self._next_seq.pop(session_id, None)
        self.hub.end(session_id)

    def last_seq(self, session_id: str) -> int:
        """Sequence number of an open session's last event (-1 before the first), from memory."""
        with self._lock:
            return self._next_seq.get(session_id, 0) - 1

    def is_open(self, session_id: str) -> bool:
        """True while the session can still append events."""
        with self._lock:
            return session_id in self._next_seq

    def read(self, session_id: str, from_seq: int = 0, limit: int = READ_BATCH) -> list[events_pb2.Event]:
        """Logged events with ``seq >= from_seq``, in order, at most ``limit``."""
        return [events_pb2.Event.FromString(data) for _, data in self.read_raw(session_id, from_seq, limit)]

    def read_raw(self, session_id: str, from_seq: int = 0, limit: int = READ_BATCH) -> list[tuple[int, bytes]]:
        """Like ``read`` but ``(seq, serialized event)`` pairs, unparsed. An event logged larger than
        ``MAX_EVENT_BYTES`` (by an older version) comes out bounded, so it can still be sent."""
        if from_seq > MAX_SEQ:
            return []
        with self._lock:
            rows: list[tuple[int, bytes]] = self._db.execute(
                "SELECT seq, data FROM events WHERE session_id=? AND seq>=? ORDER BY seq LIMIT ?",
                (session_id, max(from_seq, 0), limit),
            ).fetchall()
        if any(len(data) > MAX_EVENT_BYTES for _, data in rows):
            rows = [(seq, _bounded(data)) for seq, data in rows]
        return rows

    async def follow_raw(self, session_id: str, from_seq: int = 0, *, live: bool = True,
                         max_batch: int = READ_BATCH) -> AsyncIterator[list[tuple[int, bytes]]]:
        """``follow`` for an asyncio loop: runs of ``(seq, serialized event)``, logged then live."""
        import asyncio

        ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        sub = self.hub.subscribe(session_id, raw=True, on_put=_LoopWaker.for_loop(loop).waker(ready)) if live else None
        next_seq = from_seq
        try:
            while True:  # the log first (and again whenever the live feed dropped us or left a gap)
                rows = self.read_raw(session_id, next_seq, max_batch)
                if rows:
                    next_seq = rows[-1][0] + 1
                    yield rows
                if len(rows) < max_batch:
                    if sub is None or not sub.lagging:
                        break
                    self.hub.unsubscribe(sub)
                    sub = self.hub.subscribe(session_id, raw=True, on_put=sub.on_put)
            if sub is None:
                return
            while True:
                run: list[tuple[int, bytes]] = []
                ended = gap = False
                while len(run) < max_batch:
                    try:
                        item = sub.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        ended = True
                        break
                    if item[0] < next_seq:
                        continue
                    if item[0] > next_seq:  # a gap can only come from lag: fill it from the log
                        gap = True
                        break
                    run.append(item)
                    next_seq = item[0] + 1
                if run:
                    yield run
                if ended or gap or sub.lagging or (not self.is_open(session_id) and sub.queue.empty()):
                    if sub.lagging and not ended:  # dropped from the live feed: rejoin, then catch up
                        self.hub.unsubscribe(sub)
                        sub = self.hub.subscribe(session_id, raw=True, on_put=sub.on_put)
                    while rows := self.read_raw(session_id, next_seq, max_batch):
                        next_seq = rows[-1][0] + 1
                        yield rows
                    if ended or not self.is_open(session_id):
                        return
                    continue
                if run:
                    continue
                ready.clear()
                if sub.queue.empty():
                    try:
                        await asyncio.wait_for(ready.wait(), FOLLOW_POLL_S)
                    except TimeoutError:
                        pass
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)

    def read_kinds(self, session_id: str, kinds: tuple[str, ...], up_to: int = -1) -> list[events_pb2.Event]:
        """Logged events of the given kinds (for history replay on resume and fork)."""
        marks = ",".join("?" * len(kinds))
        bound = "" if up_to < 0 else " AND seq<=?"
        args: tuple[object, ...] = (session_id, *kinds) + (() if up_to < 0 else (up_to,))
        with self._lock:
            rows = self._db.execute(
                f"SELECT data FROM events WHERE session_id=? AND kind IN ({marks}){bound} ORDER BY seq", args
            ).fetchall()
        return [events_pb2.Event.FromString(r[0]) for r in rows]

    def follow(self, session_id: str, from_seq: int = 0, *, stop: threading.Event | None = None,
               live: bool = True) -> Iterator[events_pb2.Event]:
        """Every event from ``from_seq``: logged ones, then live ones until the session ends or ``stop``."""
        sub = self.hub.subscribe(session_id) if live else None
        try:
            next_seq = from_seq
            while True:
                batch = self.read(session_id, next_seq)
                for event in batch:
                    yield event
                    next_seq = event.seq + 1
                if len(batch) < READ_BATCH:
                    break
            if sub is None:
                return
            while not (stop is not None and stop.is_set()):
                if sub.lagging:
                    # dropped from the live feed: catch up from the log, then rejoin
                    self.hub.unsubscribe(sub)
                    sub = self.hub.subscribe(session_id)
                    for missed in self._catch_up(session_id, next_seq):
                        yield missed
                        next_seq = missed.seq + 1
                    continue
                try:
                    item = sub.queue.get(timeout=FOLLOW_POLL_S)
                except queue.Empty:
                    if not self.is_open(session_id) and sub.queue.empty():
                        yield from self._catch_up(session_id, next_seq)
                        return
                    continue
                if item is None:  # the session ended
                    yield from self._catch_up(session_id, next_seq)
                    return
                event = item
                if event.seq < next_seq:
                    continue
                if event.seq > next_seq:  # a gap can only come from lag; fill it from the log
                    yield from self._catch_up(session_id, next_seq, until=event.seq)
                yield event
                next_seq = event.seq + 1
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)

    def _catch_up(self, session_id: str, from_seq: int, until: int | None = None) -> Iterator[events_pb2.Event]:
        next_seq = from_seq
        while True:
            batch = self.read(session_id, next_seq)
            for event in batch:
                if until is not None and event.seq >= until:
                    return
                yield event
                next_seq = event.seq + 1
            if len(batch) < READ_BATCH:
                return


def _bounded(data: bytes) -> bytes:
    if len(data) <= MAX_EVENT_BYTES:
        return data
    event = events_pb2.Event.FromString(data)
    shrink_message(event, MAX_EVENT_BYTES)
    return event.SerializeToString()


@dataclass
class Subscription:
    """A live feed of one session's events (bounded; ``None`` marks the end).

    A ``raw`` one receives ``(seq, serialized event)`` pairs; ``on_put`` (any thread) is called after each
    offer, so that an asyncio follower can sleep without a thread.
    """

    session_id: str
    queue: queue.Queue[Any]  # Event, (seq, bytes) when raw, or None at the end
    lagging: bool = False
    raw: bool = False
    on_put: Callable[[], None] | None = None


class _LoopWaker:
    """Wakes asyncio followers from publishing threads with one loop callback per burst, not one per follower."""

    _by_loop: dict[int, _LoopWaker] = {}
    _registry_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[asyncio.Event] = []

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> _LoopWaker:
        with cls._registry_lock:
            waker = cls._by_loop.get(id(loop))
            if waker is None or waker._loop is not loop:
                waker = cls._by_loop[id(loop)] = cls(loop)
            return waker

    def waker(self, event: asyncio.Event) -> Callable[[], None]:
        def wake() -> None:
            with self._lock:
                first = not self._ready
                self._ready.append(event)
            if first and not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._fire)
                except RuntimeError:  # the loop closed meanwhile: nobody left to wake
                    pass

        return wake

    def _fire(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for event in ready:
            event.set()


class EventHub:
    """Fan-out of appended events to live subscribers."""

    def __init__(self, limit: int = SUBSCRIBER_QUEUE_LIMIT) -> None:
        self._limit = limit
        self._subs: dict[str, set[int]] = {}
        self._by_id: dict[int, Subscription] = {}
        self._lock = threading.Lock()

    def subscribe(self, session_id: str, *, raw: bool = False, on_put: Callable[[], None] | None = None
                  ) -> Subscription:
        """Register a live subscriber."""
        sub = Subscription(session_id, queue.Queue(maxsize=self._limit), raw=raw, on_put=on_put)
        with self._lock:
            self._subs.setdefault(session_id, set()).add(id(sub))
            self._by_id[id(sub)] = sub
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Remove a subscriber."""
        with self._lock:
            self._by_id.pop(id(sub), None)
            ids = self._subs.get(sub.session_id)
            if ids is not None:
                ids.discard(id(sub))
                if not ids:
                    self._subs.pop(sub.session_id, None)

    def subscriber_count(self, session_id: str) -> int:
        """Live subscribers of a session."""
        with self._lock:
            return len(self._subs.get(session_id, ()))

    def publish(self, session_id: str, event: events_pb2.Event, data: bytes = b"") -> None:
        """Offer an event to every subscriber; one that is full is marked lagging and skipped."""
        with self._lock:
            subs = [self._by_id[i] for i in self._subs.get(session_id, ())]
        for sub in subs:
            if sub.lagging:
                continue
            try:
                sub.queue.put_nowait((event.seq, data or event.SerializeToString()) if sub.raw else event)
            except queue.Full:
                sub.lagging = True
            if sub.on_put is not None:
                sub.on_put()

    def end(self, session_id: str) -> None:
        """Tell every subscriber of a session that no more events come."""
        with self._lock:
            subs = [self._by_id[i] for i in self._subs.get(session_id, ())]
        for sub in subs:
            try:
                sub.queue.put_nowait(None)
            except queue.Full:
                sub.lagging = True
            if sub.on_put is not None:
                sub.on_put()

    def close_all(self) -> None:
        """End every subscription (log shutdown)."""
        with self._lock:
            session_ids = list(self._subs)
        for session_id in session_ids:
            self.end(session_id)
