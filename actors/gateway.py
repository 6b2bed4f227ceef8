"""The gRPC face of the runtime: protobuf requests in, session envelopes through, status codes out.

- Errors map to status codes here and nowhere else (``STATUS_FOR``).
- Requests arrive as raw bytes and are parsed here, so a malformed message is INVALID_ARGUMENT with a clear
  text (grpcio would call a failing deserializer INTERNAL); oversized ones are RESOURCE_EXHAUSTED (grpcio's
  receive limit). Neither touches any session.
- Each RPC runs in a server span whose parent is the client's ``traceparent`` metadata; the span's context
  rides into the session in the request ``Envelope``.
- The server listens on a unix socket ``<home>/run/supervisor.sock`` unless told otherwise (TCP: loopback, or
  any address with TLS), writes ``<home>/run/serve.json`` (address + owner token, 0600), and refuses every
  call but health's without a valid token (``actors.auth.AuthInterceptor``). It serves ``grpc.health.v1`` and
  reflection.
- It is a ``grpc.aio`` server on its own asyncio thread (not the trio loop: grpc.aio fails under trio). Unary
  RPCs run as plain functions on a bounded thread pool; event streams (``StreamEvents`` and
  ``EventStreamService.StreamEventBatches``) are coroutines on the loop, so 1,000 open streams hold no thread
  each. A stream sends events as the log stored them (serialized once, whatever the number of clients); a
  slow client is served from the log (``EventLog.follow_raw``), so it never grows server memory.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pykka
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actors.auth import (
    Authenticator,
    AuthInterceptor,
    Ownership,
    Principal,
    ServeInfo,
    TlsConfig,
    TokenStore,
    current_principal,
    new_token,
    remove_serve_info,
    socket_path,
    write_serve_info,
)
from actors.core import READ_BATCH, ElasticThreadPool, SessionRecord, put_with_reply, span
from actors.errors import (
    ChildStartError,
    CommandForbidden,
    ConfigError,
    ConstraintError,
    InvalidRequest,
    LimitExceeded,
    NotFoundError,
    OutOfRange,
    PreconditionFailed,
    ProcessStartError,
    SandboxUnavailable,
    SessionStateError,
    StartupFailed,
    StashFull,
    Unavailable,
    UnknownSession,
)
from actors.limits import MAX_CONCURRENT_RPCS, RPC_THREAD_IDLE_EXIT_S, check_inbox, check_request
from actors.runtime import REQUEST_TIMEOUT_S, SessionRuntime
from actors.turn import COMPACT_COMMAND
from protos.supervisor.v1 import envelope_pb2, session_pb2, stream_pb2

__all__ = ["MAX_MESSAGE_BYTES", "SERVICE_NAME", "GatewayServer", "check_listen", "serve"]

logger = logging.getLogger(__name__)

SERVICE_NAME = "supervisor.v1.SessionService"
STREAM_SERVICE_NAME = "supervisor.v1.EventStreamService"
#: Largest request or response message, in bytes; larger ones get RESOURCE_EXHAUSTED.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Threads for unary RPCs (event streams hold none).
DEFAULT_MAX_WORKERS = 64
#: Grace period for in-flight RPCs at shutdown.
SHUTDOWN_GRACE_S = 2.0
#: How long building and starting the server on its loop may take.
SERVER_START_TIMEOUT_S = 10.0
#: grpc.aio's poller thread, renamed: leak checks treat ``asyncio_`` threads as process-wide.
AIO_POLLER_THREAD_NAME = "asyncio_grpc_aio_poller"

#: Most bytes of one ``EventBatch`` (a larger single event, at most ``MAX_EVENT_BYTES``, comes alone).
MAX_BATCH_BYTES = 1024 * 1024
#: Trailer naming how long a client should wait before retrying an UNAVAILABLE call.
RETRY_AFTER_KEY = "retry-after-ms"

STATUS_FOR: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (UnknownSession, grpc.StatusCode.NOT_FOUND),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProcessStartError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ConstraintError, grpc.StatusCode.FAILED_PRECONDITION),
    (SandboxUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
    (CommandForbidden, grpc.StatusCode.PERMISSION_DENIED),
    (SessionStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (StartupFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ChildStartError, grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StashFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code for an error raised while serving a request."""
    import pykka

    if isinstance(exc, pykka.Timeout):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    for cls, code in STATUS_FOR:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _retry_trailer(exc: BaseException) -> tuple[tuple[str, str], ...]:
    if isinstance(exc, Unavailable):
        return ((RETRY_AFTER_KEY, str(int(exc.retry_after_s * 1000))),)
    return ()


