"""`supervisor.py run --attach` runs the session in this home's running `serve`, with the same output.

Where the session ran is told by the model's API key: only the server's environment has it, so a run that
works without it in the client's environment ran in the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cli.test_run_exit import ROOT, RUN_TIMEOUT_S, cli
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply
from tests.helpers.serve import ServeProcess


def _home(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model_provider = "openai"\nmodel = "gpt-5.5"\napproval_policy = "never"\n{extra}'
        f'[model_providers.openai]\nbase_url = "{base_url}"\nmax_retries = 0\n')
    return home


def _shape(stdout: str) -> list[dict[str, Any]]:
    """The JSONL lines with ids and usage left out (they differ between any two runs)."""
    out = []
    for line in stdout.splitlines():
        obj = json.loads(line)
        obj.pop("thread_id", None)
        if isinstance(obj.get("item"), dict):
            obj["item"].pop("id", None)
        obj.pop("usage", None)
        out.append(obj)
    return out


def _client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CODEX_API_KEY")}
    return {**env, "NO_COLOR": "1"}


def test_attach_runs_in_the_server_with_the_same_output(tmp_path: Path) -> None:
    with FakeOpenAIServer(router=lambda _: Reply(text_deltas=("hello ", "there"))) as model:
        home = _home(tmp_path, model.base_url)
        alone = cli(home, "run", "--json", "hi", env={"OPENAI_API_KEY": "sk-test"})
        assert alone.returncode == 0, alone.stderr
        with ServeProcess(home, args=(), env={**os.environ, "OPENAI_API_KEY": "sk-test"}) as serve:
            attached = subprocess_cli(home, "run", "--json", "--attach", "hi")
            assert attached.returncode == 0, attached.stderr
            no_flag = subprocess_cli(home, "run", "--json", "hi")  # opt-in: without it, this process runs it
            assert no_flag.returncode == 2 and "no API key" in no_flag.stderr
            assert serve.stop() == 0
    assert _shape(attached.stdout) == _shape(alone.stdout)
    assert _shape(attached.stdout)[-1]["type"] == "turn.completed"


def test_the_config_key_attaches_and_no_server_means_in_process(tmp_path: Path) -> None:
    with FakeOpenAIServer(router=lambda _: Reply(text_deltas=("ok",))) as model:
        home = _home(tmp_path, model.base_url, extra="[run]\nattach = true\n")
        with ServeProcess(home, args=(), env={**os.environ, "OPENAI_API_KEY": "sk-test"}) as serve:
            attached = subprocess_cli(home, "run", "hi")  # the readable view, attached by the config key
            assert attached.returncode == 0, attached.stderr
            assert "root completed" in attached.stdout
            assert serve.stop() == 0
        # the server is gone (its serve.json with it): the run works alone, with the key in its own environment
        alone = cli(home, "run", "--json", "--attach", "hi", env={"OPENAI_API_KEY": "sk-test"})
        assert alone.returncode == 0, alone.stderr
        assert json.loads(alone.stdout.splitlines()[-1])["type"] == "turn.completed"


def test_a_start_the_server_refuses_is_reported_like_an_in_process_one(tmp_path: Path) -> None:
    with FakeOpenAIServer(router=lambda _: Reply(text_deltas=("ok",))) as model:
        home = _home(tmp_path, model.base_url)
        with ServeProcess(home, args=(), env={**os.environ, "OPENAI_API_KEY": "sk-test"}) as serve:
            refused = subprocess_cli(home, "run", "--attach", "-c", "approval_policy=bogus", "x")
            assert serve.stop() == 0
    assert refused.returncode == 2
    assert "approval_policy" in refused.stderr and "bogus" in refused.stderr


def subprocess_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` with the client's environment stripped of the model's API key."""
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), *args], cwd=home,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, env=_client_env())
