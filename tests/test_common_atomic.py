"""`myna_common.atomic`: a file written in place is whole or absent, and concurrent writers never share a name."""

import json
import os
import threading

import pytest

from myna_common.atomic import atomic_path, temporary_name, write_json, write_text


def test_write_json_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "result.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2, "b": [1, 2]})
    assert json.loads(path.read_text()) == {"a": 2, "b": [1, 2]}
    assert sorted(os.listdir(path.parent)) == ["result.json"]


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "notes.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as partial:
            with open(partial, "w") as f:
                f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_folder_is_replaced_whole(tmp_path):
    folder = tmp_path / "checkpoint-1"
    for content in ("first", "second"):
        with atomic_path(folder) as partial:
            os.makedirs(partial)
            with open(os.path.join(partial, "state.txt"), "w") as f:
                f.write(content)
    assert (folder / "state.txt").read_text() == "second"
    assert os.listdir(tmp_path) == ["checkpoint-1"]


def test_temporary_names_are_unique_and_keep_a_suffix(tmp_path):
    names = {temporary_name(str(tmp_path / "a.wav"), suffix=".wav") for _ in range(100)}
    assert len(names) == 100
    assert all(name.endswith(".tmp.wav") for name in names)


def test_concurrent_writers_of_one_path_all_succeed(tmp_path):
    path = tmp_path / "segment.json"
    errors = []

    def writer(k):
        try:
            for i in range(40):
                write_json(path, {"writer": k, "i": i})
        except Exception as error:  # noqa: BLE001 (collected and asserted below)
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(json.loads(path.read_text())) == {"writer", "i"}
    assert os.listdir(tmp_path) == ["segment.json"]
