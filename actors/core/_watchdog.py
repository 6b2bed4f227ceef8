"""No orphans: every process group a session starts dies with the server, even when the server gets ``kill -9``.

Contract:
- ``install_watchdog(home)`` (``serve``, ``run``, ``exec``; once per process, before any session starts) first
  kills what a previous server with the same state directory left behind (``reap_previous``), then starts the
  watchdog: a small Python process of its own (this file run as a script, stdlib only, its own session so a
  terminal's signals miss it) holding the read end of a pipe whose write end only this process has.
- ``watch_group(pgid)`` tells the watchdog about a new process group (with its leader's start time from
  ``/proc``), ``forget_group(pgid)`` that it was reaped; both are one ``write`` of a short line (atomic on a
  pipe, from any thread). ``owner_environment()`` is the variable every spawned process also gets
  (``SESSION_SUPERVISOR_OWNER=<server pid>-<start time>``).
- When the pipe reaches EOF (the server exited, however it died), the watchdog SIGKILLs every group it was
  told about, then every process whose environment names this server (closing the window between a spawn and
  its ``watch_group``, and catching what left its group: a hook's background process, a ``setsid``), then exits.
- It also keeps the live groups in ``HOME/processes/<owner>.groups``; a later ``install_watchdog`` with the same
  home kills the groups and marked processes of every owner that is no longer running (the watchdog itself may
  have been killed too) and removes the record.
- Pid reuse: a group is killed only if its leader is gone or still has the recorded start time (a pid that
  leads a group is not reused while any member of the group lives; a leader pid alive with another start time
  means the group emptied and the id is someone else's now).

Not covered: a process that clears its environment *and* leaves its group before the server dies; a server
killed between its spawn and the child's ``exec`` of a program that clears its environment.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = [
    "OWNER_ENV",
    "RECORD_DIR",
    "Watchdog",
    "active_watchdog",
    "forget_group",
    "install_watchdog",
    "owner_environment",
    "owner_token",
    "process_start_time",
    "reap_previous",
    "watch_group",
]

#: The environment variable naming the server that started a process (its pid and start time).
OWNER_ENV = "SESSION_SUPERVISOR_OWNER"
#: Directory under the state home with one record of live process groups per running server.
RECORD_DIR = "processes"
RECORD_SUFFIX = ".groups"
#: Bound on a clean ``close``: the watchdog's last sweep reads every process's environment once.
CLOSE_WAIT_S = 5.0
#: Sweeps for marked processes until one finds none (a process may fork while the previous sweep kills).
MAX_SWEEPS = 20
READ_BYTES = 4096


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def owner_token(pid: int | None = None) -> str:
    """``PID-STARTTIME`` of a process (this one by default): a name that is never reused."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{process_start_time(pid)}"


def _owner_alive(token: str) -> bool:
    pid, _, start = token.partition("-")
    return pid.isdigit() and str(process_start_time(int(pid))) == start


