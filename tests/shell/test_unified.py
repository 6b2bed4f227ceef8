"""Unified exec (exec_command / write_stdin) with real processes, real PTYs and real pipes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import trio
from google.protobuf.message import Message

from actors.shell import CommandRunner, UnifiedExec, UnifiedExecError
from protos.supervisor.v1 import shell_pb2, tools_pb2

FIXTURE = Path(__file__).parents[1] / "fixtures" / "codex_0169_tool_outputs.json"
#: The shape of every unified-exec answer Codex 0.169 gave in the capture (see tests/fixtures/README.md).
CHUNK = re.compile(
    r"\AChunk ID: [0-9a-f]{6}\nWall time: \d+\.\d{4} seconds\n"
    r"(?:Process exited with code -?\d+|Process running with session ID (?P<sid>\d+))\n"
    r"Original token count: (?P<tokens>\d+)\nOutput:\n(?P<output>.*)\Z",
    re.DOTALL,
)
LIMIT_S = 20.0
POLL_S = 0.01


def _dead(pid: int) -> bool:
    """Gone, or a zombie (an orphaned grandchild is reaped by whoever adopted it, not by us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _unified(tmp_path: Path, events: list[Message]) -> UnifiedExec:
    runner = CommandRunner(emit=events.append, shell="/bin/bash", env={**os.environ, "HOME": str(tmp_path)})
    return UnifiedExec(runner, cwd=tmp_path, emit=events.append)


def test_codex_outputs_have_the_shape_we_produce() -> None:
    outputs = [e for e in json.loads(FIXTURE.read_text()) if e["name"] in ("exec_command", "write_stdin")]
    assert len(outputs) == 4
    for entry in outputs:
        match = CHUNK.match(entry["output"])
        assert match is not None, entry["output"]
        assert int(match["tokens"]) == -(-len(match["output"].encode()) // 4)


async def test_pty_command_yields_then_write_stdin_feeds_it(tmp_path: Path) -> None:
    events: list[Message] = []
    with trio.fail_after(LIMIT_S):
        async with _unified(tmp_path, events) as unified:
            first = await unified.exec_command("printf 'name? '; read x; echo \"got:$x\"", call_id="c1", tty=True,
                                               yield_time_ms=250)
            text = first.text()
            match = CHUNK.match(text)
            assert match is not None and match["sid"] is not None, text
            assert "name? " in match["output"]
            assert [p.process_id for p in unified.processes()] == [int(match["sid"])]
            second = await unified.write_stdin(int(match["sid"]), call_id="c2", chars="abc\n", yield_time_ms=5000)
            assert second.exit_code == 0
            assert "Process exited with code 0" in second.text()
            assert "got:abc" in second.output  # the PTY echoes the input too, as in Codex's capture
            assert unified.processes() == []
            with pytest.raises(UnifiedExecError, match=f"^Unknown process id {match['sid']}$"):
                await unified.write_stdin(int(match["sid"]), call_id="c3")
    begins = [e for e in events if isinstance(e, shell_pb2.ExecBegin)]
    ends = [e for e in events if isinstance(e, shell_pb2.ExecEnd)]
    assert [b.call_id for b in begins] == ["c1"] and begins[0].process_id == match["sid"]
    assert [(e.call_id, e.exit_code, e.interrupted) for e in ends] == [("c1", 0, False)]
    assert [(e.process_id, e.stdin) for e in events if isinstance(e, tools_pb2.TerminalInteraction)] == [
        (match["sid"], "abc\n")]


async def test_pipes_merge_stderr_and_refuse_stdin(tmp_path: Path) -> None:
    events: list[Message] = []
    with trio.fail_after(LIMIT_S):
        async with _unified(tmp_path, events) as unified:
            done = await unified.exec_command("echo out; echo err >&2; exit 3", call_id="c1")
            assert done.exit_code == 3 and done.process_id is None
            assert done.output == "out\nerr\n"  # one pipe: no \r, arrival order
            assert (await unified.exec_command("read x", call_id="c2")).exit_code == 1  # stdin is /dev/null
            running = await unified.exec_command("sleep 30", call_id="c2", yield_time_ms=250)
            assert running.process_id is not None
            with pytest.raises(UnifiedExecError) as caught:
                await unified.write_stdin(running.process_id, call_id="c3", chars="x\n")
            assert str(caught.value) == (
                "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open")


async def test_background_processes_are_killed_when_the_turn_ends(tmp_path: Path) -> None:
    events: list[Message] = []
    with trio.fail_after(LIMIT_S):
        async with _unified(tmp_path, events) as unified:
            chunk = await unified.exec_command("sleep 600 & echo $!; wait", call_id="c1", yield_time_ms=250)
            assert chunk.process_id is not None
            grandchild = int(chunk.output.split()[0])
            leader = unified.processes()[0].pid
    assert _dead(leader)  # reaped before the turn's end returned
    with trio.fail_after(LIMIT_S):  # SIGKILL was sent to the group; the kernel finishes the grandchild
        while not _dead(grandchild):
            await trio.sleep(POLL_S)
    ends = [e for e in events if isinstance(e, shell_pb2.ExecEnd)]
    assert [(e.call_id, e.interrupted) for e in ends] == [("c1", True)]


async def test_output_is_cut_to_the_token_budget(tmp_path: Path) -> None:
    events: list[Message] = []
    with trio.fail_after(LIMIT_S):
        async with _unified(tmp_path, events) as unified:
            chunk = await unified.exec_command("seq 1 2000", call_id="c1", max_output_tokens=10)
    full = "".join(f"{n}\n" for n in range(1, 2001))
    assert chunk.original_token_count == -(-len(full) // 4)
    assert chunk.output.startswith("1\n2\n") and chunk.output.endswith("1999\n2000\n")
    assert f"…{chunk.original_token_count - 10} tokens truncated…" in chunk.output
    assert len(chunk.output) < 100