def _metadata_trace(context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]) -> tuple[str, str]:
    meta = dict(context.invocation_metadata() or ())
    return str(meta.get("traceparent", "")), str(meta.get("tracestate", ""))


#: Longest ``parent_id`` chain followed to find a subagent's root (deeper than any ``[agents] max_depth``).
MAX_TREE_DEPTH = 64


class Access:
    """Who may touch which session. The administrator (the owner token) every one; another principal only the
    sessions it started and their subagents (a subagent belongs to its root's principal). Anything else is
    NOT_FOUND with the text an unknown id gets, so a principal cannot even learn that another's session exists.
    """

    def __init__(self, runtime: SessionRuntime, owners: Ownership) -> None:
        self.runtime = runtime
        self.owners = owners

    def root_of(self, session_id: str) -> str:
        """The root session of ``session_id``'s tree (itself if it has no parent)."""
        for _ in range(MAX_TREE_DEPTH):
            record = self.runtime.log.session(session_id)
            if record is None or not record.parent_id:
                break
            session_id = record.parent_id
        return session_id

    def allowed(self, principal: Principal, session_id: str) -> bool:
        """``principal`` may see and drive ``session_id``."""
        return principal.admin or self.owners.owner(self.root_of(session_id)) == principal.name

    def check(self, req: Any) -> None:
        """``UnknownSession`` unless the caller may touch the session ``req`` names (if it names one)."""
        session_id = getattr(req, "session_id", "")
        if isinstance(req, session_pb2.StartSessionRequest) and req.mode not in (
                session_pb2.START_MODE_RESUME, session_pb2.START_MODE_FORK):
            return  # a new session: its id is made by the runtime, ``session_id`` is ignored
        if session_id and not self.allowed(current_principal(), session_id):
            raise UnknownSession(f"no session {session_id!r}")

    def keep(self) -> Callable[[SessionRecord], bool] | None:
        """The filter of ``ListSessions`` for the caller (None: the administrator sees every session)."""
        principal = current_principal()
        if principal.admin:
            return None
        return lambda record: self.allowed(principal, record.session_id)


class SessionService:
    """The ``SessionService`` RPCs served on the thread pool (``ASYNC_UNARY`` and the streams run on the loop)."""

    def __init__(self, runtime: SessionRuntime, access: Access) -> None:
        self.runtime = runtime
        self.access = access

    def StartSession(self, req: session_pb2.StartSessionRequest, ctx: grpc.ServicerContext, tp: str, ts: str
                     ) -> session_pb2.StartSessionResponse:
        response = self.runtime.start_session(req, tp, ts)
        self.access.owners.claim(response.session_id, current_principal().name)  # a resume keeps its owner
        return response

    def StopSession(self, req: session_pb2.StopSessionRequest, ctx: grpc.ServicerContext, tp: str, ts: str
                    ) -> session_pb2.StopSessionResponse:
        return self.runtime.stop_session(req.session_id)

    def ListSessions(self, req: session_pb2.ListSessionsRequest, ctx: grpc.ServicerContext, tp: str, ts: str
                     ) -> session_pb2.ListSessionsResponse:
        return self.runtime.list_sessions_page(req, keep=self.access.keep())

    def _feature(self, req: Any, ctx: grpc.ServicerContext, tp: str, ts: str) -> Any:
        """Exec, ResolveApproval, GetNetworkProxy, ListHooks, ...: served by the session's children."""
        env = envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(type_url=req.DESCRIPTOR.full_name,
                                                               data=req.SerializeToString()))
        env.trace.traceparent, env.trace.tracestate = tp, ts
        env.sender = "/gateway"
        return self.runtime.request_feature(req.session_id, env)

    Exec = ResolveApproval = GetNetworkProxy = ListHooks = _feature
    SpawnAgent = SendAgentInput = WaitAgents = CloseAgent = ResumeAgent = ListAgents = _feature
    McpToolCall = McpListTools = McpAcceptTools = McpServerControl = McpResolveElicitation = _feature

