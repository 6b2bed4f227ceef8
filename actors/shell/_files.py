"""Snapshot files on disk: a private directory, atomic publication, removal, and stale clean-up.

Contract:
- Snapshots live in ``<root>/shell_snapshots/`` (mode 0700) as ``<session_id>.<nanos>.sh`` (mode 0600).
- A snapshot is first written to a hidden temp file ``.<session_id>.<nanos>.<random>.tmp`` in the same
  directory (created 0600 with O_EXCL, never following a symlink), then renamed over its final name, so a
  reader never sees a partial file.
- ``cleanup_stale`` removes snapshots (and leftover temp files) older than ``max_age_s`` whose session is not
  live, and never touches a live session's file or a file that does not follow the naming scheme.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import Collection
from pathlib import Path

__all__ = [
    "SNAPSHOT_DIR_NAME",
    "STALE_MAX_AGE_S",
    "cleanup_stale",
    "ensure_snapshot_dir",
    "remove_snapshot",
    "snapshot_names",
    "write_private",
]

logger = logging.getLogger(__name__)

#: Name of the snapshot directory under the root.
SNAPSHOT_DIR_NAME = "shell_snapshots"
#: Snapshots of sessions that are not live are removed once older than this (3 days).
STALE_MAX_AGE_S = 3 * 24 * 3600.0
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Random hex characters in a temp file's name.
TEMP_SUFFIX_BYTES = 6
_SNAPSHOT_RE = re.compile(r"(?P<sid>.+)\.(?P<nanos>\d+)\.sh\Z")
_TEMP_RE = re.compile(r"\.(?P<sid>.+)\.(?P<nanos>\d+)\.[0-9a-f]+\.tmp\Z")


def check_session_id(session_id: str) -> None:
    """Raise ``ValueError`` when ``session_id`` cannot be part of a file name."""
    if not session_id or "/" in session_id or "\0" in session_id or session_id.startswith("."):
        raise ValueError(f"session id not usable in a file name: {session_id!r}")


def ensure_snapshot_dir(root: Path) -> Path:
    """Create ``<root>/shell_snapshots`` if needed and make it mode 0700; return it."""
    directory = root / SNAPSHOT_DIR_NAME
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)
    return directory


def snapshot_names(directory: Path, session_id: str) -> tuple[Path, Path]:
    """A fresh (temp path, final path) pair for a snapshot of ``session_id``."""
    check_session_id(session_id)
    nanos = time.time_ns()
    temp = directory / f".{session_id}.{nanos}.{secrets.token_hex(TEMP_SUFFIX_BYTES)}.tmp"
    return temp, directory / f"{session_id}.{nanos}.sh"


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (which must not exist) with mode 0600, write ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have narrowed it further; make it exact
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_snapshot(path: Path | str) -> bool:
    """Delete a snapshot file (at session end); returns False if it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def cleanup_stale(
    directory: Path | str,
    live_session_ids: Collection[str],
    max_age_s: float = STALE_MAX_AGE_S,
    *,
    now: float | None = None,
) -> list[Path]:
    """Remove snapshots older than ``max_age_s`` whose session is not live; returns the removed paths."""
    directory = Path(directory)
    current = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _SNAPSHOT_RE.match(entry.name) or _TEMP_RE.match(entry.name)
        if match is None or match.group("sid") in live_session_ids:
            continue
        with contextlib.suppress(FileNotFoundError):
            if not entry.is_file(follow_symlinks=False):
                continue
            if current - entry.stat(follow_symlinks=False).st_mtime > max_age_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        logger.info("removed %d stale shell snapshots from %s", len(removed), directory)
    return removed
