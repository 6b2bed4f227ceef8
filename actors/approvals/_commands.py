"""Reading a shell command line as words: plain command sequences and Codex's known-safe list.

``plain_commands(script)`` splits a script into its simple commands when it is only plain words (bare or
quoted) joined by ``&&``, ``||``, ``;`` and ``|``; anything the words alone cannot describe (redirections,
subshells, ``$`` expansions, command substitution, background ``&``, here-documents, newlines) gives None.

``is_known_safe_command(argv)`` ports Codex's ``is_known_safe_command`` (``codex-rs/shell-command/src/
command_safety/is_safe_command.rs``): a short list of read-only programs (``ls``, ``cat``, ``grep``, ...) with
the argument checks Codex makes for ``find``, ``rg``, ``base64`` and ``sed -n``; ``bash -lc SCRIPT`` (also
``-c``, and ``zsh``) is safe when every plain command of the script is. ``git`` is not on the list (as in Codex:
``git status`` can run hooks and pagers). ``is_known_safe_script(script)`` is the same for a script string.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

__all__ = ["command_segments", "is_known_safe_command", "is_known_safe_script", "plain_commands"]

_SEPARATORS = {"&&", "||", ";", "|"}
#: Characters that make a script more than plain words (expansions, substitutions, redirections, subshells).
_NOT_PLAIN = re.compile(r"[$`<>()\n\r\\{}]")
_ALWAYS_SAFE = frozenset({
    "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "paste", "pwd", "rev", "seq",
    "stat", "tail", "tr", "true", "uname", "uniq", "wc", "which", "whoami", "numfmt", "tac",
})
_UNSAFE_FIND = frozenset({"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf"})
_UNSAFE_RG_WITH_ARG = ("--pre", "--hostname-bin")
_UNSAFE_RG_FLAGS = frozenset({"--search-zip", "-z"})
_SED_N_ARG = re.compile(r"^(\d+,)?\d+p$")
_SHELLS = frozenset({"bash", "zsh", "sh", "dash"})


def plain_commands(script: str) -> list[list[str]] | None:
    """The simple commands of ``script`` when it is plain words and ``&& || ; |`` only, else None."""
    if not script.strip() or _NOT_PLAIN.search(script):
        return None
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unterminated quote
        return None
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            if not commands[-1]:
                return None
            commands.append([])
        elif set(token) <= set(";&|"):  # "&", ";;", "|&" and the like
            return None
        else:
            commands[-1].append(token)
    if not commands[-1]:
        return None
    return commands


_SEGMENT_BREAKS = "();<>|&`"
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_segments(script: str) -> list[list[str]]:
    """Every word run of ``script`` between any shell punctuation (over-splits on purpose).

    For rules that must not be dodged: ``ls; rm -rf x``, ``echo $(rm x)``, ``a > f && rm x`` all yield an
    ``rm`` segment. Leading ``NAME=value`` words are dropped, so ``FOO=1 rm x`` yields ``rm x``.
    """
    lexer = shlex.shlex(script.replace("\n", ";").replace("\r", ";"), posix=True, punctuation_chars=_SEGMENT_BREAKS)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unterminated quote: fall back to whitespace words
        tokens = script.split()
    segments: list[list[str]] = [[]]
    for token in tokens:
        if set(token) <= set(_SEGMENT_BREAKS):
            segments.append([])
        elif token != "$" and not (not segments[-1] and _ASSIGNMENT.match(token)):
            segments[-1].append(token)
    return [s for s in segments if s]


def _safe_exec(argv: Sequence[str]) -> bool:
    if not argv:
        return False
    name = argv[0].rsplit("/", 1)[-1]
    args = list(argv[1:])
    if name in _ALWAYS_SAFE:
        return True
    if name == "base64":
        return not any(a in ("-o", "--output") or a.startswith("--output=") or (a.startswith("-o") and a != "-o")
                       for a in args)
    if name == "find":
        return not any(a in _UNSAFE_FIND for a in args)
    if name == "rg":
        return not any(a in _UNSAFE_RG_FLAGS or any(a == o or a.startswith(f"{o}=") for o in _UNSAFE_RG_WITH_ARG)
                       for a in args)
    if name == "sed":
        return len(argv) <= 4 and len(args) >= 2 and args[0] == "-n" and bool(_SED_N_ARG.match(args[1]))
    return False


def is_known_safe_script(script: str) -> bool:
    """True when every plain command of ``script`` is known to be safe (see the module docstring)."""
    commands = plain_commands(script)
    return bool(commands) and all(_safe_exec(c) for c in commands or [])


def is_known_safe_command(argv: Sequence[str]) -> bool:
    """Codex's ``is_known_safe_command`` for an argv (see the module docstring)."""
    if _safe_exec(argv):
        return True
    if len(argv) == 3 and argv[0].rsplit("/", 1)[-1] in _SHELLS and argv[1] in ("-lc", "-c"):
        return is_known_safe_script(argv[2])
    return False
