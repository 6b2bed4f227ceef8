"""Lifecycle hooks in the turn loop, with real hook scripts run by bash and a real shell tool."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from actors.providers import create_provider
from actors.turn._loop import CONVERSATION_KEY, make_turn_runner
from protos.supervisor.v1 import events_pb2, hooks_pb2, shell_pb2, turn_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall
from tests.helpers.turn import (
    TURN_BOUND_S,
    Recorder,
    hook_runner,
    session_shell,
    task_context,
    tool_messages,
)
from tests.hook_fixtures.support import write_script

ECHO_INPUT_PLAYBOOK = """
[[plans.root.steps]]
text = "you said: {input}"
"""


async def test_pre_tool_use_exit_2_blocks_the_shell_and_its_stderr_is_the_output(tmp_path: Path) -> None:
    recorder = Recorder()
    marker = tmp_path / "ran"
    playbook = f"""
[[plans.root.steps]]
name = "attempt"
tool = "shell"
arguments = {{ command = "touch {marker}" }}

[[plans.root.steps]]
text = "the tool said: {{result.attempt[0]}}"
"""
    hooks = hook_runner(tmp_path, "PreToolUse", "cat > /dev/null; echo 'shell is off limits today' >&2; exit 2",
                        recorder, matcher="shell")
    provider = create_provider("playbook", {"text": playbook})
    state: dict[str, object] = {}
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "touch it", {"provider": provider, "shell": shell, "hooks": hooks},
                           state)
        with trio.fail_after(TURN_BOUND_S):
            result = await make_turn_runner()(ctx)
    assert not marker.exists()
    assert recorder.of(shell_pb2.ExecBegin) == []  # the command never started
    assert [m.content for m in tool_messages(state)] == ["shell is off limits today"]
    end = recorder.of(turn_pb2.ToolCallEnd)[0]
    assert end.is_error and end.output == "shell is off limits today"
    assert result.last_agent_message == "the tool said: shell is off limits today"
    completed = recorder.of(hooks_pb2.HookCompleted)
    assert [c.event_name for c in completed] == ["PreToolUse"]
    assert completed[0].outcome == hooks_pb2.HOOK_OUTCOME_BLOCKED


async def test_pre_tool_use_updated_input_replaces_the_arguments(tmp_path: Path) -> None:
    recorder = Recorder()
    script = write_script(tmp_path / "rewrite.sh", """#!/bin/bash
cat > /dev/null
echo '{"hookSpecificOutput":{"hookEventName":"PreToolUse","updatedInput":{"command":"echo rewritten-by-hook"}}}'
""")
    playbook = """
[[plans.root.steps]]
tool = "shell"
arguments = { command = "echo original" }
[[plans.root.steps]]
text = "{results[0][0]}"
"""
    hooks = hook_runner(tmp_path, "PreToolUse", str(script), recorder)
    provider = create_provider("playbook", {"text": playbook})
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "go", {"provider": provider, "shell": shell, "hooks": hooks})
        with trio.fail_after(TURN_BOUND_S):
            result = await make_turn_runner()(ctx)
    assert "rewritten-by-hook" in result.last_agent_message and "original" not in result.last_agent_message


async def test_post_tool_use_additional_context_reaches_the_next_model_request(tmp_path: Path) -> None:
    recorder = Recorder()
    script = write_script(tmp_path / "post.sh", """#!/bin/bash
input=$(cat)
case "$input" in *tool-output-here*) seen=yes;; *) seen=no;; esac
echo '{"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"CTX-42 saw-output='$seen'"}}'
""")
    hooks = hook_runner(tmp_path, "PostToolUse", str(script), recorder, matcher="shell")
    replies = [
        Reply(calls=(ScriptedCall("shell", {"command": "echo tool-output-here"}, call_id="call_P"),)),
        Reply(text_deltas=("noted",)),
    ]
    with FakeOpenAIServer(replies) as server:
        provider = create_provider("openai", {"base_url": server.base_url, "api_key": "k", "max_retries": 0,
                                              "model": "fake-model"})
        try:
            async with session_shell(tmp_path, recorder) as shell:
                ctx = task_context(tmp_path, recorder, "run it",
                                   {"provider": provider, "shell": shell, "hooks": hooks})
                with trio.fail_after(TURN_BOUND_S):
                    result = await make_turn_runner()(ctx)
        finally:
            await provider.aclose()
        requests = list(server.requests)
    assert result.last_agent_message == "noted"
    assert len(requests) == 2
    assert "CTX-42" not in json.dumps(requests[0].body)
    second = requests[1].body["input"]
    kinds = [item.get("type") for item in second]
    context_items = [item for item in second if "CTX-42" in json.dumps(item)]
    assert len(context_items) == 1 and "saw-output=yes" in json.dumps(context_items[0])
    assert second.index(context_items[0]) > kinds.index("function_call_output")  # after the tool result
    output = next(item for item in second if item.get("type") == "function_call_output")
    assert "tool-output-here" in output["output"]


async def test_user_prompt_submit_block_ends_the_turn_without_asking_the_model(tmp_path: Path) -> None:
    recorder = Recorder()
    hooks = hook_runner(tmp_path, "UserPromptSubmit", "cat > /dev/null; echo 'no secrets in prompts' >&2; exit 2",
                        recorder)
    state: dict[str, object] = {}
    with FakeOpenAIServer([]) as server:
        provider = create_provider("openai", {"base_url": server.base_url, "api_key": "k", "max_retries": 0,
                                              "model": "fake-model"})
        try:
            ctx = task_context(tmp_path, recorder, "my password is hunter2",
                               {"provider": provider, "hooks": hooks}, state)
            with trio.fail_after(TURN_BOUND_S):
                result = await make_turn_runner()(ctx)
        finally:
            await provider.aclose()
        assert server.requests == []
    assert result.last_agent_message == "no secrets in prompts"
    assert [m.text for m in recorder.of(events_pb2.AgentMessage)] == ["no secrets in prompts"]
    assert state[CONVERSATION_KEY] == []  # the blocked prompt is not kept


async def test_user_prompt_submit_rewrites_the_prompt_and_adds_context(tmp_path: Path) -> None:
    recorder = Recorder()
    script = write_script(tmp_path / "prompt.sh", """#!/bin/bash
