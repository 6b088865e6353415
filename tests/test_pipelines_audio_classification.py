"""Audio classification with a Myna classifier folder: transformers' stock pipeline on 16 kHz arrays, and
`MynaAudioClassificationPipeline` on files of any rate and length, single- and multi-label, labels from id2label."""

import shutil

import pytest
import torch

import myna_pipelines  # noqa: F401
from modeling_myna import MynaFeatureExtractor, MynaForAudioClassification
from modeling_myna.audio_utils import load_audio
from myna_pipelines import MynaAudioClassificationPipeline
from transformers import pipeline
from transformers.pipelines import AudioClassificationPipeline

from .pipelines_support import music_like, save_tiny_model, write_audio


GENRES = {0: "jazz", 1: "rock", 2: "techno"}
TAGS = {0: "guitar", 1: "piano", 2: "drums", 3: "voice"}


def classifier_folder(tmp_path_factory, id2label, problem_type):
    return save_tiny_model(
        tmp_path_factory.mktemp(problem_type),
        variant="base",
        head="classification",
        num_labels=len(id2label),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        problem_type=problem_type,
    )


@pytest.fixture(scope="module")
def single_label(tmp_path_factory):
    return classifier_folder(tmp_path_factory, GENRES, "single_label_classification")


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory):
    return classifier_folder(tmp_path_factory, TAGS, "multi_label_classification")


def track_logits(folder, audio):
    """`(num_labels,)` logits of one 16 kHz recording: the model's own chunk averaging via `audio_index`."""
    model = MynaForAudioClassification.from_pretrained(folder).eval()
    features = MynaFeatureExtractor.from_pretrained(folder)(audio, sampling_rate=16_000, return_tensors="pt")
    assert features["input_values"].shape[0] > 1  # several chunks, so that the averaging matters
    with torch.no_grad():
        return model(**features).logits[0]


def as_dict(predictions):
    return {p["label"]: p["score"] for p in predictions}


def test_stock_pipeline_single_label_on_a_16khz_array(single_label):
    classify = pipeline("audio-classification", model=single_label, device="cpu")
    assert isinstance(classify, AudioClassificationPipeline) and isinstance(classify.model, MynaForAudioClassification)
    audio = music_like(10.0, 16_000)
    predictions = classify(audio)

    expected = track_logits(single_label, audio).softmax(-1)
    assert [p["label"] for p in predictions] == [GENRES[i] for i in expected.argsort(descending=True).tolist()]
    scores = as_dict(predictions)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    for i, label in GENRES.items():
        assert scores[label] == pytest.approx(expected[i].item(), abs=1e-5)


def test_stock_pipeline_multi_label_uses_sigmoid(multi_label):
    classify = pipeline("audio-classification", model=multi_label, device="cpu")
    audio = music_like(10.0, 16_000, seed=1)
    scores = as_dict(classify(audio, top_k=None))
    expected = track_logits(multi_label, audio).sigmoid()
    assert set(scores) == set(TAGS.values())
    for i, label in TAGS.items():
        assert scores[label] == pytest.approx(expected[i].item(), abs=1e-5)
    assert sum(scores.values()) != pytest.approx(1.0, abs=1e-3)


@pytest.mark.skipif(shutil.which("ffmpeg") is not None, reason="FFmpeg is installed: the stock pipeline reads files")
def test_stock_pipeline_cannot_read_files_without_ffmpeg(single_label, tmp_path):
    # Why MynaAudioClassificationPipeline exists: transformers decodes paths and bytes with FFmpeg only.
    classify = pipeline("audio-classification", model=single_label, device="cpu")
    with pytest.raises(ValueError, match="ffmpeg was not found"):
        classify(write_audio(tmp_path / "clip.wav", 4.0))


def test_stock_pipeline_in_float16_classifies_a_file(single_label, tmp_path):
    # transformers' stock pipeline casts the extractor's output to the model's dtype: float16 input_values.
    path = write_audio(tmp_path / "clip.flac", 10.0, sampling_rate=44_100, channels=2)
    audio, _ = load_audio(path, sampling_rate=16_000)  # the stock pipeline reads files with FFmpeg only
    classify = pipeline("audio-classification", model=single_label, device="cpu", dtype=torch.float16)
    assert classify.model.dtype == torch.float16
    half = as_dict(classify(audio, top_k=None))
    full = as_dict(pipeline("audio-classification", model=single_label, device="cpu")(audio, top_k=None))
    assert half.keys() == full.keys() == set(GENRES.values())
    for label, score in full.items():
        assert half[label] == pytest.approx(score, abs=2e-3)
    # Ours reads the file itself, in float16 too.
    ours = pipeline("audio-classification", model=single_label, device="cpu", dtype=torch.float16,
                    pipeline_class=MynaAudioClassificationPipeline)
    for label, score in as_dict(ours(path, top_k=None)).items():
        assert score == pytest.approx(full[label], abs=2e-3)


def test_myna_pipeline_reads_any_file_and_scores_like_the_stock_pipeline(single_label, tmp_path):
    path = write_audio(tmp_path / "clip.ogg", 10.0, sampling_rate=44_100, channels=2)
    audio, _ = load_audio(path, sampling_rate=16_000)
    stock = as_dict(pipeline("audio-classification", model=single_label, device="cpu")(audio))

    classify = pipeline(
        "audio-classification", model=single_label, device="cpu", pipeline_class=MynaAudioClassificationPipeline
    )
    assert isinstance(classify, MynaAudioClassificationPipeline)
    for batch_size in [1, 32]:  # one chunk per forward, or the whole track: the same average
        predictions = classify(path, batch_size=batch_size)
        assert len(predictions) == 3 and predictions[0]["score"] >= predictions[1]["score"] >= predictions[2]["score"]
        for label, score in as_dict(predictions).items():
            assert score == pytest.approx(stock[label], abs=1e-5)
    assert len(classify(path, top_k=1)) == 1
    assert {p["label"] for p in classify([path, path], top_k=None)[1]} == set(GENRES.values())


def test_myna_pipeline_multi_label_and_function_to_apply(multi_label):
    classify = pipeline(
        "audio-classification", model=multi_label, device="cpu", pipeline_class=MynaAudioClassificationPipeline
    )
    audio = music_like(10.0, 16_000, seed=2)
    logits = track_logits(multi_label, audio)
    scores = as_dict(classify({"array": audio, "sampling_rate": 16_000}, top_k=None))
    raw = as_dict(classify({"array": audio, "sampling_rate": 16_000}, top_k=None, function_to_apply="none"))
    for i, label in TAGS.items():
        assert scores[label] == pytest.approx(logits.sigmoid()[i].item(), abs=1e-5)
        assert raw[label] == pytest.approx(logits[i].item(), abs=1e-5)
    with pytest.raises(ValueError, match="function_to_apply='argmax' is not one of"):
        classify(audio, sampling_rate=16_000, function_to_apply="argmax")
    with pytest.raises(ValueError, match="top_k must be a positive integer or None"):
        classify(audio, sampling_rate=16_000, top_k=0)


def test_regression_head_returns_the_averaged_outputs(tmp_path_factory):
    folder = classifier_folder(tmp_path_factory, {0: "arousal", 1: "valence"}, "regression")
    classify = pipeline(
        "audio-classification", model=folder, device="cpu", pipeline_class=MynaAudioClassificationPipeline
    )
    audio = music_like(10.0, 16_000, seed=3)
    outputs = as_dict(classify(audio, sampling_rate=16_000))
    logits = track_logits(folder, audio)
    assert outputs == pytest.approx({"arousal": logits[0].item(), "valence": logits[1].item()}, abs=1e-5)
