"""The terminal view of a running session: live progress per agent, then a tree of agents (rich).

Fed with the root session's events (subagents' events arrive relayed, tagged with their agent path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from protos.supervisor.v1 import agents_pb2, events_pb2

__all__ = ["ProgressView"]

_STATUS_STYLE = {"pending": "dim", "running": "yellow", "completed": "green", "errored": "red", "closed": "dim"}


@dataclass
class _Agent:
    path: str
    nickname: str
    role: str = ""
    status: str = "pending"
    activity: str = ""
    started: float = field(default_factory=time.monotonic)
    duration_ms: int = 0
    tools: int = 0
    result: str = ""


class ProgressView:
    """Collects agent progress from events and renders it with rich."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self.console = console
        self.agents: dict[str, _Agent] = {"/root": _Agent("/root", "root", "root", "running")}
        self.trace_id = ""
        self.session_id = ""
        self.final_message = ""
        self._live = Live(self._table(), console=console, refresh_per_second=8, transient=True)

    def __enter__(self) -> ProgressView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def _agent(self, path: str) -> _Agent:
        if path not in self.agents:
            self.agents[path] = _Agent(path, path.rsplit("/", 1)[-1])
        return self.agents[path]

    def update(self, event: events_pb2.Event) -> None:
        """Fold one event into the view."""
        kind = event.WhichOneof("msg")
        path = event.agent_path or "/root"
        agent = self._agent(path)
        if kind == "session_configured" and path == "/root":
            self.session_id = event.session_id
            parts = event.traceparent.split("-")
            self.trace_id = parts[1] if len(parts) == 4 else ""
        elif kind == "agent_spawned":
            info = event.agent_spawned.agent
            child = self._agent(info.agent_path)
            child.nickname, child.role = info.nickname, info.role
        elif kind == "turn_started":
            agent.status, agent.started, agent.activity = "running", time.monotonic(), "thinking"
        elif kind == "tool_call_begin":
            agent.activity = f"{event.tool_call_begin.name}"
            agent.tools += 1
        elif kind == "tool_call_end":
            agent.activity = "thinking"
        elif kind == "agent_message" and not event.agent_message.delta:
            agent.result = event.agent_message.text
        elif kind == "turn_completed":
            agent.status, agent.activity = "completed", ""
            agent.duration_ms = event.turn_completed.duration_ms
            if path == "/root":
                self.final_message = event.turn_completed.last_agent_message
        elif kind == "turn_aborted":
            agent.status, agent.activity = "errored", event.turn_aborted.reason
            agent.duration_ms = int((time.monotonic() - agent.started) * 1000)
        elif kind == "agent_status_changed":
            info = event.agent_status_changed.agent
            if info.status == agents_pb2.AGENT_STATUS_CLOSED:
                self._agent(info.agent_path).status = "closed"
        self._live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title="agents", expand=False)
        for column in ("agent", "role", "status", "doing", "tools", "time"):
            table.add_column(column)
        for agent in self.agents.values():
            style = _STATUS_STYLE.get(agent.status, "")
            elapsed = agent.duration_ms / 1000 if agent.duration_ms else time.monotonic() - agent.started
            table.add_row(agent.path, agent.role, f"[{style}]{agent.status}[/]", agent.activity, str(agent.tools),
                          f"{elapsed:.2f}s")
        return table

    def render_tree(self) -> Any:
        """The final tree of agents with status, durations and results."""
        from rich.tree import Tree

        root = self.agents["/root"]
        ids = f"[dim]session {self.session_id}  trace {self.trace_id or '-'}[/]"
        tree = Tree(f"[bold]root[/] {self._line(root)}  {ids}")
        nodes = {"/root": tree}
        for path in sorted(self.agents, key=lambda p: (p.count("/"), p)):
            if path == "/root":
                continue
            parent = nodes.get(path.rsplit("/", 1)[0], tree)
            agent = self.agents[path]
            nodes[path] = parent.add(f"[bold]{agent.nickname}[/] ({agent.role or 'agent'}) {self._line(agent)}")
        return tree

    @staticmethod
    def _line(agent: _Agent) -> str:
        style = _STATUS_STYLE.get(agent.status, "")
        result = agent.result.strip().splitlines()[-1] if agent.result.strip() else ""
        if len(result) > 60:
            result = result[:57] + "..."
        return f"[{style}]{agent.status}[/] in {agent.duration_ms / 1000:.2f}s, {agent.tools} tool calls: {result}"
