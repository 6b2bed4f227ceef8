"""One proxy shared by a session and its subagents: per-view policy, approvals and events selected by the
token in the proxy URL (``Proxy-Authorization: Basic base64(token:)``), with real httpx and curl clients."""

from __future__ import annotations

import base64
import shutil

import httpx
import trio

from actors.proxy._approvals import Decision, RememberedApprovals
from actors.proxy._policy import NetworkPolicy
from protos.supervisor.v1 import network_pb2
from tests.helpers.proxy import (
    UPSTREAM_BODY,
    WAIT_S,
    Events,
    StaticResolver,
    Upstream,
    get_request,
    make_proxy,
    raw_exchange,
    running,
)

CURL = shutil.which("curl")


def _auth(token: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{token}:".encode()).decode() + "\r\n"


def _httpx_status(proxy_url: str, url: str) -> int:
    with httpx.Client(proxy=proxy_url, timeout=WAIT_S, trust_env=False) as client:
        return client.get(url).status_code


async def test_views_select_policy_events_and_agent_path_by_token() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        resolver = StaticResolver({"open.test": ["127.0.0.1"], "child-only.test": ["127.0.0.1"]})
        parent_policy = NetworkPolicy(allowed_domains=("open.test", f"127.0.0.1:{up_port}"))
        server, parent_events, _ = make_proxy(parent_policy, resolver=resolver)
        child_events = Events()
        child = server.add_view(
            NetworkPolicy(allowed_domains=("child-only.test", f"127.0.0.1:{up_port}")),
            emit=child_events,
            agent_path="/root/worker-1",
        )
        async with running(server) as port:
            open_url = f"http://open.test:{up_port}/hello"
            child_url = f"http://child-only.test:{up_port}/hello"
            assert (await raw_exchange(port, get_request(open_url))).status == 200
            assert (await raw_exchange(port, get_request(child_url))).status == 403
            assert (await raw_exchange(port, get_request(child_url, _auth(child.token)))).status == 200
            blocked = await raw_exchange(port, get_request(open_url, _auth(child.token)))
            assert blocked.status == 403 and blocked.headers["x-proxy-error"] == "blocked-by-allowlist"
            # real clients put the token in the proxy URL
            child_proxy = server.proxy_url(child.token)
            assert child_proxy == f"http://{child.token}@127.0.0.1:{port}"
            assert await trio.to_thread.run_sync(_httpx_status, child_proxy, child_url) == 200
            assert await trio.to_thread.run_sync(_httpx_status, child_proxy, open_url) == 403
            if CURL is not None:
                with trio.fail_after(WAIT_S * 2):
                    result = await trio.run_process(
                        [CURL, "-q", "-sS", "-x", child_proxy, child_url],
                        capture_stdout=True,
                        capture_stderr=True,
                        env={"PATH": "/usr/bin:/bin"},
                    )
                assert result.stdout == UPSTREAM_BODY
            # the token never reaches the upstream
            assert all("proxy-authorization" not in r.headers for r in upstream.requests)
            # a policy change of one view leaves the other alone
            server.set_policy(NetworkPolicy(), token=child.token)
            assert (await raw_exchange(port, get_request(child_url, _auth(child.token)))).status == 403
            assert (await raw_exchange(port, get_request(open_url))).status == 200
            assert server.remove_view(child.token)
            gone = await raw_exchange(port, get_request(child_url, _auth(child.token)))
            assert gone.status == 407 and gone.headers["x-proxy-error"] == "unknown-proxy-view"
            assert not server.remove_view(server.root_view.token)
    child_audits = child_events.of(network_pb2.NetworkConnectionAudit)
    assert child_audits and {a.agent_path for a in child_audits} == {"/root/worker-1"}
    assert {e.agent_path for e in child_events.of(network_pb2.NetworkRequestBlocked)} == {"/root/worker-1"}
    assert all(a.agent_path == "" for a in parent_events.of(network_pb2.NetworkConnectionAudit))


async def test_anonymous_requests_refused_when_every_view_needs_a_token() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",))
        server, _, connector = make_proxy(policy, allow_anonymous=False)
        async with running(server) as port:
            url = f"http://127.0.0.1:{up_port}/hello"
            anonymous = await raw_exchange(port, get_request(url))
            assert anonymous.status == 407 and "proxy-authenticate" in anonymous.headers
            wrong = await raw_exchange(port, get_request(url, _auth("not-a-view")))
            assert wrong.status == 407
            garbage = await raw_exchange(port, get_request(url, "Proxy-Authorization: Basic %%%\r\n"))
            assert garbage.status == 407
            ok = await raw_exchange(port, get_request(url, _auth(server.root_view.token)))
            assert ok.status == 200
            env = server.env(server.root_view.token)
            assert env["HTTP_PROXY"] == f"http://{server.root_view.token}@127.0.0.1:{port}"
    assert len(connector.dials) == 1


async def test_views_share_remembered_approvals_when_injected() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        remembered = RememberedApprovals()
        calls: list[str] = []

        async def approve(host: str, protocol: str, port: int) -> Decision:
            calls.append(host)
            return Decision.APPROVE_FOR_SESSION

        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",))
        server, _, _ = make_proxy(
            policy, resolver=StaticResolver({"ask.test": ["127.0.0.1"]}), approver=approve, remembered=remembered
        )
        child = server.add_view(policy, approver=approve, remembered=remembered, agent_path="/root/w")
        async with running(server) as port:
            url = f"http://ask.test:{up_port}/hello"
            assert (await raw_exchange(port, get_request(url))).status == 200
            assert (await raw_exchange(port, get_request(url, _auth(child.token)))).status == 200
    assert calls == ["ask.test"]
