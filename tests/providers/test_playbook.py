"""The playbook provider: templating, parallel calls, per-agent plans, clear load errors, the demo plan."""

from __future__ import annotations

import json
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.providers import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    StreamItem,
    TextDelta,
    ToolCallItem,
    collect_response,
    create_provider,
    estimate_tokens,
)
from actors.providers.playbook import PlaybookError, PlaybookProvider, load_playbook

FANOUT = Path(__file__).resolve().parents[2] / "examples" / "fanout.toml"
#: Every wait in these tests is bounded by this.
TEST_TIMEOUT_S = 5.0


def provider(text: str, **options: Any) -> PlaybookProvider:
    made = create_provider("playbook", {"text": text, **options})
    assert isinstance(made, PlaybookProvider)
    return made


async def ask(pb: ModelProvider, messages: list[Message], **identity: Any) -> ModelResponse:
    with trio.fail_after(TEST_TIMEOUT_S):
        return await collect_response(pb, ModelRequest("playbook", "", messages, **identity))


def feed(messages: list[Message], response: ModelResponse, outputs: list[str]) -> list[Message]:
    """Append the model's answer and one tool result per call, as the turn loop does."""
    calls = response.tool_calls
    results = [Message.tool_result(c.call_id, out) for c, out in zip(calls, outputs, strict=True)]
    return [*messages, response.as_message(), *results]


TEMPLATES = """
[[plans.root.steps]]
name = "probe"
text = "step {step} for {role}: {input}"
calls = [
  { tool = "shell", arguments = { command = "echo {{braces}} {input}", n = 3 } },
  { tool = "lookup", arguments = { key = "k" } },
]

[[plans.root.steps]]
tool = "report"
arguments = { first = "{results[0][0]}", all = "{results[0]}", joined = "all: {results[0]}", \
  ids = "{result.probe.id}", one = "{result.probe[1].id}", text = "ids {result.probe.id}" }

[[plans.root.steps]]
text = "done: {result.probe[0]} / {results[1]}"
"""


async def test_templating_input_step_and_earlier_results() -> None:
    pb = provider(TEMPLATES)
    conversation = [Message.user("hello")]
    first = await ask(pb, conversation)
    assert first.text == "step 0 for root: hello"
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("shell", {"command": "echo {braces} hello", "n": 3}), ("lookup", {"key": "k"})
    ]
    conversation = feed(conversation, first, ['{"id": "a"}', '{"id": "b"}'])
    second = await ask(pb, conversation)
    (report,) = second.tool_calls
    assert report.arguments == {
        "first": '{"id": "a"}', "all": ['{"id": "a"}', '{"id": "b"}'],
        "joined": 'all: {"id": "a"}\n{"id": "b"}', "ids": ["a", "b"], "one": "b",
        "text": "ids a, b",
    }
    conversation = feed(conversation, second, ["reported"])
    third = await ask(pb, conversation)
    assert third.text == 'done: {"id": "a"} / reported'
    assert third.tool_calls == [] and third.completed.finish_reason == "stop"


async def test_repeat_and_for_each_make_parallel_calls_in_one_answer() -> None:
    pb = provider("""
[[plans.root.steps]]
name = "spawn"
tool = "spawn_agent"
repeat = 8
arguments = { message = "task {i} ({n}/{count})", agent_type = "worker" }
[[plans.root.steps]]
tool = "close"
for_each = "{result.spawn.agent_id}"
arguments = { id = "{item}", index = "{i}" }
[[plans.root.steps]]
tool = "tag"
for_each = ["x", "y-{input}"]
arguments = { tag = "{item}" }
[[plans.root.steps]]
text = "ok"
""")
    conversation = [Message.user("go")]
    spawn = await ask(pb, conversation)
    assert [c.arguments["message"] for c in spawn.tool_calls] == [f"task {i} ({i + 1}/8)" for i in range(8)]
    assert len({c.call_id for c in spawn.tool_calls}) == 8
    assert spawn.completed.finish_reason == "tool_calls"
    conversation = feed(conversation, spawn, [json.dumps({"agent_id": f"A{i}"}) for i in range(8)])
    close = await ask(pb, conversation)
    assert [c.arguments for c in close.tool_calls] == [{"id": f"A{i}", "index": i} for i in range(8)]
    conversation = feed(conversation, close, ["closed"] * 8)
    tag = await ask(pb, conversation)
    assert [c.arguments["tag"] for c in tag.tool_calls] == ["x", "y-go"]


