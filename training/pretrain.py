"""Contrastive pre-training of Myna with accelerate: `accelerate launch training/pretrain.py [--config f.yaml] [flags]`.

Follows the Myna paper (arXiv 2502.12511, §3-4): two random 96-frame crops of each clip, 90% of each view's patch
tokens dropped inside the model, mean pooling, a linear projection, and a contrastive loss over the global batch
(InfoNCE as in the paper, or SogCLR as in the reference code ghost-signal/myna). With no arguments it runs the
project's main job: a small model pre-trained for a few minutes on CPU on the generated corpus, exported as an
`AutoModel`-loadable folder, and a summary that compares a linear probe on its embeddings of held-out generated clips
with the same probe on a randomly initialised model.

`main` reads as its stages, in the order they run: settings and run folder (`start`, `open_run`), data and store
(`pretrain_data.py`), model and optimizer (`prepare_training`), the loop (`train`, with `training_step` for one
micro-batch), export and summary (`summarise`, `export`, `closing_probe.py`, `pretrain_summary.py`). Checkpoints are
written and resolved in `checkpoints.py`. Every random draw of a step (clip order, crop starts, masks) comes from generators
seeded by `(seed, epoch)` or `(seed, micro-batch)` and is made for the whole global batch, each process keeping its
slice: N processes with batch B train exactly like one with N * B, and a resumed run repeats the draws it would have
made. Checkpoint state (step and data position, SogCLR state, model, optimiser, scheduler, RNG) is registered with
accelerate and written to a temporary folder that is renamed when complete, so a kill leaves the last checkpoint
usable; `--resume_from_checkpoint latest` continues from it, and only when it belongs to the same run (seed, settings
and data: `run_folder.py`, which also describes the output folder's layout: the export in `model/`, beside
`checkpoints/`, `logs/` and `cache/`).
"""

import collections
import math
import os
import sys
import time
from dataclasses import dataclass


if __name__ == "__main__":
    # Arguments first: `--help`, a typo or a bad config file answers before torch and transformers are imported.
    from myna_common.progress import quiet_library_bars

    # In a log: no weight-writing bars, the preprocessing as a plain line every 30 s (spectrograms.py). Before
    # anything imports tqdm (parsing imports transformers, which does), since tqdm reads TQDM_MININTERVAL once.
    quiet_library_bars(datasets=False)
    from myna_common.cli_support import run_cli
    from myna_training.arguments import parse_arguments

    if run_cli(parse_arguments, "pretrain.py") != 0:
        sys.exit(2)

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from transformers import get_scheduler

from modeling_myna import MynaConfig, MynaFeatureExtractor
from modeling_myna.masking import mask_ratio_at, masking_policy_from_config
from modeling_myna.modeling_myna import num_kept_tokens
from myna_common.cli_support import check_model_name
from myna_common.progress import progress_bar
from myna_training.arguments import (
    DataArguments,
    ModelArguments,
    PretrainingArguments,
    flat_config,
    parse_arguments,
    to_yaml,
)
from myna_training.augment import random_equalizer
from myna_training.checkpoints import (
    TrainingProgress,
    list_checkpoints,
    load_rank_state,
    resolve_checkpoint,
    save_checkpoint,
)
from myna_training.closing_probe import closing_probe
from myna_training.export import build_model, save_export
from myna_training.hub import push_folder_to_hub
from myna_training.losses import InfoNCELoss, SogCLRLoss
from myna_training.pretrain_data import Clips, TrainingData, data_hash, list_clips, load_training_data
from myna_training.pretrain_summary import format_summary
from myna_training.process_errors import exit_process
from myna_training.run_folder import (
    CHECKPOINTS_DIR,
    LOGS_DIR,
    MODEL_DIR,
    check_new_run,
    clear_run,
    describe_run,
    read_identity,
    run_identity,
    write_identity,
)

