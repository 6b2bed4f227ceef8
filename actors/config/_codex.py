"""Codex's ``config.toml`` accepted as it is: its home, its provider tables, and the keys it has that we lack.

Contract:
- ``codex_home()`` is ``$CODEX_HOME``, else ``~/.codex``; ``codex_layer_paths`` lists the files ``load_config``
  reads from it (``config.toml``, and ``NAME.config.toml`` for Codex's ``--profile NAME``).
- ``resolve_provider(values, name)`` turns ``model_provider`` + ``[model_providers.NAME]`` into the provider
  kind we build and its options, and fails with ``ConfigError`` (naming the key) when the provider is unknown
  or its key's environment variable is unset. Codex's table keys map onto the ``openai`` provider's options:
  ``base_url``; ``wire_api`` (``responses`` or ``chat``) -> ``api``; ``env_key`` -> ``api_key`` read from that
  variable (``env_key_instructions`` goes into the error); ``request_max_retries`` -> ``max_retries``;
  ``stream_idle_timeout_ms`` -> ``timeout_s``; ``http_headers`` and ``env_http_headers`` (header -> variable)
  -> ``headers``; ``query_params`` -> ``query_params``. ``name``, ``requires_openai_auth``,
  ``stream_max_retries`` and ``supports_websockets`` need nothing from us. Codex's built-in ``openai`` provider
  reads ``openai_base_url`` / ``OPENAI_BASE_URL`` and ``CODEX_API_KEY`` / ``OPENAI_API_KEY``; ``ollama`` and
  ``lmstudio`` are its local servers. A table with ``kind = "openai" | "playbook"`` (or named after a kind and
  holding only our options) is ours, passed through unchanged.
- ``apply_codex_settings`` applies ``[sandbox_workspace_write]`` (``writable_roots``, ``network_access``).
- ``CODEX_KEY_TYPES`` are Codex's top-level keys ``load_config`` accepts; ``CODEX_UNIMPLEMENTED`` are those
  that change what a session does but that this runtime ignores (each a warning), and ``CODEX_SILENT`` those
  that only concern Codex's terminal UI, accepted without a word.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.errors import ConfigError
from actors.providers import PROVIDER_KINDS
from protos.supervisor.v1 import config_pb2 as cfg

__all__ = [
    "CODEX_KEY_TYPES",
    "CODEX_SILENT",
    "CODEX_UNIMPLEMENTED",
    "apply_codex_settings",
    "codex_home",
    "codex_layer_paths",
    "resolve_provider",
]

CODEX_HOME_ENV = "CODEX_HOME"
CODEX_DIR_NAME = ".codex"
CONFIG_FILE = "config.toml"
OPENAI_KIND = "openai"
#: The model-free runner (``actors.turn``), not a provider module.
BUILTIN_KIND = "builtin"
#: Codex's built-in providers that need no table (besides ``openai``): its local model servers.
LOCAL_SERVERS = {"ollama": "http://localhost:11434/v1", "lmstudio": "http://localhost:1234/v1",
                 "oss": "http://localhost:11434/v1"}
#: Where the built-in ``openai`` provider's key may come from, first found wins.
OPENAI_KEY_ENVS = ("CODEX_API_KEY", "OPENAI_API_KEY")
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
#: Codex provider keys that need nothing from us.
PROVIDER_IGNORED = frozenset({"name", "requires_openai_auth", "stream_max_retries", "supports_websockets",
                              "env_key_instructions", "experimental_bearer_token"})
WIRE_APIS = ("responses", "chat")
MS_PER_S = 1000.0

CODEX_KEY_TYPES: dict[str, type | tuple[type, ...]] = {
    "openai_base_url": str, "sandbox_workspace_write": dict, "tools": dict, "model_verbosity": str,
    "web_search": str, "shell_environment_policy": dict,
    "project_doc_max_bytes": int, "project_doc_fallback_filenames": list,
    "tool_output_token_limit": int, "model_instructions_file": str, "experimental_instructions_file": str,
    "review_model": str, "oss_provider": str, "forced_login_method": str, "preferred_auth_method": str,
    "disable_response_storage": bool, "hide_agent_reasoning": bool, "show_raw_agent_reasoning": bool,
    "tui": dict, "notify": list, "history": dict, "file_opener": str, "projects": dict, "notice": dict,
    "analytics": dict, "otel": dict, "check_for_update_on_startup": bool, "windows_wsl_setup_acknowledged": bool,
    "cli_auth_credentials_store": str, "mcp_oauth_credentials_store": str, "suppress_unstable_features_warning": bool,
    "include_apply_patch_tool": bool, "include_plan_tool": bool, "include_view_image_tool": bool,
    "use_experimental_unified_exec_tool": bool, "experimental_use_unified_exec_tool": bool,
    "model_supports_reasoning_summaries": bool, "model_reasoning_summary_format": str, "trust_level": str,
}
CODEX_SILENT = frozenset({
    "tui", "notify", "history", "file_opener", "projects", "notice", "analytics", "check_for_update_on_startup",
    "windows_wsl_setup_acknowledged", "cli_auth_credentials_store", "mcp_oauth_credentials_store",
    "suppress_unstable_features_warning", "hide_agent_reasoning", "show_raw_agent_reasoning", "otel",
    "forced_login_method", "preferred_auth_method", "trust_level", "openai_base_url", "sandbox_workspace_write",
    "tools", "include_apply_patch_tool", "include_plan_tool", "include_view_image_tool",
    "use_experimental_unified_exec_tool", "experimental_use_unified_exec_tool", "disable_response_storage",
})
CODEX_UNIMPLEMENTED = frozenset(CODEX_KEY_TYPES) - CODEX_SILENT


def codex_home(env: Mapping[str, str] | None = None) -> Path:
    """Codex's home: ``$CODEX_HOME``, else ``~/.codex``."""
    value = (os.environ if env is None else env).get(CODEX_HOME_ENV)
    return Path(value) if value else Path.home() / CODEX_DIR_NAME


