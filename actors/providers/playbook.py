"""The embedded default provider: plays a scripted plan from a TOML playbook, no network, deterministic.

Contract:
- A playbook holds plans keyed by a pattern (``fnmatch``) matched against the requesting agent's role
  (``"root"`` for the root session) and then its nickname; the first matching plan, in file order, plays.
- A plan is a list of steps. A step emits optional ``text`` and optional tool calls: ``tool`` +
  ``arguments`` (with ``repeat = N`` or ``for_each = [...]`` for N parallel calls), or ``calls = [...]``
  of such tables. A step with calls continues the turn; the last step must be text only (it ends the
  turn), and only the last step may be.
- Strings are templates (see ``_playbook_template``): ``{input}`` is the last user message, earlier
  results are ``{results[K]}`` or ``{result.NAME}``.
- State comes from the conversation alone: the provider counts the steps it already played since the last
  user message from its own call ids (``pb-t<turn>-s<step>-c<call>``) and reads their results from the
  tool messages. Every new user message starts the plan again.
- Usage is estimated (characters / 4) from the request and from what the step emitted.
- Load errors raise ``PlaybookError`` naming the file and the key path, or the line of a TOML syntax error.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from actors.providers._playbook_template import (
    CALL_NAMES,
    STEP_NAMES,
    StepResult,
    StepResults,
    TemplateError,
    check_template,
    iter_strings,
    render,
    render_value,
)
from actors.providers.base import (
    Completed,
    Message,
    ModelRequest,
    ProviderError,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolCallItem,
    estimate_tokens,
)

__all__ = ["DEFAULT_PLAYBOOK", "Playbook", "PlaybookError", "PlaybookProvider", "load_playbook"]

#: Upper bound on calls one step may expand to (``repeat``/``for_each``), against runaway plans.
MAX_CALLS_PER_STEP = 1000
#: The role a request without ``agent_role`` plays (the root session).
ROOT_ROLE = "root"

#: Played when no playbook is configured.
DEFAULT_PLAYBOOK = """
[plans."*"]
[[plans."*".steps]]
text = "playbook: no plan configured; you said: {input}"
"""

_CALL_ID = re.compile(r"pb-t(\d+)-s(\d+)-c(\d+)")
_NAME = re.compile(r"[A-Za-z_]\w*")
_WORDS = re.compile(r"\s*\S+\s*|\s+")
_LINE_COL = re.compile(r"at line (\d+), column (\d+)")
_STEP_KEYS = frozenset({"name", "text", "tool", "arguments", "repeat", "for_each", "calls"})
_CALL_KEYS = frozenset({"tool", "arguments", "repeat", "for_each"})


class PlaybookError(ProviderError):
    """Raised when a playbook cannot be loaded (with its file and line or key) or cannot play a step."""


@dataclass(frozen=True)
class CallSpec:
    """A tool call template; ``repeat``/``for_each`` expand it to several parallel calls."""

    tool: str
    arguments: dict[str, Any]
    repeat: int | None = None
    for_each: list[Any] | str | None = None


@dataclass(frozen=True)
class Step:
    """One model answer of a plan: optional text, then zero or more tool calls."""

    name: str | None
    text: str | None
    calls: tuple[CallSpec, ...]


@dataclass(frozen=True)
class Playbook:
    """Plans by agent pattern, in file order."""

    source: str
    plans: dict[str, tuple[Step, ...]]

    def plan_for(self, role: str | None, nickname: str | None) -> tuple[str, tuple[Step, ...]]:
        """The first plan whose pattern matches the role (``root`` when None), then the nickname."""
        for candidate in (role or ROOT_ROLE, nickname):
            if candidate is None:
                continue
            for pattern, steps in self.plans.items():
                if fnmatch.fnmatchcase(candidate, pattern):
                    return pattern, steps
        raise PlaybookError(
            f"{self.source}: no plan matches agent role {role or ROOT_ROLE!r} or nickname {nickname!r} "
            f"(patterns: {list(self.plans)})"
        )


def load_playbook(text: str, source: str = "<playbook>") -> Playbook:
    """Parse and check a playbook's TOML text; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlaybookError(_describe_toml_error(exc, text, source)) from None
    unknown = sorted(set(data) - {"plans"})
    if unknown:
        raise PlaybookError(f"{source}: unknown top-level key(s) {unknown}; a playbook holds only [plans.*]")
    plans = data.get("plans")
    if not isinstance(plans, dict) or not plans:
        raise PlaybookError(f"{source}: no plans: add a [plans.<agent pattern>] table with [[...steps]]")
    parsed: dict[str, tuple[Step, ...]] = {}
    for pattern, plan in plans.items():
        where = f"plans.{_key(pattern)}"
        if not isinstance(plan, dict) or set(plan) != {"steps"} or not isinstance(plan["steps"], list):
            raise PlaybookError(f"{source}: {where} must hold exactly one array of tables `steps`")
        parsed[pattern] = _parse_steps(plan["steps"], f"{source}: {where}")
    return Playbook(source, parsed)


