"""The main job of `make run`: a root session fans out to 8 subagents in parallel, offline.

Everything is embedded and local: the `playbook` provider plays `examples/fanout.toml` (no model, no network),
each worker runs a shell command through the session's shell snapshot and network proxy (curl to a tiny HTTP
server on 127.0.0.1 that this script starts) and calls `word_count` on the bundled MCP server
(`examples/mcp_example_server.py`). The terminal shows live progress per agent, then the tree of agents with
status, durations and the trace id. `--json` prints the JSONL event stream (codex exec --json shape) instead.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import supervisor  # noqa: E402

PROMPT = "summarise what each worker found"
WORKERS = 8


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok from the local demo server\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def config_toml(demo_port: int) -> str:
    """The demo's configuration (the user layer of a throwaway home)."""
    example_server = json.dumps([str(ROOT / "examples" / "mcp_example_server.py")])
    return f"""
model_provider = "playbook"
playbook = {json.dumps(str(ROOT / "examples" / "fanout.toml"))}
approval_policy = "never"

[agents]
max_threads = {WORKERS}
max_depth = 1

[agent_types.worker]
role = "worker"
instructions = "Run your shell command and your MCP tool, then report both results."

[network]
mode = "limited"
allowed_domains = ["127.0.0.1:{demo_port}"]
allow_local_binding = true

[shell]
program = "/bin/bash"

[mcp_servers.example]
command = {json.dumps(sys.executable)}
args = {example_server}
required = true
startup_timeout_sec = 60
"""


def main(argv: list[str] | None = None) -> int:
    """Run the fan-out once in a throwaway home; returns the CLI's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        os.environ["DEMO_URL"] = f"http://127.0.0.1:{port}/"
        with tempfile.TemporaryDirectory(prefix="session-supervisor-") as home:
            Path(home, "config.toml").write_text(config_toml(port))
            mode = ["--json"] if "--json" in argv else []
            return supervisor.main(["--home", home, "run", "--trace", *mode, PROMPT])
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    raise SystemExit(main())
