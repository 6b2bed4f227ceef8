"""Rug-pull guard, elicitation and tracing of MCP tool calls, against real server processes."""

from __future__ import annotations

import json

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.mcp._client import McpConnectionService
from actors.mcp._errors import McpCallFailed, McpToolChanged
from protos.supervisor.v1 import mcp_pb2
from tests.mcp_servers.fixtures import Events, toolbox

START_BOUND_S = 20.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


async def test_changed_tool_is_refused_until_accepted() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert (await service.call_tool("echo", {"text": "hi"})).text == "hi"
        assert (await service.call_tool("mutate")).text == "mutated"
        await service.list_tools(refresh=True)  # also triggered by tools/list_changed where the protocol has it
        changed = events.of(mcp_pb2.McpToolsChanged)
        assert len(changed) == 1
        assert changed[0].server == "toolbox"
        assert [tool.tool for tool in changed[0].tools] == ["echo"]
        assert "evil.example" in changed[0].tools[0].description
        assert service.pending_tools == ["echo"]
        with pytest.raises(McpToolChanged, match="tool 'echo' of MCP server 'toolbox' changed"):
            await service.call_tool("echo", {"text": "hi"})
        assert (await service.call_tool("add", {"a": 1, "b": 2})).text == "3"  # unchanged tools still work
        await service.list_tools(refresh=True)
        assert len(events.of(mcp_pb2.McpToolsChanged)) == 1  # the same change is flagged once
        assert service.accept_tools() == ["echo"]
        assert (await service.call_tool("echo", {"text": "ok"})).text == "ok"
        await service.list_tools(refresh=True)
        assert service.pending_tools == []


async def test_changed_tool_list_after_restart_is_flagged() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        await service.call_tool("mutate")  # the server changes; a crash-restart brings the original back
        await service.list_tools(refresh=True)
        assert service.accept_tools() == ["echo"]  # now the mutated description is the accepted one
        with trio.fail_after(START_BOUND_S):
            with pytest.raises(McpCallFailed):
                await service.call_tool("crash")
            while not events.of(mcp_pb2.McpServerRestarted):
                await trio.sleep(0.01)
        # The restarted process offers the original description: a change against what was accepted.
        assert service.pending_tools == ["echo"]
        with pytest.raises(McpToolChanged):
            await service.call_tool("echo", {"text": "x"})


async def test_elicitation_declined_under_never() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events, approval_policy="never") as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        result = await service.call_tool("ask")
    assert result.text == "no name (decline)"
    assert events.of(mcp_pb2.McpElicitationRequested) == []


async def test_elicitation_answered_from_another_thread() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        async with trio.open_nursery() as nursery:
            outcome: list[str] = []

            async def call() -> None:
                outcome.append((await service.call_tool("ask")).text)

            nursery.start_soon(call)
            with trio.fail_after(START_BOUND_S):
                while not events.of(mcp_pb2.McpElicitationRequested):
                    await trio.sleep(0.01)
            request = events.of(mcp_pb2.McpElicitationRequested)[0]
            assert request.server == "toolbox"
            assert request.message == "What is your name?"
            assert json.loads(request.schema_json)["properties"]["name"]["type"] == "string"
            assert not service.resolve_elicitation("no-such-id", "accept", "{}")
            resolved = await trio.to_thread.run_sync(
                service.resolve_elicitation,
                request.id,
                mcp_pb2.MCP_ELICITATION_ACTION_ACCEPT,
                json.dumps({"name": "Ada"}),
            )
            assert resolved
        assert outcome == ["hello Ada"]
        assert not service.resolve_elicitation(request.id, "accept", "{}")  # answered already


async def test_unanswered_elicitation_is_cancelled_after_its_timeout() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events, elicitation_timeout_s=0.3) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        with trio.fail_after(5):
            result = await service.call_tool("ask")
    assert result.text == "no name (cancel)"
    assert len(events.of(mcp_pb2.McpElicitationRequested)) == 1


async def test_call_span_is_a_child_of_the_callers_traceparent() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with McpConnectionService(toolbox(), Events(), tracer_provider=provider) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        await service.call_tool("add", {"a": 1, "b": 1}, traceparent=f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
        await service.call_tool("add", {"a": 1, "b": 1})  # untraced: no span, no orphan root
    spans = exporter.get_finished_spans()
    provider.shutdown()
    assert len(spans) == 1
    span = spans[0]
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "actors.mcp"
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert span.attributes is not None and span.attributes["mcp.tool"] == "add"
