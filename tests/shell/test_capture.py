"""Tests for shell snapshot capture: real bash, zsh and dash in temp HOMEs with a clean environment."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from google.protobuf.message import Message

from actors.shell._capture import ShellSnapshotter, Snapshot
from actors.shell._exec import CommandRunner
from actors.shell._files import SNAPSHOT_DIR_NAME, cleanup_stale, remove_snapshot
from actors.shell._scripts import DEFAULT_SECRET_PATTERNS, SECRET_PLACEHOLDER, ShellKind
from protos.supervisor.v1 import shell_pb2

M = TypeVar("M", bound=Message)
BASH = shutil.which("bash") or "/bin/bash"
ZSH = shutil.which("zsh")
DASH = shutil.which("dash")
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
#: Generous bound for one capture on a loaded 2-core machine.
CAPTURE_BOUND_S = 8.0
#: Capture timeout for the hung-rc tests.
SHORT_TIMEOUT_S = 1.0

needs_zsh = pytest.mark.skipif(ZSH is None, reason="zsh is not installed (apt-get install zsh)")
needs_dash = pytest.mark.skipif(DASH is None, reason="dash is not installed")

RC_BODY = {
    "bash": """
alias ll='echo LL-ALIAS'
greet() { echo "hello $1 from function"; }
export FOO="bar baz 'quoted'"
set -o noclobber
echo "rc chatter on stdout"
echo "rc chatter on stderr" >&2
""",
    "zsh": """
