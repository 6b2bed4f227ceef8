"""One MCP connection against real server processes: start, calls, bounds, failures, stop."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import trio

from actors.mcp._client import ConnectionState, McpConnectionService
from actors.mcp._config import parse_mcp_server
from actors.mcp._errors import (
    McpCallFailed,
    McpServerUnavailable,
    McpStartupError,
    McpToolDisabled,
    McpToolTimeout,
)
from actors.mcp._process import has_exited
from actors.mcp._results import MAX_RESULT_TEXT_BYTES
from protos.supervisor.v1 import mcp_pb2
from tests.mcp_servers.fixtures import EXAMPLE, Events, time_server, toolbox

#: Bound on one server start in these tests (an SDK server imports for ~1 s on a busy 2-core machine).
START_BOUND_S = 20.0


async def test_start_list_and_call() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert service.state is ConnectionState.READY
        names = [tool.name for tool in service.tools()]
        assert {"add", "echo", "word_count", "big", "crash"} <= set(names)
        result = await service.call_tool("add", {"a": 2, "b": 40})
        assert result.text == "42" and not result.is_error
        assert result.structured_content_json == '{"result": 42}'
        counted = await service.call_tool("word_count", {"text": "one two three"})
        assert counted.text == "3"
        bad = await service.call_tool("add", {"a": "x"})  # a tool-level error is a result, not an exception
        assert bad.is_error
    statuses = [event.status for event in events.of(mcp_pb2.McpStartupUpdate)]
    assert statuses == [mcp_pb2.MCP_STARTUP_STATUS_STARTING, mcp_pb2.MCP_STARTUP_STATUS_READY]


async def test_cwd_and_env_reach_the_server(tmp_path: Path) -> None:
    config = toolbox(cwd=str(tmp_path), env={"TOOLBOX_GREETING": "hello"})
    async with McpConnectionService(config, Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert (await service.call_tool("where")).text == f"{tmp_path} hello"


async def test_pypi_time_server_listed_and_called() -> None:
    async with McpConnectionService(time_server(), Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert {"get_current_time", "convert_time"} <= {tool.name for tool in service.tools()}
        result = await service.call_tool("get_current_time", {"timezone": "UTC"})
        assert not result.is_error
        assert '"timezone": "UTC"' in result.text
        converted = await service.call_tool(
            "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
        )
        assert "21:00" in converted.text


async def test_bundled_example_server() -> None:
    config = parse_mcp_server("example", {"command": sys.executable, "args": [EXAMPLE]})
    async with McpConnectionService(config, Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert {tool.name for tool in service.tools()} == {"add", "word_count"}
        assert (await service.call_tool("word_count", {"text": "a b c d"})).text == "4"
        assert (await service.call_tool("add", {"a": 1.5, "b": 2})).text == "3.5"


async def test_oversized_output_is_truncated_with_marker() -> None:
    async with McpConnectionService(toolbox(), Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        size = 3 * MAX_RESULT_TEXT_BYTES
        result = await service.call_tool("big", {"size": size})
    assert result.truncated
    assert result.total_bytes == size
    assert len(result.text.encode()) < MAX_RESULT_TEXT_BYTES + 100
    assert result.text.endswith(f"[... output truncated: showed {MAX_RESULT_TEXT_BYTES} of {size} bytes ...]")
    assert result.structured_content_json == ""  # the structured copy was over its bound too


async def test_disabled_and_filtered_tools() -> None:
    config = toolbox(disabled_tools=["crash"], enabled_tools=["add", "crash", "echo"])
    async with McpConnectionService(config, Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert [tool.name for tool in service.tools()] == ["add", "echo"]
        with pytest.raises(McpToolDisabled, match="tool 'crash' is disabled"):
            await service.call_tool("crash")
        with pytest.raises(McpToolDisabled, match="tool 'big' is disabled"):
            await service.call_tool("big", {"size": 1})
        assert service.state is ConnectionState.READY


async def test_tool_timeout_is_bounded() -> None:
    async with McpConnectionService(toolbox(tool_timeout_sec=0.5), Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        began = time.monotonic()
        with pytest.raises(McpToolTimeout, match="tool_timeout_sec"):
            await service.call_tool("sleep", {"seconds": 30})
        assert 0.4 < time.monotonic() - began < 1.5
        assert (await service.call_tool("add", {"a": 1, "b": 1})).text == "2"  # still serving


async def test_stop_kills_the_process_group() -> None:
    async with McpConnectionService(toolbox(), Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        pid = service.pid
        assert pid is not None and os.getpgid(pid) == pid  # its own process group
        began = time.monotonic()
        await service.stop()
        assert time.monotonic() - began < 1.5
        assert service.state is ConnectionState.STOPPED and service.pid is None
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        with pytest.raises(McpServerUnavailable, match="is stopped"):
            await service.call_tool("add", {"a": 1, "b": 1})


async def test_runtime_restart_gives_a_new_process() -> None:
    async with McpConnectionService(toolbox(), Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        first = service.pid
        with trio.fail_after(START_BOUND_S):
            await service.restart()
        assert service.pid not in (None, first)
        assert has_exited(first) if first is not None else False
        assert (await service.call_tool("pid")).text == str(service.pid)


async def test_server_that_exits_at_start_reports_code_and_stderr() -> None:
    events = Events()
    async with McpConnectionService(toolbox("early", "--exit-on-start"), events) as service:
        with trio.fail_after(START_BOUND_S), pytest.raises(McpStartupError) as info:
            await service.start()
        assert service.state is ConnectionState.FAILED
    message = str(info.value)
    assert message.startswith("early: server process exited with code 3 during start-up")
    assert "refusing to start (--exit-on-start)" in message
    failed = events.of(mcp_pb2.McpStartupUpdate)[-1]
    assert failed.status == mcp_pb2.MCP_STARTUP_STATUS_FAILED and "code 3" in failed.error


async def test_missing_command_and_invalid_name_fail_that_server_only() -> None:
    missing = parse_mcp_server("nope", {"command": "/nonexistent/mcp-server-binary"})
    async with McpConnectionService(missing, Events()) as service:
        with pytest.raises(McpStartupError, match="could not start `/nonexistent/mcp-server-binary`"):
            await service.start()
    events = Events()
    async with McpConnectionService(toolbox("bad name!"), events) as service:
        with pytest.raises(McpStartupError, match=r"invalid server name 'bad name!'"):
            await service.start()
    assert events.of(mcp_pb2.McpStartupUpdate)[-1].status == mcp_pb2.MCP_STARTUP_STATUS_FAILED


async def test_on_first_use_starts_on_the_first_call() -> None:
    events = Events()
    async with McpConnectionService(toolbox(start="on_first_use"), events) as service:
        assert service.state is ConnectionState.STOPPED and service.pid is None
        with trio.fail_after(START_BOUND_S):
            result = await service.call_tool("add", {"a": 3, "b": 4})
        assert result.text == "7"
        assert service.state is ConnectionState.READY
    assert [e.status for e in events.of(mcp_pb2.McpStartupUpdate)][:2] == [
        mcp_pb2.MCP_STARTUP_STATUS_STARTING,
        mcp_pb2.MCP_STARTUP_STATUS_READY,
    ]


async def test_crash_during_call_restarts_and_serves_again() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        first = service.pid
        with pytest.raises(McpCallFailed, match=r"exited during the call to 'crash'|failed the call to 'crash'"):
            await service.call_tool("crash")
        with trio.fail_after(START_BOUND_S):
            result = await service.call_tool("pid")  # waits for the restart, then answers
        assert result.text != str(first)
        assert service.restarts == 1
    restarted = events.of(mcp_pb2.McpServerRestarted)
    assert len(restarted) == 1 and restarted[0].attempt == 1
    assert restarted[0].reason == "server process exited with code 1"


async def test_stop_while_starting_is_cancelled_and_quick() -> None:
    events = Events()
    async with McpConnectionService(toolbox("slow", "--hang"), events) as service, trio.open_nursery() as nursery:

        async def start() -> None:
            with pytest.raises(McpStartupError, match="start cancelled"):
                await service.start()

        nursery.start_soon(start)
        with trio.fail_after(START_BOUND_S):
            while service.pid is None:
                await trio.sleep(0.01)
        pid = service.pid
        began = time.monotonic()
        await service.stop()
        assert time.monotonic() - began < 1.5
        assert has_exited(pid)
    assert events.of(mcp_pb2.McpStartupUpdate)[-1].status == mcp_pb2.MCP_STARTUP_STATUS_CANCELLED


async def test_signalled_server_reason_names_the_signal() -> None:
    events = Events()
    async with McpConnectionService(toolbox(), events) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert service.pid is not None
        os.kill(service.pid, signal.SIGKILL)
        with trio.fail_after(START_BOUND_S):
            while not events.of(mcp_pb2.McpServerRestarted):
                await trio.sleep(0.01)
    assert events.of(mcp_pb2.McpServerRestarted)[0].reason == "server process was killed by signal 9 (SIGKILL)"
