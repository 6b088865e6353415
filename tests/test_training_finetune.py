"""Tests of fine-tuning: the chunk collator against hand-built batches, `MynaTrainer` (layer-wise decay, frozen
encoder) and `training/finetune.py` end to end on generated tasks and files (single-label, multi-label, regression),
the saved folder in both audio-classification pipelines, the model card, the Hub upload up to the network, and a
2-process run against one process."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoModelForAudioClassification, TrainingArguments, pipeline

import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
from modeling_myna import MynaConfig, MynaDataCollatorForAudioClassification, MynaForAudioClassification, MynaModel
from myna_training import finetune
from myna_training.finetune_arguments import parse_finetune_arguments
from myna_training.trainer import MynaTrainer, layer_id

from .conftest import TINY_MYNA


FINETUNE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "finetune.py")
QUICK = ["--use_cpu", "--disable_tqdm", "true", "--warmup_steps", "0", "--save_total_limit", "1", "--seed", "0",
         "--dataloader_num_workers", "0", "--report_to", "none"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny random Myna-Base and Myna-Hybrid folders and a chunk cache shared by the runs of this module."""
    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    MynaModel(MynaConfig(**TINY_MYNA)).save_pretrained(str(root / "tiny-base"))
    MynaModel(MynaConfig.from_variant("hybrid", **TINY_MYNA)).save_pretrained(str(root / "tiny-hybrid"))
    return root


def run(work, name, *args):
    output_dir = work / name
    return finetune.main(QUICK + ["--output_dir", str(output_dir), "--cache_dir", str(work / "cache"), *args])


# ---------------------------------------------------------------------------------------------------------------
# The collator


def test_collator_concatenates_chunks_and_builds_audio_index_and_labels():
    a, b = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6), -np.ones((1, 4, 6), dtype=np.float32)
    batch = MynaDataCollatorForAudioClassification()(
        [{"input_values": a, "label": 2, "id": "x"}, {"input_values": b.tolist(), "label": 0, "audio_index": [0]}]
    )
    torch.testing.assert_close(batch["input_values"], torch.from_numpy(np.concatenate([a, b])))
    assert batch["audio_index"].tolist() == [0, 0, 0, 1]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [2, 0]

    # Multi-hot and regression targets are float rows; `labels` wins over `label`.
    tags = MynaDataCollatorForAudioClassification()(
        [{"input_values": a[:1], "labels": [1, 0, 1]}, {"input_values": b, "labels": [0, 0, 1]}]
    )
    assert tags["labels"].dtype == torch.float32 and tags["labels"].tolist() == [[1, 0, 1], [0, 0, 1]]
    targets = MynaDataCollatorForAudioClassification()([{"input_values": a, "label": [0.5, -1.0]}])
    assert targets["labels"].tolist() == [[0.5, -1.0]]


def test_collator_cuts_whole_spectrograms_and_pads_short_ones():
    spectrogram = np.random.default_rng(0).random((4, 20), dtype=np.float32)
    short = np.ones((4, 3), dtype=np.float32)
    batch = MynaDataCollatorForAudioClassification(chunk_frames=6)(
        [{"input_values": spectrogram, "label": 1}, {"input_values": short, "label": 0}]
    )
    # 20 frames -> three 6-frame windows (tail of 2 dropped); 3 frames -> one window padded with zeros.
    expected = [spectrogram[:, 0:6], spectrogram[:, 6:12], spectrogram[:, 12:18], np.pad(short, ((0, 0), (0, 3)))]
    torch.testing.assert_close(batch["input_values"], torch.from_numpy(np.stack(expected)))
    assert batch["audio_index"].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="pass chunk_frames"):
        MynaDataCollatorForAudioClassification()([{"input_values": spectrogram}])
    with pytest.raises(ValueError, match="no 'input_values'"):
        MynaDataCollatorForAudioClassification()([{"label": 1}])


