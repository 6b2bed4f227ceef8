"""Hook configuration model: events, configured handlers, the registry, and parsing of one hooks mapping.

Contract:
- A hooks mapping has Claude Code's shape, ``{"hooks": {EventName: [{"matcher": regex, "hooks":
  [{"type": "command", "command": str, "timeout": secs, "statusMessage": str}]}]}}``; the inner
  ``{EventName: [...]}`` mapping is accepted on its own too (TOML ``[hooks]`` tables have that shape).
- ``parse_hooks_mapping`` never raises on bad input: every problem (unknown event, bad regex, wrong
  types, unsupported handler type) becomes a warning string and only the offending group or handler is
  skipped.
- ``matcher`` is a regex matched against the whole target (``re.fullmatch``): the tool name for tool events,
  the start source (``startup|resume|clear``) for SessionStart, the agent type for subagent events, the
  reason for SessionEnd, the trigger (``manual|auto``) for PreCompact. A
  missing, empty or ``*`` matcher matches everything; events without a target ignore the matcher.
- Pure and cheap: standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from protos.supervisor.v1 import hooks_pb2

__all__ = [
    "DEFAULT_HOOK_TIMEOUT_S",
    "HOOK_EVENTS",
    "HookHandler",
    "HookOrigin",
    "HookRegistry",
    "HookSourceName",
    "match_target",
    "parse_hooks_mapping",
]

#: Per-hook timeout when the configuration gives none (Claude Code's default).
DEFAULT_HOOK_TIMEOUT_S = 60.0

HookSourceName = Literal["user", "project", "managed", "plugin"]

SESSION_START = "SessionStart"
USER_PROMPT_SUBMIT = "UserPromptSubmit"
PRE_TOOL_USE = "PreToolUse"
PERMISSION_REQUEST = "PermissionRequest"
POST_TOOL_USE = "PostToolUse"
STOP = "Stop"
SUBAGENT_START = "SubagentStart"
SUBAGENT_STOP = "SubagentStop"
SESSION_END = "SessionEnd"
PRE_COMPACT = "PreCompact"

#: Every lifecycle event a hook can be configured for.
HOOK_EVENTS: tuple[str, ...] = (
    SESSION_START,
    USER_PROMPT_SUBMIT,
    PRE_TOOL_USE,
    PERMISSION_REQUEST,
    POST_TOOL_USE,
    STOP,
    SUBAGENT_START,
    SUBAGENT_STOP,
    SESSION_END,
    PRE_COMPACT,
)

#: Which hook-input field a matcher is matched against, per event; events not listed ignore matchers.
MATCHER_TARGET_FIELD: dict[str, str] = {
    PRE_TOOL_USE: "tool_name",
    PERMISSION_REQUEST: "tool_name",
    POST_TOOL_USE: "tool_name",
    SESSION_START: "source",
    SUBAGENT_START: "agent_type",
    SUBAGENT_STOP: "agent_type",
    SESSION_END: "reason",
    PRE_COMPACT: "trigger",
}

_MATCH_ALL = frozenset({"", "*"})
_TIMEOUT_KEYS = ("timeout", "timeoutSec", "timeout_sec")
_STATUS_KEYS = ("statusMessage", "status_message")


@dataclass(frozen=True)
class HookOrigin:
    """Where a group of hooks came from: its source kind, file, and (for plugins) the plugin."""

    source: HookSourceName
    path: str
    plugin_root: str | None = None
    plugin_id: str | None = None


@dataclass(frozen=True)
class HookHandler:
    """One configured command hook."""

    event_name: str
    command: str
    timeout_s: float
    origin: HookOrigin
    matcher: str | None = None
    status_message: str | None = None
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> HookSourceName:
        """user, project, managed or plugin."""
        return self.origin.source

    def matches(self, target: str | None) -> bool:
        """True if this hook runs for ``target`` (see the module docstring)."""
        if self._pattern is None or self.event_name not in MATCHER_TARGET_FIELD:
            return True
        if target is None:
            return False
        return self._pattern.fullmatch(target) is not None

    def extra_env(self, cwd: str) -> dict[str, str]:
        """Environment added for this hook's process (project dir; plugin root for plugin hooks)."""
        env = {"CLAUDE_PROJECT_DIR": cwd}
        if self.origin.plugin_root is not None:
            env["PLUGIN_ROOT"] = self.origin.plugin_root
            env["CLAUDE_PLUGIN_ROOT"] = self.origin.plugin_root
        return env


@dataclass(frozen=True)
class HookRegistry:
    """Every hook a session loaded, in run order; ``disabled`` when an administrator turned hooks off."""

    handlers: tuple[HookHandler, ...] = ()
    disabled: bool = False

    def matching(self, event_name: str, hook_input: Mapping[str, Any]) -> list[HookHandler]:
        """The hooks that run for ``event_name`` with this input, in configuration order."""
        if self.disabled:
            return []
        target = match_target(event_name, hook_input)
        return [h for h in self.handlers if h.event_name == event_name and h.matches(target)]

    def __len__(self) -> int:
        return 0 if self.disabled else len(self.handlers)

    def to_proto_definitions(self) -> list[hooks_pb2.HookDefinition]:
        """The handlers as ``hooks_pb2.HookDefinition`` messages (for a ListHooks response)."""
        from protos.supervisor.v1 import hooks_pb2

        return [
            hooks_pb2.HookDefinition(
                event_name=h.event_name,
                matcher=h.matcher or "",
                command=h.command,
                timeout_seconds=h.timeout_s,
                status_message=h.status_message or "",
                source=source_to_proto(h.source),
                source_path=h.origin.path,
                plugin_id=h.origin.plugin_id or "",
            )
            for h in self.handlers
        ]


