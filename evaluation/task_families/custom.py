"""A task of the user's own: a folder of labelled audio, a CSV/JSONL table of audio paths, or a Hub dataset,
described by a small YAML task file and probed with the same protocol as the paper's tasks.

    name: my_task                 # row/column name in the report; the file's stem by default
    source: csv                   # audiofolder | csv | jsonl | hub (inferred from `path` when left out)
    path: labels.csv              # folder, table file or Hub id; relative paths start at the task file's folder
    audio_column: file            # column of audio paths (relative to the table's folder); guessed when left out
    label_column: genre           # single- or multi-label; regression: label_columns: [arousal, valence]
    problem_type: single_label    # single_label | multi_label | regression
    label_delimiter: ";"          # multi-label as "a;b" strings (JSONL lists need none)
    labels: [jazz, rock]          # optional class order; the sorted labels found otherwise
    splits:                       # one of:
      column: split               #   a column of train / validation (valid, val, dev) / test
      # files: {train: train.csv, validation: valid.csv, test: test.csv}
      # group_column: artist      #   a seeded split in which no artist spans two splits
      # fractions: [0.8, 0.1, 0.1]
      # seed: 0
    metrics: [myna_accuracy]      # local `evaluate` modules in metrics/; the first is the selection metric

An `audiofolder` is the 🤗 datasets convention: `metadata.csv` / `metadata.jsonl` with a `file_name` column, or
one sub-folder per class (`<label>/<file>.wav`), either of them optionally inside `train/`, `validation/` and
`test/`. Without `splits`, the split is seeded by file (80 / 10 / 10). Regression targets are z-scored with the
mean and standard deviation of the training split. Audio files are not opened here: missing or undecodable ones
are skipped and counted at extraction (`skipped_tracks` in `results.json`).
"""

import csv
import json
import logging
import os
from dataclasses import dataclass, field, fields

import numpy as np

from ..scoring import METRICS_DIR, MULTI_LABEL, REGRESSION, SINGLE_LABEL
from .base import ENCODED_AUDIO, KEY_NAMES, SPLITS, TaskSpec, _build, standardize_targets


logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".aif")
AUDIO_COLUMN_GUESSES = ("audio", "file_name", "audio_path", "path", "file", "filename", "filepath")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}
PROBLEM_TYPES = {
    "single_label": SINGLE_LABEL,
    "single-label": SINGLE_LABEL,
    "classification": SINGLE_LABEL,
    SINGLE_LABEL: SINGLE_LABEL,
    "multi_label": MULTI_LABEL,
    "multi-label": MULTI_LABEL,
    "tagging": MULTI_LABEL,
    MULTI_LABEL: MULTI_LABEL,
    "regression": REGRESSION,
}
# Which shipped metric modules score which problem type (the first is the default).
METRICS_FOR = {
    SINGLE_LABEL: ("myna_accuracy", "myna_key"),
    MULTI_LABEL: ("myna_tagging",),
    REGRESSION: ("myna_r2",),
}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


class TaskFileError(ValueError):
    """A task file, or the data it names, that cannot be read as a task; the message says what was found."""


@dataclass
class CustomTask:
    """The parsed task file (see the module docstring for the YAML keys)."""

    name: str
    path: str
    problem_type: str = SINGLE_LABEL
    source: str | None = None
    audio_column: str | None = None
    label_column: str | None = "label"
    label_columns: list[str] | None = None
    label_delimiter: str | None = None
    labels: list[str] | None = None
    id_column: str | None = None
    splits: dict = field(default_factory=dict)
    metrics: list[str] | None = None
    config: str | None = None  # Hub dataset configuration
    base_dir: str = "."  # the task file's folder

    @property
    def where(self) -> str:
        return f"custom task {self.name!r}"


def _found(names) -> str:
    names = sorted(str(n) for n in names)
    return ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "") if names else "nothing"


