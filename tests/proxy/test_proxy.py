"""End-to-end tests of the network proxy with real clients (httpx, curl) and real upstreams on loopback."""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from actors.proxy._policy import NetworkMode, NetworkPolicy
from actors.proxy._server import NonLoopbackBindError, ProxyServer, proxy_env
from protos.supervisor.v1 import network_pb2
from tests.helpers.proxy import (
    UPSTREAM_BODY,
    WAIT_S,
    StaticResolver,
    Upstream,
    get_request,
    make_proxy,
    parse_raw,
    raw_exchange,
    running,
    tls_contexts,
)

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def _policy_for(port: int, *extra: str, **kwargs: object) -> NetworkPolicy:
    """Allow the loopback upstream explicitly (a literal with its port) plus ``extra`` entries."""
    return NetworkPolicy(allowed_domains=(f"127.0.0.1:{port}", *extra), **kwargs)  # type: ignore[arg-type]


def _httpx_get(proxy_url: str, url: str, verify: ssl.SSLContext | bool = True) -> httpx.Response:
    with httpx.Client(proxy=proxy_url, verify=verify, timeout=WAIT_S, trust_env=False) as client:
        response = client.get(url)
        response.read()
        return response


async def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    with trio.fail_after(WAIT_S * 2):
        return await trio.run_process(
            [CURL, "-q", "-sS", "--max-time", str(WAIT_S), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )


async def test_allowed_http_request_through_httpx_and_curl() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        resolver = StaticResolver({"allowed.test": ["127.0.0.1"]})
        server, events, connector = make_proxy(_policy_for(up_port, "allowed.test"), resolver=resolver)
        async with running(server) as port:
            url = f"http://allowed.test:{up_port}/hello"
            response = await trio.to_thread.run_sync(_httpx_get, server.proxy_url(), url)
            assert response.status_code == 200
            assert response.content == UPSTREAM_BODY
            if CURL is not None:
                result = await _curl("-x", f"http://127.0.0.1:{port}", url)
                assert result.returncode == 0, result.stderr
                assert result.stdout == UPSTREAM_BODY
    assert connector.dials and all(d == ("127.0.0.1", up_port) for d in connector.dials)
    assert upstream.requests[0].headers["host"] == f"allowed.test:{up_port}"
    audits = events.of(network_pb2.NetworkConnectionAudit)
    assert audits and audits[0].decision == "allow" and audits[0].remote_ip == "127.0.0.1"
    assert audits[0].bytes_up > 0 and audits[0].bytes_down > len(UPSTREAM_BODY)
    assert audits[0].status_code == 200 and audits[0].protocol == "http"
    listening = events.of(network_pb2.NetworkProxyListening)
    assert listening and listening[0].port == port


async def test_connect_tunnel_to_https_upstream_with_trustme(tmp_path: Path) -> None:
    ca, server_ctx, client_ctx = tls_contexts("secure.test")
    upstream = Upstream(ssl_context=server_ctx)
    async with running(upstream) as up_port:
        resolver = StaticResolver({"secure.test": ["127.0.0.1"]})
        server, events, connector = make_proxy(_policy_for(up_port, "secure.test"), resolver=resolver)
        async with running(server) as port:
            url = f"https://secure.test:{up_port}/hello"
            response = await trio.to_thread.run_sync(_httpx_get, server.proxy_url(), url, client_ctx)
            assert response.status_code == 200 and response.content == UPSTREAM_BODY
            if CURL is not None:
                ca_file = tmp_path / "ca.pem"
                ca.cert_pem.write_to_path(str(ca_file))
                result = await _curl("--cacert", str(ca_file), "-x", f"http://127.0.0.1:{port}", url)
                assert result.returncode == 0, result.stderr
                assert result.stdout == UPSTREAM_BODY
    assert set(connector.dials) == {("127.0.0.1", up_port)}
    tunnels = [a for a in events.of(network_pb2.NetworkConnectionAudit) if a.protocol == "https"]
    assert tunnels and tunnels[0].method == "CONNECT"
    assert tunnels[0].bytes_up > 0 and tunnels[0].bytes_down > 0


async def test_denied_host_gets_403_with_reason_header_and_event() -> None:
    policy = NetworkPolicy(allowed_domains=("**.example.test",), denied_domains=("bad.example.test",))
    server, events, connector = make_proxy(policy)
    async with running(server) as port:
        response = await raw_exchange(port, get_request("http://bad.example.test/x"))
        assert response.status == 403
        assert response.headers["x-proxy-error"] == "blocked-by-denylist"
        miss = await raw_exchange(port, b"CONNECT elsewhere.test:443 HTTP/1.1\r\n\r\n")
        assert miss.status == 403 and miss.headers["x-proxy-error"] == "blocked-by-allowlist"
        if CURL is not None:
            result = await _curl("-x", f"http://127.0.0.1:{port}", "-o", "/dev/null", "-w", "%{http_code}",
                                 "http://bad.example.test/")
            assert result.stdout == b"403"
    assert connector.dials == []
    blocked = events.of(network_pb2.NetworkRequestBlocked)
    assert (blocked[0].host, blocked[0].port, blocked[0].reason, blocked[0].method, blocked[0].protocol) == (
        "bad.example.test", 80, "blocked-by-denylist", "GET", "http",
    )
    second = (blocked[1].reason, blocked[1].method, blocked[1].protocol)
    assert second == ("blocked-by-allowlist", "CONNECT", "https")


async def test_forwarding_strips_hop_by_hop_and_proxy_credentials() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, _, _ = make_proxy(_policy_for(up_port))
        async with running(server) as port:
            request = (
                f"GET http://127.0.0.1:{up_port}/hello?q=1 HTTP/1.1\r\nHost: spoofed.test\r\n"
                "Proxy-Authorization: Basic Zm9vOmJhcg==\r\nConnection: close, X-Secret-Hop\r\n"
                "X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
                "X-Kept: yes\r\n\r\n"
            ).encode()
            response = await raw_exchange(port, request)
    # a Basic credential naming no view is refused before anything is forwarded
    assert response.status == 407 and response.headers["x-proxy-error"] == "unknown-proxy-view"
    assert upstream.requests == []
    async with running(upstream) as up_port:
        server, _, _ = make_proxy(_policy_for(up_port))
        async with running(server) as port:
            request = (
                f"GET http://127.0.0.1:{up_port}/hello?q=1 HTTP/1.1\r\nHost: spoofed.test\r\n"
                "Connection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                "Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n"
            ).encode()
            response = await raw_exchange(port, request)
    assert response.status == 200 and response.body == UPSTREAM_BODY
    seen = upstream.requests[0]
    assert seen.target == "/hello?q=1"
    assert seen.headers["host"] == f"127.0.0.1:{up_port}"
    assert seen.headers["x-kept"] == "yes"
    for hop in ("x-secret-hop", "keep-alive", "proxy-connection", "te", "proxy-authorization"):
        assert hop not in seen.headers
    assert seen.headers["connection"] == "close"


async def test_keep_alive_chunked_bodies_and_redirects_are_relayed_not_followed() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, _, connector = make_proxy(_policy_for(up_port))
        async with running(server) as port:
            base = f"http://127.0.0.1:{up_port}"
            with trio.fail_after(WAIT_S):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    received = bytearray()
                    await stream.send_all(f"GET {base}/hello HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    while b"hello from upstream" not in received:
                        received += await stream.receive_some(65536)
                    body = b"a chunked request body"
                    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
                    post = f"POST {base}/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    await stream.send_all(post.encode() + chunked)
                    received.clear()
                    while body not in received:
                        received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 200")
            chunked_response = await raw_exchange(port, get_request(f"{base}/chunked"))
            assert chunked_response.status == 200
            assert chunked_response.headers["transfer-encoding"] == "chunked"
            assert b"part1-" in chunked_response.body and chunked_response.body.endswith(b"0\r\n\r\n")
            closing = await raw_exchange(port, get_request(f"{base}/close"))
            assert closing.status == 200 and closing.body == UPSTREAM_BODY
            redirect = await raw_exchange(port, get_request(f"{base}/redirect"))
            assert redirect.status == 302 and redirect.headers["location"] == "http://127.0.0.2/next"
    assert upstream.requests[1].method == "POST" and upstream.requests[1].body == b"a chunked request body"
    assert all(ip == "127.0.0.1" for ip, _ in connector.dials)  # the redirect target was never dialled


async def test_limited_and_off_modes() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, events, _ = make_proxy(_policy_for(up_port, mode=NetworkMode.LIMITED))
        async with running(server) as port:
            ok = await raw_exchange(port, get_request(f"http://127.0.0.1:{up_port}/hello"))
            assert ok.status == 200
            post = await raw_exchange(
                port, f"POST http://127.0.0.1:{up_port}/echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode()
            )
            assert post.status == 403 and post.headers["x-proxy-error"] == "blocked-by-method-policy"
            tunnel = await raw_exchange(port, f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode())
            assert tunnel.status == 403 and tunnel.headers["x-proxy-error"] == "blocked-by-method-policy"
            server.set_policy(_policy_for(up_port, mode=NetworkMode.OFF))
            off = await raw_exchange(port, get_request(f"http://127.0.0.1:{up_port}/hello"))
            assert off.status == 403 and off.headers["x-proxy-error"] == "blocked-by-proxy-disabled"
    reasons = [e.reason for e in events.of(network_pb2.NetworkRequestBlocked)]
    assert reasons == ["blocked-by-method-policy", "blocked-by-method-policy", "blocked-by-proxy-disabled"]


async def test_policy_update_takes_effect_on_next_connection() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        server, _, _ = make_proxy(NetworkPolicy(allowed_domains=("nothing.test",)))
        async with running(server) as port:
            url = f"http://127.0.0.1:{up_port}/hello"
            assert (await raw_exchange(port, get_request(url))).status == 403
            server.set_policy(_policy_for(up_port))
            assert (await raw_exchange(port, get_request(url))).status == 200
            server.set_policy(_policy_for(up_port, denied_domains=("127.0.0.0/8",)))
            denied = await raw_exchange(port, get_request(url))
            assert denied.status == 403 and denied.headers["x-proxy-error"] == "blocked-by-denylist"
            # from another thread, as the session actor would
            await trio.to_thread.run_sync(server.set_policy, _policy_for(up_port))
            assert (await raw_exchange(port, get_request(url))).status == 200
    assert len(upstream.requests) == 2


async def test_restart_binds_the_same_port_and_refuses_non_loopback() -> None:
    server, events, _ = make_proxy(NetworkPolicy())
    async with running(server) as first:
        assert (await raw_exchange(first, get_request("http://x.test/"))).status == 403
    async with running(server) as second:
        assert second == first
        assert (await raw_exchange(second, get_request("http://x.test/"))).status == 403
    assert [e.port for e in events.of(network_pb2.NetworkProxyListening)] == [first, first]
    explicit = ProxyServer(NetworkPolicy(), events, port=first)
    async with running(explicit) as third:
        assert third == first
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
        with pytest.raises(NonLoopbackBindError):
            ProxyServer(NetworkPolicy(), events, host=host)
    ProxyServer(NetworkPolicy(), events, host="0.0.0.0", allow_non_loopback=True)  # constructed, never bound
    ProxyServer(NetworkPolicy(), events, host="127.0.0.5")


async def test_idle_connection_is_closed_and_connection_limit_answers_503() -> None:
    server, _, _ = make_proxy(NetworkPolicy(), idle_timeout_s=0.3, max_connections=1)
    async with running(server) as port:
        with trio.fail_after(WAIT_S):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                while server.active_connections < 1:
                    await trio.sleep(0.01)
                second = await raw_exchange(port, b"")
                assert second.status == 503
                start = trio.current_time()
                assert await stream.receive_some(1024) == b""  # closed by the idle timeout
                assert trio.current_time() - start < WAIT_S


def test_proxy_env_points_every_variable_at_loopback() -> None:
    env = proxy_env(4321)
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        assert env[key] == "http://127.0.0.1:4321"
    assert env["NO_PROXY"] == "" and env["no_proxy"] == ""
    assert proxy_env(4321, "tok")["HTTPS_PROXY"] == "http://tok@127.0.0.1:4321"


async def test_response_head_too_large_from_upstream_is_502() -> None:
    async def evil_upstream(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 40000 + b"\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, evil_upstream, 0, host="127.0.0.1"))
        up_port = listeners[0].socket.getsockname()[1]
        server, events, _ = make_proxy(_policy_for(up_port))
        async with running(server) as port:
            response = await raw_exchange(port, get_request(f"http://127.0.0.1:{up_port}/"))
        nursery.cancel_scope.cancel()
    assert response.status == 502 and response.headers["x-proxy-error"] == "bad-upstream-response"
    assert events.of(network_pb2.NetworkConnectionAudit)[0].error == "bad-upstream-response"


def test_parse_raw_helper_handles_empty() -> None:
    assert parse_raw(b"").status == 0
