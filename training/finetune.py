"""Fine-tuning Myna for audio classification, tagging or regression with transformers' `Trainer`.

    python training/finetune.py --model_name_or_path outputs/myna-pretrain/model --task synthetic-style
    python training/finetune.py --model_name_or_path myna-base --task gtzan --task_path /data/gtzan \\
        --finetuning_mode layerwise --layer_decay 0.75 --bf16
    python training/finetune.py --model_name_or_path myna-hybrid --patch_mode vertical \\
        --dataset_name audiofolder --data_dir music_by_genre/        # or a Hub id, or --train_file data.csv
    accelerate launch training/finetune.py --config finetune.yaml    # torchrun works as well

The recipe of the Hugging Face audio course ("fine-tuning a model for music classification"), for Myna: a `datasets`
audio dataset (a Hub id, `audiofolder`, CSV/JSON with audio paths, or a task of `myna_evaluation.tasks`, generated
ones included) decoded without FFmpeg (`Audio(decode=False)` and `modeling_myna.audio_utils.load_audio`); the
feature extractor's chunks computed once with `.map` (cached) or on the fly; `AutoModelForAudioClassification` with
`num_labels`, `label2id`, `id2label`; `Trainer` with `compute_metrics` from the local `evaluate` modules, early
stopping and the best validation checkpoint kept. Training takes one random 96-frame crop per clip per epoch;
evaluation and prediction average the outputs of all of a clip's chunks, as the Myna paper's probes do
(arXiv 2502.12511). The saved folder is a `MynaForAudioClassification` with its feature extractor and a model card
that carries the data, the settings and the validation and test metrics; `pipeline("audio-classification")` loads it.
"""

import dataclasses
import json
import os

import datasets
import numpy as np
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, EarlyStoppingCallback, set_seed
from transformers.utils import logging as transformers_logging

import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
from modeling_myna import MynaDataCollatorForAudioClassification, MynaFeatureExtractor
from modeling_myna.audio_utils import AUDIO_EXTENSIONS, AudioDecodeError, load_audio
from modeling_myna.model_card import write_model_card
from myna_evaluation.scoring import MULTI_LABEL, REGRESSION, SINGLE_LABEL, compute_metrics
from myna_evaluation.tasks import SYNTHETIC_TASKS, TaskSpec, load_task
from myna_training.finetune_arguments import parse_finetune_arguments
from myna_training.finetune_run import (
    EtaCallback,
    RunIdentityCallback,
    check_new_finetune,
    clear_finetune,
    finetune_identity_settings,
    resolve_finetune_checkpoint,
)
from myna_training.run_folder import read_identity, run_identity, write_identity
from myna_common.cli_support import check_model_name
from myna_common.progress import quiet_library_bars
from myna_training.hub import push_folder_to_hub
from myna_training.spectrograms import cache_key
from myna_training.trainer import MynaTrainer, freeze_encoder, freeze_unused_tokenizers


PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
# The metric module of each problem type, and the key of its result that model selection maximises.
DEFAULT_METRICS = {SINGLE_LABEL: "myna_accuracy", MULTI_LABEL: "myna_tagging", REGRESSION: "myna_r2"}
PRIMARY_KEYS = {
    "myna_accuracy": "accuracy",
    "myna_tagging": "roc_auc_macro",
    "myna_r2": "r2_mean",
    "myna_key": "weighted_score",
}


# ---------------------------------------------------------------------------------------------------------------
# Data: any source -> (TaskSpec, DatasetDict of `audio` and `label`)


