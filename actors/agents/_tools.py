"""The model's agent tools for one session (``spawn_agent``, ``send_input``, ``wait``, ``close_agent``,
``resume_agent``): each sends the matching agent request to the session's actor from the trio loop."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Any

import trio

from actors.agents._registry import AgentRegistry
from actors.errors import SupervisorError
from actors.providers import ToolSpec
from protos.supervisor.v1 import agents_pb2, envelope_pb2, tools_pb2

__all__ = ["AgentToolError", "AgentTools", "codex_status"]

#: wait_agent's bounds, as Codex ("Defaults to 30000, min 10000, max 3600000").
WAIT_DEFAULT_MS = 30_000
WAIT_MIN_MS = 10_000
WAIT_MAX_MS = 3_600_000
MS_PER_S = 1000.0
_FINAL = (agents_pb2.AGENT_STATUS_COMPLETED, agents_pb2.AGENT_STATUS_ERRORED, agents_pb2.AGENT_STATUS_CLOSED)


class AgentToolError(Exception):
    """A Codex agent tool call the model made wrong (bad id, bad timeout); the text is what the model reads."""


def codex_status(info: agents_pb2.AgentInfo | None) -> Any:
    """An agent's status as Codex serialises it: "running", {"completed": msg}, {"errored": msg}, ..."""
    if info is None:
        return "not_found"
    if info.status == agents_pb2.AGENT_STATUS_COMPLETED:
        return {"completed": info.last_message or None}
    if info.status == agents_pb2.AGENT_STATUS_ERRORED:
        return {"errored": info.last_message}
    if info.status == agents_pb2.AGENT_STATUS_CLOSED:
        return "shutdown"
    if info.status == agents_pb2.AGENT_STATUS_RUNNING:
        return "running"
    return "pending_init"


