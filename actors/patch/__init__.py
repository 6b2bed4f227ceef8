"""The patch wing: Codex's ``apply_patch`` format, parsed, planned against the files and written (pure: it
imports no other wing, knows no session; the turn's ``apply_patch`` tool decides what may be written).

``parse_patch(text)`` gives the hunks (``PatchParseError`` with Codex's text), ``plan_patch(hunks, cwd)`` the
``FileChange``s without writing (``PatchApplyError``), ``refused(changes, may_write)`` the paths a sandbox
refuses, and ``write_changes(changes)`` writes them and returns Codex's summary.
"""

from actors.patch._apply import FileChange, PatchApplyError, plan_patch, refused, write_changes
from actors.patch._parser import AddFile, DeleteFile, Hunk, PatchParseError, UpdateChunk, UpdateFile, parse_patch
from actors.patch._seek import seek_sequence

__all__ = [
    "AddFile",
    "DeleteFile",
    "FileChange",
    "Hunk",
    "PatchApplyError",
    "PatchParseError",
    "UpdateChunk",
    "UpdateFile",
    "parse_patch",
    "plan_patch",
    "refused",
    "seek_sequence",
    "write_changes",
]