def codex_layer_paths(home: Path, profile: str | None = None) -> list[tuple[str, Path]]:
    """The config files Codex reads from its home: ``config.toml``, then ``PROFILE.config.toml``."""
    paths = [("codex", home / CONFIG_FILE)]
    if profile:
        paths.append(("codex-profile", home / f"{profile}.{CONFIG_FILE}"))
    return paths


def _env_value(env: Mapping[str, str], var: str, where: str, instructions: str = "") -> str:
    value = env.get(var)
    if not value:
        hint = f" {instructions}" if instructions else ""
        raise ConfigError(f"{where}: environment variable `{var}` is not set (the provider's API key).{hint}")
    return value


def _str_table(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f"{where}: expected a table of strings")
    return {str(k): v for k, v in table.items()}


def _codex_options(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    where = f"model_providers.{name}"
    options: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for key, value in table.items():
        if key in PROVIDER_IGNORED:
            continue
        if key == "base_url":
            options["base_url"] = str(value)
        elif key == "wire_api":
            if value not in WIRE_APIS:
                raise ConfigError(f"{where}.wire_api: {value!r} is not one of {', '.join(WIRE_APIS)}")
            options["api"] = value
        elif key == "env_key":
            options["api_key"] = _env_value(env, str(value), f"{where}.env_key",
                                            str(table.get("env_key_instructions", "")))
        elif key == "request_max_retries":
            options["max_retries"] = int(value)
        elif key == "stream_idle_timeout_ms":
            options["timeout_s"] = float(value) / MS_PER_S
        elif key == "http_headers":
            headers.update(_str_table(value, f"{where}.http_headers"))
        elif key == "env_http_headers":
            for header, var in _str_table(value, f"{where}.env_http_headers").items():
                if env.get(var):  # Codex sends the header only when the variable is set
                    headers[header] = env[var]
        elif key == "query_params":
            options["query_params"] = _str_table(value, f"{where}.query_params")
        elif key in ("api_key", "model", "api", "max_retries", "timeout_s", "connect_timeout_s", "store"):
            options[key] = value  # our own option names work in a Codex table too
        else:
            raise ConfigError(f"{where}.{key}: unknown provider key (Codex's: base_url, wire_api, env_key, "
                              "request_max_retries, stream_max_retries, stream_idle_timeout_ms, http_headers, "
                              "env_http_headers, query_params)")
    if headers:
        options["headers"] = headers
    return options


def resolve_provider(values: Mapping[str, Any], name: str,
                     env: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """The provider kind to build for ``model_provider = name`` and its options; ``ConfigError`` if unusable."""
    env = os.environ if env is None else env
    tables = values.get("model_providers", {})
    table = tables.get(name) if isinstance(tables, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"model_providers.{name}: expected a table")
    table = dict(table or {})
    if "kind" in table:
        kind = str(table.pop("kind"))
        if kind not in PROVIDER_KINDS:
            raise ConfigError(f"model_providers.{name}.kind: unknown provider kind {kind!r} "
                              f"(known: {', '.join(sorted(PROVIDER_KINDS))})")
        return kind, _codex_options(name, table, env) if kind == OPENAI_KIND else table
    if name == BUILTIN_KIND or (name in PROVIDER_KINDS and name != OPENAI_KIND):
        return name, table
    if name == OPENAI_KIND:
        options = _codex_options(name, table, env)
        base_url = values.get("openai_base_url") or env.get(OPENAI_BASE_URL_ENV)
        if base_url and "base_url" not in options:
            options["base_url"] = str(base_url)
        if "api_key" not in options:
            key = next((env[var] for var in OPENAI_KEY_ENVS if env.get(var)), "")
            if not key:
                raise ConfigError("model_provider 'openai': no API key: set CODEX_API_KEY or OPENAI_API_KEY "
                                  "(or env_key in [model_providers.openai])")
            options["api_key"] = key
        return OPENAI_KIND, options
    if table:
        options = _codex_options(name, table, env)
        if "base_url" not in options:
            raise ConfigError(f"model_providers.{name}.base_url: required")
        options.setdefault("api_key", "unused")  # a keyless local server (Codex sends no key either)
        return OPENAI_KIND, options
    if name in LOCAL_SERVERS:
        return OPENAI_KIND, {"base_url": LOCAL_SERVERS[name], "api_key": "unused"}
    known = sorted({*PROVIDER_KINDS, *LOCAL_SERVERS, *(tables if isinstance(tables, dict) else {})})
    raise ConfigError(f"model_provider: provider {name!r} not found: no [model_providers.{name}] table and not a "
                      f"built-in provider (known: {', '.join(known)})")


def apply_codex_settings(conf: cfg.SessionConfiguration, values: Mapping[str, Any]) -> None:
    """Apply ``[sandbox_workspace_write]``: extra writable roots, and ``network_access`` (false: no network)."""
    table = values.get("sandbox_workspace_write")
    if not isinstance(table, dict) or conf.permission_profile.name != "workspace-write":
        return
    roots = table.get("writable_roots", [])
    if not isinstance(roots, list):
        raise ConfigError("sandbox_workspace_write.writable_roots: expected a list of paths")
    present = {e.path for e in conf.permission_profile.file_system.entries if e.WhichOneof("target") == "path"}
    for root in roots:
        path = os.path.abspath(os.path.join(conf.cwd, os.path.expanduser(str(root))))
        if path not in present:
            conf.permission_profile.file_system.entries.append(
                cfg.FileSystemEntry(path=path, access=cfg.FILE_ACCESS_WRITE))
            present.add(path)
    if "network_access" in table:
        if not isinstance(table["network_access"], bool):
            raise ConfigError("sandbox_workspace_write.network_access: expected true or false")
        if not table["network_access"]:
            conf.permission_profile.network.mode = cfg.NETWORK_MODE_OFF
