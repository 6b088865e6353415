"""The `music-embedding` pipeline: every input type, pooling and timelines, patch modes, batch sizes, dtypes,
streaming in bounded memory, and clear errors."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
import myna_pipelines  # noqa: F401
from modeling_myna import MynaFeatureExtractor, MynaForAudioClassification, MynaModel
from modeling_myna.audio_utils import AudioDecodeError, load_audio
from myna_pipelines import MusicEmbeddingPipeline
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .pipelines_support import music_like, save_tiny_model, tiny_config, write_audio


CHUNK_SECONDS = 96 * 512 / 16_000  # 3.072 s


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("hybrid"), variant="hybrid")


@pytest.fixture(scope="module")
def embedder(folder):
    return pipeline("music-embedding", model=folder, device="cpu")


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    """A 10 s, 44.1 kHz stereo FLAC: three chunks after resampling."""
    return write_audio(tmp_path_factory.mktemp("audio") / "track.flac", 10.0, sampling_rate=44_100, channels=2)


def reference_chunk_embeddings(folder, audio, sampling_rate=16_000, patch_mode=None, hop_frames=None):
    """Whole-track feature extraction and one forward: what the pipeline must reproduce."""
    model = MynaModel.from_pretrained(folder).eval()
    features = MynaFeatureExtractor.from_pretrained(folder)(
        audio, sampling_rate=sampling_rate, hop_frames=hop_frames, return_tensors="pt"
    )
    with torch.no_grad():
        return model(features["input_values"], patch_mode=patch_mode).pooler_output.numpy()


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_the_task_is_registered_and_builds_from_a_folder(embedder):
    assert "music-embedding" in PIPELINE_REGISTRY.get_supported_tasks()
    assert isinstance(embedder, MusicEmbeddingPipeline)
    assert isinstance(embedder.model, MynaModel)  # AutoModel: the bare encoder of a pre-training folder
    assert isinstance(embedder.feature_extractor, MynaFeatureExtractor)


def test_mean_embedding_equals_the_model_on_the_whole_track(folder, embedder, track):
    audio, rate = load_audio(track, sampling_rate=16_000)
    expected = reference_chunk_embeddings(folder, audio, rate)
    embedding = embedder(track)
    assert isinstance(embedding, np.ndarray) and embedding.shape == (64,) and embedding.dtype == np.float32
    assert expected.shape == (3, 64)
    assert_close(embedding, expected.mean(axis=0))


def test_every_input_type_gives_the_same_embedding(embedder, track):
    import datasets

    expected = embedder(track)
    data = pathlib.Path(track).read_bytes()
    audio, rate = load_audio(track)  # 44.1 kHz mono
    stereo = np.stack([audio, audio])  # (channels, samples)
    column = datasets.Dataset.from_dict({"audio": [track]}).cast_column("audio", datasets.Audio(decode=False))
    inputs = {
        "path": (track, {}),
        "pathlib": (pathlib.Path(track), {}),
        "bytes": (data, {}),
        "array dict": ({"array": audio, "sampling_rate": rate}, {}),
        "raw dict": ({"raw": audio, "sampling_rate": rate}, {}),
        "datasets bytes dict": ({"bytes": data, "path": "track.flac"}, {}),
        "datasets Audio(decode=False) row": (column[0]["audio"], {}),
        "numpy": (audio, {"sampling_rate": rate}),
        "stereo numpy": (stereo, {"sampling_rate": rate}),
        "torch": (torch.from_numpy(audio), {"sampling_rate": rate}),
    }
    for name, (source, kwargs) in inputs.items():
        np.testing.assert_allclose(embedder(source, **kwargs), expected, rtol=1e-4, atol=1e-5, err_msg=name)

    batch = embedder([track, {"array": audio[: rate * 4], "sampling_rate": rate}, data])
    assert len(batch) == 3
    assert_close(batch[0], expected)
    assert_close(batch[2], expected)
    assert not np.allclose(batch[1], expected, atol=1e-3)  # the 4 s excerpt is another input


@pytest.mark.parametrize("extension", [".wav", ".ogg", ".mp3"])
def test_each_format_matches_decoding_it_whole(tmp_path, folder, embedder, extension):
    path = write_audio(tmp_path / f"clip{extension}", 7.0, sampling_rate=22_050, seed=3)
    audio, rate = load_audio(path, sampling_rate=16_000)
    assert_close(embedder(path), reference_chunk_embeddings(folder, audio, rate).mean(axis=0))


def test_timeline_has_one_row_per_chunk_with_its_start_time(folder, embedder):
    audio = music_like(20.0, 16_000, seed=1)
    timeline = embedder(audio, sampling_rate=16_000, pooling="none", batch_size=2)
    expected = reference_chunk_embeddings(folder, audio)
    assert timeline["embeddings"].shape == (6, 64)
    assert_close(timeline["embeddings"], expected)
    np.testing.assert_allclose(timeline["start_times"], np.arange(6) * CHUNK_SECONDS)
    assert_close(timeline["embeddings"].mean(axis=0), embedder(audio, sampling_rate=16_000))

    dense = embedder(audio, sampling_rate=16_000, pooling="none", hop_frames=48)
    assert_close(dense["embeddings"], reference_chunk_embeddings(folder, audio, hop_frames=48))
    np.testing.assert_allclose(dense["start_times"], np.arange(12) * CHUNK_SECONDS / 2)  # (626 frames - 96) // 48 + 1


def test_a_dataset_column_streams_through_the_pipeline(embedder, track):
    import datasets
    from transformers.pipelines.pt_utils import KeyDataset

    column = datasets.Dataset.from_dict({"audio": [track, track]}).cast_column("audio", datasets.Audio(decode=False))
    outputs = list(embedder(KeyDataset(column, "audio"), batch_size=2))
    assert len(outputs) == 2
    assert_close(outputs[1], embedder(track))


def test_patch_modes_of_a_hybrid_model(folder, embedder):
    audio = music_like(7.0, 16_000, seed=2)
    square = embedder(audio, sampling_rate=16_000, patch_mode="square")
    vertical = embedder(audio, sampling_rate=16_000, patch_mode="vertical")
    both = embedder(audio, sampling_rate=16_000, patch_mode="both")
    assert square.shape == vertical.shape == (32,)
    assert_close(both, np.concatenate([square, vertical]))
    assert_close(vertical, reference_chunk_embeddings(folder, audio, patch_mode="vertical").mean(axis=0))
    with pytest.raises(ValueError, match=r"patch_mode='diagonal' is not available .*\['square', 'vertical', 'both'\]"):
        embedder(audio, sampling_rate=16_000, patch_mode="diagonal")


def test_batch_size_sets_the_chunks_per_forward_and_never_the_result(folder, embedder, monkeypatch):
    audio = music_like(40.0, 16_000, seed=4)  # 13 chunks
    expected = embedder(audio, sampling_rate=16_000, pooling="none")["embeddings"]
    seen = []
    forward = MynaModel.forward

    def recording_forward(self, input_values, *args, **kwargs):
        seen.append(input_values.shape[0])
        return forward(self, input_values, *args, **kwargs)

    monkeypatch.setattr(MynaModel, "forward", recording_forward)
    for batch_size in [1, 4]:
        seen.clear()
        timeline = embedder(audio, sampling_rate=16_000, pooling="none", batch_size=batch_size)
        assert_close(timeline["embeddings"], expected)
        assert max(seen) == batch_size and sum(seen) == 13  # streamed: never more than batch_size chunks at once
    constructed = pipeline("music-embedding", model=folder, device="cpu", batch_size=4)
    seen.clear()
    assert_close(constructed(audio, sampling_rate=16_000), expected.mean(axis=0))
    assert max(seen) == 4
    for bad in [0, -2, 2.5]:
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            embedder(audio, sampling_rate=16_000, batch_size=bad)


def test_bfloat16_runs_close_to_float32(folder, embedder):
    audio = music_like(7.0, 16_000, seed=5)
    half = pipeline("music-embedding", model=folder, device="cpu", dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    reduced, full = half(audio, sampling_rate=16_000), embedder(audio, sampling_rate=16_000)
    assert reduced.dtype == np.float32
    cosine = reduced @ full / np.linalg.norm(reduced) / np.linalg.norm(full)
    assert cosine > 0.99
    # float16 too: the spectrogram stays float32 up to the model's float32 patch LayerNorm (it reaches ~1e6).
    float16 = pipeline("music-embedding", model=folder, device="cpu", dtype=torch.float16)
    assert float16.model.dtype == torch.float16
    reduced = float16(audio, sampling_rate=16_000)
    assert np.isfinite(reduced).all()
    assert reduced @ full / np.linalg.norm(reduced) / np.linalg.norm(full) > 0.99


@pytest.mark.gpu
def test_cuda_runs_the_front_end_and_the_model_on_the_gpu(folder, embedder, track):
    on_gpu = pipeline("music-embedding", model=folder, device="cuda")
    embedding = on_gpu(track)
    assert "cuda:0" in on_gpu.feature_extractor._mel_modules  # the STFT ran on the GPU too
    # cuDNN may run the STFT convolution in TF32: close, not equal.
    np.testing.assert_allclose(embedding, embedder(track), rtol=1e-2, atol=1e-2)


def test_a_classifier_model_embeds_with_its_encoder():
    torch.manual_seed(0)
    classifier = MynaForAudioClassification(tiny_config("base", num_labels=3)).eval()
    embedder = MusicEmbeddingPipeline(model=classifier, device="cpu")
    audio = music_like(4.0, 16_000)
    features = MynaFeatureExtractor.from_config(classifier.config)(audio, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        expected = classifier.myna(features["input_values"]).pooler_output.mean(0).numpy()
    assert_close(embedder(audio, sampling_rate=16_000), expected)


def test_a_folder_without_feature_extractor_uses_the_config(tmp_path):
    folder = tmp_path / "vertical"
    MynaModel(tiny_config("vertical")).save_pretrained(folder)  # no preprocessor_config.json
    embedder = pipeline("music-embedding", model=str(folder), device="cpu")
    assert embedder.feature_extractor.chunk_frames == 98  # the vertical model's chunk
    timeline = embedder(music_like(7.0, 16_000), sampling_rate=16_000, pooling="none")
    np.testing.assert_allclose(timeline["start_times"], [0.0, 98 * 512 / 16_000])


def test_unreadable_inputs_and_bad_options_are_named(tmp_path, embedder):
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "noise.ogg").write_bytes(os.urandom(2048))
    with pytest.raises(AudioDecodeError, match="empty.flac: the file is empty"):
        embedder(str(tmp_path / "empty.flac"))
    with pytest.raises(AudioDecodeError, match="noise.ogg: could not be decoded"):
        embedder(str(tmp_path / "noise.ogg"))
    with pytest.raises(ValueError, match="without its sampling rate"):
        embedder(np.zeros(16_000, dtype=np.float32))
    with pytest.raises(ValueError, match="pooling='max' is not one of"):
        embedder(str(tmp_path / "empty.flac"), pooling="max")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['pooling_mode'\]"):
        embedder(str(tmp_path / "empty.flac"), pooling_mode="mean")


# Peak memory of a 1-minute and then a 4-minute recording in a fresh process. Whole-track processing would hold
# the 4-minute signal (15 MB) and its STFT work space (~60 MB); streamed, the longer file needs nothing more. The
# benchmark (benchmarks/benchmark_embed.py) measures a 60-minute file.
MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np, soundfile as sf
import modeling_myna  # registers Myna and "music-embedding"
from transformers import pipeline

folder, workdir = sys.argv[1:3]
rng = np.random.default_rng(0)
paths = {}
for minutes in (1, 4):
    paths[minutes] = f"{workdir}/{minutes}min.wav"
    with sf.SoundFile(paths[minutes], "w", 16000, 1, subtype="PCM_16") as f:
        for second in range(60 * minutes):  # a second at a time: writing costs no memory
            tone = 0.3 * np.sin(np.arange(16000) * (0.05 + 0.001 * (second % 50)))
            f.write(tone + 0.01 * rng.standard_normal(16000))
embedder = pipeline("music-embedding", model=folder, device="cpu")
embedder(paths[1], batch_size=8)  # first call: one-off allocations (mel filter banks, thread pools)
peaks = {}
for minutes in (1, 4):
    embedder(paths[minutes], pooling="none", batch_size=8)  # a minute (19 chunks) already fills whole batches
    peaks[minutes] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
print(json.dumps(peaks))
"""


