"""Benchmark: the network proxy beside a direct loopback connection, measured in the same run.

Run: ``.venv/bin/python bench/bench_proxy.py`` (about 20-30 s on 2 cores). Figures:
- CONNECT tunnel throughput vs direct, 1 connection and 50 concurrent connections (goal >= 0.5x);
- the tunnel's splice(2) relay vs its copy-through-Python fallback, 1 connection;
- small HTTP request latency (fresh connection each, p50) through the proxy (absolute-form GET) vs direct,
  and the added p50 (goal <= 1 ms added).
The proxy runs in this process on trio (as in a session); the sink/HTTP origin and the clients run in
separate helper processes (this script with ``--role``) using blocking sockets, so the proxy's own cost is
what differs between the two columns. Runs are interleaved (direct, proxied, ...) and the best is kept.
Prints a table and one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio

from actors.proxy import (
    SPLICE_AVAILABLE,
    NetworkPolicy,
    ProxyServer,
)
from actors.proxy import _tunnel as _proxy_tunnel

ROUNDS = 5
TUNNEL_BYTES = 256 * 1024 * 1024
SEND_CHUNK = 256 * 1024
CONCURRENCY = (1, 50)
LATENCY_REQUESTS = 400
HELPER_TIMEOUT_S = 60.0
SMALL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


# --- helper process: origin servers -------------------------------------------------------------------
class _Sink(socketserver.BaseRequestHandler):
    """Reads everything until EOF, then answers "ok"."""

    def handle(self) -> None:
        buf = bytearray(SEND_CHUNK)
        while self.request.recv_into(buf):
            pass
        self.request.sendall(b"ok")


class _Http(socketserver.BaseRequestHandler):
    """Answers one small HTTP response per connection."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        self.request.sendall(SMALL_RESPONSE)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def run_servers() -> None:
    """Serve a sink and an HTTP origin on 127.0.0.1; print their ports; exit when stdin closes."""
    sink = _Server(("127.0.0.1", 0), _Sink)
    http = _Server(("127.0.0.1", 0), _Http)
    for server in (sink, http):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"sink": sink.server_address[1], "http": http.server_address[1]}), flush=True)
    sys.stdin.read()


# --- helper process: clients --------------------------------------------------------------------------
def _connect(target: int, proxy: int, tunnel: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy or target))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if proxy and tunnel:
        sock.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % target)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"CONNECT refused: {head!r}")
    return sock


def _upload(target: int, proxy: int, nbytes: int, barrier: threading.Barrier) -> None:
    sock = _connect(target, proxy, tunnel=True)
    payload = memoryview(b"x" * SEND_CHUNK)
    barrier.wait()
    sent = 0
    with sock:
        while sent < nbytes:
            n = min(SEND_CHUNK, nbytes - sent)
            sock.sendall(payload[:n])
            sent += n
        sock.shutdown(socket.SHUT_WR)
        if sock.recv(16) != b"ok":
            raise RuntimeError("sink did not confirm")


