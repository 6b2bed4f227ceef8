"""Which children a session starts, built from its loaded configuration.

Every child starts in parallel; the network proxy is first in start order (so it stops last: processes of the
other children may still use it). The shell needs the proxy's environment, which exists once the proxy bound
its port: the session fills it in before its start completes (see ``SessionSupervisor``).

A subagent inherits from its parent (``SessionSetup.inherit``): its shell snapshot (no capture process), a view
on the parent's proxy (no second proxy), and its hooks registry.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from actors.config import LoadedConfig
from actors.core import ChildSpec
from actors.errors import ConfigError
from actors.hooks import discover, hooks_child_spec
from actors.proxy import ProxyState, network_proxy_child_spec, policy_from_proto
from actors.shell import shell_snapshot_child_spec
from protos.supervisor.v1 import config_pb2

__all__ = ["Inheritance", "child_phases"]


@dataclass
class Inheritance:
    """What a subagent takes from its parent instead of starting its own."""
    snapshot: Any = None  # actors.shell._capture.Snapshot
    proxy_env: dict[str, str] = field(default_factory=dict)
    #: The subagent's own view on the tree's proxy (its policy; approvals shared with the tree), and the proxy.
    proxy_token: str = ""
    proxy: Any = None  # actors.proxy._actor.NetworkProxyActor
    hooks_registry: Any = None
    hooks_warnings: list[str] = field(default_factory=list)


def _feature(loaded: LoadedConfig, name: str, default: bool) -> bool:
    return bool(loaded.table("features").get(name, default))


def proxy_spec(loaded: LoadedConfig, configuration: config_pb2.SessionConfiguration, emit: Callable[[Message], None],
               agent_path: str) -> tuple[ChildSpec, Any] | None:
    """The proxy child and its restart-surviving state, unless the network table disables it."""
    network = loaded.table("network")
    if not network.get("enabled", True):
        return None

    state = ProxyState(policy=policy_from_proto(configuration.permission_profile.network))
    options: dict[str, Any] = {"agent_path": agent_path}
    if "approval_timeout_sec" in network:
        options["approval_timeout_s"] = float(network["approval_timeout_sec"])
    # no turn is active when a session starts: allowlist misses are denied without asking until one is
    options["deny_without_asking"] = True
    return network_proxy_child_spec(state=state, emit=emit, **options), state


def shell_spec(loaded: LoadedConfig, configuration: config_pb2.SessionConfiguration, *, session_id: str,
               emit: Callable[[Message], None], proxy_env: dict[str, str], inherit: Inheritance | None,
               live_session_ids: Callable[[], Any] | None, sandbox: Any = None) -> ChildSpec | None:
    """The shell snapshotter child (capture skipped when the snapshot is inherited); its commands run in
    ``sandbox`` (``actors.sandbox.Sandbox``), which the spec holds so that a restarted shell keeps it."""
    shell = loaded.table("shell")
    if not shell.get("enabled", True):
        return None

    options: dict[str, Any] = {"extra_env": proxy_env, "sandbox": sandbox}  # proxy_env: filled once the proxy is up
    if shell.get("program"):
        options["shell"] = str(shell["program"])
    if shell.get("secret_patterns"):
        options["secret_patterns"] = tuple(str(p) for p in shell["secret_patterns"])
    if "capture_timeout_sec" in shell:
        options["capture_timeout_s"] = float(shell["capture_timeout_sec"])
    if inherit is not None and inherit.snapshot is not None:
        options["inherited"] = inherit.snapshot
    if live_session_ids is not None:
        options["live_session_ids"] = live_session_ids
    # the user's own shell: the inherited environment's HOME, the session's cwd; the state dir holds the file
    return shell_snapshot_child_spec(session_id=session_id, snapshot_root=configuration.home, emit=emit,
                                     cwd=configuration.cwd, env=dict(os.environ), **options)


def hooks_spec(loaded: LoadedConfig, configuration: config_pb2.SessionConfiguration, session_id: str,
               emit: Callable[[Message], None], inherit: Inheritance | None) -> tuple[ChildSpec, list[str]] | None:
    """The hooks child with the registry discovered from the config layers and plugins."""
    if inherit is not None and inherit.hooks_registry is not None:
        registry, warnings = inherit.hooks_registry, list[str]()
    else:
        values_by_source = {layer.source: layer.values for layer in loaded.layers}
        layers = [(source, str(directory), values_by_source.get(source)) for source, directory in loaded.layer_dirs]
        plugin_roots = [str(p) for p in loaded.table("plugins").get("roots", [])]
        registry, warnings = discover(layers, plugin_roots, plugin_hooks=_feature(loaded, "plugin_hooks", False),
                                      hooks_disabled=bool(loaded.table("features").get("hooks_disabled", False)))
    if not registry.handlers and not registry.disabled:
        return None if not warnings else (hooks_child_spec(registry, cwd=configuration.cwd, emit=emit,
                                                           session_id=session_id, warnings=warnings), warnings)
    return hooks_child_spec(registry, cwd=configuration.cwd, emit=emit, session_id=session_id,
                            warnings=warnings), warnings


_APPROVAL_NAMES = {config_pb2.APPROVAL_POLICY_NEVER: "never", config_pb2.APPROVAL_POLICY_UNTRUSTED: "untrusted",
                   config_pb2.APPROVAL_POLICY_ON_FAILURE: "on-failure", config_pb2.APPROVAL_POLICY_ON_REQUEST:
                   "on-request"}


def mcp_spec(loaded: LoadedConfig, configuration: config_pb2.SessionConfiguration,
             emit: Callable[[Message], None]) -> Any:
    """The MCP children (``actors.mcp._actor.McpChildren``: one ``mcp:NAME`` spec per enabled
    `[mcp_servers.NAME]`, the ``McpTools`` they share, whether any is required), or None without servers."""
    tables = loaded.table("mcp_servers")
    if not tables:
        return None

    # cold start: only a session with MCP servers loads the MCP wing
    from actors.mcp import McpConfigError, mcp_child_specs, parse_mcp_servers

    try:
        configs = [c for c in parse_mcp_servers(tables) if c.enabled]
    except McpConfigError as exc:
        raise ConfigError(str(exc)) from exc
    if not configs:
        return None
    return mcp_child_specs(configs, emit=emit,
                           approval_policy=_APPROVAL_NAMES.get(configuration.approval_policy, "on-request"))


def child_phases(loaded: LoadedConfig | None, configuration: config_pb2.SessionConfiguration, session_id: str,
                 emit: Callable[[Message], None], *, agent_path: str = "/root", inherit: Inheritance | None = None,
                 live_session_ids: Callable[[], Any] | None = None) -> tuple[list[ChildSpec], Any]:
    """Phase-one children (the proxy) and the proxy state, or ([], None) when there is no proxy."""
    if loaded is None or (inherit is not None and inherit.proxy_env):
        return [], None
    built = proxy_spec(loaded, configuration, emit, agent_path)
    if built is None:
        return [], None
    spec, state = built
    return [spec], state
