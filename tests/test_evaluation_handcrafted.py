"""Hand-crafted baselines: the same chunks as a Myna checkpoint, known values (a sine's chroma, a gain's log-mel
shift, exact chunk statistics), and `probe.py --model handcrafted:all` end to end on a tiny generated task."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf
import yaml


pytest.importorskip("librosa")

from myna_evaluation.handcrafted import FEATURE_SETS, HandcraftedExtractor, chunk_statistics  # noqa: E402


SR = 16_000
WIDTHS = {"logmel": 168, "chroma": 12, "all": 180}  # per frame, and so per chunk with --pooling mean


def sine(frequency: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.mark.parametrize("kind", FEATURE_SETS)
def test_shapes_are_myna_chunks_and_values_are_finite(kind):
    from modeling_myna import MynaConfig, MynaFeatureExtractor

    extractor = HandcraftedExtractor(f"handcrafted:{kind}")
    myna = MynaFeatureExtractor.from_config(MynaConfig.from_variant("base"))
    audios = [sine(440, 7.3), sine(220, 1.0), np.zeros(100, np.float32)]
    hop = extractor.default_hop()
    out = extractor.embed(audios, hop)
    chunks = myna(audios, sampling_rate=SR, hop_frames=hop, return_tensors="np")["audio_index"]
    assert [len(o) for o in out] == [int((chunks == i).sum()) for i in range(3)]
    assert all(o.shape[1] == WIDTHS[kind] and o.dtype == np.float32 and np.isfinite(o).all() for o in out)
    assert extractor.chunk_frames == myna.chunk_frames and extractor.patch_modes == ["default"]
    (layers,) = extractor.embed(audios[:1], hop, layers="all")
    assert extractor.num_layers == 1 and layers.shape == (len(out[0]), 1, WIDTHS[kind])  # one "layer"
    np.testing.assert_array_equal(layers[:, 0], out[0])


def test_pooling_is_the_statistic_over_time_as_for_myna():
    """mean: the mean of the frame features over the chunk; meanstd: [mean ; std], the vector these baselines had
    before --pooling existed (reconstructed here from the frame features)."""
    from myna_evaluation.handcrafted import frame_features

    extractor = HandcraftedExtractor("handcrafted:all")
    audio = sine(440, 6.0) + sine(660, 6.0, 0.1) * np.linspace(0, 1, 6 * SR, dtype=np.float32)
    (mean,) = extractor.embed([audio], 48)
    (meanstd,) = extractor.embed([audio], 48, pooling="meanstd")
    assert mean.shape[1] == 180 and meanstd.shape == (len(mean), 360)
    np.testing.assert_array_equal(meanstd[:, :180], mean)
    frames = frame_features(audio, "all")
    for k in range(len(mean)):
        window = frames[48 * k : 48 * k + extractor.chunk_frames]
        np.testing.assert_allclose(mean[k], window.mean(0), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(meanstd[k, 180:], window.std(0), rtol=1e-3, atol=1e-2)
    assert meanstd[:, 180:].max() > 1  # the spread is there to be had


def test_chroma_of_a_sine_peaks_at_its_pitch_class():
    extractor = HandcraftedExtractor("handcrafted:chroma")
    for frequency, pitch_class in ((440.0, 9), (261.63, 0), (392.0, 7)):
        means = extractor.embed([sine(frequency, 4.0)], extractor.chunk_frames)[0][:, :12]
        assert (means.argmax(1) == pitch_class).all()
        assert means[:, pitch_class].min() > 0.9 and np.delete(means, pitch_class, 1).max() < 0.3


def test_log_mel_moves_by_the_gain_in_decibels_and_mfcc_deltas_vanish_on_a_steady_tone():
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(4 * SR)).astype(np.float32)
    extractor = HandcraftedExtractor("handcrafted:logmel")
    quiet, loud = extractor.embed([noise, 10 * noise], extractor.chunk_frames, pooling="meanstd")
    np.testing.assert_allclose(loud[:, :128] - quiet[:, :128], 20.0, atol=1e-3)  # mean log-mel: +20 dB
    # Layout: means of [log-mel 128, MFCC 20, delta 20], then their standard deviations in the same order.
    np.testing.assert_allclose(loud[:, 168:296], quiet[:, 168:296], atol=1e-3)  # log-mel spread: unchanged
    steady = extractor.embed([sine(440, 4.0)], extractor.chunk_frames)[0]
    assert np.abs(steady[:, 148:168]).max() < 0.01 * np.abs(steady[:, 128:148]).max()  # delta-MFCC means ~ 0


def test_chunk_statistics_are_exact():
    features = np.arange(20, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])
    stats = chunk_statistics(features, chunk_frames=4, hop_frames=3, pooling="meanstd")
    assert stats.shape == (6, 4)  # windows at 0, 3, ..., 15
    np.testing.assert_array_equal(chunk_statistics(features, chunk_frames=4, hop_frames=3), stats[:, :2])
    np.testing.assert_allclose(stats[:, 0], [1.5, 4.5, 7.5, 10.5, 13.5, 16.5])
    np.testing.assert_allclose(stats[:, 1], -2 * stats[:, 0])
    np.testing.assert_allclose(stats[:, 2], np.sqrt(1.25), rtol=1e-6)
    np.testing.assert_allclose(stats[:, 3], 2 * np.sqrt(1.25), rtol=1e-6)
    with pytest.raises(ValueError, match="hold no 8-frame chunk"):
        chunk_statistics(features[:5], chunk_frames=8, hop_frames=4)
    with pytest.raises(ValueError, match="--pooling max: expected mean or meanstd"):
        chunk_statistics(features, chunk_frames=4, hop_frames=3, pooling="max")


def test_unknown_feature_set_is_named():
    with pytest.raises(ValueError, match=r"handcrafted:mfcc.*use handcrafted:logmel, handcrafted:chroma"):
        HandcraftedExtractor("handcrafted:mfcc")


def test_probe_command_on_a_tiny_task(tmp_path, capsys, single_torch_thread):
    from myna_evaluation.probe import main

    rows = []
    for index in range(24):  # two classes a tritone apart: chroma separates them
        label = ("C", "Gb")[index % 2]
        frequency = (261.63, 369.99)[index % 2] * (1 + 0.0005 * index)
        path = tmp_path / "audio" / f"{index}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, sine(frequency, 3.5, 0.1 + 0.01 * index), SR)
        rows.append({"file": f"audio/{index}.wav", "label": label, "split": ("train",) * 4 + ("validation", "test")})
        rows[-1]["split"] = rows[-1]["split"][(index // 2) % 6]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with open(tmp_path / "tones.yaml", "w") as f:
        yaml.safe_dump({"path": "labels.csv", "audio_column": "file", "splits": {"column": "split"}}, f)
    output = tmp_path / "eval"
    report = main(
        ["--model", "handcrafted:all", "--tasks", f"custom:{tmp_path / 'tones.yaml'}", "--fast", "--max_epochs", "30",
         "--output_dir", str(output), "--no_tsne", "--no_progress", "--num_threads", "1"]
    )
    entry = report["tasks"]["tones"]
    assert report["model_name"] == "handcrafted:all" and report["model"] == "handcrafted:all"
    assert entry["num_tracks"] == {"train": 16, "validation": 4, "test": 4}
    assert entry["test_metrics"]["accuracy"] == 1.0
    assert os.path.isfile(output / "table.md") and "handcrafted:all" in capsys.readouterr().out
    with open(output / "results.json") as f:
        assert json.load(f)["model_identity"].startswith("handcrafted-")
