"""Network mode limited: inside the proxy namespace only the proxy's port answers (real sockets, real bwrap)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import trio

from actors.sandbox import Network, ProxyNamespace, SandboxPolicy, bwrap_argv, proxy_address

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

RUN_BOUND_S = 20.0
BASH = shutil.which("bash") or "/bin/bash"


class Counter:
    """A listener on 127.0.0.1:0 that counts connections and answers each with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.sock = trio.socket.socket()

    async def start(self) -> int:
        await self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    async def serve(self) -> None:
        with self.sock:
            while True:
                conn, _ = await self.sock.accept()
                self.count += 1
                with conn:
                    await conn.send(f"hello from {self.name}\n".encode())


async def _run(argv: list[str]) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(RUN_BOUND_S):
        return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


def test_proxy_address_reads_the_proxy_variables() -> None:
    assert proxy_address({"HTTP_PROXY": "http://tok@127.0.0.1:3128"}) == ("127.0.0.1", 3128)
    assert proxy_address({"PATH": "/bin"}) is None


async def test_only_the_proxy_is_reachable_inside(tmp_path: Path) -> None:
    proxy, other = Counter("proxy"), Counter("other")
    proxy_port, other_port = await proxy.start(), await other.start()
    netns = ProxyNamespace.create("127.0.0.1", proxy_port)
    policy = SandboxPolicy(False, network=Network.LIMITED)
    py = sys.executable
    escapes = [
        [py, "-c", f"import socket; socket.create_connection(('127.0.0.1', {other_port}), timeout=2)"],
        ["curl", "-s", "--noproxy", "*", "--max-time", "2", f"http://127.0.0.1:{other_port}/"],
        [BASH, "-c", f"exec 3<>/dev/tcp/127.0.0.1/{other_port}"],
    ]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(netns.serve)
            nursery.start_soon(proxy.serve)
            nursery.start_soon(other.serve)
            for argv in escapes:
                done = await _run(bwrap_argv(policy, argv, tmp_path, netns_path=netns.path))
                assert done.returncode != 0, argv
            reach = [py, "-c", f"import socket; print(socket.create_connection(('127.0.0.1', {proxy_port}), "
                               "timeout=5).makefile().readline().strip())"]
            done = await _run(bwrap_argv(policy, reach, tmp_path, netns_path=netns.path))
            assert done.stdout.decode().strip() == "hello from proxy", done.stderr
            nursery.cancel_scope.cancel()
    finally:
        netns.close()
    assert (other.count, proxy.count, netns.forwarded) == (0, 1, 1)
