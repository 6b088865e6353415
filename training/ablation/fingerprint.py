"""What each stage of an ablation run depends on: the fingerprint a finished stage records, and the one line that
says how a recorded fingerprint differs from the one a sweep asks for.

A run's folder is named after its point and seed (`sweep.run_name`); the name leaves out the data, the tasks and the
extra flags, so two sweeps into one `--output_dir` (or one `--runs_dir`) that differ only in those share the folder.
Each finished stage therefore records every setting that changes its result, and is reused only for the same:

    pre-training     pretrain.json                  the data (--dataset, --data_dir, --num_clips of the generated
                                                    corpus), --pretrain_args, the point's --recipes flags, the point,
                                                    the seed, the versions of myna-hf and torch (major.minor)
    a task's probes  eval/<task>/fingerprint.json   the pre-training's, the task, --synthetic_sizes,
                                                    --synthetic_duration, --probe_args, --full_grid
    the run          result.json                    the pre-training's, --tasks and the same probe settings
    a curve step     curve/seed<N>/step-<S>/result.json   the checkpoint's pre-training (its run.json's run id) and
                                                    step, --tasks, the probe settings and the versions

The pre-training's fingerprint leaves the probes out, so a new task list reuses the pre-training. Reuse per stage
(`stages.py`, `curve.py`): a finished pre-training made with other settings is refused, in one line naming what
differs, before any run starts, never re-run: the folder may hold another sweep's work (sweeps share `--runs_dir` on
purpose) and re-running would replace it. One written before stages recorded fingerprints is refused too, since its
data, loss and learning rate are unknown: delete that run folder to run it again. Probes are cheap next to
pre-training: a task's probes, a run's result or a curve step made with other probe settings, or with unknown ones,
are probed again on the reused pre-training, and their new fingerprint replaces the old.
"""

import functools
import importlib.metadata
import json
import os
import shlex

from myna_training.ablation.arguments import AblationArguments, parse_recipes, split_list
from myna_training.ablation.sweep import task_list


FINGERPRINT = "fingerprint"  # the key of a stage's fingerprint in its JSON record


@functools.cache
def versions() -> dict[str, str]:
    """The versions that change a result: myna-hf's, and torch's major.minor (a patch release keeps the kernels)."""
    found = {}
    for name in ("myna-hf", "torch"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
            found[name] = "unknown"
    found["torch"] = ".".join(found["torch"].split("+")[0].split(".")[:2])
    return found


def _canonical(fingerprint: dict) -> dict:
    # As it reads back from JSON (tuples become lists), so that a recorded fingerprint compares equal.
    return json.loads(json.dumps(fingerprint))


def pretraining(point: dict, args: AblationArguments, seed: int) -> dict:
    """What a run's pre-training depends on (the flags `sweep.pretrain_argv` passes, less where things go)."""
    recipe = parse_recipes(args.recipes).get(point["recipe"], "")
    return _canonical({
        "--dataset": args.dataset,
        "--data_dir": os.path.abspath(args.data_dir) if args.data_dir else None,
        # pretrain.py gets --num_clips only for the generated corpus.
        "--num_clips": args.num_clips if args.dataset == "synthetic" else None,
        "--pretrain_args": " ".join(args.pretrain_args.split()),
        "--recipes": f"{point['recipe']}={' '.join(recipe.split())}" if point["recipe"] else None,
        "point": dict(point),
        "seed": seed,
        **versions(),
    })


def _tasks(tasks: list[str]) -> str:
    # custom:<task.yaml> by its absolute path: one file from any working folder, never two files under one name.
    return ",".join(f"custom:{os.path.abspath(t[7:])}" if t.startswith("custom:") else t for t in tasks)


def probe_settings(args: AblationArguments) -> dict:
    """The settings besides the model that change a probe's result (`sweep.probe_argv`)."""
    return {
        "--synthetic_sizes": ",".join(str(n) for n in split_list(args.synthetic_sizes, int)),
        "--synthetic_duration": float(args.synthetic_duration),
        "--probe_args": " ".join(args.probe_args.split()),
        "--full_grid": bool(args.full_grid),
    }


def task_probes(pretrained: dict, args: AblationArguments, task: str) -> dict:
    """What one task's probes of a run depend on: its pre-training (`pretraining`), the task, the probe settings."""
    return _canonical({**pretrained, "task": _tasks([task]), **probe_settings(args)})


def run(pretrained: dict, args: AblationArguments) -> dict:
    """What a run's `result.json` depends on: its pre-training, the task list and the probe settings."""
    return _canonical({**pretrained, "--tasks": _tasks(task_list(args)), **probe_settings(args)})


def curve_step(run_id: str, step: int, args: AblationArguments) -> dict:
    """What the probes of one checkpoint of a `--curve` depend on."""
    return _canonical({
        "pre-training run": run_id, "step": step, "--tasks": _tasks(task_list(args)), **probe_settings(args),
        **versions(),
    })


def _shown(key: str, value) -> str:
    if not key.startswith("--"):
        return f"{key} {json.dumps(value, sort_keys=True) if isinstance(value, dict) else value}"
    if value is None or value is False:
        return f"no {key}"
    return key if value is True else f"{key} {shlex.quote(str(value))}"


def differences(recorded: dict, wanted: dict) -> tuple[str, str]:
    """`(what the record has, what is wanted)` over the keys of `wanted` that differ, e.g.
    `("--pretrain_args '--loss infonce'", "--pretrain_args ''")`; two empty strings when none do."""
    keys = [k for k in wanted if recorded.get(k, "?") != wanted[k]]
    return ", ".join(_shown(k, recorded.get(k)) for k in keys), ", ".join(_shown(k, wanted[k]) for k in keys)


def refusal(where: str, record: dict, wanted: dict) -> str | None:
    """The line that refuses to reuse the finished stage in `where` (its JSON `record`) for a sweep that wants
    `wanted`, or `None` when the record was made with the same settings (only the keys of `wanted` count)."""
    recorded = record.get(FINGERPRINT)
    if recorded is None:
        return (
            f"{where} was made before runs recorded their settings, so whether its data, loss and learning rate are "
            "this sweep's is unknown: delete that run to run it again, or use another --output_dir/--runs_dir."
        )
    theirs, mine = differences(recorded, wanted)
    if not theirs:
        return None
    return (
        f"{where} was made with {theirs} and this sweep asks for {mine}: use another --output_dir/--runs_dir, or "
        "delete that run."
    )


__all__ = [
    "FINGERPRINT", "curve_step", "differences", "pretraining", "probe_settings", "refusal", "run", "task_probes",
    "versions",
]
