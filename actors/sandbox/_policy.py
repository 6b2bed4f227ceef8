"""What a command may touch: the permission profile of a session, resolved for one command.

``SandboxPolicy.from_profile(profile, cwd, env)`` reads the canonical ``PermissionProfile`` (protobuf) and
resolves it for one command run in ``cwd`` with environment ``env`` (its ``TMPDIR``). The writable roots are
the profile's entries only: under workspace-write that is the *session's* cwd (kept in the profile by
``actors.config.apply``), never a command's own workdir, so an Exec with ``cwd=/etc`` cannot make ``/etc``
writable. Semantics, as Codex's ``SandboxPolicy``:
- the whole file system is readable (restricted reading is not supported, as in Codex's bubblewrap backend);
- a ``SPECIAL_PATH_ROOT`` entry with write access means full disk write (``danger-full-access``);
- path entries with write access, ``SPECIAL_PATH_TMPDIR`` (``$TMPDIR`` of the command) and
  ``SPECIAL_PATH_SLASH_TMP`` (``/tmp``) are writable roots; every root is resolved through its symlinks, so a
  root that is a symlink grants its real target only;
- inside each writable root, ``.git`` and ``.session-supervisor`` (the project's configuration layer: writing
  it would widen the next session's rights) stay read-only when they exist;
- DENY entries hide a path entirely (neither read nor write);
- the network mode is the profile's (``full``, ``limited``: only the session's proxy, ``off``: nothing).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protos.supervisor.v1 import config_pb2 as cfg

__all__ = ["PROTECTED_NAMES", "Network", "SandboxPolicy"]

#: Names kept read-only inside every writable root (Codex protects ``.git`` and its own ``.codex``).
PROTECTED_NAMES = (".git", ".session-supervisor")


class Network(enum.Enum):
    """How much network a sandboxed command gets."""

    FULL = "full"
    LIMITED = "limited"
    OFF = "off"


_NETWORK_FOR = {
    cfg.NETWORK_MODE_UNSPECIFIED: Network.FULL,
    cfg.NETWORK_MODE_FULL: Network.FULL,
    cfg.NETWORK_MODE_LIMITED: Network.LIMITED,
    cfg.NETWORK_MODE_OFF: Network.OFF,
}


@dataclass(frozen=True)
class SandboxPolicy:
    """One command's sandbox, resolved to real paths."""

    #: True when the whole file system is writable (``danger-full-access``).
    full_disk_write: bool
    #: Real directories the command may write below.
    writable_roots: tuple[Path, ...] = ()
    #: Real paths inside the writable roots that stay read-only.
    read_only_paths: tuple[Path, ...] = ()
    #: Paths hidden from the command (DENY entries).
    denied_paths: tuple[Path, ...] = ()
    #: The command's network.
    network: Network = Network.FULL
    #: The profile's name, for messages.
    name: str = ""
    #: Writable entries that could not be used (missing directories), for a warning.
    skipped: tuple[str, ...] = field(default=(), compare=False)

    @property
    def unrestricted(self) -> bool:
        """True when the command runs without any sandbox (full disk write and full network)."""
        return self.full_disk_write and self.network is Network.FULL and not self.denied_paths

    @classmethod
    def from_profile(cls, profile: cfg.PermissionProfile, cwd: Path | str, env: Mapping[str, str]) -> SandboxPolicy:
        """Resolve ``profile`` for a command run in ``cwd`` with environment ``env``."""
        network = _NETWORK_FOR.get(profile.network.mode, Network.FULL)
        full_disk_write = False
        candidates: list[str] = []
        denied: list[Path] = []
        for entry in profile.file_system.entries:
            target = entry.WhichOneof("target")
            if entry.access == cfg.FILE_ACCESS_DENY:
                if target == "path":
                    denied.append(Path(os.path.realpath(entry.path)))
                continue
            if entry.access != cfg.FILE_ACCESS_WRITE:
                continue
            if target == "special" and entry.special == cfg.SPECIAL_PATH_ROOT:
                full_disk_write = True
            elif target == "special" and entry.special == cfg.SPECIAL_PATH_TMPDIR:
                if env.get("TMPDIR"):
                    candidates.append(env["TMPDIR"])
            elif target == "special" and entry.special == cfg.SPECIAL_PATH_SLASH_TMP:
                candidates.append("/tmp")
            elif target == "path":
                candidates.append(entry.path)
        if full_disk_write:
            return cls(True, network=network, denied_paths=tuple(denied), name=profile.name)
        roots: list[Path] = []
        skipped: list[str] = []
        for raw in candidates:
            real = Path(os.path.realpath(raw))
            if not real.is_dir():
                skipped.append(raw)
            elif real not in roots:
                roots.append(real)
        protected = [root / name for root in roots for name in PROTECTED_NAMES if os.path.lexists(root / name)]
        return cls(
            False,
            writable_roots=tuple(roots),
            read_only_paths=tuple(protected),
            denied_paths=tuple(denied),
            network=network,
            name=profile.name,
            skipped=tuple(skipped),
        )