# The names this module has always offered, for the tests, the ablation runner and the benchmarks that import them.
from myna_training.batch_plan import epoch_order  # noqa: F401, E402
from myna_training.checkpoints import CHECKPOINT_PREFIX, save_rank_state  # noqa: F401, E402
from myna_training.closing_probe import embed_clips, linear_probe, probe_accuracy  # noqa: F401, E402
from myna_training.pretrain_data import (  # noqa: F401, E402
    SPECTROGRAM_FIELDS,
    crop_seconds,
    expected_clip_seconds,
    prepare_store,
    preprocess_device,
)
from myna_training.pretrain_summary import describe_masking  # noqa: F401, E402
from myna_training.spectrograms import cache_key  # noqa: F401, E402


def grid_size(config, patch_size: list[int]) -> tuple[int, int]:
    """Patch rows and columns of one `chunk_frames` crop with `patch_size`."""
    return config.num_mel_bins // patch_size[0], config.chunk_frames // patch_size[1]


def num_tokens(config, patch_size: list[int]) -> int:
    """Patch tokens of one `chunk_frames` crop with `patch_size`."""
    return (config.num_mel_bins // patch_size[0]) * (config.chunk_frames // patch_size[1])


def parameter_groups(model: torch.nn.Module, weight_decay: float, scope: str = "matrices") -> list[dict]:
    """Adam parameter groups: weight decay on matrices only (`scope="matrices"`, not on biases and LayerNorm gains, as
    nanoGPT), or on every parameter (`scope="all"`, as the reference code's `optim.Adam(model.parameters(),
    weight_decay=...)`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if scope == "all":
        return [{"params": params, "weight_decay": weight_decay}]
    if scope != "matrices":
        raise ValueError(f"weight decay scope {scope!r}: choose 'matrices' or 'all'.")
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


@dataclass
class Run:
    """The run's settings and its folder, fixed once it is opened: what every later stage reads."""

    model_args: ModelArguments
    data_args: DataArguments
    training_args: PretrainingArguments
    hyperparameters: dict  # the flat settings: the tracker's config and the model card's
    config: MynaConfig
    feature_extractor: MynaFeatureExtractor
    data_key: str  # the hash of the clips and of how their spectrograms are computed: the store's name
    identity: dict  # the folder's run.json, with the time the run started
    checkpoint: str | None  # the checkpoint this session resumes from

    @property
    def output_dir(self) -> str:
        return self.training_args.output_dir


@dataclass
class Training:
    """The model and what trains it, prepared by accelerate, and where the run stands."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: torch.nn.Module
    progress: TrainingProgress  # saved with every checkpoint
    max_steps: int


@dataclass
class Session:
    """This session's share of the run (a resumed run's totals include the sessions before)."""

    start_step: int
    start_examples: int
    cpu_before: float  # the run's loop CPU seconds before this session
    train_seconds: float
    first_loss: float | None
    last_loss: float | None  # the mean of the last 10 micro-batches


# ---------------------------------------------------------------------------------------------------------------
# Settings and run folder


def start(model_args, training_args) -> tuple[Accelerator, bool]:
    """Checks the settings before any work, then starts the accelerator and seeds every generator. Returns it and
    whether the output folder holds a run that failed during its set-up, which this run replaces."""
    if model_args.init_from:
        check_model_name(model_args.init_from, option="--init_from")
    output_dir = training_args.output_dir
    resuming = bool(training_args.resume_from_checkpoint)
    if resuming and training_args.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint continues a run and --overwrite_output_dir replaces it: pick one.")
    # Before any work: refuse at once (a folder left by a run that failed during its set-up is taken over).
    replace_unfinished = not resuming and check_new_run(output_dir, training_args.overwrite_output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        mixed_precision=training_args.mixed_precision,
        log_with=None if training_args.report_to == "none" else training_args.report_to,
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, LOGS_DIR)),
    )
    if accelerator.mixed_precision != "no" and not accelerator.native_amp:
        raise ValueError(
            f"mixed precision {accelerator.mixed_precision} cannot be used on {accelerator.device.type}: accelerate "
            "would train in float32 while the run records it. On a CPU use --mixed_precision bf16 (or no); fp16 "
            "needs a GPU."
        )
    set_seed(training_args.seed)
    return accelerator, replace_unfinished


def open_run(
    accelerator: Accelerator, config, replace_unfinished: bool, model_args, data_args, training_args
) -> tuple[Run, Clips]:
    """The run's identity (settings, seed, data, and how it is planned) and its folder: a resume continues only the
    same run, a new run starts clean. The clips are listed here, since the identity holds their hash."""
    output_dir = training_args.output_dir
    hyperparameters = flat_config(model_args, data_args, training_args)
    feature_extractor = MynaFeatureExtractor.from_config(config)
    clips = list_clips(accelerator, data_args, training_args.seed, config)
    key = data_hash(clips.dataset, data_args, feature_extractor, config.chunk_frames)
    # How it is planned too: the number of processes and the global batch (the epochs' boundaries, max_steps).
    world_size = accelerator.num_processes
    identity = run_identity(
        {**hyperparameters, "mixed_precision": accelerator.mixed_precision, "num_processes": world_size,
         "global_batch_size": training_args.per_device_batch_size * world_size},
        key,
    )
    checkpoint = None
    if training_args.resume_from_checkpoint:  # raises when the folder or the checkpoint holds another run
        checkpoint, identity = resolve_checkpoint(
            training_args.resume_from_checkpoint, output_dir, identity,
            new_process_count=training_args.resume_with_new_process_count, streaming=data_args.streaming,
        )
    if accelerator.is_main_process:
        if training_args.overwrite_output_dir or replace_unfinished:
            removed = clear_run(output_dir)
            if removed:
                why = "--overwrite_output_dir" if training_args.overwrite_output_dir else "a run that saved nothing"
                accelerator.print(f"{why}: removed {', '.join(removed)} of the previous run.")
        if read_identity(output_dir) is None:
            write_identity(output_dir, identity)
    accelerator.wait_for_everyone()
    identity = read_identity(output_dir)  # with the time the run started
    run = Run(
        model_args, data_args, training_args, hyperparameters, config, feature_extractor, key, identity, checkpoint
    )
    return run, clips


# ---------------------------------------------------------------------------------------------------------------
# Model and optimizer


def prepare_training(accelerator: Accelerator, model, data: TrainingData, run: Run) -> Training:
    """Loss, optimiser and schedule, prepared with the model by accelerate and registered for checkpointing; the
    run's state restored from its checkpoint when it resumes."""
    args = run.training_args
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    max_steps = args.max_steps
    if max_steps <= 0:
        if data.batches_per_epoch is None:
            raise ValueError("a streamed set has no epochs: set --max_steps.")
        max_steps = math.ceil(args.num_epochs * data.batches_per_epoch / args.gradient_accumulation_steps)
    if args.loss == "sogclr":
        loss_fn = SogCLRLoss(
            data.num_clips if data.num_clips is not None else data.index_size,
            args.temperature,
            args.sogclr_gamma,
            num_tokenizers=len(run.config.patch_sizes),
        )
    else:
        loss_fn = InfoNCELoss(args.temperature)
    loss_fn = loss_fn.to(accelerator.device)
    optimizer = torch.optim.Adam(
        parameter_groups(model, args.weight_decay, args.weight_decay_scope), lr=args.learning_rate
    )
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=max_steps
    )
    # The scheduler is stepped here once per optimiser step: prepared, accelerate would step it once per process
    # (it assumes a data loader split across processes, whereas max_steps already counts global batches).
    model, optimizer = accelerator.prepare(model, optimizer)
    if args.torch_compile:
        model = torch.compile(model)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress, scheduler)  # progress first: export.PROGRESS_STATE
    if isinstance(loss_fn, SogCLRLoss):
        accelerator.register_for_checkpointing(loss_fn)
    if args.resume_from_checkpoint:
        if run.checkpoint is None:
            accelerator.print(f"no checkpoint of this run under {run.output_dir}/{CHECKPOINTS_DIR} yet: starting it.")
        else:
            accelerator.load_state(run.checkpoint)
            if data.rank_state:
                load_rank_state(run.checkpoint, accelerator.process_index, data.rank_state)
            accelerator.print(
                f"resumed from {run.checkpoint} at step {progress.step}: {describe_run(run.identity, run.output_dir)}."
            )
    return Training(model, optimizer, scheduler, loss_fn, progress, max_steps)


