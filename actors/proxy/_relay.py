"""One proxied request: policy, approval, a single DNS lookup, a checked dial, then forward or tunnel.

Contract:
- ``RequestHandler.handle`` serves one parsed request head from a client connection and returns True if the
  connection may carry another request (keep-alive), False if it must close.
- Order: parse the target (400 on anything malformed) -> ``evaluate_request`` -> on an allowlist miss, the
  view's ``ApprovalGate`` -> resolve the name ONCE with the injected resolver (IP literals are not looked up)
  -> ``evaluate_addresses`` on EVERY answer -> dial a checked address with the injected connector (the
  connector gets an IP, never a name, so DNS rebinding cannot redirect it). The proxy's own port on a
  loopback or unspecified address is always refused (no proxy loops). A block answers 403 with
  ``x-proxy-error: <reason>`` and emits ``NetworkRequestBlocked``; nothing is dialled.
- CONNECT answers 200 and relays bytes both ways (``_proxy_tunnel``: splice(2) when it can; half-closes
  propagate) until both sides end or nothing moves for ``idle_timeout_s``.
- Other methods need an absolute ``http://`` target; the request goes upstream in origin form with the
  URI's host as ``Host``, hop-by-hop headers and ``Proxy-Authorization`` removed and ``Connection: close``;
  the response is relayed as is (redirects are never followed).
- Every dialled (or attempted) upstream emits one ``NetworkConnectionAudit`` when it ends.
- Failures after the policy passed answer 502 (504 on timeouts) with ``x-proxy-error`` set to the audit's
  error code, if no response byte was sent yet.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from google.protobuf.message import Message

from actors.proxy._approvals import ApprovalGate, Decision, Emit
from actors.proxy._hosts import InvalidHostError, IpAddress, format_host, parse_ip, split_authority
from actors.proxy._http import (
    HOP_BY_HOP,
    HTTP_DEFAULT_PORT,
    NO_BODY,
    BufferedReader,
    Framing,
    MalformedMessage,
    MessageHead,
    StreamEnded,
    error_response,
    parse_absolute_target,
    parse_response_head,
    relay_body,
    render_head,
    request_framing,
    response_framing,
)
from actors.proxy._policy import (
    Action,
    BlockReason,
    NetworkPolicy,
    Verdict,
    evaluate_addresses,
    evaluate_request,
)
from actors.proxy._tunnel import relay_tunnel
from protos.supervisor.v1 import network_pb2

__all__ = ["Connector", "ProxyView", "RelayLimits", "RequestHandler", "Resolver"]

logger = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[list[str]]]
Connector = Callable[[str, int], Awaitable[trio.abc.HalfCloseableStream]]

#: Idle deadlines move in steps of timeout / this (see ``_Idle``).
IDLE_DEADLINE_STEPS = 16
_CONNECT_OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass
class ProxyView:
    """What one session (or subagent) sees through the shared proxy: policy, approvals, event sink."""

    token: str
    policy: NetworkPolicy
    gate: ApprovalGate
    emit: Emit
    agent_path: str = ""

    def set_policy(self, policy: NetworkPolicy) -> None:
        """Replace the policy; requests that arrive after this use it (any thread)."""
        self.policy = policy

    def send_event(self, event: Message) -> None:
        """Emit ``event``; a failing sink is logged, never fatal to the proxy."""
        try:
            self.emit(event)
        except Exception:
            logger.exception("network event sink failed for %s", type(event).__name__)


@dataclass(frozen=True)
class RelayLimits:
    """Timeouts of one proxied request."""

    idle_timeout_s: float
    connect_timeout_s: float
    resolve_timeout_s: float


class _Failure(Exception):
    def __init__(self, code: str, status: int = 502) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


@dataclass
class _Audit:
    host: str
    port: int
    protocol: str
    method: str
    decision: str
    started: float = field(default_factory=trio.current_time)
    bytes_up: int = 0
    bytes_down: int = 0
    remote_ip: str = ""
    error: str = ""
    status_code: int = 0
    responded: bool = False

    def message(self, agent_path: str) -> network_pb2.NetworkConnectionAudit:
        return network_pb2.NetworkConnectionAudit(
            host=self.host,
            port=self.port,
            protocol=self.protocol,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            duration_ms=int((trio.current_time() - self.started) * 1000),
            decision=self.decision,
            agent_path=agent_path,
            remote_ip=self.remote_ip,
            error=self.error,
            status_code=self.status_code,
            method=self.method,
        )


class _Idle:
    """A cancel scope whose deadline moves forward whenever bytes move.

    Moving a deadline reorders trio's deadline heap, so it moves at most every ``timeout_s / 16``: the
    timeout fires between 15/16 and 1 times ``timeout_s`` after the last byte.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._step = timeout_s / IDLE_DEADLINE_STEPS
        self.scope = trio.CancelScope(deadline=trio.current_time() + timeout_s)

    def touch(self) -> None:
        deadline = trio.current_time() + self.timeout_s
        if deadline - self.scope.deadline >= self._step:
            self.scope.deadline = deadline


