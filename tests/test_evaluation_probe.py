"""The evaluation command end to end on a generated task, and the protocol's selection by validation."""

import json
import os

import datasets
import numpy as np
import pytest
import torch

from modeling_myna import MynaConfig, MynaModel
from myna_evaluation.grid import GridSettings, ProbeData, probe_grid, train_grid
from myna_evaluation.probe import choose_and_test, main, parse_layers, probe_candidates, split_outputs
from myna_evaluation.scoring import SINGLE_LABEL, compute_metrics
from myna_evaluation.tasks import TaskSpec




pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_selection_is_by_validation_even_when_test_disagrees():
    """Test labels are the flip of the rule that holds on train and validation: the probe validation prefers is
    the worst on test, so a protocol peeking at test would report a different (higher) number."""
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=generator)
    tensors = {}
    for prefix, tracks in (("train", 60), ("valid", 40), ("test", 40)):
        x = torch.randn(tracks * 2, 8, generator=generator)
        track = torch.arange(tracks).repeat_interleave(2)
        rule = ((x @ direction).view(tracks, 2).mean(1) > 0).long()
        tensors.update(
            {f"{prefix}_x": x, f"{prefix}_track": track, f"{prefix}_y": 1 - rule if prefix == "test" else rule}
        )
    data = ProbeData(**tensors)
    spec = TaskSpec("toy", SINGLE_LABEL, ("no", "yes"), "myna_accuracy", "accuracy", (("Toy", "accuracy"),))
    results = train_grid(
        data,
        SINGLE_LABEL,
        "myna_accuracy",
        spec.label_names,
        probe_grid(fast=True),
        GridSettings(max_epochs=8, patience=8, keep_states="all"),
    )
    chosen, valid_metrics, test_metrics = choose_and_test(spec, data, results)
    assert chosen.valid_score == max(r.valid_score for r in results)
    assert valid_metrics["accuracy"] == pytest.approx(chosen.valid_score)
    test_scores = [
        compute_metrics(spec, split_outputs(data, r, "test"), data.test_y.numpy())["accuracy"] for r in results
    ]
    assert test_metrics["accuracy"] == pytest.approx(test_scores[results.index(chosen)])
    assert test_metrics["accuracy"] < max(test_scores)
    assert valid_metrics["accuracy"] > 0.7 and test_metrics["accuracy"] < 0.3


def test_the_layer_is_chosen_on_validation_even_when_test_disagrees():
    """Three layers over the same tracks and labels: 0 is noise; 1 follows the labels on train and validation and
    their flip on test; 2 follows them weakly everywhere. Validation picks layer 1, which is the worst on test: a
    choice by test score would report layer 2."""
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(8, generator=generator)
    labels = {prefix: torch.randint(0, 2, (tracks,), generator=generator)
              for prefix, tracks in (("train", 60), ("valid", 40), ("test", 40))}  # fmt: skip

    def layer_data(strength: float, flip_test: bool) -> ProbeData:
        tensors = {}
        for prefix, y in labels.items():
            sign = (1 - 2 * y if flip_test and prefix == "test" else 2 * y - 1).float().repeat_interleave(2)
            noise = torch.randn(len(sign), 8, generator=generator)
            tensors.update({f"{prefix}_x": noise + strength * sign[:, None] * direction,
                            f"{prefix}_track": torch.arange(len(y)).repeat_interleave(2), f"{prefix}_y": y})  # fmt: skip
        return ProbeData(**tensors)

    layers = {0: layer_data(0.0, False), 1: layer_data(2.0, True), 2: layer_data(0.25, False)}
    spec = TaskSpec("toy", SINGLE_LABEL, ("no", "yes"), "myna_accuracy", "accuracy", (("Toy", "accuracy"),))
    settings = GridSettings(max_epochs=8, patience=8)
    candidates = [("default", layer) for layer in layers]
    chosen, data, results, grids = probe_candidates(
        spec, candidates, lambda c: layers[c[1]], probe_grid(fast=True), settings, progress=False
    )
    best_valid = {c: max(r.valid_score for r in grid) for c, grid in grids.items()}
    assert chosen == ("default", 1) and data is layers[1]
    assert best_valid[chosen] == max(best_valid.values()) > 0.9
    test_scores = {c: choose_and_test(spec, layers[c[1]], grid)[2]["accuracy"] for c, grid in grids.items()}
    assert test_scores[chosen] < 0.2 and max(test_scores, key=test_scores.get) == ("default", 2)