# ---------------------------------------------------------------------------------------------------------------
# The loop


def train(accelerator: Accelerator, training: Training, data: TrainingData, run: Run) -> Session:
    """Micro-batches until `max_steps` optimiser steps: the loss logged every `logging_steps`, a checkpoint every
    `checkpointing_steps`, and one at the end."""
    args, progress, accumulation = run.training_args, training.progress, run.training_args.gradient_accumulation_steps
    # Trackers (TensorBoard's hparams) take numbers, strings and booleans: unset is "", a list is written out.
    tracked = {
        k: "" if v is None else v if isinstance(v, (bool, int, float, str)) else str(v)
        for k, v in run.hyperparameters.items()
    }
    accelerator.init_trackers("myna-pretrain", config=tracked)
    accelerator.print(
        f"{data.num_clips if data.num_clips is not None else 'streamed'} clips ({data.skipped}); {training.max_steps} "
        f"steps of {data.global_batch * accumulation} clips ({accelerator.num_processes} process(es) x "
        f"{args.per_device_batch_size} x {accumulation} accumulation); loss {args.loss}."
    )
    masking_policy = masking_policy_from_config(run.config)
    # Recent micro-batch losses for logging (a window, not the whole run's history).
    losses = collections.deque(maxlen=max(10, args.logging_steps) * accumulation)
    statistics_losses = collections.deque(maxlen=losses.maxlen)  # the unweighted statistics loss, when it is on
    # This session's share of the run (a resumed run's totals include the sessions before).
    first_loss, start_time, start_step, start_examples = None, time.perf_counter(), progress.step, progress.examples_seen
    # The compute a run costs, whatever else the machine runs: this process's CPU time (all its threads) in the loop.
    start_cpu, cpu_before = time.process_time(), progress.cpu_seconds
    bar = progress_bar(  # a tqdm bar on a terminal, plain lines with the ETA in a log
        total=training.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
        desc="pre-training", unit="step",
    )
    training.model.train()
    data.start(progress.micro_batches, accelerator.device)
    while progress.step < training.max_steps:
        output = training_step(
            accelerator, training, data, run.config, masking_policy, args, run.data_args.equalizer_db
        )
        loss = output.loss
        progress.micro_batches += 1
        progress.examples_seen += data.global_batch
        losses.append(loss.detach())
        if output.statistics_loss is not None:
            statistics_losses.append(output.statistics_loss.detach())
        if first_loss is None:
            first_loss = loss.item()
        if not accelerator.sync_gradients:
            continue

        progress.step += 1
        bar.update(1)
        if progress.step % args.logging_steps == 0 or progress.step == training.max_steps:
            window = list(losses)[-args.logging_steps * accumulation :]
            mean_loss = accelerator.reduce(torch.stack(window).mean(), "mean").item()
            rate = (progress.step - start_step) * data.global_batch * accumulation / (time.perf_counter() - start_time)
            logs = {"train/loss": mean_loss, "train/lr": training.scheduler.get_last_lr()[0],
                    "train/examples_per_second": rate}
            postfix = {"loss": f"{mean_loss:.3f}"}
            if statistics_losses:
                window = list(statistics_losses)[-args.logging_steps * accumulation :]
                logs["train/statistics_loss"] = accelerator.reduce(torch.stack(window).mean(), "mean").item()
                postfix["statistics_loss"] = f"{logs['train/statistics_loss']:.3f}"
            bar.set_postfix(**postfix, examples_per_s=f"{rate:.0f}")
            accelerator.log(logs, step=progress.step)
        if args.checkpointing_steps and progress.step % args.checkpointing_steps == 0:
            progress.cpu_seconds = cpu_before + time.process_time() - start_cpu
            save_checkpoint(
                accelerator, run.output_dir, progress.step, args.checkpoints_total_limit, run.identity, data.rank_state
            )
    bar.close()
    data.finish()  # a short run waits for the store's check: no model is exported from a damaged store
    train_seconds = time.perf_counter() - start_time
    progress.cpu_seconds = cpu_before + time.process_time() - start_cpu
    if not list_checkpoints(run.output_dir) or not list_checkpoints(run.output_dir)[-1].endswith(f"-{progress.step}"):
        save_checkpoint(
            accelerator, run.output_dir, progress.step, args.checkpoints_total_limit, run.identity, data.rank_state
        )
    last_loss = float(torch.stack(list(losses)[-10:]).mean()) if losses else None
    return Session(start_step, start_examples, cpu_before, train_seconds, first_loss, last_loss)


