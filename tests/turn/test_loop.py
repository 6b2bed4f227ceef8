"""The turn loop with real parts: playbook and openai providers, a real bash shell, a real MCP server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from actors.providers import ProviderError, create_provider
from actors.turn._loop import (
    CONVERSATION_KEY,
    PROVIDER_KEY,
    TurnLimitExceeded,
    close_turn_state,
    make_turn_runner,
)
from protos.supervisor.v1 import events_pb2, shell_pb2, turn_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall
from tests.helpers.turn import (
    TURN_BOUND_S,
    EchoAgents,
    Recorder,
    mcp_toolbox,
    process_gone,
    session_shell,
    task_context,
    tool_messages,
)

#: Each of the two concurrent tools takes this long (long enough that a serial run cannot overlap them).
TOOL_SLEEP_S = 0.5
#: An interrupted turn must end within this long of the cancellation.
CANCEL_BOUND_S = 2.0

CONCURRENT_PLAYBOOK = f"""
[[plans.root.steps]]
name = "work"
text = "Running both."
calls = [
  {{ tool = "shell", arguments = {{ command = "sleep {TOOL_SLEEP_S} && echo shell-finished" }} }},
  {{ tool = "mcp__toolbox__sleep", arguments = {{ seconds = {TOOL_SLEEP_S} }} }},
]

[[plans.root.steps]]
text = "shell said <{{result.work[0]}}>; mcp said <{{result.work[1]}}>"
"""


async def test_shell_and_mcp_tool_of_one_step_run_concurrently(tmp_path: Path) -> None:
    recorder = Recorder()
    provider = create_provider("playbook", {"text": CONCURRENT_PLAYBOOK})
    async with session_shell(tmp_path, recorder) as shell, mcp_toolbox(recorder) as mcp:
        ctx = task_context(tmp_path, recorder, "go", {"provider": provider, "shell": shell, "mcp": mcp})
        with trio.fail_after(TURN_BOUND_S):
            result = await make_turn_runner()(ctx)
    begins, ends = recorder.times(turn_pb2.ToolCallBegin), recorder.times(turn_pb2.ToolCallEnd)
    assert len(begins) == len(ends) == 2
    together = max(ends) - min(begins)
    durations = [end.duration_ms for end in recorder.of(turn_pb2.ToolCallEnd)]
    print(f"two {TOOL_SLEEP_S} s tools together: {together:.3f} s; each: {durations} ms")
    assert all(d >= TOOL_SLEEP_S * 1000 * 0.9 for d in durations)  # each really took its time
    assert max(begins) < min(ends)  # both were running at once: a serial run ends one before the next begins
    assert "shell-finished" in result.last_agent_message and "Exit code: 0" in result.last_agent_message
    assert "mcp said <slept>" in result.last_agent_message
    assert not any(end.is_error for end in recorder.of(turn_pb2.ToolCallEnd))
    # shell runs pair with the tool call through the model's call id
    assert [b.call_id for b in recorder.of(shell_pb2.ExecBegin)] == ["pb-t1-s0-c0"]
    # the complete final message follows the deltas; usage of both responses is summed
    finals = [m.text for m in recorder.of(events_pb2.AgentMessage) if not m.delta]
    assert finals == ["Running both.", result.last_agent_message]
    counts = recorder.of(turn_pb2.TokenCount)
    assert len(counts) == 2
    assert result.input_tokens == sum(c.input_tokens for c in counts) > 0
    assert result.output_tokens == sum(c.output_tokens for c in counts) > 0


async def test_openai_provider_turn_feeds_the_tool_output_back(tmp_path: Path) -> None:
    recorder = Recorder()
    replies = [
        Reply(text_deltas=("Let me ", "look."), calls=(ScriptedCall("exec_command", {"cmd": "echo from-the-shell"},
                                                                     call_id="call_A"),)),
        Reply(text_deltas=("It printed ", "from-the-shell."), input_tokens=30, output_tokens=5),
    ]
    state: dict[str, object] = {}
    with FakeOpenAIServer(replies) as server:
        options = {"base_url": server.base_url, "api_key": "test-key", "max_retries": 0}
        async with session_shell(tmp_path, recorder) as shell:
            ctx = task_context(tmp_path, recorder, "what does echo say?",
                               {"shell": shell, "provider_options": options}, state, provider="openai",
                               model="fake-model")
            try:
                with trio.fail_after(TURN_BOUND_S):
                    result = await make_turn_runner()(ctx)
                assert state[PROVIDER_KEY] is not None  # built from the configuration and cached
            finally:
                await close_turn_state(state)
        requests = list(server.requests)
    assert PROVIDER_KEY not in state
    assert [r.path for r in requests] == ["/v1/responses", "/v1/responses"]
    first, second = requests[0].body, requests[1].body
    offered = [tool["name"] for tool in first["tools"]]
    assert first["model"] == "fake-model" and "exec_command" in offered and "shell" not in offered  # Codex's set
    outputs = [item for item in second["input"] if item.get("type") == "function_call_output"]
    assert len(outputs) == 1 and outputs[0]["call_id"] == "call_A"
    assert "from-the-shell" in outputs[0]["output"] and "Process exited with code 0" in outputs[0]["output"]
    assert any(item.get("type") == "function_call" and item.get("call_id") == "call_A" for item in second["input"])
    assert result.last_agent_message == "It printed from-the-shell."
    assert (result.input_tokens, result.output_tokens) == (11 + 30, 7 + 5)
    assert [b.call_id for b in recorder.of(turn_pb2.ToolCallBegin)] == ["call_A"]
    assert json.loads(recorder.of(turn_pb2.ToolCallBegin)[0].arguments_json) == {"cmd": "echo from-the-shell"}
    # the text before the call is a finished message before the call starts (Codex's item order: its tool's
    # events can never come first, however fast the tool)
    finals = [(i, m.text) for i, (_, m) in enumerate(recorder.items)
              if isinstance(m, events_pb2.AgentMessage) and not m.delta]
    begin = recorder.names().index("ToolCallBegin")
    assert [text for _, text in finals] == ["Let me look.", "It printed from-the-shell."]
    assert finals[0][0] < begin < finals[1][0]


async def test_interrupt_mid_tool_ends_promptly_and_kills_the_command(tmp_path: Path) -> None:
    recorder = Recorder()
    pid_file = tmp_path / "sleeper.pid"
    playbook = f"""