def read_task_file(path: str) -> CustomTask:
    """A `CustomTask` from a YAML (or JSON) task file, or the defaults for a folder of labelled audio."""
    if os.path.isdir(path):
        return CustomTask(
            name=os.path.basename(os.path.normpath(path)), path=os.path.abspath(path), source="audiofolder"
        )
    if not os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        found = os.listdir(folder) if os.path.isdir(folder) else []
        raise TaskFileError(
            f"task file {path} does not exist (found in {folder}: {_found(found)}). Pass a YAML task file, or a "
            "folder of audio with one sub-folder per class."
        )
    import yaml

    from myna_common.cli_support import syntax_error_message

    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as error:
        raise TaskFileError(
            f"task file {syntax_error_message(path, error)}; fix that line (my_task.yaml in docs/evaluation.md shows "
            "the keys)."
        ) from None
    if not isinstance(values, dict):
        raise TaskFileError(
            f"{path}: a task file is a mapping of keys (name, path, label_column, ...), got {values!r}."
        )
    allowed = {f.name for f in fields(CustomTask)} - {"base_dir"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise TaskFileError(f"{path}: unknown keys {unknown}; a task file has {sorted(allowed)}.")
    if "path" not in values:
        raise TaskFileError(f"{path}: 'path' is missing: name the audio folder, the CSV/JSONL table or the Hub id.")
    values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    task = CustomTask(**values, base_dir=os.path.dirname(os.path.abspath(path)))
    if task.problem_type not in PROBLEM_TYPES:
        raise TaskFileError(
            f"{path}: problem_type {task.problem_type!r} is not one of single_label, multi_label, regression."
        )
    task.problem_type = PROBLEM_TYPES[task.problem_type]
    return task


def _resolve(task: CustomTask, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(task.base_dir, path))


def _source(task: CustomTask, path: str) -> str:
    if task.source:
        if task.source not in ("audiofolder", "csv", "tsv", "jsonl", "hub"):
            raise TaskFileError(f"{task.where}: source {task.source!r} is not one of audiofolder, csv, jsonl, hub.")
        return task.source
    if os.path.isdir(path):
        return "audiofolder"
    extension = os.path.splitext(path)[1].lower()
    if extension in (".csv", ".tsv", ".jsonl"):
        return extension[1:]
    if not os.path.exists(path) and task.path.count("/") == 1 and not task.path.startswith("."):
        return "hub"
    folder = os.path.dirname(path)
    raise TaskFileError(
        f"{task.where}: path {path} is neither a folder nor a .csv/.tsv/.jsonl table nor a Hub id "
        f"(found in {folder}: {_found(os.listdir(folder)) if os.path.isdir(folder) else 'no such folder'})."
    )


# ---------------------------------------------------------------------------------------------- reading rows


def read_table(path: str) -> list[dict]:
    """Rows of a CSV (`,`), TSV (tab) or JSONL file, as dicts."""
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        raise TaskFileError(
            f"table {path} does not exist (found in {folder}: "
            f"{_found(os.listdir(folder)) if os.path.isdir(folder) else 'no such folder'})."
        )
    with open(path, encoding="utf-8") as f:
        if path.lower().endswith(".jsonl"):
            rows = []
            for line_number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise TaskFileError(f"{path}:{line_number}: not a JSON object ({error}).") from None
            return rows
        return list(csv.DictReader(f, delimiter="\t" if path.lower().endswith(".tsv") else ","))


def _audio_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(directory, name)
        for directory, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(AUDIO_EXTENSIONS)
    )