def test_random_crops_are_windows_of_the_track_seeded_by_epoch_and_example():
    chunks = np.random.default_rng(1).random((3, 4, 6), dtype=np.float32)  # a track of 18 frames in 3 chunks
    track = np.concatenate(list(chunks), axis=1)
    collator = MynaDataCollatorForAudioClassification(random_crop=True, seed=7)
    examples = [{"input_values": chunks, "label": 0, "example_index": i} for i in range(8)]

    first = collator(examples)["input_values"].numpy()
    assert first.shape == (8, 4, 6)
    starts = []
    for crop in first:  # every crop is a 6-frame window of the rejoined track
        matches = [s for s in range(13) if np.array_equal(track[:, s : s + 6], crop)]
        assert matches
        starts.append(matches[0])
    assert len(set(starts)) > 1
    # Depends only on (seed, epoch, example_index): the same in any batch order or process, new each epoch.
    torch.testing.assert_close(collator(examples[::-1])["input_values"], torch.from_numpy(first[::-1].copy()))
    collator.set_epoch(1)
    assert not np.array_equal(collator(examples)["input_values"].numpy(), first)
    with pytest.raises(ValueError, match="example_index"):
        collator([{"input_values": chunks}])


def test_spec_augment_blanks_time_and_frequency_bands():
    chunk = np.ones((1, 16, 24), dtype=np.float32)
    collator = MynaDataCollatorForAudioClassification(
        random_crop=True, time_mask_frames=5, num_time_masks=1, freq_mask_bins=4, num_freq_masks=1, seed=0
    )
    masked = collator([{"input_values": chunk, "example_index": i} for i in range(16)])["input_values"]
    zero_columns = (masked == 0).all(dim=1)  # (16, 24) frames blanked at every bin
    zero_rows = (masked == 0).all(dim=2)  # (16, 16) bins blanked at every frame
    assert zero_columns.sum(-1).max() <= 5 and zero_rows.sum(-1).max() <= 4
    assert zero_columns.any() and zero_rows.any()
    # Everything else is untouched; evaluation batches (no random crop) are never masked.
    assert ((masked == 0) | (masked == 1)).all()
    unmasked = MynaDataCollatorForAudioClassification(time_mask_frames=5, freq_mask_bins=4)([{"input_values": chunk}])
    assert (unmasked["input_values"] == 1).all()


# ---------------------------------------------------------------------------------------------------------------
# MynaTrainer


def test_layerwise_decay_sets_the_learning_rate_of_each_layer(tmp_path):
    config = MynaConfig(num_labels=3, **TINY_MYNA)  # 2 blocks
    model = MynaForAudioClassification(config)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.05, use_cpu=True,
                             report_to="none")
    trainer = MynaTrainer(model=model, args=args, layer_decay=0.5)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}
    expected_depth = {
        "myna.embeddings.patch_embeddings.0.projection.weight": 0,
        "myna.encoder.layers.0.attention.qkv.weight": 1,
        "myna.encoder.layers.1.mlp.fc2.bias": 2,
        "myna.layernorm.weight": 3,
        "classifier.weight": 3,
    }
    parameters = dict(model.named_parameters())
    for name, depth in expected_depth.items():
        assert layer_id(name, 2) == depth
        lr, weight_decay = lr_of[id(parameters[name])]
        assert lr == pytest.approx(1e-3 * 0.5 ** (3 - depth)), name
        assert weight_decay == (0.0 if name.endswith("bias") or "layernorm" in name else 0.05), name
    assert len(lr_of) == len(parameters)  # every parameter in exactly one group


