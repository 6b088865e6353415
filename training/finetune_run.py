"""A fine-tuning output folder holds one run, as a pre-training folder does (`run_folder.py`); where a resumed run
stands (finished, training ended, or mid-way); and how the run reads in a log (one line per epoch and per log entry).

    output_dir/
      run.json                 the run's identity: the model it starts from, seed, settings, data hash
      checkpoint-<step>/       Trainer's checkpoints, each with a copy of run.json
      config.json, model.safetensors, preprocessor_config.json, README.md, *.py, results.json, training_args.bin
                               the fine-tuned model (what `pipeline("audio-classification")` loads)
      runs/                    tracker logs (--report_to tensorboard)
      cache/                   spectrogram chunks, keyed by content (kept: safe to share between runs)

A new run into a folder that holds anything but a cache refuses, unless `--overwrite_output_dir` is given, which
removes what a fine-tuning run writes (never other files); `--resume_from_checkpoint latest` (or a checkpoint
folder) continues only the same run: same model, settings, seed and data.
"""

import json
import os
import re
import shutil

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from myna_common.cli_support import check_output_folder
from myna_training.run_folder import RUN_FILE, check_resume, describe_run, read_identity, write_identity


CACHE = "cache"
RESULTS = "results.json"  # written last: the run's closing evaluation and save are done
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What a fine-tuning run writes at the top of its folder (save_model, the card, results, Trainer's files).
RUN_FILES = {
    "config.json", "model.safetensors", "preprocessor_config.json", "README.md", "results.json", "training_args.bin",
    "trainer_state.json", "configuration_myna.py", "feature_extraction_myna.py", "mel.py", "model_card.py",
    "modeling_myna.py", "runs",
}  # fmt: skip
# TrainingArguments that change what is trained (the rest say where, how often, or how it is watched).
IDENTITY_TRAINING_FIELDS = (
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "bf16", "fp16", "optim", "max_grad_norm",
    "metric_for_best_model", "early_stopping_patience", "load_best_model_at_end", "label_smoothing_factor",
)  # fmt: skip
NOT_IDENTITY_DATA = ("cache_dir", "preprocessing_batch_size", "preprocessing_num_workers")


def is_run_content(name: str) -> bool:
    return name in RUN_FILES or name.startswith(RUN_FILE) or CHECKPOINT.match(name) is not None


def check_new_finetune(output_dir: str, overwrite: bool) -> str:
    """Before any work: `"new"`, `"replace"` (a run that saved nothing but its identity, or `overwrite`), or a
    `ValueError` saying what the folder holds and the three ways on."""
    state = check_output_folder(
        output_dir, overwrite=overwrite, option="--output_dir", overwrite_flag="--overwrite_output_dir",
        what="fine-tuned model", ignore=(CACHE,), own=lambda _: True,  # what it holds is judged below
    )  # fmt: skip
    if state == "new":
        return "new"
    taken = sorted(n for n in os.listdir(output_dir) if n != CACHE)
    if set(taken) <= {RUN_FILE} or overwrite:
        return "replace"
    raise ValueError(
        f"--output_dir {output_dir} is not empty (it holds {', '.join(taken[:5])}{', ...' if len(taken) > 5 else ''}: "
        f"{describe_run(read_identity(output_dir), output_dir)}). Choose another --output_dir, continue that run "
        "with --resume_from_checkpoint latest, or replace it with --overwrite_output_dir."
    )


def clear_finetune(output_dir: str) -> list[str]:
    """Removes what an earlier fine-tuning run wrote (its checkpoints, model, card, results, logs, identity); in a
    folder that holds no fine-tuning run, nothing (the new run writes beside what is there)."""
    removed = []
    if read_identity(output_dir) is None and not checkpoints(output_dir) and not os.path.isfile(
        os.path.join(output_dir, "results.json")
    ):
        return removed
    for name in sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []:
        if is_run_content(name):
            path = os.path.join(output_dir, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            removed.append(name)
    return removed


def checkpoints(output_dir: str) -> list[str]:
    """Trainer's complete checkpoints in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir) if (m := CHECKPOINT.match(n))]
    return [os.path.join(output_dir, n) for _, n in sorted(found)]


def finetune_identity_settings(model_args, data_args, training_args) -> dict:
    """The settings that make a fine-tuning run what it is (see `IDENTITY_TRAINING_FIELDS`)."""
    settings = {f"model.{k}": v for k, v in vars(model_args).items()}
    settings.update({f"data.{k}": v for k, v in vars(data_args).items() if k not in NOT_IDENTITY_DATA})
    for key in IDENTITY_TRAINING_FIELDS:
        value = getattr(training_args, key, None)
        settings[key] = getattr(value, "value", value)
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    settings["global_batch_size"] = per_step * training_args.world_size
    return settings


def resolve_finetune_checkpoint(resume: str, output_dir: str, identity: dict) -> str | None:
    """The checkpoint to resume ("latest": the newest of `output_dir`, `None` when there is none yet), after checking
    that the folder's run and the checkpoint's are this run."""
    if resume == "latest":
        found = checkpoints(output_dir)
        checkpoint = found[-1] if found else None
    else:
        if not os.path.isdir(resume):
            raise ValueError(f"--resume_from_checkpoint {resume} is not a checkpoint folder (or pass 'latest').")
        checkpoint = resume
    try:
        check_resume(output_dir, identity, checkpoint)
    except ValueError as error:  # pre-training's advice, in fine-tuning's words
        raise ValueError(
            str(error).replace("(or --init_from its model/ folder)", "(or fine-tune its saved model further: "
                               f"--model_name_or_path {output_dir})")
        ) from None
    return checkpoint


def finished_results(output_dir: str) -> dict | None:
    """The summary a finished run wrote last (`results.json`), or `None` while the run is not finished."""
    try:
        with open(os.path.join(output_dir, RESULTS), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ended_training(checkpoint: str | None) -> dict | None:
    """The Trainer state of `checkpoint` when its training had ended: at the run's planned last step, or stopped by
    early stopping (Trainer records in the checkpoint that it was stopping). `None` for a checkpoint mid-run.

    Trainer would train on from either: from the planned end it trains nothing but logs an empty epoch; from an
    early stop it clears the stop and trains until the patience runs out again."""
    try:
        with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, TypeError, ValueError):
        return None
    control = state.get("stateful_callbacks", {}).get("TrainerControl", {}).get("args", {})
    stopping = control.get("should_training_stop")
    return state if stopping or state.get("global_step", 0) >= state.get("max_steps", float("inf")) else None


def describe_end(state: dict) -> str:
    """`"step 38 of 40 (epoch 19 of 20, stopped early)"` for a checkpoint's Trainer state."""
    step, planned = state.get("global_step", 0), state.get("max_steps", 0)
    early = ", stopped early" if step < planned else ""
    epoch, epochs = state.get("epoch") or 0, state.get("num_train_epochs", 0)
    return f"step {step} of {planned} (epoch {epoch:g} of {epochs:g}{early})"


def format_log_entry(logs: dict, step: int) -> str:
    """One of Trainer's log entries as a line: `epoch 3.0  step 120  loss 0.4123  lr 1.2e-4  grad_norm 1.31`."""
    logs = {("lr" if key == "learning_rate" else key): value for key, value in logs.items() if key != "total_flos"}
    parts = [f"epoch {_epoch(logs.pop('epoch'))}"] if "epoch" in logs else []
    return "  ".join(parts + [f"step {step}"] + [f"{key} {_number(value)}" for key, value in logs.items()])


def _epoch(value: float) -> str:
    """3.0 -> "3.0", 2.5 -> "2.5", 2.3333 -> "2.33"."""
    text = f"{value:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _number(value) -> str:
    """A metric in 4 significant digits; a learning rate (or any tiny or huge value) as `1.2e-4`."""
    if not isinstance(value, float):
        return str(value)
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.4g}"


class LogLinesCallback(TrainerCallback):
    """Trainer's log entries (training loss, evaluations, the closing ones) as readable lines (`format_log_entry`),
    in place of the dicts its `PrinterCallback` prints; on the main process only."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            print(format_log_entry(logs, state.global_step), flush=True)


class ProgressBarLogLinesCallback(ProgressCallback):
    """Trainer's progress bars (a terminal), with its log entries written above the bar as `format_log_entry`
    lines instead of dicts."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            line = format_log_entry(logs, state.global_step)
            if self.training_bar is not None:
                self.training_bar.write(line)
            else:  # the closing evaluations, after the training bar
                print(line, flush=True)


def use_log_lines(trainer) -> None:
    """Replaces the callback by which `trainer` prints its logs (`PrinterCallback` when its bars are off, else
    `ProgressCallback`) with one that prints readable lines."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBarLogLinesCallback)
    else:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(LogLinesCallback)


class RunIdentityCallback(TrainerCallback):
    """Copies the run's `run.json` into every checkpoint Trainer saves, so a checkpoint names its run."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            identity = read_identity(self.output_dir)
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if identity is not None and os.path.isdir(folder):
                write_identity(folder, identity, started=identity.get("started"))
        return control


class EtaCallback(TrainerCallback):
    """In a log (Trainer's bars off), one line per epoch: where the run is and when it ends at the latest."""

    def on_train_begin(self, args, state, control, **kwargs):
        import time

        self.started, self.first_step = time.perf_counter(), state.global_step

    def on_epoch_end(self, args, state, control, **kwargs):
        import time

        from myna_common.progress import format_seconds

        if not state.is_world_process_zero or not state.max_steps:
            return control
        elapsed = time.perf_counter() - self.started
        done = state.global_step - self.first_step
        eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        print(f"epoch {state.epoch:.0f}/{args.num_train_epochs:g}: step {state.global_step}/{state.max_steps}, "
              f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)} (early stopping may end it sooner)",
              flush=True)
        return control


__all__ = [
    "EtaCallback",
    "LogLinesCallback",
    "ProgressBarLogLinesCallback",
    "RunIdentityCallback",
    "check_new_finetune",
    "checkpoints",
    "clear_finetune",
    "describe_end",
    "ended_training",
    "finetune_identity_settings",
    "finished_results",
    "format_log_entry",
    "resolve_finetune_checkpoint",
    "use_log_lines",
]
