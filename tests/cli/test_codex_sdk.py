"""OpenAI's TypeScript SDK (``@openai/codex-sdk``, npm) drives ``supervisor.py exec`` as it drives ``codex``.

``new Codex({codexPathOverride})`` points at a two-line wrapper that runs our ``supervisor.py exec``; the SDK
builds its own argv (``exec --experimental-json --config openai_base_url=... --sandbox --cd
--skip-git-repo-check --config model_reasoning_effort=... --config approval_policy=... [resume ID]``), writes the
prompt on stdin (images as ``--image``, a turn's ``outputSchema`` as ``--output-schema``), sets
``CODEX_API_KEY`` and parses our JSONL. The model is the fake Responses server, the
configuration a Codex ``config.toml`` in ``$CODEX_HOME`` whose ``[model_providers.local]`` reads its key from
``CODEX_API_KEY`` (``env_key``). The SDK is plain JavaScript that only spawns the given binary (no network of
its own); its ``@openai/codex`` dependency (the real CLI, ~400 MB) is replaced by ``tests/node/codex-stub``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.codex_scenarios import codex_config, route_any, user_texts
from tests.helpers.fake_openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
#: Bound on the whole Node script (four `exec` runs, each a cold Python start).
NODE_TIMEOUT_S = 180
API_KEY = "sdk-test-key"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(16))
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
          "additionalProperties": False}


def _run_sdk(tmp_path: Path, server: FakeOpenAIServer) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@openai" / "codex-sdk").is_dir():
        pytest.fail("node and tests/node/node_modules are required: run `make test` (it runs npm ci)")
    codex_home, state, work = tmp_path / "codex-home", tmp_path / "state", tmp_path / "work"
    for d in (codex_home, state, work):
        d.mkdir()
    (codex_home / "config.toml").write_text(codex_config(server.base_url, key_env="CODEX_API_KEY"))
    wrapper = tmp_path / "codex"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "supervisor.py"}" "$@"\n')
    wrapper.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(codex_home),
           "SESSION_SUPERVISOR_HOME": str(state), "NO_COLOR": "1"}
    (tmp_path / "shot.png").write_bytes(PNG)
    opts = {"codex": str(wrapper), "baseUrl": server.base_url, "apiKey": API_KEY, "env": env, "workdir": str(work),
            "image": str(tmp_path / "shot.png"), "schema": SCHEMA}
    done = subprocess.run([node, "codex_sdk.mjs", json.dumps(opts)], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


def test_the_codex_sdk_runs_turns_shell_resume_and_subagents(tmp_path: Path) -> None:
    with FakeOpenAIServer(router=route_any()) as server:
        seen = _run_sdk(tmp_path, server)
        requests = list(server.requests)
    assert requests and all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in requests)

    # a simple turn: the final response and Codex's usage fields
    simple = seen["simple"]
    assert simple["finalResponse"] == "Hello"
    assert simple["usage"] == {"input_tokens": 11, "cached_input_tokens": 0, "cache_write_input_tokens": 0,
                               "output_tokens": 7, "reasoning_output_tokens": 0}
    assert [item["type"] for item in simple["items"]] == ["agent_message"]

    # a shell call: a command_execution item with the command's output
    [command] = [item for item in seen["shell"]["items"] if item["type"] == "command_execution"]
    assert command["aggregated_output"] == "hi\n"
    assert command["exit_code"] == 0 and command["status"] == "completed"
    assert "echo hi" in command["command"]
    assert seen["shell"]["finalResponse"] == "done"

    # the resumed thread: the same id, and the model saw the earlier conversation
    assert seen["resume"]["id"] == simple["id"]
    assert seen["resume"]["finalResponse"] == "Again"
    [resumed] = [r for r in requests if "again" in user_texts(r.body)]
    texts = user_texts(resumed.body)
    assert texts.index("say hi") < texts.index("again")
    assistant = [item for item in resumed.body["input"] if item.get("role") == "assistant"]
    assert any("Hello" in json.dumps(item) for item in assistant)
    # the turn's image (SDK: `resume ID --image F`) and output schema (`--output-schema F`) reached the model
    [with_image] = [item for item in resumed.body["input"] if item.get("role") == "user"
                    and isinstance(item.get("content"), list) and item["content"][0].get("type") == "input_image"]
    assert with_image["content"][0]["image_url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert resumed.body["text"]["format"]["schema"] == SCHEMA

    # four subagents, streamed: four spawn items, each completed with its agent, turn.completed last
    events = seen["spawn"]["events"]
    assert events[0] == {"type": "thread.started", "thread_id": seen["spawn"]["id"]}
    assert events[-1]["type"] == "turn.completed"
    spawned = [e["item"] for e in events if e["type"] == "item.completed"
               and e["item"]["type"] == "collab_tool_call" and e["item"]["tool"] == "spawn_agent"]
    assert sorted(item["prompt"] for item in spawned) == [f"task {n}" for n in range(4)]
    agents = {tid for item in spawned for tid in item["receiver_thread_ids"]}
    assert len(agents) == 4 and seen["spawn"]["id"] not in agents
    assert all(item["sender_thread_id"] == seen["spawn"]["id"] for item in spawned)
    subagent_prompts = sorted(t for r in requests for t in user_texts(r.body) if t.startswith("task "))
    assert subagent_prompts == [f"task {n}" for n in range(4)]