def test_a_60_minute_clip_evaluates_in_bounded_forward_passes(tmp_path):
    # An hour of audio is 1,172 chunks of 3 s. Evaluated with max_eval_chunks=100, no forward pass takes more than
    # 100 chunks (the clip is split across passes), the memory the passes use stays far below one pass over the
    # whole clip, and the clip's logits and loss are those of one pass (the mean of its chunks' logits).
    import psutil

    from myna_training.finetune_arguments import MynaFinetuningArguments

    torch.manual_seed(0)
    model = MynaForAudioClassification(MynaConfig(num_labels=3, **TINY_MYNA)).eval()
    hour = torch.rand(1172, 128, 96, generator=torch.Generator().manual_seed(0)) ** 4 * 1e4  # 57.5 MB
    short = torch.rand(3, 128, 96, generator=torch.Generator().manual_seed(1)) * 1e3
    clips = [{"input_values": hour, "label": 2}, {"input_values": short, "label": 0}]
    with torch.no_grad():
        reference = model(torch.cat([hour, short]), audio_index=torch.tensor([0] * 1172 + [1] * 3),
                          labels=torch.tensor([2, 0]))

    passes, process = [], psutil.Process()
    state = {"before": None, "peak": 0}

    def before_pass(module, args, kwargs):
        passes.append(len(kwargs.get("input_values", args[0] if args else None)))
        if state["before"] is None:
            state["before"] = process.memory_info().rss

    def inside_pass(module, args, output):  # the activations of the pass are alive here
        state["peak"] = max(state["peak"], process.memory_info().rss)

    model.myna.register_forward_pre_hook(before_pass, with_kwargs=True)
    for layer in model.myna.encoder.layers:
        layer.register_forward_hook(inside_pass)
    args = MynaFinetuningArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, use_cpu=True,
                                   report_to="none", max_eval_chunks=100, dataloader_num_workers=0,
                                   eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    assert MynaFinetuningArguments.max_eval_chunks == 512  # the default: ~1 GiB of ViT-S activations
    trainer = MynaTrainer(model=model, args=args, eval_data_collator=MynaDataCollatorForAudioClassification())
    prediction = trainer.predict(clips)
    assert max(passes) <= 100 and sum(passes) == 1175 and len(passes) == 12
    np.testing.assert_allclose(prediction.predictions, reference.logits.numpy(), rtol=1e-5, atol=1e-6)
    assert prediction.metrics["test_loss"] == pytest.approx(reference.loss.item(), rel=1e-5)
    assert prediction.label_ids.tolist() == [2, 0]
    # One pass over the hour would hold its patches twice (the patch vectors and their LayerNorm, 57.5 MB each)
    # on top of the batch; passes of 100 chunks hold a twelfth of that.
    assert state["peak"] - state["before"] < hour.numel() * 4 / 2, (state["peak"] - state["before"]) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# finetune.py end to end


@pytest.fixture(scope="module")
def style_run(work):
    """Full fine-tuning of a tiny random Myna on the generated 5-style task (chance: 0.2)."""
    summary = run(
        work, "style", "--model_name_or_path", str(work / "tiny-base"), "--task", "synthetic-style",
        "--synthetic_sizes", "64,32,32", "--synthetic_duration", "4", "--num_train_epochs", "6",
        "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
    )
    return summary


def test_finetuning_lowers_the_loss_and_beats_chance(style_run):
    losses = style_run["train_loss"]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0] and losses[-1] < min(losses[:3])
    assert style_run["validation"]["validation_accuracy"] > 0.4  # 5 balanced-ish styles: chance 0.2
    assert style_run["test"]["test_accuracy"] > 0.3
    assert style_run["num_clips"] == {"train": 64, "validation": 32, "test": 32}


