"""Per-shell scripts for snapshot capture, validation and exec, and rendering of the snapshot file.

Contract:
- Capture runs the user's shell as a login shell (``-l``), sources its rc file explicitly (a non-interactive
  login shell does not: bash ``~/.bashrc``, zsh ``${ZDOTDIR:-$HOME}/.zshrc``, sh ``$ENV``) and prints, after
  a random-nonce marker, framed sections: shell options, aliases, functions (bash and zsh; dash cannot list
  functions) and the exported environment as ``env -0``. Nothing is written to disk by the shell.
- ``render_snapshot`` turns that dump into a script that is safe to source under ``set -e``: exports first
  (values single-quoted), then functions, options, aliases (last, so they cannot expand inside the functions
  above them), then ``shopt -s expand_aliases`` for bash. Volatile variables (PWD, SHLVL, ...) and
  session-control options (errexit, monitor, xtrace, ...) are left out.
- Secrets never reach the rendered text: an export whose NAME matches a secret pattern, or whose value
  contains a secret's value, is written as ``[ -z "${NAME+x}" ] || export NAME`` (the command sees the value
  it inherits at run time, if any); a secret value found anywhere else (an alias, a function body) is
  replaced by ``SECRET_PLACEHOLDER``.
- ``exec_script`` sources the snapshot, restores the caller's extra environment over it, then runs the command
  with ``eval`` so it is parsed after the aliases are defined.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protos.supervisor.v1 import shell_pb2

__all__ = [
    "DEFAULT_SECRET_PATTERNS",
    "SECRET_PLACEHOLDER",
    "DumpParseError",
    "ShellKind",
    "capture_argv",
    "detect_kind",
    "exec_argv",
    "parse_dump",
    "render_snapshot",
    "validate_argv",
]

#: Exported variables whose names match one of these globs (case-insensitive) are never written as values.
DEFAULT_SECRET_PATTERNS: tuple[str, ...] = (
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*_KEY",
    "*API_KEY*",
    "*CREDENTIAL*",
    "AWS_*",
    "*PRIVATE*",
    "GITHUB_*",
    "*AUTH*",
)
#: Variables that describe one shell process, not the user's environment.
VOLATILE_VARIABLES = frozenset(
    {
        "_", "PWD", "OLDPWD", "SHLVL", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "BASHPID", "PPID",
        "HISTCMD", "EPOCHSECONDS", "EPOCHREALTIME", "COLUMNS", "LINES",
    }
)  # fmt: skip
#: Options that belong to the capturing shell's mode, not to the user's preferences (normalised names).
SESSION_OPTIONS = frozenset(
    {
        "errexit", "errreturn", "onecmd", "monitor", "history", "histexpand", "interactive", "stdin",
        "privileged", "restricted", "noexec", "exec", "xtrace", "verbose", "vi", "emacs", "nolog", "debug",
        "login", "shinstdin", "zle", "singlecommand", "rcs", "globalrcs", "loginshell", "restrictedshell",
        "expandaliases",
    }
)  # fmt: skip
#: Replaces a secret value found outside the exports (an alias, a function body).
SECRET_PLACEHOLDER = "__SECRET_REDACTED__"
#: Secret values shorter than this are not searched for elsewhere in the text (too many false hits).
MIN_SCRUB_LENGTH = 6
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SECTIONS = ("options", "aliases", "functions", "env")


class ShellKind(enum.IntEnum):
    """Shell families we can snapshot (values are the proto's ``ShellKind``)."""

    BASH = shell_pb2.SHELL_KIND_BASH
    ZSH = shell_pb2.SHELL_KIND_ZSH
    SH = shell_pb2.SHELL_KIND_SH


class DumpParseError(ValueError):
    """Raised when a capture's output lacks the framed sections (the rc exited early or printed garbage)."""


def detect_kind(shell: str) -> ShellKind | None:
    """The family of the shell at ``shell`` by its name, or None if unsupported."""
    name = os.path.basename(shell)
    if name.startswith("bash"):
        return ShellKind.BASH
    if name.startswith("zsh"):
        return ShellKind.ZSH
    if name in {"sh", "dash", "ash"}:
        return ShellKind.SH
    return None


def _section(nonce: str, name: str, commands: str) -> str:
    return f"command printf '\\n%s:begin:{name}\\n' {nonce}\n{commands}\ncommand printf '\\n%s:end:{name}\\n' {nonce}\n"


def _dump_body(kind: ShellKind, nonce: str) -> str:
    if kind is ShellKind.BASH:
        options, aliases, functions = (
            "builtin set +o; builtin shopt -p",
            "builtin alias -p",
            "builtin declare -f",
        )
    elif kind is ShellKind.ZSH:
        options, aliases, functions = "builtin setopt", "builtin alias -L", "builtin typeset -f"
    else:
        options, aliases, functions = "set +o", "alias", ":"
    return "".join(
        _section(nonce, name, cmd)
        for name, cmd in zip(_SECTIONS, (options, aliases, functions, "command env -0"), strict=True)
    )


_RC_SOURCE = {
    # as Codex: a login bash reads only .bash_profile/.profile; .bashrc is sourced unless BASH_ENV does it
    ShellKind.BASH: 'if [ -z "${BASH_ENV-}" ] && [ -r "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi\n',
    ShellKind.ZSH: '__ss_rc="${ZDOTDIR:-$HOME}/.zshrc"; [ -r "$__ss_rc" ] && . "$__ss_rc"; unset __ss_rc\n',
    ShellKind.SH: '[ -n "${ENV-}" ] && [ -r "$ENV" ] && . "$ENV"\n',
}
_NO_STARTUP_FLAGS = {ShellKind.BASH: ["--noprofile", "--norc"], ShellKind.ZSH: ["-f"], ShellKind.SH: []}


def capture_argv(shell: str, kind: ShellKind, nonce: str, *, with_rc: bool) -> list[str]:
    """Argv of a capture: login shell + rc file (``with_rc``), or no startup files at all."""
    script = (_RC_SOURCE[kind] if with_rc else "") + _dump_body(kind, nonce)
    flags = ["-l"] if with_rc else _NO_STARTUP_FLAGS[kind]
    return [shell, *flags, "-c", script]


def validate_argv(shell: str, kind: ShellKind, path: Path) -> list[str]:
    """Argv that sources ``path`` under ``set -e`` in a fresh non-interactive shell with no startup files."""
    return [shell, *_NO_STARTUP_FLAGS[kind], "-c", 'set -e; . "$1"', os.path.basename(shell), str(path)]


def exec_argv(shell: str, snapshot: Path | None, command: str, keep_env: Iterable[str] = ()) -> list[str]:
    """Argv that runs ``command`` through ``snapshot`` (if any), keeping ``keep_env`` variables over it."""
    if snapshot is None:
        return [shell, "-c", command]
    names = sorted(keep_env)
    for name in names:
        if not _NAME_RE.match(name):
            raise ValueError(f"not a valid environment variable name: {name!r}")
    save = "".join(f"__ss_keep_{n}=${{{n}-}}\n" for n in names)
    restore = "".join(f'export {n}="$__ss_keep_{n}"; unset __ss_keep_{n}\n' for n in names)
    script = f"{save}. {shlex.quote(str(snapshot))}\n{restore}eval {shlex.quote(command)}\n"
    return [shell, "-c", script]


@dataclass(frozen=True)
class Dump:
    """The framed sections of one capture's output (env is raw ``env -0`` bytes)."""

    options: str
    aliases: str
    functions: str
    env: bytes


def parse_dump(stdout: bytes, nonce: str) -> Dump:
    """Split a capture's stdout into its sections; raises ``DumpParseError`` if one is missing."""
    parts: dict[str, bytes] = {}
    for name in _SECTIONS:
        begin = f"\n{nonce}:begin:{name}\n".encode()
        end = f"\n{nonce}:end:{name}\n".encode()
        start = stdout.find(begin)
        stop = stdout.find(end, start + len(begin)) if start >= 0 else -1
        if start < 0 or stop < 0:
            raise DumpParseError(f"capture output has no complete {name!r} section")
        parts[name] = stdout[start + len(begin) : stop]

    def text(name: str) -> str:
        return parts[name].decode("utf-8", errors="surrogateescape")

    return Dump(options=text("options"), aliases=text("aliases"), functions=text("functions"), env=parts["env"])


def _normalise_option(name: str) -> str:
    flat = name.lower().replace("_", "").replace("-", "")
    return flat[2:] if flat.startswith("no") and flat[2:] in SESSION_OPTIONS else flat


def _render_options(kind: ShellKind, options: str) -> list[str]:
    lines = []
    for raw in options.splitlines():
        words = raw.split()
        if not words:
            continue
        if kind is ShellKind.ZSH:
            if len(words) == 1 and _normalise_option(words[0]) not in SESSION_OPTIONS:
                lines.append(f"setopt {words[0]}")
            continue
        is_set = len(words) == 3 and words[0] == "set" and words[1] in {"-o", "+o"}
        is_shopt = len(words) == 3 and words[0] == "shopt" and words[1] in {"-s", "-u"}
        wanted = _normalise_option(words[2]) not in SESSION_OPTIONS and not words[2].startswith("compat")
        if (is_set or is_shopt) and wanted:
            lines.append(" ".join(words))
    return lines


_DASH_ALIAS_RE = re.compile(r"""([^\s=]+)=((?:'[^']*'|\\.|[^\s'\\])*)""")


def _render_aliases(kind: ShellKind, aliases: str) -> str:
    if kind is not ShellKind.SH:
        return aliases.strip("\n")
    return "\n".join(f"alias {m.group(1)}={m.group(2)}" for m in _DASH_ALIAS_RE.finditer(aliases))


def is_secret_name(name: str, patterns: Sequence[str]) -> bool:
    """True when ``name`` matches one of the glob ``patterns`` (case-insensitive)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, p.upper()) for p in patterns)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


@dataclass
class Rendered:
    """A rendered snapshot and what was kept out of it."""

    text: str
    redacted_names: list[str] = field(default_factory=list)
    scrubbed_sections: list[str] = field(default_factory=list)
    secret_values: list[str] = field(default_factory=list)


def render_snapshot(kind: ShellKind, dump: Dump, secret_patterns: Sequence[str], header: str) -> Rendered:
    """The snapshot script for ``dump``; see the module docstring for its order and its secret rules."""
    env: list[tuple[str, str]] = []
    for entry in dump.env.split(b"\0"):
        name_b, sep, value_b = entry.partition(b"=")
        name = name_b.decode("utf-8", errors="surrogateescape").lstrip("\n")
        if sep and _NAME_RE.match(name) and name not in VOLATILE_VARIABLES:
            env.append((name, value_b.decode("utf-8", errors="surrogateescape")))
    secrets = sorted({v for n, v in env if is_secret_name(n, secret_patterns) and v}, key=len, reverse=True)
    searchable = [s for s in secrets if len(s) >= MIN_SCRUB_LENGTH]
    out = Rendered(text="", secret_values=secrets)

    def scrub(section: str, text: str) -> str:
        for secret in searchable:
            if secret in text:
                text = text.replace(secret, SECRET_PLACEHOLDER)
                if section not in out.scrubbed_sections:
                    out.scrubbed_sections.append(section)
        return text

    lines = [header, "", "# Exported variables (secret-looking ones are read from the runtime environment)."]
    for name, value in sorted(env):
        if is_secret_name(name, secret_patterns) or any(s in value for s in searchable):
            out.redacted_names.append(name)
            lines.append(f'[ -z "${{{name}+x}}" ] || export {name}')
        else:
            lines.append(f"export {name}={_quote(value)}")
    if dump.functions.strip():
        lines += ["", "# Functions.", scrub("functions", dump.functions.strip("\n"))]
    lines += ["", "# Shell options.", *(scrub("options", o) for o in _render_options(kind, dump.options))]
    aliases = _render_aliases(kind, dump.aliases)
    if aliases:
        lines += [
            "",
            "# Aliases (after the functions, so they do not expand inside them).",
            scrub("aliases", aliases),
        ]
    if kind is ShellKind.BASH:
        lines += ["", "# Aliases must expand in the non-interactive shell that sources this file.",
                  "shopt -s expand_aliases"]  # fmt: skip
    lines.append("")
    out.text = "\n".join(lines)
    return out


def to_proto_kind(kind: ShellKind | None) -> int:
    """The proto ``ShellKind`` value for ``kind`` (UNSPECIFIED for None)."""
    return int(kind) if kind is not None else shell_pb2.SHELL_KIND_UNSPECIFIED