def source_to_proto(source: HookSourceName) -> hooks_pb2.HookSource.ValueType:
    """The ``hooks_pb2.HookSource`` enum value for a source name."""
    from protos.supervisor.v1 import hooks_pb2

    return {
        "user": hooks_pb2.HOOK_SOURCE_USER,
        "project": hooks_pb2.HOOK_SOURCE_PROJECT,
        "managed": hooks_pb2.HOOK_SOURCE_MANAGED,
        "plugin": hooks_pb2.HOOK_SOURCE_PLUGIN,
    }.get(source, hooks_pb2.HOOK_SOURCE_UNSPECIFIED)


def match_target(event_name: str, hook_input: Mapping[str, Any]) -> str | None:
    """The string a matcher is matched against for this event and input, if any."""
    key = MATCHER_TARGET_FIELD.get(event_name)
    if key is None:
        return None
    value = hook_input.get(key)
    return value if isinstance(value, str) else None


def parse_hooks_mapping(
    data: object, origin: HookOrigin, *, event_filter: Sequence[str] = HOOK_EVENTS
) -> tuple[list[HookHandler], list[str]]:
    """Parse one hooks mapping (outer or inner form) into handlers and warnings; never raises."""
    warnings: list[str] = []
    where = origin.path
    if not isinstance(data, Mapping):
        return [], [f"hooks config {where}: expected an object, got {type(data).__name__}"]
    events = data.get("hooks", data)
    if not isinstance(events, Mapping):
        return [], [f"hooks config {where}: \"hooks\" must be an object of event names"]
    handlers: list[HookHandler] = []
    for event_name, groups in events.items():
        if event_name not in event_filter:
            warnings.append(f"hooks config {where}: unknown hook event {event_name!r}; skipped")
            continue
        if not isinstance(groups, list):
            warnings.append(f"hooks config {where}: {event_name} must be a list of matcher groups")
            continue
        for index, group in enumerate(groups):
            handlers.extend(_parse_group(event_name, index, group, origin, warnings))
    return handlers, warnings


def _parse_group(
    event_name: str, index: int, group: object, origin: HookOrigin, warnings: list[str]
) -> list[HookHandler]:
    where = f"hooks config {origin.path}: {event_name}[{index}]"
    if not isinstance(group, Mapping):
        warnings.append(f"{where}: expected an object with \"hooks\", got {type(group).__name__}")
        return []
    matcher = group.get("matcher")
    pattern: re.Pattern[str] | None = None
    if matcher is not None and not isinstance(matcher, str):
        warnings.append(f"{where}: matcher must be a string; group skipped")
        return []
    if matcher is not None and matcher not in _MATCH_ALL:
        try:
            pattern = re.compile(matcher)
        except re.error as exc:
            warnings.append(f"{where}: invalid matcher {matcher!r}: {exc}; group skipped")
            return []
    entries = group.get("hooks")
    if not isinstance(entries, list):
        warnings.append(f"{where}: \"hooks\" must be a list of hook handlers; group skipped")
        return []
    handlers: list[HookHandler] = []
    for handler_index, entry in enumerate(entries):
        handler = _parse_handler(
            event_name,
            f"{where}.hooks[{handler_index}]",
            entry,
            origin=origin,
            matcher=matcher,
            pattern=pattern,
            warnings=warnings,
        )
        if handler is not None:
            handlers.append(handler)
    return handlers


def _parse_handler(
    event_name: str,
    where: str,
    entry: object,
    *,
    origin: HookOrigin,
    matcher: str | None,
    pattern: re.Pattern[str] | None,
    warnings: list[str],
) -> HookHandler | None:
    if not isinstance(entry, Mapping):
        warnings.append(f"{where}: expected an object, got {type(entry).__name__}; skipped")
        return None
    kind = entry.get("type", "command")
    if kind != "command":
        warnings.append(f"{where}: unsupported hook type {kind!r} (only \"command\" runs); skipped")
        return None
    if entry.get("async") is True:
        warnings.append(f"{where}: async hooks are not supported; skipped")
        return None
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        warnings.append(f"{where}: \"command\" must be a non-empty string; skipped")
        return None
    timeout_s = DEFAULT_HOOK_TIMEOUT_S
    for key in _TIMEOUT_KEYS:
        if key in entry:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                warnings.append(f"{where}: {key} must be a positive number of seconds; skipped")
                return None
            timeout_s = float(value)
            break
    status_message: str | None = None
    for key in _STATUS_KEYS:
        if key in entry:
            value = entry[key]
            if not isinstance(value, str):
                warnings.append(f"{where}: {key} must be a string; ignored")
            else:
                status_message = value
            break
    return HookHandler(
        event_name=event_name,
        command=command,
        timeout_s=timeout_s,
        origin=origin,
        matcher=matcher if pattern is not None else None,
        status_message=status_message,
        _pattern=pattern,
    )

