"""The bubblewrap command line for a ``SandboxPolicy`` (pure: no process is started here).

Mount order matters (as in Codex's ``linux-sandbox/src/bwrap.rs``): ``--ro-bind / /`` makes everything
read-only, ``--dev /dev`` gives a private device tree (``/dev/null`` and friends; it lives and dies with the
sandbox), ``--bind R R`` re-opens each writable root, then ``--ro-bind P P`` re-protects ``.git`` and the like
inside them, and DENY entries are hidden last so they win. A symlink that leads out of a writable root lands on
the read-only tree, so it cannot be used to write outside.

Always: ``--unshare-pid`` with a fresh ``/proc`` (background processes die with the command's namespace, and the
command cannot see or signal the host's processes), ``--die-with-parent``, ``--new-session`` (no terminal
injection) and ``--cap-drop ALL``: the supervisor runs as root in CI, and a root command that kept
``CAP_SYS_ADMIN`` could simply remount ``/`` read-write or join the host's network namespace.

Network: ``off`` adds ``--unshare-net`` (a fresh namespace with only a loopback nobody listens on); ``limited``
runs the sandbox inside the session's proxy namespace (``nsenter --net=...``), where only the proxy's port
answers; ``full`` keeps the host's network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from actors.sandbox._policy import Network, SandboxPolicy

__all__ = ["BWRAP", "NSENTER", "bwrap_argv"]

BWRAP = "bwrap"
NSENTER = "nsenter"


def bwrap_argv(
    policy: SandboxPolicy,
    argv: Sequence[str],
    cwd: Path | str,
    *,
    bwrap: str = BWRAP,
    netns_path: str | None = None,
    nsenter: str = NSENTER,
) -> list[str]:
    """``argv`` wrapped so that it runs under ``policy`` in ``cwd``; unchanged when the policy is unrestricted.

    ``netns_path`` (a ``/proc/PID/fd/N`` path of a network namespace) is required for ``Network.LIMITED``.
    """
    if policy.unrestricted:
        return list(argv)
    args = [bwrap, "--new-session", "--die-with-parent", "--cap-drop", "ALL"]
    if policy.full_disk_write:
        args += ["--bind", "/", "/", "--dev", "/dev"]
    else:
        args += ["--ro-bind", "/", "/", "--dev", "/dev"]
        for root in policy.writable_roots:
            args += ["--bind", str(root), str(root)]
        for path in policy.read_only_paths:
            args += ["--ro-bind", str(path), str(path)]
    for path in policy.denied_paths:
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif os.path.lexists(path):
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--unshare-pid", "--proc", "/proc"]
    if policy.network is Network.OFF:
        args.append("--unshare-net")
    args += ["--chdir", str(cwd), "--", *argv]
    if policy.network is Network.LIMITED:
        if netns_path is None:
            raise ValueError("network mode limited needs the session's proxy namespace")
        args = [nsenter, f"--net={netns_path}", "--", *args]
    return args
