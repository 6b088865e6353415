"""What every task loader shares: the families beside this module (`paper`, `synthetic`, `custom`, `marble`).
The `TaskSpec`, the three splits and the `DatasetDict` their rows are built into (`_build`), label helpers
(`KEY_NAMES`, `normalize_key`, `standardize_targets`), the error of a missing or incomplete dataset folder, the
reader of MARBLE's per-split JSONL layout, in which the paper's tasks and MARBLE's both come, and a user's split
file (`_apply_split_file`). `tasks.py` and the families import from here and never from each other's back:
`tasks.load_task` dispatches to the families, and `myna_evaluation.tasks` re-exports these names.
"""

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass

import datasets
import numpy as np

from ..scoring import MULTI_LABEL, SINGLE_LABEL


# The vocabularies and split lists shipped with the package (`myna_evaluation/data/`).
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
SPLITS = ("train", "validation", "test")

# 24 keys in mir_eval spelling with flats, tonic chromatic from C, major before minor (as myna_common.synthetic).
TONICS = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
KEY_NAMES = [f"{tonic} {mode}" for tonic in TONICS for mode in ("major", "minor")]
# Where each of the paper's datasets comes from: the error of a missing or incomplete folder says it.
DOWNLOAD_HINTS = {
    "mtt": "the MagnaTagATune release (mp3.zip.001-003 and annotations_final.csv, "
    "https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset), or MARBLE's copy (Hub m-a-p/MTT)",
    "gtzan": "the GTZAN release (genres.tar.gz, Hub marsyas/gtzan data/genres.tar.gz), "
    "or MARBLE's copy (Hub m-a-p/GTZAN)",
    "giantsteps": "github.com/GiantSteps/giantsteps-key-dataset and github.com/GiantSteps/giantsteps-mtg-key-dataset "
    "(clone both, then run their audio download scripts), or MARBLE's copy (Hub m-a-p/GS)",
    "emomusic": "the 1000 Songs for Emotional Analysis of Music release (clips_45sec_mp3.zip and "
    "annotations.zip, https://cvml.unige.ch/databases/emoMusic/), or MARBLE's copy (Hub m-a-p/EMO)",
}


@dataclass(frozen=True)
class TaskSpec:
    """What a probe needs to know about a task.

    `metric` names the `evaluate` module in `metrics/`; `primary` is the key of its result that early stopping and
    model selection maximise; `columns` are `(header, metric key)` pairs for the report table; `source` says where
    the data came from (part of the embedding cache key); `extra_metrics` are further `evaluate` modules whose
    results are reported beside `metric`'s (custom tasks may ask for several).
    """

    name: str
    problem_type: str
    label_names: tuple[str, ...]
    metric: str
    primary: str
    columns: tuple[tuple[str, str], ...]
    source: str = ""
    extra_metrics: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "problem_type": self.problem_type,
            "label_names": list(self.label_names),
            "metric": self.metric,
            "primary": self.primary,
            "source": self.source,
            "extra_metrics": list(self.extra_metrics),
        }


