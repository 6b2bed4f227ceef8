"""Turning SDK tool listings and call results into bounded protobuf messages.

Contract:
- ``ToolSpec.fingerprint`` is what a tool was accepted as: its description and input schema, as canonical
  JSON. Two listings of the same tool compare equal exactly when neither changed.
- ``to_call_result`` keeps at most ``MAX_RESULT_TEXT_BYTES`` of text: the text is cut on a UTF-8 boundary and
  ends with a marker line that says how much was shown of how much; structured content larger than
  ``MAX_STRUCTURED_BYTES`` is dropped (``truncated`` says so). Non-text content is summarised in the text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from protos.supervisor.v1 import mcp_pb2

__all__ = ["MAX_RESULT_TEXT_BYTES", "MAX_STRUCTURED_BYTES", "ToolSpec", "to_call_result", "truncate_text"]

#: Text of one tool result kept for the model (Codex bounds tool output similarly).
MAX_RESULT_TEXT_BYTES = 256 * 1024
#: Structured content of one result kept, serialised.
MAX_STRUCTURED_BYTES = 256 * 1024


@dataclass(frozen=True)
class ToolSpec:
    """One tool as its server listed it."""

    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def schema_json(self) -> str:
        """The input schema as canonical JSON."""
        return json.dumps(self.input_schema, sort_keys=True)

    @property
    def fingerprint(self) -> str:
        """Canonical description + schema; a change of either changes it."""
        return json.dumps({"description": self.description, "input_schema": self.input_schema}, sort_keys=True)

    def to_proto(self, server: str, qualified_name: str = "") -> mcp_pb2.McpTool:
        """The tool as an ``McpTool`` message."""
        return mcp_pb2.McpTool(
            name=qualified_name,
            server=server,
            tool=self.name,
            description=self.description,
            input_schema_json=self.schema_json,
        )


def tool_spec_from_sdk(tool: Any) -> ToolSpec:
    """A ``ToolSpec`` from an SDK ``Tool``."""
    return ToolSpec(name=tool.name, description=tool.description or "", input_schema=dict(tool.input_schema or {}))


def truncate_text(text: str, limit: int = MAX_RESULT_TEXT_BYTES) -> tuple[str, bool, int]:
    """(text cut to ``limit`` UTF-8 bytes plus a marker line, whether it was cut, total bytes)."""
    data = text.encode("utf-8")
    total = len(data)
    if total <= limit:
        return text, False, total
    head = data[:limit].decode("utf-8", errors="ignore")
    shown = len(head.encode("utf-8"))
    return f"{head}\n[... output truncated: showed {shown} of {total} bytes ...]", True, total


def _describe_block(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind}: {block.mime_type}, {len(block.data)} base64 characters]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        return str(text) if text is not None else f"[resource: {resource.uri}]"
    if kind == "resource_link":
        return f"[resource link: {block.uri}]"
    return f"[{kind or 'unknown'} content]"


def to_call_result(server: str, tool: str, result: Any, duration_s: float) -> mcp_pb2.McpToolCallResult:
    """An ``McpToolCallResult`` from an SDK ``CallToolResult``, bounded in size."""
    text, truncated, total = truncate_text("\n".join(_describe_block(block) for block in result.content))
    structured = ""
    if result.structured_content is not None:
        structured = json.dumps(result.structured_content, sort_keys=True)
        if len(structured.encode("utf-8")) > MAX_STRUCTURED_BYTES:
            structured = ""
            truncated = True
    return mcp_pb2.McpToolCallResult(
        server=server,
        tool=tool,
        is_error=bool(result.is_error),
        text=text,
        structured_content_json=structured,
        truncated=truncated,
        total_bytes=total,
        duration_ms=int(duration_s * 1000),
    )