def load_playbook_file(path: str | Path) -> Playbook:
    """Read and check a playbook file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError(f"cannot read playbook {path}: {exc}") from exc
    return load_playbook(text, str(path))


def _describe_toml_error(exc: tomllib.TOMLDecodeError, text: str, source: str) -> str:
    found = _LINE_COL.search(str(exc))
    if not found:
        return f"{source}: invalid TOML: {exc}"
    line, column = int(found.group(1)), int(found.group(2))
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    reason = _LINE_COL.sub("", str(exc)).strip().rstrip("()").strip()
    return f"{source}: invalid TOML at line {line}, column {column}: {reason}\n  {line} | {shown}"


def _key(pattern: str) -> str:
    return pattern if _NAME.fullmatch(pattern) else json.dumps(pattern)


def _parse_steps(raw_steps: list[Any], where: str) -> tuple[Step, ...]:
    if not raw_steps:
        raise PlaybookError(f"{where}.steps is empty")
    steps: list[Step] = []
    names: list[str | None] = []
    for index, raw in enumerate(raw_steps):
        here = f"{where}.steps[{index}]"
        if not isinstance(raw, dict):
            raise PlaybookError(f"{here} must be a table")
        unknown = sorted(set(raw) - _STEP_KEYS)
        if unknown:
            raise PlaybookError(f"{here}: unknown key(s) {unknown} (known: {sorted(_STEP_KEYS)})")
        name = raw.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name) or name in names):
            raise PlaybookError(f"{here}.name must be a new identifier, not {name!r}")
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            raise PlaybookError(f"{here}.text must be a string")
        if "calls" in raw and "tool" in raw:
            raise PlaybookError(f"{here}: use either `tool` or `calls`, not both")
        if "calls" in raw:
            if not isinstance(raw["calls"], list) or not raw["calls"]:
                raise PlaybookError(f"{here}.calls must be a non-empty array of tables")
            calls = tuple(_parse_call(c, f"{here}.calls[{n}]", names) for n, c in enumerate(raw["calls"]))
        elif "tool" in raw:
            call_fields = {k: v for k, v in raw.items() if k in _CALL_KEYS}
            calls = (_parse_call(call_fields, here, names),)
        else:
            stray = sorted(set(raw) & (_CALL_KEYS - {"tool"}))
            if stray:
                raise PlaybookError(f"{here}: {stray} given without `tool`")
            calls = ()
        if text is None and not calls:
            raise PlaybookError(f"{here} needs `text`, `tool` or `calls`")
        last = index == len(raw_steps) - 1
        if last and calls:
            raise PlaybookError(f"{here}: the last step must be text only (it ends the turn)")
        if not last and not calls:
            raise PlaybookError(f"{here}: a text-only step ends the turn, so only the last step may be one")
        if text is not None:
            _check(text, STEP_NAMES, names, f"{here}.text")
        steps.append(Step(name, text, calls))
        names.append(name)
    return tuple(steps)


def _parse_call(raw: Any, here: str, earlier: list[str | None]) -> CallSpec:
    if not isinstance(raw, dict):
        raise PlaybookError(f"{here} must be a table")
    unknown = sorted(set(raw) - _CALL_KEYS)
    if unknown:
        raise PlaybookError(f"{here}: unknown key(s) {unknown} (known: {sorted(_CALL_KEYS)})")
    tool, arguments = raw.get("tool"), raw.get("arguments", {})
    if not isinstance(tool, str) or not tool:
        raise PlaybookError(f"{here}.tool must be a tool name")
    if not isinstance(arguments, dict):
        raise PlaybookError(f"{here}.arguments must be a table")
    repeat, for_each = raw.get("repeat"), raw.get("for_each")
    if repeat is not None and for_each is not None:
        raise PlaybookError(f"{here}: use either `repeat` or `for_each`, not both")
    if repeat is not None and (
        isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 < repeat <= MAX_CALLS_PER_STEP
    ):
        raise PlaybookError(f"{here}.repeat must be an integer in 1..{MAX_CALLS_PER_STEP}")
    if for_each is not None and not isinstance(for_each, list | str):
        raise PlaybookError(f"{here}.for_each must be an array or a template naming a list")
    for text in iter_strings(arguments):
        _check(text, STEP_NAMES | CALL_NAMES, earlier, f"{here}.arguments")
    for text in iter_strings(for_each):
        _check(text, STEP_NAMES, earlier, f"{here}.for_each")
    return CallSpec(tool, arguments, repeat, for_each)


def _check(text: str, allowed: frozenset[str], earlier: list[str | None], where: str) -> None:
    try:
        check_template(text, allowed=allowed, earlier_steps=earlier)
    except TemplateError as exc:
        raise PlaybookError(f"{where}: {exc}") from None


class PlaybookProvider:
    """A ``ModelProvider`` that plays a ``Playbook``: the default, offline, deterministic model."""

    def __init__(self, playbook: Playbook, *, delay_s: float = 0.0, chunk_chars: int = 0) -> None:
        self.playbook = playbook
        self.delay_s = delay_s
        self.chunk_chars = chunk_chars

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PlaybookProvider:
        """Options: ``path`` (a TOML file) or ``text`` (TOML source), ``delay_s`` between deltas,
        ``chunk_chars`` (delta size; 0 = word by word). Neither path nor text: ``DEFAULT_PLAYBOOK``."""
        known = {"path", "text", "delay_s", "chunk_chars"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise PlaybookError(f"unknown playbook provider option(s) {unknown}; known: {sorted(known)}")
        if "path" in options:
            playbook = load_playbook_file(options["path"])
        else:
            playbook = load_playbook(str(options.get("text", DEFAULT_PLAYBOOK)), "<playbook text>")
        return cls(playbook, delay_s=float(options.get("delay_s", 0.0)),
                   chunk_chars=int(options.get("chunk_chars", 0)))

    async def stream(self, request: ModelRequest) -> AsyncGenerator[StreamItem, None]:
        """Play the next step of the plan for this agent, as a model stream."""
        pattern, steps = self.playbook.plan_for(request.agent_role, request.agent_nickname)
        turn, user_text, played = _turn_state(request.messages)
        index = len(played)
        if index >= len(steps):
            raise PlaybookError(f"{self.playbook.source}: plan {pattern!r} has no step {index}")
        step = steps[index]
        context: dict[str, Any] = {
            "input": user_text,
            "step": index,
            "role": request.agent_role or ROOT_ROLE,
            "nickname": request.agent_nickname or "",
            "results": [StepResult(outputs) for outputs in played],
            "result": StepResults({
                s.name: StepResult(outputs) for s, outputs in zip(steps, played, strict=False) if s.name
            }),
        }
        where = f"{self.playbook.source}: plan {pattern!r} step {index}"
        try:
            text = str(render(step.text, context)) if step.text is not None else ""
            calls = _expand_calls(step.calls, context, turn, index)
        except TemplateError as exc:
            raise PlaybookError(f"{where}: {exc}") from None
        for piece in self._chunks(text):
            if self.delay_s > 0:
                await trio.sleep(self.delay_s)
            else:
                await trio.lowlevel.checkpoint()
            yield TextDelta(piece)
        for call in calls:
            await trio.lowlevel.checkpoint()
            yield ToolCallItem(call)
        yield Completed(_usage(request, text, calls), "tool_calls" if calls else "stop")

    async def aclose(self) -> None:
        """Nothing to release."""

    def _chunks(self, text: str) -> list[str]:
        if not text:
            return []
        if self.chunk_chars > 0:
            return [text[i : i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]
        return _WORDS.findall(text)


def _turn_state(messages: list[Message]) -> tuple[int, str, list[list[str]]]:
    """(turn number, last user text, outputs of each step already played this turn)."""
    turn = sum(1 for m in messages if m.role == "user")
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    user_text = messages[last_user].content if last_user >= 0 else ""
    tail = messages[last_user + 1 :]
    calls: dict[int, dict[int, str]] = {}
    for message in tail:
        for call in message.tool_calls:
            found = _CALL_ID.fullmatch(call.call_id)
            if found and int(found.group(1)) == turn:
                calls.setdefault(int(found.group(2)), {})[int(found.group(3))] = call.call_id
    outputs = {m.tool_call_id: m.content for m in tail if m.role == "tool" and m.tool_call_id}
    played = []
    for step in range(max(calls, default=-1) + 1):
        ids = calls.get(step, {})
        played.append([outputs.get(ids[n], "") for n in sorted(ids)])
    return turn, user_text, played


def _expand_calls(
    specs: tuple[CallSpec, ...], context: dict[str, Any], turn: int, step: int
) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for spec in specs:
        if spec.for_each is not None:
            items = render_value(spec.for_each, context)
            if not isinstance(items, list):
                raise TemplateError(f"for_each {spec.for_each!r} gave {type(items).__name__}, not a list")
        else:
            items = [None] * (spec.repeat or 1)
        if len(calls) + len(items) > MAX_CALLS_PER_STEP:
            raise TemplateError(f"step expands to more than {MAX_CALLS_PER_STEP} calls")
        for i, item in enumerate(items):
            scope = {**context, "i": i, "n": i + 1, "count": len(items), "item": item}
            call_id = f"pb-t{turn}-s{step}-c{len(calls)}"
            calls.append(ToolCall(call_id, spec.tool, render_value(spec.arguments, scope)))
    return calls


def _usage(request: ModelRequest, text: str, calls: list[ToolCall]) -> TokenUsage:
    prompt = request.instructions + "".join(
        m.content + "".join(json.dumps(c.arguments) for c in m.tool_calls) for m in request.messages
    )
    output = text + "".join(c.name + json.dumps(c.arguments) for c in calls)
    input_tokens, output_tokens = estimate_tokens(prompt), estimate_tokens(output)
    return TokenUsage(input_tokens, output_tokens, input_tokens + output_tokens)