@dataclass
class _Exchange:
    """One request being served: where it came from and where it goes."""

    view: ProxyView
    head: MessageHead
    client: BufferedReader
    out: trio.abc.HalfCloseableStream
    host: str = ""
    port: int = 0
    path: str = ""
    framing: Framing = NO_BODY

    @property
    def method(self) -> str:
        return self.head.start[0]

    @property
    def protocol(self) -> str:
        return "https" if self.method == "CONNECT" else "http"


class RequestHandler:
    """Serves requests for every view of one proxy server (trio only)."""

    def __init__(
        self, resolver: Resolver, connector: Connector, limits: RelayLimits, own_port: Callable[[], int]
    ) -> None:
        self._resolver = resolver
        self._connector = connector
        self._limits = limits
        self._own_port = own_port

    def _is_self(self, addresses: list[IpAddress], port: int) -> bool:
        """True if dialling would reach this proxy itself (a loop), even where local binding is allowed."""
        return port == self._own_port() and any(ip.is_loopback or ip.is_unspecified for ip in addresses)

    async def handle(
        self, view: ProxyView, head: MessageHead, client: BufferedReader, out: trio.abc.HalfCloseableStream
    ) -> bool:
        """Serve one request (see the module docstring); True if the connection may be reused."""
        ex = _Exchange(view, head, client, out)
        policy = view.policy  # one policy for the whole request, even if replaced meanwhile
        try:
            if ex.method == "CONNECT":
                ex.host, ex.port = split_authority(head.start[1], None)
            else:
                ex.host, ex.port, ex.path = parse_absolute_target(head.start[1])
                ex.framing = request_framing(head)
        except (InvalidHostError, MalformedMessage) as exc:
            await out.send_all(error_response(400, f"bad request: {exc}", [("x-proxy-error", "bad-request")]))
            return False
        verdict = evaluate_request(policy, ex.host, ex.port, ex.method)
        decision = "allow"
        if verdict.action is Action.ASK:
            answer = await view.gate.decide(ex.host, ex.protocol, ex.port)
            if answer is Decision.DENY:
                verdict = Verdict(Action.BLOCK, BlockReason.ALLOWLIST)
            else:
                decision = answer.value
        if verdict.reason is not None and verdict.action is Action.BLOCK:
            await self._block(ex, verdict.reason)
            return False
        audit = _Audit(ex.host, ex.port, ex.protocol, ex.method, decision)
        try:
            addresses = await self._resolve(ex.host)
            verdict = evaluate_addresses(policy, ex.host, ex.port, addresses)
            if self._is_self(addresses, ex.port):
                verdict = Verdict(Action.BLOCK, BlockReason.LOCAL_ADDRESS)
            if verdict.reason is not None and verdict.action is Action.BLOCK:
                await self._block(ex, verdict.reason)
                return False
            return await self._dial_and_relay(ex, addresses, audit)
        except _Failure as failure:
            audit.error = failure.code
            if not audit.responded:
                response = error_response(failure.status, failure.code, [("x-proxy-error", failure.code)])
                await _send_quietly(out, response)
            return False
        finally:
            if audit.error or audit.remote_ip:
                view.send_event(audit.message(view.agent_path))

    async def _dial_and_relay(self, ex: _Exchange, addresses: list[IpAddress], audit: _Audit) -> bool:
        upstream = await self._connect(addresses, ex.port, audit)
        idle = _Idle(self._limits.idle_timeout_s)
        async with upstream:
            with idle.scope:
                if ex.method == "CONNECT":
                    await self._tunnel(ex, upstream, audit, idle)
                    return False
                return await self._forward(ex, upstream, audit, idle)
        raise _Failure("idle-timeout", 504)

    async def _block(self, ex: _Exchange, reason: BlockReason) -> None:
        view = ex.view
        logger.info("blocked %s %s:%d (%s) for %r", ex.method, ex.host, ex.port, reason, view.agent_path)
        view.send_event(
            network_pb2.NetworkRequestBlocked(
                host=ex.host,
                port=ex.port,
                reason=reason.value,
                method=ex.method,
                protocol=ex.protocol,
                agent_path=view.agent_path,
            )
        )
        message = f"{reason.value}: {format_host(ex.host)}:{ex.port}"
        await ex.out.send_all(error_response(403, message, [("x-proxy-error", reason.value)]))

    async def _resolve(self, host: str) -> list[IpAddress]:
        literal = parse_ip(host)
        if literal is not None:
            return [literal]
        answers: list[str] | None = None
        with trio.move_on_after(self._limits.resolve_timeout_s):
            try:
                answers = await self._resolver(host)
            except OSError as exc:
                logger.info("resolving %s failed: %s", host, exc)
                raise _Failure("resolve-failed") from exc
        if answers is None:
            raise _Failure("resolve-failed", 504)
        addresses: list[IpAddress] = []
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer)
            except ValueError as exc:
                raise _Failure("resolve-failed") from exc
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise _Failure("resolve-failed")
        return addresses

    async def _connect(
        self, addresses: list[IpAddress], port: int, audit: _Audit
    ) -> trio.abc.HalfCloseableStream:
        timed_out = False
        for ip in addresses:
            with trio.move_on_after(self._limits.connect_timeout_s) as scope:
                try:
                    stream = await self._connector(str(ip), port)
                except OSError as exc:
                    logger.info("connecting to %s:%d failed: %s", ip, port, exc)
                    continue
                audit.remote_ip = str(ip)
                return stream
            timed_out = timed_out or scope.cancelled_caught
        raise _Failure("connect-failed", 504 if timed_out else 502)

    async def _tunnel(
        self, ex: _Exchange, upstream: trio.abc.HalfCloseableStream, audit: _Audit, idle: _Idle
    ) -> None:
        await ex.out.send_all(_CONNECT_OK)
        audit.responded = True

        def up(n: int) -> None:
            audit.bytes_up += n
            idle.touch()

        def down(n: int) -> None:
            audit.bytes_down += n
            idle.touch()

        await relay_tunnel(ex.client, ex.out, upstream, up, down)

    async def _forward(
        self, ex: _Exchange, upstream: trio.abc.HalfCloseableStream, audit: _Audit, idle: _Idle
    ) -> bool:
        head = ex.head
        tokens = head.connection_tokens()
        client_close = head.start[2] == "HTTP/1.0" or "close" in tokens
        dropped = HOP_BY_HOP | tokens | {"host", "expect"}
        authority = format_host(ex.host)
        if ex.port != HTTP_DEFAULT_PORT:
            authority += f":{ex.port}"
        headers = [("Host", authority), *((k, v) for k, v in head.headers if k.lower() not in dropped)]
        if ex.framing.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(("Connection", "close"))

        def up(n: int) -> None:
            audit.bytes_up += n
            idle.touch()

        def down(n: int) -> None:
            audit.bytes_down += n
            idle.touch()

        try:
            if "100-continue" in (head.get("expect") or "").lower() and ex.framing != NO_BODY:
                await ex.out.send_all(_CONTINUE)
            request_head = render_head(f"{ex.method} {ex.path} HTTP/1.1", headers)
            await upstream.send_all(request_head)
            up(len(request_head))
            await relay_body(ex.client, upstream, ex.framing, up)
        except (MalformedMessage, *_BROKEN) as exc:
            raise _Failure("upstream-error") from exc
        reader = BufferedReader(upstream)
        try:
            response = await _final_response(reader)
            status = int(response.start[1])
            body = response_framing(response, ex.method)
        except (MalformedMessage, StreamEnded, *_BROKEN) as exc:
            raise _Failure("bad-upstream-response") from exc
        keep_alive = not client_close and not body.until_close
        dropped = HOP_BY_HOP | response.connection_tokens()
        out_headers = [(k, v) for k, v in response.headers if k.lower() not in dropped]
        if body.chunked:
            out_headers = [(k, v) for k, v in out_headers if k.lower() != "content-length"]
            out_headers.append(("Transfer-Encoding", "chunked"))
        out_headers.append(("Connection", "keep-alive" if keep_alive else "close"))
        response_head = render_head(f"HTTP/1.1 {status} {response.start[2]}", out_headers)
        audit.status_code = status
        audit.responded = True
        try:
            await relay_body(reader, ex.out, body, down, head=response_head)
        except (MalformedMessage, *_BROKEN) as exc:
            raise _Failure("upstream-error") from exc
        return keep_alive


async def _final_response(reader: BufferedReader) -> MessageHead:
    """The first non-1xx response head (interim responses are dropped; we never sent ``Expect``)."""
    while True:
        response = parse_response_head(await reader.receive_head())
        status = int(response.start[1])
        if status == 101:
            raise MalformedMessage("upstream switched protocols without being asked")
        if status >= 200:
            return response


async def _send_quietly(out: trio.abc.SendStream, data: bytes) -> None:
    try:
        await out.send_all(data)
    except _BROKEN:
        pass
