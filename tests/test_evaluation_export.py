"""A trained linear probe exported with its encoder as `MynaForAudioClassification`, used through the
`audio-classification` pipeline: its scores equal the probe's own track outputs."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import pipeline

from modeling_myna import MynaConfig, MynaForAudioClassification, MynaModel
from myna_evaluation.export import export_linear_probe, fold_standardization, load_probe
from myna_evaluation.extract import EmbeddingExtractor
from myna_evaluation.probe import main
from myna_evaluation.tasks import load_synthetic_task, synthetic_splits

from .conftest import TINY_MYNA




pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_fold_standardization_is_exact():
    generator = torch.Generator().manual_seed(0)
    state = {"w0": torch.randn(6, 3, generator=generator), "b0": torch.randn(1, 3, generator=generator)}
    mean, std = torch.randn(6, generator=generator), torch.rand(6, generator=generator) + 0.5
    x = torch.randn(10, 6, generator=generator)
    weight, bias = fold_standardization(state, mean, std, standardize=True)
    torch.testing.assert_close(
        x @ weight.T + bias, ((x - mean) / std) @ state["w0"] + state["b0"], atol=1e-5, rtol=1e-5
    )
    weight, bias = fold_standardization(state, mean, std, standardize=False)
    torch.testing.assert_close(x @ weight.T + bias, x @ state["w0"] + state["b0"])


def test_exported_probe_works_in_the_audio_classification_pipeline(tmp_path, monkeypatch):
    # Generated clips go to this test's folder, not the user's datasets cache.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    MynaModel(MynaConfig(**TINY_MYNA)).save_pretrained(str(encoder))
    main(
        [
            "--model",
            str(encoder),
            "--tasks",
            "synthetic-style",
            "--synthetic_sizes",
            "20,10,10",
            "--synthetic_duration",
            "4",
            "--fast",
            "--max_epochs",
            "5",
            "--output_dir",
            str(tmp_path / "report"),
            "--progress",
            "false",
            "--tsne",
            "false",
        ]
    )
    probe_path = tmp_path / "report" / "synthetic-style" / "linear_probe.pt"
    exported = export_linear_probe(str(encoder), str(probe_path), str(tmp_path / "classifier"))

    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert config["problem_type"] == "single_label_classification"
    spec, dataset = load_synthetic_task(
        "synthetic-style",
        (20, 10, 10),
        4.0,
        corpus=synthetic_splits((20, 10, 10), 4.0, cache_dir=str(tmp_path / "hf" / "myna_synthetic")),
    )
    assert [config["id2label"][str(i)] for i in range(len(spec.label_names))] == list(spec.label_names)
    assert isinstance(MynaForAudioClassification.from_pretrained(exported), MynaForAudioClassification)

    classifier = pipeline("audio-classification", model=exported)
    probe = load_probe(str(probe_path))  # what probe.py writes loads with weights_only=True
    extractor = EmbeddingExtractor(str(encoder))
    for row in range(2):
        audio = np.asarray(
            dataset["test"][row]["audio"]["array"], dtype=np.float32
        )  # 16 kHz numpy: no torchaudio needed
        predicted = {p["label"]: p["score"] for p in classifier(audio, top_k=len(spec.label_names))}
        (chunks,) = extractor.embed([audio], hop_frames=96)
        x = torch.from_numpy(chunks)
        if probe["config"]["standardize"]:
            x = (x - probe["mean"]) / probe["std"]
        expected = (x @ probe["state"]["w0"] + probe["state"]["b0"]).mean(0).softmax(-1)
        for index, name in enumerate(spec.label_names):
            assert predicted[name] == pytest.approx(float(expected[index]), abs=1e-5)


def test_hidden_layer_probes_are_refused(tmp_path):
    probe = {
        "state": {"w0": torch.zeros(4, 8), "b0": torch.zeros(1, 8), "w1": torch.zeros(8, 2), "b1": torch.zeros(1, 2)}
    }
    torch.save(probe, tmp_path / "probe.pt")
    with pytest.raises(ValueError, match="only linear probes can be exported"):
        export_linear_probe(str(tmp_path), str(tmp_path / "probe.pt"), str(tmp_path / "out"))


@pytest.mark.parametrize("protocol, message", [({"pooling": "meanstd"}, "meanstd pooling"), ({"layer": 1}, "layer 1 of")])
def test_probes_of_another_embedding_than_the_models_are_refused(tmp_path, protocol, message):
    from modeling_myna import MynaConfig

    MynaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    probe = {
        "state": {"w0": torch.zeros(4, 2), "b0": torch.zeros(1, 2)}, "task": {"label_names": ["a", "b"]},
        "config": {"standardize": False}, "mean": torch.zeros(4), "std": torch.ones(4), **protocol,
    }
    torch.save(probe, tmp_path / "probe.pt")
    with pytest.raises(ValueError, match=message):
        export_linear_probe(str(tmp_path), str(tmp_path / "probe.pt"), str(tmp_path / "out"))


class _RunsCodeWhenUnpickled:
    """A pickle payload that would create a file if unpickled: the shape of an arbitrary-code-execution attack."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_probe_file_with_a_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"state": {"w0": torch.zeros(4, 2)}, "payload": _RunsCodeWhenUnpickled(str(marker))}
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        export_linear_probe(str(tmp_path), str(tmp_path / "evil.pt"), str(tmp_path / "out"))
    assert not marker.exists(), "the probe file's pickle ran code"
    assert not (tmp_path / "out").exists()


def test_export_does_not_look_like_a_failure_and_errors_are_one_line(tmp_path, capfd):
    # issue 10: transformers' "classifier.weight MISSING ... newly initialized" came before the probe was written.
    import subprocess
    import sys

    from myna_pipelines.cli_support import run_cli
    from myna_evaluation.export import main as export_main

    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    config = MynaConfig(**TINY_MYNA)
    MynaModel(config).save_pretrained(str(encoder))
    width, labels = config.embedding_size(), ["x", "y"]
    probe = {
        "state": {"w0": torch.randn(width, 2), "b0": torch.zeros(1, 2)},
        "config": {"standardize": False},
        "valid_score": 0.5,
        "mean": torch.zeros(width),
        "std": torch.ones(width),
        "patch_mode": None,
        "task": {"name": "t", "source": "s", "primary": "accuracy", "label_names": labels,
                 "problem_type": "single_label_classification"},
    }
    torch.save(probe, tmp_path / "probe.pt")
    capfd.readouterr()
    export_main(["--model", str(encoder), "--probe", str(tmp_path / "probe.pt"), "--output_dir", str(tmp_path / "o")])
    out, err = capfd.readouterr()
    assert "MISSING" not in out + err and "newly initialized" not in out + err
    assert "with the probe" in out

    (tmp_path / "junk.pt").write_bytes(b"not a probe")
    argv = ["--model", str(encoder), "--probe", str(tmp_path / "junk.pt"), "--output_dir", str(tmp_path / "o2")]
    assert run_cli(export_main, "export.py", argv) == 1
    assert "export.py: error: " in capfd.readouterr().err
    script = str(Path(__file__).parents[1] / "evaluation" / "export.py")
    typo = subprocess.run([sys.executable, script, "--modle", "x"], capture_output=True, text=True)
    assert typo.returncode == 2 and "Did you mean '--model'?" in typo.stderr and "Traceback" not in typo.stderr
