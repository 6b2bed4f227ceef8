"""Turning parsed hunks into file changes, checking them against what may be written, and writing them.

Contract:
- ``plan_patch(hunks, cwd)`` reads the files the hunks touch (relative paths resolve against ``cwd``) and
  computes every change before anything is written, hunk after hunk over an in-memory view (a second hunk on
  the same file sees the first one's result). It raises ``PatchApplyError`` with Codex's text ("Failed to
  find expected lines in PATH:\\n...", "Failed to read PATH: ...") when a hunk does not apply.
- Update semantics are Codex's: the file is split on ``\\n`` (a final newline does not make an extra line);
  each chunk's ``@@`` context line, then its old lines, are found with ``seek_sequence`` from where the
  previous chunk ended; a chunk whose old lines end in an empty line is retried without it; a chunk with no
  old lines appends at the end; the result always ends with a newline.
- ``refused(changes, may_write)`` lists the paths (a move's destination included) that ``may_write`` refuses:
  callers check it before writing, so a refused patch writes nothing.
- ``write_changes(changes)`` writes them in order (parents created, a move writes the destination then removes
  the source) and returns Codex's summary ("Success. Updated the following files:" then ``A``/``M``/``D``
  lines, paths as the patch wrote them). A failing write raises ``PatchApplyError``; changes already written
  stay written, as with Codex.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from actors.patch._parser import AddFile, DeleteFile, Hunk, UpdateChunk
from actors.patch._seek import seek_sequence

__all__ = ["FileChange", "PatchApplyError", "plan_patch", "refused", "write_changes"]

ChangeKind = Literal["add", "delete", "update"]
#: Most bytes of a unified diff carried in a change (events are logged; a huge file must not bloat the log).
MAX_DIFF_BYTES = 64 * 1024


class PatchApplyError(Exception):
    """Raised when a parsed patch cannot be applied (missing file, lines not found, a failed write)."""


@dataclass(frozen=True)
class FileChange:
    """One file's change: what it was, what it becomes, where it goes."""

    #: Absolute path the change applies to (the source of a move).
    path: Path
    #: The path as the patch wrote it (for the summary the model reads).
    display: str
    kind: ChangeKind
    #: Contents before (None for an add).
    old_content: str | None
    #: Contents after (None for a delete).
    new_content: str | None
    #: Absolute destination of a move, if any.
    move_path: Path | None = None
    #: The destination as the patch wrote it.
    move_display: str | None = None

    def unified_diff(self, max_bytes: int = MAX_DIFF_BYTES) -> str:
        """The change as a unified diff (``/dev/null`` for an add's source or a delete's target), bounded."""
        before = (self.old_content or "").splitlines(keepends=True)
        after = (self.new_content or "").splitlines(keepends=True)
        source = "/dev/null" if self.kind == "add" else str(self.path)
        target = "/dev/null" if self.kind == "delete" else str(self.move_path or self.path)
        text = "".join(difflib.unified_diff(before, after, source, target, n=1))
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= max_bytes:
            return text
        return data[:max_bytes].decode("utf-8", "ignore") + f"\n[... {len(data) - max_bytes} bytes of diff omitted]\n"


def _io_text(exc: OSError) -> str:
    # Codex prints Rust's io::Error: "No such file or directory (os error 2)"
    return f"{exc.strerror or exc} (os error {exc.errno})" if exc.errno else str(exc)


class _View:
    """The file system as the hunks so far left it (reads fall through to the disk)."""

    def __init__(self) -> None:
        self._files: dict[Path, str | None] = {}

    def read(self, path: Path, context: str) -> str:
        if path in self._files:
            content = self._files[path]
            if content is None:
                raise PatchApplyError(f"{context} {path}: No such file or directory (os error 2)")
            return content
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PatchApplyError(f"{context} {path}: {_io_text(exc)}") from exc
        except UnicodeDecodeError as exc:
            raise PatchApplyError(f"{context} {path}: stream did not contain valid UTF-8") from exc

    def set(self, path: Path, content: str | None) -> None:
        self._files[path] = content


