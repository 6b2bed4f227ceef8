"""Subagents: the tree's registry and limits, agent control (spawn, input, wait, close, resume) and the model's
agent tools. A subagent is a session; this wing never imports ``session``: it talks to its ``AgentHost``.
"""

from __future__ import annotations

from actors.agents._config import AgentsConfig
from actors.agents._control import PARENT_WAIT_S, REQUESTS, close_all, registry_for
from actors.agents._host import AgentHost
from actors.agents._registry import AgentRegistry
from actors.agents._tools import AgentToolError, AgentTools, codex_status

__all__ = [
    "PARENT_WAIT_S",
    "REQUESTS",
    "AgentHost",
    "AgentRegistry",
    "AgentToolError",
    "AgentTools",
    "AgentsConfig",
    "close_all",
    "codex_status",
    "registry_for",
]
