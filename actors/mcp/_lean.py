"""A lean MCP client for stdio servers: JSON-RPC 2.0 lines over the server's pipes, no SDK.

Why: ``import mcp`` costs 1-2.5 s of CPU here (the SDK loads its server side and two generations of pydantic
types), on the shared trio thread, before the first byte reaches a server. This client speaks the part of
the protocol a connection uses (the ``initialize`` handshake, ``tools/list`` with pagination, ``tools/call``,
``ping``; the server's ``elicitation/create`` and ``ping`` requests; the ``tools/list_changed`` notification)
with ``json`` over trio streams. Streamable-HTTP servers still use the SDK (``actors.mcp._transport``).

Contract:
- ``LeanClient(transport, ...)`` is an async context manager: entering it starts the reader in its own nursery
  and runs the handshake (``initialize`` then ``notifications/initialized``); leaving it stops the reader.
- ``list_tools(cursor=)`` and ``call_tool(name, arguments)`` return objects with the SDK's attribute names
  (``tools``/``next_cursor``; ``content``/``structured_content``/``is_error``, content blocks with ``type``,
  ``text``, ``mime_type``, ``data``, ``resource``, ``uri``), so ``fetch_tools`` and ``to_call_result`` read
  either. A JSON-RPC error answer raises ``McpRpcError`` (its text is the server's message); a connection
  that ends while a request waits, or whose input is closed, raises ``McpConnectionClosed`` (and the
  transport is told its output ended, which is how a dead server is noticed).
- Lines that are not JSON are logged and skipped; answers to unknown ids are ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace, TracebackType
from typing import Any, Protocol

import trio

__all__ = ["PROTOCOL_VERSION", "LeanClient", "McpConnectionClosed", "McpRpcError"]

logger = logging.getLogger(__name__)

#: The handshake revision offered (Codex 0.169 offers the same); the server's answer is accepted as it is.
PROTOCOL_VERSION = "2025-06-18"
#: Read size of the stdout reader.
READ_BYTES = 65536
#: Longest line accepted from a server (a larger one is a broken server, not a message).
MAX_LINE_BYTES = 64 * 1024 * 1024
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603


class McpRpcError(Exception):
    """A JSON-RPC error answer from the server."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class McpConnectionClosed(Exception):
    """The server's output ended while a request waited for its answer."""


class LineStreams(Protocol):
    """What the client needs of a transport: the server's stdout to read and its stdin to write."""

    async def receive_some(self, max_bytes: int) -> bytes: ...

    async def send_all(self, data: bytes) -> None: ...

    def output_ended(self) -> None: ...


ElicitFn = Callable[[str, Any, str], Awaitable[tuple[str, dict[str, Any] | None]]]


def _ns(value: Any) -> Any:
    """A JSON value with objects as attribute namespaces (camelCase keys also under their snake_case name)."""
    if isinstance(value, dict):
        fields = {}
        for key, item in value.items():
            converted = _ns(item)
            fields[key] = converted
            snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
            fields.setdefault(snake, converted)
        return SimpleNamespace(**fields)
    if isinstance(value, list):
        return [_ns(item) for item in value]
    return value


