"""Names the model sees for MCP tools: ``mcp__SERVER__TOOL``, sanitised, bounded and unique.

Contract:
- Every character outside ``[a-zA-Z0-9_-]`` becomes ``_``; a name is at most ``MAX_TOOL_NAME_LEN`` (64)
  characters. A longer one keeps its start and ends with ``_`` + the first ``HASH_SUFFIX_LEN`` hex digits of
  the SHA-1 of the raw ``server\\0tool`` pair, so the name is stable across runs and processes.
- ``assign_tool_names`` gives every (server, tool) a distinct name. Servers are taken in configuration order,
  and within a server the tools whose names needed no sanitising come first, so a clash (``foo.bar`` vs
  ``foo_bar``, or ``a`` + ``b__c`` vs ``a__b`` + ``c``) never takes a name from a tool that had it first: the
  later one gets the hash suffix. A second server can therefore never shadow a tool of the first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "HASH_SUFFIX_LEN",
    "MAX_TOOL_NAME_LEN",
    "TOOL_NAME_PREFIX",
    "ToolRef",
    "assign_tool_names",
    "qualified_tool_name",
    "sanitize",
]

#: Tool-name length limit of the model APIs (OpenAI function names).
MAX_TOOL_NAME_LEN = 64
#: Hex digits of the SHA-1 used to shorten or disambiguate a name (32 bits: clashes are retried anyway).
HASH_SUFFIX_LEN = 8
#: Prefix and separator of qualified names, as in Codex.
TOOL_NAME_PREFIX = "mcp"
DELIMITER = "__"

_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class ToolRef:
    """Which server and which of its tools a qualified name stands for."""

    server: str
    tool: str


def sanitize(text: str) -> str:
    """Replace every character outside ``[a-zA-Z0-9_-]`` by ``_``."""
    return _INVALID.sub("_", text)


def _digest(server: str, tool: str, salt: int = 0) -> str:
    raw = f"{server}\0{tool}" if salt == 0 else f"{server}\0{tool}\0{salt}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:HASH_SUFFIX_LEN]


def _with_suffix(name: str, suffix: str) -> str:
    keep = MAX_TOOL_NAME_LEN - len(suffix) - 1
    return f"{name[:keep]}_{suffix}"


def qualified_tool_name(server: str, tool: str) -> str:
    """The name of one tool on its own (no clash handling): ``mcp__SERVER__TOOL``, sanitised, <= 64 chars."""
    name = sanitize(f"{TOOL_NAME_PREFIX}{DELIMITER}{server}{DELIMITER}{tool}")
    if len(name) <= MAX_TOOL_NAME_LEN:
        return name
    return _with_suffix(name, _digest(server, tool))


def _needed_sanitising(server: str, tool: str) -> bool:
    return sanitize(server) != server or sanitize(tool) != tool


def assign_tool_names(
    servers: Iterable[tuple[str, Sequence[str]]], existing: Mapping[str, ToolRef] | None = None
) -> dict[str, ToolRef]:
    """Distinct qualified names for every (server, tool), servers in the given (configuration) order.

    Names in ``existing`` are kept as they are (a name the model has seen never moves to another tool);
    only tools without a name get one.
    """
    assigned: dict[str, ToolRef] = dict(existing or {})
    named = set(assigned.values())
    for server, tools in servers:
        # Stable order inside one server: untouched names first, then by name, so the server's own listing
        # order cannot move a name from one tool to another between runs.
        ordered = sorted(dict.fromkeys(tools), key=lambda tool: (_needed_sanitising(server, tool), tool))
        for tool in ordered:
            ref = ToolRef(server=server, tool=tool)
            if ref in named:
                continue
            name = qualified_tool_name(server, tool)
            salt = 0
            while name in assigned:
                name = _with_suffix(qualified_tool_name(server, tool), _digest(server, tool, salt))
                salt += 1
            assigned[name] = ref
            named.add(ref)
    return assigned
