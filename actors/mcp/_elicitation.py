"""Elicitation requests from MCP servers: asked of the client by an event, answered from any thread.

Contract:
- With approval policy ``never`` every request is declined at once and nothing is emitted.
- Otherwise each request gets a unique id and is emitted as ``McpElicitationRequested``; the server's tool
  call waits until ``resolve(id, action, content_json)`` is called (from any thread) or ``timeout_s`` passes
  (then the answer is ``cancel``). The wait is also bounded by the tool call's own timeout, which cancels it.
- ``resolve`` returns False for an unknown, answered or timed-out id, and for content that is not a JSON
  object.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from google.protobuf.message import Message

from protos.supervisor.v1 import mcp_pb2

__all__ = ["APPROVAL_NEVER", "DEFAULT_ELICITATION_TIMEOUT_S", "ElicitationBroker"]

logger = logging.getLogger(__name__)

#: Approval policy under which nothing may ask the user.
APPROVAL_NEVER = "never"
#: How long a server's question waits for the user by default.
DEFAULT_ELICITATION_TIMEOUT_S = 300.0
#: Actions the MCP spec allows in an elicitation result.
ELICITATION_ACTIONS = ("accept", "decline", "cancel")

_ACTION_BY_ENUM = {
    mcp_pb2.MCP_ELICITATION_ACTION_ACCEPT: "accept",
    mcp_pb2.MCP_ELICITATION_ACTION_DECLINE: "decline",
    mcp_pb2.MCP_ELICITATION_ACTION_CANCEL: "cancel",
}


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    action: str = "cancel"
    content: dict[str, Any] | None = None


def action_name(action: str | int) -> str:
    """The spec's action string for an ``McpElicitationAction`` value or a string; unknown -> "cancel"."""
    if isinstance(action, int):
        return _ACTION_BY_ENUM.get(action, "cancel")  # type: ignore[call-overload]
    return action if action in ELICITATION_ACTIONS else "cancel"


class ElicitationBroker:
    """Turns one server's elicitation requests into events and waits for the client's answers."""

    def __init__(
        self,
        server: str,
        emit: Callable[[Message], None],
        *,
        approval_policy: str,
        timeout_s: float = DEFAULT_ELICITATION_TIMEOUT_S,
    ) -> None:
        self._server = server
        self._emit = emit
        self._approval_policy = approval_policy
        self._timeout_s = timeout_s
        self._pending: dict[str, _Pending] = {}
        self._token: trio.lowlevel.TrioToken | None = None

    def bind_loop(self) -> None:
        """Remember the trio loop this broker runs on (call it inside that loop); ``resolve`` needs it."""
        self._token = trio.lowlevel.current_trio_token()

    @property
    def pending_ids(self) -> list[str]:
        """Ids of the requests still waiting for an answer."""
        return list(self._pending)

    async def callback(self, context: Any, params: Any) -> Any:
        """The SDK's ``elicitation_callback``: answers one ``elicitation/create`` request."""
        import mcp_types as types

        action, content = await self.answer(params.message, getattr(params, "requested_schema", None),
                                            getattr(params, "url", None) or "")
        if action == "accept":
            return types.ElicitResult(action="accept", content=content or {})
        return types.ElicitResult(action=action)  # type: ignore[arg-type]

    async def answer(self, message: str, schema: Any, url: str = "") -> tuple[str, dict[str, Any] | None]:
        """Answer one ``elicitation/create`` request: (action, content), content only for "accept"."""
        if self._approval_policy == APPROVAL_NEVER:
            logger.info("declined elicitation from MCP server %s (approval policy never)", self._server)
            return "decline", None
        request_id = uuid.uuid4().hex
        if url:
            message = f"{message}\n{url}"
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            self._emit(
                mcp_pb2.McpElicitationRequested(
                    id=request_id,
                    server=self._server,
                    message=message,
                    schema_json=json.dumps(schema, sort_keys=True) if schema is not None else "",
                )
            )
            with trio.move_on_after(self._timeout_s):
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.action == "accept":
            return "accept", pending.content or {}
        return pending.action, None

    def _resolve_here(self, request_id: str, action: str, content: dict[str, Any] | None) -> bool:
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return False
        pending.action = action
        pending.content = content
        pending.done.set()
        return True

    def resolve(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending request (any thread); False when not pending or the content is not an object."""
        name = action_name(action)
        content: dict[str, Any] | None = None
        if name == "accept" and content_json:
            try:
                parsed = json.loads(content_json)
            except ValueError:
                return False
            if not isinstance(parsed, dict):
                return False
            content = parsed
        token = self._token
        if token is None:
            return False
        try:
            in_loop = trio.lowlevel.current_trio_token() is token
        except RuntimeError:
            in_loop = False
        if in_loop:
            return self._resolve_here(request_id, name, content)
        try:
            return trio.from_thread.run_sync(self._resolve_here, request_id, name, content, trio_token=token)
        except trio.RunFinishedError:
            return False