def _is_float(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype.startswith("float")


def _inner(feature):
    """The element feature of a `List`/`Sequence` feature, or `None`."""
    if isinstance(feature, (datasets.Sequence, getattr(datasets, "List", datasets.Sequence))):
        return feature.feature
    if isinstance(feature, list) and feature:
        return feature[0]
    return None


def _label_converter(
    dataset_dict: datasets.DatasetDict, label_columns: list[str], problem_type: str | None, tag_separator: str = ";"
):
    """`(problem_type, label_names, row -> label)` read from the label column's `datasets` feature.

    Tags of a multi-label string column ("guitar;piano") are split at `tag_separator`.
    """
    if problem_type not in (None, *PROBLEM_TYPES):
        raise ValueError(f"problem_type={problem_type!r}: choose one of {PROBLEM_TYPES}.")
    first = dataset_dict[next(iter(dataset_dict))]
    missing = [c for c in label_columns if c not in first.column_names]
    if missing:
        raise ValueError(f"label column(s) {missing} not in the dataset; its columns are {first.column_names}.")
    if len(label_columns) > 1:
        if problem_type not in (None, REGRESSION):
            raise ValueError(f"several label columns {label_columns} are regression targets, not {problem_type}.")
        return REGRESSION, tuple(label_columns), lambda row: [float(row[c]) for c in label_columns]
    name = label_columns[0]
    feature, inner = first.features[name], _inner(first.features[name])

    def values(column):
        return sorted({v for split in dataset_dict.values() for v in split[column]}, key=str)

    is_text = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if is_text and problem_type == MULTI_LABEL:
        texts = [text for split in dataset_dict.values() for text in split[name]]
        vocabulary = sorted({tag for text in texts for tag in text.split(tag_separator) if tag})
        index = {t: i for i, t in enumerate(vocabulary)}

        def split_tags(row):
            hot = [0.0] * len(vocabulary)
            for tag in filter(None, row[name].split(tag_separator)):
                hot[index[tag]] = 1.0
            return hot

        return MULTI_LABEL, tuple(vocabulary), split_tags
    if isinstance(feature, datasets.ClassLabel) and problem_type in (None, SINGLE_LABEL):
        return SINGLE_LABEL, tuple(feature.names), lambda row: int(row[name])
    if inner is not None and not _is_float(inner) and problem_type in (None, MULTI_LABEL):
        vocabulary = inner.names if isinstance(inner, datasets.ClassLabel) else sorted(
            {t for split in dataset_dict.values() for tags in split[name] for t in tags}, key=str
        )
        index = {t: i for i, t in enumerate(vocabulary)}
        if isinstance(inner, datasets.ClassLabel):
            index = {i: i for i in range(len(vocabulary))}

        def multi_hot(row):
            hot = [0.0] * len(vocabulary)
            for tag in row[name]:
                hot[index[tag]] = 1.0
            return hot

        return MULTI_LABEL, tuple(str(v) for v in vocabulary), multi_hot
    if (inner is not None and _is_float(inner)) or problem_type == REGRESSION:
        width = len(first[0][name]) if inner is not None else 1
        names = (name,) if width == 1 and inner is None else tuple(f"{name}_{i}" for i in range(width))
        if inner is None:
            return REGRESSION, names, lambda row: [float(row[name])]
        return REGRESSION, names, lambda row: [float(v) for v in row[name]]
    if _is_float(feature):
        return REGRESSION, (name,), lambda row: [float(row[name])]
    if isinstance(feature, datasets.Value) and problem_type in (None, SINGLE_LABEL):
        if feature.dtype.startswith("int"):
            classes = list(range(max(values(name)) + 1))
        else:
            classes = values(name)
        index = {c: i for i, c in enumerate(classes)}
        return SINGLE_LABEL, tuple(str(c) for c in classes), lambda row: index[row[name]]
    raise ValueError(
        f"cannot read label column {name!r} ({feature}) as {problem_type or 'a label'}: expected class names or "
        "indices (single label), lists of tags (multi-label) or numbers (regression); set --problem_type."
    )


def _resolve_paths(dataset: datasets.Dataset, audio_column: str, root: str) -> datasets.Dataset:
    """Audio paths relative to the CSV/JSON file that lists them, made absolute."""

    def resolve(row):
        path = row[audio_column]
        if isinstance(path, str) and not os.path.isabs(path):
            row[audio_column] = os.path.join(root, path)
        return row

    return dataset.map(resolve, desc="Audio paths")


SPLIT_FOLDERS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "test": "test"}


