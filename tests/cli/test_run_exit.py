"""`supervisor.py run` ends with ``os._exit`` (no interpreter teardown): nothing printed or logged is lost.

Each test runs the real CLI in a subprocess with a real home and reads what a user or script would read:
stdout redirected to a file (block-buffered, so a missing flush would drop the end), stdout through a pipe
(``--json``), stderr, the exit status, and the event log afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from actors.core import STOPPED, EventLog
from actors.runtime import EVENT_LOG_FILE

ROOT = Path(__file__).resolve().parents[2]
#: Bound on one CLI run.
RUN_TIMEOUT_S = 60.0


def cli(home: Path, *args: str, stdout: int | object = subprocess.PIPE,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), *args],
                          cwd=home, stdout=stdout, stderr=subprocess.PIPE, text=True,  # type: ignore[arg-type]
                          timeout=RUN_TIMEOUT_S, check=False, env={**os.environ, "NO_COLOR": "1", **(env or {})})


def test_run_skips_teardown_and_sessions_list_does_not(tmp_path: Path) -> None:
    """An atexit hook (installed through sitecustomize) runs only when the interpreter tears down."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "teardown-ran"
    (hooks / "sitecustomize.py").write_text(
        f"import atexit\natexit.register(lambda: open({str(marker)!r}, 'a').write('x'))\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}
    done = cli(tmp_path, "run", "--json", "hello", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["type"] == "turn.completed"
    assert not marker.exists()
    listed = cli(tmp_path, "sessions", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert marker.exists()  # the probe works: a command that tears down runs the hook


def test_readable_output_to_a_file_is_complete_and_the_log_is_durable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        done = cli(home, "run", "echo this", stdout=sink)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # the last things printed (the agent tree and the final message) are written after the turn ended
    assert "root completed" in text
    assert text.rstrip().endswith("you said: echo this")
    log = EventLog(home / EVENT_LOG_FILE)
    try:
        [record] = log.list_sessions(include_stopped=True)
        assert record.status == STOPPED
        kinds = [event.WhichOneof("msg") for event in log.follow(record.session_id, 0, live=False)]
    finally:
        log.close()
    assert kinds[0] == "session_configured"
    assert "turn_completed" in kinds
    assert len(kinds) == record.last_seq + 1


def test_json_through_a_pipe_ends_with_turn_completed(tmp_path: Path) -> None:
    done = cli(tmp_path, "run", "--json", "hello")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["type"] == "thread.started"
    assert lines[-1]["type"] == "turn.completed"
    shown = cli(tmp_path, "sessions", "show", lines[0]["thread_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert any("turnCompleted" in line or "turn_completed" in line for line in shown.stdout.splitlines())


def test_a_failed_start_keeps_its_error_and_exit_status(tmp_path: Path) -> None:
    done = cli(tmp_path, "run", "-c", "approval_policy=bogus", "x")
    assert done.returncode == 2
    assert "approval_policy" in done.stderr and "bogus" in done.stderr