def run_throughput(target: int, proxy: int, conns: int) -> float:
    """Bytes per second uploading TUNNEL_BYTES over ``conns`` connections (through ``proxy`` if non-zero)."""
    barrier = threading.Barrier(conns + 1)
    per = TUNNEL_BYTES // conns
    threads = [threading.Thread(target=_upload, args=(target, proxy, per, barrier)) for _ in range(conns)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return per * conns / (time.perf_counter() - t0)


def run_latency(target: int, proxy: int) -> list[float]:
    """Seconds per small GET on a fresh connection (absolute-form through ``proxy`` if non-zero)."""
    request = (
        b"GET http://127.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % target
        if proxy
        else b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    times = []
    for _ in range(LATENCY_REQUESTS):
        t0 = time.perf_counter()
        with _connect(target, proxy, tunnel=False) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        times.append(time.perf_counter() - t0)
        if not data.endswith(b"ok"):
            raise RuntimeError(f"bad response {data[:100]!r}")
    return times


# --- the benchmark ------------------------------------------------------------------------------------
def helper(*args: str) -> list[str]:
    """The command line of a helper process."""
    return [sys.executable, str(Path(__file__).resolve()), "--role", *args]


async def client(*args: str) -> object:
    """Run a client helper and return its JSON result."""
    result = await trio.run_process(helper(*args), capture_stdout=True, check=True)
    return json.loads(result.stdout)


async def bench() -> list[tuple[str, float, float, str, bool]]:
    """Measure every figure; rows are (figure, ours, baseline, unit, higher_is_better)."""
    servers = subprocess.Popen(helper("servers"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert servers.stdout is not None
        ports = json.loads(servers.stdout.readline())
        sink, http = ports["sink"], ports["http"]
        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{sink}", f"127.0.0.1:{http}"))
        proxy = ProxyServer(policy, lambda _event: None)
        rows = []
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            with trio.fail_after(HELPER_TIMEOUT_S * 2):
                for conns in CONCURRENCY:
                    best = {0: 0.0, port: 0.0}
                    for _ in range(ROUNDS):
                        for via in (0, port):
                            rate = await client("throughput", str(sink), str(via), str(conns))
                            best[via] = max(best[via], float(rate))  # type: ignore[arg-type]
                    label = f"CONNECT tunnel throughput, {conns} connection{'s' if conns > 1 else ''}"
                    rows.append((label, best[port] / 1e6, best[0] / 1e6, "MB/s", True))
                copy_best = {True: 0.0, False: 0.0}
                for _ in range(ROUNDS):
                    for use_splice in (False, True):
                        _proxy_tunnel.SPLICE_AVAILABLE = use_splice and SPLICE_AVAILABLE
                        rate = await client("throughput", str(sink), str(port), "1")
                        copy_best[use_splice] = max(copy_best[use_splice], float(rate))  # type: ignore[arg-type]
                _proxy_tunnel.SPLICE_AVAILABLE = SPLICE_AVAILABLE
                label = "tunnel relay: splice(2) vs copy through Python, 1 conn"
                rows.append((label, copy_best[True] / 1e6, copy_best[False] / 1e6, "MB/s", True))
                p50 = {0: float("inf"), port: float("inf")}
                for _ in range(ROUNDS):
                    for via in (0, port):
                        times = await client("latency", str(http), str(via))
                        p50[via] = min(p50[via], statistics.median(times) * 1000)  # type: ignore[arg-type]
                rows.append(("small request latency p50 (fresh connection)", p50[port], p50[0], "ms", False))
                added = p50[port] - p50[0]
                rows.append(("added latency p50 (baseline column: the 1 ms goal)", added, 1.0, "ms", False))
            nursery.cancel_scope.cancel()
        return rows
    finally:
        servers.stdin.close()  # type: ignore[union-attr]
        servers.wait(HELPER_TIMEOUT_S)


def main() -> None:
    """Entry point: the benchmark, or a helper role."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", nargs="*")
    role = parser.parse_args().role
    if role:
        kind, *rest = role
        if kind == "servers":
            run_servers()
        elif kind == "throughput":
            print(json.dumps(run_throughput(int(rest[0]), int(rest[1]), int(rest[2]))))
        elif kind == "latency":
            print(json.dumps(run_latency(int(rest[0]), int(rest[1]))))
        return
    t0 = time.perf_counter()
    rows = trio.run(bench)
    print(f"{'figure':56} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for figure, ours, baseline, unit, _higher in rows:
        ratio = ours / baseline if baseline else 0.0
        print(f"{figure:56} {ours:10.3f} {baseline:10.3f} {ratio:7.2f}  {unit}")
    for figure, ours, baseline, unit, _higher in rows:
        ratio = ours / baseline if baseline else 0.0
        record = {"bench": "proxy", "figure": figure, "ours": round(ours, 4), "baseline": round(baseline, 4),
                  "ratio": round(ratio, 3), "unit": unit}  # fmt: skip
        print(json.dumps(record))
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
