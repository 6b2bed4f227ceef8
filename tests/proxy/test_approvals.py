"""Approvals on allowlist misses: one question per key for concurrent requests, remembered session approvals,
timeouts, and the session-side broker resolved from other threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import trio

from actors.proxy._approvals import ApprovalBroker, ApprovalGate, Decision, RememberedApprovals
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

CONCURRENT_REQUESTS = 10
#: Short approval timeout for the timeout test.
SHORT_APPROVAL_TIMEOUT_S = 0.2


class CountingApprover:
    """Answers ``decision`` once released; counts the questions it got."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.calls: list[tuple[str, str, int]] = []
        self.release = trio.Event()

    async def __call__(self, host: str, protocol: str, port: int) -> Decision:
        self.calls.append((host, protocol, port))
        await self.release.wait()
        return self.decision


async def _wait_until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` until it is truthy, failing after ``WAIT_S``."""
    with trio.fail_after(WAIT_S):
        while not predicate():
            await trio.sleep(0.005)


async def test_one_approval_for_ten_concurrent_requests_then_remembered_for_session() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        approver = CountingApprover(Decision.APPROVE_FOR_SESSION)
        remembered = RememberedApprovals()
        resolver = StaticResolver({"ask.test": ["127.0.0.1"]})
        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",))
        server, events, _ = make_proxy(policy, resolver=resolver, approver=approver, remembered=remembered)
        url = f"http://ask.test:{up_port}/hello"
        async with running(server) as port:
            statuses: list[int] = []

            async def one() -> None:
                statuses.append((await raw_exchange(port, get_request(url))).status)

            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENT_REQUESTS):
                    nursery.start_soon(one)
                gate = server.root_view.gate
                await _wait_until(lambda: gate.waiting("ask.test", "http", up_port) == CONCURRENT_REQUESTS, "waiters")
                approver.release.set()
            assert statuses == [200] * CONCURRENT_REQUESTS
            assert approver.calls == [("ask.test", "http", up_port)]
            again = await raw_exchange(port, get_request(url))
            assert again.status == 200 and again.body == UPSTREAM_BODY
            assert len(approver.calls) == 1
            assert ("ask.test", "http", up_port) in remembered
            # a different protocol is a different question
            tunnel = await raw_exchange(port, f"CONNECT ask.test:{up_port} HTTP/1.1\r\n\r\n".encode())
            assert tunnel.status == 200
            assert approver.calls[-1] == ("ask.test", "https", up_port)
    decisions = {a.decision for a in events.of(network_pb2.NetworkConnectionAudit)}
    assert decisions == {"approve_for_session"}


async def test_approve_once_asks_again_and_deny_blocks() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        approver = CountingApprover(Decision.APPROVE_ONCE)
        approver.release.set()
        resolver = StaticResolver({"ask.test": ["127.0.0.1"]})
        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",))
        server, events, connector = make_proxy(policy, resolver=resolver, approver=approver)
        url = f"http://ask.test:{up_port}/hello"
        async with running(server) as port:
            assert (await raw_exchange(port, get_request(url))).status == 200
            assert (await raw_exchange(port, get_request(url))).status == 200
            assert len(approver.calls) == 2
            approver.decision = Decision.DENY
            denied = await raw_exchange(port, get_request(url))
            assert denied.status == 403 and denied.headers["x-proxy-error"] == "blocked-by-allowlist"
            # never asked for local-address or denylist blocks
            server.set_policy(NetworkPolicy(denied_domains=("deny.test",)))
            assert (await raw_exchange(port, get_request("http://deny.test/"))).status == 403
            assert (await raw_exchange(port, get_request("http://10.0.0.1/"))).status == 403
            assert len(approver.calls) == 3
    assert len(connector.dials) == 2
    assert [e.reason for e in events.of(network_pb2.NetworkRequestBlocked)] == [
        "blocked-by-allowlist",
        "blocked-by-denylist",
        "blocked-local-address",
    ]


async def test_approval_timeout_denies() -> None:
    approver = CountingApprover(Decision.APPROVE_ONCE)  # never released
    server, events, connector = make_proxy(
        NetworkPolicy(), approver=approver, approval_timeout_s=SHORT_APPROVAL_TIMEOUT_S
    )
    async with running(server) as port:
        start = trio.current_time()
        response = await raw_exchange(port, get_request("http://slow.test/"))
        elapsed = trio.current_time() - start
    assert response.status == 403 and response.headers["x-proxy-error"] == "blocked-by-allowlist"
    assert SHORT_APPROVAL_TIMEOUT_S * 0.9 <= elapsed < WAIT_S
    assert connector.dials == []
    assert events.of(network_pb2.NetworkRequestBlocked)[0].host == "slow.test"


async def test_no_approver_blocks_misses_immediately_and_failing_approver_denies() -> None:
    gate = ApprovalGate(None)
    assert await gate.decide("a.test", "http", 80) is Decision.DENY

    async def broken(host: str, protocol: str, port: int) -> Decision:
        raise RuntimeError("approver crashed")

    failing = ApprovalGate(broken)
    assert await failing.decide("a.test", "http", 80) is Decision.DENY
    assert failing.questions_asked == 1


async def test_shared_remembered_set_spans_gates() -> None:
    remembered = RememberedApprovals()
    approver = CountingApprover(Decision.APPROVE_FOR_SESSION)
    approver.release.set()
    parent = ApprovalGate(approver, remembered)
    child = ApprovalGate(approver, remembered)
    assert await parent.decide("x.test", "https", 443) is Decision.APPROVE_FOR_SESSION
    assert await child.decide("x.test", "https", 443) is Decision.APPROVE_FOR_SESSION
    assert len(approver.calls) == 1


async def test_broker_emits_and_resolves_from_another_thread() -> None:
    events = Events()
    broker = ApprovalBroker(events, agent_path="/root")
    answers: list[Decision] = []

    async def ask() -> None:
        answers.append(await broker("api.test", "https", 443))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await _wait_until(broker.pending_ids, "question")
        requested = events.of(network_pb2.NetworkApprovalRequested)
        assert len(requested) == 1
        assert (requested[0].host, requested[0].protocol, requested[0].port) == ("api.test", "https", 443)
        assert requested[0].agent_path == "/root"
        approval_id = requested[0].id
        result: list[bool] = []
        thread = threading.Thread(target=lambda: result.append(broker.resolve(approval_id, "approve_once")))
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        assert result == [True]
    assert answers == [Decision.APPROVE_ONCE]
    assert broker.resolve(approval_id, Decision.DENY) is False  # already answered
    assert broker.pending_ids() == []


async def test_broker_deny_without_asking_and_deny_all_and_withdrawal() -> None:
    events = Events()
    broker = ApprovalBroker(events, deny_without_asking=True)
    assert await broker("a.test", "http", 80) is Decision.DENY
    assert events.items == []
    broker.deny_without_asking = False
    answers: list[Decision] = []

    async def ask() -> None:
        answers.append(await broker("b.test", "http", 80))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        nursery.start_soon(ask)
        await _wait_until(lambda: len(broker.pending_ids()) == 2, "two questions")
        broker.deny_without_asking = True  # the turn ended: pending questions are denied
    assert answers == [Decision.DENY, Decision.DENY]
    broker.deny_without_asking = False
    with trio.move_on_after(SHORT_APPROVAL_TIMEOUT_S):
        await broker("c.test", "http", 80)
    withdrawn = events.of(network_pb2.NetworkApprovalRequested)[-1].id
    assert broker.resolve(withdrawn, Decision.APPROVE_ONCE) is False


async def test_proxy_with_broker_end_to_end() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        events = Events()
        broker = ApprovalBroker(events)
        policy = NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",))
        server, proxy_events, _ = make_proxy(
            policy, resolver=StaticResolver({"ask.test": ["127.0.0.1"]}), approver=broker
        )
        async with running(server) as port:
            responses = []

            async def request() -> None:
                responses.append(await raw_exchange(port, get_request(f"http://ask.test:{up_port}/hello")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                await _wait_until(lambda: events.of(network_pb2.NetworkApprovalRequested), "question")
                question = events.of(network_pb2.NetworkApprovalRequested)[0]
                ok = await trio.to_thread.run_sync(broker.resolve, question.id, Decision.APPROVE_ONCE)
                assert ok
    assert responses[0].status == 200
    assert proxy_events.of(network_pb2.NetworkConnectionAudit)[0].decision == "approve_once"