def _state(status: Any) -> tools_pb2.CollabAgentState:
    if isinstance(status, dict):
        (name, message), = status.items()
        return tools_pb2.CollabAgentState(status=name, message=message or "")
    return tools_pb2.CollabAgentState(status=str(status))


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

    # --- the two tool sets -------------------------------------------------------------------------
    def classic_tools(self) -> list[tuple[ToolSpec, Any]]:
        """(spec, method) of the classic agent tools (spawn_agent, send_input, wait, close_agent, resume_agent)."""
        return [(spec, getattr(self, spec.name)) for spec in self.specs()]

    def codex_tools(self) -> dict[str, Any]:
        """Tool name -> method of Codex 0.169's agent tools (their specs are the turn's, in Codex's namespace)."""
        return {"spawn_agent": self.codex_spawn_agent, "send_input": self.codex_send_input,
                "wait_agent": self.codex_wait_agent, "close_agent": self.codex_close_agent,
                "resume_agent": self.codex_resume_agent}

    def _status_of(self, agent_id: str) -> Any:
        try:
            return codex_status(self._registry.get(agent_id).info)
        except SupervisorError:
            return None

    async def _collab(self, ctx: Any, call_id: str, tool: str, receivers: list[str], prompt: str, *, run: Any
                      ) -> dict[str, Any]:
        """Run one collaboration, framed by CollabToolCallBegin/End (Codex's collab_tool_call item)."""
        sender = getattr(ctx, "session_id", self._session_id)
        emit = getattr(ctx, "emit", None)
        if emit is not None:
            emit(tools_pb2.CollabToolCallBegin(call_id=call_id, tool=tool, sender_thread_id=sender,
                                               receiver_thread_ids=receivers, prompt=prompt))
        error = ""
        answer: dict[str, Any] = {}
        try:
            answer, receivers = await run()
        except (SupervisorError, AgentToolError) as exc:
            error = str(exc)
            raise AgentToolError(error) from exc
        finally:
            if emit is not None:
                states = {r: _state(self._status_of(r) or "not_found") for r in receivers}
                emit(tools_pb2.CollabToolCallEnd(call_id=call_id, tool=tool, sender_thread_id=sender,
                                                 receiver_thread_ids=receivers, prompt=prompt, agents_states=states,
                                                 success=not error, error=error))
        return answer

    @staticmethod
    def _message(args: dict[str, Any]) -> str:
        message = args.get("message")
        if isinstance(message, str):
            return message
        texts = [item.get("text", "") for item in args.get("items") or [] if isinstance(item, dict)]
        return "\n".join(t for t in texts if isinstance(t, str))

    async def codex_spawn_agent(self, args: dict[str, Any], ctx: Any, call_id: str = "") -> dict[str, Any]:
        """spawn_agent{message|items, fork_context?, model?, reasoning_effort?} -> {agent_id, nickname}."""
        prompt = self._message(args)

        async def run() -> tuple[dict[str, Any], list[str]]:
            reply = await self._request(agents_pb2.SpawnAgentRequest(
                session_id=self._session_id, message=prompt, model=str(args.get("model", "") or ""),
                fork_context=bool(args.get("fork_context", False)), traceparent=getattr(ctx, "traceparent", "")))
            return {"agent_id": reply.agent_id, "nickname": reply.nickname}, [reply.agent_id]

        return await self._collab(ctx, call_id, "spawn_agent", [], prompt, run=run)

    async def codex_send_input(self, args: dict[str, Any], ctx: Any, call_id: str = "") -> dict[str, Any]:
        """send_input{target, message|items, interrupt?} -> {submission_id}."""
        target = str(args.get("target", ""))
        prompt = self._message(args)

        async def run() -> tuple[dict[str, Any], list[str]]:
            reply = await self._request(agents_pb2.SendAgentInputRequest(
                session_id=self._session_id, agent_id=target, message=prompt,
                interrupt=bool(args.get("interrupt", False))))
            return {"submission_id": reply.task_id}, [target]

        return await self._collab(ctx, call_id, "send_input", [target], prompt, run=run)

    async def codex_wait_agent(self, args: dict[str, Any], ctx: Any, call_id: str = "") -> dict[str, Any]:
        """wait_agent{targets, timeout_ms?} -> {"status": {id: status}, "timed_out": bool}, as Codex: the first
        agent(s) to reach a final status (or those already final), empty status when timed out."""
        targets = [str(t) for t in args.get("targets") or []]
        timeout_ms = args.get("timeout_ms", WAIT_DEFAULT_MS)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int | float):
            raise AgentToolError("failed to parse function arguments: `timeout_ms` must be a number")
        if timeout_ms <= 0:
            raise AgentToolError("timeout_ms must be greater than zero")
        timeout_s = min(max(timeout_ms, WAIT_MIN_MS), WAIT_MAX_MS) / MS_PER_S

        async def run() -> tuple[dict[str, Any], list[str]]:
            statuses = {t: self._status_of(t) for t in targets}
            known = [t for t, status in statuses.items() if status is not None]
            final = {t: s for t, s in statuses.items() if s is None or self._registry.get(t).info.status in _FINAL}
            if not final and known:
                finished, _ = await self._registry.wait(known, timeout_s)
                final = {i.agent_id: codex_status(i) for i in finished}
            status = {t: ("not_found" if s is None else s) for t, s in final.items()}
            # Codex's completed wait item names only the agents it reports on (those final by then)
            return {"status": status, "timed_out": not status}, list(status)

        return await self._collab(ctx, call_id, "wait", targets, "", run=run)

    async def codex_close_agent(self, args: dict[str, Any], ctx: Any, call_id: str = "") -> dict[str, Any]:
        """close_agent{target} -> {"previous_status": status}."""
        target = str(args.get("target", ""))

        async def run() -> tuple[dict[str, Any], list[str]]:
            previous = self._status_of(target)
            await self._request(agents_pb2.CloseAgentRequest(session_id=self._session_id, agent_id=target))
            return {"previous_status": previous}, [target]

        return await self._collab(ctx, call_id, "close_agent", [target], "", run=run)

    async def codex_resume_agent(self, args: dict[str, Any], ctx: Any, call_id: str = "") -> dict[str, Any]:
        """resume_agent{id} -> {"status": status}."""
        target = str(args.get("id", ""))

        async def run() -> tuple[dict[str, Any], list[str]]:
            reply = await self._request(agents_pb2.ResumeAgentRequest(session_id=self._session_id, agent_id=target))
            return {"status": codex_status(reply.agent)}, [target]

        return await self._collab(ctx, call_id, "resume_agent", [target], "", run=run)