def _tool(raw: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(name=str(raw.get("name", "")), description=raw.get("description") or "",
                           input_schema=raw.get("inputSchema") or {})


def _block(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return SimpleNamespace(type="")
    block = _ns(raw)
    for name in ("text", "mime_type", "data", "uri", "resource"):
        if not hasattr(block, name):
            setattr(block, name, None)
    return block


class LeanClient:
    """One initialized MCP session over a stdio server's pipes (see the module docstring)."""

    def __init__(self, streams: LineStreams, *, client_info: tuple[str, str],
                 elicit: ElicitFn | None = None, on_tools_changed: Callable[[], None] | None = None) -> None:
        self._streams = streams
        self._client_info = client_info
        self._elicit = elicit
        self._on_tools_changed = on_tools_changed
        self._next_id = 0
        self._pending: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._write_lock = trio.Lock()
        self._closed = False
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None
        self.server_info: dict[str, Any] = {}
        self.protocol_version = ""

    async def __aenter__(self) -> LeanClient:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._read)
        try:
            result = await self.request("initialize", {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"elicitation": {}} if self._elicit is not None else {},
                "clientInfo": {"name": self._client_info[0], "version": self._client_info[1]},
            })
            self.protocol_version = str(result.get("protocolVersion", ""))
            self.server_info = dict(result.get("serverInfo") or {})
            await self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except BaseException as exc:
            self._nursery.cancel_scope.cancel()
            await self._nursery_manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        result: bool | None = await self._nursery_manager.__aexit__(exc_type, exc, tb)
        return result

    # --- requests -------------------------------------------------------------------------------------
    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and wait for its result (raises ``McpRpcError`` / ``McpConnectionClosed``)."""
        if self._closed:
            raise McpConnectionClosed("the server's connection is closed")
        self._next_id += 1
        request_id = self._next_id
        done, box = trio.Event(), list[Any]()
        self._pending[request_id] = (done, box)
        try:
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
            if params is not None:
                message["params"] = params
            await self._send(message)
            await done.wait()
        finally:
            self._pending.pop(request_id, None)
        answer = box[0]
        if isinstance(answer, BaseException):
            raise answer
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise McpRpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message", "error")),
                              error.get("data"))
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def list_tools(self, cursor: str | None = None) -> SimpleNamespace:
        """One page of ``tools/list``."""
        result = await self.request("tools/list", {"cursor": cursor} if cursor else {})
        tools = [_tool(t) for t in result.get("tools") or [] if isinstance(t, dict)]
        return SimpleNamespace(tools=tools, next_cursor=result.get("nextCursor") or None)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> SimpleNamespace:
        """``tools/call``; the result as the SDK's ``CallToolResult`` attributes."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments or {}})
        return SimpleNamespace(content=[_block(b) for b in result.get("content") or []],
                               structured_content=result.get("structuredContent"),
                               is_error=bool(result.get("isError", False)))

    async def send_ping(self) -> dict[str, Any]:
        """``ping``."""
        return await self.request("ping")

    # --- wire -----------------------------------------------------------------------------------------
    async def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        async with self._write_lock:
            try:
                await self._streams.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._streams.output_ended()  # its stdin is gone: the server exited (or is exiting)
                raise McpConnectionClosed(f"the server's input is closed: {exc!r}") from exc

    async def _read(self) -> None:
        buffer = b""
        try:
            while True:
                try:
                    chunk = await self._streams.receive_some(READ_BYTES)
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    chunk = b""
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_LINE_BYTES:
                    logger.warning("MCP server sent a line over %d bytes; closing", MAX_LINE_BYTES)
                    break
                for line in lines:
                    if line.strip():
                        self._dispatch(line)
        finally:
            self._closed = True
            for done, box in list(self._pending.values()):
                box.append(McpConnectionClosed("the server's connection closed"))
                done.set()
        self._streams.output_ended()  # the end of the output, not a cancelled reader

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            logger.warning("MCP server sent a line that is not JSON: %r", line[:200])
            return
        if not isinstance(message, dict):
            return
        method = message.get("method")
        if method is None:  # an answer
            waiting = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if waiting is not None:
                waiting[1].append(message)
                waiting[0].set()
            return
        if "id" in message:  # the server asks us
            assert self._nursery is not None
            self._nursery.start_soon(self._answer, message)
        elif method == "notifications/tools/list_changed" and self._on_tools_changed is not None:
            self._on_tools_changed()

    async def _answer(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params") or {}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "ping":
            reply["result"] = {}
        elif method == "elicitation/create" and self._elicit is not None:
            try:
                action, content = await self._elicit(str(params.get("message", "")), params.get("requestedSchema"),
                                                     str(params.get("url") or ""))
            except Exception as exc:
                reply["error"] = {"code": INTERNAL_ERROR, "message": str(exc)}
            else:
                reply["result"] = {"action": action, **({"content": content} if action == "accept" else {})}
        else:
            reply["error"] = {"code": METHOD_NOT_FOUND, "message": f"method not found: {method}"}
        try:
            await self._send(reply)
        except McpConnectionClosed:
            pass
