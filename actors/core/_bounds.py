"""Bounding protobuf messages to a byte size: what the log stores and what a page of a listing carries.

Contract: ``shrink_message(msg, limit)`` edits ``msg`` in place until ``msg.ByteSize() <= limit``: it cuts the
largest string and bytes fields first (keeping their start and appending ``TRUNCATION_MARKER`` with the count of
bytes cut, so a reader sees that, and how much, text is missing), then, if that is not enough, drops elements of
the largest repeated fields. It returns True when it changed anything. Small messages cost one ``ByteSize``.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["TRUNCATION_MARKER", "shrink_message"]

#: Appended to a cut field: ``{n}`` is the number of bytes cut.
TRUNCATION_MARKER = "\n[... {n} bytes truncated by the server ...]"
#: Fields shorter than this are never cut (ids, names, enums stay intact).
MIN_CUT_BYTES = 256
#: Passes of cutting before repeated fields are dropped wholesale.
MAX_PASSES = 8

_Leaf = tuple[int, Message, FieldDescriptor, int]  # (size, owner, field, index in a repeated field or -1)


def _leaves(msg: Message, out: list[_Leaf]) -> None:
    for field, value in msg.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue
            for sub in (value if field.is_repeated else [value]):
                _leaves(sub, out)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            if field.is_repeated:
                out.extend((len(v), msg, field, i) for i, v in enumerate(value))
            else:
                out.append((len(value), msg, field, -1))


def _cut(value: str | bytes, keep: int) -> str | bytes:
    if isinstance(value, bytes):
        cut = len(value) - keep
        return value[:keep] + TRUNCATION_MARKER.format(n=cut).encode()
    raw = value.encode()
    cut = len(raw) - keep
    return raw[:keep].decode(errors="ignore") + TRUNCATION_MARKER.format(n=cut)


def shrink_message(msg: Message, limit: int) -> bool:
    """Cut ``msg``'s largest text fields (then repeated fields) until it serializes to at most ``limit`` bytes."""
    changed = False
    for _ in range(MAX_PASSES):
        excess = msg.ByteSize() - limit
        if excess <= 0:
            return changed
        leaves: list[_Leaf] = []
        _leaves(msg, leaves)
        leaves.sort(key=lambda leaf: leaf[0], reverse=True)
        for size, owner, field, index in leaves:
            if excess <= 0 or size < MIN_CUT_BYTES:
                break
            keep = max(MIN_CUT_BYTES // 2, size - excess - len(TRUNCATION_MARKER) - 16)
            if keep >= size:
                continue
            value = getattr(owner, field.name)
            if index >= 0:
                value[index] = _cut(value[index], keep)
            else:
                setattr(owner, field.name, _cut(value, keep))
            excess -= size - keep
            changed = True
    while (excess := msg.ByteSize() - limit) > 0:  # many small entries: drop the tail of the longest lists
        repeated = [(f, v) for f, v in msg.ListFields() if f.is_repeated and len(v) > 0]
        if repeated:
            _, value = max(repeated, key=lambda fv: len(fv[1]))
            del value[len(value) // 2:]
            changed = True
            continue
        subs = [(v.ByteSize(), f) for f, v in msg.ListFields()
                if f.type == FieldDescriptor.TYPE_MESSAGE and not f.is_repeated]
        if not subs:
            return changed  # only scalars left: nothing more to cut
        size, field = max(subs, key=lambda s: s[0])
        sub = getattr(msg, field.name)
        if not shrink_message(sub, max(0, size - excess)):
            sub.Clear()
        changed = True
    return changed
