"""`myna embed DIR --output store/`: the store's rows, resuming a killed run, changed, unreadable and too short files,
the `datasets` round trip, two torchrun processes writing the same store as one, decoding workers on one thread,
malloc left alone unless `myna embed` asks, and no loading bar from `load_model`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

import myna_pipelines  # noqa: F401
from myna_pipelines.cli import main
from myna_pipelines.cli import is_store_output
from myna_pipelines.library import embed_library
from myna_pipelines.store import EmbeddingStore

from .pipelines_support import save_tiny_model, write_audio


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), variant="hybrid")


def make_library(root, num_files: int = 5):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_files):
        write_audio(root / f"{i:02d}.wav", 4.0 + i, sampling_rate=22_050, seed=i)
    (root / "broken.flac").write_bytes(b"fLaC but not really")
    return root


def store_rows(path) -> dict[str, dict]:
    table = EmbeddingStore(str(path)).read_table()
    return {row["path"]: row for row in table.to_pylist()}


def test_store_output_is_a_folder_name(tmp_path):
    assert is_store_output(["x", "--output", "store/"]) and is_store_output(["--output=lib"])
    assert is_store_output(["--output", str(tmp_path)]) and is_store_output(["--output", "my.store/"])
    assert not is_store_output(["--output", "e.npz"]) and not is_store_output(["--output=t.parquet"])
    assert not is_store_output(["--output", "x.csv"])  # a file name: `myna embed` says the format is unknown


def test_store_rows_match_the_pipeline_and_list_unreadable_files(folder, tmp_path, capsys):
    music = make_library(tmp_path / "music", 3)
    store = tmp_path / "store"
    argv = ["embed", str(music), "--model", folder, "--output", str(store), "--timeline", "--num_workers", "1"]
    assert main(argv + ["--batch_size", "3", "--device", "cpu"]) == 0

    rows = store_rows(store)
    embedder = pipeline("music-embedding", model=folder, device="cpu")
    assert sorted(rows) == [str(music / f"{i:02d}.wav") for i in range(3)]
    for path, row in rows.items():
        timeline = embedder(path, pooling="none")
        np.testing.assert_allclose(row["embedding"], timeline["embeddings"].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.array(row["timeline"]), timeline["embeddings"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(row["start_times"], timeline["start_times"], atol=1e-6)
        assert row["duration"] == pytest.approx(sf.info(path).duration)
        assert row["num_chunks"] == len(timeline["start_times"]) and len(row["content_hash"]) == 32
        assert row["model"] == os.path.abspath(folder)
        assert json.loads(row["settings"])["patch_mode"] == "both" and len(row["embedding"]) == 64
    errors = EmbeddingStore(str(store)).errors()
    broken = str(music / "broken.flac")
    assert list(errors) == [broken] and "broken.flac" in errors[broken]["error"]
    out, err = capsys.readouterr()
    assert "embedded 3 files" in out and "1 unreadable file," in err
    assert main(argv) == 0  # again: nothing to do, said so
    assert f"nothing new to embed: 3 files already in the store -> {store}" in capsys.readouterr().out


def test_a_killed_run_resumes_and_changed_files_are_re_embedded(folder, tmp_path):
    music = make_library(tmp_path / "music", 5)
    files = sorted(str(p) for p in music.glob("*.wav"))
    store = str(tmp_path / "store")
    options = {"batch_size": 4, "num_workers": 0, "shard_size": 1, "progress": False}

    # A run that stopped after two files (shards of one file each), as a kill would leave it.
    first = embed_library(files[:2], store, folder, **options)
    assert first["embedded"] == 2 and len(EmbeddingStore(store).shard_files()) == 1  # compacted at the end
    before = store_rows(store)

    resumed = embed_library(files + [str(music / "broken.flac")], store, folder, **options)
    assert resumed["skipped"] == 2 and resumed["embedded"] == 3 and resumed["unreadable"] == 1
    after = store_rows(store)
    assert sorted(after) == files and all(after[p]["embedded_at"] == before[p]["embedded_at"] for p in before)

    # Nothing to do; the unreadable file is remembered, not decoded again.
    again = embed_library(files + [str(music / "broken.flac")], store, folder, **{**options, "num_workers": 1})
    assert (again["embedded"], again["skipped"], again["known_unreadable"]) == (0, 5, 1)

    # A changed file is re-embedded; a touched but unchanged one is not.
    write_audio(files[0], 6.0, sampling_rate=22_050, seed=99)
    os.utime(files[1], ns=(1, 1))
    changed = embed_library(files, store, folder, **options)
    assert changed["embedded"] == 1 and changed["skipped"] == 4
    final = store_rows(store)
    assert len(EmbeddingStore(store).read_table(latest=False)) == 5  # the superseded row was compacted away
    assert final[files[0]]["content_hash"] != after[files[0]]["content_hash"]
    assert not np.allclose(final[files[0]]["embedding"], after[files[0]]["embedding"])

    # A store holds one model's embeddings with one set of settings; --overwrite starts it again.
    with pytest.raises(ValueError, match="holds embeddings of .* pass --overwrite"):
        embed_library(files, store, folder, patch_mode="vertical", **options)
    vertical = embed_library(files, store, folder, patch_mode="vertical", overwrite=True, **options)
    assert vertical["embedded"] == 5 and len(store_rows(store)[files[2]]["embedding"]) == 32


def test_store_opens_with_datasets(folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    music = make_library(tmp_path / "music", 3)
    store = tmp_path / "store"
    embed_library([str(p) for p in music.iterdir()], str(store), folder, timeline=True, num_workers=0, progress=False)
    loaded = datasets.load_dataset("parquet", data_dir=str(store), cache_dir=str(tmp_path / "cache"))["train"]
    rows = store_rows(store)
    assert loaded.num_rows == 3
    for row in loaded:
        np.testing.assert_array_equal(np.array(row["embedding"], dtype=np.float32), rows[row["path"]]["embedding"])
        assert len(row["timeline"]) == row["num_chunks"] == len(row["start_times"])


def test_two_processes_write_the_same_store_as_one(folder, tmp_path):
    music = make_library(tmp_path / "music", 5)
    one = tmp_path / "one"
    assert main(["embed", str(music), "--model", folder, "--output", str(one), "--num_workers", "0"]) == 0

    two = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "myna_pipelines.cli", "embed", str(music), "--model", folder, "--output", str(two), "--num_workers", "0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr

    rows_one, rows_two = store_rows(one), store_rows(two)
    assert sorted(rows_one) == sorted(rows_two) == sorted(str(p) for p in music.glob("*.wav"))
    for path in rows_one:
        np.testing.assert_allclose(rows_two[path]["embedding"], rows_one[path]["embedding"], rtol=1e-5, atol=1e-6)
        for column in ("content_hash", "settings_key", "model_fingerprint", "duration", "num_chunks"):
            assert rows_two[path][column] == rows_one[path][column]
    assert list(EmbeddingStore(str(two)).errors()) == [str(music / "broken.flac")]
    assert len(EmbeddingStore(str(two)).shard_files()) == 1  # the two processes' shards merged


def test_a_store_of_another_front_end_is_refused_like_another_model(folder, tmp_path):
    # The same weights behind another front end (here the STFT hop): other spectrograms, other embeddings. The store's
    # settings key covers the front end, so the second run refuses instead of skipping "already embedded" files, and
    # an index of the store refuses queries through that front end.
    import shutil

    from myna_pipelines.search import build_index

    music = make_library(tmp_path / "music", 2)
    store = str(tmp_path / "store")
    options = {"batch_size": 4, "num_workers": 0, "progress": False}
    embed_library([str(music)], store, folder, **options)
    settings = json.loads(next(iter(store_rows(store).values()))["settings"])
    assert settings["front_end"] == {
        "sampling_rate": 16_000, "hop_length": 512, "n_fft": 2048, "num_mel_bins": 128, "mel_backend": "fft",
        "chunk_frames": 96, "hop_frames": None, "padding_value": 0.0,
    }
    other = tmp_path / "other-front-end"
    shutil.copytree(folder, other)
    config = json.loads((other / "preprocessor_config.json").read_text())
    (other / "preprocessor_config.json").write_text(json.dumps({**config, "hop_length": 256}))
    with pytest.raises(ValueError, match=r"the store .* holds embeddings of .*\"hop_length\": 512.*\"hop_length\": 256"):
        embed_library([str(music)], store, str(other), **options)
    index = build_index(store, str(tmp_path / "index"))
    with pytest.raises(ValueError, match=r"another front end .*\(hop_length: 512 -> 256\)"):
        index.search_audio(str(music / "00.wav"), model=str(other))
    assert index.search_audio(str(music / "00.wav"), k=1)[0]["path"] == str(music / "00.wav")


# ------------------------------------------------------------------------------------------ hardening the command


def test_a_track_shorter_than_one_chunk_is_skipped_listed_and_remembered(folder, tmp_path, capsys, monkeypatch):
    # The rule of query_rules.py: never embedded (no zero-padded row of silence), never an aborted run; listed at
    # the end, and recorded so that the next run does not decode it again. `myna embed` opts in to keeping freed
    # memory (precision.keep_freed_memory), the library call does not.
    from myna_pipelines import precision

    calls = []
    monkeypatch.setattr(precision, "keep_freed_memory", lambda: calls.append(1) or True)
    music = make_library(tmp_path / "music", 2)
    short = write_audio(music / "short.wav", 0.2, sampling_rate=16_000)
    store = tmp_path / "store"
    argv = ["embed", str(music), "--model", folder, "--output", str(store), "--num_workers", "0"]
    assert main(argv) == 0 and calls == [1]
    assert sorted(store_rows(store)) == [str(music / "00.wav"), str(music / "01.wav")]
    record = EmbeddingStore(str(store)).errors()[short]
    assert record["too_short"] and record["error"] == (
        f"`{short}` is 0.20 s long; an embedding needs at least one chunk, 3.04 s of audio. Use a longer clip."
    )
    out, err = capsys.readouterr()
    assert "embedded 2 files" in out and f"skipped: {record['error']}" in err
    listed = f"skipped 1 file shorter than one chunk (3.04 s): {short}"
    assert listed in err and "1 unreadable file," in err  # broken.flac, counted apart
    assert main(argv) == 0  # remembered, not decoded again, still listed
    out, err = capsys.readouterr()
    assert "nothing new to embed: 2 files already" in out and listed in err and "skipped:" not in err

    calls.clear()
    counts = embed_library([short], str(tmp_path / "library"), folder, num_workers=0, progress=False)
    assert counts["too_short"] == [short] and counts["embedded"] == 0 and calls == []


class _DecoderProbe(torch.utils.data.IterableDataset):
    """What a decoding worker's decoder sees: its thread count, torch's, and the pieces a long FLAC is read in."""

    def __init__(self, path: str):
        self.path = path

    def __iter__(self):
        from modeling_myna import audio_utils

        pieces, original = [], audio_utils._read_in_pieces
        audio_utils._read_in_pieces = lambda *args: pieces.append(args[-1]) or original(*args)
        try:
            audio_utils.load_audio(self.path)
        finally:
            audio_utils._read_in_pieces = original
        yield {
            "decode_threads": audio_utils.decode_threads(),
            "torch_threads": torch.get_num_threads(),
            "pieces": pieces,
        }


def test_decoding_workers_decode_on_one_thread(tmp_path, monkeypatch):
    # On a machine of 4 cores a long FLAC would decode in 4 pieces at once in every worker (oversubscribed next to
    # the model's threads); the library's worker set-up makes the decoder one piece, one thread.
    from modeling_myna import audio_utils
    from myna_pipelines.library import _worker_init

    monkeypatch.delenv("MYNA_DECODE_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(audio_utils, "PARALLEL_DECODE_MIN_SECONDS", 1.0)  # a 3 s file counts as long
    path = write_audio(tmp_path / "long.flac", 3.0, sampling_rate=16_000, channels=2)
    assert audio_utils.decode_threads() == 4  # what a worker would inherit without the set-up

    def probe(worker_init_fn):
        loader = torch.utils.data.DataLoader(
            _DecoderProbe(path), batch_size=None, num_workers=1, worker_init_fn=worker_init_fn,
            multiprocessing_context="fork",  # the monkeypatched cores travel to the worker
        )  # fmt: skip
        return next(iter(loader))

    assert probe(None)["pieces"] == [4]  # the probe sees the decoder's pieces
    assert probe(_worker_init) == {"decode_threads": 1, "torch_threads": 1, "pieces": []}
    assert "MYNA_DECODE_THREADS" not in os.environ  # set in the worker only


def test_load_model_draws_no_loading_bar_and_restores_the_setting(folder, capsys):
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from myna_pipelines.library import load_model

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as in a plain Python session (`myna` turns them off in logs)
    try:
        capsys.readouterr()
        model, _ = load_model(folder, "cpu")
        assert "Loading weights" not in capsys.readouterr().err and model.config.hidden_size == 32
        assert hf_logging.is_progress_bar_enabled()
        AutoModel.from_pretrained(folder)  # outside the helper, transformers' bar is as it was
        assert "Loading weights" in capsys.readouterr().err
    finally:
        if not enabled:
            hf_logging.disable_progress_bar()