def audiofolder(data_dir: str) -> datasets.DatasetDict:
    """`datasets`' `audiofolder` layout, read without encoding the audio (its builder needs torchcodec).

    Splits are the `train/`, `validation/` (`valid/`, `val/`) and `test/` sub-folders when there are any, else one
    `train` split. Labels come from a `metadata.csv` or `metadata.jsonl` (a `file_name` column relative to it, plus
    label columns) or, without metadata, from each file's parent folder name (`label`, a `ClassLabel`).
    """
    root = os.path.abspath(data_dir)
    if not os.path.isdir(root):
        raise ValueError(f"--data_dir {data_dir} is not a folder: pass the audiofolder root.")
    split_dirs = {SPLIT_FOLDERS[d]: os.path.join(root, d) for d in sorted(os.listdir(root)) if d in SPLIT_FOLDERS}
    split_dirs = split_dirs or {"train": root}
    result, has_metadata = {}, {}
    for split, folder in split_dirs.items():
        candidates = [os.path.join(folder, name) for name in ("metadata.csv", "metadata.jsonl")]
        metadata = next((path for path in candidates if os.path.isfile(path)), None)
        has_metadata[split] = metadata is not None
        if metadata is not None:
            table = datasets.load_dataset(metadata.rsplit(".", 1)[1].replace("jsonl", "json"), data_files=metadata,
                                          split="train")
            if "file_name" not in table.column_names:
                raise ValueError(f"{metadata} has no 'file_name' column (columns: {table.column_names}).")
            base = os.path.dirname(metadata)
            table = table.map(
                lambda row: {"audio": os.path.join(base, row["file_name"])}, remove_columns=["file_name"]
            )
            result[split] = table
            continue
        paths = sorted(
            os.path.join(directory, name)
            for directory, _, names in os.walk(folder)
            for name in names
            if name.lower().endswith(AUDIO_EXTENSIONS)
        )
        if not paths:
            raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {folder}.")
        result[split] = datasets.Dataset.from_dict(
            {"audio": paths, "label": [os.path.basename(os.path.dirname(p)) for p in paths]}
        )
    if not any(has_metadata.values()):
        names = sorted({label for d in result.values() for label in d["label"]})
        result = {s: d.cast_column("label", datasets.ClassLabel(names=names)) for s, d in result.items()}
    return datasets.DatasetDict(result)