def test_layers_argument_names_what_the_model_has():
    assert parse_layers("last", 13) is None and parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("12, 4,-1", 13) == [4, 12]
    with pytest.raises(ValueError, match=r"--layers 0,3: this model has layers 0\.\.2 .*not 3"):
        parse_layers("0,3", 3)


def test_the_command_on_a_generated_task_ends_with_the_table(tiny_myna_folder, tmp_path, capsys, monkeypatch):
    # Generated clips go to this test's folder, not the user's datasets cache.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    output_dir = tmp_path / "report"
    main(
        [
            "--model",
            tiny_myna_folder,
            "--tasks",
            "synthetic-style",
            "--synthetic_sizes",
            "20,10,10",
            "--synthetic_duration",
            "6",
            "--fast",
            "--max_epochs",
            "6",
            "--output_dir",
            str(output_dir),
            "--progress",
            "false",
            "--num_threads",
            "1",
        ]
    )
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-12] == "Probe protocol: last layer, mean pooling (the paper's); fast subset (8 probes)."
    assert printed[-10].startswith(
        "| Model | MTT AUC | MTT AP | GTZAN | GS | Emo A | Emo V | Avg. | Syn style | Avg. (run) |"
    )
    row = printed[-8].split(" | ")
    assert row[0] == "| tiny-myna" and row[1:8] == ["–"] * 7
    assert printed[-1].startswith("| CLMR (paper) | 89.4 | 36.1")

    report = json.loads((output_dir / "results.json").read_text())
    entry = report["tasks"]["synthetic-style"]
    assert float(row[8]) == pytest.approx(100 * entry["test_metrics"]["accuracy"], abs=0.05)
    assert entry["valid_score"] == pytest.approx(entry["validation_metrics"]["accuracy"])
    assert entry["valid_score"] == max(r["valid_score"] for r in entry["grid"]["square"])
    assert entry["chosen_config"] in [r["config"] for r in entry["grid"]["square"]]
    assert entry["num_tracks"] == {"train": 20, "validation": 10, "test": 10}
    # 6 s = 188 frames: one 96-frame chunk without overlap (valid, test), two at the training hop of 48.
    assert entry["num_chunks"] == {"train": 40, "validation": 10, "test": 10}
    assert os.path.isfile(entry["tsne"]) and os.path.isfile(entry["linear_probe"])
    assert (output_dir / "table.md").read_text().strip() == report["table"]
    assert report["table"].splitlines()[0] == printed[-12] == report["probe_protocol"]["line"]
    assert entry["layer"] == "last" and entry["pooling"] == "mean" and "best_valid_score_by_layer" not in entry
    assert report["probe_protocol"]["layers_probed"] == "last" and report["probe_protocol"]["pooling"] == "mean"
    probe_file = torch.load(entry["linear_probe"], weights_only=True)
    assert probe_file["layer"] is None and probe_file["pooling"] == "mean"


