"""``supervisor.py exec`` options and sandbox, run for real: a subprocess, a Codex ``config.toml``, the fake model.

- ``--add-dir`` appends a writable root to ``[sandbox_workspace_write] writable_roots`` (both work, on disk,
  under the bubblewrap sandbox of ``workspace-write``; elsewhere a write fails).
- ``apply_patch`` adds, updates and deletes files in a ``workspace-write`` workspace (``file_change`` items); a
  patch outside it is refused and writes nothing.
- ``resume --last`` continues this directory's last thread; a config key we do not know is a warning.
- ``--output-schema`` reaches the model as the Responses ``text.format`` JSON schema; ``--image`` files as
  ``input_image`` parts (``data:`` URLs) before the prompt's text.
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

from tests.helpers.codex_scenarios import codex_config, user_texts
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 120.0
Json = dict[str, Any]

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="workspace-write needs bubblewrap")


class Exec:
    """A Codex home, a state home and a workspace under ``tmp_path``; ``run`` is one ``exec --json``."""

    def __init__(self, tmp_path: Path, server: FakeOpenAIServer, extra_config: str = "", top: str = "") -> None:
        self.home, self.state, self.work = tmp_path / "codex-home", tmp_path / "state", tmp_path / "work"
        for d in (self.home, self.state, self.work):
            d.mkdir()
        (self.home / "config.toml").write_text(top + codex_config(server.base_url, extra_config))
        self.env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "CODEX_HOME": str(self.home),
                    "X": "fake-key", "SESSION_SUPERVISOR_HOME": str(self.state)}

    def run(self, *args: str) -> tuple[list[Json], subprocess.CompletedProcess[str]]:
        done = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "exec", "--json",
                               "--skip-git-repo-check", *args], cwd=self.work, env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              check=False)
        return [json.loads(line) for line in done.stdout.splitlines()], done


def _items(events: list[Json], kind: str) -> list[Json]:
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


@needs_bwrap
def test_add_dir_appends_a_writable_root_in_workspace_write(tmp_path: Path) -> None:
    configured, added, elsewhere = (tmp_path / name for name in ("configured", "added", "elsewhere"))
    for d in (configured, added, elsewhere):
        d.mkdir()
    script = " ; ".join(f"(echo x > {d}/f && echo wrote-{d.name}) || echo refused-{d.name}"
                        for d in (configured, added, elsewhere))
    replies = [Reply(calls=(ScriptedCall("exec_command", {"cmd": script}, call_id="c1"),)), Reply(text_deltas=("ok",))]
    with FakeOpenAIServer(replies) as server:
        # no /tmp and no $TMPDIR among the roots (Codex's defaults), so only the roots given are writable
        run = Exec(tmp_path, server, f'\n[sandbox_workspace_write]\nwritable_roots = ["{configured}"]\n'
                   'exclude_slash_tmp = true\nexclude_tmpdir_env_var = true\n')
        events, done = run.run("--sandbox", "workspace-write", "--add-dir", str(added), "write")
    assert done.returncode == 0, done.stderr
    [command] = _items(events, "command_execution")
    assert "wrote-configured" in command["aggregated_output"]
    assert "wrote-added" in command["aggregated_output"]
    assert "refused-elsewhere" in command["aggregated_output"]
    assert (configured / "f").read_text() == "x\n" and (added / "f").read_text() == "x\n"
    assert not (elsewhere / "f").exists()


@needs_bwrap
def test_apply_patch_adds_updates_deletes_in_the_workspace_and_refuses_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    patch = ("*** Begin Patch\n*** Add File: new.txt\n+hello\n*** Update File: old.txt\n@@\n one\n-two\n+TWO\n"
             "*** Delete File: gone.txt\n*** End Patch\n")
    escape = f"*** Begin Patch\n*** Add File: {outside}/evil.txt\n+x\n*** End Patch\n"
    replies = [Reply(calls=(ScriptedCall("apply_patch", {}, call_id="p1", custom_input=patch),)),
               Reply(calls=(ScriptedCall("apply_patch", {}, call_id="p2", custom_input=escape),)),
               Reply(text_deltas=("patched",))]
    with FakeOpenAIServer(replies) as server:
        run = Exec(tmp_path, server)
        (run.work / "old.txt").write_text("one\ntwo\n")
        (run.work / "gone.txt").write_text("bye\n")
        events, done = run.run("--sandbox", "workspace-write", "patch it")
        outputs = [i for i in server.requests[-1].body["input"] if i.get("type") == "custom_tool_call_output"]
    assert done.returncode == 0, done.stderr
    assert (run.work / "new.txt").read_text() == "hello\n"
    assert (run.work / "old.txt").read_text() == "one\nTWO\n"
    assert not (run.work / "gone.txt").exists()
    assert not (outside / "evil.txt").exists()
    changes = _items(events, "file_change")
    first = changes[0]
    assert first["status"] == "completed"
    assert sorted((os.path.basename(c["path"]), c["kind"]) for c in first["changes"]) == [
        ("gone.txt", "delete"), ("new.txt", "add"), ("old.txt", "update")]
    assert all(c["status"] != "completed" for c in changes[1:])  # the escape never shows as applied
    assert "Success" in outputs[0]["output"]
    assert "rejected" in outputs[1]["output"] and "outside" in outputs[1]["output"]


def test_resume_last_continues_this_directorys_thread(tmp_path: Path) -> None:
    with FakeOpenAIServer([Reply(text_deltas=("Hello",)), Reply(text_deltas=("Again",))]) as server:
        run = Exec(tmp_path, server)
        first, done = run.run("say hi")
        assert done.returncode == 0, done.stderr
        again, done = run.run("resume", "--last", "again")
        assert done.returncode == 0, done.stderr
        texts = user_texts(server.requests[-1].body)
    assert again[0] == first[0]  # thread.started with the same id
    assert _items(again, "agent_message")[-1]["text"] == "Again"
    assert texts.index("say hi") < texts.index("again")
    # Codex's usage is the thread's: both turns
    assert again[-1]["usage"]["input_tokens"] == 2 * first[-1]["usage"]["input_tokens"]


def test_an_unknown_config_key_is_a_warning_not_an_error(tmp_path: Path) -> None:
    with FakeOpenAIServer([Reply(text_deltas=("Hello",))]) as server:
        run = Exec(tmp_path, server, top="no_such_codex_key = 3\n")
        events, done = run.run("say hi")
    assert done.returncode == 0, done.stderr
    warnings = [item["message"] for item in _items(events, "error")]
    assert any("no_such_codex_key" in w for w in warnings), events
    assert events[-1]["type"] == "turn.completed"


def test_output_schema_reaches_the_model_as_a_json_schema_format(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    with FakeOpenAIServer([Reply(text_deltas=('{"answer": "hi"}',))]) as server:
        run = Exec(tmp_path, server)
        events, done = run.run("--output-schema", str(tmp_path / "schema.json"), "say hi")
        body = server.requests[0].body
    assert done.returncode == 0, done.stderr
    assert body["text"]["format"] == {"type": "json_schema", "name": "codex_output_schema", "schema": schema,
                                      "strict": True}
    assert json.loads(_items(events, "agent_message")[-1]["text"]) == {"answer": "hi"}


def test_a_missing_image_or_schema_file_is_exit_1_before_any_output(tmp_path: Path) -> None:
    with FakeOpenAIServer([]) as server:
        run = Exec(tmp_path, server)
        for flag in ("--image", "--output-schema"):
            events, done = run.run(flag, str(tmp_path / "missing"), "say hi")
            assert done.returncode == 1 and events == [] and "missing" in done.stderr
        assert server.requests == []


def test_images_reach_the_model_before_the_prompt(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(32))  # the bytes are sent as they are, never decoded
    (tmp_path / "shot.png").write_bytes(png)
    with FakeOpenAIServer([Reply(text_deltas=("a picture",))]) as server:
        run = Exec(tmp_path, server)
        events, done = run.run("say what you see", "--image", str(tmp_path / "shot.png"))
        body = server.requests[0].body
    assert _items(events, "agent_message")[-1]["text"] == "a picture"
    assert done.returncode == 0, done.stderr
    [message] = [item for item in body["input"] if item.get("role") == "user"
                 and any(part.get("type") == "input_image" for part in item.get("content") or [] if
                         isinstance(part, dict))]
    assert message["content"] == [
        {"type": "input_image", "image_url": "data:image/png;base64," + base64.b64encode(png).decode()},
        {"type": "input_text", "text": "say what you see"}]
    (tmp_path / "notes.txt").write_text("x")
    _, refused = run.run("--image", str(tmp_path / "notes.txt"), "say hi")
    assert refused.returncode == 1 and "not an image" in refused.stderr
