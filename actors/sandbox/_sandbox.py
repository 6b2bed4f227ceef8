"""A session's sandbox: every command it spawns goes through ``Sandbox.wrap``.

Contract:
- ``Sandbox.wrap(argv, cwd, env)`` returns the argv that runs ``argv`` under the session's permission profile
  (resolved for that cwd and environment, see ``_policy``), through bubblewrap (see ``_bwrap``); an
  unrestricted profile (``danger-full-access`` with full network) returns ``argv`` unchanged.
- A sandbox that cannot work on this machine is found at session start: ``check_available(profile)`` runs
  bubblewrap once per process (cached) and raises ``SandboxUnavailable`` with the reason, unless the
  administrator allowed the unsandboxed fallback; then it returns a warning to show, and ``wrap`` runs
  commands unsandboxed. A command is never silently run without its sandbox.
- ``with_profile(profile)`` is the same sandbox for a new profile (a settings update, a subagent): the proxy
  namespace is shared.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from actors.errors import SandboxUnavailable
from actors.sandbox._bwrap import BWRAP, NSENTER, bwrap_argv
from actors.sandbox._netns import ProxyNamespace
from actors.sandbox._policy import Network, SandboxPolicy
from protos.supervisor.v1 import config_pb2 as cfg

__all__ = ["Sandbox", "check_available", "needs_sandbox", "wrap"]

logger = logging.getLogger(__name__)

#: Bound on the one bubblewrap trial run per process.
PROBE_TIMEOUT_S = 10.0
_probe_lock = threading.Lock()
_probe_result: dict[str, str] = {}  # bwrap path -> "" (works) or the reason it does not


def needs_sandbox(profile: cfg.PermissionProfile) -> bool:
    """True when commands under ``profile`` must run in a sandbox (anything but full disk and network)."""
    return not SandboxPolicy.from_profile(profile, "/", {}).unrestricted


def _probe(bwrap: str) -> str:
    """'' when bubblewrap can build the strictest sandbox here, else why not (cached per process)."""
    with _probe_lock:
        if bwrap in _probe_result:
            return _probe_result[bwrap]
        reason = ""
        if shutil.which(bwrap) is None:
            reason = f"{bwrap!r} not found (install the Debian package bubblewrap)"
        elif shutil.which(NSENTER) is None:
            reason = f"{NSENTER!r} not found (install util-linux)"
        else:
            argv = bwrap_argv(SandboxPolicy(False, network=Network.OFF), ["true"], "/", bwrap=bwrap)
            try:
                done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                reason = f"bubblewrap trial run failed: {exc}"
            else:
                if done.returncode != 0:
                    reason = f"bubblewrap trial run failed: {done.stderr.decode(errors='replace').strip()}"
        _probe_result[bwrap] = reason
        return reason


def probe_soon(profile: cfg.PermissionProfile, *, bwrap: str = BWRAP) -> None:
    """Start bubblewrap's trial run in the background now when ``profile`` needs a sandbox.

    The trial is a process of its own (~7 ms here, mostly the kernel building namespaces); a caller that
    knows the profile before it has imported the rest of the runtime (``run``, ``exec``) starts it then, so
    ``check_available`` at session start finds the answer instead of waiting for it (it waits on the same
    lock when the trial is still running).
    """
    if needs_sandbox(profile) and bwrap not in _probe_result:
        threading.Thread(target=_probe, args=(bwrap,), name="sandbox-probe", daemon=True).start()


def check_available(profile: cfg.PermissionProfile, *, allow_fallback: bool = False, bwrap: str = BWRAP) -> str:
    """Raise ``SandboxUnavailable`` when ``profile`` needs a sandbox this machine cannot build.

    Returns '' when all is well, or (only with ``allow_fallback``) the warning that commands will run
    without a sandbox.
    """
    if not needs_sandbox(profile):
        return ""
    reason = _probe(bwrap)
    if not reason:
        return ""
    if allow_fallback:
        return f"sandbox unavailable, commands run UNSANDBOXED as the administrator allowed: {reason}"
    raise SandboxUnavailable(
        f"sandbox {profile.name!r} cannot be set up on this machine: {reason}; use sandbox_mode "
        "'danger-full-access' with network 'full', or let the administrator allow the unsandboxed fallback "
        "(allow_unsandboxed_fallback = true in requirements.toml)"
    )


def wrap(
    argv: Sequence[str],
    profile: cfg.PermissionProfile,
    cwd: Path | str,
    env: Mapping[str, str],
    *,
    netns: ProxyNamespace | None = None,
    bwrap: str = BWRAP,
) -> list[str]:
    """``argv`` wrapped to run under ``profile`` in ``cwd`` with ``env``; for spawners without a ``Sandbox``."""
    policy = SandboxPolicy.from_profile(profile, cwd, env)
    if policy.network is Network.LIMITED and netns is None:
        raise SandboxUnavailable("network mode limited needs the session's proxy namespace")
    return bwrap_argv(policy, argv, cwd, bwrap=bwrap, netns_path=netns.path if netns is not None else None)


class Sandbox:
    """The sandbox of one session (or subagent); see the module docstring."""

    def __init__(
        self,
        profile: cfg.PermissionProfile,
        *,
        netns: ProxyNamespace | None = None,
        unsandboxed: bool = False,
        bwrap: str = BWRAP,
    ) -> None:
        self.profile = profile
        self.netns = netns
        #: True only under the administrator's fallback: commands run without a sandbox.
        self.unsandboxed = unsandboxed
        self._bwrap = bwrap

    def with_profile(self, profile: cfg.PermissionProfile) -> Sandbox:
        """This sandbox under another profile (the proxy namespace is shared)."""
        return Sandbox(profile, netns=self.netns, unsandboxed=self.unsandboxed, bwrap=self._bwrap)

    def policy_for(self, cwd: Path | str, env: Mapping[str, str]) -> SandboxPolicy:
        """The resolved policy for a command in ``cwd`` with ``env``."""
        return SandboxPolicy.from_profile(self.profile, cwd, env)

    def wrap(self, argv: Sequence[str], cwd: Path | str, env: Mapping[str, str]) -> list[str]:
        """The argv that runs ``argv`` in this sandbox."""
        if self.unsandboxed:
            return list(argv)
        policy = self.policy_for(cwd, env)
        for raw in policy.skipped:
            logger.debug("sandbox: writable root %s does not exist; skipped", raw)
        if policy.network is Network.LIMITED and self.netns is None:
            raise SandboxUnavailable("network mode limited needs the session's proxy namespace (no proxy running)")
        netns_path = self.netns.path if self.netns is not None and policy.network is Network.LIMITED else None
        return bwrap_argv(policy, argv, cwd, bwrap=self._bwrap, netns_path=netns_path)