def plan_patch(hunks: Sequence[Hunk], cwd: Path) -> list[FileChange]:
    """Every change of ``hunks``, computed against the files under ``cwd``; nothing is written."""
    view = _View()
    changes: list[FileChange] = []
    for hunk in hunks:
        path = _resolve(cwd, hunk.path)
        if isinstance(hunk, AddFile):
            changes.append(FileChange(path, hunk.path, "add", None, hunk.contents))
            view.set(path, hunk.contents)
        elif isinstance(hunk, DeleteFile):
            old = view.read(path, "Failed to read")
            changes.append(FileChange(path, hunk.path, "delete", old, None))
            view.set(path, None)
        else:
            old = view.read(path, "Failed to read file to update")
            new = _apply_chunks(old, path, hunk.chunks)
            move = _resolve(cwd, hunk.move_path) if hunk.move_path else None
            changes.append(FileChange(path, hunk.path, "update", old, new, move, hunk.move_path))
            if move is not None:
                view.set(path, None)
            view.set(move or path, new)
    return changes


def _resolve(cwd: Path, path: str) -> Path:
    """``path`` against ``cwd``, with ``.`` and ``..`` folded (symlinks are left to the writability check)."""
    return Path(os.path.normpath(cwd / path))


def _split(content: str) -> list[str]:
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line (as `diff` counts)
    return lines


def _apply_chunks(content: str, path: Path, chunks: Sequence[UpdateChunk]) -> str:
    lines = _split(content)
    replacements: list[tuple[int, int, Sequence[str]]] = []
    index = 0
    for chunk in chunks:
        if chunk.change_context is not None:
            found = seek_sequence(lines, [chunk.change_context], index, False)
            if found is None:
                raise PatchApplyError(f"Failed to find context '{chunk.change_context}' in {path}")
            index = found + 1
        if not chunk.old_lines:
            at = len(lines) - 1 if lines and lines[-1] == "" else len(lines)
            replacements.append((at, 0, chunk.new_lines))
            continue
        pattern: Sequence[str] = chunk.old_lines
        new: Sequence[str] = chunk.new_lines
        start = seek_sequence(lines, pattern, index, chunk.is_end_of_file)
        if start is None and pattern[-1] == "":
            pattern = pattern[:-1]
            if new and new[-1] == "":
                new = new[:-1]
            start = seek_sequence(lines, pattern, index, chunk.is_end_of_file)
        if start is None:
            old_text = "\n".join(chunk.old_lines)
            raise PatchApplyError(f"Failed to find expected lines in {path}:\n{old_text}")
        replacements.append((start, len(pattern), new))
        index = start + len(pattern)
    replacements.sort(key=lambda r: r[0])
    for start, length, new in reversed(replacements):
        lines[start:start + length] = list(new)
    if not lines or lines[-1] != "":
        lines.append("")
    return "\n".join(lines)


def refused(changes: Iterable[FileChange], may_write: Callable[[Path], bool]) -> list[Path]:
    """The paths among ``changes`` (move destinations included) that ``may_write`` refuses, in order."""
    out: list[Path] = []
    for change in changes:
        for path in (change.path, change.move_path):
            if path is not None and path not in out and not may_write(path):
                out.append(path)
    return out


def write_changes(changes: Sequence[FileChange]) -> str:
    """Write ``changes`` to disk in order; returns Codex's summary of what was added, modified, deleted."""
    added: list[str] = []
    modified: list[str] = []
    deleted: list[str] = []
    for change in changes:
        if change.kind == "add":
            _write(change.path, change.new_content or "")
            added.append(change.display)
        elif change.kind == "delete":
            _step(f"Failed to delete file {change.path}", os.remove, change.path)
            deleted.append(change.display)
        elif change.move_path is not None:
            _write(change.move_path, change.new_content or "")
            _step(f"Failed to remove original {change.path}", os.remove, change.path)
            modified.append(change.move_display or str(change.move_path))
        else:
            _write(change.path, change.new_content or "")
            modified.append(change.display)
    lines = ["Success. Updated the following files:"]
    lines += [f"A {p}" for p in added] + [f"M {p}" for p in modified] + [f"D {p}" for p in deleted]
    return "\n".join(lines) + "\n"


def _write(path: Path, content: str) -> None:
    if path.parent != path:
        _step(f"Failed to create parent directories for {path}", os.makedirs, path.parent, exist_ok=True)
    _step(f"Failed to write file {path}", path.write_text, content, encoding="utf-8")


def _step(context: str, action: Callable[..., object], *args: object, **kwargs: object) -> None:
    try:
        action(*args, **kwargs)
    except OSError as exc:
        raise PatchApplyError(f"{context}: {_io_text(exc)}") from exc
