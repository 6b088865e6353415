"""Contrastive pre-training of Myna with accelerate: `accelerate launch training/pretrain.py [--config f.yaml] [flags]`.

Follows the Myna paper (arXiv 2502.12511, §3-4): two random 96-frame crops of each clip, 90% of each view's patch
tokens dropped inside the model, mean pooling, a linear projection, and a contrastive loss over the global batch
(InfoNCE as in the paper, or SogCLR as in the reference code ghost-signal/myna). With no arguments it runs the
project's main job: a small model pre-trained for a few minutes on CPU on the generated corpus, exported as an
`AutoModel`-loadable folder, and a summary that compares a linear probe on its embeddings of held-out generated clips
with the same probe on a randomly initialised model.

The loop reads top to bottom. Every random draw of a step (clip order, crop starts, masks) comes from generators
seeded by `(seed, epoch)` or `(seed, micro-batch)` and is made for the whole global batch, each process keeping its
slice: N processes with batch B train exactly like one with N * B, and a resumed run repeats the draws it would have
made. Checkpoint state (step and data position, SogCLR state, model, optimiser, scheduler, RNG) is registered with
accelerate and written to a temporary folder that is renamed when complete, so a kill leaves the last checkpoint
usable; `--resume_from_checkpoint latest` continues from it.
"""

import collections
import math
import os
import shutil
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from transformers import get_scheduler

from modeling_myna import MynaFeatureExtractor, MynaForContrastivePretraining, MynaModel, pool_chunks
from myna_training.arguments import flat_config, parse_arguments
from myna_training.data import (
    SkipReport,
    SpectrogramBank,
    StreamingSpectrograms,
    cache_key,
    compute_spectrograms,
    load_clips,
    random_crop_starts,
)
from myna_training.losses import InfoNCELoss, SogCLRLoss


CHECKPOINT_PREFIX = "checkpoint-"


class TrainingProgress:
    """Step and data position, saved with every checkpoint (`register_for_checkpointing`)."""

    def __init__(self):
        self.step = 0  # optimiser steps done
        self.micro_batches = 0  # micro-batches consumed; the data position, with the per-epoch order
        self.examples_seen = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "micro_batches": self.micro_batches, "examples_seen": self.examples_seen}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.micro_batches, self.examples_seen = state["step"], state["micro_batches"], state["examples_seen"]


def num_tokens(config, patch_size: list[int]) -> int:
    """Patch tokens of one `chunk_frames` crop with `patch_size`."""
    return (config.num_mel_bins // patch_size[0]) * (config.chunk_frames // patch_size[1])


def epoch_order(num_clips: int, seed: int, epoch: int) -> torch.Tensor:
    """The clip order of `epoch`: a permutation that depends only on `(seed, epoch)`."""
    return torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


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


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints under `output_dir/checkpoints`, oldest first (`*.tmp` folders are incomplete)."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    names = [n for n in os.listdir(root) if n.startswith(CHECKPOINT_PREFIX) and not n.endswith(".tmp")]
    return [os.path.join(root, n) for n in sorted(names, key=lambda n: int(n[len(CHECKPOINT_PREFIX) :]))]


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: int | None) -> str:
    """`accelerator.save_state` into `checkpoint-<step>.tmp`, then an atomic rename to `checkpoint-<step>`."""
    final = os.path.join(output_dir, "checkpoints", f"{CHECKPOINT_PREFIX}{step}")
    partial = final + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str) -> str | None:
    if resume_from_checkpoint != "latest":
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint} is not a checkpoint folder.")
        return resume_from_checkpoint
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


@torch.no_grad()
def embed_clips(model: MynaModel, feature_extractor: MynaFeatureExtractor, audios, sampling_rate: int, device) -> np.ndarray:
    """Mean chunk embedding of every clip, `(num_clips, embedding_size)`, unmasked, in eval mode."""
    model.eval()
    embeddings = []
    for start in range(0, len(audios), 16):
        features = feature_extractor(audios[start : start + 16], sampling_rate=sampling_rate, return_tensors="pt")
        pooled = model(features["input_values"].to(device)).pooler_output.float()
        embeddings.append(pool_chunks(pooled, features["audio_index"].to(device)).cpu().numpy())
    return np.concatenate(embeddings)


def probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """5-fold cross-validated accuracy of a standardised logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, embeddings, labels, cv=folds).mean())


def linear_probe(models: dict, feature_extractor, num_clips: int, duration: float, seed: int, device) -> dict:
    """Probe accuracy `{task: {model name: accuracy}}` on held-out generated clips (tasks: key, style)."""
    from myna_training.synthetic import synthetic_music_dataset

    clips = synthetic_music_dataset(num_clips, seed=seed, duration=duration)
    audios = [np.asarray(a["array"], dtype=np.float32) for a in clips["audio"]]
    sampling_rate = clips[0]["audio"]["sampling_rate"]
    embeddings = {name: embed_clips(m, feature_extractor, audios, sampling_rate, device) for name, m in models.items()}
    results = {}
    for task in ("key", "style"):
        labels = np.asarray(clips[task])
        if np.bincount(labels).max() < 5 or len(set(labels)) < 2:
            continue  # too few clips per class for 5 folds
        _, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, np.unique(labels)[counts >= 5])
        results[task] = {name: probe_accuracy(e[keep], labels[keep], seed) for name, e in embeddings.items()}
    return results


def push_folder_to_hub(folder: str, repo_id: str, private: bool = False) -> str:
    """Uploads the exported folder (weights, config, feature extractor, model card) with huggingface_hub."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            ignore_patterns=["checkpoints/*", "cache/*", "logs/*"],
            commit_message="Upload Myna pre-trained with myna_training.pretrain",
        )
    except Exception as error:
        raise RuntimeError(
            f"could not push {folder} to the Hub as {repo_id}: {error}. The model is saved in {folder}; check the "
            "network and `hf auth login`, then upload it with `hf upload` or rerun with --push_to_hub."
        ) from error
    return f"https://huggingface.co/{repo_id}"


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(argv)
    output_dir = training_args.output_dir
    accelerator = Accelerator(
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        mixed_precision=training_args.mixed_precision,
        log_with=None if training_args.report_to == "none" else training_args.report_to,
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, "logs")),
    )
    set_seed(training_args.seed)
    hyperparameters = flat_config(model_args, data_args, training_args)

    # Model and feature extractor: arguments -> MynaConfig -> modules.
    if model_args.init_from:
        model = MynaForContrastivePretraining.from_pretrained(model_args.init_from)
        config = model.config
    else:
        config = model_args.to_config()
        model = MynaForContrastivePretraining(config)
    feature_extractor = MynaFeatureExtractor.from_config(config)
    crop_frames = config.chunk_frames

    # Data: spectrograms computed once per clip and cached; the main process computes, the others read the cache.
    skipped = SkipReport()
    preprocess_device = accelerator.device if accelerator.device.type == "cuda" else "cpu"
    cache_dir = data_args.cache_dir or os.path.join(output_dir, "cache")
    with accelerator.main_process_first():
        clips = load_clips(data_args, training_args.seed, skipped)
        cache_file = os.path.join(
            cache_dir,
            "spectrograms-"
            + cache_key(
                {k: v for k, v in vars(data_args).items() if k not in ("cache_dir", "probe_clips", "max_crop_distance")},
                # Which clips: the content hash `datasets` keeps for in-memory sets (file lists, generated audio).
                getattr(clips, "_fingerprint", None),
                training_args.seed,
                feature_extractor.to_dict(),
                crop_frames,
            )
            + ".arrow",
        )
        spectrograms = compute_spectrograms(
            clips,
            feature_extractor,
            min_frames=crop_frames,
            skipped=skipped,
            storage_dtype=data_args.storage_dtype,
            device=preprocess_device,
            cache_file=None if data_args.streaming else cache_file,
            batch_size=data_args.preprocessing_batch_size,
        )
    world_size, rank = accelerator.num_processes, accelerator.process_index
    batch_size = training_args.per_device_batch_size
    global_batch = batch_size * world_size
    if data_args.streaming:
        if training_args.loss == "sogclr":
            raise ValueError(
                "SogCLR keys its state by dataset index, which a stream does not have: use --loss infonce with "
                "--streaming, or cache the set."
            )
        from datasets.distributed import split_dataset_by_node

        data = StreamingSpectrograms(
            split_dataset_by_node(spectrograms, rank=rank, world_size=world_size),
            batch_size,
            accelerator.device,
            storage_dtype=data_args.storage_dtype,
            shuffle_buffer_size=data_args.shuffle_buffer_size,
            seed=training_args.seed,
            skipped=skipped,
        )
        num_clips, batches_per_epoch = None, None
    else:
        data = SpectrogramBank.from_dataset(spectrograms, device=accelerator.device)
        num_clips = len(data)
        batches_per_epoch = num_clips // global_batch
        if batches_per_epoch == 0:
            raise ValueError(
                f"{num_clips} usable clips are fewer than one global batch ({batch_size} x {world_size} processes): "
                "lower per_device_batch_size or add clips."
            )

    max_steps = training_args.max_steps
    if max_steps <= 0:
        if batches_per_epoch is None:
            raise ValueError("a streamed set has no epochs: set --max_steps.")
        max_steps = math.ceil(training_args.num_epochs * batches_per_epoch / training_args.gradient_accumulation_steps)

    # Loss, optimiser, schedule.
    if training_args.loss == "sogclr":
        loss_fn = SogCLRLoss(
            num_clips, training_args.temperature, training_args.sogclr_gamma, num_tokenizers=len(config.patch_sizes)
        )
    else:
        loss_fn = InfoNCELoss(training_args.temperature)
    loss_fn = loss_fn.to(accelerator.device)
    optimizer = torch.optim.Adam(
        parameter_groups(model, training_args.weight_decay, training_args.weight_decay_scope),
        lr=training_args.learning_rate,
    )
    scheduler = get_scheduler(
        training_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=training_args.warmup_steps,
        num_training_steps=max_steps,
    )
    # The scheduler is stepped here once per optimiser step: prepared, accelerate would step it once per process
    # (it assumes a data loader split across processes, whereas max_steps already counts global batches).
    model, optimizer = accelerator.prepare(model, optimizer)
    if training_args.torch_compile:
        model = torch.compile(model)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(progress, scheduler)
    if isinstance(loss_fn, SogCLRLoss):
        accelerator.register_for_checkpointing(loss_fn)
    if isinstance(data, StreamingSpectrograms):
        accelerator.register_for_checkpointing(data)

    if training_args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
        if checkpoint is None:
            accelerator.print(f"no checkpoint under {output_dir}/checkpoints yet: starting from scratch.")
        else:
            accelerator.load_state(checkpoint)
            accelerator.print(f"resumed from {checkpoint} at step {progress.step}.")
    accelerator.init_trackers("myna-pretrain", config={k: v if v is not None else "" for k, v in hyperparameters.items()})

    # Training.
    accelerator.print(
        f"{num_clips if num_clips is not None else 'streamed'} clips ({skipped}); {max_steps} steps of "
        f"{global_batch * training_args.gradient_accumulation_steps} clips ({world_size} process(es) x {batch_size} "
        f"x {training_args.gradient_accumulation_steps} accumulation); loss {training_args.loss}."
    )
    local_rows = slice(rank * batch_size, (rank + 1) * batch_size)
    patch_sizes = config.patch_sizes
    # Recent micro-batch losses for logging (a window, not the whole run's history).
    losses = collections.deque(maxlen=max(10, training_args.logging_steps) * training_args.gradient_accumulation_steps)
    first_loss, start_time, start_step = None, time.perf_counter(), progress.step
    bar = tqdm(total=max_steps, initial=progress.step, disable=not accelerator.is_local_main_process, desc="pre-training")
    model.train()
    order, order_epoch = None, None
    while progress.step < max_steps:
        micro = progress.micro_batches
        generator = torch.Generator(device=accelerator.device).manual_seed(training_args.seed * 1_000_003 + micro)
        index = None
        if batches_per_epoch is not None:
            epoch, position = divmod(micro, batches_per_epoch)
            if order_epoch != epoch:
                order, order_epoch = epoch_order(num_clips, training_args.seed, epoch).to(accelerator.device), epoch
            global_index = order[position * global_batch : (position + 1) * global_batch]
            # Draws for the whole global batch, this process's slice used: the same for any number of processes.
            first, second = random_crop_starts(
                data.num_frames[global_index], crop_frames, generator, data_args.max_crop_distance
            )
            index = global_index[local_rows]
            offsets = data.offsets[index]
            view1 = data.crops(offsets + first[local_rows], crop_frames)
            view2 = data.crops(offsets + second[local_rows], crop_frames)
        else:
            view1, view2 = data.next_batch(crop_frames, generator, data_args.max_crop_distance)
        # One (2, global batch, tokens) draw per tokenizer; rows view-major as the model expects.
        noise = [
            torch.rand((2, global_batch, num_tokens(config, p)), generator=generator, device=accelerator.device)[
                :, local_rows
            ].reshape(2 * batch_size, -1)
            for p in patch_sizes
        ]

        with accelerator.accumulate(model):
            loss = model(views=[view1, view2], noise=noise, loss_fn=loss_fn, index=index).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and training_args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), training_args.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad()
        progress.micro_batches += 1
        progress.examples_seen += global_batch
        losses.append(loss.detach())
        if first_loss is None:
            first_loss = loss.item()
        if not accelerator.sync_gradients:
            continue

        progress.step += 1
        bar.update(1)
        if progress.step % training_args.logging_steps == 0 or progress.step == max_steps:
            window = list(losses)[-training_args.logging_steps * training_args.gradient_accumulation_steps :]
            mean_loss = accelerator.reduce(torch.stack(window).mean(), "mean").item()
            elapsed = time.perf_counter() - start_time
            rate = (progress.step - start_step) * global_batch * training_args.gradient_accumulation_steps / elapsed
            bar.set_postfix(loss=f"{mean_loss:.3f}", examples_per_s=f"{rate:.0f}")
            accelerator.log(
                {"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0], "train/examples_per_second": rate},
                step=progress.step,
            )
        if training_args.checkpointing_steps and progress.step % training_args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, progress.step, training_args.checkpoints_total_limit)
    bar.close()
    train_seconds = time.perf_counter() - start_time
    if not list_checkpoints(output_dir) or not list_checkpoints(output_dir)[-1].endswith(f"-{progress.step}"):
        save_checkpoint(accelerator, output_dir, progress.step, training_args.checkpoints_total_limit)

    # Export: encoder + projection, feature extractor, model card with the training config.
    unwrapped = accelerator.unwrap_model(model)
    summary = {
        "output_dir": output_dir,
        "steps": progress.step,
        "examples_seen": progress.examples_seen,
        "train_seconds": train_seconds,
        "num_clips": num_clips,
        "skipped": skipped.total,
        "skipped_detail": str(skipped),
        "loss_name": training_args.loss,
        "first_loss": first_loss,
        "last_loss": float(torch.stack(list(losses)[-10:]).mean()) if losses else None,
    }
    if accelerator.is_main_process:
        training_data = {
            "synthetic": f"{num_clips} clips of the generated corpus (myna_training.synthetic, seed "
            f"{training_args.seed}, {data_args.clip_seconds:g} s each).",
            "folder": f"{num_clips} audio files from a local folder.",
            "audioset": f"AudioSet music subset ({data_args.dataset_name}, {data_args.dataset_config}).",
            "audioset_csv": f"AudioSet music subset from {os.path.basename(data_args.segments_csv or '')}.",
        }[data_args.dataset]
        unwrapped.save_pretrained(
            output_dir,
            model_card_kwargs={
                "training_data": training_data + f" {skipped}.",
                "training_config": hyperparameters,
                "source": "pre-trained with `accelerate launch training/pretrain.py` (myna_training)",
            },
        )
        feature_extractor.save_pretrained(output_dir)
        if training_args.push_to_hub:
            summary["hub_url"] = push_folder_to_hub(output_dir, training_args.hub_model_id, training_args.hub_private_repo)
    accelerator.wait_for_everyone()

    # Closing linear probe: pre-trained vs the same architecture at random initialisation.
    if accelerator.is_main_process and data_args.probe_clips > 0:
        torch.manual_seed(training_args.seed)
        random_model = MynaModel(config).to(accelerator.device)
        summary["probe"] = linear_probe(
            {"random init": random_model, "pre-trained": unwrapped.myna},
            feature_extractor,
            data_args.probe_clips,
            data_args.clip_seconds,
            seed=training_args.seed + 10_000,  # clips never seen in training
            device=accelerator.device,
        )
    accelerator.end_training()
    if accelerator.is_main_process:
        print(format_summary(summary, config, data_args.probe_clips))
    return summary


def format_summary(summary: dict, config, probe_clips: int) -> str:
    lines = [
        "",
        "=== Myna pre-training summary ===",
        f"model: {config.num_hidden_layers} layers x {config.hidden_size}, patches {config.patch_sizes}",
        f"data: {summary['num_clips'] if summary['num_clips'] is not None else 'streamed'} clips; "
        f"{summary['skipped_detail']}",
        f"training: {summary['steps']} steps, {summary['examples_seen']} examples in {summary['train_seconds']:.1f} s "
        f"({summary['examples_seen'] / max(summary['train_seconds'], 1e-9):.0f} examples/s)",
    ]
    if summary["first_loss"] is not None:
        # libauc's GCLoss_v1 surrogate: cosine terms not divided by T, summed over both views.
        note = " (SogCLR surrogate: its gradient is the global contrastive loss's, its value is not and may go below 0)"
        lines.append(
            f"loss: {summary['first_loss']:.3f} (first step) -> {summary['last_loss']:.3f} (last 10 micro-batches)"
            + (note if summary["loss_name"] == "sogclr" else "")
        )
    if "probe" in summary:
        lines.append(f"linear probe, 5-fold accuracy on {probe_clips} held-out generated clips (mean chunk embedding):")
        lines.append(f"  {'task':<8}{'random init':>14}{'pre-trained':>14}")
        for task, scores in summary["probe"].items():
            lines.append(f"  {task:<8}{scores['random init']:>14.3f}{scores['pre-trained']:>14.3f}")
    lines.append(f"saved to {summary['output_dir']} (AutoModel.from_pretrained loads it)")
    if "hub_url" in summary:
        lines.append(f"pushed to {summary['hub_url']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
