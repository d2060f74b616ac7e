"""Grouped writes (pipelines/storage.py `atomic_write_all`, docs/decisions.md "Grouped fsyncs"):
several files written with one round of fsyncs are each whole or absent wherever the process is
killed, appear in the order given, and are private; a write that fails leaves nothing behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import stat

import fsspec
import pytest

from pipelines import storage
from pipelines.state import StateStore

FILES = {"a/one.bin": b"1" * 70_000, "a/two.json": b'{"two": 2}', "b/c/three.parquet": b"3" * 10}


def _write_killed(root: str, step: int) -> None:
    os.environ[storage.KILL_AFTER_WRITES] = str(step)
    StateStore(root).write_all(FILES)


def test_a_group_killed_at_any_step_leaves_a_prefix_of_whole_files(tmp_path):
    forks = multiprocessing.get_context("fork")
    kills = 0
    for step in range(1, 20):
        root = tmp_path / f"k{step}"
        child = forks.Process(target=_write_killed, args=(str(root), step))
        child.start()
        child.join(timeout=60)
        present = [name for name in FILES if (root / name).exists()]
        assert present == list(FILES)[: len(present)], (step, present)  # renamed in the order given
        for name in present:
            assert (root / name).read_bytes() == FILES[name], (step, name)
        if child.exitcode == 0:
            assert present == list(FILES)
            break
        assert child.exitcode == -signal.SIGKILL, (step, child.exitcode)
        kills += 1
    else:
        pytest.fail("the group never completed")
    # A temporary file written per file, then a rename between files, then the end.
    assert kills == 2 * len(FILES), kills
    assert StateStore(str(root)).listdir("a") == ["one.bin", "two.json"]  # no temporary left visible
    for name in FILES:
        assert stat.S_IMODE((root / name).stat().st_mode) == storage.FILE_MODE
    assert stat.S_IMODE((root / "b" / "c").stat().st_mode) == storage.FOLDER_MODE


def test_a_group_that_fails_leaves_no_file_and_no_temporary(tmp_path):
    fs = fsspec.filesystem("file")
    (tmp_path / "there").mkdir()
    with pytest.raises(FileNotFoundError):
        storage.atomic_write_all(fs, [(str(tmp_path / "there" / "x"), b"x"), (str(tmp_path / "missing" / "y"), b"y")])
    assert list((tmp_path / "there").iterdir()) == []


def test_once_keeps_what_is_archived(tmp_path):
    store = StateStore(str(tmp_path))
    store.write_all({"archive/f": b"first"}, once=True)
    store.write_all({"archive/f": b"second", "archive/g": b"g"}, once=True)
    assert (tmp_path / "archive" / "f").read_bytes() == b"first"
    assert (tmp_path / "archive" / "g").read_bytes() == b"g"


def test_a_file_the_store_holds_already_gets_a_second_name_not_a_copy(tmp_path):
    store = StateStore(str(tmp_path))
    store.write("made/f", b"bytes")
    # Left by a killed run: other bytes under the name (never counted: no record named them).
    store.write("sent/f/data", b"other")
    store.write_all({"sent/f/data": b"bytes", "sent/f/trigger": b"t"}, same_as={"sent/f/data": "made/f"})
    made, kept = (tmp_path / "made" / "f").stat(), (tmp_path / "sent" / "f" / "data").stat()
    assert kept.st_ino == made.st_ino and made.st_nlink == 2
    assert (tmp_path / "sent" / "f" / "trigger").read_bytes() == b"t"
    # Again, as a run that died after the link does: nothing changes, and no temporary is left.
    store.write_all({"sent/f/data": b"bytes"}, same_as={"sent/f/data": "made/f"})
    assert (tmp_path / "sent" / "f" / "data").stat().st_ino == made.st_ino
    assert sorted(os.listdir(tmp_path / "sent" / "f")) == ["data", "trigger"]