def load_custom_data(data_args, seed: int) -> tuple[TaskSpec, datasets.DatasetDict]:
    """Any `datasets` audio dataset as `(TaskSpec, DatasetDict)` with `audio` (undecoded) and `label` columns."""
    if data_args.train_file is not None:
        files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
        files = {k: v for k, v in files.items() if v is not None}
        extension = os.path.splitext(data_args.train_file)[1].lstrip(".").replace("jsonl", "json")
        if extension not in ("csv", "json"):
            raise ValueError(f"--train_file must be a .csv, .json or .jsonl file, got {data_args.train_file}.")
        raw = datasets.load_dataset(extension, data_files=files)
        raw = datasets.DatasetDict(
            {
                split: _resolve_paths(raw[split], data_args.audio_column_name, os.path.dirname(os.path.abspath(path)))
                if isinstance(raw[split].features.get(data_args.audio_column_name), datasets.Value)
                else raw[split]
                for split, path in files.items()
            }
        )
        source = f"files:{','.join(os.path.abspath(p) for p in files.values())}"
    elif data_args.dataset_name == "audiofolder":
        raw = audiofolder(data_args.data_dir or ".")
        source = f"audiofolder:{os.path.abspath(data_args.data_dir or '.')}"
    else:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name, data_dir=data_args.data_dir)
        source = f"{data_args.dataset_name}:{data_args.dataset_config_name or ''}:{data_args.data_dir or ''}"
    renames = {
        data_args.train_split_name: "train",
        data_args.validation_split_name: "validation",
        data_args.test_split_name: "test",
    }
    raw = datasets.DatasetDict({renames[s]: d for s, d in raw.items() if s in renames})
    if "train" not in raw:
        raise ValueError(f"no split named {data_args.train_split_name!r}: set --train_split_name.")
    audio_column = data_args.audio_column_name
    if audio_column not in raw["train"].column_names:
        raise ValueError(
            f"no audio column {audio_column!r}; the columns are {raw['train'].column_names}: set --audio_column_name."
        )
    if isinstance(raw["train"].features[audio_column], datasets.Audio):
        # Undecoded bytes/paths: load_audio decodes them with libsndfile, no FFmpeg or torchcodec needed.
        raw = raw.cast_column(audio_column, datasets.Audio(decode=False))
    if "validation" not in raw:
        held_out = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100, seed=seed)
        raw["train"], raw["validation"] = held_out["train"], held_out["test"]

    label_columns = [c.strip() for c in data_args.label_column_name.split(",")]
    problem_type, label_names, convert = _label_converter(
        raw, label_columns, data_args.problem_type, data_args.tag_separator
    )
    metric = data_args.metric or DEFAULT_METRICS[problem_type]
    if metric not in PRIMARY_KEYS:
        raise ValueError(f"--metric {metric!r} is not one of {sorted(PRIMARY_KEYS)}.")
    spec = TaskSpec(
        name=data_args.dataset_name or os.path.basename(data_args.train_file),
        problem_type=problem_type,
        label_names=label_names,
        metric=metric,
        primary=PRIMARY_KEYS[metric],
        columns=((PRIMARY_KEYS[metric], PRIMARY_KEYS[metric]),),
        source=source,
    )
    label_feature = (
        datasets.ClassLabel(names=list(label_names))
        if problem_type == SINGLE_LABEL
        else datasets.Sequence(datasets.Value("float32"), length=len(label_names))
    )
    features = datasets.Features({"audio": raw["train"].features[audio_column], "label": label_feature})
    out = datasets.DatasetDict(
        {
            split: dataset.map(
                lambda row: {"audio": row[audio_column], "label": convert(row)},
                remove_columns=dataset.column_names,
                features=features,
                desc=f"Labels ({split})",
            )
            for split, dataset in raw.items()
        }
    )
    return spec, out


def load_finetuning_data(data_args, seed: int) -> tuple[TaskSpec, datasets.DatasetDict]:
    """`(TaskSpec, DatasetDict)`: train, validation and (when there is one) test splits of `audio` and `label`."""
    if data_args.task is not None:
        kwargs = {}
        if data_args.task in SYNTHETIC_TASKS:
            sizes = tuple(int(n) for n in data_args.synthetic_sizes.split(","))
            kwargs = {"sizes": sizes, "duration": data_args.synthetic_duration}
        spec, dataset = load_task(data_args.task, data_args.task_path, **kwargs)
        if data_args.metric is not None:
            if data_args.metric not in PRIMARY_KEYS:
                raise ValueError(f"--metric {data_args.metric!r} is not one of {sorted(PRIMARY_KEYS)}.")
            spec = dataclasses.replace(spec, metric=data_args.metric, primary=PRIMARY_KEYS[data_args.metric])
        dataset = datasets.DatasetDict({s: d.select_columns(["audio", "label"]) for s, d in dataset.items()})
    else:
        spec, dataset = load_custom_data(data_args, seed)
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_eval_samples}
    for split, limit in limits.items():
        if split in dataset and limit is not None:
            dataset[split] = dataset[split].select(range(min(limit, len(dataset[split]))))
    return spec, dataset


# ---------------------------------------------------------------------------------------------------------------
# Features: audio -> the feature extractor's chunks, (num_chunks, num_mel_bins, chunk_frames) per clip


