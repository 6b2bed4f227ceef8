"""``supervisor.py exec --json`` prints what Codex 0.169 printed for the same work (``tests/fixtures/codex_0169/``).

Each recorded scenario runs again, on us, against the same fake model (``tests/helpers/codex_scenarios.py``) with
the same ``config.toml`` and argv; both JSONL streams are normalised (thread ids, paths and item ids replaced by
their order of appearance) and must be equal, event for event and field for field, as must the exit codes.

What cannot be equal is relaxed in one place each (``_normalise``):
- ``spawn4``: how many subagents have finished when ``wait_agent`` returns, and whether the last subagent's
  completion notification makes the model answer once more, depend on timing (Codex itself varies). The wait's
  completed item is checked for consistency (its receivers are exactly the finished agents of its states, each
  ``completed`` with its own task's answer) and then reduced to that; repeated final messages count as one, and
  the usage as "11 input / 7 output tokens per model request of the root thread". A spawned agent's status when
  its spawn returns is ``pending_init`` in Codex, ``pending_init`` or ``running`` here.
- Error texts: Codex prints the provider's raw body; ours names the provider error. Both must contain the
  server's message, then they are compared as ``<error: MESSAGE>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.codex_scenarios import SCENARIOS, codex_config, route, user_texts
from tests.helpers.fake_openai_server import DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS, FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "codex_0169"
#: Bound on one exec run.
RUN_TIMEOUT_S = 120.0
#: Our runs' bound on an MCP server's start (Codex's recording used its default, 30 s).
MCP_STARTUP_S = 90
SERVER_ERROR = "scripted status 400"
#: What a subagent's status may be when its spawn returns (Codex: always ``pending_init``).
SPAWNED_STATUSES = ("pending_init", "running")
Json = dict[str, Any]


def _exec(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "exec", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)


def run_ours(scenario: str, tmp_path: Path) -> tuple[list[Json], int, list[Any], Path]:
    """Our exec --json for ``scenario`` as record.py ran Codex: (events, exit code, requests, workspace)."""
    prompt, extra, argv = SCENARIOS[scenario]
    # a loaded test machine may start Python MCP servers slower than Codex's 30 s default allows; the output
    # does not depend on it
    extra = extra.replace("required = true\n", f"required = true\nstartup_timeout_sec = {MCP_STARTUP_S}\n")
    home, state, work = tmp_path / "codex-home", tmp_path / "state", tmp_path / "work"
    for d in (home, state, work):
        d.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "X": "fake-key",
           "SESSION_SUPERVISOR_HOME": str(state)}
    base = ["--json", "--skip-git-repo-check"]
    with FakeOpenAIServer(router=route(scenario)) as server:
        (home / "config.toml").write_text(codex_config(server.base_url, extra))
        done = [_exec([*base, *argv, prompt], work, env)]
        if scenario == "resume":
            thread = json.loads(done[0].stdout.splitlines()[0])["thread_id"]
            done.append(_exec([*base, "resume", thread, "again"], work, env))
        requests = [r.body for r in server.requests]
    for d in done:
        assert d.stdout, d.stderr
    events = [json.loads(line) for d in done for line in d.stdout.splitlines()]
    return events, done[-1].returncode, requests, work


def recorded(scenario: str) -> tuple[list[Json], int, list[Any], Path]:
    """Codex's recording of ``scenario``: (events, exit code, request bodies, its workspace)."""
    events = [json.loads(line) for line in (FIXTURES / f"{scenario}.jsonl").read_text().splitlines()]
    meta = json.loads((FIXTURES / f"{scenario}.meta.json").read_text())
    requests = [r["body"] for r in json.loads((FIXTURES / f"{scenario}.requests.json").read_text())]
    paths = [c["path"] for e in events for c in e.get("item", {}).get("changes", [])]
    work = Path(paths[0]).parent if paths else Path("/nonexistent")
    return events, int(meta["exit_code"]), requests, work


