"""The SSE decoder: the same events however the bytes are split, and the spec's line and field rules."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from actors.providers._sse import SseDecoder, SseEvent

STREAM = (
    "\ufeff: a comment first\r\n"
    "event: response.created\r\n"
    'data: {"type": "response.created"}\r\n'
    "\r\n"
    "data: first line\n"
    "data:second line\n"
    "data:  two spaces keep one\n"
    "id: 7\n"
    "retry: 100\n"
    "unknown: ignored\n"
    "\n"
    "event: only-a-name\n"
    "\n"
    "data: é ü ✓ 🙂\r"
    "\r"
    "data\n"
    "\n"
).encode()

EXPECTED = [
    SseEvent("response.created", '{"type": "response.created"}'),
    SseEvent("message", "first line\nsecond line\n two spaces keep one", "7"),
    SseEvent("message", "é ü ✓ 🙂", "7"),  # the last id stays in force
    SseEvent("message", "", "7"),  # "data" without a colon: a data field with an empty value
]


def decode(chunks: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    assert decoder.close() == 0
    return events


def test_whole_stream() -> None:
    assert decode([STREAM]) == EXPECTED


def test_every_single_split_point() -> None:
    """Split once at every byte: inside CRLF, inside a multi-byte character, inside a field name."""
    for cut in range(len(STREAM) + 1):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_one_byte_at_a_time() -> None:
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    assert decode([STREAM[a:b] for a, b in itertools.pairwise(points)]) == EXPECTED


def test_cr_then_lf_in_the_next_chunk_is_one_line_end() -> None:
    """A chunk ending on \\r and the next opening with \\n: one line end, not a blank line between."""
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [SseEvent("message", "a\nb")]


def test_unterminated_event_is_dropped_and_reported() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut off") == [SseEvent("message", "complete")]
    assert decoder.close() > 0
    decoder = SseDecoder()
    assert decoder.feed(b"data: no blank line yet\n") == []
    assert decoder.close() > 0


def test_bom_only_at_the_start() -> None:
    assert decode([b"\xef\xbb", b"\xbfdata: x\n\n"]) == [SseEvent("message", "x")]
    # later, the same bytes are data
    assert decode([b"data: \xef\xbb\xbfy\n\n"]) == [SseEvent("message", "\ufeffy")]