alias ll='echo LL-ALIAS'
alias -g UPPER='| tr a-z A-Z'
greet() { echo "hello $1 from function"; }
export FOO="bar baz 'quoted'"
setopt noclobber
echo "rc chatter on stdout"
""",
}


class Events:
    """An emit sink that records events."""

    def __init__(self) -> None:
        self.items: list[Message] = []

    def __call__(self, event: Message) -> None:
        self.items.append(event)

    def of(self, kind: type[M]) -> list[M]:
        return [e for e in self.items if isinstance(e, kind)]


def _home(tmp_path: Path, rc_name: str, body: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / rc_name).write_text(body)
    return home


def _live_group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


async def _wait_group_gone(pgid: int, bound_s: float = 3.0) -> None:
    with trio.fail_after(bound_s):
        while _live_group_members(pgid):
            await trio.sleep(0.01)


async def _wait_for_file(path: Path, bound_s: float = CAPTURE_BOUND_S) -> str:
    with trio.fail_after(bound_s):
        while not path.exists() or not path.read_text().strip():
            await trio.sleep(0.01)
    return path.read_text().strip()


@pytest.mark.parametrize(
    "shell,rc_name", [(BASH, ".bashrc"), pytest.param(ZSH, ".zshrc", marks=needs_zsh)], ids=["bash", "zsh"]
)
async def test_rc_alias_function_export_and_option_survive_into_exec(tmp_path: Path, shell: str, rc_name: str) -> None:
    kind = "bash" if rc_name == ".bashrc" else "zsh"
    home = _home(tmp_path, rc_name, RC_BODY[kind])
    events = Events()
    snapper = ShellSnapshotter(session_id="sess-1", home=home, emit=events, shell=shell, env=CLEAN_ENV)
    with trio.fail_after(CAPTURE_BOUND_S):
        snap = await snapper.capture()
    assert snap is not None, events.items
    ready = events.of(shell_pb2.ShellSnapshotReady)
    assert len(ready) == 1 and len(events.items) == 1
    assert ready[0].path == str(snap.path) and ready[0].shell == shell and not ready[0].without_rc
    text = snap.path.read_text()
    assert "ll=" in text and "greet" in text and "export FOO=" in text
    assert ("set -o noclobber" in text) if kind == "bash" else ("setopt noclobber" in text)
    assert "rc chatter" not in text
    assert snap.path.parent == home / SNAPSHOT_DIR_NAME
    assert snap.path.name.startswith("sess-1.") and snap.path.suffix == ".sh"

    runner = CommandRunner(emit=events, snapshot=snap, env=CLEAN_ENV)
    checks = {
        "ll": "LL-ALIAS",
        "ll | tr A-Z a-z": "ll-alias",  # the alias in a pipeline, parsed after the snapshot
        "greet world": "hello world from function",
        'printf "%s" "$FOO"': "bar baz 'quoted'",
        "echo x > f; { echo y > f; } 2>/dev/null || echo clobber-refused": "clobber-refused",
    }
    if kind == "zsh":
        checks["echo hi UPPER"] = "HI"
    for command, expected in checks.items():
        with trio.fail_after(CAPTURE_BOUND_S):
            result = await runner.run(command, tmp_path)
        assert result.output.strip() == expected, (command, result)
        assert result.exit_code == 0


async def test_bash_alias_needs_expand_aliases_and_eval(tmp_path: Path) -> None:
    """Without our eval/expand_aliases, sourcing then running an alias on the same line fails in bash."""
    home = _home(tmp_path, ".bashrc", "alias ll='echo LL-ALIAS'\n")
    snap = await ShellSnapshotter(session_id="s", home=home, emit=Events(), shell=BASH, env=CLEAN_ENV).capture()
    assert snap is not None
    assert "shopt -s expand_aliases" in snap.path.read_text()
    naive = await trio.run_process(
        [BASH, "-c", f". {snap.path}; ll"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=CLEAN_ENV,
    )
    assert naive.returncode != 0  # the line was parsed before the alias existed
    result = await CommandRunner(emit=Events(), snapshot=snap, env=CLEAN_ENV).run("ll", tmp_path)
    assert result.output.strip() == "LL-ALIAS"


@needs_dash
async def test_dash_snapshot_with_env_rc(tmp_path: Path) -> None:
    home = _home(tmp_path, ".shrc", "alias ll='echo LL-ALIAS'\nexport FOO=\"it's\"\nset -o noclobber\n")
    env = {**CLEAN_ENV, "ENV": str(home / ".shrc")}
    events = Events()
    assert DASH is not None
    snap = await ShellSnapshotter(session_id="d", home=home, emit=events, shell=DASH, env=env).capture()
    assert snap is not None and snap.kind is ShellKind.SH
    text = snap.path.read_text()
    assert "set -o noclobber" in text and "alias ll=" in text
    result = await CommandRunner(emit=events, snapshot=snap, env=env).run('ll; printf "%s" "$FOO"', tmp_path)
    assert result.output == "LL-ALIAS\nit's"


@needs_zsh
async def test_zsh_uses_zdotdir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    zdot = tmp_path / "zdot"
    zdot.mkdir()
    (zdot / ".zshrc").write_text("alias zz='echo FROM-ZDOTDIR'\n")
    env = {**CLEAN_ENV, "ZDOTDIR": str(zdot)}
    assert ZSH is not None
    snap = await ShellSnapshotter(session_id="z", home=home, emit=Events(), shell=ZSH, env=env).capture()
    assert snap is not None
    result = await CommandRunner(emit=Events(), snapshot=snap, env=env).run("zz", tmp_path)
    assert result.output.strip() == "FROM-ZDOTDIR"


async def test_shell_defaults_to_dollar_shell_then_the_login_shell(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    snapper = ShellSnapshotter(session_id="x", home=home, emit=Events(), env={**CLEAN_ENV, "SHELL": BASH})
    assert snapper.shell == BASH
    # no $SHELL: the password database's login shell, as Codex picks it (/bin/sh only when there is none)
    login = pwd.getpwuid(os.getuid()).pw_shell
    expected = login if login and os.access(login, os.X_OK) else "/bin/sh"
    assert ShellSnapshotter(session_id="x", home=home, emit=Events(), env=CLEAN_ENV).shell == expected


async def test_hung_rc_times_out_and_retries_without_rc(tmp_path: Path) -> None:
    home = _home(tmp_path, ".bashrc", 'alias ll="echo no"\necho $$ > "$HOME/capture.pid"\nsleep 1000\n')
    events = Events()
    snapper = ShellSnapshotter(
        session_id="hang", home=home, emit=events, shell=BASH, env=CLEAN_ENV, timeout_s=SHORT_TIMEOUT_S
    )
    started = time.monotonic()
    with trio.fail_after(CAPTURE_BOUND_S):
        snap = await snapper.capture()
    assert time.monotonic() - started < SHORT_TIMEOUT_S + 3.0
    assert snap is not None and snap.without_rc
    ready = events.of(shell_pb2.ShellSnapshotReady)
    assert len(ready) == 1 and ready[0].without_rc and not events.of(shell_pb2.ShellSnapshotFailed)
    assert "alias ll" not in snap.path.read_text()  # the rc was not sourced
    hung_pgid = int((home / "capture.pid").read_text())
    await _wait_group_gone(hung_pgid)  # the shell and its `sleep 1000` child
    assert snapper.processes_started == 3  # hung capture, capture without rc, validation
    assert sorted(p.name for p in (home / SNAPSHOT_DIR_NAME).iterdir()) == [snap.path.name]


async def test_cancelled_capture_kills_group_and_leaves_no_file(tmp_path: Path) -> None:
    home = _home(tmp_path, ".bashrc", 'echo $$ > "$HOME/capture.pid"\nsleep 1000\n')
    events = Events()
    snapper = ShellSnapshotter(session_id="c", home=home, emit=events, shell=BASH, env=CLEAN_ENV)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(snapper.capture)
        pgid = int(await _wait_for_file(home / "capture.pid"))
        assert _live_group_members(pgid)
        nursery.cancel_scope.cancel()
    await _wait_group_gone(pgid)
    assert not events.items
    directory = home / SNAPSHOT_DIR_NAME
    assert not directory.exists() or not list(directory.iterdir())


async def test_snapshot_failing_validation_is_discarded(tmp_path: Path) -> None:
    home = _home(tmp_path, ".bashrc", "alias ll='echo LL'\n")
    events = Events()
    snapper = ShellSnapshotter(
        session_id="bad",
        home=home,
        emit=events,
        shell=BASH,
        env=CLEAN_ENV,
        rewrite_hook=lambda data: data + b"\necho injected-bad-line >&2; false\n",
    )
    with trio.fail_after(CAPTURE_BOUND_S):
        assert await snapper.capture() is None
    failed = events.of(shell_pb2.ShellSnapshotFailed)
    assert len(failed) == 1 and len(events.items) == 1
    assert "validation" in failed[0].reason and "injected-bad-line" in failed[0].reason
    assert list((home / SNAPSHOT_DIR_NAME).iterdir()) == []  # temp file removed, nothing published


async def test_unsupported_shell_fails_without_a_process(tmp_path: Path) -> None:
    events = Events()
    snapper = ShellSnapshotter(session_id="f", home=tmp_path, emit=events, shell="/usr/bin/fish", env=CLEAN_ENV)
    assert await snapper.capture() is None
    assert snapper.processes_started == 0
    assert "unsupported shell" in events.of(shell_pb2.ShellSnapshotFailed)[0].reason


def _secret_name(pattern: str, salt: str) -> str:
    return pattern.replace("*", f"X{salt}_", 1).replace("*", f"_{salt}").replace("__", "_")


async def test_modes_and_no_secret_value_on_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"  # the rc's secrets come from a file outside the scanned home
    outside.mkdir()
    planted: dict[str, str] = {}
    for i in range(20):
        pattern = DEFAULT_SECRET_PATTERNS[i % len(DEFAULT_SECRET_PATTERNS)]
        planted[_secret_name(pattern, secrets.token_hex(3).upper())] = secrets.token_hex(16)
    names = list(planted)
    runtime = {n: planted[n] for n in names[:10]}  # inherited from the supervisor's environment
    from_rc = {n: planted[n] for n in names[10:]}  # exported by the user's rc
    lines = [f"export {n}='{v}'" for n, v in from_rc.items()]
    first_rc, first_value = next(iter(from_rc.items()))
    lines.append(f"alias deploy='curl -H \"X-Key: {first_value}\"'")  # a secret value outside the exports
    lines.append(f'export SITE_URL="https://user:{first_value}@example.invalid/"')  # inside another value
    (outside / "secrets.sh").write_text("\n".join(lines) + "\n")
    (home / ".bashrc").write_text(f". {outside / 'secrets.sh'}\nalias ll='echo LL'\n")
    old_umask = os.umask(0o022)
    try:
        events = Events()
        snap = await ShellSnapshotter(
            session_id="secret", home=home, emit=events, shell=BASH, env={**CLEAN_ENV, **runtime}
        ).capture()
    finally:
        os.umask(old_umask)
    assert snap is not None, events.items
    assert stat.S_IMODE(snap.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(snap.path.parent.stat().st_mode) == 0o700
    scanned = 0
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            leaked = [n for n, v in planted.items() if v.encode() in data]
            assert not leaked, f"{path} holds the values of {leaked}"
    assert scanned >= 2
    text = snap.path.read_text()
    assert set(planted) | {"SITE_URL"} <= set(events.of(shell_pb2.ShellSnapshotReady)[0].redacted_names)
    assert SECRET_PLACEHOLDER in text  # the alias's copy was scrubbed
    for event in events.items:
        assert not any(v in str(event) for v in planted.values())
    # A command still sees the runtime value of an inherited secret, by reference.
    runner = CommandRunner(emit=Events(), snapshot=snap, env={**CLEAN_ENV, **runtime})
    name, value = next(iter(runtime.items()))
    result = await runner.run(f'printf "%s" "${name}"', tmp_path)
    assert result.output == value
    # An rc-only secret is not resurrected from the snapshot.
    result = await runner.run(f'printf "%s" "${{{first_rc}-unset}}"', tmp_path)
    assert result.output == "unset"


async def test_inherited_snapshot_starts_no_process(tmp_path: Path) -> None:
    home = _home(tmp_path, ".bashrc", "alias ll='echo LL-ALIAS'\n")
    parent = await ShellSnapshotter(session_id="parent", home=home, emit=Events(), shell=BASH, env=CLEAN_ENV).capture()
    assert parent is not None
    events = Events()
    child = ShellSnapshotter(
        session_id="child",
        home=home,
        emit=events,
        shell="/usr/bin/fish",  # would fail if it were used: the inherited snapshot decides
        env=CLEAN_ENV,
        inherited=Snapshot.from_path(parent.path, parent.shell),
    )
    snap = await child.capture()
    assert child.processes_started == 0
    assert snap is not None and snap.inherited and snap.path == parent.path
    ready = events.of(shell_pb2.ShellSnapshotReady)
    assert len(ready) == 1 and ready[0].inherited and ready[0].duration_ms == 0
    result = await CommandRunner(emit=Events(), snapshot=snap, env=CLEAN_ENV).run("ll", tmp_path)
    assert result.output.strip() == "LL-ALIAS"
    remove_snapshot(parent.path)
    gone = ShellSnapshotter(
        session_id="child2",
        home=home,
        emit=events,
        env=CLEAN_ENV,
        inherited=Snapshot.from_path(parent.path, BASH),
    )
    assert await gone.capture() is None and gone.processes_started == 0
    assert "does not exist" in events.of(shell_pb2.ShellSnapshotFailed)[0].reason


def test_remove_snapshot_and_cleanup_stale(tmp_path: Path) -> None:
    directory = tmp_path / SNAPSHOT_DIR_NAME
    directory.mkdir()
    now = time.time()
    day = 24 * 3600.0

    def make(name: str, age_days: float) -> Path:
        path = directory / name
        path.write_text("#\n")
        os.utime(path, (now - age_days * day, now - age_days * day))
        return path

    live_old = make("live.1.sh", 10)
    dead_old = make("dead.2.sh", 4)
    dead_new = make("dead.3.sh", 1)
    dotted_dead_old = make("a.b.c.4.sh", 5)
    temp_old = make(".dead.5.abcdef.tmp", 5)
    unrelated = make("notes.txt", 30)
    removed = cleanup_stale(directory, {"live"}, now=now)
    assert sorted(removed) == sorted([dead_old, dotted_dead_old, temp_old])
    assert live_old.exists() and dead_new.exists() and unrelated.exists()
    assert cleanup_stale(tmp_path / "missing", set()) == []
    assert remove_snapshot(live_old) and not live_old.exists()
    assert not remove_snapshot(live_old)


def test_session_id_must_be_a_file_name(tmp_path: Path) -> None:
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            ShellSnapshotter(session_id=bad, home=tmp_path, emit=Events(), env=CLEAN_ENV)


async def test_rc_that_exits_early_falls_back_to_a_capture_without_rc(tmp_path: Path) -> None:
    home = _home(tmp_path, ".bashrc", "alias ll='echo LL'\nexit 0\n")
    events = Events()
    snap = await ShellSnapshotter(session_id="x", home=home, emit=events, shell=BASH, env=CLEAN_ENV).capture()
    assert snap is not None and snap.without_rc
    assert events.of(shell_pb2.ShellSnapshotReady)[0].without_rc