def _audiofolder_rows(task: CustomTask, folder: str) -> list[dict]:
    """Rows of one audiofolder (no split level): its metadata file, or its class sub-folders."""
    for name in ("metadata.csv", "metadata.jsonl", "metadata.tsv"):
        if os.path.isfile(os.path.join(folder, name)):
            rows = read_table(os.path.join(folder, name))
            task.audio_column = task.audio_column or "file_name"
            for row in rows:
                row["__base__"] = folder
            return rows
    rows = []
    for path in _audio_files(folder):
        relative = os.path.relpath(path, folder)
        if os.sep not in relative:
            continue  # a file beside the class folders has no label
        rows.append({"file_name": path, task.label_column or "label": relative.split(os.sep)[0], "__base__": folder})
    task.audio_column = task.audio_column or "file_name"
    if not rows:
        raise TaskFileError(
            f"{task.where}: the audio folder {folder} has no metadata.csv / metadata.jsonl and no audio in class "
            f"sub-folders (<label>/<file>.wav); found: {_found(os.listdir(folder))}."
        )
    return rows


def _split_folders(folder: str) -> dict[str, str]:
    found = {}
    for entry in sorted(os.listdir(folder)):
        split = SPLIT_NAMES.get(entry.lower())
        if split and os.path.isdir(os.path.join(folder, entry)):
            found.setdefault(split, os.path.join(folder, entry))
    return found


def _hub_rows(task: CustomTask) -> dict[str, list[dict]]:
    import datasets

    try:
        loaded = datasets.load_dataset(task.path, task.config)
    except Exception as error:  # offline: ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ...
        raise ConnectionError(
            f"{task.where}: could not load the Hub dataset {task.path!r} ({type(error).__name__}: {error}). The Hub "
            "is unreachable or HF_HUB_OFFLINE=1 is set: save the audio to a folder and point the task file at it "
            "(source: audiofolder or csv)."
        ) from None
    first = loaded[next(iter(loaded))]
    audio_column = task.audio_column or next(
        (c for c, f in first.features.items() if isinstance(f, datasets.Audio)), None
    )
    if audio_column not in first.column_names:
        raise TaskFileError(
            f"{task.where}: audio_column {audio_column!r} is not a column of {task.path}; found: "
            f"{_found(first.column_names)}."
        )
    task.audio_column = audio_column
    rows = {}
    for hub_split, dataset in loaded.items():
        if isinstance(dataset.features[audio_column], datasets.Audio):
            dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
        class_names = {c: f.names for c, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)}
        split_rows = []
        for index, example in enumerate(dataset):
            for column_name, names in class_names.items():
                example[column_name] = names[example[column_name]]
            example.setdefault("__id__", f"{hub_split}-{index}")
            split_rows.append(example)
        rows[hub_split] = split_rows
    return rows


def _require_columns(task: CustomTask, rows: list[dict], columns: list[str], where: str) -> None:
    present = set(rows[0]) - {"__base__", "__id__"} if rows else set()
    missing = [c for c in columns if c and c not in present]
    if missing:
        what = "column" if len(missing) == 1 else "columns"
        raise TaskFileError(f"{task.where}: {what} {missing} not in {where}; found columns: {_found(present)}.")


def _rows_by_split(task: CustomTask) -> tuple[dict[str, list[dict]] | list[dict], str, str]:
    """The task's rows, already split (`{split: rows}`) or not (`rows`), with the source kind and its location."""
    splits = task.splits or {}
    location = _resolve(task, task.path)
    kind = _source(task, location)
    if kind == "hub":
        return _hub_rows(task), "hub", task.path
    if "files" in splits:
        files = splits["files"]
        if not isinstance(files, dict):
            raise TaskFileError(f"{task.where}: splits.files maps train / validation / test to files, got {files!r}.")
        by_split = {}
        for key, file_name in files.items():
            split = SPLIT_NAMES.get(str(key).lower())
            if split is None:
                raise TaskFileError(f"{task.where}: splits.files key {key!r} is not train, validation or test.")
            path = _resolve(task, file_name)
            by_split[split] = _audiofolder_rows(task, path) if os.path.isdir(path) else read_table(path)
            for row in by_split[split]:
                row.setdefault("__base__", os.path.dirname(path))
        return by_split, kind, location
    if kind == "audiofolder":
        if not os.path.isdir(location):
            raise TaskFileError(f"{task.where}: the audio folder {location} does not exist.")
        folders = _split_folders(location)
        if folders and not (set(splits) & {"column", "group_column", "fractions"}):
            return {s: _audiofolder_rows(task, f) for s, f in folders.items()}, kind, location
        return _audiofolder_rows(task, location), kind, location
    rows = read_table(location)
    for row in rows:
        row["__base__"] = os.path.dirname(location)
    return rows, kind, location


