"""`supervisor.py run` spawns its stdio MCP servers before it imports the runtime, and the session uses them.

The real CLI runs in a subprocess; a ``sitecustomize`` probe records this process's children at the moment
``actors.runtime`` starts to import, and the server records its own pid.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tests.cli.test_run_exit import cli

#: Bound on waiting for a killed server to disappear.
GONE_TIMEOUT_S = 10.0

#: An MCP server that writes its pid, answers the handshake and one tool, and outlives its stdin (so only a
#: kill ends it).
SERVER = r'''
import json, os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\n")
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "p"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "probe", "inputSchema": {"type": "object"}}]}
    else:
        result = {}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
time.sleep(600)
'''

PROBE = r'''
import importlib.abc, os, sys
from pathlib import Path

class _Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "actors.runtime":
            kids = [p for t in Path("/proc/self/task").iterdir() for p in (t / "children").read_text().split()]
            with open(os.environ["PROBE_OUT"], "a") as f:
                f.write(" ".join(kids) + "\n")
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, _Probe())
'''


def _setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str], list[str]]:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "server.py").write_text(SERVER)
    pids = tmp_path / "server-pids"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(PROBE)
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
           "PROBE_OUT": str(tmp_path / "children-at-runtime-import")}
    server = (f"mcp_servers.probe={{command={json.dumps(sys.executable)}, "
              f"args=[\"-I\", {json.dumps(str(tmp_path / 'server.py'))}, {json.dumps(str(pids))}], required=true}}")
    return home, pids, env, ["-c", server]


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_the_server_is_spawned_before_the_runtime_import_and_used_once(tmp_path: Path) -> None:
    home, pids, env, server = _setup(tmp_path)
    done = cli(home, "run", "--json", *server, "hello", env=env)
    assert done.returncode == 0, done.stderr  # the server is required: the session started only with it
    [pid] = [int(p) for p in pids.read_text().split()]  # spawned once: the session took the early process
    children = (tmp_path / "children-at-runtime-import").read_text().split()
    assert str(pid) in children  # already running when the runtime began to import
    assert _gone(pid)


def test_a_failed_start_kills_the_early_server(tmp_path: Path) -> None:
    home, _, env, server = _setup(tmp_path)
    done = cli(home, "run", *server, "-c", 'model_provider="openai"', "-c", 'model_providers.openai.env_key="NOPE_KEY"',
               "hello", env={**env, "NOPE_KEY": ""})
    assert done.returncode == 2, done.stderr
    [children] = (tmp_path / "children-at-runtime-import").read_text().splitlines()
    spawned = [int(p) for p in children.split()]
    assert len(spawned) == 1  # the early server, never taken by a session
    assert _gone(spawned[0])