def _handlers(service: SessionService) -> tuple[grpc.GenericRpcHandler, ...]:
    descriptor = session_pb2.DESCRIPTOR.services_by_name["SessionService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        request_cls: type[Message] = GetMessageClass(method.input_type)
        if method.server_streaming:  # StreamEvents: serialized events straight from the log
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _event_stream(service.runtime, service.access, request_cls, batched=False))
        elif method.name in ASYNC_UNARY:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _async_unary(method.name, request_cls, service.runtime, service.access),
                response_serializer=_serialize)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(method.name, request_cls, getattr(service, method.name), service.access),
                response_serializer=_serialize)
    batches = grpc.unary_stream_rpc_method_handler(
        _event_stream(service.runtime, service.access, stream_pb2.StreamEventBatchesRequest, batched=True))
    return (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),
            grpc.method_handlers_generic_handler(STREAM_SERVICE_NAME, {"StreamEventBatches": batches}))


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _decode(request_cls: type[Message], raw: bytes) -> Message:
    """Parse and bound-check a request; raises ``InvalidRequest`` (or a limit's narrow error)."""
    try:
        req = request_cls.FromString(raw)
    except (DecodeError, RuntimeWarning, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed {request_cls.DESCRIPTOR.full_name}: {exc}") from exc
    check_request(req)
    return req


def _parse(request_cls: type[Message], raw: bytes, ctx: grpc.ServicerContext) -> Message:
    try:
        return _decode(request_cls, raw)
    except Exception as exc:
        _fail(ctx, request_cls.DESCRIPTOR.name, exc)
        raise  # unreachable: abort raises


def _fail(ctx: grpc.ServicerContext, name: str, exc: Exception) -> None:
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", name)
    trailer = _retry_trailer(exc)
    if trailer:
        ctx.set_trailing_metadata(trailer)
    ctx.abort(code, str(exc) or type(exc).__name__)


async def _fail_async(ctx: grpc.aio.ServicerContext[Any, Any], name: str, exc: Exception) -> None:
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.exception("%s failed", name)
    trailer = _retry_trailer(exc)
    if trailer:
        ctx.set_trailing_metadata(trailer)
    await ctx.abort(code, str(exc) or type(exc).__name__)


def _unary(name: str, request_cls: type[Message], impl: Callable[..., Message], access: Access
           ) -> Callable[..., Message]:
    def handle(raw: bytes, ctx: grpc.ServicerContext) -> Message:
        req = _parse(request_cls, raw, ctx)
        tp, ts = _metadata_trace(ctx)
        with span(f"{SERVICE_NAME}/{name}", tp, ts, new_root_if_untraced=False) as rpc_tp:
            try:
                access.check(req)
                return impl(req, ctx, rpc_tp or tp, ts)
            except Exception as exc:
                _fail(ctx, name, exc)
                raise

    return handle


class _LoopReply(pykka.Future[Any]):
    """A pykka reply slot that resolves an asyncio future: an RPC awaits its session without holding a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        super().__init__()
        self._loop = loop
        self._future = future

    def get(self, timeout: float | None = None) -> Any:
        raise NotImplementedError("awaited on the loop, never waited for")

    def set(self, value: Any = None) -> None:
        self._settle(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        self._settle(None, (exc_info or sys.exc_info())[1])

    def _settle(self, value: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if not self._future.done():
                if exc is not None:
                    self._future.set_exception(exc)
                else:
                    self._future.set_result(value)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the server's loop closed: nobody waits for the answer
            pass


async def _ask_session(runtime: SessionRuntime, session_id: str, env: envelope_pb2.Envelope, actor: Any = None
                       ) -> envelope_pb2.Envelope:
    """``runtime.request`` for the loop: the session's reply arrives as an asyncio result."""
    actor = actor or runtime.live(session_id)
    inbox: Any = actor.actor_ref.actor_inbox  # a ParkingInbox or queue.Queue: both count what waits
    check_inbox(session_id, inbox.qsize())
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    put_with_reply(actor.actor_ref, env, _LoopReply(loop, future))  # ``ask`` would block a thread on the reply
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):  # cheaper than wait_for: no waiter future, no callback
            reply = await future
    except pykka.ActorDeadError as exc:
        raise SessionStateError(f"session {session_id} stopped while handling the request") from exc
    assert isinstance(reply, envelope_pb2.Envelope)
    return reply


