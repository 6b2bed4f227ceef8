"""The ``[agents]`` and ``[agent_types.NAME]`` tables, parsed once into a typed object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.errors import ConfigError

__all__ = ["DEFAULT_MAX_DEPTH", "DEFAULT_MAX_THREADS", "ON_PARENT_END", "AgentsConfig"]

#: Codex's default for concurrently open subagents (`agents.max_threads`).
DEFAULT_MAX_THREADS = 6
#: Codex's default nesting depth: subagents may not spawn their own.
DEFAULT_MAX_DEPTH = 1
ON_PARENT_END = ("wait", "cancel", "detach")


@dataclass(frozen=True)
class AgentsConfig:
    """How a tree of subagents behaves (``[agents]``) and the agent types it may spawn (``[agent_types]``)."""

    #: Most subagents open at once in the whole tree.
    max_threads: int = DEFAULT_MAX_THREADS
    #: Deepest nesting allowed (a root's children are depth 1).
    max_depth: int = DEFAULT_MAX_DEPTH
    #: What happens to running children when the parent's turn ends: wait (default), cancel or detach.
    on_parent_end: str = "wait"
    #: Whether a finished child starts a turn of its idle parent (the notification event is always logged).
    wake_parent_turn: bool = False
    #: ``[agent_types.NAME]`` tables (role, instructions, model, restart).
    agent_types: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, agents: Mapping[str, Any], agent_types: Mapping[str, Any]) -> AgentsConfig:
        """Parse the two tables (an unknown ``on_parent_end`` falls back to ``wait``, as before)."""
        policy = str(agents.get("on_parent_end", "wait"))
        return cls(
            max_threads=int(agents.get("max_threads", DEFAULT_MAX_THREADS)),
            max_depth=int(agents.get("max_depth", DEFAULT_MAX_DEPTH)),
            on_parent_end=policy if policy in ON_PARENT_END else "wait",
            wake_parent_turn=bool(agents.get("wake_parent_turn", False)),
            agent_types={str(k): v for k, v in agent_types.items()},
        )

    @classmethod
    def from_loaded(cls, loaded: Any) -> AgentsConfig:
        """From a ``LoadedConfig`` (or the defaults when there is none)."""
        if loaded is None:
            return cls()
        return cls.from_tables(loaded.table("agents"), loaded.table("agent_types"))

    def agent_type(self, name: str) -> dict[str, Any]:
        """The ``[agent_types.NAME]`` table (role, instructions, model, restart) or a clear error."""
        if not name:
            return {}
        table = self.agent_types.get(name)
        if not isinstance(table, Mapping):
            known = ", ".join(sorted(self.agent_types)) or "none configured"
            raise ConfigError(f"agent_type: unknown agent type {name!r} (known: {known})")
        return dict(table)
