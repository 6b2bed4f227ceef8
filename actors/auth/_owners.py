"""Which principal owns which session: ``<home>/auth/owners.tsv``, one ``SESSION_ID<TAB>PRINCIPAL`` line per
root session, appended when it starts (0600, in the 0700 ``auth`` directory).

Only root sessions are recorded: a subagent belongs to its root's principal (the gateway walks the log's
``parent_id`` chain). A session with no line (started by ``run`` in process, or before ownership existed) is the
administrator's alone. A later line for the same id wins, so the file needs no rewrite.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from actors.auth._tokens import AUTH_DIR

OWNERS_FILE = "owners.tsv"


class Ownership:
    """The owners of one home's root sessions, in memory, appended to disk as sessions start."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / AUTH_DIR / OWNERS_FILE
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            session_id, _, principal = line.partition("\t")
            if session_id and principal:
                self._owners[session_id] = principal

    def owner(self, session_id: str) -> str | None:
        """The principal that owns root session ``session_id``, or None (the administrator's alone)."""
        with self._lock:
            return self._owners.get(session_id)

    def claim(self, session_id: str, principal: str) -> None:
        """``principal`` owns ``session_id`` from now on (kept across restarts), unless it has an owner already
        (a session resumed by the administrator stays its principal's)."""
        with self._lock:
            if session_id in self._owners:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, f"{session_id}\t{principal}\n".encode())
            finally:
                os.close(fd)
            self._owners[session_id] = principal