def training_step(
    accelerator: Accelerator, training: Training, data: TrainingData, config, masking_policy, args, equalizer_db=0.0
):
    """One micro-batch: its views, their random equalisers (`equalizer_db`) and masks, drawn for the whole global
    batch from generators seeded by `(seed, micro-batch)` with this process's rows kept, then the forward and backward
    pass, and on a micro-batch that synchronises gradients the optimiser and schedule steps. Returns the model's
    output for the micro-batch (`MynaContrastiveOutput`: its `loss`, and its `statistics_loss` when that is on)."""
    micro, step = training.progress.micro_batches, training.progress.step
    generator = torch.Generator(device=accelerator.device).manual_seed((args.seed * 1_000_003 + micro) * 2)
    if isinstance(training.loss_fn, SogCLRLoss):  # libauc's adjust_gamma: the first-visit rule holds in epoch 0 only
        training.loss_fn.set_epoch(data.epoch(micro))
    # Every process raises here, at the same micro-batch, when any found the store damaged or its crops non-finite.
    views, index, view_shift = data.checked_micro_batch(micro, view_shift=masking_policy.uses_view_shift)
    views = random_equalizer(views, equalizer_db, args.seed, micro, data.local_rows, data.global_batch)
    # One draw per tokenizer for the whole global batch by the masking policy (uniform: a (2, global batch, tokens)
    # torch.rand), this process's rows kept, view-major as the model expects.
    mask_ratio = mask_ratio_at(step, training.max_steps, config.mask_ratio, config.mask_ratio_schedule,
                               config.mask_ratio_start)
    noise = [
        masking_policy(
            grid_size(config, p), num_kept_tokens(num_tokens(config, p), mask_ratio), data.global_batch,
            generator=generator, device=accelerator.device, rows=data.local_rows, views=views, patch_size=p,
            num_views=len(views), view_shift_frames=view_shift if masking_policy.uses_view_shift else None,
        )
        for p in config.patch_sizes
    ]

    model, optimizer = training.model, training.optimizer
    with accelerator.accumulate(model):
        output = model(views=views, noise=noise, mask_ratio=mask_ratio, loss_fn=training.loss_fn, index=index)
        accelerator.backward(output.loss)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        if accelerator.sync_gradients:
            training.scheduler.step()
        optimizer.zero_grad()
    return output