def make_chunk_function(feature_extractor: MynaFeatureExtractor, skip_undecodable: bool):
    """A batched function `{audio, label, example_index}` -> `{input_values, label, example_index}`.

    Undecodable clips are dropped (counted by the caller) when `skip_undecodable`, else their error is raised.
    """

    def compute(batch):
        audios, keep = [], []
        for position, source in enumerate(batch["audio"]):
            try:
                audios.append(load_audio(source, sampling_rate=feature_extractor.sampling_rate)[0])
                keep.append(position)
            except AudioDecodeError:
                if not skip_undecodable:
                    raise
        out = {"input_values": [], "label": [batch["label"][i] for i in keep],
               "example_index": [batch["example_index"][i] for i in keep]}
        if audios:
            features = feature_extractor(audios, sampling_rate=feature_extractor.sampling_rate, return_tensors="np")
            counts = np.bincount(features["audio_index"], minlength=len(audios))
            out["input_values"] = np.split(features["input_values"], np.cumsum(counts)[:-1])
        return out

    return compute


def prepare_features(
    dataset: datasets.Dataset, feature_extractor: MynaFeatureExtractor, data_args, cache_file: str | None
) -> tuple[datasets.Dataset, int]:
    """`input_values` chunks of every clip, computed once (Arrow cache), or on the fly; and the clips dropped."""
    dataset = dataset.add_column("example_index", list(range(len(dataset))))
    if data_args.on_the_fly:
        return dataset.with_transform(make_chunk_function(feature_extractor, skip_undecodable=False)), 0
    features = datasets.Features(
        {
            "input_values": datasets.Array3D(
                (None, feature_extractor.feature_size, feature_extractor.chunk_frames), "float32"
            ),
            "label": dataset.features["label"],
            "example_index": datasets.Value("int64"),
        }
    )
    if cache_file is not None:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
    mapped = dataset.map(
        make_chunk_function(feature_extractor, skip_undecodable=True),
        batched=True,
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=dataset.column_names,
        features=features,
        cache_file_name=cache_file,
        desc="Spectrogram chunks",
    )
    return mapped.with_format("numpy"), len(dataset) - len(mapped)


# ---------------------------------------------------------------------------------------------------------------
# Metrics, model card, upload


def make_compute_metrics(spec: TaskSpec):
    """`compute_metrics` for `Trainer`: per-clip outputs (chunk logits averaged) through the task's `evaluate`
    module."""

    def compute(eval_prediction) -> dict[str, float]:
        outputs = eval_prediction.predictions
        outputs = outputs[0] if isinstance(outputs, tuple) else outputs
        targets = np.asarray(eval_prediction.label_ids)
        metrics = compute_metrics(spec, np.asarray(outputs, dtype=np.float64), targets)
        return {k: float(v) for k, v in metrics.items()}

    return compute