ROLES = """
[[plans.root.steps]]
text = "root plays"
[[plans."explorer*".steps]]
text = "explorer {role} {nickname}"
[[plans."Ada".steps]]
text = "nickname Ada with role {role}"
"""


async def test_plans_are_chosen_by_role_then_nickname() -> None:
    pb = provider(ROLES)
    user = [Message.user("x")]
    assert (await ask(pb, user)).text == "root plays"
    assert (await ask(pb, user, agent_role="explorer", agent_nickname="Bo")).text == "explorer explorer Bo"
    ada = await ask(pb, user, agent_role="worker", agent_nickname="Ada")
    assert ada.text == "nickname Ada with role worker"
    with pytest.raises(PlaybookError, match="no plan matches agent role 'worker' or nickname 'Cy'"):
        await ask(pb, user, agent_role="worker", agent_nickname="Cy")


async def test_fanout_demo_plays_root_and_worker_plans() -> None:
    pb = create_provider("playbook", {"path": str(FANOUT)})
    root = [Message.user("count the words")]
    spawn = await ask(pb, root)
    assert [c.name for c in spawn.tool_calls] == ["spawn_agent"] * 8
    assert all(c.arguments["agent_type"] == "worker" for c in spawn.tool_calls)
    root = feed(root, spawn, [json.dumps({"agent_id": f"agent-{i}"}) for i in range(8)])
    wait = await ask(pb, root)
    (call,) = wait.tool_calls
    assert call.name == "wait"
    assert call.arguments == {"agent_ids": [f"agent-{i}" for i in range(8)], "timeout_ms": 30000, "all": True}
    root = feed(root, wait, ["8 completed"])
    summary = await ask(pb, root)
    assert summary.tool_calls == [] and "8 completed" in summary.text and "agent-7" in summary.text

    task = spawn.tool_calls[3].arguments["message"]
    worker = [Message.user(task)]
    work = await ask(pb, worker, agent_role="worker", agent_nickname="Ada")
    assert [c.name for c in work.tool_calls] == ["shell", "mcp__example__word_count"]
    command = work.tool_calls[0].arguments["command"]
    assert "-w '%{http_code}'" in command and '"$DEMO_URL"' in command and "worker Ada" in command
    worker = feed(worker, work, ["worker Ada on Linux\n200", '{"words": 7}'])
    reply = await ask(pb, worker, agent_role="worker", agent_nickname="Ada")
    assert reply.text == f'{task}: shell said worker Ada on Linux\n200; word_count said {{"words": 7}}'


async def test_deltas_usage_and_determinism() -> None:
    pb = provider('[[plans.root.steps]]\ntext = "one two  three"\n', chunk_chars=0)
    request = ModelRequest("m", "be nice", [Message.user("hi there")])
    runs: list[list[StreamItem]] = []
    for _ in range(2):
        async with aclosing(pb.stream(request)) as items:
            runs.append([item async for item in items])
    assert runs[0] == runs[1]
    *deltas, done = runs[0]
    assert deltas == [TextDelta("one "), TextDelta("two  "), TextDelta("three")]
    assert isinstance(done, Completed) and done.finish_reason == "stop"
    assert done.usage.input_tokens == estimate_tokens("be nicehi there")
    assert done.usage.output_tokens == estimate_tokens("one two  three")
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    chunked = provider('[[plans.root.steps]]\ntext = "abcdefg"\n', chunk_chars=3)
    response = await ask(chunked, [Message.user("x")])
    assert response.text == "abcdefg"


async def test_a_new_user_message_restarts_the_plan() -> None:
    pb = provider('[[plans.root.steps]]\ntool = "t"\n[[plans.root.steps]]\ntext = "end {input}"\n')
    conversation = [Message.user("a")]
    first = await ask(pb, conversation)
    conversation = feed(conversation, first, ["r"])
    assert (await ask(pb, conversation)).text == "end a"
    conversation = [*conversation, Message.assistant("end a"), Message.user("b")]
    again = await ask(pb, conversation)
    assert [c.name for c in again.tool_calls] == ["t"]
    assert again.tool_calls[0].call_id != first.tool_calls[0].call_id


