"""Codex's patch format (the ``apply_patch`` tool's input) parsed into hunks.

Contract (the format of ``codex-rs/apply-patch``, its Lark grammar and its leniencies, ported):
- A patch is ``*** Begin Patch``, one or more hunks, ``*** End Patch`` (markers may carry surrounding
  whitespace; the whole text is stripped first). A patch wrapped in a heredoc (``<<EOF`` / ``<<'EOF'`` /
  ``<<"EOF"`` first line, a last line ending in ``EOF``) is unwrapped, as Codex does for models that send one.
- Hunks: ``*** Add File: PATH`` followed by ``+line``s (the file's contents, each line ending in a newline);
  ``*** Delete File: PATH``; ``*** Update File: PATH``, an optional ``*** Move to: PATH``, then chunks.
- A chunk starts with ``@@`` or ``@@ CONTEXT`` (the first chunk of a hunk may omit it), followed by lines
  starting with `` `` (context: old and new), ``-`` (old only) or ``+`` (new only); an empty line is an empty
  context line; ``*** End of File`` ends a chunk that must match at the end of the file. Blank lines between
  chunks are skipped; a line starting with ``*`` ends the hunk.
- Errors are ``PatchParseError``, whose text is Codex's, word for word ("invalid patch: ..." or "invalid hunk
  at line N, ..."): the model reads it and has been trained on it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AddFile",
    "DeleteFile",
    "Hunk",
    "PatchParseError",
    "UpdateChunk",
    "UpdateFile",
    "parse_patch",
]

BEGIN_PATCH = "*** Begin Patch"
END_PATCH = "*** End Patch"
ADD_FILE = "*** Add File: "
DELETE_FILE = "*** Delete File: "
UPDATE_FILE = "*** Update File: "
MOVE_TO = "*** Move to: "
END_OF_FILE = "*** End of File"
CONTEXT = "@@ "
EMPTY_CONTEXT = "@@"
HEREDOC_STARTS = ("<<EOF", "<<'EOF'", '<<"EOF"')
#: A heredoc-wrapped patch has at least the two heredoc lines and the two patch markers.
MIN_HEREDOC_LINES = 4
#: The first hunk starts on line 2 (line 1 is ``*** Begin Patch``), as Codex numbers them.
FIRST_HUNK_LINE = 2


class PatchParseError(ValueError):
    """Raised when a patch does not follow the format; the text is what Codex says."""


@dataclass(frozen=True)
class AddFile:
    """Create ``path`` with ``contents``."""

    path: str
    contents: str


@dataclass(frozen=True)
class DeleteFile:
    """Delete ``path``."""

    path: str


@dataclass(frozen=True)
class UpdateChunk:
    """Replace ``old_lines`` (found after ``change_context``, if any) with ``new_lines``."""

    change_context: str | None
    old_lines: tuple[str, ...]
    new_lines: tuple[str, ...]
    #: The old lines must be found at the end of the file.
    is_end_of_file: bool = False


@dataclass(frozen=True)
class UpdateFile:
    """Edit ``path`` chunk by chunk (chunks in file order), then move it to ``move_path`` if set."""

    path: str
    move_path: str | None
    chunks: tuple[UpdateChunk, ...]


Hunk = AddFile | DeleteFile | UpdateFile


def parse_patch(text: str) -> list[Hunk]:
    """The hunks of ``text``; raises ``PatchParseError`` with Codex's message."""
    lines = _lines(text.strip())
    body = _body_lenient(lines)
    hunks: list[Hunk] = []
    line_number = FIRST_HUNK_LINE
    while body:
        hunk, used = _parse_hunk(body, line_number)
        hunks.append(hunk)
        line_number += used
        body = body[used:]
    return hunks


def _lines(text: str) -> list[str]:
    """Rust's ``str::lines``: split on ``\n``, drop one ``\r`` before it (``splitlines`` splits on more)."""
    if not text:
        return []
    return [line.removesuffix("\r") for line in text.split("\n")]


