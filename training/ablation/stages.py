"""One run of a sweep, stage by stage, each finished stage reused: the pre-training (kept with `pretrain.json`; an
unfinished one resumes from its last checkpoint), each task's probes (`eval/<task>/`), and the run's `result.json`.

    <runs_dir>/<run name>/
      pretrain/        pretrain.py's output folder: the exported model in model/, checkpoints/ while it runs
      pretrain.json    the finished pre-training: model folder, steps, examples, CPU-seconds, last loss
      eval/<task>/     probe.py's output folder of each task, and fingerprint.json once its probes finished
      result.json      the finished run: the point, its seed, the pre-training's figures and every task's metrics

Every record carries the fingerprint of the settings that made it (`fingerprint.py`, which also says which stage is
refused and which is run again when they differ).
"""

import json
import os
import shutil
import time

from myna_common.atomic import write_json
from myna_training.ablation import fingerprint
from myna_training.ablation.arguments import AblationArguments
from myna_training.ablation.statistics import task_results
from myna_training.ablation.sweep import pretrain_argv, probe_argv, run_name, task_folder, task_list


PRETRAIN_SUMMARY = "pretrain.json"  # written when a run's pre-training has finished: the stage is then reused
RESULT_FILE = "result.json"  # written when the whole run (pre-training and every task's probes) has finished
PROBE_RECORD = "fingerprint.json"  # beside a task's probe results once they finished: the settings that made them


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def without_fingerprint(record: dict) -> dict:
    """A stage's record as the tables and reports use it."""
    return {k: v for k, v in record.items() if k != fingerprint.FINGERPRINT}


def run_folder(point: dict, args: AblationArguments, seed: int) -> str:
    return os.path.join(args.runs_dir or os.path.join(args.output_dir, "runs"), run_name(point, seed))


def check_run(point: dict, args: AblationArguments, seed: int) -> None:
    """Raises, in one line, when the run's folder holds a finished pre-training (or a run built on one) that other
    settings made, or unknown ones."""
    run_dir = run_folder(point, args, seed)
    wanted = fingerprint.pretraining(point, args, seed)
    for name in (PRETRAIN_SUMMARY, RESULT_FILE):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            problem = fingerprint.refusal(run_dir, read_json(path), wanted)
            if problem:
                raise ValueError(problem)


def _finished_run(run_dir: str, wanted: dict) -> dict | None:
    """The run's `result.json` when it was made with `wanted` (the run's fingerprint), else `None`."""
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    result = read_json(path)
    return result if result.get(fingerprint.FINGERPRINT) == wanted else None


def run_state(point: dict, args: AblationArguments, seed: int) -> str:
    """What a run still needs: "done", "probes" (its pre-training finished) or "all"."""
    run_dir = run_folder(point, args, seed)
    wanted = fingerprint.run(fingerprint.pretraining(point, args, seed), args)
    if _finished_run(run_dir, wanted) is not None:
        return "done"
    return "probes" if os.path.exists(os.path.join(run_dir, PRETRAIN_SUMMARY)) else "all"


def pretrain_stage(point: dict, seed: int, args: AblationArguments, run_dir: str) -> dict:
    """The run's pre-training: reused when finished, resumed from its last checkpoint when interrupted."""
    from myna_training import pretrain
    from myna_training.run_folder import RUN_FILE

    summary_path = os.path.join(run_dir, PRETRAIN_SUMMARY)
    if os.path.exists(summary_path):  # made with this sweep's settings: `check_run` refuses any other
        summary = read_json(summary_path)
        if os.path.isdir(summary["model_dir"]):
            print(f"pre-training finished earlier: reusing {summary['model_dir']}")
            return summary
    output_dir = os.path.join(run_dir, "pretrain")
    argv = pretrain_argv(point, args, output_dir, seed)
    started = time.perf_counter()
    summary = None
    if os.path.exists(os.path.join(output_dir, RUN_FILE)):
        try:  # an interrupted pre-training of this run: continue it from its last checkpoint
            summary = pretrain.main(argv + ["--resume_from_checkpoint", "latest"])
        except ValueError as error:  # another run's folder (the sweep's settings changed): start again
            print(f"not resuming ({error}): starting this run again.")
    if summary is None:
        summary = pretrain.main(argv + ["--overwrite_output_dir"])
    record = {
        key: summary[key]
        for key in ("model_dir", "run_id", "steps", "examples_seen", "cpu_seconds", "resumed_at_step", "last_loss")
    }
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    record[fingerprint.FINGERPRINT] = fingerprint.pretraining(point, args, seed)
    write_json(summary_path, record)
    return record


def probe_stage(task: str, args: AblationArguments, summary: dict, eval_dir: str, seed: int) -> dict:
    """probe.py's report of one task of a run: reused when its probes finished with this sweep's settings, probed
    (again) otherwise."""
    from myna_evaluation import probe

    task_dir = os.path.join(eval_dir, task_folder(task))
    results, record = os.path.join(task_dir, "results.json"), os.path.join(task_dir, PROBE_RECORD)
    wanted = fingerprint.task_probes(summary[fingerprint.FINGERPRINT], args, task)
    if os.path.exists(results) and os.path.exists(record):
        theirs, mine = fingerprint.differences(read_json(record), wanted)
        if not theirs:
            print(f"{task}: probed earlier, reusing {results}")
            return read_json(results)
        print(f"{task}: probed earlier with {theirs}; this sweep asks for {mine}: probing again")
    if os.path.exists(record):
        os.remove(record)  # until the new probes finish, the results there are nobody's
    report = probe.main(probe_argv(args, summary["model_dir"], eval_dir, task, seed))
    write_json(record, wanted)
    return report


def run_point(point: dict, args: AblationArguments, seed: int = 0) -> dict:
    """Pre-trains and probes one point of the sweep with one seed, reusing every stage that finished before with
    the same settings (and refusing a pre-training that other settings made: `check_run`)."""
    check_run(point, args, seed)
    run_dir = run_folder(point, args, seed)
    result_path = os.path.join(run_dir, RESULT_FILE)
    wanted = fingerprint.run(fingerprint.pretraining(point, args, seed), args)
    finished = _finished_run(run_dir, wanted)
    if finished is not None:
        return without_fingerprint(finished)
    os.makedirs(run_dir, exist_ok=True)
    summary = pretrain_stage(point, seed, args, run_dir)
    eval_dir = os.path.join(run_dir, "eval")
    probed = time.perf_counter()
    result = {
        **point,
        "seed": seed,
        "run": run_name(point, seed),
        "steps": summary["steps"],
        "examples_seen": summary["examples_seen"],
        "last_loss": summary["last_loss"],
        "cpu_seconds": round(summary["cpu_seconds"], 1),
        "pretrain_seconds": summary["wall_seconds"],
        "tasks": {},
    }
    for task in task_list(args):
        result["tasks"].update(task_results(probe_stage(task, args, summary, eval_dir, seed)))
    result["probe_seconds"] = round(time.perf_counter() - probed, 1)
    if not args.keep_checkpoints:
        shutil.rmtree(os.path.join(run_dir, "pretrain", "checkpoints"), ignore_errors=True)
        shutil.rmtree(os.path.join(eval_dir, "embeddings"), ignore_errors=True)
    write_json(result_path, {**result, fingerprint.FINGERPRINT: wanted})
    return result


__all__ = [
    "PRETRAIN_SUMMARY", "PROBE_RECORD", "RESULT_FILE", "check_run", "pretrain_stage", "probe_stage", "read_json",
    "run_folder", "run_point", "run_state", "without_fingerprint",
]