# Undecoded audio as a plain struct: `datasets.Audio` needs torchcodec to encode, `load_audio` reads this directly.
ENCODED_AUDIO = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder that is missing, incomplete or in no known layout; the message lists what was expected."""


def column(dataset: datasets.Dataset, name: str) -> list:
    """A column as a plain Python list (indexing a `Dataset` by name gives a lazy `Column` in datasets >= 4)."""
    return list(dataset.select_columns([name]).with_format(None)[name])


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def normalize_key(text: str) -> str:
    """A key label as a mir_eval string with a flat tonic: `"c# min"`, `"C#:minor"`, `"db Minor"` -> `"Db minor"`."""
    match = re.fullmatch(r"\s*([A-Ga-g])\s*([#b♯♭]?)\s*[:\s]?\s*(major|minor|maj|min)\s*", text, flags=re.I)
    if match is None:
        raise ValueError(f"cannot read {text!r} as a key: expected a tonic and a mode, e.g. 'F# minor' or 'Eb major'.")
    letter, accidental, mode = match.group(1).upper(), match.group(2), match.group(3).lower()
    pitch = "C D EF G A B".index(letter) + {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(accidental, 0)
    return f"{TONICS[pitch % 12]} {'major' if mode.startswith('maj') else 'minor'}"


def _missing_error(task: str, path: str, expected: list[str], missing: list[str] | None = None) -> DatasetLayoutError:
    lines = [f"{task}: {path} is not a complete copy of the dataset in a layout this loader reads."]
    lines += ["Expected one of:"] + [f"  - {e}" for e in expected]
    if missing:
        lines.append(f"Missing ({len(missing)}): " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if task in DOWNLOAD_HINTS:
        lines.append(f"Get it from {DOWNLOAD_HINTS[task]}.")
    return DatasetLayoutError("\n".join(lines))


def _require_files(task: str, root: str, paths: list[str], expected: list[str]) -> None:
    missing = [os.path.relpath(p, root) for p in paths if not os.path.isfile(p)]
    if missing:
        raise _missing_error(task, root, expected, missing)


def _features(spec: TaskSpec) -> datasets.Features:
    if spec.problem_type == SINGLE_LABEL:
        label = datasets.ClassLabel(names=list(spec.label_names))
    else:
        label = datasets.Sequence(datasets.Value("float32"), length=spec.num_outputs)
    return datasets.Features({"id": datasets.Value("string"), "audio": datasets.Value("string"), "label": label})


def _build(
    spec: TaskSpec, rows: dict[str, list[tuple[str, object, object]]], audio_feature=None
) -> datasets.DatasetDict:
    """`rows[split]` = `[(id, audio, label), ...]` -> a DatasetDict with the task's features.

    `audio` is a path, or with `audio_feature=ENCODED_AUDIO` a `{"bytes", "path"}` dict (Hub datasets).
    """
    features = _features(spec)
    if audio_feature is not None:
        features["audio"] = audio_feature
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "id": [r[0] for r in rows[split]],
                    "audio": [r[1] for r in rows[split]],
                    "label": [r[2] for r in rows[split]],
                },
                features=features,
            )
            for split in SPLITS
        }
    )


def _sha1_int(text: str) -> int:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)


def standardize_targets(
    rows: dict[str, list], fit_splits: tuple[str, ...] = ("train", "validation")
) -> tuple[dict[str, list], list[float], list[float]]:
    """z-scores regression targets with the mean and population std of `fit_splits`: the development set (train +
    validation) as JukeMIR does for EmoMusic, or train only (custom tasks)."""
    development = np.array([r[2] for split in fit_splits for r in rows[split]], dtype=np.float64)
    mean, std = development.mean(0), development.std(0)
    std[std == 0] = 1.0
    standardized = {
        split: [(r[0], r[1], ((np.asarray(r[2]) - mean) / std).tolist()) for r in split_rows]
        for split, split_rows in rows.items()
    }
    return standardized, mean.tolist(), std.tolist()


# ---------------------------------------------------------------------------------------------- MARBLE layout


def _marble_files(root: str) -> dict[str, str] | None:
    found = {}
    for split, names in (("train", ("train",)), ("validation", ("val", "valid", "validation")), ("test", ("test",))):
        for name in names:
            matches = sorted(
                glob.glob(os.path.join(root, f"*.{name}.jsonl")) + glob.glob(os.path.join(root, f"{name}.jsonl"))
            )
            if matches:
                found[split] = matches[0]
                break
    return found if found else None


def _resolve_audio(audio_path: str, jsonl_dir: str) -> str:
    if os.path.isabs(audio_path):
        return audio_path
    directory = os.path.abspath(jsonl_dir)
    # MARBLE writes paths relative to its repository root ("data/GTZAN/..."): try the JSONL folder and its parents.
    while True:
        candidate = os.path.join(directory, audio_path)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return os.path.join(os.path.abspath(jsonl_dir), audio_path)
        directory = parent


def _marble_label(spec: TaskSpec, label, where: str):
    if spec.problem_type == SINGLE_LABEL:
        if isinstance(label, (int, np.integer)):
            return int(label)
        name = normalize_key(label) if spec.metric == "myna_key" else str(label).strip().lower()
        if name not in spec.label_names:
            raise ValueError(f"{where}: label {label!r} is not one of {list(spec.label_names)}.")
        return spec.label_names.index(name)
    if spec.problem_type == MULTI_LABEL:
        if isinstance(label, str):
            label = [label]
        if len(label) == spec.num_outputs and all(isinstance(v, (int, float)) for v in label):
            return [float(v) for v in label]
        unknown = [t for t in label if t not in spec.label_names]
        if unknown:
            raise ValueError(f"{where}: tags {unknown} are not in the task's vocabulary.")
        return [float(t in label) for t in spec.label_names]
    values = [float(label[n]) for n in spec.label_names] if isinstance(label, dict) else [float(v) for v in label]
    if len(values) != spec.num_outputs:
        raise ValueError(f"{where}: expected {spec.num_outputs} targets {list(spec.label_names)}, got {label!r}.")
    return values


def _marble(root: str, spec: TaskSpec, files: dict[str, str], require_audio: bool = True) -> dict[str, list]:
    """Rows of MARBLE's per-split JSONL files; `require_audio=False` leaves missing audio to extraction (skipped
    and counted there) instead of failing here."""
    missing = [s for s in SPLITS if s not in files]
    if missing:
        raise _missing_error(
            spec.name,
            root,
            ["<name>.train.jsonl, <name>.val.jsonl and <name>.test.jsonl (MARBLE layout)"],
            [f"{s} split" for s in missing],
        )
    rows, paths = {}, []
    for split in SPLITS:
        rows[split] = []
        with open(files[split], encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{files[split]}:{line_number}"
                record = json.loads(line)
                if "audio_path" not in record or "label" not in record:
                    raise ValueError(f"{where}: a MARBLE record needs 'audio_path' and 'label', got {sorted(record)}.")
                path = _resolve_audio(record["audio_path"], os.path.dirname(files[split]))
                paths.append(path)
                track_id = str(record.get("id") or os.path.splitext(os.path.basename(path))[0])
                rows[split].append((track_id, path, _marble_label(spec, record["label"], where)))
    if require_audio:
        _require_files(spec.name, root, paths, ["the audio files the JSONL records name (audio_path)"])
    return rows


def _apply_split_file(rows_by_id: dict[str, tuple], split_file: str) -> dict[str, list]:
    """Re-split `rows_by_id` by a user JSON file `{"train": [ids], "valid"|"validation": [ids], "test": [ids]}`."""
    if not os.path.isfile(split_file):
        raise FileNotFoundError(
            f"split file {split_file} does not exist: pass a JSON file {{'train': [...], 'valid': [...], "
            "'test': [...]}} of track ids."
        )
    with open(split_file, encoding="utf-8") as f:
        lists = json.load(f)
    lists = {("validation" if k in ("valid", "val") else k): v for k, v in lists.items()}
    if set(lists) != set(SPLITS):
        raise ValueError(f"split file {split_file} must hold the keys train, valid and test, got {sorted(lists)}.")
    unknown = [i for ids in lists.values() for i in ids if str(i) not in rows_by_id]
    if unknown:
        raise ValueError(f"split file {split_file} names {len(unknown)} ids not in the dataset, e.g. {unknown[:5]}.")
    return {split: [rows_by_id[str(i)] for i in ids] for split, ids in lists.items()}


__all__ = [
    "DATA_DIR",
    "DOWNLOAD_HINTS",
    "ENCODED_AUDIO",
    "KEY_NAMES",
    "SPLITS",
    "TONICS",
    "DatasetLayoutError",
    "TaskSpec",
    "column",
    "normalize_key",
    "read_lines",
    "standardize_targets",
]
