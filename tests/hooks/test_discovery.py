"""Tests for hook discovery: config layers, TOML tables, plugins, path safety, flags and warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actors.hooks._discovery import ConfigLayer, discover
from protos.supervisor.v1 import hooks_pb2


def hooks_doc(event: str, command: str, matcher: str | None = None, **extra: Any) -> dict[str, Any]:
    """A Claude-Code-shaped hooks document with one hook."""
    group: dict[str, Any] = {"hooks": [{"type": "command", "command": command, **extra}]}
    if matcher is not None:
        group["matcher"] = matcher
    return {"hooks": {event: [group]}}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def make_plugin(
    root: Path, manifest: dict[str, Any] | None, manifest_path: str = ".codex-plugin/plugin.json"
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        write_json(root / manifest_path, manifest)
    return root


def commands(registry: Any) -> list[str]:
    return [h.command for h in registry.handlers]


def test_all_sources_load_in_order(tmp_path: Path) -> None:
    user, project, managed = tmp_path / "user", tmp_path / "project", tmp_path / "managed"
    write_json(user / "hooks.json", hooks_doc("PreToolUse", "echo user", "Bash"))
    project.mkdir()
    project_config = hooks_doc("PostToolUse", "echo project-toml")["hooks"]  # TOML [hooks] table shape
    write_json(managed / "hooks.json", hooks_doc("Stop", "echo managed")["hooks"])  # inner mapping form
    plugin_default = make_plugin(tmp_path / "p-default", {"name": "alpha"})
    write_json(plugin_default / "hooks/hooks.json", hooks_doc("PreToolUse", "echo alpha"))
    plugin_inline = make_plugin(
        tmp_path / "p-inline", {"name": "beta", "hooks": hooks_doc("SessionStart", "echo beta", "startup")}
    )
    plugin_paths = make_plugin(
        tmp_path / "p-paths", {"hooks": ["./hooks/one.json", "hooks/two.json"]}, "plugin.json"
    )
    write_json(plugin_paths / "hooks/one.json", hooks_doc("PreToolUse", "echo one"))
    write_json(plugin_paths / "hooks/two.json", hooks_doc("Stop", "echo two"))

    registry, warnings = discover(
        [
            ("user", user),
            ConfigLayer("project", project, {"hooks": project_config}),
            ("managed", str(managed)),
        ],
        [plugin_default, plugin_inline, plugin_paths],
        plugin_hooks=True,
    )

    assert warnings == []
    assert commands(registry) == [
        "echo user",
        "echo project-toml",
        "echo managed",
        "echo alpha",
        "echo beta",
        "echo one",
        "echo two",
    ]
    sources = [h.source for h in registry.handlers]
    assert sources == ["user", "project", "managed", "plugin", "plugin", "plugin", "plugin"]
    plugins = [(h.origin.plugin_id, h.origin.plugin_root) for h in registry.handlers[3:]]
    assert plugins == [
        ("alpha", str(plugin_default)),
        ("beta", str(plugin_inline)),
        ("p-paths", str(plugin_paths)),  # no manifest name: the directory name
        ("p-paths", str(plugin_paths)),
    ]
    assert registry.handlers[4].origin.path.endswith(".codex-plugin/plugin.json#hooks[0]")
    assert registry.handlers[1].origin.path == str(project / "config.toml")


def test_malformed_file_warns_and_others_still_load(tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user/hooks.json").write_text('{"hooks": {"PreToolUse": [ {"matcher": ')
    write_json(tmp_path / "project/hooks.json", hooks_doc("PreToolUse", "echo project"))
    plugin = make_plugin(tmp_path / "plug", {"name": "p"})
    (plugin / "hooks").mkdir()
    (plugin / "hooks/hooks.json").write_bytes(b"\xff\xfe not utf-8")

    registry, warnings = discover(
        [("user", tmp_path / "user"), ("project", tmp_path / "project")], [plugin], plugin_hooks=True
    )

    assert commands(registry) == ["echo project"]
    assert len(warnings) == 2
    assert "failed to parse" in warnings[0] and str(tmp_path / "user/hooks.json") in warnings[0]
    assert "not UTF-8" in warnings[1]


def test_bad_entries_are_skipped_with_warnings_and_siblings_load(tmp_path: Path) -> None:
    doc = {
        "hooks": {
            "PreToolUse": [
                {"matcher": "Bash(", "hooks": [{"type": "command", "command": "echo bad-regex"}]},
                {
                    "matcher": "Bash",
                    "hooks": [
                        {"type": "command", "command": "echo ok", "timeout": 5, "statusMessage": "checking"},
                        {"type": "command", "command": "echo bad-timeout", "timeout": "soon"},
                        {"type": "command", "command": ""},
                        {"type": "prompt", "prompt": "is this fine?"},
                        {"type": "command", "command": "echo async", "async": True},
                        "not-an-object",
                    ],
                },
                {"matcher": 7, "hooks": []},
                {"hooks": "nope"},
            ],
            "NotAnEvent": [],
            "Stop": {"not": "a list"},
        }
    }
    write_json(tmp_path / "hooks.json", doc)

    registry, warnings = discover([("user", tmp_path)])

    assert commands(registry) == ["echo ok"]
    handler = registry.handlers[0]
    assert (handler.timeout_s, handler.status_message, handler.matcher) == (5.0, "checking", "Bash")
    joined = "\n".join(warnings)
    for needle in (
        "invalid matcher 'Bash('",
        "timeout must be a positive number",
        "non-empty string",
        "unsupported hook type 'prompt'",
        "async hooks",
        "expected an object",
        "matcher must be a string",
        "must be a list of hook handlers",
        "unknown hook event 'NotAnEvent'",
        "Stop must be a list",
    ):
        assert needle in joined, needle
    assert len(warnings) == 10


def test_plugin_path_escapes_are_refused_with_warnings(tmp_path: Path) -> None:
    outside = write_json(tmp_path / "outside/evil.json", hooks_doc("PreToolUse", "echo evil"))
    plugin = make_plugin(
        tmp_path / "plug",
        {
            "name": "p",
            "hooks": [
                "../outside/evil.json",
                str(outside),
                "hooks/link.json",
                "hooks/ok.json",
                "hooks/missing.json",
            ],
        },
    )
    (plugin / "hooks").mkdir()
    (plugin / "hooks/link.json").symlink_to(outside)
    write_json(plugin / "hooks/ok.json", hooks_doc("PreToolUse", "echo ok"))

    registry, warnings = discover([], [plugin], plugin_hooks=True)

    assert commands(registry) == ["echo ok"]
    assert len(warnings) == 4
    assert "leaves the plugin root" in warnings[0]
    assert "refused absolute hooks path" in warnings[1]
    assert "resolves outside the plugin root" in warnings[2]
    assert "not found" in warnings[3]


def test_symlinked_default_hooks_dir_escaping_the_root_is_refused(tmp_path: Path) -> None:
    write_json(tmp_path / "elsewhere/hooks.json", hooks_doc("PreToolUse", "echo evil"))
    plugin = make_plugin(tmp_path / "plug", None)
    (plugin / "hooks").symlink_to(tmp_path / "elsewhere")

    registry, warnings = discover([], [plugin], plugin_hooks=True)

    assert len(registry) == 0
    assert len(warnings) == 1 and "resolves outside the plugin root" in warnings[0]


def test_manifest_hook_paths_replace_the_default_file(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path / "plug", {"hooks": "./hooks/one.json"})
    write_json(plugin / "hooks/hooks.json", hooks_doc("PreToolUse", "echo ignored"))
    write_json(plugin / "hooks/one.json", hooks_doc("PreToolUse", "echo one"))

    registry, warnings = discover([], [plugin], plugin_hooks=True)

    assert (commands(registry), warnings) == (["echo one"], [])


def test_feature_flag_off_loads_no_plugin_hooks(tmp_path: Path) -> None:
    write_json(tmp_path / "user/hooks.json", hooks_doc("Stop", "echo user"))
    plugin = make_plugin(tmp_path / "plug", {"name": "p"})
    write_json(plugin / "hooks/hooks.json", hooks_doc("Stop", "echo plugin"))
    broken = make_plugin(tmp_path / "broken", None)
    (broken / "plugin.json").write_text("{nope")

    registry, warnings = discover([("user", tmp_path / "user")], [plugin, broken], plugin_hooks=False)

    assert (commands(registry), warnings) == (["echo user"], [])  # plugins not even read


def test_bad_plugin_manifest_skips_that_plugin_only(tmp_path: Path) -> None:
    broken = make_plugin(tmp_path / "broken", None)
    (broken / "plugin.json").write_text("{nope")
    write_json(broken / "hooks/hooks.json", hooks_doc("Stop", "echo broken"))
    good = make_plugin(tmp_path / "good", {"name": "g", "hooks": [hooks_doc("Stop", "echo good"), 42]})

    registry, warnings = discover([], [broken, good, tmp_path / "absent"], plugin_hooks=True)

    assert commands(registry) == ["echo good"]
    assert len(warnings) == 4
    assert "failed to parse" in warnings[0] and "manifest could not be loaded" in warnings[1]
    assert "hooks[1] must be a path or a hooks object" in warnings[2]
    assert "is not a directory" in warnings[3]


def test_admin_hooks_disabled_turns_everything_off(tmp_path: Path) -> None:
    write_json(tmp_path / "user/hooks.json", hooks_doc("Stop", "echo user"))
    write_json(tmp_path / "managed/hooks.json", hooks_doc("Stop", "echo managed"))
    layers: list[Any] = [("user", tmp_path / "user"), ("managed", tmp_path / "managed")]

    by_flag, _ = discover(layers, hooks_disabled=True)
    by_config, warnings = discover([*layers[:1], ("managed", tmp_path / "managed", {"hooks_disabled": True})])

    for registry in (by_flag, by_config):
        assert registry.disabled and len(registry) == 0
        assert registry.matching("Stop", {}) == []
    assert warnings == []


def test_hooks_disabled_outside_the_managed_layer_is_ignored(tmp_path: Path) -> None:
    write_json(tmp_path / "user/hooks.json", hooks_doc("Stop", "echo user"))

    registry, warnings = discover(
        [("user", tmp_path / "user", {"hooks_disabled": True}), ("bogus", tmp_path)]
    )

    assert not registry.disabled and commands(registry) == ["echo user"]
    assert len(warnings) == 2
    assert "unknown config layer source 'bogus'" in warnings[0] and "only the managed layer" in warnings[1]


def test_matchers_full_match_tool_names_and_start_sources(tmp_path: Path) -> None:
    doc = {
        "hooks": {
            "PreToolUse": [
                {"matcher": "Bash", "hooks": [{"type": "command", "command": "bash-only"}]},
                {"matcher": "Edit|Write", "hooks": [{"type": "command", "command": "edit-or-write"}]},
                {"matcher": "*", "hooks": [{"type": "command", "command": "star"}]},
                {"matcher": "", "hooks": [{"type": "command", "command": "empty"}]},
                {"hooks": [{"type": "command", "command": "missing"}]},
                {"matcher": "mcp__.*", "hooks": [{"type": "command", "command": "mcp"}]},
            ],
            "SessionStart": [{"matcher": "resume", "hooks": [{"type": "command", "command": "on-resume"}]}],
            "Stop": [{"matcher": "ignored-for-stop", "hooks": [{"type": "command", "command": "stop"}]}],
        }
    }
    write_json(tmp_path / "hooks.json", doc)
    registry, warnings = discover([("project", tmp_path)])
    assert warnings == []

    def run_for(event: str, **fields: Any) -> list[str]:
        return [h.command for h in registry.matching(event, fields)]

    always = ["star", "empty", "missing"]
    assert run_for("PreToolUse", tool_name="Bash") == ["bash-only", *always]
    assert run_for("PreToolUse", tool_name="BashOutput") == always  # full match, not search
    assert run_for("PreToolUse", tool_name="Write") == ["edit-or-write", *always]
    assert run_for("PreToolUse", tool_name="mcp__time__now") == [*always, "mcp"]
    assert run_for("SessionStart", source="startup") == []
    assert run_for("SessionStart", source="resume") == ["on-resume"]
    assert run_for("Stop") == ["stop"]


def test_registry_describes_itself_as_protobuf(tmp_path: Path) -> None:
    write_json(
        tmp_path / "hooks.json", hooks_doc("PreToolUse", "echo hi", "Bash", timeout=3, statusMessage="s")
    )
    registry, _ = discover([("managed", tmp_path)])

    (definition,) = registry.to_proto_definitions()

    assert definition == hooks_pb2.HookDefinition(
        event_name="PreToolUse",
        matcher="Bash",
        command="echo hi",
        timeout_seconds=3.0,
        status_message="s",
        source=hooks_pb2.HOOK_SOURCE_MANAGED,
        source_path=str(tmp_path / "hooks.json"),
    )
