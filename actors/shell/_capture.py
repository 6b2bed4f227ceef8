"""Shell snapshot capture: the service the ShellSnapshotter actor wraps.

Contract:
- ``ShellSnapshotter.capture()`` (async, on the shared trio loop) runs the user's shell (the ``shell``
  argument, else ``$SHELL`` from the given environment, else /bin/sh; bash, zsh and sh/dash are supported) as
  a login shell with stdin from /dev/null, no TTY, in its own process group, in the session's ``cwd``, with
  the user's environment as it is (``HOME`` is the user's: ``home`` when given, else the environment's, else
  the passwd entry's), as Codex runs it; and dumps its functions, options, aliases and exports through a pipe
  (see ``_shell_scripts``). The dump is filtered in Python, so no secret value is ever written to disk, not
  even to the temp file. The supervisor's state directory (``snapshot_root``) only holds the snapshot file.
- The rendered script is written to a 0600 temp file in the 0700 snapshot directory, validated by sourcing it
  under ``set -e`` in a fresh non-interactive shell of the same kind (exit 0 required), and renamed to
  ``<root>/shell_snapshots/<session_id>.<nanos>.sh``. A snapshot that fails validation is removed.
- Each shell run is bounded by ``timeout_s`` (``CAPTURE_TIMEOUT_S`` by default); on expiry its whole process
  group is killed. When the capture with the rc file times out (or exits before dumping anything), it is
  retried once without any startup file (no login profile, no rc file). Cancelling the task kills the
  running group and removes the temp file.
- Exactly one event is emitted per ``capture()``: ``ShellSnapshotReady`` or ``ShellSnapshotFailed``
  (reasons are scrubbed of secret values). The snapshot is also returned (None on failure).
- With ``inherited`` (a subagent reusing its parent's snapshot) no process is started at all.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio
from google.protobuf.message import Message

import actors.shell._files as _shell_files
import actors.shell._scripts as _shell_scripts
from actors.core import GroupProcess, supervise
from actors.errors import ProcessStartError
from actors.shell._scripts import DEFAULT_SECRET_PATTERNS, ShellKind
from protos.supervisor.v1 import shell_pb2

__all__ = ["CAPTURE_TIMEOUT_S", "ShellSnapshotter", "Snapshot", "default_shell"]

logger = logging.getLogger(__name__)

Emit = Callable[[Message], None]

#: Bound on one capture (or validation) run; a hung rc file must not hold up a session start.
CAPTURE_TIMEOUT_S = 10.0
#: A killed capture shell gets this long after SIGTERM before SIGKILL (it has nothing worth saving).
CAPTURE_KILL_GRACE_S = 0.2
#: Bound on a capture's stdout; a larger dump is refused rather than held in memory.
MAX_DUMP_BYTES = 16 * 1024 * 1024
#: Bound on the stderr kept for a failure reason.
MAX_STDERR_BYTES = 64 * 1024
#: Longest failure reason put into an event.
MAX_REASON_CHARS = 2000
#: Read size for the capture pipes.
READ_CHUNK_BYTES = 64 * 1024
#: Used when neither the argument nor $SHELL names a shell.
FALLBACK_SHELL = "/bin/sh"
#: Random bytes in the section marker (so rc output cannot forge a section).
NONCE_BYTES = 16


def default_shell(env: Mapping[str, str], override: str | None = None) -> str:
    """The shell to use: ``override``, else ``$SHELL`` from ``env``, else the user's login shell (as Codex
    finds it, in the password database), else /bin/sh."""
    return override or env.get("SHELL") or _login_shell() or FALLBACK_SHELL


def _login_shell() -> str:
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except (KeyError, OSError):
        return ""
    return shell if shell and os.path.isabs(shell) and os.access(shell, os.X_OK) else ""


def user_home(env: Mapping[str, str]) -> Path:
    """The user's home: ``$HOME`` from ``env``, else the passwd entry's (what a login shell would get)."""
    home = env.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # no passwd entry (a container's arbitrary uid)
        return Path("/")


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot script and how to use it."""

    path: Path
    shell: str
    kind: ShellKind
    inherited: bool = False
    without_rc: bool = False
    redacted_names: tuple[str, ...] = ()

    @classmethod
    def from_path(cls, path: Path | str, shell: str) -> Snapshot:
        """Describe an existing snapshot (e.g. a parent's, for a subagent to inherit)."""
        kind = _shell_scripts.detect_kind(shell)
        if kind is None:
            raise ValueError(f"unsupported shell: {shell}")
        return cls(path=Path(path), shell=shell, kind=kind, inherited=True)


