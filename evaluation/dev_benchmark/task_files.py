"""The labelled tasks' files: one `clips.csv` row per clip (its audio file, all its labels, its split), `key.csv`
(the clips with a trusted key) and the four task files in the custom task family's format."""

import logging
import os

from myna_common.atomic import write_text

from . import scores
from .outputs import safe_name, write_csv


logger = logging.getLogger(__name__)

TASK_NAMES = ("dev-key", "dev-composer", "dev-instruments", "dev-tempo")


def clip_rows(plans: list[scores.ClipPlan], membership: dict[str, str]) -> list[dict]:
    """One `clips.csv` row per plan: its audio file (relative to the tasks folder), its labels and its split."""
    rows = []
    for plan in plans:
        rows.append(
            {
                "file": os.path.join("audio", plan.collection, safe_name(plan.clip_id) + ".flac"),
                "clip": plan.clip_id,
                "piece": plan.piece_id,
                "work": plan.group,
                "split": membership[plan.group],
                "composer": plan.collection,
                "key": plan.key or "",
                "instruments": ";".join(plan.families),
                "programs": ";".join(str(p) for p in plan.programs),
                "tempo": plan.tempo,
                "transpose": plan.transpose,
                "start_quarter": plan.start,
                "key_correlation": plan.key_correlation,
            }
        )
    return rows


CLIP_COLUMNS = [
    "file",
    "clip",
    "piece",
    "work",
    "split",
    "composer",
    "key",
    "instruments",
    "programs",
    "tempo",
    "transpose",
    "start_quarter",
    "key_correlation",
]


def task_files(folder: str) -> dict[str, dict]:
    """The four task files (custom task family format) over `clips.csv` / `key.csv` in `folder`."""
    common = {"audio_column": "file", "splits": {"column": "split"}}
    return {
        "dev-key": {
            "name": "dev-key",
            "path": "key.csv",
            "label_column": "key",
            "problem_type": "single_label",
            "labels": [scores.key_name(t, m) for t in range(12) for m in ("major", "minor")],
            "metrics": ["myna_key", "myna_accuracy"],
            **common,
        },
        "dev-composer": {
            "name": "dev-composer",
            "path": "clips.csv",
            "label_column": "composer",
            "problem_type": "single_label",
            "metrics": ["myna_accuracy"],
            **common,
        },
        "dev-instruments": {
            "name": "dev-instruments",
            "path": "clips.csv",
            "label_column": "instruments",
            "problem_type": "multi_label",
            "label_delimiter": ";",
            "labels": list(scores.GM_FAMILIES),
            "metrics": ["myna_tagging"],
            **common,
        },
        "dev-tempo": {
            "name": "dev-tempo",
            "path": "clips.csv",
            "label_columns": ["tempo"],
            "problem_type": "regression",
            "metrics": ["myna_r2"],
            **common,
        },
    }


def write_tasks(folder: str, rows: list[dict]) -> dict[str, str]:
    """clips.csv, key.csv and the task files; returns `{task name: task file}`."""
    import yaml

    write_csv(os.path.join(folder, "clips.csv"), rows, CLIP_COLUMNS)
    keyed = [r for r in rows if r["key"]]
    write_csv(os.path.join(folder, "key.csv"), keyed, CLIP_COLUMNS)
    paths = {}
    for name, values in task_files(folder).items():
        if name == "dev-key" and not keyed:
            logger.warning("no clip has a trusted key (no tonal collection?): dev-key is not written")
            continue
        paths[name] = os.path.join(folder, f"{name}.yaml")
        write_text(paths[name], yaml.safe_dump(values, sort_keys=False))
    return paths


__all__ = ["CLIP_COLUMNS", "TASK_NAMES", "clip_rows", "task_files", "write_tasks"]
