"""Pre-training checkpoints: what a checkpoint holds beside accelerate's state, how it is written so that a kill never
leaves half of one, which one a resume continues, and the per-process state that accelerate does not save.

    output_dir/checkpoints/checkpoint-<step>/   accelerate's `save_state` (model, optimiser, scheduler, RNG, the
                                                registered objects: `TrainingProgress` first, then the schedule and
                                                the SogCLR state), run.json, rank_state_<rank>.pt for a stream

A checkpoint is written into `checkpoint-<step>.tmp` and renamed when complete; `--resume_from_checkpoint latest`
takes the newest complete checkpoint of the same run (`run_folder.py` says what "the same run" is).
"""

import os
import shutil

import torch
from accelerate import Accelerator

from myna_training.run_folder import (
    CHECKPOINTS_DIR,
    adopt_process_layout,
    check_resume,
    differs_only_in_process_layout,
    read_identity,
    write_identity,
)


CHECKPOINT_PREFIX = "checkpoint-"


class TrainingProgress:
    """Step and data position, saved with every checkpoint (`register_for_checkpointing`)."""

    def __init__(self):
        self.step = 0  # optimiser steps done
        self.micro_batches = 0  # micro-batches consumed; the data position, with the per-epoch order
        self.examples_seen = 0
        self.cpu_seconds = 0.0  # process CPU time of the training loop, every session of the run

    def state_dict(self) -> dict:
        return {
            "step": self.step, "micro_batches": self.micro_batches, "examples_seen": self.examples_seen,
            "cpu_seconds": self.cpu_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.micro_batches, self.examples_seen = state["step"], state["micro_batches"], state["examples_seen"]
        self.cpu_seconds = state.get("cpu_seconds", 0.0)  # checkpoints written before it was counted: unknown, 0


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints under `output_dir/checkpoints`, oldest first (`*.tmp` folders are incomplete)."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    # Only `checkpoint-<step>` folders: `*.tmp` ones are incomplete, and anything else is not ours to read.
    names = [n for n in os.listdir(root) if n.startswith(CHECKPOINT_PREFIX) and n[len(CHECKPOINT_PREFIX) :].isdigit()]
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n[len(CHECKPOINT_PREFIX) :]))]


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    total_limit: int | None,
    identity: dict | None = None,
    rank_state: dict | None = None,
) -> str:
    """`accelerator.save_state` into `checkpoint-<step>.tmp` (with the run's identity, and every process's
    `rank_state` objects), then an atomic rename to `checkpoint-<step>`."""
    final = os.path.join(output_dir, CHECKPOINTS_DIR, f"{CHECKPOINT_PREFIX}{step}")
    # Not `myna_common.atomic.atomic_path`: every process writes its part into this one folder, so its name must be
    # the same in all of them (a per-process unique name would split the checkpoint). Only the main process clears
    # it beforehand and renames it; one run writes one output folder at a time (`run_folder.check_new_run`).
    partial = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    if rank_state:
        save_rank_state(partial, accelerator.process_index, rank_state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if identity is not None:
            write_identity(partial, identity, started=identity.get("started"))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(
    resume_from_checkpoint: str,
    output_dir: str,
    identity: dict,
    new_process_count: bool = False,
    streaming: bool = False,
) -> tuple[str | None, dict]:
    """`(checkpoint, identity)`: the checkpoint to resume, the given folder or for "latest" the newest checkpoint of
    this run (`None` when there is none yet), and the identity the run continues under. Raises when the checkpoint,
    or every checkpoint in the folder, belongs to another run, and when it is this run planned on another number of
    processes (unless `new_process_count` and the global batch is the same: then it continues as planned)."""
    if resume_from_checkpoint != "latest":
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint} is not a checkpoint folder.")
        candidate = resume_from_checkpoint
    else:
        checkpoints = list_checkpoints(output_dir)
        # Never another run's, even with a higher step number; this run on another number of processes is found,
        # so that the message can say so.
        ours = [c for c in checkpoints if (read_identity(c) or {}).get("run_id") == identity["run_id"]]
        relaid = [c for c in checkpoints if differs_only_in_process_layout(identity, read_identity(c))]
        candidate = (ours or relaid or checkpoints or [None])[-1]
    if candidate is not None:
        identity = adopt_process_layout(
            identity, read_identity(candidate), new_process_count, streaming, os.path.dirname(candidate)
        )
    elif resume_from_checkpoint == "latest":  # no checkpoint yet: the folder's run.json may still be another layout
        identity = adopt_process_layout(identity, read_identity(output_dir), new_process_count, streaming, output_dir)
    check_resume(output_dir, identity, candidate)  # raises unless the folder and the checkpoint are this run
    return candidate, identity


def save_rank_state(folder: str, rank: int, objects: dict) -> None:
    """Writes the state of `objects` that differs per process (a stream's position) as `rank_state_<rank>.pt`:
    accelerate saves registered objects from the main process only."""
    # Into the checkpoint's partial folder, renamed whole when complete: no temporary name of its own.
    os.makedirs(folder, exist_ok=True)
    torch.save({name: obj.state_dict() for name, obj in objects.items()}, os.path.join(folder, f"rank_state_{rank}.pt"))


def load_rank_state(folder: str, rank: int, objects: dict) -> None:
    """Restores what `save_rank_state` wrote for this process."""
    path = os.path.join(folder, f"rank_state_{rank}.pt")
    if not os.path.isfile(path):
        raise ValueError(
            f"the checkpoint {folder} holds no stream position for process {rank} ({os.path.basename(path)} is "
            "missing: written by an earlier version, which saved the main process's only). Resume it on the version "
            "that wrote it, or start a new run."
        )
    states = torch.load(path, weights_only=True)
    for name, obj in objects.items():
        obj.load_state_dict(states[name])


__all__ = [
    "CHECKPOINT_PREFIX",
    "TrainingProgress",
    "list_checkpoints",
    "load_rank_state",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_rank_state",
]