def test_a_finished_folder_is_refused_and_resumed_only_by_the_same_run(work, style_run):
    from myna_training.finetune_run import checkpoints

    same = ["--model_name_or_path", str(work / "tiny-base"), "--task", "synthetic-style", "--synthetic_sizes",
            "64,32,32", "--synthetic_duration", "4", "--num_train_epochs", "6", "--per_device_train_batch_size", "16",
            "--learning_rate", "3e-3"]
    with pytest.raises(ValueError, match=r"not empty .*--resume_from_checkpoint latest.*--overwrite_output_dir"):
        run(work, "style", *same)  # refused before any work: the first run's model stays
    with pytest.raises(ValueError, match=r"cannot resume: run \w+ .*seed: 0 -> 1"):
        run(work, "style", *same, "--seed", "1", "--resume_from_checkpoint", "latest")
    found = checkpoints(style_run["output_dir"])
    assert found and all(os.path.isfile(os.path.join(c, "run.json")) for c in found)  # a checkpoint names its run
    music = work / "music"
    music.mkdir(exist_ok=True)
    (music / "a.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="holds audio"):
        run(work, "music", *same, "--overwrite_output_dir")  # never into a folder of music, whatever the flags
    assert sorted(os.listdir(music)) == ["a.flac"]


def test_best_checkpoint_reloads_with_the_same_predictions(style_run):
    from myna_evaluation.tasks import load_synthetic_task

    best, final = style_run["best_checkpoint"], style_run["output_dir"]
    assert best is not None and os.path.isdir(best)
    _, task = load_synthetic_task("synthetic-style", sizes=(64, 32, 32), duration=4.0)
    extractor = modeling_myna.MynaFeatureExtractor.from_pretrained(final)
    audio = [a["array"] for a in task["validation"].with_format("numpy")["audio"]]
    features = extractor(audio, sampling_rate=16_000, return_tensors="pt")
    logits = {}
    for name, folder in (("best", best), ("final", final)):
        model = AutoModelForAudioClassification.from_pretrained(folder).eval()
        assert isinstance(model, MynaForAudioClassification)
        with torch.no_grad():
            logits[name] = model(features["input_values"], audio_index=features["audio_index"]).logits
    torch.testing.assert_close(logits["best"], logits["final"])  # load_best_model_at_end kept the best
    labels = torch.tensor(task["validation"]["label"])
    accuracy = (logits["final"].argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(style_run["validation"]["validation_accuracy"])


def test_saved_folder_classifies_in_both_pipelines_and_carries_a_card(style_run, tmp_path):
    import soundfile as sf

    from myna_pipelines import MynaAudioClassificationPipeline
    from myna_training.synthetic import STYLES, generate_clip

    folder = style_run["output_dir"]
    audio, _ = generate_clip(5, duration=20.0)  # longer than any training clip: 6 chunks
    model = MynaForAudioClassification.from_pretrained(folder).eval()
    features = modeling_myna.MynaFeatureExtractor.from_pretrained(folder)(audio, sampling_rate=16_000,
                                                                          return_tensors="pt")
    with torch.no_grad():
        expected = model(**features).logits[0].softmax(-1)

    stock = pipeline("audio-classification", model=folder, device="cpu")
    scores = {p["label"]: p["score"] for p in stock(audio, top_k=None)}
    assert set(scores) == set(STYLES)
    for i, style in enumerate(STYLES):
        assert scores[style] == pytest.approx(expected[i].item(), abs=1e-4)

    path = tmp_path / "song.wav"
    sf.write(path, audio, 16_000)
    myna = pipeline("audio-classification", model=folder, pipeline_class=MynaAudioClassificationPipeline)
    top = myna(str(path), top_k=2)
    assert top[0]["label"] == STYLES[int(expected.argmax())]
    assert top[0]["score"] == pytest.approx(expected.max().item(), abs=1e-4)

    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert "pipeline_tag: audio-classification" in card and "synthetic-style" in card
    assert "finetuning_mode: full" in card and "learning_rate: 0.003" in card
    validation = style_run["validation"]["validation_accuracy"]
    assert "| validation |" in card and f"{validation:.4f}" in card and "| test |" in card


def test_frozen_encoder_trains_only_the_head(work, style_run):
    summary = run(
        work, "frozen", "--model_name_or_path", str(work / "tiny-base"), "--task", "synthetic-style",
        "--synthetic_sizes", "64,32,32", "--synthetic_duration", "4", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--finetuning_mode", "frozen",
    )
    before = load_file(work / "tiny-base" / "model.safetensors")
    after = load_file(os.path.join(summary["output_dir"], "model.safetensors"))
    assert summary["num_trainable_parameters"] == 32 * 5 + 5
    assert {k for k in after if not k.startswith("classifier.")} == {f"myna.{k}" for k in before}
    for name, value in before.items():
        torch.testing.assert_close(after[f"myna.{name}"], value, rtol=0, atol=0, msg=name)


def test_multi_label_hybrid_with_mlp_head_masking_and_spec_augment(work):
    summary = run(
        work, "tags", "--model_name_or_path", str(work / "tiny-hybrid"), "--task", "synthetic-tags",
        "--synthetic_sizes", "32,16,16", "--synthetic_duration", "4", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--patch_mode", "vertical", "--classifier_hidden_size", "16",
        "--classifier_dropout", "0.25", "--token_mask_ratio", "0.5", "--time_mask_frames", "10",
        "--freq_mask_bins", "8", "--finetuning_mode", "layerwise",
    )
    assert "test_average_precision_macro" in summary["test"]
    model = AutoModelForAudioClassification.from_pretrained(summary["output_dir"])
    # The reported validation ROC-AUC is the one of the saved model: recomputed here from its logits, averaged over
    # each clip's chunks, with scikit-learn on the tags present in the split.
    from sklearn.metrics import average_precision_score, roc_auc_score

    from modeling_myna.audio_utils import load_audio
    from myna_evaluation.tasks import load_task
    from transformers import AutoFeatureExtractor

    _, task = load_task("synthetic-tags", sizes=(32, 16, 16), duration=4.0)
    extractor = AutoFeatureExtractor.from_pretrained(summary["output_dir"])
    audios = [load_audio(a, sampling_rate=16_000)[0] for a in task["validation"]["audio"]]
    features = extractor(audios, sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(features["input_values"], audio_index=features["audio_index"]).logits.double().numpy()
    targets = np.asarray(task["validation"]["label"])
    defined = (targets.sum(0) > 0) & (targets.sum(0) < len(targets))
    assert logits.shape == targets.shape and defined.sum() >= 2
    np.testing.assert_allclose(
        summary["validation"]["validation_roc_auc_macro"],
        roc_auc_score(targets[:, defined], logits[:, defined], average="macro"), rtol=0, atol=1e-6,
    )
    np.testing.assert_allclose(
        summary["validation"]["validation_average_precision_macro"],
        average_precision_score(targets[:, defined], logits[:, defined], average="macro"), rtol=0, atol=1e-6,
    )
    config = model.config
    assert config.problem_type == "multi_label_classification" and config.default_patch_mode == "vertical"
    assert model.classifier.dense.in_features == 32 and model.classifier.out_proj.out_features == config.num_labels
    # The square tokenizer never ran: it keeps its pre-trained weights.
    before = load_file(work / "tiny-hybrid" / "model.safetensors")
    after = load_file(os.path.join(summary["output_dir"], "model.safetensors"))
    square = [k for k in before if k.startswith("embeddings.patch_embeddings.0.")]
    assert square and all(torch.equal(before[k], after[f"myna.{k}"]) for k in square)
    scores = pipeline("audio-classification", model=summary["output_dir"])(np.zeros(64_000, np.float32), top_k=None)
    assert len(scores) == config.num_labels and all(0 < s["score"] < 1 for s in scores)  # sigmoid, not softmax


def test_regression_from_a_csv_and_single_label_from_an_audiofolder(work, tmp_path):
    from myna_training.synthetic import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "clips", 24, seed=3, duration=4.0, audio_format="flac")
    summary = run(
        work, "tempo-csv", "--model_name_or_path", str(work / "tiny-base"),
        "--train_file", str(folder / "metadata.csv"), "--audio_column_name", "file_name",
        "--label_column_name", "tempo", "--validation_split_percentage", "25", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "6",
    )
    assert summary["problem_type"] == "regression" and summary["num_clips"] == {"train": 18, "validation": 6}
    assert np.isfinite(summary["validation"]["validation_r2_tempo"])
    assert AutoModelForAudioClassification.from_pretrained(summary["output_dir"]).config.id2label == {0: "tempo"}

    summary = run(
        work, "style-folder", "--model_name_or_path", str(work / "tiny-base"), "--dataset_name", "audiofolder",
        "--data_dir", str(folder), "--label_column_name", "style", "--validation_split_percentage", "25",
        "--on_the_fly", "--num_train_epochs", "1", "--per_device_train_batch_size", "6",
    )
    config = AutoModelForAudioClassification.from_pretrained(summary["output_dir"]).config
    assert summary["problem_type"] == "single_label_classification"
    styles = {row.split(",")[-1] for row in (folder / "metadata.csv").read_text().splitlines()[1:]}
    assert set(config.label2id) == styles and "validation_accuracy" in summary["validation"]


def test_labels_of_a_csv_become_multi_hot_class_or_regression_targets(tmp_path):
    import csv

    from modeling_myna.audio_utils import load_audio
    from myna_training.finetune_arguments import FinetuneDataArguments
    from myna_training.synthetic import write_synthetic_folder

    folder = write_synthetic_folder(tmp_path / "clips", 6, seed=4, duration=1.0)
    with open(folder / "metadata.csv", encoding="utf-8") as f:
        rows = {row["file_name"]: row for row in csv.DictReader(f)}

    def load(**kwargs):
        args = FinetuneDataArguments(train_file=str(folder / "metadata.csv"), audio_column_name="file_name",
                                     validation_split_percentage=33, **kwargs)
        return finetune.load_finetuning_data(args, seed=0)

    spec, data = load(label_column_name="instruments", problem_type="multi_label_classification")
    assert (spec.problem_type, spec.metric, spec.primary) == ("multi_label_classification", "myna_tagging",
                                                                "roc_auc_macro")
    assert len(data["train"]) == 4 and len(data["validation"]) == 2
    assert list(spec.label_names) == sorted({t for row in rows.values() for t in row["instruments"].split(";")})
    for example in data["train"]:
        tags = set(rows[os.path.basename(example["audio"])]["instruments"].split(";"))
        assert example["label"] == [float(name in tags) for name in spec.label_names]
        assert os.path.isabs(example["audio"]) and load_audio(example["audio"])[0].size > 0

    spec, data = load(label_column_name="style")
    assert spec.problem_type == "single_label_classification" and spec.metric == "myna_accuracy"
    example = data["validation"][0]
    assert spec.label_names[example["label"]] == rows[os.path.basename(example["audio"])]["style"]

    spec, data = load(label_column_name="tempo", metric="myna_r2")
    assert spec.problem_type == "regression" and spec.label_names == ("tempo",)
    example = data["train"][0]
    assert example["label"] == [pytest.approx(float(rows[os.path.basename(example["audio"])]["tempo"]))]


def test_yaml_config_and_push_to_hub_up_to_the_network(work, tmp_path, monkeypatch):
    config = tmp_path / "finetune.yaml"
    config.write_text(
        "model_name_or_path: /models/myna\ntask: synthetic-key\nfinetuning_mode: layerwise\nlayer_decay: 0.6\n"
        "learning_rate: 0.0005\nbf16: false\n"
    )
    model_args, data_args, training_args = parse_finetune_arguments([str(config)])
    assert (model_args.finetuning_mode, model_args.layer_decay, data_args.task) == ("layerwise", 0.6, "synthetic-key")
    assert training_args.learning_rate == 5e-4 and training_args.load_best_model_at_end
    assert not training_args.metric_for_best_model_given  # the task's primary metric is used
    with pytest.raises(ValueError, match="name the data once"):
        parse_finetune_arguments(["--model_name_or_path", "x"])

    # HF_HUB_OFFLINE=1 (conftest): the upload is the one step that needs the network, and says so.
    with pytest.raises(RuntimeError, match=r"could not push .* is saved in .*hf upload"):
        finetune.push_folder_to_hub(str(tmp_path), "someone/myna-ft")
    calls = []
    from huggingface_hub import HfApi

    class Repo:
        repo_id = "someone/myna-ft"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id)) or Repo())
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    summary = run(
        work, "push", "--model_name_or_path", str(work / "tiny-base"), "--task", "synthetic-style",
        "--synthetic_sizes", "64,32,32", "--synthetic_duration", "4", "--max_train_samples", "16",
        "--max_eval_samples", "8", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
        "--push_to_hub", "--hub_model_id", "someone/myna-ft",
    )
    assert calls[0] == ("create", "someone/myna-ft")
    assert calls[1][1]["folder_path"] == summary["output_dir"] and "checkpoint-*" in calls[1][1]["ignore_patterns"]
    assert summary["hub_url"] == "https://huggingface.co/someone/myna-ft"