# ---------------------------------------------------------------------------------------------- splitting


def _fractions(task: CustomTask) -> tuple[float, float, float]:
    values = task.splits.get("fractions", DEFAULT_FRACTIONS)
    if isinstance(values, dict):
        values = [values.get(k, values.get({"validation": "valid"}.get(k, k), 0.0)) for k in SPLITS]
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise TaskFileError(
            f"{task.where}: splits.fractions must be three numbers train, validation, test summing to 1, "
            f"got {values!r}."
        )
    return tuple(float(v) for v in values)


def group_split(groups: list[str], fractions=DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, str]:
    """A seeded split of `groups` (one entry per row) in which every group lands in exactly one split.

    Groups are shuffled with `seed` and dealt in that order: train until it holds `fractions[0]` of the rows, then
    validation, then test; every split gets at least one group when there are three or more. Returns
    `{group: split}`.
    """
    names, counts = np.unique(np.asarray(groups, dtype=str), return_counts=True)
    if len(names) < 3:
        raise TaskFileError(
            f"a group split needs at least 3 groups to fill train, validation and test; found {len(names)}: "
            f"{list(names)}."
        )
    order = np.random.default_rng(seed).permutation(len(names))
    bounds = np.cumsum(fractions)[:2] * counts.sum()
    assignment, seen = [], 0
    for index in order:
        assignment.append(0 if seen < bounds[0] else 1 if seen < bounds[1] else 2)
        seen += counts[index]
    # Small sets: move the last groups dealt into any split left empty.
    for target in (2, 1, 0):
        if target not in assignment:
            donor = next(i for i in range(len(assignment) - 1, -1, -1) if assignment.count(assignment[i]) > 1)
            assignment[donor] = target
    return {str(names[index]): SPLITS[split] for index, split in zip(order, assignment)}


def _split_rows(task: CustomTask, rows: list[dict], where: str) -> dict[str, list[dict]]:
    splits = task.splits
    if "column" in splits:
        column = splits["column"]
        _require_columns(task, rows, [column], where)
        by_split = {s: [] for s in SPLITS}
        for number, row in enumerate(rows, 1):
            split = SPLIT_NAMES.get(str(row[column]).strip().lower())
            if split is None:
                raise TaskFileError(
                    f"{task.where}: row {number} of {where} has split {row[column]!r} in column {column!r}; expected "
                    f"train, validation (valid, val, dev) or test. Values found: "
                    f"{_found({str(r[column]) for r in rows})}."
                )
            by_split[split].append(row)
        return by_split
    group_column = splits.get("group_column")
    if group_column:
        _require_columns(task, rows, [group_column], where)
        groups = [str(row[group_column]) for row in rows]
    else:
        groups = [str(row[task.audio_column]) for row in rows]  # each file its own group
    membership = group_split(groups, _fractions(task), int(splits.get("seed", 0)))
    by_split = {s: [] for s in SPLITS}
    for row, group in zip(rows, groups):
        by_split[membership[group]].append(row)
    return by_split


# ---------------------------------------------------------------------------------------------- labels