[[plans.root.steps]]
tool = "shell"
arguments = {{ command = "echo $$ > {pid_file} && exec sleep 30" }}

[[plans.root.steps]]
text = "never reached"
"""
    provider = create_provider("playbook", {"text": playbook})
    state: dict[str, object] = {}
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "sleep", {"provider": provider, "shell": shell}, state)
        cancelled_at = 0.0
        with trio.fail_after(TURN_BOUND_S):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(make_turn_runner(), ctx)
                    await recorder.wait_for(shell_pb2.ExecBegin)
                    while not (pid_file.exists() and pid_file.read_text().strip()):
                        await trio.sleep(0.01)  # polling, bounded by fail_after
                    cancelled_at = time.monotonic()
                    scope.cancel()
        ended = time.monotonic() - cancelled_at
    assert scope.cancelled_caught
    print(f"interrupt to end of turn: {ended:.3f} s")
    assert ended < CANCEL_BOUND_S
    assert process_gone(int(pid_file.read_text()))
    assert recorder.of(shell_pb2.ExecEnd)[0].interrupted
    # the conversation stays valid for the next turn: the cut call has an "aborted" result
    assert [m.role for m in state[CONVERSATION_KEY]] == ["user", "assistant", "tool"]  # type: ignore[attr-defined]
    assert tool_messages(state)[0].content.startswith("aborted")


async def test_unknown_and_failing_tools_answer_the_model_and_the_turn_completes(tmp_path: Path) -> None:
    from protos.supervisor.v1 import config_pb2

    recorder = Recorder()
    playbook = """
[[plans.root.steps]]
name = "tries"
calls = [
  { tool = "no_such_tool", arguments = { x = 1 } },
  { tool = "explode", arguments = {} },
  { tool = "shell", arguments = { wrong = "no command" } },
  { tool = "shell", arguments = { command = "echo out; echo err >&2; exit 3" } },
  { tool = "client_side", arguments = { q = "hi" } },
]