async def test_default_playbook_echoes() -> None:
    pb = create_provider("playbook", {})
    assert "you said: ping" in (await ask(pb, [Message.user("ping")])).text


async def test_cancel_mid_stream_is_prompt() -> None:
    pb = provider('[[plans.root.steps]]\ntext = "a b c d e f g h"\n', delay_s=TEST_TIMEOUT_S)
    started = time.monotonic()
    seen: list[StreamItem] = []
    with trio.move_on_after(0.2) as scope:
        async with aclosing(pb.stream(ModelRequest("m", "", [Message.user("x")]))) as items:
            async for item in items:
                seen.append(item)
    assert scope.cancelled_caught and seen == []
    assert time.monotonic() - started < 1.5


def test_bad_toml_names_the_line() -> None:
    source = '[[plans.root.steps]]\ntext = "fine"\nbroken = = 1\n'
    with pytest.raises(PlaybookError) as info:
        load_playbook(source, "demo.toml")
    message = str(info.value)
    assert "demo.toml: invalid TOML at line 3, column" in message
    assert "broken = = 1" in message


def test_bad_toml_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[plans.root.steps]]\ntext = "unterminated\n')
    with pytest.raises(PlaybookError, match=r"bad\.toml: invalid TOML at line 2"):
        create_provider("playbook", {"path": str(path)})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('[[plans.root.steps]]\ntool = "t"\n', r"plans\.root\.steps\[0\]: the last step must be text only"),
        ('[[plans.root.steps]]\ntext = "a"\n[[plans.root.steps]]\ntext = "b"\n',
         r"steps\[0\]: a text-only step ends the turn"),
        ('[[plans.root.steps]]\ntxt = "a"\n', r"steps\[0\]: unknown key\(s\) \['txt'\]"),
        ('[[plans.root.steps]]\ntext = "{inptu}"\n', r"steps\[0\]\.text: unknown name \{inptu\}"),
        ('[[plans.root.steps]]\ntext = "curl -w %{http_code}"\n', r"literal braces"),
        ('[[plans.root.steps]]\ntext = "{results[0]}"\n', r"must name an earlier step"),
        ('[[plans.root.steps]]\ntool = "t"\n[[plans.root.steps]]\ntext = "{result.nope}"\n',
         r"steps\[1\]\.text: \{result\.nope\}.*must name an earlier step"),
        ('[[plans.root.steps]]\ntool = "t"\nrepeat = 0\n[[plans.root.steps]]\ntext = "x"\n',
         r"steps\[0\]\.repeat must be an integer"),
        ('[[plans."w*".steps]]\ntool = "t"\narguments = { a = "{item" }\n[[plans."w*".steps]]\ntext = "x"\n',
         r'plans\."w\*"\.steps\[0\]\.arguments: .*literal braces'),
        ('[plans.root]\nsteps = []\n', r"plans\.root\.steps is empty"),
        ('title = "x"\n', r"unknown top-level key"),
    ],
)
def test_schema_errors_name_the_key(source: str, expected: str) -> None:
    with pytest.raises(PlaybookError, match=expected):
        load_playbook(source, "p.toml")


async def test_runtime_template_error_names_the_step() -> None:
    pb = provider('[[plans.root.steps]]\nname = "s"\ntool = "t"\n'
                  '[[plans.root.steps]]\ntext = "{result.s.id}"\n')
    conversation = [Message.user("x")]
    first = await ask(pb, conversation)
    conversation = feed(conversation, first, ["not json"])
    with pytest.raises(PlaybookError, match=r"plan 'root' step 1: tool output has no JSON field 'id'"):
        await ask(pb, conversation)


async def test_stream_items_are_typed_in_order() -> None:
    pb = provider('[[plans.root.steps]]\ntext = "go"\ntool = "a"\nrepeat = 2\n'
                  '[[plans.root.steps]]\ntext = "x"\n')
    async with aclosing(pb.stream(ModelRequest("m", "", [Message.user("u")]))) as items:
        kinds = [type(item) async for item in items]
    assert kinds == [TextDelta, ToolCallItem, ToolCallItem, Completed]
