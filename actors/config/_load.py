"""Layered TOML configuration, like Codex's config layers.

Precedence, lowest first: built-in defaults < ``/etc/session-supervisor/config.toml`` (managed) <
``$SESSION_SUPERVISOR_HOME/config.toml`` (user, default ``~/.session-supervisor``) < ``<cwd>/.session-supervisor/
config.toml`` (project) < ``[profiles.NAME]`` chosen with ``--profile`` < ``-c key=value`` overrides.
Tables merge key by key; other values replace. An administrator's ``requirements.toml`` next to the managed
config sets constraints. Every error names the file, the line and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import actors.config._apply as _config
from actors.config._codex import (
    CODEX_KEY_TYPES,
    CODEX_SILENT,
    CODEX_UNIMPLEMENTED,
    codex_layer_paths,
)
from actors.errors import ConfigError
from protos.supervisor.v1 import config_pb2 as cfg

__all__ = ["ConfigLayer", "LoadedConfig", "load_config", "parse_override"]

APP_DIR_NAME = "session-supervisor"
MANAGED_DIR = Path("/etc") / APP_DIR_NAME
PROJECT_DIR_NAME = f".{APP_DIR_NAME}"
CONFIG_FILE = "config.toml"
REQUIREMENTS_FILE = "requirements.toml"
HOME_ENV = "SESSION_SUPERVISOR_HOME"

_APPROVAL = {"untrusted": cfg.APPROVAL_POLICY_UNTRUSTED, "on-failure": cfg.APPROVAL_POLICY_ON_FAILURE,
             "on-request": cfg.APPROVAL_POLICY_ON_REQUEST, "never": cfg.APPROVAL_POLICY_NEVER}
_REVIEWER = {"user": cfg.APPROVALS_REVIEWER_USER, "agent": cfg.APPROVALS_REVIEWER_AGENT,
             "guardian_subagent": cfg.APPROVALS_REVIEWER_AGENT}
_EFFORT = {"minimal": cfg.REASONING_EFFORT_MINIMAL, "low": cfg.REASONING_EFFORT_LOW,
           "medium": cfg.REASONING_EFFORT_MEDIUM, "high": cfg.REASONING_EFFORT_HIGH,
           "xhigh": cfg.REASONING_EFFORT_XHIGH}
_SUMMARY = {"auto": cfg.REASONING_SUMMARY_AUTO, "concise": cfg.REASONING_SUMMARY_CONCISE,
            "detailed": cfg.REASONING_SUMMARY_DETAILED, "none": cfg.REASONING_SUMMARY_NONE}
_TIER = {"default": cfg.SERVICE_TIER_DEFAULT, "flex": cfg.SERVICE_TIER_FLEX, "priority": cfg.SERVICE_TIER_PRIORITY}
_PERSONALITY = {"none": cfg.PERSONALITY_NONE, "friendly": cfg.PERSONALITY_FRIENDLY,
                "pragmatic": cfg.PERSONALITY_PRAGMATIC}
_NETWORK_MODE = {"full": cfg.NETWORK_MODE_FULL, "limited": cfg.NETWORK_MODE_LIMITED, "off": cfg.NETWORK_MODE_OFF}

#: Top-level keys and the type each must have; tables are checked further by their consumers.
_KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str, "model_provider": str, "model_reasoning_effort": str, "model_reasoning_summary": str,
    "service_tier": str, "approval_policy": str, "approvals_reviewer": str, "sandbox_mode": str,
    "personality": str, "instructions": str, "developer_instructions": str, "user_instructions": str,
    "compact_prompt": str, "thread_name": str, "persist_extended_history": bool, "collaboration_mode": str,
    "playbook": str, "network": dict, "mcp_servers": dict, "hooks": dict, "agents": dict, "agent_types": dict,
    "shell": dict, "features": dict, "profiles": dict, "model_providers": dict, "exec": dict, "run": dict,
    "plugins": dict,
    "sandbox_workspace_write": dict, "approvals": dict, "ephemeral": bool,
    "model_auto_compact_token_limit": int, "model_context_window": int,
    **CODEX_KEY_TYPES,
}
_ENUM_KEYS: dict[str, dict[str, Any]] = {
    "approval_policy": _APPROVAL, "approvals_reviewer": _REVIEWER, "model_reasoning_effort": _EFFORT,
    "model_reasoning_summary": _SUMMARY, "service_tier": _TIER, "personality": _PERSONALITY,
    "sandbox_mode": {name: 0 for name in _config.PROFILE_NAMES},
}


@dataclass
class ConfigLayer:
    """One source of configuration values."""

    source: str  # "managed" | "user" | "project" | "profile" | "override"
    path: Path | None
    values: dict[str, Any]
    text: str = ""


@dataclass
class LoadedConfig:
    """The merged result: the session configuration plus every table the children read."""

    session: cfg.SessionConfiguration
    constraints: cfg.Constraints
    values: dict[str, Any]
    layers: list[ConfigLayer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deprecations: list[tuple[str, str]] = field(default_factory=list)
    #: (source, directory) of every file-based layer, present or not (hooks.json files live there too).
    layer_dirs: list[tuple[str, Path]] = field(default_factory=list)

    def table(self, key: str) -> dict[str, Any]:
        """A merged table (``mcp_servers``, ``agents``, ...), empty when absent."""
        value = self.values.get(key, {})
        return value if isinstance(value, dict) else {}


def _line_of(text: str, key: str) -> int:
    pattern = re.compile(rf"^[ \t]*{re.escape(key)}[ \t]*=", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def _where(layer: ConfigLayer, key: str) -> str:
    name = str(layer.path) if layer.path else layer.source
    line = _line_of(layer.text, key.rsplit(".", maxsplit=1)[-1]) if layer.text else 0
    return f"{name}:{line}" if line else name


def _read_layer(source: str, path: Path) -> ConfigLayer | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return ConfigLayer(source, path, values, text)


def parse_override(raw: str) -> dict[str, Any]:
    """Parse one ``-c key=value`` override (dotted keys, TOML values; a bare word is a string)."""
    if "=" not in raw:
        raise ConfigError(f"-c {raw!r}: expected key=value")
    key, _, value = raw.partition("=")
    key = key.strip()
    if not key or not re.fullmatch(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*", key):
        raise ConfigError(f"-c {raw!r}: invalid key {key!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _check_types(layer: ConfigLayer, warnings: list[str]) -> None:
    for key, value in layer.values.items():
        expected = _KEY_TYPES.get(key)
        if expected is None:
            warnings.append(f"{_where(layer, key)}: unknown key {key!r} ignored")
            continue
        if key in CODEX_UNIMPLEMENTED:
            warnings.append(f"{_where(layer, key)}: Codex key {key!r} is not implemented here (ignored)")
        elif key in CODEX_SILENT and not isinstance(value, expected):
            continue  # a terminal-UI setting of Codex's: its shape is not ours to judge
        if not isinstance(value, expected):
            kind = expected.__name__ if isinstance(expected, type) else "/".join(t.__name__ for t in expected)
            raise ConfigError(f"{_where(layer, key)}: key {key!r}: expected {kind}, got {type(value).__name__}")
        choices = _ENUM_KEYS.get(key)
        if choices is not None and value not in choices:
            raise ConfigError(
                f"{_where(layer, key)}: key {key!r}: {value!r} is not one of {', '.join(sorted(choices))}"
            )
    network = layer.values.get("network")
    if isinstance(network, dict) and "mode" in network and network["mode"] not in _NETWORK_MODE:
        raise ConfigError(f"{_where(layer, 'mode')}: key 'network.mode': {network['mode']!r} is not one of "
                          f"{', '.join(_NETWORK_MODE)}")


def _network_policy(values: dict[str, Any]) -> cfg.NetworkPolicy:
    net = values.get("network", {})
    return cfg.NetworkPolicy(
        mode=_NETWORK_MODE.get(net.get("mode", "full"), cfg.NETWORK_MODE_FULL),  # type: ignore[arg-type]
        allowed_domains=[str(d) for d in net.get("allowed_domains", [])],
        denied_domains=[str(d) for d in net.get("denied_domains", [])],
        allow_local_binding=bool(net.get("allow_local_binding", False)),
    )


def _session_from(values: dict[str, Any], cwd: str, home: str) -> cfg.SessionConfiguration:
    conf = _config.default_configuration(cwd, home)
    setters: dict[str, Callable[[Any], None]] = {
        "model": lambda v: setattr(conf.collaboration_mode, "model", v),
        "collaboration_mode": lambda v: setattr(conf.collaboration_mode, "mode", v),
        "model_provider": lambda v: setattr(conf, "provider", v),
        "model_reasoning_effort": lambda v: setattr(conf.collaboration_mode, "reasoning_effort", _EFFORT[v]),
        "model_reasoning_summary": lambda v: setattr(conf, "reasoning_summary", _SUMMARY[v]),
        "service_tier": lambda v: setattr(conf, "service_tier", _TIER[v]),
        "approval_policy": lambda v: setattr(conf, "approval_policy", _APPROVAL[v]),
        "approvals_reviewer": lambda v: setattr(conf, "approvals_reviewer", _REVIEWER[v]),
        "personality": lambda v: setattr(conf, "personality", _PERSONALITY[v]),
        "instructions": lambda v: setattr(conf, "base_instructions", v),
        "developer_instructions": lambda v: setattr(conf, "developer_instructions", v),
        "user_instructions": lambda v: setattr(conf, "user_instructions", v),
        "compact_prompt": lambda v: setattr(conf, "compact_prompt", v),
        "model_auto_compact_token_limit": lambda v: setattr(conf, "model_auto_compact_token_limit", v),
        "model_context_window": lambda v: setattr(conf, "model_context_window", v),
        "thread_name": lambda v: setattr(conf, "thread_name", v),
        "persist_extended_history": lambda v: setattr(conf, "persist_extended_history", v),
    }
    for key, setter in setters.items():
        if key in values:
            setter(values[key])
    profile_name = values.get("sandbox_mode", _config.WORKSPACE_WRITE)
    conf.permission_profile.CopyFrom(_config.permission_profile_for(profile_name, cwd, _network_policy(values)))
    if profile_name == _config.WORKSPACE_WRITE:
        _apply_workspace_write(conf.permission_profile.file_system, values.get("sandbox_workspace_write", {}), cwd)
    return conf


def _apply_workspace_write(policy: cfg.FileSystemPolicy, table: dict[str, Any], cwd: str) -> None:
    """Codex's ``[sandbox_workspace_write]``: extra ``writable_roots``, ``exclude_tmpdir_env_var``,
    ``exclude_slash_tmp`` (``network_access`` is ``[network] mode`` here)."""
    excluded = set()
    if table.get("exclude_tmpdir_env_var", False):
        excluded.add(cfg.SPECIAL_PATH_TMPDIR)
    if table.get("exclude_slash_tmp", False):
        excluded.add(cfg.SPECIAL_PATH_SLASH_TMP)
    kept = [e for e in policy.entries if not (e.WhichOneof("target") == "special" and e.special in excluded)]
    roots = table.get("writable_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise ConfigError("sandbox_workspace_write.writable_roots: expected a list of paths")
    for root in roots:
        path = os.path.normpath(os.path.join(cwd, os.path.expanduser(root)))
        kept.append(cfg.FileSystemEntry(path=path, access=cfg.FILE_ACCESS_WRITE))
    del policy.entries[:]
    policy.entries.extend(kept)


def _constraints(path: Path) -> cfg.Constraints:
    layer = _read_layer("requirements", path)
    if layer is None:
        return cfg.Constraints()
    out = cfg.Constraints()
    for raw in layer.values.get("allowed_approval_policies", []):
        if raw not in _APPROVAL:
            raise ConfigError(f"{_where(layer, 'allowed_approval_policies')}: unknown approval policy {raw!r}")
        out.allowed_approval_policies.append(_APPROVAL[raw])  # type: ignore[arg-type]
    for raw in layer.values.get("allowed_sandbox_modes", []):
        if raw not in _config.PROFILE_NAMES:
            raise ConfigError(f"{_where(layer, 'allowed_sandbox_modes')}: unknown sandbox mode {raw!r}")
        out.allowed_permission_profiles.append(raw)
    out.allow_unsandboxed_fallback = bool(layer.values.get("allow_unsandboxed_fallback", False))
    return out


def default_home() -> Path:
    """The user's supervisor home (state and user config)."""
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / PROJECT_DIR_NAME


