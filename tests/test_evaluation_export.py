"""A trained linear probe exported with its encoder as `MynaForAudioClassification`, used through the
`audio-classification` pipeline: its scores equal the probe's own track outputs."""

import json

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
