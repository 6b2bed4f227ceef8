"""Helpers for the turn-loop and tool-router tests: real shells, real MCP servers, real hooks, a recorder.

Holds no tests itself; the test modules build their task contexts from these pieces.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from google.protobuf.message import Message

from actors.config import default_configuration
from actors.hooks import HookRunner
from actors.mcp import McpConnectionManager
from actors.providers import Message as ModelMessage
from actors.providers import ToolSpec
from actors.shell import CommandRunner, SessionShell, ShellSnapshotter
from actors.turn import TaskContext
from tests.hook_fixtures.support import hooks_doc, registry_for
from tests.mcp_servers.fixtures import toolbox

M = TypeVar("M", bound=Message)

BASH = shutil.which("bash") or "/bin/bash"
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
#: Bound on any one turn in these tests (generous: two shared cores, MCP servers importing the SDK).
TURN_BOUND_S = 20.0
#: Poll interval of bounded waits for an event.
POLL_S = 0.01


class Recorder:
    """A thread-safe ``emit`` sink that timestamps every message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Message]] = []

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.items.append((time.monotonic(), message))

    def of(self, kind: type[M]) -> list[M]:
        """The recorded messages of one type, in order."""
        with self._lock:
            return [m for _, m in self.items if isinstance(m, kind)]

    def times(self, kind: type[Message]) -> list[float]:
        """When each message of one type was emitted."""
        with self._lock:
            return [t for t, m in self.items if isinstance(m, kind)]

    def names(self) -> list[str]:
        """The type names of every message, in order."""
        with self._lock:
            return [type(m).__name__ for _, m in self.items]

    async def wait_for(self, kind: type[M], count: int = 1, bound_s: float = TURN_BOUND_S) -> list[M]:
        """Wait (bounded) until ``count`` messages of ``kind`` were emitted."""
        with trio.fail_after(bound_s):
            while len(self.of(kind)) < count:
                await trio.sleep(POLL_S)
        return self.of(kind)


@asynccontextmanager
async def session_shell(tmp_path: Path, recorder: Recorder, rc: str = "") -> AsyncIterator[SessionShell]:
    """A real bash ``SessionShell`` with a captured snapshot, HOME in ``tmp_path``."""
    home = tmp_path / "shell-home"
    home.mkdir(exist_ok=True)
    (home / ".bashrc").write_text(rc)
    snapshotter = ShellSnapshotter(session_id="turn-test", home=home, emit=recorder, shell=BASH, env=CLEAN_ENV)
    runner = CommandRunner(emit=recorder, shell=snapshotter.shell, env=CLEAN_ENV)
    shell = SessionShell(snapshotter, runner, cwd=tmp_path)
    with trio.fail_after(TURN_BOUND_S):
        snapshot = await shell.capture()
    try:
        yield shell
    finally:
        if snapshot is not None:
            snapshot.path.unlink(missing_ok=True)


@asynccontextmanager
async def mcp_toolbox(recorder: Recorder, name: str = "toolbox") -> AsyncIterator[McpConnectionManager]:
    """A started manager over one real toolbox server (tools mcp__toolbox__add, __sleep, __echo, ...)."""
    async with McpConnectionManager([toolbox(name)], recorder) as manager:
        with trio.fail_after(TURN_BOUND_S):
            await manager.start_all()
        yield manager


def hook_runner(tmp_path: Path, event: str, command: str, recorder: Recorder, matcher: str | None = None) -> HookRunner:
    """A real hook runner with one hook command for ``event`` (bash)."""
    folder = tmp_path / f"hooks-{event}"
    folder.mkdir()
    registry = registry_for(folder, hooks_doc(event, command, matcher=matcher))
    return HookRunner(registry, cwd=tmp_path, emit=recorder, shell_program=[BASH, "-c"], env=CLEAN_ENV)


def task_context(
    tmp_path: Path,
    recorder: Recorder,
    prompt: str,
    services: Mapping[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    **config: Any,
) -> TaskContext:
    """A hand-built context with the default configuration (fields overridden by ``config``)."""
    configuration = default_configuration(str(tmp_path), str(tmp_path / "supervisor-home"))
    for key, value in config.items():
        if key == "model":
            configuration.collaboration_mode.model = value
        elif key == "dynamic_tools":
            configuration.dynamic_tools.extend(value)
        else:
            setattr(configuration, key, value)
    return TaskContext(
        session_id="turn-test",
        task_id="task-1",
        input=prompt,
        configuration=configuration,
        traceparent="",
        emit=recorder,
        services=dict(services or {}),
        state=state if state is not None else {},
    )


class EchoAgents:
    """A small real agents service: spawns nothing, answers deterministically, records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.spawned = 0

    def specs(self) -> list[ToolSpec]:
        """The five agent tools."""
        any_object: dict[str, Any] = {"type": "object", "properties": {}}
        return [ToolSpec(name, f"agents: {name}", any_object)
                for name in ("spawn_agent", "send_input", "wait", "close_agent", "resume_agent")]

    async def spawn_agent(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """A new agent id per call."""
        self.calls.append(("spawn_agent", args))
        self.spawned += 1
        number = self.spawned
        await trio.lowlevel.checkpoint()
        return {"agent_id": f"agent-{number}", "nickname": f"worker-{number}"}

    async def send_input(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Acknowledge."""
        self.calls.append(("send_input", args))
        return {"submitted": True}

    async def wait(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Every asked agent is completed."""
        self.calls.append(("wait", args))
        ids = args.get("agent_ids", [])
        return {"status": {agent: "completed" for agent in ids}, "timed_out": False}

    async def close_agent(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Acknowledge."""
        self.calls.append(("close_agent", args))
        return {"closed": True}

    async def resume_agent(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Acknowledge."""
        self.calls.append(("resume_agent", args))
        return {"resumed": True}


def tool_messages(state: Mapping[str, Any]) -> list[ModelMessage]:
    """The tool-result messages of the conversation kept in ``state``."""
    return [m for m in state["conversation"] if m.role == "tool"]


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")