# ---------------------------------------------------------------------------------------------------------------
# Export and summary


def summarise(accelerator: Accelerator, run: Run, data: TrainingData, progress: TrainingProgress, session: Session):
    """The run's summary (what `main` returns and `format_summary` prints): its totals and this session's share."""
    world_size = accelerator.num_processes
    return {
        "output_dir": run.output_dir,
        "model_dir": os.path.join(run.output_dir, MODEL_DIR),
        "run_id": run.identity["run_id"],
        "steps": progress.step,  # the run's totals
        "examples_seen": progress.examples_seen,
        "resumed_at_step": session.start_step if run.checkpoint is not None else None,
        "session_steps": progress.step - session.start_step,  # this session's
        "session_examples": progress.examples_seen - session.start_examples,
        "train_seconds": session.train_seconds,
        # Process CPU time of the training loop (main process): this session's, and the run's over every session.
        "session_cpu_seconds": progress.cpu_seconds - session.cpu_before,
        "cpu_seconds": progress.cpu_seconds,
        "num_views": run.data_args.num_views,
        "num_clips": data.num_clips,
        "skipped": data.skipped.total,
        "skipped_detail": str(data.skipped),
        "loss_name": run.training_args.loss,
        "device": f"{accelerator.device} x {world_size} process{'es' if world_size > 1 else ''}",
        "precision": {"no": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}.get(
            accelerator.mixed_precision, accelerator.mixed_precision
        ),
        "first_loss": session.first_loss,
        "last_loss": session.last_loss,
    }


