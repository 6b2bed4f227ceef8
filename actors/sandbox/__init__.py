"""The OS sandbox every command of a session runs in (bubblewrap; see ``docs/design.md``, "Sandbox").

``Sandbox.wrap(argv, cwd, env)`` (or the stand-alone ``wrap``) is the one function a spawner calls to put a
command under the session's permission profile; ``check_available`` finds a sandbox this machine cannot
build at session start; ``ProxyNamespace`` is the network namespace behind network mode ``limited``.
"""

from __future__ import annotations

from actors.sandbox._bwrap import bwrap_argv
from actors.sandbox._netns import ProxyNamespace, proxy_address
from actors.sandbox._policy import PROTECTED_NAMES, Network, SandboxPolicy
from actors.sandbox._sandbox import Sandbox, check_available, needs_sandbox, probe_soon, wrap

__all__ = [
    "PROTECTED_NAMES",
    "Network",
    "ProxyNamespace",
    "Sandbox",
    "SandboxPolicy",
    "bwrap_argv",
    "check_available",
    "needs_sandbox",
    "probe_soon",
    "proxy_address",
    "wrap",
]
