"""Atomic JSON writes: the whole file or the old one, never a half-written one."""

from __future__ import annotations

import json

import pytest

from offgrid_nb.jsonfile import write_json


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2}, indent=2)
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"old": True})
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})  # not JSON: fails before anything is written
    blocked = tmp_path / "dir.json"
    blocked.mkdir()  # os.replace cannot put a file over a folder
    with pytest.raises(IsADirectoryError):
        write_json(blocked, {"x": 1})
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "m.json"]
