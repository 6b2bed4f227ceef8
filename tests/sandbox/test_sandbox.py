"""The sandbox wing on its own: real bubblewrap, real files, real sockets; what a command could do is tried."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.errors import SandboxUnavailable
from actors.sandbox import Network, Sandbox, SandboxPolicy, bwrap_argv, check_available, needs_sandbox
from actors.sandbox import _sandbox as sandbox_module
from protos.supervisor.v1 import config_pb2 as cfg

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

#: Bound on one sandboxed command (2 loaded cores).
RUN_BOUND_S = 20.0
BASH = shutil.which("bash") or "/bin/bash"


def _profile(name: str, *entries: cfg.FileSystemEntry, network: int = cfg.NETWORK_MODE_FULL) -> cfg.PermissionProfile:
    return cfg.PermissionProfile(
        name=name,
        file_system=cfg.FileSystemPolicy(entries=[cfg.FileSystemEntry(special=cfg.SPECIAL_PATH_ROOT,
                                                                      access=cfg.FILE_ACCESS_READ), *entries]),
        network=cfg.NetworkPolicy(mode=network),  # type: ignore[arg-type]
    )


def _write(path: str | Path) -> cfg.FileSystemEntry:
    return cfg.FileSystemEntry(path=str(path), access=cfg.FILE_ACCESS_WRITE)


def _workspace(cwd: Path, *entries: cfg.FileSystemEntry, network: int = cfg.NETWORK_MODE_FULL
               ) -> cfg.PermissionProfile:
    """workspace-write for ``cwd`` as the configuration derives it, without /tmp and $TMPDIR unless given."""
    return _profile("workspace-write", _write(cwd), *entries, network=network)


def _run(sandbox: Sandbox, script: str, cwd: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), **(env or {})}
    argv = sandbox.wrap([BASH, "-c", script], cwd, env)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_BOUND_S, check=False)


def _write_attempts(target: Path) -> list[str]:
    """Every way the corpus tries to create something in ``target``."""
    py = sys.executable
    return [
        f"touch {target}/touched",
        f"echo x > {target}/redirected",
        f"cp /etc/hostname {target}/copied",
        f"{py} -c \"open('{target}/opened', 'w').write('x')\"",
        f"mkdir {target}/made",
    ]


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    out = {name: tmp_path / name for name in ("ws", "home", "other")}
    for path in out.values():
        path.mkdir()
    yield out


def test_read_only_blocks_every_write_and_keeps_dev_null(dirs: dict[str, Path]) -> None:
    sandbox = Sandbox(_profile("read-only"))
    escapes = []
    for target in dirs.values():
        for attempt in _write_attempts(target):
            _run(sandbox, attempt, dirs["ws"])
        escapes += list(target.iterdir())
    assert escapes == []
    done = _run(sandbox, "echo hi > /dev/null && echo ok", dirs["ws"])
    assert (done.returncode, done.stdout.strip()) == (0, "ok")


def test_workspace_write_allows_the_cwd_only_and_no_symlink_out(dirs: dict[str, Path]) -> None:
    ws, other = dirs["ws"], dirs["other"]
    (ws / "out").symlink_to(other)
    (ws / ".git").mkdir()
    sandbox = Sandbox(_workspace(ws))
    for attempt in _write_attempts(other) + _write_attempts(ws / "out") + _write_attempts(ws / ".git"):
        _run(sandbox, attempt, ws)
    assert list(other.iterdir()) == [] and list((ws / ".git").iterdir()) == []
    for attempt in _write_attempts(ws):
        assert _run(sandbox, attempt, ws).returncode == 0, attempt
    assert sorted(p.name for p in ws.iterdir()) == [".git", "copied", "made", "opened", "out", "redirected",
                                                     "touched"]


def test_tmpdir_and_slash_tmp_are_writable_only_when_listed(dirs: dict[str, Path], tmp_path: Path) -> None:
    tmpdir = dirs["other"]
    env = {"TMPDIR": str(tmpdir)}
    plain = Sandbox(_workspace(dirs["ws"]))
    _run(plain, 'touch "$TMPDIR/t"', dirs["ws"], env)
    assert not (tmpdir / "t").exists()
    listed = Sandbox(_workspace(dirs["ws"], cfg.FileSystemEntry(special=cfg.SPECIAL_PATH_TMPDIR,
                                                                access=cfg.FILE_ACCESS_WRITE)))
    assert _run(listed, 'touch "$TMPDIR/t"', dirs["ws"], env).returncode == 0
    assert (tmpdir / "t").exists()
    policy = SandboxPolicy.from_profile(
        _profile("workspace-write", cfg.FileSystemEntry(special=cfg.SPECIAL_PATH_SLASH_TMP,
                                                        access=cfg.FILE_ACCESS_WRITE)), dirs["ws"], env)
    assert Path("/tmp") in policy.writable_roots and tmpdir not in policy.writable_roots


def test_configured_writable_root_and_deny_entry(dirs: dict[str, Path]) -> None:
    secret = dirs["home"] / "secret"
    secret.write_text("s3cret")
    profile = _profile("custom", _write(dirs["other"]),
                       cfg.FileSystemEntry(path=str(dirs["home"]), access=cfg.FILE_ACCESS_DENY))
    sandbox = Sandbox(profile)
    assert _run(sandbox, f"touch {dirs['other']}/ok", dirs["ws"]).returncode == 0
    assert (dirs["other"] / "ok").exists()
    _run(sandbox, f"touch {dirs['ws']}/no", dirs["ws"])  # the command's cwd is not writable by itself
    assert not (dirs["ws"] / "no").exists()
    assert "s3cret" not in _run(sandbox, f"cat {secret}", dirs["ws"]).stdout


def test_full_access_is_not_wrapped_and_writes_anywhere(dirs: dict[str, Path]) -> None:
    profile = cfg.PermissionProfile(
        name="danger-full-access",
        file_system=cfg.FileSystemPolicy(entries=[cfg.FileSystemEntry(special=cfg.SPECIAL_PATH_ROOT,
                                                                      access=cfg.FILE_ACCESS_WRITE)]),
        network=cfg.NetworkPolicy(mode=cfg.NETWORK_MODE_FULL),
    )
    assert not needs_sandbox(profile)
    assert Sandbox(profile).wrap(["true"], dirs["ws"], {}) == ["true"]
    for target in dirs.values():
        assert _run(Sandbox(profile), f"touch {target}/f", dirs["ws"]).returncode == 0
        assert (target / "f").exists()


def test_a_root_command_cannot_remount_or_see_host_processes(dirs: dict[str, Path]) -> None:
    done = _run(Sandbox(_profile("read-only")), "mount -o remount,rw / ; grep CapEff /proc/self/status; ls /proc",
                dirs["ws"])
    assert "CapEff:\t0000000000000000" in done.stdout
    pids = [w for w in done.stdout.split() if w.isdigit()]
    assert len(pids) <= 3, pids  # bwrap's init, bash and ls: the host's processes are not visible
    _run(Sandbox(_profile("read-only")), f"touch {dirs['ws']}/after-remount", dirs["ws"])
    assert not (dirs["ws"] / "after-remount").exists()


def _pending_connections(listener: socket.socket) -> int:
    """Connections the kernel completed on ``listener`` (accepted here and closed)."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _network_attempts(port: int) -> list[str]:
    py = sys.executable
    return [
        f"{py} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\"",
        f"curl -s --noproxy '*' --max-time 2 http://127.0.0.1:{port}/",
        f"exec 3<>/dev/tcp/127.0.0.1/{port}",
    ]


