"""Clients: a channel that sends ``authorization: Bearer TOKEN`` on every call, found through ``serve.json``.

``connect(home)`` is what a local client (the CLI, ``run --attach``, tests) uses: it reads
``<home>/run/serve.json`` for the address and the owner token. ``open_channel(address, token, ...)`` is the same
for a server found any other way. A client interceptor adds the metadata, with or without TLS (grpcio's call
credentials would refuse a plaintext unix socket, and run a Python plugin on a C-core thread of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from actors.auth._files import read_serve_info
from actors.auth._interceptor import AUTHORIZATION

ChannelOptions = Sequence[tuple[str, Any]]


def bearer(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that authenticates as ``token``."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer metadata to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._meta = bearer(token)

    def _details(self, details: Any) -> _Details:
        meta = [m for m in (details.metadata or ()) if m[0] != AUTHORIZATION]
        return _Details(details.method, details.timeout, [*meta, *self._meta], details.credentials,
                        getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def open_channel(address: str, token: str | None, *, root_certificates: bytes | None = None,
                 private_key: bytes | None = None, certificate_chain: bytes | None = None,
                 server_name: str = "", tls: bool = False, options: ChannelOptions = ()) -> grpc.Channel:
    """A channel to ``address`` that authenticates with ``token`` (None: no token, e.g. mTLS only).

    With ``tls`` or ``root_certificates`` (PEM) the channel speaks TLS and checks the server against that CA
    (the system's CAs when None); ``private_key``/``certificate_chain`` add a client certificate (mTLS);
    ``server_name`` overrides the name checked in the server's certificate.
    """
    opts = list(options)
    if not tls and root_certificates is None and certificate_chain is None:
        channel = grpc.insecure_channel(address, options=opts)
    else:
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain), options=opts)
    return grpc.intercept_channel(channel, _TokenInterceptor(token)) if token else channel


def connect(home: Path, *, root_certificates: bytes | None = None, options: ChannelOptions = ()) -> grpc.Channel:
    """A channel to the server running on ``home`` (``<home>/run/serve.json``), authenticated as its owner.

    A TLS server is checked against ``root_certificates`` (PEM; default: the system's CAs). ``ConfigError``
    (naming the file) when no server wrote one. The caller closes the channel.
    """
    info = read_serve_info(home)
    root = root_certificates or (Path(info.tls_ca).read_bytes() if info.tls and info.tls_ca else None)
    return open_channel(info.address, info.token, root_certificates=root, tls=info.tls, options=options)
