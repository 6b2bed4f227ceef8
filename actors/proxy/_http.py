"""Minimal, strict HTTP/1.1 framing for the network proxy (trio streams; no policy).

Contract:
- ``BufferedReader`` reads a message head (request or status line plus headers, up to ``CRLF CRLF``) of at
  most ``MAX_HEAD_BYTES``; a longer head raises ``HeadTooLarge`` (431), an end of stream inside a head
  raises ``MalformedMessage`` and one before any byte raises ``StreamEnded``. Bytes read past the head stay
  buffered for the body or the tunnel.
- Parsing is strict, because the proxy stands between two parsers: CRLF line ends only, no obs-fold, token
  methods and header names, visible-ASCII targets, ``HTTP/1.0`` or ``HTTP/1.1`` only, at most
  ``MAX_HEADERS`` headers. ``Transfer-Encoding`` other than a lone ``chunked``, or together with
  ``Content-Length``, or conflicting ``Content-Length`` values are refused (request smuggling).
- ``relay_body`` copies one body from a reader to a stream as framed (fixed length, chunked with trailers,
  or until the end of stream), calling ``progress`` after each piece; it never buffers a whole body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.proxy._hosts import split_authority

__all__ = [
    "HOP_BY_HOP",
    "HTTP_DEFAULT_PORT",
    "MAX_HEAD_BYTES",
    "NO_BODY",
    "UNTIL_CLOSE",
    "BufferedReader",
    "Framing",
    "HeadTooLarge",
    "MalformedMessage",
    "MessageHead",
    "StreamEnded",
    "error_response",
    "parse_absolute_target",
    "parse_request_head",
    "parse_response_head",
    "relay_body",
    "render_head",
    "request_framing",
    "response_framing",
]

#: Largest request or response head (start line + headers) accepted.
MAX_HEAD_BYTES = 32 * 1024
#: Most header fields in one head.
MAX_HEADERS = 128
#: Largest chunk-size line (with extensions) or trailer line in a chunked body.
MAX_CHUNK_LINE_BYTES = 4096
#: Default port of an ``http://`` target without one.
HTTP_DEFAULT_PORT = 80
#: Bytes asked of a socket per read.
READ_CHUNK_BYTES = 64 * 1024
#: Headers meaningful for one connection only: never forwarded (RFC 9110 7.6.1), plus proxy credentials.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
_FIELD_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
_STATUS = re.compile(rb"^(HTTP/1\.[01]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?$")
_CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?$")
_CONTENT_LENGTH = re.compile(r"^[0-9]{1,18}$")

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class MalformedMessage(Exception):
    """Raised when bytes on the wire are not an HTTP/1.x message the proxy accepts."""


class HeadTooLarge(MalformedMessage):
    """Raised when a message head exceeds ``MAX_HEAD_BYTES`` or ``MAX_HEADERS``."""


class StreamEnded(Exception):
    """Raised when the peer closed the stream before sending any byte of a new message."""


@dataclass
class MessageHead:
    """A parsed request or response head; header names keep their case, lookups ignore it."""

    start: tuple[str, str, str]  # (method, target, version) or (version, status, reason)
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        lowered = name.lower()
        return [v for k, v in self.headers if k.lower() == lowered]

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        found = self.values(name)
        return found[0] if found else None

    def connection_tokens(self) -> set[str]:
        """Lower-cased tokens of every ``Connection`` header."""
        return {t.strip().lower() for v in self.values("connection") for t in v.split(",") if t.strip()}


@dataclass(frozen=True)
class Framing:
    """How a body ends: after ``length`` bytes, after the last chunk, or at the end of the stream."""

    length: int | None = 0
    chunked: bool = False

    @property
    def until_close(self) -> bool:
        """True when the body runs to the end of the stream."""
        return self.length is None and not self.chunked


NO_BODY = Framing(0)
UNTIL_CLOSE = Framing(None)


class BufferedReader:
    """A receive stream with a look-ahead buffer, for reading heads, bodies and then raw bytes."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self.stream.receive_some(READ_CHUNK_BYTES)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    @property
    def buffered(self) -> int:
        """Bytes already read from the stream and not consumed yet."""
        return len(self._buffer)

    async def receive_some(self, max_bytes: int = READ_CHUNK_BYTES) -> bytes:
        """Buffered bytes first, then the stream; b"" at the end of the stream."""
        if self._buffer:
            data = bytes(self._buffer[:max_bytes])
            del self._buffer[:max_bytes]
            return data
        if self._eof:
            return b""
        received = bytes(await self.stream.receive_some(max_bytes))
        if not received:
            self._eof = True
        return received

    async def receive_head(self, limit: int = MAX_HEAD_BYTES) -> bytes:
        """One message head without its final CRLF CRLF (leading empty lines skipped)."""
        searched = 0
        while True:
            while self._buffer.startswith(b"\r\n"):
                del self._buffer[:2]
            end = self._buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                if end + 4 > limit:
                    raise HeadTooLarge("message head too large")
                head = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                return head
            if len(self._buffer) > limit:
                raise HeadTooLarge("message head too large")
            searched = len(self._buffer)
            if not await self._fill():
                if self._buffer:
                    raise MalformedMessage("stream ended inside a message head")
                raise StreamEnded

    async def receive_line(self, limit: int) -> bytes:
        """One CRLF-terminated line (without the CRLF) of at most ``limit`` bytes."""
        while True:
            end = self._buffer.find(b"\r\n")
            if 0 <= end <= limit:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            if len(self._buffer) > limit + 1:
                raise MalformedMessage("line too long")
            if not await self._fill():
                raise MalformedMessage("stream ended inside a line")

    async def receive_at_most(self, count: int) -> bytes:
        """Up to ``count`` bytes (at least one); raises ``MalformedMessage`` at the end of the stream."""
        data = await self.receive_some(min(count, READ_CHUNK_BYTES))
        if not data:
            raise MalformedMessage("stream ended inside a body")
        return data


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    if len(lines) > MAX_HEADERS:
        raise HeadTooLarge("too many header fields")
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise MalformedMessage("bad header line")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.match(value):
            raise MalformedMessage("bad header value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return headers


def _split_lines(raw: bytes) -> list[bytes]:
    if b"\r" in raw.replace(b"\r\n", b"") or b"\n" in raw.replace(b"\r\n", b""):
        raise MalformedMessage("bare CR or LF in a message head")
    return raw.split(b"\r\n")


def parse_request_head(raw: bytes) -> MessageHead:
    """Parse a request head; raises ``MalformedMessage``."""
    lines = _split_lines(raw)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise MalformedMessage("bad request line")
    method, target, version = parts
    if not _TOKEN.match(method) or not _TARGET.match(target) or not _VERSION.match(version):
        raise MalformedMessage("bad request line")
    return MessageHead((method.decode(), target.decode(), version.decode()), _parse_headers(lines[1:]))


def parse_response_head(raw: bytes) -> MessageHead:
    """Parse a response head; raises ``MalformedMessage``."""
    lines = _split_lines(raw)
    match = _STATUS.match(lines[0])
    if match is None:
        raise MalformedMessage("bad status line")
    version, status, reason = match.group(1), match.group(2), match.group(3) or b""
    start = (version.decode(), status.decode(), reason.decode("latin-1"))
    return MessageHead(start, _parse_headers(lines[1:]))


def _content_length(head: MessageHead) -> int | None:
    values = {v.strip() for raw in head.values("content-length") for v in raw.split(",")}
    if not values:
        return None
    if len(values) != 1 or not _CONTENT_LENGTH.match(next(iter(values))):
        raise MalformedMessage("bad or conflicting Content-Length")
    return int(next(iter(values)))


def request_framing(head: MessageHead) -> Framing:
    """The body framing of a request; raises ``MalformedMessage`` for ambiguous framings."""
    codings = [c.strip().lower() for v in head.values("transfer-encoding") for c in v.split(",")]
    length = _content_length(head)
    if codings:
        if codings != ["chunked"] or length is not None:
            raise MalformedMessage("unsupported or ambiguous Transfer-Encoding")
        return Framing(None, chunked=True)
    return Framing(length or 0)


def response_framing(head: MessageHead, request_method: str) -> Framing:
    """The body framing of a response to ``request_method`` (RFC 9112 6.3)."""
    status = int(head.start[1])
    if request_method == "HEAD" or status < 200 or status in (204, 304):
        return NO_BODY
    codings = [c.strip().lower() for v in head.values("transfer-encoding") for c in v.split(",")]
    if codings:
        return Framing(None, chunked=True) if codings[-1] == "chunked" else UNTIL_CLOSE
    length = _content_length(head)
    return UNTIL_CLOSE if length is None else Framing(length)


async def relay_body(
    reader: BufferedReader,
    out: trio.abc.SendStream,
    framing: Framing,
    progress: Callable[[int], None],
    head: bytes = b"",
) -> None:
    """Send ``head``, then copy one body as framed from ``reader`` to ``out``; ``progress(n)`` after each
    piece sent. A head goes out with the first body piece when that piece is already buffered (one write
    instead of two for small responses), and alone otherwise (never held back waiting for the body)."""
    if head and (framing.chunked or not reader.buffered or framing.length == 0):
        await out.send_all(head)
        progress(len(head))
        head = b""
    if framing.chunked:
        await _relay_chunked(reader, out, progress)
        return
    remaining = framing.length
    while remaining is None or remaining > 0:
        if remaining is None:
            data = await reader.receive_some()
            if not data:
                break
        else:
            data = await reader.receive_at_most(remaining)
            remaining -= len(data)
        await out.send_all(head + data if head else data)
        progress(len(head) + len(data))
        head = b""
    if head:
        await out.send_all(head)
        progress(len(head))


async def _relay_chunked(
    reader: BufferedReader, out: trio.abc.SendStream, progress: Callable[[int], None]
) -> None:
    while True:
        line = await reader.receive_line(MAX_CHUNK_LINE_BYTES)
        match = _CHUNK_SIZE.match(line)
        if match is None:
            raise MalformedMessage("bad chunk size line")
        size = int(match.group(1), 16)
        await out.send_all(line + b"\r\n")
        progress(len(line) + 2)
        if size == 0:
            break
        remaining = size
        while remaining:
            data = await reader.receive_at_most(remaining)
            remaining -= len(data)
            await out.send_all(data)
            progress(len(data))
        if await reader.receive_line(0) != b"":
            raise MalformedMessage("chunk data longer than its size")
        await out.send_all(b"\r\n")
        progress(2)
    while True:  # trailer fields, then the final empty line
        line = await reader.receive_line(MAX_CHUNK_LINE_BYTES)
        if line and not _FIELD_VALUE.match(line):
            raise MalformedMessage("bad trailer line")
        await out.send_all(line + b"\r\n")
        progress(len(line) + 2)
        if not line:
            return


def parse_absolute_target(target: str) -> tuple[str, int, str]:
    """Split an absolute ``http://`` request target into (host, port, origin-form path)."""
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() != "http":
        raise MalformedMessage("a forward proxy request needs an absolute http:// target")
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "#" in path:
        raise MalformedMessage("fragments are not sent in requests")
    host, port = split_authority(authority, HTTP_DEFAULT_PORT)
    if not path.startswith("/"):
        path = "/" + path
    return host, port, path


def render_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    """Serialise a start line and headers, ending with the empty line."""
    lines = [start_line, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def error_response(status: int, message: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A complete short plain-text response that closes the connection."""
    body = (message + "\n").encode("utf-8")
    headers = [
        *(extra or []),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return render_head(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers) + body