def export(accelerator: Accelerator, model, run: Run, data: TrainingData, summary: dict) -> None:
    """Encoder + projection, feature extractor and a model card with the training config, written by the main
    process to `model/` (and pushed with --push_to_hub: its address goes into `summary`)."""
    data_args, training_args = run.data_args, run.training_args
    if accelerator.is_main_process:
        training_data = {
            "synthetic": f"{data.num_clips} clips of the generated corpus (myna_training.synthetic, seed "
            f"{training_args.seed}, {data_args.clip_seconds:g} s each).",
            "folder": f"{data.num_clips} audio files from a local folder.",
            "audioset": f"AudioSet music subset ({data_args.dataset_name}, {data_args.dataset_config}).",
            "audioset_csv": f"AudioSet music subset from {os.path.basename(data_args.segments_csv or '')}.",
        }[data_args.dataset]
        save_export(
            model,
            run.feature_extractor,
            summary["model_dir"],
            model_card_kwargs={
                "training_data": training_data + f" {data.skipped}.",
                "training_config": run.hyperparameters,
                "source": "pre-trained with `accelerate launch training/pretrain.py` (myna_training)",
            },
        )
        if training_args.push_to_hub:
            summary["hub_url"] = push_folder_to_hub(
                summary["model_dir"],  # the export alone: checkpoints, logs and cache live beside it
                training_args.hub_model_id,
                training_args.hub_private_repo,
                commit_message="Upload Myna pre-trained with myna_training.pretrain",
            )
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(argv)
    if training_args.print_config:
        print(to_yaml(model_args, data_args, training_args), end="")
        return {"config": flat_config(model_args, data_args, training_args)}

    # Settings and run folder. The model is built right after the seed: its weights are the run's first draws.
    accelerator, replace_unfinished = start(model_args, training_args)
    model = build_model(model_args)
    run, clips = open_run(accelerator, model.config, replace_unfinished, model_args, data_args, training_args)

    # Data and store: spectrograms computed once per clip into an on-disk store, or streamed.
    data = load_training_data(
        accelerator, clips, run.data_key, run.config.chunk_frames, run.feature_extractor, data_args, training_args
    )

    # Model and optimizer; the loop.
    training = prepare_training(accelerator, model, data, run)
    session = train(accelerator, training, data, run)

    # Export, the closing probe (pre-trained vs the same architecture at random initialisation), the summary.
    summary = summarise(accelerator, run, data, training.progress, session)
    trained = accelerator.unwrap_model(training.model)
    export(accelerator, trained, run, data, summary)
    if accelerator.is_main_process and data_args.probe_clips > 0:
        summary["probe"] = closing_probe(
            trained.myna, run.config, run.feature_extractor, data_args.probe_clips, data_args.clip_seconds,
            training_args.seed, accelerator.device,
        )
    accelerator.end_training()
    if accelerator.is_main_process:
        print(format_summary(summary, run.config, data_args.probe_clips))
    return summary


if __name__ == "__main__":
    exit_process(run_cli(main, "pretrain.py"))
