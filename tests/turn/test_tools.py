"""The tool router: which tools are offered, how calls are routed, and how failures and output are bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors.providers import ToolCall, ToolSpec
from actors.turn._builtin import SHELL_SPEC, router_for
from actors.turn._router import ToolOutput, ToolRouter, bound_output
from actors.turn._task import TaskContext
from protos.supervisor.v1 import config_pb2, tools_pb2
from tests.helpers.turn import TURN_BOUND_S, EchoAgents, Recorder, mcp_toolbox, session_shell, task_context


async def _dispatch(router: ToolRouter, ctx: TaskContext, name: str, **arguments: Any) -> ToolOutput:
    with trio.fail_after(TURN_BOUND_S):
        return await router.dispatch(ToolCall(f"call-{name}", name, arguments), ctx)


async def test_specs_come_from_every_service_in_order_and_duplicates_are_dropped(tmp_path: Path) -> None:
    recorder = Recorder()
    dynamic = [
        config_pb2.DynamicTool(name="lookup", description="client lookup", input_schema_json='{"type":"object",'
                               '"properties":{"q":{"type":"string"}}}'),
        config_pb2.DynamicTool(name="shell", description="a client tool shadowing shell"),
        config_pb2.DynamicTool(name="broken_schema", input_schema_json="{not json"),
    ]
    async with session_shell(tmp_path, recorder) as shell, mcp_toolbox(recorder) as mcp:
        ctx = task_context(tmp_path, recorder, "", {"shell": shell, "mcp": mcp, "agents": EchoAgents()},
                           dynamic_tools=dynamic)
        router = router_for(ctx)
    names = router.names()
    assert names[0] == "shell"
    mcp_names = [n for n in names if n.startswith("mcp__toolbox__")]
    assert {"mcp__toolbox__add", "mcp__toolbox__sleep", "mcp__toolbox__echo"} <= set(mcp_names)
    assert names == ["shell", *mcp_names, "spawn_agent", "send_input", "wait", "close_agent", "resume_agent",
                     "lookup", "broken_schema"]
    specs = {spec.name: spec for spec in router.specs()}
    assert specs["shell"] is SHELL_SPEC
    assert specs["mcp__toolbox__add"].parameters_json_schema["properties"].keys() == {"a", "b"}
    assert specs["lookup"].parameters_json_schema["properties"] == {"q": {"type": "string"}}
    assert specs["broken_schema"].parameters_json_schema == {"type": "object", "properties": {}}


async def test_no_services_means_no_tools_and_any_call_is_unknown(tmp_path: Path) -> None:
    ctx = task_context(tmp_path, Recorder(), "")
    router = router_for(ctx)
    assert router.specs() == []
    output = await _dispatch(router, ctx, "shell", command="true")
    assert output == ToolOutput("unknown tool 'shell'; available tools: (none)", is_error=True)


async def test_shell_tool_arguments_workdir_timeout_and_exit_codes(tmp_path: Path) -> None:
    recorder = Recorder()
    (tmp_path / "sub").mkdir()
    async with session_shell(tmp_path, recorder) as shell:
        ctx = task_context(tmp_path, recorder, "", {"shell": shell})
        router = router_for(ctx)
        in_sub = await _dispatch(router, ctx, "shell", command="pwd", workdir="sub")
        failed = await _dispatch(router, ctx, "shell", command="echo nope >&2; exit 4")
        timed_out = await _dispatch(router, ctx, "shell", command="sleep 5", timeout_ms=200)
        missing_dir = await _dispatch(router, ctx, "shell", command="true", workdir="no/such/dir")
        bad_timeout = await _dispatch(router, ctx, "shell", command="true", timeout_ms="soon")
        extra = await _dispatch(router, ctx, "shell", command="true", sandbox="off")
    assert not in_sub.is_error and in_sub.text.splitlines()[-1] == str(tmp_path / "sub")
    assert failed.is_error and failed.text.startswith("Exit code: 4") and failed.text.endswith("nope\n")
    assert timed_out.is_error and "timed out after 200 ms" in timed_out.text
    assert missing_dir.is_error and missing_dir.text.startswith("tool shell failed: ProcessStartError")
    assert bad_timeout == ToolOutput("shell: `timeout_ms` must be a positive integer", is_error=True)
    assert extra.is_error and "unknown argument(s) ['sandbox']" in extra.text


async def test_mcp_tools_route_by_qualified_name_with_errors_as_outputs(tmp_path: Path) -> None:
    recorder = Recorder()
    async with mcp_toolbox(recorder) as mcp:
        ctx = task_context(tmp_path, recorder, "", {"mcp": mcp})
        router = router_for(ctx)
        added = await _dispatch(router, ctx, "mcp__toolbox__add", a=2, b=40)
        bad_args = await _dispatch(router, ctx, "mcp__toolbox__add", a="two")
        unknown_on_server = await _dispatch(router, ctx, "mcp__toolbox__missing")
    assert added == ToolOutput("42", is_error=False)
    assert bad_args.is_error
    assert unknown_on_server.is_error and "mcp__toolbox__missing" in unknown_on_server.text
    # each call is framed by McpToolCallBegin/End (Codex's mcp_tool_call item: server, tool, arguments, result)
    begins, ends = recorder.of(tools_pb2.McpToolCallBegin), recorder.of(tools_pb2.McpToolCallEnd)
    assert [(b.server, b.tool) for b in begins] == [("toolbox", "add"), ("toolbox", "add"), ("toolbox", "missing")]
    assert json.loads(begins[0].arguments_json) == {"a": 2, "b": 40}
    assert json.loads(ends[0].result_json)["content"] == [{"type": "text", "text": "42"}] and not ends[0].is_error
    assert ends[1].is_error and ends[2].is_error


async def test_agent_tools_call_the_method_of_their_name(tmp_path: Path) -> None:
    agents = EchoAgents()
    ctx = task_context(tmp_path, Recorder(), "", {"agents": agents})
    router = router_for(ctx)
    spawned = await _dispatch(router, ctx, "spawn_agent", message="hi")
    closed = await _dispatch(router, ctx, "close_agent", agent_id="agent-1")
    assert spawned == ToolOutput('{"agent_id": "agent-1", "nickname": "worker-1"}')
    assert closed == ToolOutput('{"closed": true}')
    assert agents.calls == [("spawn_agent", {"message": "hi"}), ("close_agent", {"agent_id": "agent-1"})]


async def test_agent_specs_without_a_method_are_not_offered(tmp_path: Path) -> None:
    class Partial(EchoAgents):
        def specs(self) -> list[ToolSpec]:
            return [*super().specs(), ToolSpec("teleport", "no such method", {}), ToolSpec("specs", "x", {})]

    router = router_for(task_context(tmp_path, Recorder(), "", {"agents": Partial()}))
    assert "teleport" not in router.names() and "specs" not in router.names()


async def test_dynamic_tools_use_a_handler_when_given(tmp_path: Path) -> None:
    async def lookup(args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        return {"answer": args["q"].upper()}

    tools = [config_pb2.DynamicTool(name="lookup"), config_pb2.DynamicTool(name="ask_client")]
    ctx = task_context(tmp_path, Recorder(), "", {"dynamic_tools": {"lookup": lookup}}, dynamic_tools=tools)
    router = router_for(ctx)
    assert await _dispatch(router, ctx, "lookup", q="abc") == ToolOutput('{"answer": "ABC"}')
    unanswered = await _dispatch(router, ctx, "ask_client")
    assert unanswered.is_error and "dynamic tools are answered by the client" in unanswered.text


async def test_cancellation_propagates_through_dispatch(tmp_path: Path) -> None:
    started = trio.Event()

    async def forever(args: dict[str, Any], ctx: TaskContext) -> str:
        started.set()
        await trio.sleep_forever()
        return "unreachable"

    tools = [config_pb2.DynamicTool(name="forever")]
    ctx = task_context(tmp_path, Recorder(), "", {"dynamic_tools": {"forever": forever}}, dynamic_tools=tools)
    router = router_for(ctx)
    outputs: list[ToolOutput] = []

    async def call() -> None:
        outputs.append(await router.dispatch(ToolCall("c", "forever", {}), ctx))

    with trio.fail_after(TURN_BOUND_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await started.wait()
            nursery.cancel_scope.cancel()
    assert outputs == []  # not turned into an error output: the cancellation went through


async def test_router_bounds_every_output(tmp_path: Path) -> None:
    async def chatty(args: dict[str, Any], ctx: TaskContext) -> str:
        return "x" * 100_000

    tools = [config_pb2.DynamicTool(name="chatty")]
    ctx = task_context(tmp_path, Recorder(), "", {"dynamic_tools": {"chatty": chatty}}, dynamic_tools=tools)
    router = router_for(ctx, max_output_bytes=1000)
    output = await _dispatch(router, ctx, "chatty")
    assert len(output.text.encode()) <= 1000 and "bytes of tool output omitted" in output.text


@given(st.text(st.characters(blacklist_characters="["), max_size=3000), st.integers(min_value=60, max_value=4000))
def test_bound_output_keeps_head_and_tail_within_the_limit(text: str, limit: int) -> None:
    bounded = bound_output(text, limit)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= limit:
        assert bounded == text
        return
    assert len(bounded.encode("utf-8", "surrogatepass")) <= limit
    head, _, rest = bounded.partition("\n[... ")
    omitted_text, _, tail = rest.partition(" bytes of tool output omitted ...]\n")
    assert text.startswith(head) and text.endswith(tail)
    assert len(head.encode("utf-8", "surrogatepass")) + int(omitted_text) + len(
        tail.encode("utf-8", "surrogatepass")
    ) == size


@pytest.mark.parametrize("limit", [0, 10])
def test_bound_output_with_a_limit_below_the_marker_keeps_only_the_marker(limit: int) -> None:
    bounded = bound_output("y" * 500, limit)
    assert bounded == "\n[... 500 bytes of tool output omitted ...]\n"