class _Names:
    """Stable placeholders for values that differ between runs (ids), by order of first appearance."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        return self.seen.setdefault(value, f"<{self.prefix}{len(self.seen)}>")


def _root_requests(requests: list[Any], prompt: str) -> int:
    return sum(1 for body in requests if prompt in user_texts(body))


def _normalise(scenario: str, events: list[Json], requests: list[Any], work: Path) -> list[Json]:
    threads, items = _Names("thread"), _Names("item")
    spawned: dict[str, str] = {}  # agent thread -> its task's prompt
    out: list[Json] = []
    for original in events:
        event = json.loads(json.dumps(original))
        if "thread_id" in event:
            event["thread_id"] = threads(event["thread_id"])
        for key in ("message",):
            if key in event:
                event[key] = _error_text(event[key])
        if "error" in event and isinstance(event["error"], dict):
            event["error"]["message"] = _error_text(event["error"]["message"])
        item = event.get("item")
        if item is not None:
            item["id"] = items(item["id"])
            for change in item.get("changes", []):
                change["path"] = os.path.relpath(change["path"], work)
            if item["type"] == "collab_tool_call":
                _collab(scenario, event, item, threads, spawned)
        out.append(event)
    if scenario == "spawn4":
        out = _spawn4_tail(out, requests)
    return out


def _error_text(message: str) -> str:
    assert SERVER_ERROR in message, message
    return f"<error: {SERVER_ERROR}>"


def _collab(scenario: str, event: Json, item: Json, threads: _Names, spawned: dict[str, str]) -> None:
    item["sender_thread_id"] = threads(item["sender_thread_id"])
    states = item["agents_states"]
    if item["tool"] == "spawn_agent" and event["type"] == "item.completed":
        [agent] = item["receiver_thread_ids"]
        spawned[agent] = item["prompt"]
        # the new agent's status when the spawn returned: Codex's has not started yet, ours may have
        assert list(states) == [agent] and states[agent]["status"] in SPAWNED_STATUSES, item
        states[agent] = {"status": "<just spawned>", "message": None}
    if scenario == "spawn4" and item["tool"] == "wait" and event["type"] == "item.completed":
        # timing: which agents have finished; check they are consistent, then keep only that they are
        assert sorted(item["receiver_thread_ids"]) == sorted(states), item
        assert states, item
        for agent, state in states.items():
            assert state == {"status": "completed", "message": f"result of {spawned[agent]}"}, item
        item["receiver_thread_ids"] = "<the finished agents>"
        item["agents_states"] = "<their answers>"
        return
    item["receiver_thread_ids"] = [threads(t) for t in item["receiver_thread_ids"]]
    item["agents_states"] = {threads(k): v for k, v in states.items()}


def _spawn4_tail(events: list[Json], requests: list[Any]) -> list[Json]:
    out: list[Json] = []
    for event in events:
        item = event.get("item", {})
        if out and item.get("type") == "agent_message" and out[-1].get("item", {}).get("text") == item["text"]:
            continue  # the model answered again after a late subagent notification (timing)
        out.append(event)
    usage = out[-1]["usage"]
    calls = _root_requests(requests, SCENARIOS["spawn4"][0])
    assert usage["input_tokens"] == DEFAULT_INPUT_TOKENS * calls, (usage, calls)
    assert usage["output_tokens"] == DEFAULT_OUTPUT_TOKENS * calls, (usage, calls)
    out[-1] = {**out[-1], "usage": {**usage, "input_tokens": "<11 per request>", "output_tokens": "<7 per request>"}}
    return out


@pytest.mark.parametrize("scenario", ["simple", "shell", "resume", "spawn4", "extras", "failed", "mcp"])
def test_exec_json_matches_codex_0169(scenario: str, tmp_path: Path) -> None:
    theirs, their_code, their_requests, their_work = recorded(scenario)
    ours, our_code, our_requests, our_work = run_ours(scenario, tmp_path)
    expected = _normalise(scenario, theirs, their_requests, their_work)
    got = _normalise(scenario, ours, our_requests, our_work)
    assert got == expected
    assert our_code == their_code
    if scenario == "extras":  # the patch was applied, in the workspace
        assert (our_work / "hello.txt").read_text() == "hello\n"
