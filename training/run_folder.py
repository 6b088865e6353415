"""The layout of a pre-training output folder, and the identity that keeps two runs from mixing in it.

    output_dir/
      run.json          the run's identity: seed, resolved settings, data hash (and when it started)
      model/            the export: only what `from_pretrained` needs, plus the model card (what `push_to_hub`
                        uploads and what you copy)
      checkpoints/      checkpoint-<step>/, each with a copy of run.json
      logs/             tracker logs (tensorboard, ...)
      cache/            spectrograms, keyed by content (safe to share between runs)

A run is its settings that change the trained weights (seed included) plus the hash of its data, and how it was
planned: the number of processes and the global batch (`per_device_batch_size x num_processes`), which fix the
epochs' boundaries and, for epoch-based runs, `max_steps`. `--resume_from_checkpoint latest` resumes only a checkpoint
of the same run. A resume on another number of processes is refused with a message naming both layouts and what to
pass: with the same global batch the plan is the same, and `--resume_with_new_process_count` continues it (not for a
streamed run, whose stream position is per process); a changed global batch is another run. A new run into a folder
that holds another run refuses unless `--overwrite_output_dir` is given (the transformers convention), which removes
that run's export, checkpoints, logs and `run.json` (the content-keyed cache is kept).
"""

import datetime
import hashlib
import json
import os
import shutil

from myna_common.atomic import write_json


RUN_FILE = "run.json"
MODEL_DIR, CHECKPOINTS_DIR, LOGS_DIR, CACHE_DIR = "model", "checkpoints", "logs", "cache"

# Settings that say where things go or how a run is watched, not what it trains: they may differ between a run
# and its resumption.
NOT_IDENTITY = frozenset(
    {
        "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "print_config", "logging_steps", "report_to",
        "push_to_hub", "hub_model_id", "hub_private_repo", "checkpointing_steps", "checkpoints_total_limit",
        "probe_clips", "cache_dir", "spectrogram_placement", "preprocessing_batch_size", "torch_compile",
        "resume_with_new_process_count",
    }
)
# How the global batch is split over processes: in the identity, but the same plan for any split of one global batch.
PROCESS_LAYOUT = ("num_processes", "per_device_batch_size")
NEW_PROCESS_COUNT_FLAG = "--resume_with_new_process_count"


def run_identity(settings: dict, data_hash: str) -> dict:
    """`{"run_id", "seed", "data_hash", "settings"}`: the run's id is a hash of the rest."""
    settings = {k: v for k, v in sorted(settings.items()) if k not in NOT_IDENTITY}
    digest = hashlib.sha256(json.dumps([settings, data_hash], sort_keys=True, default=str).encode()).hexdigest()
    return {"run_id": digest[:12], "seed": settings.get("seed"), "data_hash": data_hash, "settings": settings}


