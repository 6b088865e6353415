"""The `myna` command end to end on generated audio and tiny saved models: embed (npz and parquet, skipping bad
files), convert, info, and the help texts."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import myna_pipelines  # noqa: F401
from modeling_myna import MynaModel
from myna_pipelines.cli import find_audio_files, main
from transformers import pipeline

from .pipelines_support import save_tiny_model, tiny_config, write_audio
from .reference_vit import ReferenceMyna


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model"), variant="hybrid")


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """Three readable files in nested folders, two unreadable ones, and a file that is not audio."""
    root = tmp_path_factory.mktemp("music")
    (root / "sub" / "deeper").mkdir(parents=True)
    write_audio(root / "a.wav", 8.0, sampling_rate=22_050, seed=1)
    write_audio(root / "sub" / "b.flac", 5.0, sampling_rate=44_100, seed=2, channels=2)
    write_audio(root / "sub" / "deeper" / "c.mp3", 4.0, sampling_rate=44_100, seed=3)
    (root / "sub" / "bad.ogg").write_bytes(b"OggS but not really")
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture(scope="module")
def embedder(folder):
    return pipeline("music-embedding", model=folder, device="cpu")


def test_folders_expand_recursively_to_audio_files(music):
    names = [os.path.relpath(p, music) for p in find_audio_files([str(music)])]
    assert names == ["a.wav", "empty.wav", "sub/b.flac", "sub/bad.ogg", "sub/deeper/c.mp3"]
    assert find_audio_files([str(music / "notes.txt")]) == [str(music / "notes.txt")]  # named files are kept


def test_embed_a_folder_to_npz_skipping_unreadable_files(folder, music, embedder, tmp_path, capsys):
    output = tmp_path / "out" / "embeddings.npz"
    assert main(["embed", str(music), "--model", folder, "--output", str(output), "--device", "cpu"]) == 0

    saved = np.load(output)
    readable = [str(music / "a.wav"), str(music / "sub" / "b.flac"), str(music / "sub" / "deeper" / "c.mp3")]
    assert saved["paths"].tolist() == readable
    assert saved["skipped"].tolist() == [str(music / "empty.wav"), str(music / "sub" / "bad.ogg")]
    assert saved["embeddings"].shape == (3, 64) and saved["embeddings"].dtype == np.float32
    for row, path in zip(saved["embeddings"], readable):
        np.testing.assert_allclose(row, embedder(path), rtol=1e-5, atol=1e-6)
    out, err = capsys.readouterr()
    assert f"embedded 3 files (17.0 s of audio)" in out and str(output) in out
    assert "skipped 2 unreadable files" in err and "empty.wav: the file is empty" in err


def test_embed_a_timeline_to_parquet(folder, music, embedder, tmp_path):
    import pyarrow.parquet as pq

    files = [str(music / "a.wav"), str(music / "sub" / "b.flac")]
    output = tmp_path / "timeline.parquet"
    argv = ["embed", *files, "--model", folder, "--output", str(output), "--pooling", "none"]
    assert main(argv + ["--patch_mode", "square", "--batch_size", "1", "--device", "cpu"]) == 0

    table = pq.read_table(output)
    assert table.column_names == ["path", "start_time", "embedding"]
    expected = [embedder(path, pooling="none", patch_mode="square") for path in files]
    assert table["path"].to_pylist() == [files[0]] * 2 + [files[1]]  # 8 s: two chunks; 5 s: one
    np.testing.assert_allclose(table["start_time"].to_numpy(), [0.0, 96 * 512 / 16_000, 0.0])
    embeddings = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(embeddings, np.concatenate([e["embeddings"] for e in expected]), rtol=1e-5, atol=1e-6)


def test_embed_refuses_bad_requests_before_loading_anything(folder, music, tmp_path, capsys):
    existing = tmp_path / "taken.npz"
    existing.write_bytes(b"keep me")
    audio = str(music / "a.wav")
    cases = {
        "exists; pass --overwrite": ["embed", audio, "--model", folder, "--output", str(existing)],
        "unknown format '.csv'": ["embed", audio, "--model", folder, "--output", str(tmp_path / "x.csv")],
        "no audio files": ["embed", str(tmp_path / "nowhere"), "--model", folder, "--output", str(tmp_path / "x.npz")],
    }
    (tmp_path / "nowhere").mkdir()
    for message, argv in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


def test_embed_reports_when_nothing_could_be_read_or_loaded(folder, music, tmp_path, capsys):
    output = tmp_path / "none.npz"
    bad = [str(music / "empty.wav"), str(music / "sub" / "bad.ogg")]
    assert main(["embed", *bad, "--model", folder, "--output", str(output), "--device", "cpu"]) == 1
    assert not output.exists() and "none of the 2 files could be read" in capsys.readouterr().err

    missing_model = str(tmp_path / "no-model")
    assert main(["embed", str(music / "a.wav"), "--model", missing_model, "--output", str(output)]) == 2
    assert f"--model {missing_model}: no folder named {missing_model} here" in capsys.readouterr().err
    (tmp_path / "empty-model").mkdir()  # a folder that is not a model: transformers says which file is missing
    assert main(["embed", str(music / "a.wav"), "--model", str(tmp_path / "empty-model"), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "empty-model") in err and len(err.splitlines()) == 2


def test_info_describes_variant_parameters_and_patch_modes(folder, capsys):
    assert main(["info", folder]) == 0
    text = capsys.readouterr().out
    assert "variant         hybrid (square 16x16, vertical 128x2)" in text
    assert "patch modes     square, vertical, both (default both)" in text
    assert "embedding size  square 32, vertical 32, both 64" in text
    assert "chunk           96 frames = 3.072 s at 16000 Hz" in text

    assert main(["info", folder, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "MynaForContrastivePretraining" and info["variant"] == "hybrid"
    assert info["encoder_parameters"] == MynaModel(tiny_config("hybrid")).num_parameters()
    projection = 32 * 16 + 16  # the pre-training head stored with the encoder
    assert info["stored_parameters"] == info["encoder_parameters"] + projection


def test_info_lists_a_classifiers_labels(tmp_path, capsys):
    labels = {0: "calm", 1: "tense"}
    folder = save_tiny_model(tmp_path / "clf", "vertical", head="classification", num_labels=2, id2label=labels)
    assert main(["info", folder]) == 0
    text = capsys.readouterr().out
    assert "labels          2 (single_label_classification): calm, tense" in text
    assert "chunk           98 frames" in text  # the vertical model's chunk
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "myna info: error:" in capsys.readouterr().err


def test_convert_then_info_then_embed(tmp_path, music, capsys):
    torch.manual_seed(0)
    original = ReferenceMyna((16, 16), dim=32, depth=1, heads=1, dim_head=64, mlp_dim=64, num_outputs=8)
    torch.save(original.state_dict(), tmp_path / "myna-base.pth")
    output = str(tmp_path / "converted")
    argv = ["convert", "--checkpoint", str(tmp_path / "myna-base.pth"), "--variant", "base", "--output", output]
    assert main(argv) == 0
    assert "converted" in capsys.readouterr().out

    assert main(["info", output, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "base"
    embedding = pipeline("music-embedding", model=output, device="cpu")(str(music / "a.wav"))
    with torch.no_grad():  # the converted model embeds as the original encoder does
        spec = torch.rand(1, 128, 96) * 100
        torch.testing.assert_close(
            MynaModel.from_pretrained(output)(spec).pooler_output, original.encode(spec[:, None]), rtol=1e-5, atol=1e-5
        )
    assert embedding.shape == (32,)


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ["embed", "convert", "info"]:
        assert f"\n  {command} " in text
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: myna embed") and "--pooling {mean,none}" in text and "AUDIO [AUDIO ...]" in text
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert capsys.readouterr().out.startswith("usage: myna convert")
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe"])
    assert exit_info.value.code == 2 and "unknown command 'transcribe'. Commands: embed" in capsys.readouterr().err
    # Mistakes are one line, without argparse's usage block; `myna` alone shows the help.
    for argv, message in ((["embedd"], "myna: error: unknown command 'embedd'. Did you mean 'embed'?"),
                          (["embed", "a.wav"], "myna embed: error: the following arguments are required: --model")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert main([]) == 2 and capsys.readouterr().err.startswith("usage: myna")


def test_the_console_script_is_installed():
    script = shutil.which("myna", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "myna_pipelines.cli"]
    result = subprocess.run(command + ["info", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: myna info")


# ------------------------------------------------------------------------------------------ usability (issue 10)


def test_help_answers_without_importing_torch_or_transformers():
    # `myna --help` parses before the heavy imports: neither module is loaded, so it answers in well under a second.
    code = (
        "import sys; from myna_pipelines.cli import main\n"
        "for argv in (['--help'], ['embed', '--help'], ['info', '--help']):\n"
        "    try: main(argv)\n"
        "    except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_constants_written_out_for_speed_agree_with_their_sources():
    from modeling_myna.audio_utils import AUDIO_EXTENSIONS
    from myna_pipelines import base, cli

    assert cli.DEFAULT_BATCH_SIZE == base.DEFAULT_BATCH_SIZE and cli.AUDIO_EXTENSIONS == AUDIO_EXTENSIONS
    # The names training/arguments.py writes out so that pretrain.py --help does not import torch.
    from modeling_myna import VARIANTS
    from modeling_myna.configuration_myna import (
        DEFAULT_STATISTICS_TARGETS,
        INPUT_SCALES,
        MASK_RATIO_SCHEDULES,
        MASKING_POLICIES,
        MODEL_SIZES,
        STATISTICS_TARGETS,
    )
    from myna_training import arguments

    assert sorted(arguments.VARIANT_NAMES) == sorted(VARIANTS)
    assert arguments.MODEL_SIZE_NAMES == tuple(MODEL_SIZES)
    assert arguments.MASKING_POLICY_NAMES == tuple(MASKING_POLICIES)
    assert arguments.MASK_RATIO_SCHEDULE_NAMES == tuple(MASK_RATIO_SCHEDULES)
    assert arguments.INPUT_SCALE_NAMES == tuple(INPUT_SCALES)
    assert arguments.STATISTICS_TARGET_NAMES == tuple(STATISTICS_TARGETS)
    assert arguments.DEFAULT_STATISTICS_TARGET_NAMES == tuple(DEFAULT_STATISTICS_TARGETS)


def test_mistakes_are_one_line_with_a_suggestion(folder, music, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MYNA_DEBUG", raising=False)
    audio, output = str(music / "a.wav"), str(tmp_path / "x.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", audio, "--poolng", "none"])  # reported before the missing --model and --output
    assert exit_info.value.code == 2 and "unknown option --poolng. Did you mean '--pooling'?" in capsys.readouterr().err

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["embed", audio, "--model", folder, "--output", output, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "myna embed: error: --device cuda: no CUDA device is available" in err and "Traceback" not in err
    assert main(["embed", audio, "--model", folder, "--output", output, "--device", "tpu9"]) == 2
    assert "not a device name" in capsys.readouterr().err

    base = save_tiny_model(tmp_path / "base", variant="base")
    assert main(["embed", audio, "--model", base, "--output", output, "--patch_mode", "vertical"]) == 2
    assert "--patch_mode vertical: this model offers square" in capsys.readouterr().err
    assert not os.path.exists(output)

    with pytest.raises(ValueError, match="patch_mode vertical"):  # --debug: the exception itself
        main(["embed", audio, "--model", base, "--output", output, "--patch_mode", "vertical", "--debug"])


def test_embed_dedupes_inputs_and_reports_audio_seconds(folder, music, tmp_path, capsys):
    audio = str(music / "a.wav")
    same = os.path.join(str(music), "sub", "..", "a.wav")  # the same file under another name
    output = tmp_path / "once.npz"
    assert main(["embed", audio, audio, same, str(music / "sub" / "b.flac"), "--model", folder, "--output",
                 str(output), "--device", "cpu"]) == 0
    assert np.load(output)["paths"].tolist() == [audio, str(music / "sub" / "b.flac")]
    out, err = capsys.readouterr()
    assert "2 files named twice, embedded once" in err
    assert "13/13 audio s" in err and "2/2 files" in err  # the bar counts audio seconds and files
    assert "embedded 2 files (13.0 s of audio)" in out


def test_progress_moves_inside_a_long_file(folder, tmp_path):
    # A 40 s file in segments of one chunk: the bar advances chunk by chunk, not only when the file is done.
    from myna_pipelines.cli import AudioProgress

    path = str(tmp_path / "long.wav")
    write_audio(path, 40.0, sampling_rate=16_000, seed=4)
    embedder = pipeline("music-embedding", model=folder, device="cpu")
    progress = AudioProgress(embedder, [path])
    seen = []
    original_update = progress.bar.update
    progress.bar.update = lambda n: seen.append(n) or original_update(n)
    embedder(path, batch_size=1)
    progress.file_done(path)
    assert len(seen) >= 10 and all(0 < n <= 3.1 for n in seen[:-1])
    assert progress.bar.n == pytest.approx(40.0)
    progress.close()


def test_quiet_truthful_output_for_one_file_and_a_text_file_named_mp3(folder, tmp_path, capfd):
    # One file: "1 file"; a text file renamed .mp3: no decoder notes.
    one = write_audio(tmp_path / "one.wav", 4.0, sampling_rate=16_000)
    assert main(["embed", one, "--model", folder, "--output", str(tmp_path / "one.npz")]) == 0
    out, err = capfd.readouterr()
    assert "embedded 1 file (4.0 s of audio)" in out and "0/0" not in err
    fake = tmp_path / "notes.mp3"
    fake.write_text("hello, this is text\n" * 40)
    assert main(["embed", str(fake), "--model", folder, "--output", str(tmp_path / "none.npz")]) == 1
    err = capfd.readouterr().err
    assert "it is a text file" in err and "the file could not be read" in err
    assert "Illegal Audio-MPEG-Header" not in err and "resync" not in err.lower()  # fd 2: libsndfile's own prints


# ------------------------------------------------------------------------------------------ hardening the command


def test_a_clip_shorter_than_one_chunk_is_refused_alone_and_skipped_among_others(
    folder, music, tmp_path, capsys, monkeypatch
):
    # The page's rule (query_rules.py), in its words: one file alone is refused in one line; among others it is
    # skipped, listed at the end and recorded as skipped, and the rest is embedded. The command keeps freed memory
    # for its forwards (an opt-in of the library: precision.py).
    from myna_pipelines import precision
    from myna_pipelines.query_rules import QueryTooShortError, check_query_length

    malloc_calls = []
    monkeypatch.setattr(precision, "keep_freed_memory", lambda: malloc_calls.append(1) or True)

    short = write_audio(tmp_path / "clip.wav", 0.2, sampling_rate=16_000)
    with pytest.raises(QueryTooShortError) as rule:
        check_query_length(0.2, short, 95 * 512 / 16_000, use="an embedding")
    output = tmp_path / "alone.npz"
    assert main(["embed", short, "--model", folder, "--output", str(output)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"myna embed: {rule.value}"] and not output.exists()

    output = tmp_path / "mixed.npz"
    audio = str(music / "a.wav")
    assert main(["embed", audio, short, "--model", folder, "--output", str(output)]) == 0
    saved = np.load(output)
    assert saved["paths"].tolist() == [audio] and saved["skipped"].tolist() == [short]
    out, err = capsys.readouterr()
    assert "embedded 1 file (8.0 s of audio)" in out
    assert f"skipped: {rule.value}" in err and f"skipped 1 file shorter than one chunk (3.04 s): {short}" in err
    assert malloc_calls == [1]  # the run that embedded


def test_embed_help_lists_every_option_and_a_file_output_refuses_the_stores(folder, music, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    every, store = text.split("\nevery output (")[1].split("\nstore folder output only (--output FOLDER")
    for option in ("--timeline", "--num_workers", "--precision", "--shard_size", "--repair"):
        assert f"\n  {option} " in store and option not in every, option  # listed, under the store's heading
    assert "\n  --pooling " in every and "--pooling" not in store

    audio, output = str(music / "a.wav"), str(tmp_path / "x.npz")
    cases = {
        ("--timeline",): "--timeline applies only to a store folder output",
        ("--num_w", "2", "--shard_size=3"): "--num_workers, --shard_size apply only to a store folder output",
    }
    for extra, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["embed", audio, "--model", folder, "--output", output, *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"myna embed: error: {message}") and f"not to the file {output}" in err
    assert not os.path.exists(output)
