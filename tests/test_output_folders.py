"""Every command that writes a folder refuses, before any work, a file, a folder of music (whatever the flags) and a
non-empty folder that is not its own (unless told: --overwrite_output_dir for the scripts, --overwrite for `myna`);
the converter, `myna embed` (store), `myna index`, pre-training's run folder, probe.py and export.py; and `myna embed`
writes no output, folder or file, inside a folder it embeds. Fine-tuning's run identity is tested in
test_training_finetune.py."""

import json
import os

import pytest

from myna_common.cli_support import UsageError, check_output_folder
from myna_pipelines.cli import main as myna


@pytest.fixture
def music(tmp_path):
    folder = tmp_path / "music"
    (folder / "album").mkdir(parents=True)
    (folder / "album" / "track.flac").write_bytes(b"fLaC")
    return folder


def test_check_output_folder_says_what_each_folder_is(tmp_path, music):
    assert check_output_folder(str(tmp_path / "new")) == "new"
    (tmp_path / "empty").mkdir()
    assert check_output_folder(str(tmp_path / "empty")) == "new"
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_output_folder(str(tmp_path / "file.txt"))
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=r"holds audio \(album/track.flac\)"):
            check_output_folder(str(music), overwrite=overwrite, own=lambda _: True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match=r"not empty \(notes.txt\) .* pass --overwrite"):
        check_output_folder(str(other))
    assert check_output_folder(str(other), overwrite=True) == "overwrite"
    assert check_output_folder(str(other), own=lambda p: True) == "own"
    (tmp_path / "cached" / "cache").mkdir(parents=True)
    assert check_output_folder(str(tmp_path / "cached"), ignore=("cache",)) == "new"


def test_converter_refuses_a_non_empty_folder_before_reading_the_checkpoint(tmp_path, music):
    from modeling_myna.convert_original_checkpoint import main as convert

    done = tmp_path / "myna-hybrid"
    done.mkdir()
    (done / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not empty \(it holds a model \(config.json\)\): .* --overwrite"):
        convert(["--checkpoint", "missing.pth", "--variant", "hybrid", "--output", str(done)])
    with pytest.raises(ValueError, match="holds audio"):
        convert(["--checkpoint", "missing.pth", "--variant", "hybrid", "--output", str(music), "--overwrite"])
    with pytest.raises(FileNotFoundError, match="no checkpoint at missing.pth"):  # told: goes on to the checkpoint
        convert(["--checkpoint", "missing.pth", "--variant", "hybrid", "--output", str(done), "--overwrite"])


def test_myna_embed_never_turns_a_music_folder_into_a_store(tmp_path, music, capsys):
    before = sorted(p.name for p in music.rglob("*"))
    for output, message in ((music, "is music, a folder being embedded"), (music / "store", "is inside")):
        code = myna(["embed", str(music), "--model", "no-model", "--output", str(output), "--overwrite"])
        assert code == 2 and message.replace("music, ", f"{music}, ") in capsys.readouterr().err
    assert sorted(p.name for p in music.rglob("*")) == before
    other = tmp_path / "papers"
    other.mkdir()
    (other / "thesis.pdf").write_bytes(b"%PDF")
    assert myna(["embed", str(music), "--model", "no-model", "--output", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not empty (thesis.pdf) and holds no store" in err and "--overwrite" in err and len(err.splitlines()) == 2


def test_myna_embed_never_writes_a_file_into_a_folder_it_embeds(tmp_path, music, capsys):
    # A single output file, too: --output music/sub/x.parquet or music/emb.npz would leave embeddings in the music.
    (music / "sub").mkdir()
    before = sorted(p.name for p in music.rglob("*"))
    for output in (music / "sub" / "x.parquet", music / "emb.npz"):
        code = myna(["embed", str(music), "--model", "no-model", "--output", str(output), "--overwrite"])
        err = capsys.readouterr().err.splitlines()
        assert code == 2 and err[0] == (
            f"myna embed: error: --output {output} is inside {music}, a folder being embedded: myna embed never "
            f"writes into the music it reads. Name a file beside it, e.g. --output "
            f"{os.path.join(os.path.relpath(tmp_path), output.name)}"
        )
    assert sorted(p.name for p in music.rglob("*")) == before
    # A file beside the folder goes on (to the next check: here, the missing model).
    assert myna(["embed", str(music), "--model", "no-model", "--output", str(tmp_path / "emb.npz")]) == 2
    assert "--model no-model: no folder named no-model" in capsys.readouterr().err


def test_store_overwrite_removes_only_the_stores_own_folders(tmp_path):
    from myna_pipelines.store import EmbeddingStore

    store = EmbeddingStore(str(tmp_path))
    store.write_metadata({"model": "m"})
    (tmp_path / "data").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    assert EmbeddingStore.is_store(str(tmp_path))
    store.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_myna_index_output_that_is_a_file_or_another_folder(tmp_path, capsys):
    song = tmp_path / "song.flac"
    song.write_bytes(b"fLaC")
    assert myna(["index", str(tmp_path / "store"), "--output", str(song)]) == 2
    err = capsys.readouterr().err
    assert f"--output {song} is a file, not a folder" in err and "Errno" not in err
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{}")
    assert myna(["index", str(tmp_path / "store"), "--output", str(tmp_path / "index")]) == 2
    assert "holds an index; pass --overwrite" in capsys.readouterr().err


def test_pretraining_never_writes_into_music(music):
    from myna_training.run_folder import check_new_run

    with pytest.raises(ValueError, match="holds audio"):
        check_new_run(str(music), overwrite=True)


def test_probe_and_export_refuse_folders_that_are_not_theirs(tmp_path):
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def script(name):
        spec = importlib.util.spec_from_file_location(f"_{name}", os.path.join(root, "evaluation", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    probe, export = script("probe"), script("export")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "results.json").write_text(json.dumps({"model": "/models/another"}))
    _, _, _, report_args = probe.parse_arguments(["--model", "/models/mine", "--output_dir", str(evaluation)])
    with pytest.raises(ValueError, match=r"evaluation of another model \(/models/another\).*--overwrite_output_dir"):
        probe.check_output_dir(report_args, "/models/mine")
    probe.check_output_dir(report_args, "/models/another")  # its own: the cache is reused, the results replaced
    with pytest.raises(ValueError, match="not empty .*--overwrite_output_dir"):
        export.main(["--model", str(tmp_path), "--probe", "p.pt", "--output_dir", str(evaluation)])
