"""An incremental server-sent events (SSE) decoder: bytes in, whole events out.

Contract (the WHATWG "event stream interpretation", the parts an API client needs):
- ``feed(data)`` takes any slice of the body (a chunk may end anywhere: inside a line, between ``\\r`` and
  ``\\n``, inside a multi-byte UTF-8 character) and returns the events completed by it, in order.
- Lines end with ``\\r\\n``, ``\\n`` or ``\\r``. A blank line dispatches the event being built; an event with no
  ``data`` field is not dispatched. ``data`` lines join with ``\\n``; one space after the colon is dropped; a
  line starting with ``:`` is a comment; a line without a colon is a field with an empty value; unknown
  fields are ignored. A UTF-8 byte order mark at the very start is skipped.
- ``close()`` ends the stream: an event not yet terminated by a blank line is discarded (as the spec says),
  and the number of bytes left over is returned so a caller can tell a cut stream from a clean end.
- Pure and synchronous: it does no I/O, so it costs the same on any event loop.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SseDecoder", "SseEvent"]

_BOM = "\ufeff"


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its type (``message`` unless an ``event:`` field named it), data, and id."""

    event: str
    data: str
    id: str = ""


class SseDecoder:
    """Turns an SSE byte stream into ``SseEvent``s, however the bytes are split."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        #: A chunk ended on ``\r``: a ``\n`` opening the next chunk belongs to that line end.
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        self._last_id = ""

    def feed(self, data: bytes) -> list[SseEvent]:
        """Decode ``data`` and return the events it completed."""
        text = self._utf8.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = False
        self._buffer += text
        events: list[SseEvent] = []
        buffer = self._buffer
        start = 0
        length = len(buffer)
        while start < length:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                end, next_start = lf, lf + 1
            elif cr == length - 1:
                # a lone \r at the end: the line is complete, but a \n may still follow in the next chunk
                end, next_start = cr, cr + 1
                self._after_cr = True
            else:
                end = cr
                next_start = cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = next_start
        self._buffer = buffer[start:]
        return events

    def close(self) -> int:
        """End the stream; return how many characters of an unterminated line or event were dropped."""
        rest = self._buffer + self._utf8.decode(b"", final=True)
        pending = len(rest) + (1 if self._has_data else 0)
        self._buffer = ""
        self._reset()
        return pending

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None  # "retry" and unknown fields: nothing an API client acts on

    def _dispatch(self) -> SseEvent | None:
        if not self._has_data:
            self._event = ""
            return None
        event = SseEvent(self._event or "message", "\n".join(self._data), self._last_id)
        self._reset()
        return event

    def _reset(self) -> None:
        self._event = ""
        self._data = []
        self._has_data = False
