"""The network proxy wing: an HTTP/CONNECT proxy on loopback enforcing the session's network policy.
"""

from __future__ import annotations

from actors.proxy._actor import NetworkProxyActor, ProxyState, network_proxy_child_spec, policy_from_proto
from actors.proxy._policy import NetworkPolicy
from actors.proxy._server import ProxyServer
from actors.proxy._tunnel import SPLICE_AVAILABLE

__all__ = [
    "SPLICE_AVAILABLE",
    "NetworkPolicy",
    "NetworkProxyActor",
    "ProxyServer",
    "ProxyState",
    "network_proxy_child_spec",
    "policy_from_proto",
]
