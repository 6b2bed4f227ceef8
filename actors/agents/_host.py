"""What agent control needs of a parent session: the ``AgentHost`` Protocol.

Agent control decides *when and what* (limits, nicknames, derived configuration, the registry, policies); the
session decides *how* a child session is built (``start_subagent``). This module is the contract between the two
and imports nothing above it, so neither side imports the other (Temporal's ``_interceptor.py`` shape).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import pykka
from google.protobuf.message import Message

from actors.agents._config import AgentsConfig
from actors.agents._registry import AgentRegistry
from actors.core import EventLog, Restart
from protos.supervisor.v1 import config_pb2, events_pb2

__all__ = ["AgentHost"]


class AgentHost(Protocol):
    """A parent session as agent control sees it (implemented by ``SessionSupervisor``)."""

    session_id: str
    configuration: config_pb2.SessionConfiguration

    @property
    def agent_path(self) -> str:
        """The parent's path in its tree (``/root``, ``/root/ada``)."""
        ...

    @property
    def history(self) -> list[events_pb2.Event]:
        """The parent's conversation so far (what ``fork_context`` hands to a child)."""
        ...

    @property
    def log(self) -> EventLog:
        """The event log the tree writes to."""
        ...

    @property
    def agents_config(self) -> AgentsConfig:
        """The tree's ``[agents]`` and ``[agent_types]`` settings, parsed once."""
        ...

    @property
    def agent_registry(self) -> AgentRegistry:
        """The tree's registry (created by the root, shared by descendants)."""
        ...

    def emit(self, msg: Message, *, task_id: str = "", traceparent: str = "") -> None:
        """Append an event to the parent's stream."""
        ...

    def child_ref(self, child_id: str) -> pykka.ActorRef[Any] | None:
        """A live child's ref, or None."""
        ...

    def stop_children(self, child_ids: Iterable[str] | None = None) -> list[str]:
        """Stop the given children (newest first); returns the ids stopped."""
        ...

    def start_subagent(self, agent_id: str, configuration: config_pb2.SessionConfiguration, *, start_kind: str,
                       nickname: str, history: list[events_pb2.Event], restart: Restart,
                       traceparent: str = "") -> pykka.ActorRef[Any]:
        """Start a child session (new or resumed) under the parent's supervision; returns its ref."""
        ...
