"""Subagents: child sessions supervised by the session that spawned them, and the agent tools.

A subagent *is* a session (``SessionSupervisor``), started as a supervised child of its parent, so this module
does not import ``session`` (a cycle): the parent hands in the session class.

Contract:
- One ``AgentRegistry`` per agent tree (the root creates it; descendants share it): limits on concurrent agents
  (``max_threads``, default 6) and depth (``max_depth``, default 1). A slot is reserved before a spawn and
  released if the spawn fails half-way, when the agent's turn ends (completed or errored) or when it is closed;
  new input re-reserves one.
- A subagent inherits its parent's cwd, shell snapshot (no capture process; commands run through the parent's
  snapshot by a runner of its own, so its exec events are its own), network proxy (the parent's environment),
  approvals, hooks runner and MCP connections (shared, no second process), and trace (its spans are children of
  the spawning span; an untraced parent gets an untraced child).
- Its events are logged under its own id and relayed into its parent's log tagged with its agent path
  (streamed deltas are not relayed, to keep the parent's log bounded).
- ``wait`` needs no polling: status changes wake waiters through the shared trio loop.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.agents._config import DEFAULT_MAX_DEPTH, DEFAULT_MAX_THREADS
from actors.core import get_host
from actors.errors import LimitExceeded, UnknownSession
from protos.supervisor.v1 import agents_pb2

__all__ = ["AgentRecord", "AgentRegistry"]

logger = logging.getLogger(__name__)

#: Upper bound on any wait for agents.
MAX_WAIT_S = 3600.0
FINAL = (agents_pb2.AGENT_STATUS_COMPLETED, agents_pb2.AGENT_STATUS_ERRORED, agents_pb2.AGENT_STATUS_CLOSED)
_NAMES = ("ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "john", "ken", "dennis", "leslie",
          "margaret", "niklaus", "robin", "tony", "radia", "shafi", "tim", "vint", "whitfield")


@dataclass
class AgentRecord:
    """The registry's view of one subagent."""

    info: agents_pb2.AgentInfo
    parent_id: str
    holds_slot: bool = True
    turn_started: float = 0.0