def test_two_processes_give_the_metrics_of_one(work, tmp_path):
    # 2 processes x 4 clips per step train like 1 process x 8: same order, crops (seeded by example), schedule.
    common = QUICK + [
        "--model_name_or_path", str(work / "tiny-base"), "--task", "synthetic-style", "--synthetic_sizes",
        "64,32,32", "--synthetic_duration", "4", "--max_train_samples", "32", "--max_eval_samples", "16",
        "--num_train_epochs", "2", "--learning_rate", "3e-3", "--cache_dir", str(work / "cache"),
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", FINETUNE,
               *common, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    two = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    one = finetune.main(common + ["--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")])
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (two["world_size"], one["world_size"]) == (2, 1)
    assert two["num_clips"] == one["num_clips"] == {"train": 32, "validation": 16, "test": 16}
    np.testing.assert_allclose(two["train_loss"], one["train_loss"], rtol=1e-4)
    for split in ("validation", "test"):
        assert two[split][f"{split}_accuracy"] == pytest.approx(one[split][f"{split}_accuracy"], abs=1e-6)
        assert two[split][f"{split}_loss"] == pytest.approx(one[split][f"{split}_loss"], rel=1e-4)
    assert os.path.basename(two["best_checkpoint"]) == os.path.basename(one["best_checkpoint"])