def _kill_group(pgid: int, start: int | None) -> None:
    leader_start = process_start_time(pgid)
    if leader_start is not None and start is not None and leader_start != start:
        return  # the group emptied and its id leads someone else's group now
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def has_environ_entry(pid: int, name: str, value: str) -> bool:
    """True when process ``pid``'s environment (as the kernel recorded it at exec) holds ``name=value``."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return f"{name}={value}".encode() in environ.read().split(b"\0")
    except OSError:  # gone, or not ours to read
        return False


def _marked(token: str) -> list[int]:
    me = os.getpid()
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and int(entry) != me and has_environ_entry(int(entry), OWNER_ENV, token)]


def kill_owned(token: str, groups: dict[int, int | None]) -> None:
    """SIGKILL the recorded ``groups`` (pgid -> leader start time), then every process marked with ``token``."""
    for pgid, start in groups.items():
        _kill_group(pgid, start)
    for _ in range(MAX_SWEEPS):
        pids = _marked(token)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _parse(lines: list[str], groups: dict[int, int | None]) -> None:
    for line in lines:
        parts = line.split()
        try:
            if parts[0] == "+" and len(parts) == 3:
                groups[int(parts[1])] = None if parts[2] == "None" else int(parts[2])
            elif parts[0] == "-" and len(parts) == 2:
                groups.pop(int(parts[1]), None)
        except (IndexError, ValueError):
            continue


def _read_record(path: str) -> dict[int, int | None]:
    groups: dict[int, int | None] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as record:
            _parse(record.read().splitlines(), groups)
    except OSError:
        pass
    return groups


def _write_record(path: str, groups: dict[int, int | None]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as record:
        record.writelines(f"+ {pgid} {start}\n" for pgid, start in groups.items())
    os.replace(tmp, path)


def reap_previous(home: str | os.PathLike[str]) -> int:
    """Kill the groups and marked processes of every server recorded under ``home`` that is no longer running;
    returns how many records it cleared."""
    directory = os.path.join(os.fspath(home), RECORD_DIR)
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    cleared = 0
    for name in names:
        if not name.endswith(RECORD_SUFFIX):
            continue
        token = name[: -len(RECORD_SUFFIX)]
        if _owner_alive(token):
            continue
        path = os.path.join(directory, name)
        kill_owned(token, _read_record(path))
        try:
            os.unlink(path)
        except OSError:
            pass
        cleared += 1
    return cleared


class Watchdog:
    """The server's end of the watchdog: the pipe's write end and the watchdog's process."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        import subprocess  # only the server side spawns; the watchdog script itself stays light

        self.token = owner_token()
        directory = os.path.join(os.fspath(home), RECORD_DIR)
        os.makedirs(directory, exist_ok=True)
        self.record = os.path.join(directory, self.token + RECORD_SUFFIX)
        with open(self.record, "w", encoding="ascii"):
            pass  # exists from the start: a later start sweeps for this owner's marked processes even if no
            # group was recorded before both died
        read_fd, self._write_fd = os.pipe()  # both ends non-inheritable: no other child holds the write end
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), str(read_fd), self.token, self.record],
                # no stdio of ours: its last sweep runs after we exit, and a caller reading our stderr to EOF
                # (`$(supervisor.py run 2>&1)`, a test's capture) must not wait for it
                pass_fds=(read_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
            )
        finally:
            os.close(read_fd)
        self._broken = False

    @property
    def pid(self) -> int:
        """The watchdog's process id."""
        return self._proc.pid

    def _send(self, line: str) -> None:
        if self._broken or self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, line.encode())
        except OSError:
            self._broken = True  # the watchdog is gone: the record in the home is what is left
            print(f"warning: process watchdog {self._proc.pid} is gone", file=sys.stderr)

    def watch(self, pgid: int) -> None:
        """Tell the watchdog about the process group ``pgid`` (its leader is alive)."""
        self._send(f"+ {pgid} {process_start_time(pgid)}\n")

    def forget(self, pgid: int) -> None:
        """Tell the watchdog that the group ``pgid``'s leader was reaped."""
        self._send(f"- {pgid}\n")

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Close the pipe (the watchdog kills what is left and exits) and reap it, waiting up to ``timeout_s``."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1
        try:
            self._proc.wait(timeout_s)
        except Exception:
            pass


_active: Watchdog | None = None


def install_watchdog(home: str | os.PathLike[str]) -> Watchdog:
    """Kill what dead servers of ``home`` left behind, then start this process's watchdog (once)."""
    global _active
    if _active is None:
        reap_previous(home)
        _active = Watchdog(home)
    return _active


def active_watchdog() -> Watchdog | None:
    """This process's watchdog, if ``install_watchdog`` ran."""
    return _active


def watch_group(pgid: int) -> None:
    """Register a new process group with the watchdog (no-op without one)."""
    if _active is not None:
        _active.watch(pgid)


def forget_group(pgid: int) -> None:
    """Unregister a reaped process group (no-op without a watchdog)."""
    if _active is not None:
        _active.forget(pgid)


def owner_environment() -> dict[str, str]:
    """The variables every spawned process gets so the watchdog can find it (empty without a watchdog)."""
    return {OWNER_ENV: _active.token} if _active is not None else {}


def _watch(read_fd: int, token: str, record: str) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    groups: dict[int, int | None] = {}
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, READ_BYTES)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        _parse([line.decode("ascii", "replace") for line in lines], groups)
        try:
            _write_record(record, groups)
        except OSError:
            pass
    kill_owned(token, groups)
    try:
        os.unlink(record)
    except OSError:
        pass


if __name__ == "__main__":
    _watch(int(sys.argv[1]), sys.argv[2], sys.argv[3])