def _body_strict(lines: list[str]) -> list[str]:
    first = lines[0].strip() if lines else None
    last = lines[-1].strip() if lines else None
    if first == BEGIN_PATCH and last == END_PATCH and len(lines) >= 2:
        return lines[1:-1]
    if first != BEGIN_PATCH:
        raise PatchParseError("invalid patch: The first line of the patch must be '*** Begin Patch'")
    raise PatchParseError("invalid patch: The last line of the patch must be '*** End Patch'")


def _body_lenient(lines: list[str]) -> list[str]:
    try:
        return _body_strict(lines)
    except PatchParseError:
        if (len(lines) >= MIN_HEREDOC_LINES and lines[0] in HEREDOC_STARTS and lines[-1].endswith("EOF")):
            return _body_strict(lines[1:-1])
        raise


def _parse_hunk(lines: list[str], line_number: int) -> tuple[Hunk, int]:
    first = lines[0].strip()
    if first.startswith(ADD_FILE):
        contents: list[str] = []
        for line in lines[1:]:
            if not line.startswith("+"):
                break
            contents.append(line[1:] + "\n")
        return AddFile(first[len(ADD_FILE):], "".join(contents)), 1 + len(contents)
    if first.startswith(DELETE_FILE):
        return DeleteFile(first[len(DELETE_FILE):]), 1
    if first.startswith(UPDATE_FILE):
        return _parse_update(first[len(UPDATE_FILE):], lines, line_number)
    raise PatchParseError(
        f"invalid hunk at line {line_number}, '{first}' is not a valid hunk header. Valid hunk headers: "
        "'*** Add File: {path}', '*** Delete File: {path}', '*** Update File: {path}'"
    )


def _parse_update(path: str, lines: list[str], line_number: int) -> tuple[Hunk, int]:
    rest = lines[1:]
    used = 1
    move_path = None
    if rest and rest[0].startswith(MOVE_TO):
        move_path = rest[0][len(MOVE_TO):]
        rest = rest[1:]
        used += 1
    chunks: list[UpdateChunk] = []
    while rest:
        if not rest[0].strip():
            rest = rest[1:]
            used += 1
            continue
        if rest[0].startswith("*"):
            break
        chunk, chunk_lines = _parse_chunk(rest, line_number + used, allow_missing_context=not chunks)
        chunks.append(chunk)
        used += chunk_lines
        rest = rest[chunk_lines:]
    if not chunks:
        raise PatchParseError(f"invalid hunk at line {line_number}, Update file hunk for path '{path}' is empty")
    return UpdateFile(path, move_path, tuple(chunks)), used


def _parse_chunk(lines: list[str], line_number: int, *, allow_missing_context: bool) -> tuple[UpdateChunk, int]:
    if lines[0] == EMPTY_CONTEXT:
        context, start = None, 1
    elif lines[0].startswith(CONTEXT):
        context, start = lines[0][len(CONTEXT):], 1
    elif allow_missing_context:
        context, start = None, 0
    else:
        raise PatchParseError(
            f"invalid hunk at line {line_number}, Expected update hunk to start with a @@ context marker, "
            f"got: '{lines[0]}'"
        )
    if start >= len(lines):
        raise PatchParseError(f"invalid hunk at line {line_number + 1}, Update hunk does not contain any lines")
    old: list[str] = []
    new: list[str] = []
    parsed = 0
    end_of_file = False
    for line in lines[start:]:
        if line == END_OF_FILE:
            if parsed == 0:
                raise PatchParseError(
                    f"invalid hunk at line {line_number + 1}, Update hunk does not contain any lines"
                )
            end_of_file = True
            parsed += 1
            break
        marker = line[:1]
        if marker == "":
            old.append("")
            new.append("")
        elif marker == " ":
            old.append(line[1:])
            new.append(line[1:])
        elif marker == "+":
            new.append(line[1:])
        elif marker == "-":
            old.append(line[1:])
        else:
            if parsed == 0:
                raise PatchParseError(
                    f"invalid hunk at line {line_number + 1}, Unexpected line found in update hunk: '{line}'. "
                    "Every line should start with ' ' (context line), '+' (added line), or '-' (removed line)"
                )
            break  # the start of the next hunk
        parsed += 1
    return UpdateChunk(context, tuple(old), tuple(new), end_of_file), parsed + start