def scores(metrics: dict) -> dict:
    """The metrics of an evaluation without its timings."""
    return {k: v for k, v in metrics.items() if not k.endswith(("runtime", "per_second", "preparation_time"))}


RESUMABLE = ["--task", "synthetic-style", "--synthetic_sizes", "16,8,8", "--synthetic_duration", "4",
             "--num_train_epochs", "3", "--per_device_train_batch_size", "8", "--save_total_limit", "2"]


@pytest.fixture(scope="module")
def three_epochs(work):
    """A run of 3 epochs of 2 steps that keeps its best checkpoint (step 2) and its last (step 6): its summary and
    what it printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run(work, "three-epochs", "--model_name_or_path", str(work / "tiny-base"), *RESUMABLE)
    return summary, printed.getvalue()


def interrupted_copy(work, name: str, remove: tuple[str, ...]):
    """A copy of the three-epoch run's folder as an interruption would have left it, without `remove`."""
    import shutil

    folder = work / name
    shutil.copytree(work / "three-epochs", folder)
    for entry in remove:
        shutil.rmtree(folder / entry) if (folder / entry).is_dir() else (folder / entry).unlink()
    return folder


def resume(work, name: str):
    return run(work, name, "--model_name_or_path", str(work / "tiny-base"), *RESUMABLE,
               "--resume_from_checkpoint", "latest")