def test_every_layer_with_mean_and_std_is_chosen_on_validation(tiny_myna_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    output_dir = tmp_path / "report"
    # fmt: off
    argv = ["--model", tiny_myna_folder, "--tasks", "synthetic-style", "--synthetic_sizes", "20,10,10",
            "--synthetic_duration", "6", "--fast", "--max_epochs", "4", "--output_dir", str(output_dir),
            "--progress", "false", "--num_threads", "1", "--tsne", "false", "--pooling", "meanstd"]
    # fmt: on
    report = main(argv + ["--layers", "all"])
    line = "Probe protocol: layer chosen on validation (of 3), mean+std pooling; fast subset (8 probes)."
    assert report["table"].splitlines()[0] == line == (output_dir / "table.md").read_text().splitlines()[0]
    assert report["probe_protocol"] == {
        "layers": "all", "layers_probed": [0, 1, 2], "num_layers": 3, "pooling": "meanstd", "line": line,
    }  # fmt: skip
    entry = report["tasks"]["synthetic-style"]
    by_layer = entry["best_valid_score_by_layer"]["square"]
    assert set(entry["grid"]["square"]) == set(by_layer) == {"0", "1", "2"}
    every_probe = [r["valid_score"] for grid in entry["grid"]["square"].values() for r in grid]
    assert entry["valid_score"] == max(every_probe) == by_layer[str(entry["layer"])] == max(by_layer.values())
    assert entry["chosen_config"] in [r["config"] for r in entry["grid"]["square"][str(entry["layer"])]]
    assert entry["pooling"] == "meanstd" and entry["linear_probe"] is None  # export.py takes last-layer means only
    caches = sorted(os.listdir(output_dir / "embeddings"))
    assert len(caches) == 3

    # A list of layers is a subset of the same extraction: no new cache.
    report = main(argv + ["--layers", "1,-1"])
    entry = report["tasks"]["synthetic-style"]
    assert set(entry["grid"]["square"]) == {"1", "2"} and entry["layer"] in (1, 2)
    assert report["table"].startswith("Probe protocol: layer chosen on validation among 1, 2 (of 3), mean+std")
    assert sorted(os.listdir(output_dir / "embeddings")) == caches


def test_a_paper_task_without_data_fails_before_any_extraction(tiny_myna_folder, tmp_path):
    with pytest.raises(ValueError, match="needs its data"):
        main(["--model", tiny_myna_folder, "--tasks", "synthetic-style,gtzan", "--output_dir", str(tmp_path), "--fast"])
    assert not (tmp_path / "embeddings").exists()


@pytest.mark.slow
def test_full_grid_on_every_generated_task(tiny_myna_folder, tmp_path):
    report = main(
        [
            "--model",
            tiny_myna_folder,
            "--synthetic_sizes",
            "64,32,32",
            "--synthetic_duration",
            "6",
            "--output_dir",
            str(tmp_path),
            "--progress",
            "false",
            "--num_threads",
            "1",
        ]
    )
    assert set(report["tasks"]) == {"synthetic-key", "synthetic-tempo", "synthetic-tags", "synthetic-style"}
    for entry in report["tasks"].values():
        assert len(entry["grid"]["square"]) == 216
        assert np.isfinite(list(entry["test_metrics"].values())).all()


def _tone(path, frequency, seconds=3.5):
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 16000)


