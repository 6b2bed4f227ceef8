"""NetworkProxyActor: a session's network proxy as a supervised child (a thin wrapper over ``_proxy_server``).

Contract:
- ``on_start`` binds the proxy on 127.0.0.1 and starts serving it in the actor's own trio scope; it returns
  once the port is known (``port()``, ``env()``), or fails the start. Stopping the actor cancels the scope:
  the listener and every proxied connection close.
- Everything a restart must not lose lives in a ``ProxyState`` the session creates once and passes in the
  child spec: the port (a restarted proxy binds the same one, so URLs in running processes stay valid), the
  current root policy, the root token, the views of subagents with their tokens, and the approvals
  remembered for the session.
- Approvals: without an injected ``approver`` the actor asks through its own ``ApprovalBroker`` (emitting
  ``NetworkApprovalRequested``); ``resolve_approval`` answers from any thread, and
  ``set_deny_without_asking(True)`` (approval policy ``never``, or no active turn) denies at once.
- ``handle_request`` serves the proto requests of ``network.proto`` (set policy, resolve approval, describe).
- The event sink gets only ``network.proto`` events: ``NetworkProxyListening``, ``NetworkRequestBlocked``,
  ``NetworkApprovalRequested``, ``NetworkConnectionAudit``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import trio
from google.protobuf.message import Message

from actors.core import ChildSpec, Restart, SupervisedActor
from actors.proxy._approvals import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    ApprovalBroker,
    Approver,
    Decision,
    Emit,
    RememberedApprovals,
)
from actors.proxy._policy import NetworkMode, NetworkPolicy
from actors.proxy._relay import Connector, Resolver
from actors.proxy._server import ProxyServer
from protos.supervisor.v1 import config_pb2, network_pb2

__all__ = [
    "NETWORK_PROXY_CHILD_ID",
    "NetworkProxyActor",
    "ProxyState",
    "decision_from_proto",
    "network_proxy_child_spec",
    "policy_from_proto",
]

logger = logging.getLogger(__name__)

#: The child id a session gives its proxy actor.
NETWORK_PROXY_CHILD_ID = "proxy"
#: How long ``on_start`` waits for the listener.
BIND_TIMEOUT_S = 10.0

_MODES = {
    config_pb2.NETWORK_MODE_UNSPECIFIED: NetworkMode.FULL,
    config_pb2.NETWORK_MODE_FULL: NetworkMode.FULL,
    config_pb2.NETWORK_MODE_LIMITED: NetworkMode.LIMITED,
    config_pb2.NETWORK_MODE_OFF: NetworkMode.OFF,
}
_DECISIONS = {
    network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_ONCE: Decision.APPROVE_ONCE,
    network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION: Decision.APPROVE_FOR_SESSION,
}


def policy_from_proto(message: config_pb2.NetworkPolicy) -> NetworkPolicy:
    """The pure policy for a ``config.proto`` ``NetworkPolicy`` (unspecified mode means full)."""
    return NetworkPolicy(
        mode=_MODES.get(message.mode, NetworkMode.FULL),
        allowed_domains=tuple(message.allowed_domains),
        denied_domains=tuple(message.denied_domains),
        allow_local_binding=message.allow_local_binding,
    )


def decision_from_proto(value: int) -> Decision:
    """The decision for a ``NetworkApprovalDecision`` value (unspecified or unknown means deny)."""
    return _DECISIONS.get(value, Decision.DENY)  # type: ignore[call-overload]


@dataclass
class _ViewSpec:
    policy: NetworkPolicy
    emit: Emit | None
    approver: Approver | None
    remembered: RememberedApprovals | None
    agent_path: str


@dataclass
class ProxyState:
    """What survives a restart of the proxy actor (create one per session; thread-safe)."""

    policy: NetworkPolicy
    port: int = 0
    root_token: str | None = None
    remembered: RememberedApprovals = field(default_factory=RememberedApprovals)
    views: dict[str, _ViewSpec] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class NetworkProxyActor(SupervisedActor):
    """Runs a session's network proxy on the shared trio loop."""

    def __init__(
        self,
        *,
        state: ProxyState,
        emit: Emit,
        approver: Approver | None = None,
        deny_without_asking: bool = False,
        approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
        allow_anonymous: bool = True,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        agent_path: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._state = state
        self.broker = ApprovalBroker(emit, deny_without_asking=deny_without_asking, agent_path=agent_path)
        self._server = ProxyServer(
            state.policy,
            emit,
            approver=approver or self.broker,
            remembered=state.remembered,
            approval_timeout_s=approval_timeout_s,
            port=state.port,
            allow_anonymous=allow_anonymous,
            resolver=resolver,
            connector=connector,
            agent_path=agent_path,
            root_token=state.root_token,
        )
        with state.lock:
            state.root_token = self._server.root_view.token
            for token, spec in state.views.items():
                self._register(spec, token)

    def on_start(self) -> None:
        """Bind and start serving; returns once the port is known."""
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()

        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(self._server.serve)
                ready.set_result(port)

        def failed(done: concurrent.futures.Future[Any]) -> None:
            if not ready.done():
                exc = None if done.cancelled() else done.exception()
                ready.set_exception(exc or RuntimeError("proxy stopped before listening"))

        self.run_task(serve, critical=True, name="network-proxy").add_done_callback(failed)
        port = ready.result(BIND_TIMEOUT_S)
        with self._state.lock:
            self._state.port = port

    def on_stop(self) -> None:
        """Deny questions still waiting, then close the listener and every connection before returning."""
        self.broker.deny_all()
        self._close_task_scope()

    def port(self) -> int:
        """The proxy's port on 127.0.0.1."""
        return self._server.port

    def proxy_url(self, token: str | None = None) -> str:
        """The proxy URL (with a view token as user name when given)."""
        return self._server.proxy_url(token)

    def env(self, token: str | None = None) -> dict[str, str]:
        """Environment variables that route a process (of the view ``token``) through the proxy."""
        return self._server.env(token)

    def root_token(self) -> str:
        """The session's own view token (needed in URLs when anonymous requests are refused)."""
        return self._server.root_view.token

    def set_policy(self, policy: NetworkPolicy | config_pb2.NetworkPolicy, token: str | None = None) -> None:
        """Replace the policy of the session's view (or of the view ``token``); the next request uses it."""
        if isinstance(policy, config_pb2.NetworkPolicy):
            policy = policy_from_proto(policy)
        self._server.set_policy(policy, token)
        with self._state.lock:
            if token is None:
                self._state.policy = policy
            else:
                self._state.views[token].policy = policy

    def add_view(
        self,
        policy: NetworkPolicy | config_pb2.NetworkPolicy,
        *,
        emit: Emit | None = None,
        approver: Approver | None = None,
        share_approvals: bool = True,
        agent_path: str = "",
    ) -> str:
        """Register a subagent's view; returns its token (use ``env(token)`` for the subagent's processes)."""
        if isinstance(policy, config_pb2.NetworkPolicy):
            policy = policy_from_proto(policy)
        remembered = self._state.remembered if share_approvals else RememberedApprovals()
        spec = _ViewSpec(policy, emit, approver, remembered, agent_path)
        token = self._register(spec, None)
        with self._state.lock:
            self._state.views[token] = spec
        return token

    def _register(self, spec: _ViewSpec, token: str | None) -> str:
        # without an approver of its own, a view asks through the broker of the current incarnation
        approver = spec.approver or self.broker.for_agent(spec.agent_path)
        view = self._server.add_view(
            spec.policy, emit=spec.emit, approver=approver, remembered=spec.remembered,
            agent_path=spec.agent_path, token=token,
        )  # fmt: skip
        return view.token

    def remove_view(self, token: str) -> bool:
        """Forget a subagent's view (its token gets 407 afterwards)."""
        with self._state.lock:
            self._state.views.pop(token, None)
        return self._server.remove_view(token)

    def resolve_approval(self, approval_id: str, decision: Decision | str) -> bool:
        """Answer a ``NetworkApprovalRequested`` question; False if nothing waits under that id."""
        return self.broker.resolve(approval_id, decision)

    def set_deny_without_asking(self, value: bool) -> None:
        """Deny approval questions at once (True denies the pending ones too)."""
        self.broker.deny_without_asking = value

    def handle_request(self, request: Message) -> Message:
        """Serve a ``network.proto`` request message and return its response message."""
        if isinstance(request, network_pb2.SetNetworkPolicyRequest):
            self.set_policy(request.policy)
            return network_pb2.SetNetworkPolicyResponse()
        if isinstance(request, network_pb2.ResolveNetworkApprovalRequest):
            found = self.resolve_approval(request.id, decision_from_proto(request.decision))
            return network_pb2.ResolveNetworkApprovalResponse(found=found)
        if isinstance(request, network_pb2.GetNetworkProxyRequest):
            return network_pb2.GetNetworkProxyResponse(port=self.port(), env=self.env())
        raise TypeError(f"not a network proxy request: {type(request).__name__}")


def network_proxy_child_spec(*, state: ProxyState, emit: Emit, **options: Any) -> ChildSpec:
    """The ``ChildSpec`` for a session's ``NetworkProxyActor`` (``options``: see its ``__init__``)."""
    return ChildSpec(
        child_id=NETWORK_PROXY_CHILD_ID,
        actor_class=NetworkProxyActor,
        kwargs={"state": state, "emit": emit, **options},
        restart=Restart.PERMANENT,
        kind="proxy",
    )
