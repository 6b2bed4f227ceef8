"""NetworkProxyActor: the proxy as a supervised child on the shared trio loop, its proto requests, and a
restart under a real Supervisor that keeps the port, the policy, the views and the remembered approvals."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
import pytest
import trio
from google.protobuf.message import Message

from actors.core import Supervisor, start_actor
from actors.proxy._actor import (
    NETWORK_PROXY_CHILD_ID,
    NetworkProxyActor,
    ProxyState,
    decision_from_proto,
    network_proxy_child_spec,
    policy_from_proto,
)
from actors.proxy._policy import NetworkMode, NetworkPolicy
from protos.supervisor.v1 import config_pb2, envelope_pb2, network_pb2
from tests.helpers.proxy import (
    WAIT_S,
    RecordingConnector,
    StaticResolver,
    Upstream,
    get_request,
    raw_exchange,
    running,
)


class Sink:
    """A thread-safe emit sink."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Message] = []

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.items.append(message)

    def of(self, kind: type[Message]) -> list[Any]:
        with self._lock:
            return [m for m in self.items if isinstance(m, kind)]


def _wait_until(predicate: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)  # polling a bounded deadline


def _auth(token: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"{token}:".encode()).decode() + "\r\n"


def test_policy_and_decision_conversion() -> None:
    message = config_pb2.NetworkPolicy(
        mode=config_pb2.NETWORK_MODE_LIMITED, allowed_domains=["a.test"], denied_domains=["b.test"],
        allow_local_binding=True,
    )  # fmt: skip
    policy = policy_from_proto(message)
    assert policy == NetworkPolicy(NetworkMode.LIMITED, ("a.test",), ("b.test",), True)
    assert policy_from_proto(config_pb2.NetworkPolicy()).mode is NetworkMode.FULL
    assert decision_from_proto(network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION).value == "approve_for_session"
    assert decision_from_proto(network_pb2.NETWORK_APPROVAL_DECISION_UNSPECIFIED).value == "deny"