def test_network_off_reaches_nothing_not_even_loopback(dirs: dict[str, Path]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sandbox = Sandbox(_workspace(dirs["ws"], network=cfg.NETWORK_MODE_OFF))
        for attempt in _network_attempts(port):
            assert _run(sandbox, attempt, dirs["ws"]).returncode != 0, attempt
        assert _pending_connections(listener) == 0
        full = Sandbox(_workspace(dirs["ws"]))
        for attempt in _network_attempts(port):  # the same attempts do connect with full network: the test bites
            _run(full, attempt, dirs["ws"])
        assert _pending_connections(listener) == len(_network_attempts(port))


def test_limited_network_needs_the_proxy_namespace(dirs: dict[str, Path]) -> None:
    sandbox = Sandbox(_profile("read-only", network=cfg.NETWORK_MODE_LIMITED))
    with pytest.raises(SandboxUnavailable, match="proxy namespace"):
        sandbox.wrap(["true"], dirs["ws"], {})


def test_missing_bubblewrap_is_a_clear_error_or_the_allowed_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "_probe_result", {})
    profile = _profile("read-only")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        check_available(profile, bwrap="/nonexistent/bwrap")
    warning = check_available(profile, allow_fallback=True, bwrap="/nonexistent/bwrap")
    assert "UNSANDBOXED" in warning
    assert check_available(profile) == ""


def test_bwrap_argv_keeps_mount_order() -> None:
    policy = SandboxPolicy(False, writable_roots=(Path("/w"),), read_only_paths=(Path("/w/.git"),),
                           network=Network.OFF)
    argv = bwrap_argv(policy, ["ls"], "/w")
    assert argv.index("--ro-bind") < argv.index("--dev") < argv.index("--bind") < argv.index("/w/.git")
    assert argv[-2:] == ["--", "ls"] and "--unshare-net" in argv and "--cap-drop" in argv
