"""The session's network proxy server: HTTP forward proxy + CONNECT tunnel on loopback, on trio.

Contract:
- ``ProxyServer`` binds ``127.0.0.1`` port 0 by default (``port`` property, ``NetworkProxyListening``
  event); any bind address outside 127.0.0.0/8 and ::1 raises ``NonLoopbackBindError`` unless
  ``allow_non_loopback=True``. ``bind()`` then ``serve()`` (or ``nursery.start(server.serve)``, which binds
  and returns the port) serve until cancelled; cancellation closes the listener and every connection.
  The socket uses SO_REUSEADDR and a restarted server binds the port it had before, so the URLs handed to
  processes stay valid.
- Views (one proxy shared by a session and its subagents): each ``ProxyView`` has its own policy, approval
  gate (approver + remembered approvals) and event sink, and a random token. A client selects its view by
  sending ``Proxy-Authorization: Basic base64(token:)``, which curl, httpx, requests, git and others do when
  the proxy URL is ``http://TOKEN@127.0.0.1:PORT`` (what ``proxy_env(port, token)`` gives). A request
  without credentials uses the root view when ``allow_anonymous`` is True (the default), else gets 407;
  an unknown token always gets 407 with ``x-proxy-error: unknown-proxy-view``. With
  ``allow_anonymous=False`` a subagent cannot fall back to its parent's view by dropping its token, since it
  never learns another view's token.
- ``set_policy(policy, token=None)`` replaces a view's policy at runtime (any thread); the next request uses
  it, without a restart. Requests already past their policy check finish under the old one.
- A connection is served request by request (keep-alive when both ends allow it); a head larger than
  ``MAX_HEAD_BYTES`` gets 431, a malformed one 400, a silent one is closed after ``idle_timeout_s``; past
  ``max_connections`` a new connection gets 503. No failure of one connection affects another.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import secrets

import trio

from actors.proxy._approvals import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    ApprovalGate,
    Approver,
    Emit,
    RememberedApprovals,
)
from actors.proxy._http import (
    BufferedReader,
    HeadTooLarge,
    MalformedMessage,
    MessageHead,
    StreamEnded,
    error_response,
    parse_request_head,
)
from actors.proxy._policy import NetworkPolicy
from actors.proxy._relay import Connector, ProxyView, RelayLimits, RequestHandler, Resolver
from protos.supervisor.v1 import network_pb2

__all__ = [
    "DEFAULT_BIND_HOST",
    "NonLoopbackBindError",
    "ProxyServer",
    "proxy_env",
    "proxy_url",
    "system_connect",
    "system_resolve",
]

logger = logging.getLogger(__name__)

DEFAULT_BIND_HOST = "127.0.0.1"
#: A connection with no complete request head or no relayed byte for this long is closed.
DEFAULT_IDLE_TIMEOUT_S = 300.0
#: Dialling one upstream address may take this long before the next address is tried.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: The single DNS lookup of a request may take this long.
DEFAULT_RESOLVE_TIMEOUT_S = 10.0
#: Client connections served at once; more get 503 (a runaway tool must not exhaust descriptors).
DEFAULT_MAX_CONNECTIONS = 512
#: Listen backlog of the proxy socket.
LISTEN_BACKLOG = 128
#: Random bytes in a view token.
VIEW_TOKEN_BYTES = 16
#: Challenge sent with 407 so clients know to send their view token.
PROXY_AUTH_REALM = 'Basic realm="session-proxy"'
_PROXY_ENV_KEYS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")


class NonLoopbackBindError(ValueError):
    """Raised when the proxy is asked to listen outside loopback without ``allow_non_loopback``."""


async def system_resolve(host: str) -> list[str]:
    """Resolve ``host`` with the system resolver (one lookup; addresses in resolver order)."""
    infos = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def system_connect(ip: str, port: int) -> trio.abc.HalfCloseableStream:
    """Open a TCP connection to an IP address (never a name: no second lookup)."""
    address = ipaddress.ip_address(ip)  # refuses names outright
    family = trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def proxy_url(port: int, token: str | None = None, host: str = DEFAULT_BIND_HOST) -> str:
    """The proxy URL for ``port``, with ``token`` as its user name when given."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"http://{token}@{authority}" if token else f"http://{authority}"