def _tags(task: CustomTask, value, where: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    if task.label_delimiter is None:
        text = str(value)
        if any(d in text for d in (",", ";", "|")):
            raise TaskFileError(
                f"{task.where}: {where} holds {text!r} for a multi-label task: set label_delimiter (e.g. ';') to "
                "split it into tags, or store a list (JSONL)."
            )
        return [text.strip()]
    return [t.strip() for t in str(value).split(task.label_delimiter) if t.strip()]


def _labels(task: CustomTask, rows: dict[str, list[dict]], where: str) -> tuple[dict[str, list], tuple[str, ...]]:
    """`(id, audio, label)` rows per split and the label names, for the task's problem type."""
    if task.problem_type == REGRESSION:
        targets = task.label_columns or ([task.label_column] if task.label_column else [])
        if isinstance(targets, str):
            targets = [targets]
    else:
        targets = [task.label_column]
    all_rows = [r for split_rows in rows.values() for r in split_rows]
    _require_columns(
        task, all_rows, [task.audio_column, *targets] + ([task.id_column] if task.id_column else []), where
    )

    def raw_value(row, split, number):
        return row[targets[0]], f"row {number} of {where} ({split})"

    if task.problem_type == SINGLE_LABEL:
        seen = {str(r[targets[0]]).strip() for r in all_rows}
        if "" in seen:
            raise TaskFileError(f"{task.where}: some rows of {where} have an empty {targets[0]!r}: fill or drop them.")
        names = tuple(str(n) for n in task.labels) if task.labels else tuple(sorted(seen))
        unknown = sorted(seen - set(names))
        if unknown:
            raise TaskFileError(
                f"{task.where}: labels {unknown} in {where} are not in the task's labels {list(names)}."
            )
    elif task.problem_type == MULTI_LABEL:
        seen = set()
        for split, split_rows in rows.items():
            for number, row in enumerate(split_rows, 1):
                seen.update(_tags(task, *raw_value(row, split, number)))
        names = tuple(str(n) for n in task.labels) if task.labels else tuple(sorted(seen))
        unknown = sorted(seen - set(names))
        if unknown:
            raise TaskFileError(f"{task.where}: tags {unknown} in {where} are not in the task's labels {list(names)}.")
    else:
        names = tuple(targets)

    result = {}
    for split in SPLITS:
        result[split] = []
        for number, row in enumerate(rows.get(split, []), 1):
            audio = row[task.audio_column]
            if isinstance(audio, str) and not os.path.isabs(audio):
                audio = os.path.normpath(os.path.join(row.get("__base__", task.base_dir), audio))
            track_id = str(row[task.id_column]) if task.id_column else str(row.get("__id__") or audio)
            if task.problem_type == SINGLE_LABEL:
                label = names.index(str(row[targets[0]]).strip())
            elif task.problem_type == MULTI_LABEL:
                tags = set(_tags(task, *raw_value(row, split, number)))
                label = [float(n in tags) for n in names]
            else:
                try:
                    label = [float(row[t]) for t in targets]
                except (TypeError, ValueError):
                    raise TaskFileError(
                        f"{task.where}: row {number} of {where} ({split}) has a non-numeric target in "
                        f"{[row[t] for t in targets]} (columns {targets})."
                    ) from None
            result[split].append((track_id, audio, label))
    return result, names


def _metrics(task: CustomTask, label_names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    available = sorted(d for d in os.listdir(METRICS_DIR) if os.path.isdir(os.path.join(METRICS_DIR, d)))
    names = list(task.metrics or [METRICS_FOR[task.problem_type][0]])
    for name in names:
        if name not in available:
            raise TaskFileError(f"{task.where}: no metric module {name!r} in {METRICS_DIR}; available: {available}.")
        if name not in METRICS_FOR[task.problem_type]:
            raise TaskFileError(
                f"{task.where}: metric {name!r} does not score a {task.problem_type} task; use one of "
                f"{list(METRICS_FOR[task.problem_type])}."
            )
    if names[0] == "myna_key" and not set(label_names) <= set(KEY_NAMES):
        raise TaskFileError(f"{task.where}: myna_key needs key labels such as 'C major' or 'A minor'.")
    return names[0], tuple(names[1:])


def custom_spec(task: CustomTask, label_names: tuple[str, ...], source: str) -> TaskSpec:
    metric, extra = _metrics(task, label_names)
    if task.problem_type == MULTI_LABEL:
        primary, columns = (
            "roc_auc_macro",
            ((f"{task.name} AUC", "roc_auc_macro"), (f"{task.name} AP", "average_precision_macro")),
        )
    elif task.problem_type == REGRESSION:
        primary, columns = "r2_mean", ((f"{task.name} R2", "r2_mean"),)
    elif metric == "myna_key":
        primary, columns = "weighted_score", ((task.name, "weighted_score"),)
    else:
        primary, columns = "accuracy", ((task.name, "accuracy"),)
    return TaskSpec(task.name, task.problem_type, label_names, metric, primary, columns, source, extra)


def load_custom_task(task_or_path):
    """A custom task as `(TaskSpec, DatasetDict)`: from a task file path, a folder of labelled audio, or a
    [`CustomTask`]."""
    task = task_or_path if isinstance(task_or_path, CustomTask) else read_task_file(task_or_path)
    if not isinstance(task.splits, dict):
        raise TaskFileError(
            f"{task.where}: splits is a mapping (column / files / group_column ...), got {task.splits!r}."
        )
    unknown = sorted(set(task.splits) - {"column", "files", "group_column", "fractions", "seed"})
    if unknown:
        raise TaskFileError(
            f"{task.where}: unknown splits keys {unknown}; use column, files, or group_column, fractions, seed."
        )
    rows, kind, location = _rows_by_split(task)
    if isinstance(rows, dict):
        unknown_splits = [s for s in rows if s not in SPLITS]
        if kind == "hub":
            rows = {SPLIT_NAMES[s.lower()]: r for s, r in rows.items() if s.lower() in SPLIT_NAMES}
        elif unknown_splits:
            raise TaskFileError(f"{task.where}: splits {unknown_splits} are not train, validation or test.")
        missing = [s for s in SPLITS if not rows.get(s)]
        if missing:
            raise TaskFileError(
                f"{task.where}: {location} gives no rows for {missing} (found splits: "
                f"{_found(s for s in rows if rows[s])}); add them, or split by a column or by groups (splits: column / group_column)."
            )
    else:
        if not task.audio_column:
            guess = next((c for c in AUDIO_COLUMN_GUESSES if rows and c in rows[0]), None)
            if guess is None:
                raise TaskFileError(
                    f"{task.where}: set audio_column; none of {list(AUDIO_COLUMN_GUESSES)} is a column of {location}. "
                    f"Found columns: {_found(set(rows[0]) - {'__base__'}) if rows else 'none (empty table)'}."
                )
            task.audio_column = guess
        _require_columns(task, rows, [task.audio_column], location)
        rows = _split_rows(task, rows, location)
    if not task.audio_column:
        first = next(r for split_rows in rows.values() for r in split_rows)
        task.audio_column = next((c for c in AUDIO_COLUMN_GUESSES if c in first), None)
        if task.audio_column is None:
            raise TaskFileError(f"{task.where}: set audio_column; found columns: {_found(set(first) - {'__base__'})}.")
    labelled, label_names = _labels(task, rows, location)
    if task.problem_type == REGRESSION:
        labelled, _, _ = standardize_targets(labelled, fit_splits=("train",))
    missing_audio = sum(
        1
        for split_rows in labelled.values()
        for _, audio, _ in split_rows
        if isinstance(audio, str) and not os.path.isfile(audio)
    )
    if missing_audio:
        logger.warning("%s: %d audio files do not exist; they will be skipped and counted", task.where, missing_audio)
    spec = custom_spec(task, label_names, f"custom:{kind}:{location}")
    return spec, _build(spec, labelled, ENCODED_AUDIO if kind == "hub" else None)


__all__ = ["CustomTask", "TaskFileError", "group_split", "load_custom_task", "read_task_file"]
