"""The patch parser against Codex's format and its error texts (the model reads them, word for word)."""

from __future__ import annotations

import pytest

from actors.patch import AddFile, DeleteFile, PatchParseError, UpdateChunk, UpdateFile, parse_patch, seek_sequence


def test_every_hunk_kind_with_move_and_context() -> None:
    hunks = parse_patch(
        "*** Begin Patch\n"
        "*** Add File: path/add.py\n+abc\n+def\n"
        "*** Delete File: path/delete.py\n"
        "*** Update File: path/update.py\n*** Move to: path/update2.py\n@@ def f():\n-    pass\n+    return 123\n"
        "*** End Patch"
    )
    assert hunks == [
        AddFile("path/add.py", "abc\ndef\n"),
        DeleteFile("path/delete.py"),
        UpdateFile("path/update.py", "path/update2.py",
                   (UpdateChunk("def f():", ("    pass",), ("    return 123",)),)),
    ]


def test_first_chunk_may_omit_context_marker_and_an_empty_line_is_empty_context() -> None:
    hunks = parse_patch("*** Begin Patch\n*** Update File: f.py\n import foo\n+bar\n\n@@ x\n-y\n+z\n*** End Patch")
    assert hunks == [UpdateFile("f.py", None, (
        UpdateChunk(None, ("import foo", ""), ("import foo", "bar", "")),
        UpdateChunk("x", ("y",), ("z",)),
    ))]


def test_end_of_file_marker_and_heredoc_wrapper() -> None:
    hunks = parse_patch(
        "<<'EOF'\n*** Begin Patch\n*** Update File: a\n@@\n-x\n+y\n*** End of File\n*** End Patch\nEOF\n")
    assert hunks == [UpdateFile("a", None, (UpdateChunk(None, ("x",), ("y",), is_end_of_file=True),))]


@pytest.mark.parametrize(("text", "message"), [
    ("garbage", "invalid patch: The first line of the patch must be '*** Begin Patch'"),
    ("", "invalid patch: The first line of the patch must be '*** Begin Patch'"),
    ("*** Begin Patch\nbad", "invalid patch: The last line of the patch must be '*** End Patch'"),
    ("*** Begin Patch\n*** Update File: test.py\n*** End Patch",
     "invalid hunk at line 2, Update file hunk for path 'test.py' is empty"),
    ("*** Begin Patch\nbad\n*** End Patch",
     "invalid hunk at line 2, 'bad' is not a valid hunk header. Valid hunk headers: '*** Add File: {path}', "
     "'*** Delete File: {path}', '*** Update File: {path}'"),
    ("*** Begin Patch\n*** Update File: a\n@@\n-x\n@@\n*** End Patch",
     "invalid hunk at line 6, Update hunk does not contain any lines"),
    ("*** Begin Patch\n*** Update File: a\n@@\nx\n*** End Patch",
     "invalid hunk at line 4, Unexpected line found in update hunk: 'x'. Every line should start with ' ' "
     "(context line), '+' (added line), or '-' (removed line)"),
])
def test_errors_are_codex_texts(text: str, message: str) -> None:
    with pytest.raises(PatchParseError) as caught:
        parse_patch(text)
    assert str(caught.value) == message


def test_codex_fixture_patch_parses() -> None:
    # the patch the fake model sent to Codex 0.169 (tests/fixtures): Codex applied it as A, M, D
    hunks = parse_patch("*** Begin Patch\n*** Add File: new.txt\n+hello\n*** Update File: old.txt\n@@\n one\n-two\n"
                        "+TWO\n*** Delete File: gone.txt\n*** End Patch\n")
    assert [type(h).__name__ for h in hunks] == ["AddFile", "UpdateFile", "DeleteFile"]


def test_seek_sequence_passes_in_order() -> None:
    lines = ["foo   ", "  bar\t", "\u201cquoted\u201d \u2014 dash"]
    assert seek_sequence(lines, ["foo"], 0, False) == 0  # rstrip pass
    assert seek_sequence(lines, ["bar"], 0, False) == 1  # strip pass
    assert seek_sequence(lines, ['"quoted" - dash'], 0, False) == 2  # punctuation pass
    assert seek_sequence(lines, ["x", "y", "z", "w"], 0, False) is None  # longer than the file
    assert seek_sequence(lines, [], 2, False) == 2
    assert seek_sequence(["a", "b", "a"], ["a"], 0, True) == 2  # eof: from the end first