def test_trainer_logs_are_readable_lines_not_dicts(three_epochs):
    summary, out = three_epochs
    assert not [line for line in out.splitlines() if line.startswith("{")], out
    # 3 of training, 3 evaluations, the training summary, the 2 closing evaluations.
    logs = [line for line in out.splitlines() if re.match(r"epoch \d+\.\d+  step \d+  ", line)]
    assert len(logs) == 9, out
    assert re.fullmatch(r"epoch 1\.0  step 2  loss \d\.\d+  grad_norm [\d.]+  lr [\d.]+e-\d", logs[0]), logs[0]
    assert re.fullmatch(r"epoch 1\.0  step 2  eval_loss \d\.\d+  eval_accuracy [\d.]+  .*", logs[1]), logs[1]
    assert logs[6].startswith("epoch 3.0  step 6  train_runtime ") and "total_flos" not in logs[6]
    assert logs[-1].startswith(f"epoch 3.0  step 6  test_loss {summary['test']['test_loss']:.4g}  test_accuracy ")


def test_log_lines_replace_the_printed_dicts_with_bars_or_without(tmp_path, capsys):
    # Without bars (a log) Trainer prints each entry as a dict (PrinterCallback); with them (a terminal) its
    # ProgressCallback writes the dict above the bar. Both give way to one readable line.
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from myna_training.finetune_run import LogLinesCallback, ProgressBarLogLinesCallback, use_log_lines

    model = MynaForAudioClassification(MynaConfig(**TINY_MYNA, num_labels=2))
    for bars in (False, True):
        args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=not bars)
        trainer = MynaTrainer(model=model, args=args)
        use_log_lines(trainer)
        kinds = [type(callback) for callback in trainer.callback_handler.callbacks]
        assert PrinterCallback not in kinds and ProgressCallback not in kinds
        assert (ProgressBarLogLinesCallback if bars else LogLinesCallback) in kinds
        trainer.log({"loss": 0.41234, "grad_norm": 1.3123, "learning_rate": 1.2e-4, "total_flos": 9.0})  # + epoch 0
    assert capsys.readouterr().out.splitlines() == ["epoch 0.0  step 0  loss 0.4123  grad_norm 1.312  lr 1.2e-4"] * 2


