"""The model's agent tools for one session (``spawn_agent``, ``send_input``, ``wait``, ``close_agent``,
``resume_agent``): each sends the matching agent request to the session's actor from the trio loop."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import trio

from actors.agents._registry import AgentRegistry
from actors.providers import ToolSpec
from protos.supervisor.v1 import agents_pb2, envelope_pb2

__all__ = ["AgentTools"]


class AgentTools:
    """The model's agent tools for one session, called by the turn loop on the trio loop."""

    def __init__(self, session_ref: Any, session_id: str, registry: AgentRegistry) -> None:
        self._ref = session_ref
        self._session_id = session_id
        self._registry = registry

    def specs(self) -> list[Any]:
        """Tool specs in the provider interface's form."""
        def obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
            return {"type": "object", "properties": props, "required": required}

        text = {"type": "string"}
        return [
            ToolSpec("spawn_agent", "Start a subagent with a task; returns its agent_id and nickname.",
                     obj({"message": text, "agent_type": text, "model": text, "fork_context": {"type": "boolean"}},
                         ["message"])),
            ToolSpec("send_input", "Send more input to a subagent.",
                     obj({"agent_id": text, "message": text, "interrupt": {"type": "boolean"}},
                         ["agent_id", "message"])),
            ToolSpec("wait", "Wait until one of the subagents finishes (all of them with all=true), or the timeout.",
                     obj({"agent_ids": {"type": "array", "items": text}, "timeout_ms": {"type": "integer"},
                          "all": {"type": "boolean"}}, [])),
            ToolSpec("close_agent", "Close a subagent; returns its previous status.", obj({"agent_id": text},
                                                                                          ["agent_id"])),
            ToolSpec("resume_agent", "Resume a closed subagent from its log.", obj({"agent_id": text}, ["agent_id"])),
        ]

    async def _request(self, message: Any, timeout: float = 60.0) -> Any:
        envelope = envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(type_url=message.DESCRIPTOR.full_name,
                                                                    data=message.SerializeToString()))
        reply = await trio.to_thread.run_sync(lambda: self._ref.ask(envelope, timeout=timeout))
        if isinstance(reply, concurrent.futures.Future):
            return await trio.to_thread.run_sync(reply.result, abandon_on_cancel=True)
        return reply

    @staticmethod
    def _info(info: agents_pb2.AgentInfo) -> dict[str, Any]:
        return {"agent_id": info.agent_id, "nickname": info.nickname,
                "status": agents_pb2.AgentStatus.Name(info.status).removeprefix("AGENT_STATUS_").lower(),
                "message": info.last_message, "duration_ms": info.duration_ms}

    async def spawn_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """spawn_agent{message, agent_type?, model?, fork_context?} -> {agent_id, nickname}."""
        reply = await self._request(agents_pb2.SpawnAgentRequest(
            session_id=self._session_id, message=str(args.get("message", "")),
            agent_type=str(args.get("agent_type", "") or ""), model=str(args.get("model", "") or ""),
            fork_context=bool(args.get("fork_context", False)), traceparent=getattr(ctx, "traceparent", "")))
        return {"agent_id": reply.agent_id, "nickname": reply.nickname}

    async def send_input(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """send_input{agent_id, message, interrupt?}."""
        reply = await self._request(agents_pb2.SendAgentInputRequest(
            session_id=self._session_id, agent_id=str(args["agent_id"]), message=str(args.get("message", "")),
            interrupt=bool(args.get("interrupt", False))))
        return {"task_id": reply.task_id}

    async def wait(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """wait{agent_ids, timeout_ms} -> the first to finish plus any already final, or timed_out."""
        ids = args.get("agent_ids") or []
        if isinstance(ids, str):
            ids = json.loads(ids) if ids.startswith("[") else [ids]
        timeout_s = float(args.get("timeout_ms", 30_000)) / 1000
        for agent_id in ids:
            self._registry.get(str(agent_id))
        if not ids:
            ids = [r.info.agent_id for r in self._registry.children_of(self._session_id)]
        wait_for = self._registry.wait_all if args.get("all") else self._registry.wait
        finished, timed_out = await wait_for([str(i) for i in ids], timeout_s)
        return {"finished": [self._info(i) for i in finished], "timed_out": timed_out}

    async def close_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """close_agent{agent_id} -> previous status."""
        reply = await self._request(agents_pb2.CloseAgentRequest(session_id=self._session_id,
                                                                 agent_id=str(args["agent_id"])))
        return {"previous_status": agents_pb2.AgentStatus.Name(reply.previous).removeprefix("AGENT_STATUS_").lower()}

    async def resume_agent(self, args: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """resume_agent{agent_id}."""
        reply = await self._request(agents_pb2.ResumeAgentRequest(session_id=self._session_id,
                                                                  agent_id=str(args["agent_id"])))
        return self._info(reply.agent)

    async def wait_children(self, timeout_s: float) -> None:
        """The wait policy: hold the parent's turn until its running children are final."""
        ids = [r.info.agent_id for r in self._registry.children_of(self._session_id)]
        with trio.move_on_after(timeout_s):
            while True:
                pending = [i for i in ids if self._registry.get(i).info.status not in
                           (agents_pb2.AGENT_STATUS_COMPLETED, agents_pb2.AGENT_STATUS_ERRORED,
                            agents_pb2.AGENT_STATUS_CLOSED)]
                if not pending:
                    return
                await self._registry.wait(pending[:1], timeout_s)
