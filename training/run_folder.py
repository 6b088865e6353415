"""The layout of a pre-training output folder, and the identity that keeps two runs from mixing in it.

    output_dir/
      run.json          the run's identity: seed, resolved settings, data hash (and when it started)
      model/            the export: only what `from_pretrained` needs, plus the model card (what `push_to_hub`
                        uploads and what you copy)
      checkpoints/      checkpoint-<step>/, each with a copy of run.json
      logs/             tracker logs (tensorboard, ...)
      cache/            spectrograms, keyed by content (safe to share between runs)

A run is its settings that change the trained weights (seed included) plus the hash of its data.
`--resume_from_checkpoint latest` resumes only a checkpoint of the same run; a new run into a folder that holds
another run refuses unless `--overwrite_output_dir` is given (the transformers convention), which removes that run's
export, checkpoints, logs and `run.json` (the content-keyed cache is kept).
"""

import datetime
import hashlib
import json
import os
import shutil


RUN_FILE = "run.json"
MODEL_DIR, CHECKPOINTS_DIR, LOGS_DIR, CACHE_DIR = "model", "checkpoints", "logs", "cache"

# Settings that say where things go or how a run is watched, not what it trains: they may differ between a run
# and its resumption.
NOT_IDENTITY = frozenset(
    {
        "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "print_config", "logging_steps", "report_to",
        "push_to_hub", "hub_model_id", "hub_private_repo", "checkpointing_steps", "checkpoints_total_limit",
        "probe_clips", "cache_dir", "spectrogram_placement", "preprocessing_batch_size", "torch_compile",
    }
)


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
    os.makedirs(folder, exist_ok=True)
    record = {**identity, "started": started or datetime.datetime.now().isoformat(timespec="seconds")}
    partial = os.path.join(folder, RUN_FILE + ".tmp")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(partial, os.path.join(folder, RUN_FILE))


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
    "RUN_FILE",
    "check_new_run",
    "check_resume",
    "clear_run",
    "describe_run",
    "read_identity",
    "run_identity",
    "write_identity",
]
