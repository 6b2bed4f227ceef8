"""Helpers shared by the hook tests: hooks documents, registries, an event sink, process checks."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from actors.hooks import HookRegistry, discover
from protos.supervisor.v1 import hooks_pb2

BASH = ["/bin/bash", "-c"]
FIXTURES = Path(__file__).parent
#: Bound on any single hook-run test; generous for a loaded 2-core machine.
RUN_BOUND_S = 10.0
#: How long a killed process may take to disappear from /proc.
PROCESS_GONE_BOUND_S = 5.0

REPORT_SCRIPT = """#!/bin/bash
cat > /dev/null
context="$1 root=%s claude_root=%s project=%s"
printf '{"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"'"$context"'"}}\\n' \\
  "${PLUGIN_ROOT-unset}" "${CLAUDE_PLUGIN_ROOT-unset}" "${CLAUDE_PROJECT_DIR-unset}"
"""


def write_json(path: Path, data: object) -> Path:
    """Write ``data`` as JSON, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_script(path: Path, text: str) -> Path:
    """Write an executable script."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def hooks_doc(event: str, *commands: str, matcher: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """A Claude-Code-shaped hooks document: one matcher group with these commands."""
    hooks: list[dict[str, Any]] = []
    for command in commands:
        entry: dict[str, Any] = {"type": "command", "command": command}
        if timeout is not None:
            entry["timeout"] = timeout
        hooks.append(entry)
    group: dict[str, Any] = {"hooks": hooks}
    if matcher is not None:
        group["matcher"] = matcher
    return {"hooks": {event: [group]}}


def registry_for(tmp_path: Path, doc: dict[str, Any]) -> HookRegistry:
    """Discover ``doc`` as a user layer's hooks.json (it must load without warnings)."""
    write_json(tmp_path / "layer/hooks.json", doc)
    registry, warnings = discover([("user", tmp_path / "layer")])
    assert warnings == []
    return registry


class Events:
    """A thread-safe event sink that records what the runner emitted."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self.lock = threading.Lock()
        self.started = threading.Event()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.items.append(message)
        if isinstance(message, hooks_pb2.HookStarted):
            self.started.set()

    def of(self, kind: type[Message]) -> list[Any]:
        with self.lock:
            return [m for m in self.items if isinstance(m, kind)]


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie awaiting its new parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def wait_until(predicate: Callable[[], bool], bound_s: float) -> bool:
    """Poll ``predicate`` until true or ``bound_s`` passed; return its last value."""
    deadline = time.monotonic() + bound_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a bounded deadline
    return True


def read_pid(path: Path) -> int:
    """The pid a hook wrote into ``path`` (waits, bounded, for the file)."""
    assert wait_until(lambda: path.exists() and path.read_text().strip() != "", PROCESS_GONE_BOUND_S)
    return int(path.read_text())