async def _ask_reply(runtime: SessionRuntime, req: Any, tp: str, ts: str) -> Message:
    """Submit, Interrupt, UpdateSettings, GetSession and Compact of a live session, answered on the loop."""
    actor = None
    if isinstance(req, session_pb2.GetSessionRequest):
        try:
            actor = runtime.live(req.session_id)
        except (UnknownSession, SessionStateError):  # not live: the runtime answers from the log
            return session_pb2.GetSessionResponse(session=runtime.get_session(req.session_id))
        env = envelope_pb2.Envelope(get_session=req)
    elif isinstance(req, session_pb2.CompactRequest):  # a task, as the `/compact` input is
        text = f"{COMPACT_COMMAND} {req.instructions}".strip()
        env = envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(session_id=req.session_id, input=text))
    else:
        env = envelope_pb2.Envelope(**{_ASYNC_PAYLOAD[type(req)]: req})
    if tp or ts:
        env.trace.traceparent, env.trace.tracestate = tp, ts
    env.sender = "/gateway"
    reply = await _ask_session(runtime, req.session_id, env, actor)
    if actor is not None:
        return reply.get_session_reply
    if isinstance(req, session_pb2.CompactRequest):
        return session_pb2.CompactResponse(task_id=reply.submit_reply.task_id, queued=reply.submit_reply.queued)
    return getattr(reply, _ASYNC_PAYLOAD[type(req)] + "_reply")  # type: ignore[no-any-return]


_ASYNC_PAYLOAD: dict[type, str] = {session_pb2.SubmitRequest: "submit", session_pb2.InterruptRequest: "interrupt",
                                   session_pb2.UpdateSettingsRequest: "update_settings"}
#: RPCs served on the loop (a request to one session actor); the rest run on the thread pool.
ASYNC_UNARY = ("Submit", "Interrupt", "UpdateSettings", "GetSession", "Compact")


