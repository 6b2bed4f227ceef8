"""Bypass corpus and DNS rebinding: every hostile target is refused before anything is dialled.

NETWORK SAFETY: the proxy here only ever gets a resolver that answers from a table (never real DNS) and a
connector that records every (ip, port) and refuses anything outside 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import base64
import itertools

import pytest
import trio

from actors.proxy._policy import NetworkPolicy
from actors.proxy._server import system_connect
from protos.supervisor.v1 import network_pb2
from tests.helpers.proxy import (
    UPSTREAM_BODY,
    RecordingConnector,
    StaticResolver,
    Upstream,
    get_request,
    make_proxy,
    raw_exchange,
    running,
)

LOCAL = "blocked-local-address"
DENY = "blocked-by-denylist"
BAD = "bad-request"  # refused as malformed (400), which is a block too

HTTP_TARGETS: list[tuple[str, str]] = [
    ("127.0.0.1", LOCAL),
    ("2130706433", LOCAL),
    ("0x7f.1", LOCAL),
    ("0177.0.0.1", LOCAL),
    ("127.1", LOCAL),
    ("0x7f000001", LOCAL),
    ("017700000001", LOCAL),
    ("0.0.0.0", LOCAL),
    ("0", LOCAL),
    ("[::]", LOCAL),
    ("[::1]", LOCAL),
    ("[0:0:0:0:0:0:0:1]", LOCAL),
    ("[::ffff:127.0.0.1]", LOCAL),
    ("[0:0:0:0:0:ffff:7f00:1]", LOCAL),
    ("[::ffff:169.254.169.254]", LOCAL),
    ("[::ffff:0:7f00:1]", LOCAL),
    ("[::127.0.0.1]", LOCAL),
    ("169.254.169.254", LOCAL),
    ("169.254.0.1", LOCAL),
    ("100.64.0.1", LOCAL),
    ("100.127.255.254", LOCAL),
    ("10.0.0.1", LOCAL),
    ("172.16.0.1", LOCAL),
    ("192.168.1.1", LOCAL),
    ("224.0.0.1", LOCAL),
    ("255.255.255.255", LOCAL),
    ("[fc00::1]", LOCAL),
    ("[fdff:ffff::1]", LOCAL),
    ("[fe80::1]", LOCAL),
    ("[ff02::1]", LOCAL),
    ("[64:ff9b::127.0.0.1]", LOCAL),
    ("[64:ff9b::a9fe:a9fe]", LOCAL),
    ("[2002:7f00:1::]", LOCAL),
    ("[2002:a9fe:a9fe::1]", LOCAL),
    ("localhost", LOCAL),
    ("localhost.", LOCAL),
    ("LOCALHOST", LOCAL),
    ("LocalHost%2E", LOCAL),
    ("%6c%6f%63%61%6c%68%6f%73%74", LOCAL),
    ("127%2e0%2e0%2e1", LOCAL),
    ("foo.localhost", LOCAL),
    ("internal.test", LOCAL),
    ("metadata.test", LOCAL),
    ("mixed.test", LOCAL),
    ("v6local.test", LOCAL),
    ("mapped.test", LOCAL),
    ("nat64.test", LOCAL),
    ("scoped.test", LOCAL),
    ("127.0.0.1.nip.test", LOCAL),
    ("evil.test", DENY),
    ("deep.sub.evil.test", DENY),
    ("EVIL.test.", DENY),
    ("%65vil.test", DENY),
    ("ranged.test", DENY),
    ("[fe80::1%25eth0]", BAD),
    ("allowed.test@127.0.0.1", BAD),
    ("127.0.0.1%2500", BAD),
    ("1.2.3.999", BAD),
]

CONNECT_TARGETS: list[tuple[str, str]] = [
    ("127.0.0.1:443", LOCAL),
    ("[::1]:22", LOCAL),
    ("2130706433:443", LOCAL),
    ("localhost:443", LOCAL),
    ("internal.test:443", LOCAL),
    ("[::ffff:169.254.169.254]:80", LOCAL),
    ("evil.test:443", DENY),
    ("::1:443", BAD),
    ("127.0.0.1", BAD),
]

HOSTILE_DNS = {
    "internal.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],  # one good answer does not excuse a bad one
    "v6local.test": ["::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "scoped.test": ["fe80::1%eth0"],
    "127.0.0.1.nip.test": ["127.0.0.1"],
    "ranged.test": ["8.8.4.4"],
}

CORPUS_POLICY = NetworkPolicy(allowed_domains=("*",), denied_domains=("**.evil.test", "8.8.4.0/24"))


def _auth(token: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{token}:".encode()).decode() + "\r\n"


async def test_bypass_corpus_is_fully_blocked_and_nothing_is_dialled() -> None:
    assert len(HTTP_TARGETS) + len(CONNECT_TARGETS) >= 30
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, events, connector = make_proxy(CORPUS_POLICY, resolver=StaticResolver(dict(HOSTILE_DNS)))
        misses: list[str] = []
        async with running(server) as port:
            requests = [(f"http://{t}/", get_request(f"http://{t}/"), e) for t, e in HTTP_TARGETS]
            requests += [(t, f"CONNECT {t} HTTP/1.1\r\n\r\n".encode(), e) for t, e in CONNECT_TARGETS]
            for label, request, expected in requests:
                response = await raw_exchange(port, request)
                status, reason = response.status, response.headers.get("x-proxy-error", "")
                if expected == BAD:
                    if status != 400:
                        misses.append(f"{label}: expected 400, got {status} {reason}")
                elif (status, reason) != (403, expected):
                    misses.append(f"{label}: expected 403 {expected}, got {status} {reason}")
            assert misses == []
            assert connector.dials == []
            # positive control on the same server: a view that allows the loopback upstream explicitly
            control = server.add_view(NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",)))
            ok = await raw_exchange(port, get_request(f"http://127.0.0.1:{up_port}/", _auth(control.token)))
            assert ok.status == 200 and ok.body == UPSTREAM_BODY
    assert connector.dials == [("127.0.0.1", up_port)]
    blocked = events.of(network_pb2.NetworkRequestBlocked)
    assert len(blocked) == sum(1 for _, e in HTTP_TARGETS + CONNECT_TARGETS if e != BAD)


class Sentinel:
    """A listener on 127.0.0.2 that counts connections it accepts (a rebinding target)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.accepted = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.2")

        async def count(stream: trio.SocketStream) -> None:
            self.accepted += 1
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(count, listeners, handler_nursery=nursery)


