"""Interrupting a turn: through the session's own path (a TaskScope on the shared host loop) and mid-stream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from actors.core import TaskCancelled, get_host
from actors.providers import create_provider
from actors.turn._loop import CONVERSATION_KEY, make_turn_runner
from protos.supervisor.v1 import events_pb2, shell_pb2, turn_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply
from tests.helpers.turn import (
    TURN_BOUND_S,
    Recorder,
    process_gone,
    session_shell,
    task_context,
)

#: An interrupted turn must end within this long of the interrupt.
CANCEL_BOUND_S = 2.0
POLL_S = 0.01


def test_closing_the_task_scope_interrupts_a_running_shell_tool(tmp_path: Path) -> None:
    """The session's interrupt: its TaskScope on the shared loop is closed while ``sleep 30`` runs."""
    recorder = Recorder()
    pid_file = tmp_path / "bash.pid"
    playbook = f"""
[[plans.root.steps]]
tool = "shell"
arguments = {{ command = "echo $$ > {pid_file}; sleep 30; echo not-reached" }}
[[plans.root.steps]]
text = "never"
"""
    host = get_host()
    state: dict[str, object] = {}
    scope = host.open_scope("turn-interrupt-test")
    try:

        async def play() -> None:
            async with session_shell(tmp_path, recorder) as shell:
                provider = create_provider("playbook", {"text": playbook})
                ctx = task_context(tmp_path, recorder, "go", {"provider": provider, "shell": shell}, state)
                await make_turn_runner()(ctx)

        future = scope.submit(play)
        deadline = time.monotonic() + TURN_BOUND_S
        while not (pid_file.exists() and pid_file.read_text().strip() and recorder.of(shell_pb2.ExecBegin)):
            assert time.monotonic() < deadline and not future.done(), "the shell tool never started"
            time.sleep(POLL_S)  # polling a bounded deadline
        interrupted_at = time.monotonic()
        assert scope.close(TURN_BOUND_S)
        took = time.monotonic() - interrupted_at
    finally:
        scope.close(TURN_BOUND_S)
    print(f"interrupt through the TaskScope: {took:.3f} s")
    assert took < CANCEL_BOUND_S
    with pytest.raises(TaskCancelled):
        future.result(0)
    assert process_gone(int(pid_file.read_text()))
    assert recorder.of(shell_pb2.ExecEnd)[0].interrupted
    assert [end.output for end in recorder.of(turn_pb2.ToolCallEnd)] == []  # it never finished
    assert [m.role for m in state[CONVERSATION_KEY]] == ["user", "assistant", "tool"]  # type: ignore[attr-defined]


async def test_interrupt_while_the_model_streams_closes_the_stream(tmp_path: Path) -> None:
    recorder = Recorder()
    state: dict[str, object] = {}
    with FakeOpenAIServer([Reply(text_deltas=("partial ", "answer"), hold_after=1)]) as server:
        provider = create_provider("openai", {"base_url": server.base_url, "api_key": "k", "max_retries": 0,
                                              "model": "fake-model"})
        try:
            ctx = task_context(tmp_path, recorder, "talk", {"provider": provider}, state)
            with trio.fail_after(TURN_BOUND_S):
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(make_turn_runner(), ctx)
                        await recorder.wait_for(events_pb2.AgentMessage)
                        interrupted_at = time.monotonic()
                        scope.cancel()
                took = time.monotonic() - interrupted_at
                server.release()  # the held stream writes again and finds its client gone
                assert await trio.to_thread.run_sync(server.wait_disconnects, 1, TURN_BOUND_S)
        finally:
            await provider.aclose()
    assert took < CANCEL_BOUND_S
    assert [(m.text, m.delta) for m in recorder.of(events_pb2.AgentMessage)] == [("partial ", True)]
    assert recorder.of(turn_pb2.TokenCount) == []
    assert [m.role for m in state[CONVERSATION_KEY]] == ["user"]  # type: ignore[attr-defined]
