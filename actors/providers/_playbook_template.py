"""Templates of the playbook provider: ``str.format`` fields over the input, the step, and earlier results.

Contract:
- A template is a string in ``str.format`` syntax; ``{{`` and ``}}`` are literal braces. Fields name
  ``input``, ``step``, ``role``, ``nickname``, ``results[K]`` (step K's results), ``result.NAME`` (the
  results of the step named NAME) and, inside a call, ``i`` (0-based), ``n`` (1-based), ``count`` and
  ``item`` (the ``for_each`` element).
- A step's results are its tool outputs in call order: ``{results[0]}`` is all of them (one a line),
  ``{results[0][2]}`` the third, ``{result.spawn.agent_id}`` the ``agent_id`` field of each JSON output
  (comma-separated in text).
- A string that is exactly one field (``"{result.spawn.agent_id}"``) keeps the value's type (a list stays
  a list) instead of becoming text, so arguments can carry lists and numbers.
- ``check_template`` rejects, before anything runs, syntax errors, unknown names and references to steps
  that are not earlier; ``render`` fails with ``TemplateError`` only on data the model run produced.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Output", "StepResult", "StepResults", "TemplateError", "check_template", "render", "render_value"]

#: Names every template may use.
STEP_NAMES = frozenset({"input", "step", "role", "nickname", "results", "result"})
#: Names only a tool call's templates may use.
CALL_NAMES = frozenset({"i", "n", "count", "item"})

_FORMATTER = string.Formatter()
_WHOLE_FIELD = re.compile(r"\{([^{}!:]+)\}")
_ROOT = re.compile(r"[^.\[]*")
_RESULTS_INDEX = re.compile(r"results\[(\d+)\]")
_RESULT_NAME = re.compile(r"result\.([A-Za-z_]\w*)")


class TemplateError(ValueError):
    """Raised when a template is malformed, or names something that does not exist."""


class Output:
    """One tool output: its text, and (when it is a JSON object or array) its fields."""

    __slots__ = ("_parsed", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._parsed: Any = None

    def _json(self) -> Any:
        if self._parsed is None:
            try:
                self._parsed = json.loads(self._text)
            except ValueError:
                self._parsed = False
        return self._parsed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        data = self._json()
        if isinstance(data, dict) and name in data:
            return data[name]
        raise TemplateError(f"tool output has no JSON field {name!r}: {self._text[:200]!r}")

    def __getitem__(self, key: int | str) -> Any:
        data = self._json()
        try:
            return data[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise TemplateError(f"tool output has no JSON element {key!r}: {self._text[:200]!r}") from exc

    def __str__(self) -> str:
        return self._text

    def __format__(self, spec: str) -> str:
        return format(self._text, spec)


class Values(list[Any]):
    """A field of every output of a step: a list as data, comma-separated as text."""

    def __format__(self, spec: str) -> str:
        return format(", ".join(str(value) for value in self), spec)


class StepResult:
    """The outputs of one step's tool calls, in call order."""

    __slots__ = ("_outputs",)

    def __init__(self, outputs: Sequence[str]) -> None:
        self._outputs = [Output(text) for text in outputs]

    def __getattr__(self, name: str) -> Values:
        if name.startswith("_"):
            raise AttributeError(name)
        return Values(getattr(output, name) for output in self._outputs)

    def __getitem__(self, index: int) -> Output:
        try:
            return self._outputs[index]
        except (IndexError, TypeError) as exc:
            raise TemplateError(f"step has {len(self._outputs)} result(s), no result {index!r}") from exc

    def __len__(self) -> int:
        return len(self._outputs)

    def __str__(self) -> str:
        return "\n".join(str(output) for output in self._outputs)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class StepResults:
    """``result.NAME``: the results of earlier steps by name."""

    __slots__ = ("_by_name",)

    def __init__(self, by_name: Mapping[str, StepResult]) -> None:
        self._by_name = dict(by_name)

    def __getattr__(self, name: str) -> StepResult:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._by_name[name]
        except KeyError:
            raise TemplateError(f"no step named {name!r} has results yet") from None


def check_template(text: str, *, allowed: frozenset[str], earlier_steps: Sequence[str | None]) -> None:
    """Reject a template that cannot render: bad syntax, unknown names, references to later steps.

    ``earlier_steps`` holds the names (or None) of the steps before this one, in order.
    """
    try:
        fields = [field for _, field, _, _ in _FORMATTER.parse(text) if field is not None]
    except ValueError as exc:
        raise TemplateError(f"{exc} in {text!r} (write {{{{ and }}}} for literal braces)") from None
    for field in fields:
        root = _ROOT.match(field)
        name = root.group(0) if root else ""
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            hint = "write {{ and }} for literal braces"
            raise TemplateError(f"unknown name {{{name}}} in {text!r} (known: {known}; {hint})")
        index = _RESULTS_INDEX.match(field)
        if name == "results" and (index is None or int(index.group(1)) >= len(earlier_steps)):
            raise TemplateError(f"{{{field}}} in {text!r} must name an earlier step: results[0..]")
        named = _RESULT_NAME.match(field)
        if name == "result" and (named is None or named.group(1) not in earlier_steps):
            names = [step for step in earlier_steps if step]
            raise TemplateError(f"{{{field}}} in {text!r} must name an earlier step (named: {names})")


def plain(value: Any) -> Any:
    """A template value as plain JSON-compatible data."""
    if isinstance(value, StepResult):
        return [str(output) for output in value._outputs]
    if isinstance(value, Output):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Fill a template; a template that is one whole field returns that field's value, not text."""
    try:
        whole = _WHOLE_FIELD.fullmatch(text)
        if whole:
            value, _ = _FORMATTER.get_field(whole.group(1), (), context)
            return plain(value)
        return _FORMATTER.vformat(text, (), context)
    except TemplateError:
        raise
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
        raise TemplateError(f"cannot fill {text!r}: {exc!r}") from exc


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Fill every string inside ``value`` (dicts and lists recursively; keys are left alone)."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def iter_strings(value: Any) -> list[str]:
    """Every string inside ``value`` (for checking templates ahead of time)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in iter_strings(item)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in iter_strings(item)]
    return []
