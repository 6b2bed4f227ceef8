"""Finding a chunk's old lines in a file, with Codex's decreasing strictness.

``seek_sequence(lines, pattern, start, eof)`` returns the first index at or after ``start`` where ``pattern``
occurs in ``lines``, trying four passes in order: exact, ignoring trailing whitespace, ignoring surrounding
whitespace, and finally after mapping typographic dashes, quotes and odd spaces to ASCII (so a patch typed in
ASCII applies to a file with curly quotes). With ``eof`` the search starts where the pattern would end the
file. An empty pattern matches at ``start``; a pattern longer than the file never matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["seek_sequence"]

_PUNCTUATION = str.maketrans({
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),
    **dict.fromkeys("\u2018\u2019\u201a\u201b", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f", '"'),
    **dict.fromkeys("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
})


def _normalise(line: str) -> str:
    return line.strip().translate(_PUNCTUATION)


_PASSES: tuple[Callable[[str], str], ...] = (lambda s: s, str.rstrip, str.strip, _normalise)


def seek_sequence(lines: Sequence[str], pattern: Sequence[str], start: int, eof: bool) -> int | None:
    """Index of the first match of ``pattern`` in ``lines`` at or after ``start`` (see the module docstring)."""
    if not pattern:
        return start
    if len(pattern) > len(lines):
        return None
    first = len(lines) - len(pattern) if eof else start
    last = len(lines) - len(pattern)
    for key in _PASSES:
        wanted = [key(p) for p in pattern]
        for i in range(first, last + 1):
            if all(key(lines[i + j]) == wanted[j] for j in range(len(pattern))):
                return i
    return None