[[plans.root.steps]]
text = "A={results[0][0]}|B={results[0][1]}|C={results[0][2]}|D={results[0][3]}|E={results[0][4]}"
"""

    async def explode(args: dict[str, object], ctx: object) -> str:
        raise RuntimeError("kaboom")

    dynamic = [config_pb2.DynamicTool(name=name, description="client tool", input_schema_json='{"type":"object"}')
               for name in ("explode", "client_side")]
    provider = create_provider("playbook", {"text": playbook})
    state: dict[str, object] = {}
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "try things",
                           {"provider": provider, "shell": shell, "dynamic_tools": {"explode": explode}},
                           state, dynamic_tools=dynamic)
        with trio.fail_after(TURN_BOUND_S):
            result = await make_turn_runner()(ctx)
    outputs = [m.content for m in tool_messages(state)]
    assert outputs[0].startswith("unknown tool 'no_such_tool'; available tools: shell, explode, client_side")
    assert outputs[1] == "tool explode failed: RuntimeError: kaboom"
    assert outputs[2].startswith("shell: ") and "command" in outputs[2]
    assert outputs[3].startswith("Exit code: 3") and "out" in outputs[3] and "err" in outputs[3]
    assert "dynamic tools are answered by the client" in outputs[4]
    ends = {end.call_id: end for end in recorder.of(turn_pb2.ToolCallEnd)}
    assert all(end.is_error for end in ends.values()) and len(ends) == 5
    assert result.last_agent_message.startswith("A=unknown tool")
    assert "kaboom" in result.last_agent_message


async def test_agent_tools_play_the_fanout_example(tmp_path: Path) -> None:
    recorder = Recorder()
    agents = EchoAgents()
    example = Path(__file__).resolve().parents[2] / "examples" / "fanout.toml"
    provider = create_provider("playbook", {"path": str(example)})
    ctx = task_context(tmp_path, recorder, "count words", {"provider": provider, "agents": agents})
    with trio.fail_after(TURN_BOUND_S):
        result = await make_turn_runner()(ctx)
    spawned = [args for name, args in agents.calls if name == "spawn_agent"]
    assert len(spawned) == 8 and spawned[0] == {"message": "task 1 of 8: count words", "agent_type": "worker"}
    waited = [args for name, args in agents.calls if name == "wait"]
    assert waited == [{"agent_ids": [f"agent-{n}" for n in range(1, 9)], "timeout_ms": 30000, "all": True}]
    assert "All 8 workers finished." in result.last_agent_message
    assert "agent-8" in result.last_agent_message and "completed" in result.last_agent_message


async def test_conversation_and_provider_persist_across_turns(tmp_path: Path) -> None:
    recorder = Recorder()
    playbook = """
[[plans.root.steps]]
text = "turn input: {input}"
"""
    state: dict[str, object] = {}
    options = {"text": playbook}
    runner = make_turn_runner()
    try:
        first = await runner(task_context(tmp_path, recorder, "one", {"provider_options": options}, state))
        provider = state[PROVIDER_KEY]
        second = await runner(task_context(tmp_path, recorder, "two", {"provider_options": options}, state))
        assert state[PROVIDER_KEY] is provider
    finally:
        await close_turn_state(state)
    assert (first.last_agent_message, second.last_agent_message) == ("turn input: one", "turn input: two")
    roles = [m.role for m in state[CONVERSATION_KEY]]  # type: ignore[attr-defined]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_round_trips_are_bounded(tmp_path: Path) -> None:
    recorder = Recorder()
    playbook = """
[[plans.root.steps]]
tool = "wait"
arguments = {}
[[plans.root.steps]]
tool = "wait"
arguments = {}
[[plans.root.steps]]
tool = "wait"
arguments = {}
[[plans.root.steps]]
text = "done"
"""
    provider = create_provider("playbook", {"text": playbook})
    ctx = task_context(tmp_path, recorder, "loop", {"provider": provider, "agents": EchoAgents()})
    with pytest.raises(TurnLimitExceeded, match="after 2 model requests"):
        await make_turn_runner(max_round_trips=2)(ctx)
    assert len(recorder.of(turn_pb2.TokenCount)) == 2


async def test_big_tool_output_is_bounded_for_the_model(tmp_path: Path) -> None:
    recorder = Recorder()
    limit = 4096
    playbook = """
[[plans.root.steps]]
tool = "shell"
arguments = { command = "head -c 200000 /dev/zero | tr '\\\\0' a; echo; echo THE-END" }
[[plans.root.steps]]
text = "ok"
"""
    provider = create_provider("playbook", {"text": playbook})
    state: dict[str, object] = {}
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "big", {"provider": provider, "shell": shell}, state)
        with trio.fail_after(TURN_BOUND_S):
            await make_turn_runner(max_tool_output_bytes=limit)(ctx)
    output = tool_messages(state)[0].content
    assert len(output.encode()) <= limit
    assert output.startswith("Exit code: 0") and output.rstrip().endswith("THE-END")
    assert "bytes of tool output omitted" in output
    assert recorder.of(turn_pb2.ToolCallEnd)[0].output == output


async def test_provider_error_fails_the_turn(tmp_path: Path) -> None:
    recorder = Recorder()
    with FakeOpenAIServer([Reply(status=400)]) as server:
        options = {"base_url": server.base_url, "api_key": "k", "max_retries": 0, "model": "m"}
        provider = create_provider("openai", options)
        try:
            ctx = task_context(tmp_path, recorder, "hi", {"provider": provider})
            with trio.fail_after(TURN_BOUND_S), pytest.raises(ProviderError):
                await make_turn_runner()(ctx)
        finally:
            await provider.aclose()