def test_four_minutes_need_no_more_memory_than_one(folder, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, folder, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    growth = peaks["4"] - peaks["1"]
    assert growth < 25, f"peak RSS grew by {growth:.0f} MiB from 1 to 4 minutes: {peaks}"


def test_importing_modeling_myna_registers_the_pipeline():
    import subprocess
    import sys

    script = (
        "import modeling_myna\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert 'music-embedding' in PIPELINE_REGISTRY.get_supported_tasks()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------ datasets audio, every shape (issue 10)


class FakeAudioDecoder:
    """What a decoded `datasets.Audio()` column gives from datasets 4 on (torchcodec's AudioDecoder), without
    torchcodec: `get_all_samples()` with `.data` (channels, samples) and `.sample_rate`."""

    def __init__(self, audio, rate):
        self.audio, self.rate = audio, rate

    def get_all_samples(self):
        from types import SimpleNamespace

        return SimpleNamespace(data=torch.from_numpy(self.audio[None]), sample_rate=self.rate)


def test_every_shape_of_datasets_audio_embeds_alike(embedder, tmp_path):
    import datasets
    import soundfile as sf

    from myna_training.synthetic import synthetic_music_dataset

    item = synthetic_music_dataset(1, seed=0, duration=4.0)[0]["audio"]  # the project's own dataset
    assert isinstance(item["array"], list)
    audio = np.asarray(item["array"], dtype=np.float32)
    expected = embedder({"array": audio, "sampling_rate": item["sampling_rate"]})
    assert_close(embedder(item), expected)
    assert_close(embedder(FakeAudioDecoder(audio, item["sampling_rate"])), expected)
    loaded, rate = load_audio(FakeAudioDecoder(audio, 16_000))
    assert rate == 16_000 and np.array_equal(loaded, audio)
    assert np.array_equal(load_audio(item)[0], audio)

    path = str(tmp_path / "clip.flac")
    sf.write(path, audio, item["sampling_rate"], subtype="PCM_24")
    undecoded = datasets.Dataset.from_dict({"audio": [path]}).cast_column("audio", datasets.Audio(decode=False))
    assert_close(embedder(undecoded[0]["audio"]), expected)  # soundfile: no torchcodec needed


def test_unsupported_inputs_name_the_fix(embedder):
    with pytest.raises(ValueError, match=r"cannot read audio from a set.*decode=False"):
        embedder({1, 2})


def test_a_text_file_named_mp3_is_called_a_text_file(tmp_path, capfd):
    fake = tmp_path / "song.mp3"
    fake.write_text("#EXTM3U\nhttp://example.com/stream\n")
    with pytest.raises(AudioDecodeError, match=r"song.mp3: could not be decoded: it is a text file, not audio \(it begins '#EXTM3U'\)"):
        load_audio(str(fake))
    assert "resync" not in capfd.readouterr().err  # libsndfile's mp3 decoder never saw it
    junk = tmp_path / "noise.mp3"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(AudioDecodeError, match="libsndfile recognises no audio format in it") as error:
        load_audio(str(junk))
    assert "does not exist" not in str(error.value)
