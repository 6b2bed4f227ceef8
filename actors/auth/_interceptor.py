"""The server interceptor: every call but health's carries a valid token (or a client certificate), or it is
refused UNAUTHENTICATED before any handler runs; the caller's ``Principal`` rides into the handler.

It wraps each method's handler rather than checking inside the servicer, so a method added later is covered
without anyone remembering to (the gateway's test enumerates the descriptor's methods to prove it).
The principal is a ``ContextVar`` set around the handler (in the worker thread for sync handlers, in the
task for coroutines and async generators), read with ``current_principal()``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from typing import Any

import grpc

from actors.auth._tokens import ADMIN, Authenticator, AuthError, Principal

#: Methods served without credentials (a load balancer's health check has none).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
AUTHORIZATION = "authorization"
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")

_PRINCIPAL: ContextVar[Principal | None] = ContextVar("supervisor_principal", default=None)


def current_principal() -> Principal:
    """The principal of the call being served (the administrator outside any authenticated call)."""
    return _PRINCIPAL.get() or ADMIN


def _deny_handler(kind: str, message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # no deserializer: a refused call's body is never parsed
    return getattr(grpc, f"{kind}_rpc_method_handler")(deny)  # type: ignore[no-any-return]


def _kind(handler: grpc.RpcMethodHandler | None) -> str:
    if handler is None:
        return "unary_unary"
    return ("stream_" if handler.request_streaming else "unary_") + (
        "stream" if handler.response_streaming else "unary")


def certificate_principal(context: Any) -> Principal | None:
    """The principal a verified client certificate names (its subject's common name), if the call has one."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or auth.get("x509_subject") or []
    if not names:
        return None
    name = names[0].decode() if isinstance(names[0], bytes) else str(names[0])
    return Principal(name)


def _bind(behavior: Callable[..., Any], resolve: Callable[[Any], Principal]) -> Callable[..., Any]:
    """``behavior`` with the principal (``resolve(context)``) set around it, keeping its kind (grpc.aio
    dispatches on it: coroutine, async generator, generator, plain function)."""
    if inspect.isasyncgenfunction(behavior):
        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            reset = _PRINCIPAL.set(await _resolved(resolve, context))
            inner = behavior(request, context)
            try:
                async for item in inner:
                    yield item
            finally:
                await inner.aclose()  # now, not when the collector finds it: it holds the log's follower
                _reset(reset)
        return agen
    if inspect.iscoroutinefunction(behavior):
        async def coro(request: Any, context: Any) -> Any:
            reset = _PRINCIPAL.set(await _resolved(resolve, context))
            try:
                return await behavior(request, context)
            finally:
                _PRINCIPAL.reset(reset)
        return coro
    if inspect.isgeneratorfunction(behavior):
        def gen(request: Any, context: Any) -> Iterator[Any]:
            reset = _PRINCIPAL.set(_resolved_sync(resolve, context))
            try:
                yield from behavior(request, context)
            finally:
                _reset(reset)
        return gen

    def plain(request: Any, context: Any) -> Any:
        reset = _PRINCIPAL.set(_resolved_sync(resolve, context))
        try:
            return behavior(request, context)
        finally:
            _PRINCIPAL.reset(reset)
    return plain


def _reset(token: Token[Principal | None]) -> None:
    """Undo a ``set``; a generator closed from another context (a cancelled stream finalized by the loop) has
    nothing to undo there, its own context ends with it."""
    with contextlib.suppress(ValueError):
        _PRINCIPAL.reset(token)


async def _resolved(resolve: Callable[[Any], Principal], context: Any) -> Principal:
    try:
        return resolve(context)
    except AuthError as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # unreachable: abort raises


def _resolved_sync(resolve: Callable[[Any], Principal], context: Any) -> Principal:
    try:
        return resolve(context)
    except AuthError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # unreachable: abort raises


def _from_certificate(context: Any) -> Principal:
    principal = certificate_principal(context)
    if principal is None:
        raise AuthError("missing credentials: send 'authorization: Bearer TOKEN' or a client certificate")
    return principal


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call (``EXEMPT_PREFIXES`` aside) with ``authenticator``; with ``client_certificates``
    a call without a token is authenticated by its verified client certificate (mTLS) instead."""

    def __init__(self, authenticator: Authenticator, *, client_certificates: bool = False) -> None:
        self.authenticator = authenticator
        self.client_certificates = client_certificates

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if method.startswith(EXEMPT_PREFIXES):
            return handler
        values = [v for k, v in (handler_call_details.invocation_metadata or ())  # type: ignore[attr-defined]
                  if k == AUTHORIZATION]
        if len(values) > 1:
            return _deny_handler(_kind(handler), "malformed authorization metadata: more than one value")
        resolve: Callable[[Any], Principal]
        if values or not self.client_certificates:
            try:
                principal = self.authenticator.principal(
                    values[0] if values and isinstance(values[0], str) else None)
            except AuthError as exc:
                return _deny_handler(_kind(handler), str(exc))
            resolve = lambda _context: principal  # noqa: E731
        else:
            resolve = _from_certificate
        if handler is None:
            return handler
        kind = _kind(handler)
        return handler._replace(**{kind: _bind(getattr(handler, kind), resolve)})  # type: ignore[attr-defined, no-any-return]
