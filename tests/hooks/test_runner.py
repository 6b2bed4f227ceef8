"""Tests for the hook runner with real shells and real hook scripts: sources, verdicts, concurrency, telemetry."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.hooks._discovery import discover
from actors.hooks._runner import HookRunner, UnknownHookEvent, run_hooks
from protos.supervisor.v1 import hooks_pb2
from tests.hook_fixtures.support import (
    BASH,
    FIXTURES,
    REPORT_SCRIPT,
    RUN_BOUND_S,
    Events,
    hooks_doc,
    registry_for,
    write_json,
    write_script,
)


async def test_hooks_from_user_project_and_two_plugins_all_run(tmp_path: Path) -> None:
    report = write_script(tmp_path / "report.sh", REPORT_SCRIPT)
    write_json(tmp_path / "user/hooks.json", hooks_doc("PostToolUse", f"{report} user", matcher="Bash"))
    project_hooks = hooks_doc("PostToolUse", f"{report} project")["hooks"]
    plugin_a = tmp_path / "plugins/a"
    write_script(plugin_a / "hooks/report.sh", REPORT_SCRIPT)
    write_json(plugin_a / "hooks/hooks.json", hooks_doc("PostToolUse", '"${CLAUDE_PLUGIN_ROOT}/hooks/report.sh" a'))
    plugin_b = tmp_path / "plugins/b"
    write_script(plugin_b / "bin/report.sh", REPORT_SCRIPT)
    write_json(
        plugin_b / ".codex-plugin/plugin.json",
        {"name": "bee", "hooks": hooks_doc("PostToolUse", '"$PLUGIN_ROOT/bin/report.sh" b', matcher="Ba.*")},
    )
    write_json(plugin_b / "hooks/hooks.json", hooks_doc("PostToolUse", "echo replaced-by-manifest"))
    registry, warnings = discover(
        [("user", tmp_path / "user"), ("project", tmp_path / "project", {"hooks": project_hooks})],
        [plugin_a, plugin_b],
        plugin_hooks=True,
    )
    assert warnings == [] and len(registry) == 4
    events = Events()
    cwd = tmp_path / "work"
    cwd.mkdir()

    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(
            registry,
            "PostToolUse",
            {"tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_response": {"output": ""}},
            cwd=cwd,
            emit=events,
            shell_program=BASH,
        )

    assert [r.outcome for r in result.results] == ["success"] * 4
    assert result.additional_context == "\n".join(
        [
            f"user root=unset claude_root=unset project={cwd}",
            f"project root=unset claude_root=unset project={cwd}",
            f"a root={plugin_a} claude_root={plugin_a} project={cwd}",
            f"b root={plugin_b} claude_root={plugin_b} project={cwd}",
        ]
    )
    started, completed = events.of(hooks_pb2.HookStarted), events.of(hooks_pb2.HookCompleted)
    plugin, user, project = (
        hooks_pb2.HOOK_SOURCE_PLUGIN,
        hooks_pb2.HOOK_SOURCE_USER,
        hooks_pb2.HOOK_SOURCE_PROJECT,
    )
    assert sorted(e.source for e in started) == sorted([user, project, plugin, plugin])
    assert {e.run_id for e in started} == {e.run_id for e in completed}
    assert all(e.outcome == hooks_pb2.HOOK_OUTCOME_SUCCESS and e.exit_code == 0 for e in completed)
    assert sorted(e.plugin_id for e in completed if e.source == plugin) == ["a", "bee"]


async def test_pre_tool_use_exit_two_blocks_with_stderr_as_reason(tmp_path: Path) -> None:
    registry = registry_for(tmp_path, hooks_doc("PreToolUse", "cat >/dev/null; echo 'no rm here' >&2; exit 2"))
    events = Events()

    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(
            registry, "PreToolUse", {"tool_name": "Bash"}, cwd=tmp_path, emit=events, shell_program=BASH
        )

    assert result.blocked and result.reason == "no rm here"
    (completed,) = events.of(hooks_pb2.HookCompleted)
    assert (completed.outcome, completed.exit_code, completed.message) == (
        hooks_pb2.HOOK_OUTCOME_BLOCKED,
        2,
        "no rm here",
    )


async def test_pre_tool_use_json_deny_blocks_and_post_tool_use_context_comes_back(tmp_path: Path) -> None:
    deny = {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": "outside the workspace",
        }
    }
    context = {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": "lint: 2 warnings"}}
    doc = {
        "hooks": {
            "PreToolUse": [
                {"matcher": "Write", "hooks": [{"type": "command", "command": f"echo '{json.dumps(deny)}'"}]}
            ],
            "PostToolUse": [{"hooks": [{"type": "command", "command": f"echo '{json.dumps(context)}'"}]}],
        }
    }
    runner = HookRunner(registry_for(tmp_path, doc), cwd=tmp_path, shell_program=BASH, session_id="s-1")

    with trio.fail_after(RUN_BOUND_S):
        pre = await runner.run("PreToolUse", {"tool_name": "Write", "tool_input": {"file_path": "/etc/x"}})
        post = await runner.run("PostToolUse", {"tool_name": "Write", "tool_response": {"ok": True}})

    assert pre.blocked and pre.decision == "deny" and pre.reason == "outside the workspace"
    assert not post.blocked and post.additional_context == "lint: 2 warnings"


async def test_matching_hooks_run_concurrently(tmp_path: Path) -> None:
    registry = registry_for(tmp_path, hooks_doc("Stop", "sleep 1", "sleep 1"))

    start = time.monotonic()
    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(registry, "Stop", {"stop_hook_active": False}, cwd=tmp_path, shell_program=BASH)
    elapsed = time.monotonic() - start

    assert [r.outcome for r in result.results] == ["success", "success"]
    assert elapsed < 1.5, f"two 1 s hooks took {elapsed:.2f} s"


async def test_session_start_resume_matcher_runs_only_on_resume(tmp_path: Path) -> None:
    registry = registry_for(tmp_path, hooks_doc("SessionStart", "echo 'resumed: reload state'", matcher="resume"))
    events = Events()
    runner = HookRunner(registry, cwd=tmp_path, emit=events, shell_program=BASH)

    with trio.fail_after(RUN_BOUND_S):
        for source in ("startup", "clear"):
            skipped = await runner.run("SessionStart", {"source": source})
            assert skipped.results == ()
        assert events.items == []
        resumed = await runner.run("SessionStart", {"source": "resume"})

    assert len(resumed.results) == 1 and resumed.additional_context == "resumed: reload state"
    assert len(events.of(hooks_pb2.HookCompleted)) == 1


async def test_existing_claude_code_hook_scripts_work_unchanged(tmp_path: Path) -> None:
    python_hook = FIXTURES / "bash_command_validator.py"
    bash_hook = FIXTURES / "block_dangerous_rm.sh"
    registry = registry_for(tmp_path, hooks_doc("PreToolUse", str(python_hook), str(bash_hook), matcher="Bash"))
    runner = HookRunner(registry, cwd=tmp_path, shell_program=BASH, session_id="abc")

    def bash(command: str) -> dict[str, Any]:
        return {"tool_name": "Bash", "tool_input": {"command": command, "description": "test"}}

    with trio.fail_after(RUN_BOUND_S):
        rm_root = await runner.run("PreToolUse", bash("rm -rf /"))
        rm_dir = await runner.run("PreToolUse", bash('rm -rf "build dir"'))
        plain_grep = await runner.run("PreToolUse", bash("grep -n TODO src/main.py"))
        listing = await runner.run("PreToolUse", bash("ls -la"))
        other_tool = await runner.run("PreToolUse", {"tool_name": "Read", "tool_input": {"file_path": "x"}})

    assert rm_root.blocked and [r.outcome for r in rm_root.results] == ["blocked", "blocked"]
    assert rm_root.reason is not None
    assert "Refusing to delete the filesystem root" in rm_root.reason and "Blocked: 'rm -rf /'" in rm_root.reason
    assert rm_dir.blocked and [r.outcome for r in rm_dir.results] == ["success", "blocked"]
    assert plain_grep.blocked and "ripgrep" in (plain_grep.reason or "")
    assert not listing.blocked and [r.exit_code for r in listing.results] == [0, 0]
    assert other_tool.results == ()


async def test_admin_hooks_disabled_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    write_json(tmp_path / "user/hooks.json", hooks_doc("Stop", f"touch {marker}"))
    write_json(tmp_path / "managed/hooks.json", hooks_doc("Stop", f"touch {marker}"))
    registry, _ = discover([("user", tmp_path / "user"), ("managed", tmp_path / "managed", {"hooks_disabled": True})])
    events = Events()

    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(registry, "Stop", {}, cwd=tmp_path, emit=events, shell_program=BASH)

    assert result.results == () and not result.blocked
    assert events.items == [] and not marker.exists()


async def test_errors_are_outcomes_never_exceptions(tmp_path: Path) -> None:
    doc = hooks_doc("PostToolUse", "echo '{not json'", "echo 'disk full' >&2; exit 3", "echo '{}'")
    registry = registry_for(tmp_path, doc)
    events = Events()

    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(
            registry, "PostToolUse", {"tool_name": "Edit"}, cwd=tmp_path, emit=events, shell_program=BASH
        )
        no_shell = await run_hooks(
            registry,
            "PostToolUse",
            {"tool_name": "Edit"},
            cwd=tmp_path,
            shell_program=["/nonexistent/sh", "-c"],
        )

    assert [r.outcome for r in result.results] == ["error", "error", "success"]
    assert not result.blocked
    assert "invalid JSON" in result.errors[0] and result.errors[1] == "disk full"
    assert [e.outcome for e in events.of(hooks_pb2.HookCompleted)].count(hooks_pb2.HOOK_OUTCOME_ERROR) == 2
    assert [r.outcome for r in no_shell.results] == ["error"] * 3
    assert all("could not start hook shell" in e for e in no_shell.errors)


async def test_hook_input_carries_claude_code_fields(tmp_path: Path) -> None:
    registry = registry_for(tmp_path, hooks_doc("UserPromptSubmit", f"cat > {tmp_path}/input.json"))
    runner = HookRunner(
        registry, cwd=tmp_path, shell_program=BASH, session_id="sess-9", transcript_path="/logs/t.jsonl"
    )

    with trio.fail_after(RUN_BOUND_S):
        await runner.run("UserPromptSubmit", {"prompt": "hello"})

    assert json.loads((tmp_path / "input.json").read_text()) == {
        "session_id": "sess-9",
        "transcript_path": "/logs/t.jsonl",
        "cwd": str(tmp_path),
        "hook_event_name": "UserPromptSubmit",
        "prompt": "hello",
    }
    with pytest.raises(UnknownHookEvent):
        await runner.run("PreCompactify", {})


async def test_span_per_run_under_the_given_traceparent_and_counter_by_source(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    registry = registry_for(tmp_path, hooks_doc("Stop", "exit 0", "exit 1"))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    runner = HookRunner(
        registry,
        cwd=tmp_path,
        shell_program=BASH,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )

    with trio.fail_after(RUN_BOUND_S):
        await runner.run("Stop", {}, traceparent=f"00-{trace_id}-{parent_id}-01")
        await runner.run("Stop", {})  # no trace context: no (orphan) span, still counted

    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "actors.hooks"
        assert span.name == "hook Stop"
        assert format(span.context.trace_id, "032x") == trace_id
        assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
        assert span.attributes is not None and span.attributes["hook.source"] == "user"
    assert sorted(str(s.attributes["hook.outcome"]) for s in spans if s.attributes) == ["error", "success"]
    data = reader.get_metrics_data()
    assert data is not None
    points: list[Any] = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "hook_runs"
        for point in metric.data.data_points
    ]
    assert sum(p.value for p in points) == 4
    assert {p.attributes["source"] for p in points} == {"user"}
    assert sorted((p.attributes["outcome"], p.value) for p in points) == [("error", 2), ("success", 2)]
    meter_provider.shutdown()
    tracer_provider.shutdown()
