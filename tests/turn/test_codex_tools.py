"""Codex 0.169's tools through a real turn: the ``openai`` provider against the fake Responses server, a real
bash shell, real files. The model's side is what the server records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from actors.agents import AgentRegistry, AgentTools
from actors.turn import close_turn_state, make_turn_runner
from protos.supervisor.v1 import config_pb2, shell_pb2, tools_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall
from tests.helpers.turn import TURN_BOUND_S, Recorder, session_shell, task_context

FIXTURES = Path(__file__).parents[1] / "fixtures"
#: The tools of Codex's set we implement (Codex also offers request_user_input, view_image, goals, web_search).
IMPLEMENTED = ("exec_command", "write_stdin", "update_plan", "apply_patch", "multi_agent_v1")


async def _turn(tmp_path: Path, replies: list[Reply], services: dict[str, Any] | None = None,
                profile: config_pb2.PermissionProfile | None = None,
                **config: Any) -> tuple[Recorder, list[dict[str, Any]]]:
    recorder = Recorder()
    state: dict[str, Any] = {}
    with FakeOpenAIServer(replies) as server:
        options = {"base_url": server.base_url, "api_key": "test-key", "max_retries": 0}
        async with session_shell(tmp_path, recorder) as shell:
            ctx = task_context(tmp_path, recorder, "go", {"shell": shell, "provider_options": options,
                                                          **(services or {})},
                               state, provider="openai", model="fake-model", **config)
            if profile is not None:
                ctx.configuration.permission_profile.CopyFrom(profile)
            try:
                with trio.fail_after(TURN_BOUND_S):
                    await make_turn_runner()(ctx)
            finally:
                await close_turn_state(state)
        return recorder, [r.body for r in server.requests]


def _outputs(body: dict[str, Any]) -> dict[str, str]:
    return {item["call_id"]: item["output"] for item in body["input"]
            if item.get("type") in ("function_call_output", "custom_tool_call_output")}


async def test_the_model_is_offered_codex_tools_as_captured(tmp_path: Path) -> None:
    agents = AgentTools(None, "turn-test", AgentRegistry(max_threads=4, max_depth=1))
    _, bodies = await _turn(tmp_path, [Reply(text_deltas=("ok",))], {"agents": agents})
    offered = {tool["name"]: tool for tool in bodies[0]["tools"]}
    captured = {tool["name"]: tool for tool in json.loads((FIXTURES / "codex_0169_tools.json").read_text())
                if tool.get("name") in IMPLEMENTED}
    assert list(offered) == list(captured)  # same names, same order
    for name, ours in offered.items():
        theirs = captured[name]
        assert ours["type"] == theirs["type"], name
        if ours["type"] == "function":
            assert ours["parameters"] == theirs["parameters"], name
            assert ours["description"] == theirs["description"], name
        elif ours["type"] == "custom":
            assert ours["format"] == theirs["format"] and ours["description"] == theirs["description"]
        else:  # the multi_agent_v1 namespace
            assert ours["description"] == theirs["description"]
            assert [t["name"] for t in ours["tools"]] == [t["name"] for t in theirs["tools"]]
            for inner, expected in zip(ours["tools"], theirs["tools"], strict=True):
                assert inner["parameters"] == expected["parameters"], inner["name"]
                if inner["name"] != "spawn_agent":  # ours drops Codex's catalogue of OpenAI model names
                    assert inner["description"] == expected["description"], inner["name"]


async def test_apply_patch_writes_inside_the_workspace_and_refuses_outside(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "old.txt").write_text("one\ntwo\nthree\n")
    (work / "gone.txt").write_text("bye\n")
    outside = tmp_path / "outside.txt"  # not writable: the workspace is tmp_path/work
    patch = ("*** Begin Patch\n*** Add File: new.txt\n+hello\n*** Update File: old.txt\n@@\n one\n-two\n+TWO\n"
             "*** Delete File: gone.txt\n*** End Patch\n")
    replies = [
        Reply(calls=(ScriptedCall("apply_patch", {}, call_id="p1", custom=patch),)),
        Reply(calls=(ScriptedCall("apply_patch", {}, call_id="p2",
                                  custom=f"*** Begin Patch\n*** Add File: {outside}\n+x\n*** End Patch\n"),)),
        Reply(calls=(ScriptedCall("apply_patch", {"input": "*** Begin Patch\n*** Add File: fn.txt\n+fn\n"
                                                           "*** End Patch"}, call_id="p3"),)),
        Reply(calls=(ScriptedCall("apply_patch", {}, call_id="p4", custom="garbage"),)),
        Reply(text_deltas=("done",)),
    ]
    # workspace-write with the cwd only ($TMPDIR, where tests run, would be writable too)
    profile = config_pb2.PermissionProfile(name="workspace-write", file_system=config_pb2.FileSystemPolicy(
        entries=[config_pb2.FileSystemEntry(special=config_pb2.SPECIAL_PATH_ROOT, access=config_pb2.FILE_ACCESS_READ)]))
    recorder, bodies = await _turn(work, replies, profile=profile, cwd=str(work))
    outputs = _outputs(bodies[-1])
    assert outputs["p1"].startswith("Exit code: 0\nWall time: ")
    assert outputs["p1"].endswith("Output:\nSuccess. Updated the following files:\nA new.txt\nM old.txt\nD gone.txt\n")
    assert (work / "new.txt").read_text() == "hello\n" and (work / "old.txt").read_text() == "one\nTWO\nthree\n"
    assert not (work / "gone.txt").exists()
    assert outputs["p2"] == "patch rejected: writing outside of the project; rejected by user approval settings"
    assert not outside.exists()
    assert (work / "fn.txt").read_text() == "fn\n"  # the JSON form works too
    assert outputs["p4"] == ("apply_patch verification failed: invalid patch: The first line of the patch must be "
                             "'*** Begin Patch'")
    kinds = [item["type"] for item in bodies[-1]["input"] if item.get("call_id") == "p1"]
    assert kinds == ["custom_tool_call", "custom_tool_call_output"]  # fed back as Codex does
    begins, ends = recorder.of(tools_pb2.PatchApplyBegin), recorder.of(tools_pb2.PatchApplyEnd)
    assert [b.call_id for b in begins] == ["p1", "p3"] and all(e.success for e in ends)
    assert [(Path(c.path).name, c.kind) for c in begins[0].changes] == [
        ("new.txt", tools_pb2.FILE_CHANGE_KIND_ADD), ("old.txt", tools_pb2.FILE_CHANGE_KIND_UPDATE),
        ("gone.txt", tools_pb2.FILE_CHANGE_KIND_DELETE)]


async def test_update_plan_emits_the_plan(tmp_path: Path) -> None:
    plan = [{"step": "a", "status": "completed"}, {"step": "b", "status": "in_progress"}]
    replies = [Reply(calls=(ScriptedCall("update_plan", {"explanation": "why", "plan": plan}, call_id="u1"),)),
               Reply(calls=(ScriptedCall("update_plan", {"plan": [{"step": "x", "status": "bogus"}]},
                                         call_id="u2"),)),
               Reply(text_deltas=("done",))]
    recorder, bodies = await _turn(tmp_path, replies)
    outputs = _outputs(bodies[-1])
    assert outputs["u1"] == "Plan updated"
    assert "status must be pending, in_progress or completed" in outputs["u2"]
    (event,) = recorder.of(tools_pb2.PlanUpdated)
    assert event.call_id == "u1" and event.explanation == "why"
    assert [(s.step, s.status) for s in event.plan] == [("a", tools_pb2.PLAN_STEP_STATUS_COMPLETED),
                                                        ("b", tools_pb2.PLAN_STEP_STATUS_IN_PROGRESS)]


async def test_exec_command_then_write_stdin_in_a_turn(tmp_path: Path) -> None:
    replies = [
        Reply(calls=(ScriptedCall("exec_command", {"cmd": "read x; echo got:$x", "tty": True,
                                                   "yield_time_ms": 250}, call_id="e1"),)),
    ]

    def write(sid: int) -> Reply:
        return Reply(calls=(ScriptedCall("write_stdin", {"session_id": sid, "chars": "hi\n",
                                                         "yield_time_ms": 5000}, call_id="e2"),))

    recorder = Recorder()
    state: dict[str, Any] = {}
    with FakeOpenAIServer(replies) as server:
        options = {"base_url": server.base_url, "api_key": "test-key", "max_retries": 0}
        async with session_shell(tmp_path, recorder) as shell:
            ctx = task_context(tmp_path, recorder, "go", {"shell": shell, "provider_options": options}, state,
                               provider="openai", model="fake-model")
            try:
                with trio.fail_after(TURN_BOUND_S):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(make_turn_runner(), ctx)
                        begin = (await recorder.wait_for(shell_pb2.ExecBegin))[0]
                        server.add_replies(write(int(begin.process_id)), Reply(text_deltas=("done",)))
            finally:
                await close_turn_state(state)
        bodies = [r.body for r in server.requests]
    outputs = _outputs(bodies[-1])
    assert f"Process running with session ID {begin.process_id}\n" in outputs["e1"]
    assert "Process exited with code 0\n" in outputs["e2"] and "got:hi" in outputs["e2"]

