"""Every downstream task by name, as `(TaskSpec, DatasetDict)`: `load_task` dispatches to the task families.

Every loader returns a [`TaskSpec`] (problem type, label names, metric) and a `DatasetDict` with `train`,
`validation` and `test` splits and three columns: `id` (str), `audio` (a file path, or a `{"array",
"sampling_rate"}` dict for generated audio; decode either with `modeling_myna.audio_utils.load_audio`) and `label`
(class index, multi-hot vector or regression targets).

The families, one module each in `task_families/`: `paper` (the four tasks of the paper's Table 1, from their
original release, the MARBLE layout or the Hub), `synthetic` (the generated-corpus tasks: no download, what the
tests use), `marble` (MARBLE's further tasks) and `custom` (a user's task file or folder). What they share
(`TaskSpec`, the splits, `_build`, the MARBLE JSONL reader, ...) lives in `task_families/base.py`. The names first
defined here are re-exported from their new homes, so `from myna_evaluation.tasks import ...` keeps working.
"""

import hashlib
import json

import datasets

from myna_common.cli_support import did_you_mean

from .task_families.base import (  # what the loaders share; re-exported here, where they were first defined
    DATA_DIR,  # noqa: F401
    DOWNLOAD_HINTS,
    ENCODED_AUDIO,  # noqa: F401
    KEY_NAMES,
    SPLITS,  # noqa: F401
    TONICS,  # noqa: F401
    DatasetLayoutError,
    TaskSpec,
    _apply_split_file,
    _build,
    column,
    normalize_key,
    read_lines,  # noqa: F401
    standardize_targets,
)
from .task_families.custom import load_custom_task
from .task_families.marble import MARBLE_ALIASES, MARBLE_TASKS, load_marble_task
from .task_families.paper import (  # noqa: F401  (re-exported: first defined here)
    EMO_TARGETS,
    GTZAN_GENRES,
    HUB_IDS,
    MTT_CORRUPT_CLIPS,
    ORIGINAL_LOADERS,
    PAPER_TASKS,
    TASK_ALIASES,
    _spec,
    hub_revision_signature,
    load_paper_task,
)
from .task_families.synthetic import (  # noqa: F401  (re-exported: first defined here)
    SYNTHETIC_DURATION,
    SYNTHETIC_SEEDS,
    SYNTHETIC_SIZES,
    SYNTHETIC_TASKS,
    load_synthetic_task,
    synthetic_spec,
    synthetic_splits,
)


def known_tasks() -> list[str]:
    return [*PAPER_TASKS, *MARBLE_TASKS, *SYNTHETIC_TASKS, "custom:<task.yaml or audio folder>"]


def load_task(
    name: str, path: str | None = None, layout: str = "auto", split_file: str | None = None, **synthetic_kwargs
):
    """Any task by name: `synthetic-*` tasks are generated; the paper's and MARBLE's tasks need `path` (a folder, or
    a Hub id for the paper's); `custom:<file.yaml>` (or `custom` with `path`) is a task file of
    `task_families.custom`, `custom:<folder>` a folder of labelled audio with the default task file."""
    if name in SYNTHETIC_TASKS:
        return load_synthetic_task(name, **synthetic_kwargs)
    if name == "custom" or name.startswith("custom:"):
        target = name.split(":", 1)[1] if ":" in name else path
        if not target:
            raise ValueError("task 'custom' needs a task file or a folder: --tasks custom:my_task.yaml.")
        return load_custom_task(target)
    if MARBLE_ALIASES.get(name, name) in MARBLE_TASKS:
        if path is None:
            raise ValueError(
                f"task {name!r} needs its data: pass a folder (original release or MARBLE JSONL), e.g. "
                f"--dataset_paths {name}=/data/{name.split('-')[0]} (or {name.split('-')[0]}=... for every "
                f"{name.split('-')[0]}-* task)."
            )
        if layout not in ("auto", "original", "marble"):
            raise ValueError(f"{name}: layout must be auto, original or marble, got {layout!r}.")
        spec, rows = load_marble_task(name, path, layout)
        if split_file is not None:
            rows = _apply_split_file({r[0]: r for split_rows in rows.values() for r in split_rows}, split_file)
        return spec, _build(spec, rows)
    if path is None:
        name = TASK_ALIASES.get(name, name)
        if name not in ORIGINAL_LOADERS:
            known = known_tasks()
            raise ValueError(f"unknown task {name!r}.{did_you_mean(name, known)} Choose one of {known}.")
        raise ValueError(
            f"task {name!r} needs its data: pass a folder (original or MARBLE layout) or a Hub id, e.g. "
            f"--dataset_paths {name}=/data/{name} or {name}={HUB_IDS[name][0]}. Get it from {DOWNLOAD_HINTS[name]}."
        )
    return load_paper_task(name, path, layout=layout, split_file=split_file)


def dataset_signature(spec: TaskSpec, dataset: datasets.Dataset) -> str:
    """A short hash of a split's audio (source, ids, audio paths) for the embedding cache key.

    Labels are left out: tasks over the same audio (the four generated tasks) share their embeddings.
    """
    digest = hashlib.sha1(spec.source.encode())
    digest.update(json.dumps(column(dataset, "id")).encode())
    if isinstance(dataset.features["audio"], datasets.Value):
        digest.update(json.dumps(column(dataset, "audio")).encode())
    return digest.hexdigest()[:16]


__all__ = [
    "DatasetLayoutError",
    "GTZAN_GENRES",
    "KEY_NAMES",
    "PAPER_TASKS",
    "SYNTHETIC_TASKS",
    "TaskSpec",
    "dataset_signature",
    "known_tasks",
    "load_paper_task",
    "load_synthetic_task",
    "load_task",
    "normalize_key",
    "standardize_targets",
    "synthetic_splits",
    "column",
]
