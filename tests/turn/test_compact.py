"""Compaction: the compacted history (Codex's shape and budget), the auto-compact limit, the rebuild from the
log, and a turn that compacts by itself mid-turn against a recording OpenAI-compatible server, with a real
PreCompact hook."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from actors.providers import Message, create_provider
from actors.turn._compact import (
    COMPACT_PROMPT,
    NO_SUMMARY,
    SUMMARY_PREFIX,
    auto_compact_limit,
    build_compacted_history,
    collect_user_messages,
    compact_instructions,
)
from actors.turn._history import history_item, messages_from_history, window_generation
from actors.turn._loop import make_turn_runner
from protos.supervisor.v1 import config_pb2, events_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall
from tests.helpers.turn import TURN_BOUND_S, Recorder, hook_runner, task_context


def test_compacted_history_keeps_the_newest_user_messages_within_the_budget() -> None:
    messages = ["a" * 40, "b" * 40, "c" * 40]  # 10 tokens each
    history = build_compacted_history(messages, "SUM", max_tokens=15)
    assert [m.role for m in history] == ["user", "user", "user"]
    cut, kept, summary = (m.content for m in history)
    assert kept == "c" * 40
    assert "tokens truncated" in cut and cut.replace("b", "").startswith("…") and cut.count("b") == 20
    assert summary == f"{SUMMARY_PREFIX}\nSUM"
    assert build_compacted_history([], "")[-1].content == f"{SUMMARY_PREFIX}\n{NO_SUMMARY}"


def test_earlier_summaries_are_not_kept_as_user_messages() -> None:
    conversation = [Message.user("one"), Message.assistant("a"), Message.user(f"{SUMMARY_PREFIX}\nold"),
                    Message.user("two"), Message.system("ctx")]
    assert collect_user_messages(conversation) == ["one", "two"]


def test_compact_prompt_is_codexs_unless_configured_and_compact_text_follows_it() -> None:
    assert compact_instructions(config_pb2.SessionConfiguration()) == COMPACT_PROMPT
    own = config_pb2.SessionConfiguration(compact_prompt="Summarize tersely.")
    assert compact_instructions(own, "keep the numbers") == "Summarize tersely.\n\nkeep the numbers"


def test_auto_compact_limit_from_the_configuration_or_the_context_window() -> None:
    conf = config_pb2.SessionConfiguration(model_auto_compact_token_limit=1234)
    assert auto_compact_limit(conf) == 1234
    assert auto_compact_limit(config_pb2.SessionConfiguration(model_context_window=1000)) == 900
    family = config_pb2.SessionConfiguration()
    family.collaboration_mode.model = "gpt-5-codex"
    assert auto_compact_limit(family) == 244_800
    family.collaboration_mode.model = "some-local-model"
    assert auto_compact_limit(family) == 0  # unknown window: never by itself


def test_the_rebuild_starts_again_at_each_of_the_sessions_own_compactions() -> None:
    def event(sid: str, msg: object) -> events_pb2.Event:
        out = events_pb2.Event(session_id=sid)
        if isinstance(msg, events_pb2.ContextCompacted):
            out.compacted.CopyFrom(msg)
        else:
            assert isinstance(msg, Message)
            out.history_item.CopyFrom(history_item(msg))
        return out

    log = [event("s", Message.user("old")), event("child", events_pb2.ContextCompacted(window_generation=1)),
           event("s", events_pb2.ContextCompacted(window_generation=1)), event("s", Message.user("summary")),
           event("s", Message.user("new"))]
    assert [m.content for m in messages_from_history(log, ("s",))] == ["summary", "new"]
    assert window_generation(log, "s") == 1


async def test_a_turn_past_the_limit_compacts_before_its_next_request(tmp_path: Path) -> None:
    recorder = Recorder()
    seen = tmp_path / "pre-compact.json"
    hooks = hook_runner(tmp_path, "PreCompact", f"cat > {seen}", recorder)
    replies = [
        Reply(calls=(ScriptedCall("no_such_tool", {}, call_id="call_1"),), input_tokens=150, output_tokens=10),
        Reply(text_deltas=("SUM",)),
        Reply(text_deltas=("done",)),
    ]
    with FakeOpenAIServer(replies) as server:
        provider = create_provider("openai", {"base_url": server.base_url, "api_key": "k", "max_retries": 0,
                                              "model": "fake-model"})
        state: dict[str, object] = {}
        try:
            ctx = task_context(tmp_path, recorder, "go", {"provider": provider, "hooks": hooks}, state,
                               model_auto_compact_token_limit=100)
            with trio.fail_after(TURN_BOUND_S):
                result = await make_turn_runner()(ctx)
        finally:
            await provider.aclose()
        requests = list(server.requests)
    assert result.last_agent_message == "done"
    assert len(requests) == 3
    asked = requests[1].body
    assert asked["input"][-1]["role"] == "user" and asked["input"][-1]["content"] == COMPACT_PROMPT
    assert not asked.get("tools")
    assert [(i.get("role"), i.get("content")) for i in requests[2].body["input"]] == [
        ("user", "go"), ("user", f"{SUMMARY_PREFIX}\nSUM")]
    assert requests[0].headers["x-codex-window-id"] == "turn-test:0"
    assert requests[2].headers["x-codex-window-id"] == "turn-test:1"
    (compacted,) = recorder.of(events_pb2.ContextCompacted)
    assert compacted.window_generation == 1 and compacted.summary == "SUM"
    names = recorder.names()
    after = names[names.index("ContextCompacted") + 1:]
    assert after[:2] == ["HistoryItem", "HistoryItem"]  # the new window, logged after its marker
    hook_input = json.loads(seen.read_text())
    assert hook_input["hook_event_name"] == "PreCompact" and hook_input["trigger"] == "auto"