@pytest.mark.parametrize("use_default_connector", [False, True])
async def test_dns_rebinding_cannot_redirect_to_the_sentinel(use_default_connector: bool) -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        sentinel = Sentinel(up_port)  # same port, other loopback address
        async with running(sentinel):  # type: ignore[arg-type]
            answers = itertools.chain([["127.0.0.1"]], itertools.repeat(["127.0.0.2"]))
            resolver = StaticResolver(
                {"rebind.test": lambda: next(answers), "multi.test": ["127.0.0.1", "127.0.0.2"]}
            )
            policy = NetworkPolicy(allowed_domains=("rebind.test", "multi.test", f"127.0.0.1:{up_port}"))
            recording = RecordingConnector()

            async def connector(ip: str, port: int) -> trio.abc.HalfCloseableStream:
                if use_default_connector:
                    recording.dials.append((ip, port))
                    return await system_connect(ip, port)
                return await recording(ip, port)

            server, _, _ = make_proxy(policy, resolver=resolver, connector=connector)
            async with running(server) as port:
                first = await raw_exchange(port, get_request(f"http://rebind.test:{up_port}/hello"))
                assert first.status == 200 and first.body == UPSTREAM_BODY
                assert resolver.lookups == ["rebind.test"]  # one lookup per request, none at dial time
                tunnel = await raw_exchange(port, f"CONNECT rebind.test:{up_port} HTTP/1.1\r\n\r\n".encode())
                assert tunnel.status == 403 and tunnel.headers["x-proxy-error"] == LOCAL
                again = await raw_exchange(port, get_request(f"http://rebind.test:{up_port}/hello"))
                assert again.status == 403 and again.headers["x-proxy-error"] == LOCAL
                multi = await raw_exchange(port, get_request(f"http://multi.test:{up_port}/hello"))
                assert multi.status == 403 and multi.headers["x-proxy-error"] == LOCAL
        assert sentinel.accepted == 0
        assert recording.dials == [("127.0.0.1", up_port)]
        assert len(upstream.requests) == 1


async def test_proxy_refuses_to_dial_itself_even_with_local_binding_allowed() -> None:
    server, _, connector = make_proxy(NetworkPolicy(allowed_domains=("*",), allow_local_binding=True))
    async with running(server) as port:
        for target in (f"127.0.0.1:{port}", f"0.0.0.0:{port}", f"[::1]:{port}", f"127.0.0.2:{port}"):
            looped = await raw_exchange(port, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            assert looped.status == 403 and looped.headers["x-proxy-error"] == LOCAL, target
    assert connector.dials == []
