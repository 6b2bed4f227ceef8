"""Hook discovery: find every configured hook from config layers and installed plugins.

Contract:
- ``discover(layers, plugin_roots, plugin_hooks=..., hooks_disabled=...)`` returns ``(HookRegistry,
  warnings)``. It is synchronous, pure (reads files, writes nothing, starts nothing) and never raises for
  bad configuration: unreadable files, bad JSON, unknown events, bad regexes, wrong types and refused paths
  each become a warning string, and everything else still loads.
- Sources, all of which load, in this order (and hooks run in this order within an event):
  1. for each config layer, as given (``(source, dir)`` or ``(source, dir, parsed_config)`` with source
     ``user``, ``project`` or ``managed``): ``<dir>/hooks.json``, then the layer config's ``[hooks]`` table;
  2. when the ``plugin_hooks`` feature flag is on, for each plugin root: the manifest's ``hooks`` entries
     (``.codex-plugin/plugin.json``, else ``plugin.json``, else ``.claude-plugin/plugin.json``) given as a
     relative path, a list of paths, an inline hooks object or a list of those; or, when the manifest names
     no hooks, the default ``hooks/hooks.json``. As in Codex, manifest entries replace the default file.
- A plugin path that is absolute, leaves the root through ``..``, or resolves outside the root through a
  symlink is refused with a warning.
- An administrator requirement turns every hook off: ``hooks_disabled=True``, or ``hooks_disabled = true``
  in the managed layer's config. Then nothing is read and the registry is empty and ``disabled``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from actors.hooks._model import HookHandler, HookOrigin, HookRegistry, HookSourceName, parse_hooks_mapping

__all__ = ["ConfigLayer", "discover"]

logger = logging.getLogger(__name__)

#: Name of the hooks file beside each config layer.
LAYER_HOOKS_FILE = "hooks.json"
#: Name of a layer's config file (only used to label warnings about its [hooks] table).
LAYER_CONFIG_FILE = "config.toml"
#: A plugin's hooks file when its manifest names none.
PLUGIN_DEFAULT_HOOKS_FILE = "hooks/hooks.json"
#: Plugin manifest locations, first found wins.
PLUGIN_MANIFEST_CANDIDATES = (".codex-plugin/plugin.json", "plugin.json", ".claude-plugin/plugin.json")
#: Largest hooks or manifest file we read; a bigger one is a configuration mistake, not hooks.
MAX_CONFIG_FILE_BYTES = 1024 * 1024
#: The config key (managed layer only) by which an administrator turns every hook off.
HOOKS_DISABLED_KEY = "hooks_disabled"

_LAYER_SOURCES: tuple[str, ...] = ("user", "project", "managed")


@dataclass(frozen=True)
class ConfigLayer:
    """One config layer: its source kind, its directory, and its parsed config (if any)."""

    source: str
    dir: Path
    config: Mapping[str, Any] | None = None


LayerSpec = ConfigLayer | tuple[str, "str | Path"] | tuple[str, "str | Path", "Mapping[str, Any] | None"]


def discover(
    layers: Sequence[LayerSpec] = (),
    plugin_roots: Sequence[str | Path] = (),
    *,
    plugin_hooks: bool = False,
    hooks_disabled: bool = False,
) -> tuple[HookRegistry, list[str]]:
    """Load every hook from ``layers`` and (with the ``plugin_hooks`` flag) ``plugin_roots``."""
    warnings: list[str] = []
    normalized = [_normalize_layer(spec, warnings) for spec in layers]
    config_layers = [layer for layer in normalized if layer is not None]
    if hooks_disabled or _managed_disables_hooks(config_layers, warnings):
        logger.info("hooks disabled by an administrator requirement")
        return HookRegistry(disabled=True), _logged(warnings)
    handlers: list[HookHandler] = []
    for layer in config_layers:
        handlers.extend(_discover_layer(layer, warnings))
    if plugin_hooks:
        seen: set[str] = set()
        for root in plugin_roots:
            real_root = os.path.realpath(root)
            if real_root in seen:
                continue
            seen.add(real_root)
            handlers.extend(_discover_plugin(Path(root), real_root, warnings))
    return HookRegistry(handlers=tuple(handlers)), _logged(warnings)


def _logged(warnings: list[str]) -> list[str]:
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def _normalize_layer(spec: LayerSpec, warnings: list[str]) -> ConfigLayer | None:
    if isinstance(spec, ConfigLayer):
        layer = spec
    elif isinstance(spec, tuple) and len(spec) in (2, 3):
        config = spec[2] if len(spec) == 3 else None
        layer = ConfigLayer(source=str(spec[0]), dir=Path(spec[1]), config=config)
    else:
        warnings.append(f"hooks: ignoring malformed config layer {spec!r}")
        return None
    if layer.source not in _LAYER_SOURCES:
        warnings.append(f"hooks: unknown config layer source {layer.source!r} for {layer.dir}; skipped")
        return None
    if layer.config is not None and not isinstance(layer.config, Mapping):
        warnings.append(f"hooks: config for layer {layer.dir} is not a table; its [hooks] are ignored")
        layer = ConfigLayer(source=layer.source, dir=layer.dir)
    return layer


def _managed_disables_hooks(layers: Sequence[ConfigLayer], warnings: list[str]) -> bool:
    disabled = False
    for layer in layers:
        if layer.config is None or HOOKS_DISABLED_KEY not in layer.config:
            continue
        value = layer.config[HOOKS_DISABLED_KEY]
        if layer.source != "managed":
            warnings.append(
                f"hooks: {HOOKS_DISABLED_KEY} in the {layer.source} layer ({layer.dir}) is ignored; "
                "only the managed layer can set it"
            )
        elif not isinstance(value, bool):
            warnings.append(f"hooks: {HOOKS_DISABLED_KEY} in {layer.dir} must be true or false; ignored")
        else:
            disabled = disabled or value
    return disabled


def _discover_layer(layer: ConfigLayer, warnings: list[str]) -> list[HookHandler]:
    source = cast(HookSourceName, layer.source)
    handlers: list[HookHandler] = []
    hooks_file = layer.dir / LAYER_HOOKS_FILE
    if hooks_file.exists():
        data = _load_json_file(hooks_file, warnings)
        if data is not None:
            handlers.extend(_parse(data, HookOrigin(source=source, path=str(hooks_file)), warnings))
    if layer.config is not None and "hooks" in layer.config:
        origin = HookOrigin(source=source, path=str(layer.dir / LAYER_CONFIG_FILE))
        handlers.extend(_parse(layer.config["hooks"], origin, warnings))
    return handlers


def _discover_plugin(root: Path, real_root: str, warnings: list[str]) -> list[HookHandler]:
    if not root.is_dir():
        warnings.append(f"hooks: plugin root {root} is not a directory; skipped")
        return []
    root = root.absolute()
    manifest_rel = next((rel for rel in PLUGIN_MANIFEST_CANDIDATES if (root / rel).is_file()), None)
    manifest: Mapping[str, Any] = {}
    if manifest_rel is not None:
        loaded = _load_json_file(root / manifest_rel, warnings)
        if loaded is None:
            warnings.append(f"hooks: plugin {root} skipped: its manifest could not be loaded")
            return []
        if not isinstance(loaded, Mapping):
            warnings.append(f"hooks: plugin manifest {root / manifest_rel} is not an object; plugin skipped")
            return []
        manifest = loaded
    name = manifest.get("name")
    plugin_id = name if isinstance(name, str) and name else root.name

    def origin(path: str) -> HookOrigin:
        return HookOrigin(source="plugin", path=path, plugin_root=str(root), plugin_id=plugin_id)

    entries = manifest.get("hooks")
    if entries is None:
        default = _resolve_inside(root, real_root, PLUGIN_DEFAULT_HOOKS_FILE, warnings, must_exist=False)
        if default is None or not default.exists():
            return []
        data = _load_json_file(default, warnings)
        return [] if data is None else _parse(data, origin(str(root / PLUGIN_DEFAULT_HOOKS_FILE)), warnings)
    entry_list: list[object] = entries if isinstance(entries, list) else [entries]
    handlers: list[HookHandler] = []
    for index, entry in enumerate(entry_list):
        if isinstance(entry, str):
            path = _resolve_inside(root, real_root, entry, warnings, must_exist=True)
            if path is None:
                continue
            data = _load_json_file(path, warnings)
            if data is not None:
                handlers.extend(_parse(data, origin(str(path)), warnings))
        elif isinstance(entry, Mapping):
            handlers.extend(_parse(entry, origin(f"{root / str(manifest_rel)}#hooks[{index}]"), warnings))
        else:
            warnings.append(
                f"hooks: plugin {plugin_id}: manifest hooks[{index}] must be a path or a hooks object, "
                f"got {type(entry).__name__}; skipped"
            )
    return handlers


def _resolve_inside(
    root: Path, real_root: str, relative: str, warnings: list[str], *, must_exist: bool
) -> Path | None:
    """``root/relative`` if it stays inside the plugin root (after symlinks), else None with a warning."""
    if not relative.strip():
        warnings.append(f"hooks: plugin {root}: empty hooks path; skipped")
        return None
    if os.path.isabs(relative):
        warnings.append(f"hooks: plugin {root}: refused absolute hooks path {relative!r}")
        return None
    normalized = os.path.normpath(relative)
    if normalized == ".." or normalized.startswith(".." + os.sep):
        warnings.append(f"hooks: plugin {root}: refused hooks path {relative!r}: it leaves the plugin root")
        return None
    candidate = root / normalized
    real = os.path.realpath(candidate)
    if os.path.commonpath([real, real_root]) != real_root:
        warnings.append(
            f"hooks: plugin {root}: refused hooks path {relative!r}: it resolves outside the plugin root "
            f"(to {real})"
        )
        return None
    if must_exist and not candidate.is_file():
        warnings.append(f"hooks: plugin {root}: hooks file {relative!r} not found; skipped")
        return None
    return candidate


def _load_json_file(path: Path, warnings: list[str]) -> object | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as exc:
        warnings.append(f"hooks: failed to read {path}: {exc.strerror or exc}")
        return None
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        warnings.append(f"hooks: {path} is larger than {MAX_CONFIG_FILE_BYTES} bytes; skipped")
        return None
    try:
        return cast(object, json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError as exc:
        warnings.append(f"hooks: failed to parse {path}: not UTF-8 ({exc.reason})")
    except json.JSONDecodeError as exc:
        warnings.append(f"hooks: failed to parse {path}: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        warnings.append(f"hooks: failed to parse {path}: nested too deeply")
    return None


def _parse(data: object, origin: HookOrigin, warnings: list[str]) -> list[HookHandler]:
    handlers, problems = parse_hooks_mapping(data, origin)
    warnings.extend(problems)
    return handlers