def evaluation_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per split (validation, test), one column per metric."""
    skip = {"loss", "runtime", "samples_per_second", "steps_per_second", "num_tags_skipped"}
    keys = {k[len(split) + 1 :] for split, metrics in results.items() for k in metrics if k.startswith(f"{split}_")}
    keys = sorted(keys - skip)
    lines = ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for split, metrics in results.items():
        cells = [f"{metrics.get(f'{split}_{k}', float('nan')):.4f}" for k in keys]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_finetune_arguments(argv)
    if model_args.model_name_or_path is None:
        raise ValueError(
            "pass --model_name_or_path: a Myna folder (outputs/myna-pretrain/model from `make demo`, a converted "
            "release from modeling_myna.convert_original_checkpoint) or a Hub id."
        )
    # A folder, or a Hub id that is cached or reachable: said at once, with the conversion command for released names.
    check_model_name(model_args.model_name_or_path, option="--model_name_or_path")
    if model_args.finetuning_mode not in ("frozen", "full", "layerwise"):
        raise ValueError(f"finetuning_mode={model_args.finetuning_mode!r}: choose frozen, full or layerwise.")
    quiet_library_bars()  # in a log: no loading or .map bars (Trainer's own bar: --disable_tqdm, set likewise)
    if training_args.device.type != "cuda":
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator (torch warns on every loader)
    if training_args.fp16 and training_args.device.type == "cpu":
        raise ValueError("--fp16 cannot be used on a CPU (it would train in float32): use --bf16 there, or neither.")
    # The upload happens once, at the end, with the Myna model card; Trainer's own would push every checkpoint.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    output_dir = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if resume and training_args.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint continues a run and --overwrite_output_dir replaces it: pick one.")
    # Before any work: a folder that holds another run (or music) refuses at once.
    folder_state = None if resume else check_new_finetune(output_dir, training_args.overwrite_output_dir)
    set_seed(training_args.seed)

    # Data: audio and labels, then the feature extractor's chunks (the main process computes, the others read).
    with training_args.main_process_first(desc="loading the data"):
        spec, splits = load_finetuning_data(data_args, training_args.seed)
    label_names = list(spec.label_names)
    config_kwargs = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
        "problem_type": spec.problem_type,
        "classifier_hidden_size": model_args.classifier_hidden_size,
        "classifier_dropout": model_args.classifier_dropout,
    }
    if model_args.patch_mode is not None:
        config_kwargs["default_patch_mode"] = model_args.patch_mode
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report (in ANSI colours): summarised in one line below
    try:
        model, loading = AutoModelForAudioClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, output_loading_info=True, **config_kwargs
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    new = sorted({key.split(".")[0] for key in loading.get("missing_keys", [])} | {
        str(item[0] if isinstance(item, (tuple, list)) else item).split(".")[0]
        for item in loading.get("mismatched_keys", [])
    })
    if training_args.should_log:
        print(f"model: the encoder of {model_args.model_name_or_path}"
              + (f"; newly initialised: {', '.join(new)}" if new else "") + f" ({len(label_names)} outputs)")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    except OSError:  # a folder without preprocessor_config.json: the extractor its config implies
        feature_extractor = MynaFeatureExtractor.from_config(model.config)

    cache_dir = data_args.cache_dir or os.path.join(output_dir, "cache")
    features, dropped = {}, {}
    with training_args.main_process_first(desc="spectrograms"):
        for split, dataset in splits.items():
            key = cache_key(getattr(dataset, "_fingerprint", None), feature_extractor.to_dict(), split)
            cache_file = None if data_args.on_the_fly else os.path.join(cache_dir, f"chunks-{split}-{key}.arrow")
            features[split], dropped[split] = prepare_features(dataset, feature_extractor, data_args, cache_file)

    # The run's identity (model, settings, seed, data): a resume continues only the same run; a new one starts clean.
    data_hash = cache_key({s: getattr(d, "_fingerprint", None) for s, d in splits.items()}, spec.to_dict())
    identity = run_identity(finetune_identity_settings(model_args, data_args, training_args), data_hash)
    checkpoint = resolve_finetune_checkpoint(resume, output_dir, identity) if resume else None
    if training_args.should_save:
        if folder_state == "replace":
            removed = clear_finetune(output_dir)
            if removed:
                print(f"--overwrite_output_dir: removed {', '.join(removed)} of the previous run in {output_dir}.")
        if read_identity(output_dir) is None:
            write_identity(output_dir, identity)

    # Fine-tuning mode.
    freeze_unused_tokenizers(model, model.config.default_patch_mode)
    if model_args.finetuning_mode == "frozen":
        freeze_encoder(model)
    layer_decay = model_args.layer_decay if model_args.finetuning_mode == "layerwise" else 1.0
    if not training_args.metric_for_best_model_given:
        training_args.metric_for_best_model = spec.primary
        training_args.greater_is_better = True

    chunk_frames = model.config.chunk_frames
    train_collator = MynaDataCollatorForAudioClassification(
        random_crop=True,
        chunk_frames=chunk_frames,
        time_mask_frames=data_args.time_mask_frames,
        num_time_masks=data_args.num_time_masks,
        freq_mask_bins=data_args.freq_mask_bins,
        num_freq_masks=data_args.num_freq_masks,
        seed=training_args.seed,
    )
    callbacks = [RunIdentityCallback(output_dir)] + ([EtaCallback()] if training_args.disable_tqdm else [])
    if training_args.early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = MynaTrainer(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=train_collator,
        eval_data_collator=MynaDataCollatorForAudioClassification(chunk_frames=chunk_frames),
        processing_class=feature_extractor,
        compute_metrics=make_compute_metrics(spec),
        callbacks=callbacks,
        layer_decay=layer_decay,
        mask_ratio=model_args.token_mask_ratio or None,
    )

    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.remove_callback(EarlyStoppingCallback)  # the closing evaluations are reports, not stopping criteria
    results = {"validation": trainer.evaluate(metric_key_prefix="validation")}
    if "test" in features:
        results["test"] = trainer.evaluate(features["test"], metric_key_prefix="test")
    trainer.save_model(output_dir)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {
        "output_dir": output_dir,
        "task": spec.name,
        "problem_type": spec.problem_type,
        "primary": spec.primary,
        "num_clips": {split: len(dataset) for split, dataset in features.items()},
        "dropped": dropped,
        "train_loss": losses,
        "train_runtime": train_result.metrics.get("train_runtime"),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "epochs": trainer.state.epoch,
        "num_trainable_parameters": num_trainable,
        "world_size": training_args.world_size,
        "device": f"{training_args.device} x {training_args.world_size} process"
        + ("es" if training_args.world_size > 1 else ""),
        "precision": "bfloat16 autocast" if training_args.bf16 else "float16 autocast" if training_args.fp16
        else "float32",
        **results,
    }
    if trainer.is_world_process_zero():
        feature_extractor.save_pretrained(output_dir)
        settings = {
            **{k: v for k, v in vars(model_args).items()},
            **{k: v for k, v in vars(data_args).items() if v is not None},
            "world_size": training_args.world_size,
            "epochs_trained": round(trainer.state.epoch or 0, 2),
            "best_checkpoint": os.path.basename(trainer.state.best_model_checkpoint or "") or None,
        }
        for key in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "bf16", "metric_for_best_model",
                    "early_stopping_patience", "optim"):
            value = getattr(training_args, key)
            settings[key] = getattr(value, "value", value)  # enums as their names
        sizes = ", ".join(f"{split} {len(d)}" for split, d in features.items())
        skipped = sum(dropped.values())
        write_model_card(
            output_dir,
            model.config,
            num_parameters=model.num_parameters(),
            training_data=f"Fine-tuned on {spec.name} ({spec.source}): {sizes} clips"
            + (f"; {skipped} undecodable clips dropped" if skipped else "") + ".",
            training_config=settings,
            evaluation_table=f"Metrics ({spec.metric}; the model averages chunk logits over each clip):\n\n"
            + evaluation_table(results),
            source=f"{model_args.model_name_or_path} fine-tuned with `training/finetune.py` "
            f"({model_args.finetuning_mode})",
            tags=["audio-classification", "fine-tuned"],
        )
        with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
        if push_to_hub:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
            summary["hub_url"] = push_folder_to_hub(
                output_dir,
                repo_id,
                bool(training_args.hub_private_repo),
                commit_message="Upload Myna fine-tuned with myna_training.finetune",
                ignore_patterns=["checkpoint-*", "cache/*", "runs/*", "results.json"],  # the model alone
            )
        print(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        "",
        "=== Myna fine-tuning summary ===",
        f"task: {summary['task']} ({summary['problem_type']}); clips {summary['num_clips']}",
        f"trainable parameters: {summary['num_trainable_parameters']:,}; epochs {summary['epochs']:.2f}",
        f"device: {summary['device']}; precision {summary['precision']}",
    ]
    if summary["train_loss"]:
        lines.append(f"training loss: {summary['train_loss'][0]:.4f} (first log) -> {summary['train_loss'][-1]:.4f}")
    for split in ("validation", "test"):
        if split in summary:
            value = summary[split].get(f"{split}_{summary['primary']}")
            lines.append(f"{split} {summary['primary']}: {value:.4f}")
    lines.append(f"saved to {summary['output_dir']} (pipeline('audio-classification', model=...) loads it)")
    if "hub_url" in summary:
        lines.append(f"pushed to {summary['hub_url']}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from myna_common.cli_support import run_cli

    sys.exit(run_cli(main, "finetune.py"))