@dataclass
class AgentRegistry:
    """Agents of one tree: limits, status, and waiting without polling."""

    max_threads: int = DEFAULT_MAX_THREADS
    max_depth: int = DEFAULT_MAX_DEPTH
    records: dict[str, AgentRecord] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _names: Any = field(default_factory=itertools.count)
    _reserved: int = 0
    _holding: int = 0  # records with holds_slot, counted so that a spawn is O(1) in the tree's size
    _changed: trio.Event | None = None

    @property
    def slots_used(self) -> int:
        """Agents currently counting against ``max_threads``."""
        with self._lock:
            return self._reserved + self._holding

    def reserve(self, depth: int) -> None:
        """Reserve a slot for a new agent at ``depth`` or raise ``LimitExceeded``."""
        if depth > self.max_depth:
            raise LimitExceeded(f"agent depth limit reached: a subagent at depth {depth} exceeds max_depth "
                                f"{self.max_depth}")
        with self._lock:
            used = self._reserved + self._holding
            if used >= self.max_threads:
                raise LimitExceeded(f"agent limit reached: {used} of max_threads {self.max_threads} agents are "
                                    "running; wait for one or close one")
            self._reserved += 1

    def unreserve(self) -> None:
        """Give back a reservation whose spawn failed."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    def add(self, info: agents_pb2.AgentInfo, parent_id: str) -> AgentRecord:
        """Turn a reservation into a registered agent."""
        with self._lock:
            self._reserved = max(0, self._reserved - 1)
            record = AgentRecord(info=info, parent_id=parent_id, turn_started=time.monotonic())
            old = self.records.get(info.agent_id)
            self._holding += 1 - (1 if old is not None and old.holds_slot else 0)
            self.records[info.agent_id] = record
        self._notify()
        return record

    def nickname(self) -> str:
        """A short name unique within the tree."""
        n = next(self._names)
        base = _NAMES[n % len(_NAMES)]
        return base if n < len(_NAMES) else f"{base}-{n // len(_NAMES) + 1}"

    def get(self, agent_id: str) -> AgentRecord:
        """The record of an agent or ``UnknownSession``."""
        with self._lock:
            record = self.records.get(agent_id)
        if record is None:
            raise UnknownSession(f"no subagent {agent_id!r}")
        return record

    def children_of(self, parent_id: str) -> list[AgentRecord]:
        """Direct children of a session."""
        with self._lock:
            return [r for r in self.records.values() if r.parent_id == parent_id]

    def descendants_of(self, session_id: str) -> list[AgentRecord]:
        """Every agent below a session."""
        with self._lock:
            records = list(self.records.values())
        out, frontier = [], {session_id}
        while frontier:
            level = [r for r in records if r.parent_id in frontier]
            out.extend(level)
            frontier = {r.info.agent_id for r in level}
        return out

    def set_status(self, agent_id: str, status: int, message: str = "") -> tuple[agents_pb2.AgentInfo, int] | None:
        """Record a status change (any thread); frees the slot on a final status. Returns (info, previous)."""
        with self._lock:
            record = self.records.get(agent_id)
            if record is None:
                return None
            previous = record.info.status
            record.info.status = status  # type: ignore[assignment]
            if status == agents_pb2.AGENT_STATUS_RUNNING:
                record.turn_started = time.monotonic()
                self._holding += 0 if record.holds_slot else 1
                record.holds_slot = True
            if status in FINAL:
                self._holding -= 1 if record.holds_slot else 0
                record.holds_slot = False
                record.info.duration_ms = int((time.monotonic() - record.turn_started) * 1000)
                if message:
                    record.info.last_message = message
            info = agents_pb2.AgentInfo()
            info.CopyFrom(record.info)
        self._notify()
        return info, previous

    def try_reactivate(self, agent_id: str) -> None:
        """New input for a finished agent needs a slot again (or ``LimitExceeded``)."""
        record = self.get(agent_id)
        with self._lock:
            if record.holds_slot:
                return
            used = self._reserved + self._holding
            if used >= self.max_threads:
                raise LimitExceeded(f"agent limit reached: {used} of max_threads {self.max_threads}")
            record.holds_slot = True
            self._holding += 1

    def _notify(self) -> None:
        if self._changed is None:  # nobody waits (a waiter creates the event before it reads the records)
            return
        host = get_host()

        def wake() -> None:
            if self._changed is not None:
                self._changed.set()
                self._changed = None

        if host.in_loop_thread():
            wake()
        else:
            host.run_sync_soon(wake)

    async def wait(self, agent_ids: list[str], timeout_s: float) -> tuple[list[agents_pb2.AgentInfo], bool]:
        """On the trio loop: the agents already final, else the first to become final, or timed out."""
        return await self._wait_until(agent_ids, timeout_s, need=1)

    async def wait_all(self, agent_ids: list[str], timeout_s: float) -> tuple[list[agents_pb2.AgentInfo], bool]:
        """On the trio loop: wait until every agent is final (or the timeout); returns those final."""
        return await self._wait_until(agent_ids, timeout_s, need=len(agent_ids))

    async def _wait_until(self, agent_ids: list[str], timeout_s: float, need: int
                          ) -> tuple[list[agents_pb2.AgentInfo], bool]:
        if not agent_ids:
            return [], False
        with trio.move_on_after(min(timeout_s, MAX_WAIT_S)):
            while True:
                changed = self._changed
                if changed is None:
                    changed = self._changed = trio.Event()
                finished = self._final(agent_ids)
                if len(finished) >= need:
                    return finished, False
                await changed.wait()
        return self._final(agent_ids), True

    def _final(self, agent_ids: list[str]) -> list[agents_pb2.AgentInfo]:
        with self._lock:
            out = []
            for agent_id in agent_ids:
                record = self.records.get(agent_id)
                if record is None:
                    raise UnknownSession(f"no subagent {agent_id!r}")
                if record.info.status in FINAL:
                    info = agents_pb2.AgentInfo()
                    info.CopyFrom(record.info)
                    out.append(info)
            return out
