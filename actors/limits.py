"""Request limits of the API, checked at the gateway before any session sees a request.

Contract: ``check_request(msg)`` walks every set field of a parsed request (nested messages included) and
raises a narrow error naming the field and its limit:
- a text or bytes field longer than its limit (``FIELD_BYTES`` by field name, else ``MAX_TEXT_BYTES``), or a
  list or map with more entries than its limit (``FIELD_ENTRIES``, else ``MAX_ENTRIES``): ``RequestTooLarge``
  (RESOURCE_EXHAUSTED);
- an enum value the schema does not define (proto3 parses any number): ``InvalidRequest`` (INVALID_ARGUMENT);
- a 64-bit unsigned number above ``MAX_INT64`` (what SQLite and the runtime can represent): ``OutOfRange``.
The limits are documented in ``protos/supervisor/v1/session.proto`` and the README.

Backpressure limits (``MAX_CONCURRENT_RPCS``, ``MAX_SESSION_INBOX``, ``RPC_THREAD_IDLE_EXIT_S``) are applied by
the gateway and ``check_inbox``: past them a client gets RESOURCE_EXHAUSTED naming the limit, never a silent drop.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from actors.errors import InvalidRequest, LimitExceeded, OutOfRange, RequestTooLarge

__all__ = [
    "FIELD_BYTES",
    "FIELD_ENTRIES",
    "LIST_ENTRY_BYTES",
    "LIST_PAGE_BYTES",
    "MAX_CONCURRENT_RPCS",
    "MAX_ENTRIES",
    "MAX_INT64",
    "MAX_PAGE_SIZE",
    "MAX_SESSION_INBOX",
    "MAX_TEXT_BYTES",
    "RPC_THREAD_IDLE_EXIT_S",
    "check_inbox",
    "check_request",
]

KIB = 1024
MIB = 1024 * KIB
#: Bytes of a text field without a limit of its own (ids, names, paths: PATH_MAX is 4096).
MAX_TEXT_BYTES = 4 * KIB
#: Entries of a list or map without a limit of its own.
MAX_ENTRIES = 1000
#: Largest number a 64-bit field may carry (SQLite INTEGER and sequence numbers are signed).
MAX_INT64 = 2**63 - 1
#: Text limits by field name (any request message).
FIELD_BYTES: dict[str, int] = {
    "input": 1 * MIB,  # SubmitRequest
    "message": 1 * MIB,  # SpawnAgent, SendAgentInput
    "arguments_json": 1 * MIB,  # McpToolCall
    "content_json": 1 * MIB,  # McpResolveElicitation
    "command": 128 * KIB,  # Exec
    "developer_instructions": 256 * KIB,
    "thread_name": 1 * KIB,
    "config_overrides": 16 * KIB,  # each entry
    "value": 32 * KIB,  # Exec env values
    "key": 1 * KIB,  # Exec env names
}
#: List limits by field name.
FIELD_ENTRIES: dict[str, int] = {
    "config_overrides": 64,
    "env": 256,
}
#: ListSessions: default and largest page, bytes of one entry, bytes of one page.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
LIST_ENTRY_BYTES = 64 * KIB
LIST_PAGE_BYTES = 1 * MIB

#: RPCs in flight at once (streams included), over which grpc answers RESOURCE_EXHAUSTED.
MAX_CONCURRENT_RPCS = 1000
#: Client requests waiting in one session's inbox before more are refused (a flood must not grow it unbounded).
MAX_SESSION_INBOX = 256
#: How long an idle gRPC handler thread lives (a burst of calls must not leave its threads behind).
RPC_THREAD_IDLE_EXIT_S = 1.0

_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)
_UNSIGNED64 = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)


def _text_size(value: str | bytes) -> int:
    return len(value) if isinstance(value, bytes) else len(value.encode(errors="surrogatepass"))


def _check_scalar(path: str, field: FieldDescriptor, value: object) -> None:
    if field.type in _TEXT:
        assert isinstance(value, str | bytes)
        limit = FIELD_BYTES.get(field.name, MAX_TEXT_BYTES)
        size = _text_size(value)
        if size > limit:
            raise RequestTooLarge(f"{path}: {size} bytes is over the limit of {limit} bytes")
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int) and field.enum_type is not None
        enum = field.enum_type
        if enum.values_by_number.get(value) is None:
            names = ", ".join(v.name for v in enum.values)
            raise InvalidRequest(f"{path}: {value} is not a value of {enum.name} ({names})")
    elif field.type in _UNSIGNED64:
        assert isinstance(value, int)
        if value > MAX_INT64:
            raise OutOfRange(f"{path}: {value} is above the largest accepted value {MAX_INT64}")


def check_request(msg: Message, prefix: str = "") -> None:
    """Raise ``RequestTooLarge``, ``InvalidRequest`` or ``OutOfRange`` for the first field over its bounds."""
    for field, value in msg.ListFields():
        path = f"{prefix}{field.name}"
        if field.is_repeated:
            limit = FIELD_ENTRIES.get(field.name, MAX_ENTRIES)
            if len(value) > limit:
                raise RequestTooLarge(f"{path}: {len(value)} entries is over the limit of {limit}")
            entry = field.message_type
            if entry is not None and entry.GetOptions().map_entry:
                key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
                for key, item in value.items():
                    _check_scalar(f"{path}.key", key_field, key)
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        check_request(item, f"{path}[{key!r}].")
                    else:
                        _check_scalar(f"{path}[{key!r}]", value_field, item)
                continue
            for index, item in enumerate(value):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    check_request(item, f"{path}[{index}].")
                else:
                    _check_scalar(f"{path}[{index}]", field, item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            check_request(value, f"{path}.")
        else:
            _check_scalar(path, field, value)


def check_inbox(session_id: str, waiting: int) -> None:
    """Refuse a client request to a session that already has ``MAX_SESSION_INBOX`` messages waiting."""
    if waiting >= MAX_SESSION_INBOX:
        raise LimitExceeded(f"session {session_id}: {waiting} requests already waiting in its inbox"
                            f" (MAX_SESSION_INBOX = {MAX_SESSION_INBOX}); retry when it has caught up")
