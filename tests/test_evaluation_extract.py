"""Embedding extraction: chunking per split, equality with the model's own output, hybrid modes, the disk cache,
resuming, and bad audio skipped and counted."""

import hashlib
import json
import os

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaModel
from myna_evaluation.extract import (
    CACHE_VERSION,
    EmbeddingExtractor,
    ExtractionSettings,
    cache_key,
    extract_split,
    model_identity,
    split_patch_modes,
)
from myna_evaluation.tasks import TaskSpec

from .conftest import TINY_MYNA


SPEC = TaskSpec(
    "toy", "single_label_classification", ("a", "b"), "myna_accuracy", "accuracy", (("Toy", "accuracy"),), "test"
)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tone(seconds, frequency=440.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def toy_dataset(tmp_path, with_bad=True):
    """Four tracks as wav paths (one 22.05 kHz), and an empty file that cannot decode."""
    paths, ids = [], []
    for i, (seconds, rate) in enumerate([(4.0, 16000), (7.0, 16000), (2.0, 22050), (5.0, 16000)]):
        path = str(tmp_path / f"track{i}.wav")
        sf.write(path, tone(seconds, 220 * (i + 1), rate), rate)
        paths.append(path)
        ids.append(f"t{i}")
    if with_bad:
        bad = tmp_path / "broken.wav"
        bad.write_bytes(b"")
        paths.insert(2, str(bad))
        ids.insert(2, "broken")
    labels = [i % 2 for i in range(len(paths))]
    return datasets.Dataset.from_dict({"id": ids, "audio": paths, "label": labels})


def expected_chunks(seconds, hop, chunk=96):
    frames = int(seconds * 16000) // 512 + 1
    return max(0, (frames - chunk) // hop + 1)


def test_chunks_overlap_on_train_only_and_bad_audio_is_skipped(tmp_path, tiny_myna_folder):
    dataset = toy_dataset(tmp_path)
    extractor = EmbeddingExtractor(tiny_myna_folder, batch_size=4)
    settings = ExtractionSettings(train_hop_frames=32, progress=False)
    train = extract_split(extractor, SPEC, dataset, "train", settings)
    test = extract_split(extractor, SPEC, dataset, "test", settings)
    assert train.skipped == ["broken"] and test.skipped == ["broken"]
    assert train.track_ids == ["t0", "t1", "t2", "t3"]
    assert train.labels == [0, 1, 1, 0]  # the labels of the kept rows, in order
    durations = [4.0, 7.0, 2.0, 5.0]  # t2 is resampled from 22.05 kHz; 2 s pads to one chunk
    train_counts = np.bincount(train.track_index, minlength=4)
    test_counts = np.bincount(test.track_index, minlength=4)
    assert list(train_counts) == [max(1, expected_chunks(d, 32)) for d in durations]
    assert list(test_counts) == [max(1, expected_chunks(d, 96)) for d in durations]
    assert train.embeddings.shape == (train_counts.sum(), 32) and train.embeddings.dtype == np.float32


def test_embeddings_equal_the_models_pooled_output(tmp_path, tiny_myna_folder):
    dataset = toy_dataset(tmp_path, with_bad=False)
    extractor = EmbeddingExtractor(tiny_myna_folder, batch_size=3)
    result = extract_split(extractor, SPEC, dataset, "validation", ExtractionSettings(progress=False))
    model = MynaModel.from_pretrained(tiny_myna_folder).eval()
    audio, _ = sf.read(dataset[1]["audio"], dtype="float32")  # the 16-bit samples the file holds
    features = MynaFeatureExtractor.from_config(model.config)(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        direct = model(features["input_values"]).pooler_output.numpy()
    np.testing.assert_allclose(result.embeddings[result.track_index == 1], direct, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(result.track_means()[1], direct.mean(0), atol=1e-5, rtol=1e-4)


def test_cache_is_reused_and_an_interrupted_extraction_resumes(tmp_path, tiny_myna_folder, monkeypatch):
    dataset = toy_dataset(tmp_path, with_bad=True)
    settings = ExtractionSettings(cache_dir=str(tmp_path / "cache"), tracks_per_shard=2, progress=False)
    extractor = EmbeddingExtractor(tiny_myna_folder)
    first = extract_split(extractor, SPEC, dataset, "test", settings)
    (folder,) = os.listdir(tmp_path / "cache")
    shards = sorted(f for f in os.listdir(tmp_path / "cache" / folder) if f.startswith("shard_"))
    assert shards == ["shard_0000000.npz", "shard_0000002.npz", "shard_0000004.npz"]

    calls = []
    original = extractor.embed
    monkeypatch.setattr(
        extractor, "embed", lambda audios, hop, *protocol: calls.append(len(audios)) or original(audios, hop, *protocol)
    )
    again = extract_split(extractor, SPEC, dataset, "test", settings)
    assert calls == []  # everything came from the cache
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    assert again.skipped == first.skipped == ["broken"]

    os.remove(tmp_path / "cache" / folder / shards[1])  # as if interrupted while writing the second shard
    resumed = extract_split(extractor, SPEC, dataset, "test", settings)
    assert calls == [1]  # only the missing shard's one decodable track ("broken" is skipped) was embedded
    np.testing.assert_allclose(resumed.embeddings, first.embeddings, atol=1e-6)
    np.testing.assert_array_equal(resumed.track_index, first.track_index)

    # Another split, or other chunking, is another cache entry.
    extract_split(extractor, SPEC, dataset, "train", settings)
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_model_identity_changes_with_the_weights(tmp_path, tiny_myna_folder):
    other = tmp_path / "other"
    torch.manual_seed(1)
    MynaModel(MynaConfig(**TINY_MYNA)).save_pretrained(str(other))
    assert model_identity(tiny_myna_folder) == model_identity(tiny_myna_folder)
    assert model_identity(tiny_myna_folder) != model_identity(str(other))
    with pytest.raises(FileNotFoundError, match="is not a model folder"):
        model_identity(str(tmp_path / "nowhere"))


def test_hybrid_model_gives_square_vertical_and_both(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "hybrid"
    MynaModel(MynaConfig.from_variant("hybrid", **TINY_MYNA)).save_pretrained(str(path))
    extractor = EmbeddingExtractor(str(path))
    assert extractor.patch_modes == ["square", "vertical", "both"]
    audio = tone(4.0)
    (both,) = extractor.embed([audio], hop_frames=96)
    assert both.shape[1] == 64
    modes = split_patch_modes(both, 32, extractor.patch_modes)
    model = MynaModel.from_pretrained(str(path)).eval()
    features = MynaFeatureExtractor.from_config(model.config)(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        for mode in ("square", "vertical"):
            direct = model(features["input_values"], patch_mode=mode).pooler_output.numpy()
            np.testing.assert_allclose(modes[mode], direct, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(modes["both"], both)


def test_generated_audio_dicts_are_embedded(tmp_path, tiny_myna_folder):
    from myna_evaluation.tasks import load_synthetic_task, synthetic_splits

    corpus = synthetic_splits((2, 1, 1), duration=4.0, cache_dir=str(tmp_path / "synth"))
    spec, dataset = load_synthetic_task("synthetic-style", (2, 1, 1), 4.0, corpus=corpus)
    result = extract_split(
        EmbeddingExtractor(tiny_myna_folder), spec, dataset["train"], "train", ExtractionSettings(progress=False)
    )
    assert result.skipped == [] and len(result.track_ids) == 2
    assert np.bincount(result.track_index).tolist() == [expected_chunks(4.0, 48)] * 2


def test_encoded_audio_structs_are_decoded(tmp_path, tiny_myna_folder):
    from myna_evaluation.tasks import ENCODED_AUDIO

    path = tmp_path / "x.wav"
    sf.write(str(path), tone(4.0), 16000)
    dataset = datasets.Dataset.from_dict(
        {"id": ["x"], "audio": [{"bytes": path.read_bytes(), "path": "x.wav"}], "label": [0]},
        features=datasets.Features(
            {"id": datasets.Value("string"), "audio": ENCODED_AUDIO, "label": datasets.Value("int64")}
        ),
    )
    result = extract_split(EmbeddingExtractor(tiny_myna_folder), SPEC, dataset, "test", ExtractionSettings(progress=False))
    assert result.skipped == [] and result.embeddings.shape == (1, 32)


def test_other_transformers_audio_models_are_mean_pooled(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
    )
    folder = tmp_path / "w2v"
    Wav2Vec2Model(config).save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(str(folder))
    extractor = EmbeddingExtractor(str(folder))
    audio = tone(7.0)
    (chunks,) = extractor.embed([audio], hop_frames=96)
    assert chunks.shape == (2, 16)  # two windows of 96 x 512 samples in 7 s
    inputs = extractor.feature_extractor([audio[: 96 * 512]], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        direct = extractor.model(**inputs).last_hidden_state.mean(1).numpy()
    np.testing.assert_allclose(chunks[:1], direct, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("damage", [b"", b"not a zip file at all", "truncate"])
def test_a_corrupt_shard_is_recomputed(tmp_path, tiny_myna_folder, damage):
    dataset = toy_dataset(tmp_path, with_bad=False)
    settings = ExtractionSettings(cache_dir=str(tmp_path / "cache"), tracks_per_shard=2, progress=False)
    extractor = EmbeddingExtractor(tiny_myna_folder)
    first = extract_split(extractor, SPEC, dataset, "test", settings)
    (folder,) = os.listdir(tmp_path / "cache")
    shard = tmp_path / "cache" / folder / "shard_0000002.npz"
    content = shard.read_bytes()
    shard.write_bytes(content[: len(content) // 2] if damage == "truncate" else damage)

    again = extract_split(extractor, SPEC, dataset, "test", settings)
    np.testing.assert_allclose(again.embeddings, first.embeddings, atol=1e-6)
    np.testing.assert_array_equal(again.track_index, first.track_index)
    assert again.track_ids == first.track_ids
    assert np.load(shard)["embeddings"].shape[0] > 0  # rewritten whole


def test_hub_dataset_revision_is_part_of_the_cache_signature(tmp_path, monkeypatch):
    from myna_evaluation.tasks import dataset_signature, load_paper_task

    path = str(tmp_path / "clip.wav")
    sf.write(path, tone(1.0), 16000)
    requested = []

    def fake_load_dataset(hub_id, revision=None):
        requested.append((hub_id, revision))
        splits = {}
        for split in ("train", "validation", "test"):
            data = datasets.Dataset.from_dict({"audio": [path], "genre": ["blues"]})
            data = data.cast_column("audio", datasets.Audio(sampling_rate=16000))
            data._fingerprint = f"{revision}-{split}"  # datasets names it after the revision's cache folder
            splits[split] = data
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    signatures = {}
    for path_or_id in ("m-a-p/GTZAN@v1", "m-a-p/GTZAN@v2", "m-a-p/GTZAN"):
        spec, dataset = load_paper_task("gtzan", path_or_id)
        signatures[path_or_id] = dataset_signature(spec, dataset["test"])
    assert requested == [("m-a-p/GTZAN", "v1"), ("m-a-p/GTZAN", "v2"), ("m-a-p/GTZAN", None)]
    assert len(set(signatures.values())) == 3  # same ids and audio, three snapshots, three cache entries


def chunks_of(audio, hop_frames):
    extract = MynaFeatureExtractor.from_config(MynaConfig(**TINY_MYNA))
    return extract(audio, sampling_rate=16000, hop_frames=hop_frames, return_tensors="pt")["input_values"]


def _features(model, audio):
    return MynaFeatureExtractor.from_config(model.config)(audio, sampling_rate=16000, return_tensors="pt")


def test_all_layers_come_from_one_forward_and_are_the_pooled_hidden_states(tiny_myna_folder):
    """`layers="all"` on a 2-block model: 3 embeddings per chunk (0 the embedding layer, 1 the first block, 2 the
    last block after the final LayerNorm, the `last` embedding), all from a single forward."""
    extractor = EmbeddingExtractor(tiny_myna_folder, batch_size=64)
    forwards = []
    extractor.model.register_forward_hook(lambda module, args, output: forwards.append(1))
    audio = tone(7.0)
    (layers,) = extractor.embed([audio], hop_frames=48, layers="all")
    assert len(forwards) == 1 and extractor.num_layers == 3
    assert layers.shape == (len(chunks_of(audio, 48)), 3, 32) and layers.dtype == np.float32
    (last,) = extractor.embed([audio], hop_frames=48)

    model = MynaModel.from_pretrained(tiny_myna_folder).eval()
    chunks = chunks_of(audio, 48)
    with torch.no_grad():
        output = model(chunks, output_hidden_states=True)
    for index in (0, 1):
        np.testing.assert_allclose(layers[:, index], output.hidden_states[index].mean(1).numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(layers[:, 2], output.pooler_output.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(layers[:, 2], last, atol=1e-5, rtol=1e-4)
    assert not np.allclose(layers[:, 0], layers[:, 2], atol=1e-2)  # three different embeddings, not one repeated


def test_meanstd_doubles_the_width_and_its_second_half_is_the_token_std(tiny_myna_folder):
    extractor = EmbeddingExtractor(tiny_myna_folder)
    audio = tone(7.0, 330.0)
    (mean,) = extractor.embed([audio], hop_frames=96)
    (meanstd,) = extractor.embed([audio], hop_frames=96, pooling="meanstd")
    assert meanstd.shape == (2, 64)
    np.testing.assert_array_equal(meanstd[:, :32], mean)  # the mean half is the model's own pooled output
    model = MynaModel.from_pretrained(tiny_myna_folder).eval()
    with torch.no_grad():
        tokens = model(_features(model, audio)["input_values"]).last_hidden_state  # (chunks, 48, 32)
    np.testing.assert_allclose(meanstd[:, 32:], tokens.std(1, unbiased=False).numpy(), atol=1e-5, rtol=1e-4)
    assert meanstd[:, 32:].min() > 0


def test_hybrid_meanstd_at_every_layer_keeps_each_modes_half(tmp_path):
    """A hybrid's layers come from one "both" forward; each half of a layer is that patch mode's [mean ; std],
    equal to the mode's own forward."""
    torch.manual_seed(0)
    path = tmp_path / "hybrid"
    MynaModel(MynaConfig.from_variant("hybrid", **TINY_MYNA)).save_pretrained(str(path))
    extractor = EmbeddingExtractor(str(path))
    audio = tone(4.0)
    (layers,) = extractor.embed([audio], hop_frames=96, layers="all", pooling="meanstd")
    assert layers.shape == (1, 3, 128)
    modes = split_patch_modes(layers, 64, ["square", "vertical"])
    model = MynaModel.from_pretrained(str(path)).eval()
    features = _features(model, audio)["input_values"]
    for mode in ("square", "vertical"):
        with torch.no_grad():
            output = model(features, patch_mode=mode, output_hidden_states=True)
        states = [*output.hidden_states[:-1], output.last_hidden_state]
        for index, hidden in enumerate(states):
            expected = torch.cat([hidden.mean(1), hidden.std(1, unbiased=False)], -1).numpy()
            np.testing.assert_allclose(modes[mode][:, index], expected, atol=1e-4, rtol=1e-3)


def test_default_cache_key_is_unchanged_and_caches_of_other_protocols_never_mix(tmp_path, tiny_myna_folder, monkeypatch):
    from myna_evaluation.tasks import dataset_signature

    dataset = toy_dataset(tmp_path, with_bad=False)
    extractor = EmbeddingExtractor(tiny_myna_folder)
    signature = dataset_signature(SPEC, dataset)
    # The key written before --layers and --pooling existed: a default cache from then is found (same embeddings).
    before = {
        "version": CACHE_VERSION, "model": extractor.identity, "source": SPEC.source, "split": "test",
        "data": signature, "patch_mode": extractor.patch_mode, "chunk_frames": 96, "hop_frames": 96,
    }  # fmt: skip
    old_key = hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:20]
    assert cache_key(extractor, SPEC, "test", signature, 96) == old_key

    calls = []
    original = extractor.embed
    monkeypatch.setattr(
        extractor, "embed", lambda audios, hop, *protocol: calls.append(protocol) or original(audios, hop, *protocol)
    )
    results = {}
    for layers, pooling in (("last", "mean"), ("all", "mean"), ("last", "meanstd"), ("all", "meanstd")):
        settings = ExtractionSettings(cache_dir=str(tmp_path / "cache"), progress=False, layers=layers, pooling=pooling)
        results[layers, pooling] = extract_split(extractor, SPEC, dataset, "test", settings)
    assert len(calls) == 4 and len(os.listdir(tmp_path / "cache")) == 4  # none reused another's cache
    assert f"test-{old_key}" in os.listdir(tmp_path / "cache")
    shapes = {key: r.embeddings.shape[1:] for key, r in results.items()}
    assert shapes == {("last", "mean"): (32,), ("all", "mean"): (3, 32), ("last", "meanstd"): (64,),
                      ("all", "meanstd"): (3, 64)}  # fmt: skip
    # The defaults are the model's pooled output itself, bit for bit.
    model = MynaModel.from_pretrained(tiny_myna_folder).eval()
    audio, _ = sf.read(dataset[1]["audio"], dtype="float32")
    with torch.no_grad():
        direct = model(_features(model, audio)["input_values"]).pooler_output.numpy()
    np.testing.assert_array_equal(results["last", "mean"].embeddings[results["last", "mean"].track_index == 1], direct)
    assert results["all", "mean"].track_means().shape == (4, 3, 32)
    again = extract_split(extractor, SPEC, dataset, "test", settings)  # all/meanstd again: from its own cache
    assert len(calls) == 4
    np.testing.assert_array_equal(again.embeddings, results["all", "meanstd"].embeddings)
