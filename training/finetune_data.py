"""The data of a fine-tuning: any source -> `(TaskSpec, DatasetDict)` of undecoded `audio` and `label` columns, then
the feature extractor's chunks of every clip.

Sources: a task of `myna_evaluation.tasks` (generated ones included), a Hub id or `audiofolder` folder, or CSV/JSON
files listing audio paths. Labels become class indices (single-label), multi-hot vectors (tagging) or float vectors
(regression), each with the `TaskSpec` that says how it is scored. Audio is decoded without FFmpeg
(`Audio(decode=False)` and `modeling_myna.audio_utils.load_audio`), and the chunks are computed once with `.map`
(cached) or on the fly; undecodable clips are dropped and counted.
"""

import dataclasses
import os

import datasets
import numpy as np

from modeling_myna import MynaFeatureExtractor
from modeling_myna.audio_utils import AUDIO_EXTENSIONS, AudioDecodeError, load_audio
from myna_evaluation.scoring import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from myna_evaluation.tasks import SYNTHETIC_TASKS, TaskSpec, load_task


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


__all__ = [
    "DEFAULT_METRICS",
    "PRIMARY_KEYS",
    "PROBLEM_TYPES",
    "audiofolder",
    "load_custom_data",
    "load_finetuning_data",
    "make_chunk_function",
    "prepare_features",
]