async def test_actor_serves_answers_requests_and_approvals() -> None:
    upstream = Upstream()
    async with running(upstream) as up_port:
        sink = Sink()
        state = ProxyState(NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",)))
        actor = NetworkProxyActor(
            state=state, emit=sink, resolver=StaticResolver({"ask.test": ["127.0.0.1"]}),
            connector=RecordingConnector(),
        )  # fmt: skip
        ref = await trio.to_thread.run_sync(start_actor, actor)
        try:
            await trio.to_thread.run_sync(actor.started.result, WAIT_S)
            proxy = ref.proxy()
            port = await trio.to_thread.run_sync(lambda: proxy.port().get(timeout=WAIT_S))
            assert port == state.port != 0
            assert sink.of(network_pb2.NetworkProxyListening)[0].port == port
            url = f"http://127.0.0.1:{up_port}/hello"
            assert (await raw_exchange(port, get_request(url))).status == 200
            described = await trio.to_thread.run_sync(
                lambda: proxy.handle_request(network_pb2.GetNetworkProxyRequest()).get(timeout=WAIT_S)
            )
            assert described.port == port and described.env["HTTPS_PROXY"] == f"http://127.0.0.1:{port}"
            deny = network_pb2.SetNetworkPolicyRequest(policy=config_pb2.NetworkPolicy(denied_domains=["127.0.0.1"]))
            await trio.to_thread.run_sync(lambda: proxy.handle_request(deny).get(timeout=WAIT_S))
            assert (await raw_exchange(port, get_request(url))).headers["x-proxy-error"] == "blocked-by-denylist"
            allow = config_pb2.NetworkPolicy(allowed_domains=[f"127.0.0.1:{up_port}"])
            await trio.to_thread.run_sync(lambda: proxy.set_policy(allow).get(timeout=WAIT_S))
            # an allowlist miss asks through the actor's broker; a gRPC-style request answers it
            responses = []

            async def ask() -> None:
                responses.append(await raw_exchange(port, get_request(f"http://ask.test:{up_port}/hello")))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                with trio.fail_after(WAIT_S):
                    while not sink.of(network_pb2.NetworkApprovalRequested):
                        await trio.sleep(0.01)
                question = sink.of(network_pb2.NetworkApprovalRequested)[0]
                resolve = network_pb2.ResolveNetworkApprovalRequest(
                    id=question.id, decision=network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION
                )
                answer = await trio.to_thread.run_sync(lambda: proxy.handle_request(resolve).get(timeout=WAIT_S))
                assert answer.found
            assert responses[0].status == 200
            assert ("ask.test", "http", up_port) in state.remembered
            with pytest.raises(TypeError):
                await trio.to_thread.run_sync(lambda: proxy.handle_request(envelope_pb2.Envelope()).get(timeout=WAIT_S))
            # deny without asking: no question, immediate 403
            await trio.to_thread.run_sync(lambda: proxy.set_deny_without_asking(True).get(timeout=WAIT_S))
            quick = await raw_exchange(port, get_request(f"http://other.test:{up_port}/"))
            assert quick.status == 403 and len(sink.of(network_pb2.NetworkApprovalRequested)) == 1
        finally:
            await trio.to_thread.run_sync(lambda: ref.stop(timeout=WAIT_S))
        # stopped: the port no longer accepts connections
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


def test_supervisor_restart_keeps_port_policy_views_and_approvals() -> None:
    sink = Sink()
    state = ProxyState(NetworkPolicy(allowed_domains=("only.test",)))
    spec = network_proxy_child_spec(state=state, emit=sink, resolver=StaticResolver(), connector=RecordingConnector())
    assert (spec.child_id, spec.actor_class, spec.kind) == (NETWORK_PROXY_CHILD_ID, NetworkProxyActor, "proxy")
    supervisor = Supervisor.start()
    try:
        first = supervisor.proxy().start_child(spec).get(timeout=WAIT_S)
        port = first.proxy().port().get(timeout=WAIT_S)
        first.proxy().set_policy(NetworkPolicy(denied_domains=("gone.test",))).get(timeout=WAIT_S)
        child_policy = NetworkPolicy(denied_domains=("x.test",))
        token = first.proxy().add_view(child_policy, agent_path="/root/w").get(timeout=WAIT_S)
        state.remembered.add(("kept.test", "https", 443))
        first.tell(envelope_pb2.Envelope(task_failed=envelope_pb2.TaskFailed(task="t", error="boom")))

        def restarted() -> pykka.ActorRef[Any] | None:
            ref = supervisor.proxy().child_ref(NETWORK_PROXY_CHILD_ID).get(timeout=WAIT_S)
            return ref if ref is not None and ref is not first and ref.is_alive() else None

        _wait_until(restarted)
        second = restarted()
        assert second is not None
        assert second.proxy().port().get(timeout=WAIT_S) == port
        env = second.proxy().env(token).get(timeout=WAIT_S)
        assert env["HTTP_PROXY"] == f"http://{token}@127.0.0.1:{port}"
        assert ("kept.test", "https", 443) in state.remembered
        assert state.policy == NetworkPolicy(denied_domains=("gone.test",))

        async def check() -> tuple[int, str, int]:
            denied = await raw_exchange(port, get_request("http://gone.test/"))
            child = await raw_exchange(port, get_request("http://x.test/", _auth(token)))
            return denied.status, denied.headers.get("x-proxy-error", ""), child.status

        assert trio.run(check) == (403, "blocked-by-denylist", 403)  # the view still exists (not 407)
        assert [e.port for e in sink.of(network_pb2.NetworkProxyListening)] == [port, port]
        blocked = sink.of(network_pb2.NetworkRequestBlocked)
        assert blocked[-1].agent_path == "/root/w"
    finally:
        supervisor.stop(timeout=WAIT_S)