def test_resuming_a_finished_run_says_so_and_trains_nothing(work, three_epochs, capsys):
    # Its latest checkpoint (step 6) is the planned end, and results.json is written: Trainer used to train on (from
    # the best checkpoint when only that one is kept) and overwrite the model.
    first, _ = three_epochs
    folder = interrupted_copy(work, "finished", remove=())
    saved = (folder / "model.safetensors").stat().st_mtime_ns
    finished = resume(work, "finished")
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    assert capsys.readouterr().out.strip() == (
        f"run {run_id} in {folder} has finished (3 epochs, results.json written): nothing to train. To train its "
        f"model further, fine-tune it in another --output_dir with --model_name_or_path {folder}."
    )
    assert finished["validation"] == first["validation"] and (folder / "model.safetensors").stat().st_mtime_ns == saved


def test_a_run_killed_in_its_closing_evaluation_closes_without_training(work, three_epochs, capsys):
    # The latest checkpoint is the planned end (step 6 of 6), but no model or results were written: the closing runs
    # on the best checkpoint, without training, and gives the metrics of the run that was not interrupted.
    first, _ = three_epochs
    folder = interrupted_copy(work, "closing", remove=("results.json", "model.safetensors", "config.json"))
    closed = resume(work, "closing")
    out = capsys.readouterr().out
    assert f"its training ended at step 6 of 6 (epoch 3 of 3) in {folder / 'checkpoint-6'}" in out
    assert f"running them on {folder / 'checkpoint-2'}, without training" in out
    assert "  loss " not in out and "newly initialised" not in out, out
    assert scores(closed["validation"]) == scores(first["validation"])
    assert scores(closed["test"]) == scores(first["test"])
    assert closed["train_loss"] == first["train_loss"] and (folder / "results.json").is_file()


def test_a_run_resumed_mid_way_trains_on_with_the_head_of_its_checkpoint(work, three_epochs, capsys):
    # Killed after the checkpoint of step 2: it trains epochs 2 and 3, its classifier loaded from the checkpoint,
    # which the notice used to call newly initialised.
    first, _ = three_epochs
    folder = interrupted_copy(work, "mid-way", remove=("results.json", "model.safetensors", "checkpoint-6"))
    resumed = resume(work, "mid-way")
    out = capsys.readouterr().out
    assert "newly initialised" not in out
    assert f"model: the encoder of {work / 'tiny-base'}; the encoder and head of {folder / 'checkpoint-2'} " in out
    assert [line.split("  loss ")[0] for line in out.splitlines() if "  loss " in line] == [
        "epoch 2.0  step 4", "epoch 3.0  step 6"
    ]
    assert resumed["epochs"] == 3.0 and scores(resumed["validation"]) == scores(first["validation"])
