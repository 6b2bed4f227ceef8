"""Spawning stdio MCP server processes, and the servers a `run` spawns before anything heavy is imported.

Contract:
- ``spawn_server(config)`` starts one stdio server in its own process group (pgid == pid) with pipes for
  stdin, stdout and stderr, and the environment the MCP SDK gives its servers (``DEFAULT_INHERITED_ENV_VARS``
  from ours, then the configured ``env``). A command that cannot be started raises ``OSError``.
- ``prespawn(configs)`` spawns every enabled eager stdio server at once (``supervisor.py run``/``exec`` call
  it at process start, before the runtime is imported, so a server's own start-up overlaps ours). The
  transport of a connection whose configuration matches (same command, args, env and cwd) takes the waiting
  process with ``take_prespawned`` instead of spawning one; each process is taken at most once.
- They are spawned before the process watchdog exists (``actors.core``: importing it costs most of the cold
  start), so they lack its owner variable; ``supervisor.py`` registers their groups with it
  (``prespawned_pids``) as soon as it is installed, and the transport that takes one registers it again.
- ``discard_prespawned()`` kills and reaps the ones nobody took (the session failed to start, a server was
  disabled by a later layer); it also runs at interpreter exit.
- This module imports neither trio nor the MCP SDK: it runs while the process is still starting.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from actors.mcp._config import McpServerConfig

__all__ = ["DEFAULT_INHERITED_ENV_VARS", "ServerProcess", "discard_prespawned", "prespawn", "prespawned_pids",
           "server_env", "spawn_server", "take_prespawned"]

#: What the MCP SDK's stdio client passes on of our environment (POSIX), before the configured ``env``.
DEFAULT_INHERITED_ENV_VARS = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
#: Bound on reaping a discarded process after SIGKILL.
DISCARD_REAP_TIMEOUT_S = 2.0

SpawnKey = tuple[str, tuple[str, ...], tuple[tuple[str, str], ...], str | None]


@dataclass(eq=False)
class ServerProcess:
    """A spawned server: the process and our ends of its pipes (raw fds, owned by whoever takes it)."""

    process: subprocess.Popen[bytes]
    stdin_fd: int
    stdout_fd: int
    stderr_fd: int

    @property
    def pid(self) -> int:
        """The server's pid (also its process group id)."""
        return self.process.pid

    def close_fds(self) -> None:
        """Close our ends of the pipes (idempotent)."""
        for name in ("stdin_fd", "stdout_fd", "stderr_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)


def server_env(config: McpServerConfig, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the inherited safe variables, the configured ``env``, then ``extra``."""
    env = {key: value for key in DEFAULT_INHERITED_ENV_VARS
           if (value := os.environ.get(key)) is not None and not value.startswith("()")}
    env.update(config.env)
    env.update(extra or {})
    return env


def _key(config: McpServerConfig) -> SpawnKey:
    assert config.command is not None
    return (config.command, tuple(config.args), tuple(sorted(config.env.items())), config.cwd)


def spawn_server(config: McpServerConfig, extra_env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start one stdio server (own process group, piped stdio); raises ``OSError`` when it cannot start."""
    assert config.command is not None
    pipes = [os.pipe() for _ in range(3)]  # (read, write) for stdin, stdout, stderr
    child_ends = (pipes[0][0], pipes[1][1], pipes[2][1])
    ours = (pipes[0][1], pipes[1][0], pipes[2][0])
    try:
        process = subprocess.Popen(
            [config.command, *config.args], stdin=child_ends[0], stdout=child_ends[1], stderr=child_ends[2],
            env=server_env(config, extra_env), cwd=config.cwd, start_new_session=True, close_fds=True)
    except BaseException:
        for fd in (*child_ends, *ours):
            os.close(fd)
        raise
    for fd in child_ends:
        os.close(fd)
    return ServerProcess(process, *ours)


_lock = threading.Lock()
_waiting: dict[SpawnKey, list[ServerProcess]] = {}


def prespawn(configs: Iterable[McpServerConfig]) -> int:
    """Spawn every enabled eager stdio server of ``configs`` now; returns how many were spawned.

    A server that cannot be spawned is skipped: its connection spawns it again and reports the error.
    """
    spawned = 0
    for config in configs:
        if not config.enabled or config.start != "eager" or config.command is None or config.name_error:
            continue
        try:
            server = spawn_server(config)
        except OSError:
            continue
        with _lock:
            _waiting.setdefault(_key(config), []).append(server)
        spawned += 1
    return spawned


def take_prespawned(config: McpServerConfig) -> ServerProcess | None:
    """The process spawned in advance for this configuration, if one is waiting (each is taken once)."""
    if config.command is None:
        return None
    with _lock:
        queue = _waiting.get(_key(config))
        return queue.pop(0) if queue else None


def prespawned_pids() -> list[int]:
    """Pids (process group ids) of the processes spawned in advance that no connection took yet."""
    with _lock:
        return [server.pid for queue in _waiting.values() for server in queue]


def discard_prespawned() -> None:
    """Kill and reap every process spawned in advance that no connection took."""
    with _lock:
        left = [server for queue in _waiting.values() for server in queue]
        _waiting.clear()
    for server in left:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        server.close_fds()
        try:
            server.process.wait(DISCARD_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass


atexit.register(discard_prespawned)