class _CaptureFailed(Exception):
    """One capture attempt failed; the message is the reason."""

    def __init__(self, reason: str, *, retry_without_rc: bool = False) -> None:
        super().__init__(reason)
        self.retry_without_rc = retry_without_rc


@dataclass
class _RunOutput:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_overflow: bool = False
    timed_out: bool = False
    returncode: int = 0


class ShellSnapshotter:
    """Captures, validates and publishes one session's shell snapshot; see the module docstring."""

    def __init__(
        self,
        *,
        session_id: str,
        emit: Emit,
        home: Path | str | None = None,
        cwd: Path | str | None = None,
        shell: str | None = None,
        env: Mapping[str, str] | None = None,
        snapshot_root: Path | str | None = None,
        timeout_s: float = CAPTURE_TIMEOUT_S,
        secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS,
        inherited: Snapshot | None = None,
        rewrite_hook: Callable[[bytes], bytes] | None = None,
    ) -> None:
        _shell_files.check_session_id(session_id)
        self.session_id = session_id
        self._emit = emit
        base_env = dict(os.environ if env is None else env)
        #: The user's home: the capture's (and so the snapshot's) ``HOME``.
        self.home = Path(home) if home is not None else user_home(base_env)
        base_env["HOME"] = str(self.home)
        self._env = base_env
        #: Where the capture runs: the session's cwd (a project's ``.envrc``-style rc logic sees it).
        self.cwd = Path(cwd) if cwd is not None else self.home
        self.shell = default_shell(base_env, shell)
        #: The state directory whose ``shell_snapshots/`` holds the file (the user's home when not given).
        self.snapshot_root = Path(snapshot_root) if snapshot_root is not None else self.home
        self.timeout_s = timeout_s
        self.secret_patterns = tuple(secret_patterns)
        self.inherited = inherited
        #: Test hook: rewrites the rendered script before it is written (to force a validation failure).
        self._rewrite_hook = rewrite_hook
        #: How many shell processes this snapshotter started (captures and validations).
        self.processes_started = 0
        self._secret_values: list[str] = sorted(
            (v for k, v in base_env.items() if v and _shell_scripts.is_secret_name(k, self.secret_patterns)),
            key=len,
            reverse=True,
        )

    async def capture(self) -> Snapshot | None:
        """Capture (or inherit) the snapshot: emits one Ready or Failed event; returns it or None."""
        if self.inherited is not None:
            return self._inherit(self.inherited)
        started = time.monotonic()
        kind = _shell_scripts.detect_kind(self.shell)
        if kind is None:
            self._fail(f"unsupported shell {self.shell!r} (bash, zsh and sh/dash are supported)")
            return None
        try:
            try:
                snapshot = await self._attempt(kind, with_rc=True)
            except _CaptureFailed as first:
                if not first.retry_without_rc:
                    raise
                logger.warning("shell snapshot with rc failed (%s); retrying without startup files", first)
                snapshot = await self._attempt(kind, with_rc=False)
        except _CaptureFailed as exc:
            self._fail(str(exc))
            return None
        duration_ms = int((time.monotonic() - started) * 1000)
        self._emit(
            shell_pb2.ShellSnapshotReady(
                path=str(snapshot.path),
                shell=snapshot.shell,
                duration_ms=duration_ms,
                kind=_shell_scripts.to_proto_kind(kind),  # type: ignore[arg-type]
                inherited=False,
                without_rc=snapshot.without_rc,
                redacted_names=list(snapshot.redacted_names),
            )
        )
        return snapshot

    def _inherit(self, snapshot: Snapshot) -> Snapshot | None:
        if not snapshot.path.is_file():
            self._fail(f"inherited snapshot {snapshot.path} does not exist")
            return None
        inherited = Snapshot(
            path=snapshot.path,
            shell=snapshot.shell,
            kind=snapshot.kind,
            inherited=True,
            without_rc=snapshot.without_rc,
            redacted_names=snapshot.redacted_names,
        )
        self._emit(
            shell_pb2.ShellSnapshotReady(
                path=str(snapshot.path),
                shell=snapshot.shell,
                duration_ms=0,
                kind=_shell_scripts.to_proto_kind(snapshot.kind),  # type: ignore[arg-type]
                inherited=True,
                without_rc=snapshot.without_rc,
                redacted_names=list(snapshot.redacted_names),
            )
        )
        return inherited

    def _fail(self, reason: str) -> None:
        for secret in self._secret_values:
            reason = reason.replace(secret, _shell_scripts.SECRET_PLACEHOLDER)
        reason = reason[:MAX_REASON_CHARS]
        logger.warning("shell snapshot for session %s failed: %s", self.session_id, reason)
        self._emit(shell_pb2.ShellSnapshotFailed(reason=reason, shell=self.shell))

    async def _attempt(self, kind: ShellKind, *, with_rc: bool) -> Snapshot:
        nonce = secrets.token_hex(NONCE_BYTES)
        argv = _shell_scripts.capture_argv(self.shell, kind, nonce, with_rc=with_rc)
        run = await self._run(argv)
        label = "with rc" if with_rc else "without startup files"
        if run.timed_out:
            raise _CaptureFailed(f"capture {label} timed out after {self.timeout_s:g} s", retry_without_rc=with_rc)
        if run.stdout_overflow:
            raise _CaptureFailed(f"capture {label} printed more than {MAX_DUMP_BYTES} bytes")
        try:
            dump = _shell_scripts.parse_dump(bytes(run.stdout), nonce)
        except _shell_scripts.DumpParseError as exc:
            raise _CaptureFailed(
                f"capture {label} exited {run.returncode} before dumping its state ({exc}); "
                f"stderr: {_tail_text(run.stderr)}",
                retry_without_rc=with_rc,
            ) from exc
        header = (
            f"# Shell snapshot of {self.shell} for session {self.session_id}"
            f"{'' if with_rc else ' (captured without startup files)'}. Generated; sourced before commands."
        )
        rendered = _shell_scripts.render_snapshot(kind, dump, self.secret_patterns, header)
        self._secret_values = sorted({*self._secret_values, *rendered.secret_values}, key=len, reverse=True)
        if rendered.scrubbed_sections:
            logger.warning("secret values replaced in snapshot sections: %s", rendered.scrubbed_sections)
        data = rendered.text.encode("utf-8", errors="surrogateescape")
        if self._rewrite_hook is not None:
            data = self._rewrite_hook(data)
        directory = _shell_files.ensure_snapshot_dir(self.snapshot_root)
        temp, final = _shell_files.snapshot_names(directory, self.session_id)
        try:
            await trio.to_thread.run_sync(_shell_files.write_private, temp, data)
            check = await self._run(_shell_scripts.validate_argv(self.shell, kind, temp))
            if check.timed_out or check.returncode != 0:
                outcome = "timed out" if check.timed_out else f"exited {check.returncode}"
                raise _CaptureFailed(f"snapshot failed validation ({outcome}): {_tail_text(check.stderr)}")
            os.rename(temp, final)
        finally:
            _shell_files.remove_snapshot(temp)
        return Snapshot(
            path=final,
            shell=self.shell,
            kind=kind,
            without_rc=not with_rc,
            redacted_names=tuple(rendered.redacted_names),
        )

    async def _run(self, argv: list[str]) -> _RunOutput:
        out = _RunOutput()
        try:
            proc = await GroupProcess.start(argv, cwd=self.cwd, env=self._env)
        except ProcessStartError as exc:
            raise _CaptureFailed(str(exc)) from exc
        self.processes_started += 1

        async def read_stdout() -> None:
            while chunk := await proc.stdout.receive_some(READ_CHUNK_BYTES):
                if len(out.stdout) + len(chunk) > MAX_DUMP_BYTES:
                    out.stdout_overflow = True
                else:
                    out.stdout += chunk

        async def read_stderr() -> None:
            while chunk := await proc.stderr.receive_some(READ_CHUNK_BYTES):
                out.stderr += chunk
                if len(out.stderr) > MAX_STDERR_BYTES:
                    del out.stderr[: len(out.stderr) - MAX_STDERR_BYTES]

        out.timed_out = await supervise(
            proc, [read_stdout, read_stderr], timeout_s=self.timeout_s, kill_grace_s=CAPTURE_KILL_GRACE_S
        )
        out.returncode = proc.returncode if proc.returncode is not None else -1
        return out


def _tail_text(data: bytes | bytearray, limit: int = MAX_REASON_CHARS // 2) -> str:
    text = bytes(data).decode("utf-8", errors="replace").strip()
    return text[-limit:] if text else "(no stderr)"