def read_identity(folder: str) -> dict | None:
    path = os.path.join(folder, RUN_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_identity(folder: str, identity: dict, started: str | None = None) -> None:
    record = {**identity, "started": started or datetime.datetime.now().isoformat(timespec="seconds")}
    write_json(os.path.join(folder, RUN_FILE), record, indent=2, default=str)  # makes the folder


def describe_run(identity: dict | None, where: str) -> str:
    if identity is None:
        return f"an unidentified run in {where} (no {RUN_FILE}: written by an older version, or not a Myna run)"
    started = f", started {identity['started']}" if identity.get("started") else ""
    return f"run {identity['run_id']} in {where} (seed {identity.get('seed')}{started})"


def differences(mine: dict, theirs: dict | None) -> str:
    """The settings where two identities differ, as `name: theirs -> mine`."""
    if theirs is None:
        return ""
    a, b = theirs.get("settings", {}), mine["settings"]
    changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if theirs.get("data_hash") != mine["data_hash"]:
        changed.append(f"data hash: {theirs.get('data_hash')} -> {mine['data_hash']} (other clips or audio)")
    return "; ".join(changed)


def is_run_content(name: str) -> bool:
    """Entries a run writes at the top of its folder (besides the content-keyed cache)."""
    return name in (RUN_FILE, MODEL_DIR, CHECKPOINTS_DIR, LOGS_DIR) or name.startswith(RUN_FILE)


def check_new_run(output_dir: str, overwrite: bool) -> bool:
    """A new run may write into `output_dir` only when it holds nothing but a cache, or with `overwrite`.

    Returns `True` when the folder holds only a run that stopped before writing anything worth keeping (its identity
    and logs, no checkpoint, no export: a run that failed during its set-up), which the new run replaces.
    """
    from myna_common.cli_support import check_output_folder

    # A file, or a folder of music (never written into, whatever the flags): one line, before any work.
    check_output_folder(output_dir, own=lambda _: True, option="--output_dir", what="run")
    if not os.path.isdir(output_dir):
        return False
    taken = sorted(n for n in os.listdir(output_dir) if n != CACHE_DIR)
    if taken and set(taken) <= {RUN_FILE, LOGS_DIR}:
        return True  # nothing to lose: no checkpoint, no model
    if taken and not overwrite:
        previous = describe_run(read_identity(output_dir), output_dir)
        raise ValueError(
            f"output_dir {output_dir} is not empty (it holds {', '.join(taken[:5])}"
            f"{', ...' if len(taken) > 5 else ''}: {previous}). Choose another --output_dir, continue that run with "
            "--resume_from_checkpoint latest, or replace it with --overwrite_output_dir."
        )
    return False


def clear_run(output_dir: str) -> list[str]:
    """Removes a previous run's identity, export, checkpoints and logs (for `--overwrite_output_dir`)."""
    removed = []
    if os.path.isdir(output_dir):
        for name in sorted(os.listdir(output_dir)):
            if is_run_content(name):
                path = os.path.join(output_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(name)
    return removed


def differs_only_in_process_layout(mine: dict, theirs: dict | None) -> bool:
    """Whether two identities are one run launched on other numbers of processes (global batch included)."""
    if theirs is None or theirs.get("run_id") == mine["run_id"] or theirs.get("data_hash") != mine["data_hash"]:
        return False
    layout = (*PROCESS_LAYOUT, "global_batch_size")
    a = {k: v for k, v in theirs.get("settings", {}).items() if k not in layout}
    b = {k: v for k, v in mine["settings"].items() if k not in layout}
    return a == b


def adopt_process_layout(mine: dict, theirs: dict | None, allowed: bool, streaming: bool, where: str) -> dict:
    """The identity a resume continues under: `mine`, or `theirs` when the checkpoint is this run planned on another
    number of processes with the same global batch and `allowed`. Raises, naming both layouts and what to pass,
    when it is that run on another number of processes otherwise; any other difference is left to `check_resume`."""
    if not differs_only_in_process_layout(mine, theirs):
        return mine

    def layout(identity):
        settings = identity.get("settings", {})
        processes, batch = settings.get("num_processes"), settings.get("per_device_batch_size")
        total = settings.get("global_batch_size")
        return processes, batch, total, (
            f"{processes if processes is not None else 'an unrecorded number of'} process(es) x {batch} clips"
            + (f" (global batch {total})" if total is not None else "")
        )

    old_processes, _, old_total, old = layout(theirs)
    new_processes, _, new_total, new = layout(mine)
    run = describe_run(theirs, where)
    if old_total != new_total:
        keep = ""
        if old_total is not None and new_processes and old_total % new_processes == 0:
            keep = (f", or keep its global batch on {new_processes} process(es) with --per_device_batch_size "
                    f"{old_total // new_processes} {NEW_PROCESS_COUNT_FLAG}")
        raise ValueError(
            f"cannot resume: {run} was planned for {old}, and this launch has {new}: another global batch changes "
            f"the epochs' boundaries and, for epoch-based runs, max_steps, so it would be another run. Launch it again "
            f"on {old_processes if old_processes is not None else 'its'} process(es) with --per_device_batch_size "
            f"{theirs.get('settings', {}).get('per_device_batch_size')}{keep}; or start a new run in another "
            "--output_dir (--init_from its model/ folder)."
        )
    if streaming:
        raise ValueError(
            f"cannot resume: {run} was planned for {old}, and this launch has {new}: a streamed run keeps one stream "
            f"position per process, which another number of processes cannot take over. Launch it again on "
            f"{old_processes} process(es) with --per_device_batch_size "
            f"{theirs.get('settings', {}).get('per_device_batch_size')}."
        )
    if not allowed:
        raise ValueError(
            f"cannot resume: {run} was planned for {old}, and this launch has {new}. The global batch is the same, so "
            f"the run can continue with the same plan (the same clips, crops and masks per step): pass "
            f"{NEW_PROCESS_COUNT_FLAG} to do so, or launch it again on {old_processes} process(es)."
        )
    return theirs


def check_resume(output_dir: str, identity: dict, checkpoint: str | None) -> None:
    """Raises when the folder's run, or `checkpoint`'s, is not the run these settings describe."""
    for folder, what in ((output_dir, "output_dir"), (checkpoint, "checkpoint")):
        if folder is None:
            continue
        theirs = read_identity(folder)
        if theirs is None and what == "output_dir" and not os.path.isdir(os.path.join(folder, CHECKPOINTS_DIR)):
            continue  # nothing there yet: resuming starts the run
        if theirs is None or theirs.get("run_id") != identity["run_id"]:
            changed = differences(identity, theirs)
            raise ValueError(
                f"cannot resume: {describe_run(theirs, folder)} is not this run (run {identity['run_id']}, seed "
                f"{identity['seed']})" + (f"; they differ in {changed}" if changed else "") + ". Resume with that "
                "run's settings, or start a new run in another --output_dir (or --init_from its model/ folder)."
            )


__all__ = [
    "CACHE_DIR",
    "CHECKPOINTS_DIR",
    "LOGS_DIR",
    "MODEL_DIR",
    "NEW_PROCESS_COUNT_FLAG",
    "PROCESS_LAYOUT",
    "RUN_FILE",
    "adopt_process_layout",
    "check_new_run",
    "check_resume",
    "clear_run",
    "describe_run",
    "read_identity",
    "run_identity",
    "write_identity",
]