def load_config(
    *,
    cwd: str | None = None,
    home: Path | None = None,
    managed_dir: Path | None = None,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    codex_home: Path | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Load, merge and check every layer; raise ``ConfigError`` naming file, line and key.

    ``codex_home`` adds Codex's ``config.toml`` from there right above the managed layer (and, for a
    ``profile`` with a ``PROFILE.config.toml`` there, that file in place of ``[profiles.PROFILE]``);
    ``defaults`` sit below every layer (``exec`` uses them for Codex's own defaults).
    """
    cwd = os.path.abspath(cwd or os.getcwd())
    home = home or default_home()
    managed_dir = managed_dir if managed_dir is not None else MANAGED_DIR
    warnings: list[str] = []
    layers: list[ConfigLayer] = []
    layer_dirs = [("managed", managed_dir), ("user", home), ("project", Path(cwd) / PROJECT_DIR_NAME)]
    files = [(source, directory / CONFIG_FILE) for source, directory in layer_dirs]
    codex_files = codex_layer_paths(codex_home, profile) if codex_home is not None else []
    for source, path in [files[0], *codex_files, *files[1:]]:
        layer = _read_layer(source, path)
        if layer is not None:
            _check_types(layer, warnings)
            layers.append(layer)
            if source == "codex-profile":
                profile = None  # Codex's profile file is the profile
    merged: dict[str, Any] = dict(defaults or {})
    for layer in layers:
        merged = _merge(merged, layer.values)
    if profile:
        profiles = merged.get("profiles", {})
        if profile not in profiles or not isinstance(profiles[profile], dict):
            raise ConfigError(f"--profile {profile!r}: no [profiles.{profile}] table in any config layer")
        prof_layer = ConfigLayer("profile", None, profiles[profile])
        _check_types(prof_layer, warnings)
        layers.append(prof_layer)
        merged = _merge(merged, profiles[profile])
    for raw in overrides:
        override_layer = ConfigLayer("override", None, parse_override(raw))
        override_layer.path = Path(f"-c {raw}")
        _check_types(override_layer, warnings)
        layers.append(override_layer)
        merged = _merge(merged, override_layer.values)
    session = _session_from(merged, cwd, str(home))
    constraints = _constraints(managed_dir / REQUIREMENTS_FILE)
    _config.check_constraints(session, constraints)
    deprecations = []
    if merged.get("approval_policy") == "on-failure":
        deprecations.append((
            "`on-failure` approval policy is deprecated",
            "Use `on-request` for interactive approvals or `never` for non-interactive runs.",
        ))
    return LoadedConfig(session, constraints, merged, layers, warnings, deprecations, layer_dirs)
