"""Planning and writing patches on real files in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.patch import PatchApplyError, parse_patch, plan_patch, refused, write_changes


def _apply(root: Path, patch: str) -> str:
    return write_changes(plan_patch(parse_patch(patch), root))


def test_add_update_delete_move_on_disk(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "gone.txt").write_text("bye\n")
    (tmp_path / "src.py").write_text("def f():\n    pass\n")
    summary = _apply(tmp_path, (
        "*** Begin Patch\n*** Add File: sub/new.txt\n+hello\n*** Update File: old.txt\n@@\n one\n-two\n+TWO\n"
        "*** Delete File: gone.txt\n*** Update File: src.py\n*** Move to: pkg/dst.py\n@@ def f():\n-    pass\n"
        "+    return 1\n*** End Patch\n"))
    assert summary == ("Success. Updated the following files:\nA sub/new.txt\nM old.txt\nM pkg/dst.py\n"
                       "D gone.txt\n")
    assert (tmp_path / "sub/new.txt").read_text() == "hello\n"
    assert (tmp_path / "old.txt").read_text() == "one\nTWO\nthree\n"
    assert not (tmp_path / "gone.txt").exists()
    assert not (tmp_path / "src.py").exists()
    assert (tmp_path / "pkg/dst.py").read_text() == "def f():\n    return 1\n"


def test_pure_addition_appends_and_result_ends_with_newline(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    _apply(tmp_path, "*** Begin Patch\n*** Update File: a.txt\n@@\n+y\n*** End Patch")
    assert (tmp_path / "a.txt").read_text() == "x\ny\n"


def test_two_hunks_on_one_file_apply_in_sequence(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1\n2\n3\n")
    _apply(tmp_path, "*** Begin Patch\n*** Update File: a.txt\n@@\n-1\n+one\n*** Update File: a.txt\n@@\n-one\n"
                     "+uno\n*** End Patch")
    assert (tmp_path / "a.txt").read_text() == "uno\n2\n3\n"


def test_lines_not_found_is_codex_text_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\n")
    patch = "*** Begin Patch\n*** Add File: b.txt\n+b\n*** Update File: a.txt\n@@\n-beta\n+gamma\n*** End Patch"
    with pytest.raises(PatchApplyError) as caught:
        plan_patch(parse_patch(patch), tmp_path)
    assert str(caught.value) == f"Failed to find expected lines in {tmp_path / 'a.txt'}:\nbeta"
    assert not (tmp_path / "b.txt").exists()


def test_missing_files_are_codex_io_texts(tmp_path: Path) -> None:
    missing = r"^Failed to read .*nope\.txt: No such file or directory \(os error 2\)$"
    with pytest.raises(PatchApplyError, match=missing):
        plan_patch(parse_patch("*** Begin Patch\n*** Delete File: nope.txt\n*** End Patch"), tmp_path)
    with pytest.raises(PatchApplyError, match=r"^Failed to read file to update .*nope\.txt: No such file"):
        plan_patch(parse_patch("*** Begin Patch\n*** Update File: nope.txt\n@@\n-a\n+b\n*** End Patch"), tmp_path)


def test_refused_lists_sources_and_move_destinations(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    changes = plan_patch(parse_patch(
        "*** Begin Patch\n*** Update File: in.txt\n*** Move to: /elsewhere/out.txt\n@@\n-a\n+b\n*** End Patch"),
        tmp_path)
    assert refused(changes, lambda p: tmp_path in p.parents) == [Path("/elsewhere/out.txt")]
    assert changes[0].unified_diff().startswith(f"--- {tmp_path / 'in.txt'}\n+++ /elsewhere/out.txt\n")