def _async_unary(name: str, request_cls: type[Message], runtime: SessionRuntime, access: Access
                 ) -> Callable[..., Any]:
    async def handle(raw: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            req = _decode(request_cls, raw)
            access.check(req)
        except Exception as exc:
            await _fail_async(ctx, name, exc)
            raise
        tp, ts = _metadata_trace(ctx)
        try:
            if not tp:  # an untraced call makes no span (``new_root_if_untraced=False``): skip its machinery
                return await _ask_reply(runtime, req, tp, ts)
            with span(f"{SERVICE_NAME}/{name}", tp, ts, new_root_if_untraced=False) as rpc_tp:
                return await _ask_reply(runtime, req, rpc_tp or tp, ts)
        except Exception as exc:
            await _fail_async(ctx, name, exc)
        raise AssertionError("unreachable: abort raises")

    return handle


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _batch_bytes(run: list[tuple[int, bytes]]) -> bytes:
    """An ``EventBatch`` (field 1, length-delimited, repeated) built from serialized events, without parsing."""
    return b"".join(b"\x0a" + _varint(len(data)) + data for _, data in run)


def _split_by_bytes(run: list[tuple[int, bytes]], limit: int = MAX_BATCH_BYTES) -> list[list[tuple[int, bytes]]]:
    """Consecutive pieces of ``run`` of at most ``limit`` bytes each (an event larger than that goes alone)."""
    pieces: list[list[tuple[int, bytes]]] = [[]]
    size = 0
    for item in run:
        cost = len(item[1]) + 1 + len(_varint(len(item[1])))
        if pieces[-1] and size + cost > limit:
            pieces.append([])
            size = 0
        pieces[-1].append(item)
        size += cost
    return pieces


def _event_stream(runtime: SessionRuntime, access: Access, request_cls: type[Message], *, batched: bool
                  ) -> Callable[..., AsyncIterator[bytes]]:
    """An asyncio handler streaming a session's events: one per message, or runs of them (``EventBatch``)."""

    async def handle(raw: bytes, ctx: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        try:
            req: Any = _decode(request_cls, raw)
            access.check(req)
        except Exception as exc:
            await _fail_async(ctx, request_cls.DESCRIPTOR.name, exc)
            raise
        log = runtime.log_of(req.session_id)  # an ephemeral session's is in memory
        if log.session(req.session_id) is None:
            await ctx.abort(grpc.StatusCode.NOT_FOUND, f"no session {req.session_id!r}")
        max_batch = min(req.max_batch or READ_BATCH, READ_BATCH) if batched else READ_BATCH
        async for run in log.follow_raw(req.session_id, req.from_seq, live=not req.no_follow,
                                                max_batch=max_batch):
            if batched:
                for piece in _split_by_bytes(run):
                    yield _batch_bytes(piece)
            else:
                for _, data in run:
                    yield data

    return handle


class _LoopThread:
    """An asyncio loop in its own thread (the gRPC server's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="grpc-aio-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Any, timeout: float) -> Any:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()


class GatewayServer:
    """A running gRPC server: its gRPC target (``address``), the TCP port it bound (0 on a unix socket) and
    the owner token a client sends (``actors.auth.open_channel(server.address, server.token)``)."""

    def __init__(self, server: grpc.aio.Server, port: int, health_servicer: health.HealthServicer,
                 executor: futures.Executor, loop: _LoopThread, *, address: str, token: str,
                 info_home: Path | None, sock: Path | None) -> None:
        self.server = server
        self._executor = executor
        self._loop = loop
        self.port = port
        self.address = address
        self.token = token
        self.health = health_servicer
        self._info_home = info_home
        self._sock = sock

    def stop(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop serving (NOT_SERVING first, so health checkers see it)."""
        self.health.enter_graceful_shutdown()
        if self._info_home is not None:
            remove_serve_info(self._info_home, ServeInfo(self.address, self.token))
        try:
            self._loop.run(self.server.stop(grace), grace + 1)
        finally:
            self._loop.close()
            self._executor.shutdown(wait=True, cancel_futures=True)
            if self._sock is not None:
                self._sock.unlink(missing_ok=True)
            # grpc.aio's poller thread ends when its last server object is freed; some sit in reference cycles
            del self.server
            gc.collect()


def check_listen(listen: str | None, tls: bool) -> None:
    """``ConfigError`` unless ``listen`` is a unix socket, a loopback address, or any address with ``tls``."""
    if listen is None:
        return
    if listen.startswith("unix:"):
        return
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(f"--listen: {listen!r} is not HOST:PORT with an IP address") from exc
    if not address.is_loopback and not tls:
        raise ConfigError(f"--listen {listen} is not a loopback address: serving it needs TLS "
                          "(--tls-cert and --tls-key)")


def _unix_socket(runtime: SessionRuntime) -> tuple[str, Path]:
    path = socket_path(runtime.options.home)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # a socket left by a server that was killed
        else:
            raise ConfigError(f"a server already listens on {path} (this home's): stop it first")
        finally:
            probe.close()
    return f"unix:{path}", path


def serve(runtime: SessionRuntime, listen: str | None = None, *, token: str | None = None,
          tls: TlsConfig | None = None, write_info: bool = True, authenticate: bool = True,
          max_workers: int = DEFAULT_MAX_WORKERS, max_message_bytes: int = MAX_MESSAGE_BYTES,
          max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS) -> GatewayServer:
    """Start the gRPC server (SessionService, EventStreamService, health, reflection) and return it.

    ``listen`` None: the unix socket ``<home>/run/supervisor.sock`` (0600 in a 0700 directory); else
    ``HOST:PORT`` (loopback, or any address with ``tls``) or ``unix:PATH``. ``token`` is the owner token
    (default: a fresh one); principal tokens come from the home's ``TokenStore``; with ``tls.client_ca`` a
    client certificate from that CA is required, and names the principal of a call without a token.
    ``write_info`` writes ``<home>/run/serve.json`` (removed at stop). ``authenticate=False`` drops the
    interceptor: only the benchmark's baseline uses it.
    """
    sock: Path | None = None
    if tls is not None and (listen is None or listen.startswith("unix:")):
        raise ConfigError("TLS is for a TCP listener: give --listen HOST:PORT")
    if listen is None:
        listen, sock = _unix_socket(runtime)
    check_listen(listen, tls=tls is not None)
    owner_token = token or new_token()
    interceptors = [AuthInterceptor(Authenticator(owner_token, TokenStore(runtime.options.home)),
                                    client_certificates=tls is not None and tls.mutual)] if authenticate else []
    access = Access(runtime, Ownership(runtime.options.home))
    executor = ElasticThreadPool(max_workers, RPC_THREAD_IDLE_EXIT_S, "grpc-worker")
    health_servicer = health.HealthServicer()
    loop = _LoopThread()

    async def build() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(
            migration_thread_pool=executor,
            interceptors=interceptors,
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(_handlers(SessionService(runtime, access)))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in ("", SERVICE_NAME, STREAM_SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            (SERVICE_NAME, STREAM_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if tls is not None:
            port = server.add_secure_port(listen, tls.server_credentials())
        else:  # a socket is chmod-ed 0600 below; its 0700 directory guards it until then
            port = server.add_insecure_port(listen)
        if port == 0:
            raise ConfigError(f"--listen: could not bind {listen}")
        await server.start()
        return server, port

    try:
        server, port = loop.run(build(), SERVER_START_TIMEOUT_S)
    except BaseException:
        loop.close()
        executor.shutdown(wait=False)
        raise
    _name_aio_poller()
    if sock is not None:
        sock.chmod(0o600)
        address, port = listen, 0
    else:
        address = f"{listen.rsplit(':', 1)[0]}:{port}" if not listen.startswith("unix:") else listen
    info_home = runtime.options.home if write_info else None
    if info_home is not None:
        write_serve_info(info_home, ServeInfo(address, owner_token, tls=tls is not None, pid=os.getpid()))
    return GatewayServer(server, port, health_servicer, executor, loop, address=address, token=owner_token,
                         info_home=info_home, sock=sock)


def _name_aio_poller() -> None:
    """Name grpc.aio's completion-queue poller for what it is: process-wide (one for every aio object of the
    process; it ends when the last one is freed), like the trio host, not part of any one server."""
    for thread in threading.enumerate():
        if thread.name.endswith("(_poll_wrapper)"):
            thread.name = AIO_POLLER_THREAD_NAME
