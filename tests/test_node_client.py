"""A client in another language (Node.js, @grpc/grpc-js + @grpc/proto-loader) drives SessionService."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE_TIMEOUT_S = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    runtime = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "home", managed_dir=tmp_path / "etc"))
    gateway = serve(runtime, "127.0.0.1:0")
    try:
        yield gateway.port
    finally:
        gateway.stop()
        runtime.shutdown()


def test_node_client_starts_streams_and_stops(server: int, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and tests/node/node_modules are required: run `make test` (it runs npm ci)")
    proc = subprocess.run([node, "client.mjs", f"127.0.0.1:{server}", str(ROOT), str(tmp_path)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["first_kind"] == "session_configured"
    assert seen["first_seq"] == 0
    assert seen["client_name"] == "node-test"
    assert seen["last_seq"] >= 1
    assert seen["not_found_code"] == grpc.StatusCode.NOT_FOUND.value[0]
