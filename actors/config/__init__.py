"""Configuration: layered TOML loading and the pure ``apply`` of settings updates under constraints.
"""

from __future__ import annotations

from actors.config._apply import apply, default_configuration
from actors.config._codex import codex_home, resolve_provider
from actors.config._load import ConfigLayer, LoadedConfig, default_home, load_config, parse_override

__all__ = [
    "ConfigLayer",
    "LoadedConfig",
    "apply",
    "codex_home",
    "default_configuration",
    "default_home",
    "load_config",
    "parse_override",
    "resolve_provider",
]