cat > /dev/null
echo '{"hookSpecificOutput":{"hookEventName":"UserPromptSubmit","updatedPrompt":"rewritten prompt",'\\
'"additionalContext":"today is a holiday"}}'
""")
    hooks = hook_runner(tmp_path, "UserPromptSubmit", str(script), recorder)
    provider = create_provider("playbook", {"text": ECHO_INPUT_PLAYBOOK})
    state: dict[str, object] = {}
    ctx = task_context(tmp_path, recorder, "original prompt", {"provider": provider, "hooks": hooks}, state)
    with trio.fail_after(TURN_BOUND_S):
        result = await make_turn_runner()(ctx)
    assert result.last_agent_message == "you said: rewritten prompt"
    conversation = state[CONVERSATION_KEY]
    assert [(m.role, m.content) for m in conversation[:2]] == [  # type: ignore[index]
        ("user", "rewritten prompt"), ("system", "today is a holiday"),
    ]


STOP_ONCE = """#!/bin/bash
input=$(cat)
echo "$input" >> "{log}"
case "$input" in *'"stop_hook_active": false'*) echo "also run the tests" >&2; exit 2;; esac
exit 0
"""


async def test_stop_hook_block_continues_the_turn_once_with_its_reason(tmp_path: Path) -> None:
    recorder = Recorder()
    log = tmp_path / "stop.log"
    script = write_script(tmp_path / "stop.sh", STOP_ONCE.format(log=log))
    hooks = hook_runner(tmp_path, "Stop", str(script), recorder)
    provider = create_provider("playbook", {"text": ECHO_INPUT_PLAYBOOK})
    state: dict[str, object] = {}
    ctx = task_context(tmp_path, recorder, "fix the bug", {"provider": provider, "hooks": hooks}, state)
    with trio.fail_after(TURN_BOUND_S):
        result = await make_turn_runner()(ctx)
    assert result.last_agent_message == "you said: also run the tests"
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [run["stop_hook_active"] for run in runs] == [False, True]
    roles = [(m.role, m.content) for m in state[CONVERSATION_KEY]]  # type: ignore[attr-defined]
    assert roles == [("user", "fix the bug"), ("assistant", "you said: fix the bug"),
                     ("user", "also run the tests"), ("assistant", "you said: also run the tests")]
    assert len(recorder.of(turn_pb2.TokenCount)) == 2


async def test_a_stop_hook_that_always_blocks_is_bounded(tmp_path: Path) -> None:
    recorder = Recorder()
    hooks = hook_runner(tmp_path, "Stop", "cat > /dev/null; echo 'not done yet' >&2; exit 2", recorder)
    provider = create_provider("playbook", {"text": ECHO_INPUT_PLAYBOOK})
    ctx = task_context(tmp_path, recorder, "work", {"provider": provider, "hooks": hooks})
    with trio.fail_after(TURN_BOUND_S):
        result = await make_turn_runner(max_stop_continuations=2)(ctx)
    assert result.last_agent_message == "you said: not done yet"
    assert len(recorder.of(turn_pb2.TokenCount)) == 3  # the first answer and two continuations
    assert len([c for c in recorder.of(hooks_pb2.HookCompleted) if c.event_name == "Stop"]) == 3


async def test_a_tool_hook_answering_continue_false_ends_the_turn_after_the_tools(tmp_path: Path) -> None:
    recorder = Recorder()
    script = write_script(tmp_path / "halt.sh", """#!/bin/bash
cat > /dev/null
echo '{"continue": false, "stopReason": "budget exhausted"}'
""")
    playbook = """
[[plans.root.steps]]
tool = "shell"
for_each = ["one", "two"]
arguments = { command = "echo {item}" }
[[plans.root.steps]]
text = "never reached"
"""
    hooks = hook_runner(tmp_path, "PostToolUse", str(script), recorder)
    provider = create_provider("playbook", {"text": playbook})
    state: dict[str, object] = {}
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "go", {"provider": provider, "shell": shell, "hooks": hooks}, state)
        with trio.fail_after(TURN_BOUND_S):
            result = await make_turn_runner()(ctx)
    assert result.last_agent_message == "budget exhausted"
    assert len(recorder.of(turn_pb2.TokenCount)) == 1  # no second model request
    assert len(recorder.of(turn_pb2.ToolCallEnd)) == 2  # both tools of the response finished
    assert [m.content.splitlines()[-1] for m in tool_messages(state)] == ["one", "two"]


async def test_a_stop_hook_answering_continue_false_does_not_continue(tmp_path: Path) -> None:
    recorder = Recorder()
    hooks = hook_runner(tmp_path, "Stop", """cat > /dev/null; echo '{"continue": false, "stopReason": "enough"}'""",
                        recorder)
    provider = create_provider("playbook", {"text": ECHO_INPUT_PLAYBOOK})
    ctx = task_context(tmp_path, recorder, "hi", {"provider": provider, "hooks": hooks})
    with trio.fail_after(TURN_BOUND_S):
        result = await make_turn_runner()(ctx)
    assert result.last_agent_message == "you said: hi"
    assert len(recorder.of(turn_pb2.TokenCount)) == 1
