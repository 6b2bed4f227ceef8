"""Codex's multi-agent tools through the router: result shapes and collaboration events, on a real registry."""

from __future__ import annotations

import json
from pathlib import Path

from actors.agents import AgentRegistry, AgentTools
from actors.providers import ToolCall
from actors.turn import router_for
from protos.supervisor.v1 import agents_pb2, tools_pb2
from tests.helpers.turn import Recorder, task_context


def _registry() -> AgentRegistry:
    registry = AgentRegistry(max_threads=4, max_depth=2)
    for agent_id, status, message in (("a1", agents_pb2.AGENT_STATUS_COMPLETED, "all done"),
                                      ("a2", agents_pb2.AGENT_STATUS_RUNNING, "")):
        registry.reserve(1)
        registry.add(agents_pb2.AgentInfo(agent_id=agent_id, nickname=agent_id, status=status, last_message=message),
                     "turn-test")
    return registry


async def test_wait_agent_answers_in_codex_shape_with_collab_events(tmp_path: Path) -> None:
    recorder = Recorder()
    agents = AgentTools(None, "turn-test", _registry())
    ctx = task_context(tmp_path, recorder, "", {"agents": agents}, provider="openai")
    router = router_for(ctx)
    done = await router.dispatch(ToolCall("w1", "wait_agent", {"targets": ["a1", "a2"]}, namespace="multi_agent_v1"),
                                 ctx)
    # Codex's exact text: compact JSON, the final agents only, {"completed": message}
    assert done.text == '{"status":{"a1":{"completed":"all done"}},"timed_out":false}' and not done.is_error
    missing = await router.dispatch(ToolCall("w2", "wait_agent", {"targets": ["nope"]}), ctx)
    assert json.loads(missing.text) == {"status": {"nope": "not_found"}, "timed_out": False}
    bad = await router.dispatch(ToolCall("w3", "wait_agent", {"targets": ["a2"], "timeout_ms": 0}), ctx)
    assert bad.is_error and bad.text == "timeout_ms must be greater than zero"
    begins, ends = recorder.of(tools_pb2.CollabToolCallBegin), recorder.of(tools_pb2.CollabToolCallEnd)
    assert [(b.call_id, b.tool, b.sender_thread_id, list(b.receiver_thread_ids)) for b in begins] == [
        ("w1", "wait", "turn-test", ["a1", "a2"]), ("w2", "wait", "turn-test", ["nope"])]  # w3: refused first
    # as Codex's completed wait item: only the agents the wait reports on (the final ones), not a2 still running
    assert {k: (v.status, v.message) for k, v in ends[0].agents_states.items()} == {"a1": ("completed", "all done")}
    assert list(ends[0].receiver_thread_ids) == ["a1"]
    assert [e.success for e in ends] == [True, True]


async def test_classic_names_stay_routed_under_the_codex_set(tmp_path: Path) -> None:
    agents = AgentTools(None, "turn-test", _registry())
    ctx = task_context(tmp_path, Recorder(), "", {"agents": agents}, provider="openai")
    router = router_for(ctx)
    assert "wait" not in router.names() and "wait_agent" in router.names()
    legacy = await router.dispatch(ToolCall("w1", "wait", {"agent_ids": ["a1"]}), ctx)
    assert json.loads(legacy.text)["finished"][0]["agent_id"] == "a1"  # the classic shape, for old plans