def test_one_command_on_a_custom_task_file_and_a_marble_task(tiny_myna_folder, tmp_path, capsys):
    """A folder of labelled audio and a task file give the table; a corrupt and a missing file are skipped and
    counted; NSynth loads from its release layout; MARBLE's probe protocol runs on both."""
    rows = ["file,singer,pitch"]
    for index in range(30):
        pitch = ("low", "high")[index % 2]
        _tone(str(tmp_path / "clips" / f"{index:02d}.wav"), 220 if pitch == "low" else 880)
        rows.append(f"clips/{index:02d}.wav,singer{index // 3},{pitch}")
    (tmp_path / "clips" / "05.wav").write_bytes(b"not audio at all")
    rows.append("clips/absent.wav,singer3,low")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "pitch.yaml").write_text(
        "name: pitch\npath: labels.csv\naudio_column: file\nlabel_column: pitch\nproblem_type: single_label\n"
        "splits: {group_column: singer, fractions: [0.6, 0.2, 0.2], seed: 1}\n"
    )
    for split, count in (("train", 6), ("valid", 3), ("test", 3)):
        examples = {}
        for index in range(count):
            family = index % 2
            note = f"{('bass', 'brass')[family]}_acoustic_{index:03d}-060-100"
            _tone(str(tmp_path / "nsynth" / f"nsynth-{split}" / "audio" / f"{note}.wav"), 110 * (1 + 3 * family), 4.0)
            examples[note] = {"instrument_family": family, "pitch": 60}
        (tmp_path / "nsynth" / f"nsynth-{split}" / "examples.json").write_text(json.dumps(examples))

    output_dir = tmp_path / "report"
    # fmt: off
    report = main([
        "--model", tiny_myna_folder, "--tasks", f"custom:{tmp_path / 'pitch.yaml'},nsynth-instrument",
        "--dataset_paths", f"nsynth={tmp_path / 'nsynth'}", "--protocol", "marble", "--fast",
        "--max_epochs", "4", "--output_dir", str(output_dir), "--progress", "false", "--num_threads", "1",
        "--tsne", "false",
    ])
    # fmt: on
    printed = capsys.readouterr().out
    # The paper's columns, MARBLE's block, then the custom task.
    paper = "| Model | MTT AUC | MTT AP | GTZAN | GS | Emo A | Emo V | Avg. |"
    assert f"{paper} NSynth-I | MARBLE avg. | pitch | Avg. (run) |" in printed
    assert "MARBLE probe, fast" in printed
    pitch = report["tasks"]["pitch"]
    skipped = [t for split in pitch["skipped_tracks"].values() for t in split]
    assert sorted(os.path.basename(t) for t in skipped) == ["05.wav", "absent.wav"]
    assert sum(pitch["num_tracks"].values()) == 29
    assert len(pitch["grid"]["square"]) == 2 and pitch["linear_probe"] is None
    # MARBLE protocol: training chunks without overlap (3.5 s = one chunk per clip, as for validation and test).
    assert pitch["num_chunks"]["train"] == pitch["num_tracks"]["train"]
    nsynth = report["tasks"]["nsynth-instrument"]
    assert nsynth["num_tracks"] == {"train": 6, "validation": 3, "test": 3}
    row = [r for r in report["table"].splitlines() if r.startswith("| tiny-myna")][0].split(" | ")
    assert float(row[8]) == pytest.approx(100 * nsynth["test_metrics"]["accuracy"], abs=0.05)


def test_help_is_fast_and_says_what_each_option_does():
    # issue 10: --help imported torch first (7-8 s), labelled --no_tsne "Plot t-SNE" and the required --model
    # "(default: None)".
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(__file__).parents[1] / "evaluation" / "probe.py")
    code = (
        f"import runpy, sys; sys.argv = ['probe.py', '--help']\n"
        f"try: runpy.run_path({script!r}, run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
    text = " ".join(result.stdout.split())
    assert "--no_tsne Turn off --tsne." in text and "--model MODEL A model folder" in text
    assert "--layers LAYERS last (the paper's)" in text and "chosen on VALIDATION" in text
    assert "--pooling POOLING The statistic over time within a chunk, the same for every row" in text
    assert "--model MODEL A model folder AutoModel loads (a Myna checkpoint, or another audio model). (default" not in text


def test_bad_device_and_key_columns_are_explained(tiny_myna_folder, tmp_path, monkeypatch, capsys):
    from myna_evaluation.probe import SYNTHETIC_TASK_NAMES, main
    from myna_evaluation.report import column_notes
    from myna_evaluation.tasks import SYNTHETIC_TASKS, load_synthetic_task
    from myna_pipelines.cli_support import run_cli

    assert SYNTHETIC_TASK_NAMES == SYNTHETIC_TASKS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--model", tiny_myna_folder, "--device", "cuda", "--output_dir", str(tmp_path)]
    assert run_cli(main, "probe.py", argv) == 2
    err = capsys.readouterr().err
    assert "probe.py: error: --device cuda: no CUDA device is available" in err and "Traceback" not in err

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    spec, _ = load_synthetic_task("synthetic-key", (4, 2, 2), 4.0)
    notes = column_notes({"synthetic-key": (spec, {})})
    assert notes.startswith("Syn key: mean mir_eval weighted key score") and "5-fold cross-validated" in notes
