"""The server's run directory: ``<home>/run`` (0700) with the unix socket and ``serve.json`` (0600).

``serve.json`` tells a client on this machine where the server listens and which owner token to send:
``{"address": "unix:/.../supervisor.sock", "token": "...", "tls": false, "pid": 1234}``. Only the user that
runs the server can read it (the directory is 0700, the file 0600), which is what makes the token a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from actors.errors import ConfigError

RUN_DIR = "run"
SOCKET_FILE = "supervisor.sock"
SERVE_FILE = "serve.json"
#: Longest path a unix socket address may have (``sun_path`` is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class ServeInfo:
    """What a local client needs to reach a running server: its gRPC target and the owner token."""

    address: str
    token: str
    #: The server speaks TLS (the client then needs the CA: ``tls_ca``, a PEM file path).
    tls: bool = False
    tls_ca: str = ""
    pid: int = 0


def run_dir(home: Path) -> Path:
    """``<home>/run``, created 0700 (and tightened to 0700 if it was looser)."""
    path = Path(home) / RUN_DIR
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


def socket_path(home: Path) -> Path:
    """The default listener: ``<home>/run/supervisor.sock`` (the directory is created 0700).

    A home too deep for a unix socket address (``MAX_SOCKET_PATH``) gets one in a private directory instead,
    the way ssh-agent and tmux do: ``$XDG_RUNTIME_DIR`` or ``/tmp/session-supervisor-UID/`` (0700, ours, not a
    symlink), named after a hash of the home. ``serve.json`` names it either way.
    """
    path = run_dir(home) / SOCKET_FILE
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(Path(home).resolve())).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    directory = Path(base) / f"session-supervisor-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"{directory} is not a private directory of this user: "
                          "use a shorter --home or --listen HOST:PORT")
    short = directory / f"{digest}.sock"
    if len(os.fsencode(short)) > MAX_SOCKET_PATH:
        raise ConfigError(f"the socket path {path} is too long: use a shorter --home or --listen HOST:PORT")
    return short


def serve_file(home: Path) -> Path:
    """``<home>/run/serve.json``."""
    return Path(home) / RUN_DIR / SERVE_FILE


def write_serve_info(home: Path, info: ServeInfo) -> Path:
    """Write ``serve.json`` atomically, mode 0600 from its creation (never readable by others, not even briefly)."""
    final = run_dir(home) / SERVE_FILE
    tmp = final.with_name(f".{SERVE_FILE}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (json.dumps(asdict(info)) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    return final


def read_serve_info(home: Path) -> ServeInfo:
    """The running server's ``serve.json``; ``ConfigError`` naming the file when there is none or it is bad."""
    path = serve_file(home)
    try:
        data = json.loads(path.read_text())
        return ServeInfo(address=str(data["address"]), token=str(data["token"]), tls=bool(data.get("tls", False)),
                         tls_ca=str(data.get("tls_ca", "")), pid=int(data.get("pid", 0)))
    except FileNotFoundError as exc:
        raise ConfigError(f"no server: {path} does not exist (start one with `supervisor.py serve`)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc


def remove_serve_info(home: Path, info: ServeInfo) -> None:
    """Remove ``serve.json`` if it is still this server's (a newer server may have replaced it)."""
    try:
        current = read_serve_info(home)
    except ConfigError:
        return
    if current.token == info.token:
        serve_file(home).unlink(missing_ok=True)
