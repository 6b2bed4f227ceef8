"""A client in another language (Node.js, @grpc/grpc-js + @grpc/proto-loader) drives SessionService."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from actors.gateway import GatewayServer, serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
NODE_TIMEOUT_S = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GatewayServer]:
    runtime = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "home", managed_dir=tmp_path / "etc"))
    gateway = serve(runtime)  # the default listener: <home>/run/supervisor.sock
    try:
        yield gateway
    finally:
        gateway.stop()
        runtime.shutdown()


def test_node_client_starts_streams_and_stops(server: GatewayServer, tmp_path: Path) -> None:
    """Over the unix socket, with the owner token on every call; the same call without it is UNAUTHENTICATED."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and tests/node/node_modules are required: run `make test` (it runs npm ci)")
    assert server.address.startswith("unix:")
    proc = subprocess.run([node, "client.mjs", server.address, str(ROOT), str(tmp_path)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False,
                          env={**os.environ, "SUPERVISOR_TOKEN": server.token})
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["first_kind"] == "session_configured"
    assert seen["first_seq"] == 0
    assert seen["client_name"] == "node-test"
    assert seen["last_seq"] >= 1
    assert seen["not_found_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert seen["unauthenticated_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