def proxy_env(port: int, token: str | None = None, host: str = DEFAULT_BIND_HOST) -> dict[str, str]:
    """Environment variables that route a process through the proxy (and exempt nothing)."""
    url = proxy_url(port, token, host)
    env = {key: url for name in _PROXY_ENV_KEYS for key in (name, name.lower())}
    env.update({"NO_PROXY": "", "no_proxy": ""})
    return env


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ProxyServer:
    """An HTTP + CONNECT proxy enforcing per-view network policies (see the module docstring)."""

    def __init__(
        self,
        policy: NetworkPolicy,
        emit: Emit,
        *,
        approver: Approver | None = None,
        remembered: RememberedApprovals | None = None,
        approval_timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
        host: str = DEFAULT_BIND_HOST,
        port: int = 0,
        allow_non_loopback: bool = False,
        allow_anonymous: bool = True,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        agent_path: str = "",
        root_token: str | None = None,
    ) -> None:
        if not allow_non_loopback and not _is_loopback(host):
            raise NonLoopbackBindError(f"refusing to listen on {host!r}: not a loopback address")
        self._host = host
        self._requested_port = port
        self._port = 0
        self._emit = emit
        self._approval_timeout_s = approval_timeout_s
        self._allow_anonymous = allow_anonymous
        self._idle_timeout_s = idle_timeout_s
        self._max_connections = max_connections
        self._active = 0
        self._listener: trio.SocketListener | None = None
        self._handler = RequestHandler(
            resolver or system_resolve,
            connector or system_connect,
            RelayLimits(idle_timeout_s, connect_timeout_s, resolve_timeout_s),
            own_port=lambda: self._port,
        )
        self._views: dict[str, ProxyView] = {}
        self._root = self.add_view(
            policy, approver=approver, remembered=remembered, agent_path=agent_path, token=root_token
        )

    @property
    def port(self) -> int:
        """The bound port (0 before the first bind)."""
        return self._port

    @property
    def root_view(self) -> ProxyView:
        """The view of the session that owns the proxy."""
        return self._root

    @property
    def active_connections(self) -> int:
        """Client connections being served right now."""
        return self._active

    def view(self, token: str) -> ProxyView | None:
        """The view registered under ``token``, if any."""
        return self._views.get(token)

    def add_view(
        self,
        policy: NetworkPolicy,
        *,
        emit: Emit | None = None,
        approver: Approver | None = None,
        remembered: RememberedApprovals | None = None,
        agent_path: str = "",
        token: str | None = None,
    ) -> ProxyView:
        """Register a view (e.g. for a subagent) under ``token`` or a fresh random one (any thread)."""
        token = token or secrets.token_urlsafe(VIEW_TOKEN_BYTES)
        if not _TOKEN.fullmatch(token):
            raise ValueError("a view token must be URL-safe (letters, digits, '-', '_', '.', '~')")
        if token in self._views:
            raise ValueError("a view with this token exists already")
        gate = ApprovalGate(approver, remembered, self._approval_timeout_s)
        view = ProxyView(token, policy, gate, emit or self._emit, agent_path)
        self._views[token] = view
        return view

    def remove_view(self, token: str) -> bool:
        """Forget a view; its token gets 407 from then on. The root view cannot be removed."""
        if token == self._root.token:
            return False
        return self._views.pop(token, None) is not None

    def set_policy(self, policy: NetworkPolicy, token: str | None = None) -> None:
        """Replace the policy of the root view (or of the view ``token``); the next request uses it."""
        view = self._root if token is None else self._views[token]
        view.set_policy(policy)

    def proxy_url(self, token: str | None = None) -> str:
        """The URL a process should use as its proxy (with ``token`` as user name when given)."""
        return proxy_url(self._port, token, self._host)

    def env(self, token: str | None = None) -> dict[str, str]:
        """``proxy_env`` for this server's port."""
        return proxy_env(self._port, token, self._host)

    async def bind(self) -> int:
        """Open the listening socket (the port of the previous bind if there was one); returns the port."""
        if self._listener is not None:
            return self._port
        family = trio.socket.AF_INET6 if ":" in self._host else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await sock.bind((self._host, self._port or self._requested_port))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._listener = trio.SocketListener(sock)
        self._port = sock.getsockname()[1]
        return self._port

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind if needed and serve until cancelled; reports the port through ``task_status``."""
        await self.bind()
        listener = self._listener
        assert listener is not None
        try:
            async with trio.open_nursery() as nursery:
                url = self.proxy_url()
                listening = network_pb2.NetworkProxyListening(host=self._host, port=self._port, proxy_url=url)
                self._root.send_event(listening)
                logger.info("network proxy listening on %s", self.proxy_url())
                task_status.started(self._port)
                await trio.serve_listeners(self._serve_connection, [listener], handler_nursery=nursery)
        finally:
            self._listener = None
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def _view_for(self, head: MessageHead) -> ProxyView | None:
        credentials = head.get("proxy-authorization")
        if credentials is None:
            return self._root if self._allow_anonymous else None
        scheme, _, encoded = credentials.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return self._views.get(decoded.partition(":")[0])

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        self._active += 1
        try:
            async with stream:
                if self._active > self._max_connections:
                    await stream.send_all(error_response(503, "too many connections"))
                    return
                reader = BufferedReader(stream)
                while await self._serve_request(reader, stream):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            logger.exception("proxy connection failed")
        finally:
            self._active -= 1

    async def _serve_request(self, reader: BufferedReader, stream: trio.SocketStream) -> bool:
        raw: bytes | None = None
        with trio.move_on_after(self._idle_timeout_s):
            try:
                raw = await reader.receive_head()
                head = parse_request_head(raw)
            except StreamEnded:
                return False
            except HeadTooLarge:
                await stream.send_all(error_response(431, "request head too large"))
                return False
            except MalformedMessage as exc:
                await stream.send_all(error_response(400, f"malformed request: {exc}"))
                return False
        if raw is None:
            return False
        view = self._view_for(head)
        if view is None:
            extra = [("Proxy-Authenticate", PROXY_AUTH_REALM), ("x-proxy-error", "unknown-proxy-view")]
            await stream.send_all(error_response(407, "unknown proxy view", extra))
            return False
        return await self._handler.handle(view, head, reader, stream)
