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
usable; `--resume_from_checkpoint latest` continues from it, and only when it belongs to the same run (seed, settings
and data: `run_folder.py`, which also describes the output folder's layout: the export in `model/`, beside
`checkpoints/`, `logs/` and `cache/`).
"""

import collections
import math
import os
import shutil
import sys
import time


if __name__ == "__main__":
    # Arguments first: `--help`, a typo or a bad config file answers before torch and transformers are imported.
    from myna_common.progress import quiet_library_bars

    # In a log: no weight-writing bars, the preprocessing bar every 30 s. Before anything imports tqdm (parsing
    # imports transformers, which does), since tqdm reads TQDM_MININTERVAL once, at import.
    quiet_library_bars(datasets=False)
    from myna_common.cli_support import run_cli
    from myna_training.arguments import parse_arguments

    if run_cli(parse_arguments, "pretrain.py") != 0:
        sys.exit(2)

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from transformers import get_scheduler

from modeling_myna import MynaFeatureExtractor, MynaModel, pool_chunks
from modeling_myna.configuration_myna import HOP_LENGTH
from modeling_myna.masking import mask_ratio_at, masking_policy_from_config
from modeling_myna.modeling_myna import num_kept_tokens
from myna_common.cli_support import check_model_name
from myna_common.progress import progress_bar
from myna_training.arguments import flat_config, parse_arguments, to_yaml
from myna_training.export import build_model, save_export
from myna_training.hub import push_folder_to_hub
from myna_training.run_folder import (
    CACHE_DIR,
    CHECKPOINTS_DIR,
    LOGS_DIR,
    MODEL_DIR,
    adopt_process_layout,
    check_new_run,
    check_resume,
    clear_run,
    describe_run,
    differs_only_in_process_layout,
    read_identity,
    run_identity,
    write_identity,
)
from myna_training.audio_sources import SkipReport, load_clips
from myna_training.batch_plan import BatchPlan, CropPrefetcher, crop_generator, epoch_order
from myna_training.spectrogram_store import (
    STORE_FORMAT,
    DiskSpectrogramBank,
    SpectrogramStore,
    StoreVerifier,
    StreamingSpectrograms,
    check_disk_space,
    choose_placement,
    free_memory,
    gib,
    stored_format,
)
from myna_training.spectrograms import cache_key, compute_spectrograms
from myna_training.losses import InfoNCELoss, SogCLRLoss


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


def grid_size(config, patch_size: list[int]) -> tuple[int, int]:
    """Patch rows and columns of one `chunk_frames` crop with `patch_size`."""
    return config.num_mel_bins // patch_size[0], config.chunk_frames // patch_size[1]


def num_tokens(config, patch_size: list[int]) -> int:
    """Patch tokens of one `chunk_frames` crop with `patch_size`."""
    return (config.num_mel_bins // patch_size[0]) * (config.chunk_frames // patch_size[1])


# The data arguments that change which spectrograms are computed (the cache key); the others (batching, streaming,
# crops, placement) only change how they are read.
SPECTROGRAM_FIELDS = (
    "dataset", "data_dir", "dataset_name", "dataset_config", "dataset_split", "segments_csv", "num_clips",
    "clip_seconds", "max_clips", "storage_dtype", "segment_seconds",
)


def crop_seconds(config) -> float:
    """Audio seconds that give one `chunk_frames` crop: the shortest usable clip."""
    return (config.chunk_frames - 1) * HOP_LENGTH / config.sampling_rate


def preprocess_device(accelerator: Accelerator):
    return accelerator.device if accelerator.device.type == "cuda" else "cpu"


def expected_clip_seconds(data_args) -> float | None:
    """Seconds per clip where the source says (generated clips, segmented folders, AudioSet's 10 s), else `None`."""
    if data_args.dataset == "synthetic":
        return data_args.clip_seconds
    if data_args.dataset == "folder":
        return data_args.segment_seconds if data_args.segment_seconds is not None else 10.0
    return 10.0 if data_args.dataset in ("audioset", "audioset_csv") else None


def data_hash(clips, data_args, feature_extractor, crop_frames) -> str:
    """The hash of a run's data: what names the clips and how their spectrograms are computed (the cache key)."""
    return cache_key(
        {k: getattr(data_args, k) for k in SPECTROGRAM_FIELDS},
        # Which clips: the content hash `datasets` keeps for in-memory sets (file lists with sizes and modification
        # times, generated audio).
        getattr(clips, "_fingerprint", None),
        feature_extractor.to_dict(),
        crop_frames,
    )


def prepare_store(clips, key, data_args, feature_extractor, crop_frames, cache_dir, skipped, accelerator):
    """The set's `SpectrogramStore` under `cache_dir`: opened when complete, else computed through the Arrow cache
    (bad clips skipped and counted), written, and the Arrow files removed. Checks the disk before computing."""
    directory = os.path.join(cache_dir, f"spectrograms-{key}")
    found = stored_format(directory) if os.path.isdir(directory) else None
    if found is not None and found < STORE_FORMAT and accelerator.is_main_process:
        # The same spectrograms, written by an earlier version without this one's checks: a cache entry to redo.
        accelerator.print(
            f"spectrograms: {directory} was written by an earlier version (store format {found}, now "
            f"{STORE_FORMAT}); recomputing it"
        )
        shutil.rmtree(directory)
    if os.path.isdir(directory):
        accelerator.print(f"spectrograms: reusing {directory}")
        return SpectrogramStore(directory)
    if not accelerator.is_main_process:
        raise RuntimeError(f"the main process did not write {directory}: see its error above.")
    seconds = expected_clip_seconds(data_args)
    if seconds:
        frames = len(clips) * (int(seconds * feature_extractor.sampling_rate) // feature_extractor.hop_length + 1)
        itemsize = 2 if data_args.storage_dtype == "bfloat16" else 4
        estimate = frames * feature_extractor.feature_size * itemsize
        accelerator.print(
            f"spectrograms: computing {len(clips)} clips of ~{seconds:g} s, about {gib(estimate)} as "
            f"{data_args.storage_dtype} (twice that on disk while the Arrow cache and the store coexist)"
        )
        check_disk_space(cache_dir, 2 * estimate, f"the spectrograms of {len(clips)} clips")
    spectrograms = compute_spectrograms(
        clips,
        feature_extractor,
        min_frames=crop_frames,
        skipped=skipped,
        storage_dtype=data_args.storage_dtype,
        device=preprocess_device(accelerator),
        cache_file=directory + ".arrow",
        batch_size=data_args.preprocessing_batch_size,
        num_proc=data_args.preprocessing_num_workers,
    )
    store = SpectrogramStore.write(spectrograms, directory, skipped)
    for cache_file in {f["filename"] for f in spectrograms.cache_files}:
        if os.path.exists(cache_file):
            os.remove(cache_file)  # the store holds the same spectrograms
    return store


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
    from myna_common.synthetic import synthetic_music_dataset

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


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(argv)
    if training_args.print_config:
        print(to_yaml(model_args, data_args, training_args), end="")
        return {"config": flat_config(model_args, data_args, training_args)}
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
    hyperparameters = flat_config(model_args, data_args, training_args)

    # Model and feature extractor: arguments -> MynaConfig -> modules.
    model = build_model(model_args)
    config = model.config
    if training_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    feature_extractor = MynaFeatureExtractor.from_config(config)
    crop_frames = config.chunk_frames

    # Data: spectrograms computed once per clip into an on-disk store; the main process computes, the others read.
    skipped = SkipReport()
    verifier = None  # checks an out-of-core store's checksum while training runs
    world_size, rank = accelerator.num_processes, accelerator.process_index
    batch_size = training_args.per_device_batch_size
    global_batch = batch_size * world_size
    local_rows = slice(rank * batch_size, (rank + 1) * batch_size)
    cache_dir = data_args.cache_dir or os.path.join(output_dir, CACHE_DIR)
    with accelerator.main_process_first():
        clips, index_size = load_clips(data_args, training_args.seed, skipped, min_seconds=crop_seconds(config))

    # The run's identity (settings, seed, data): a resume continues only the same run; a new run starts clean.
    key = data_hash(clips, data_args, feature_extractor, crop_frames)
    # How it is planned too: the number of processes and the global batch (the epochs' boundaries, max_steps).
    identity = run_identity(
        {**hyperparameters, "mixed_precision": accelerator.mixed_precision, "num_processes": world_size,
         "global_batch_size": global_batch},
        key,
    )
    checkpoint = None
    if resuming:  # raises when the folder or the checkpoint holds another run, or this run on another layout
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

    with accelerator.main_process_first():
        if data_args.streaming:
            spectrograms = compute_spectrograms(
                clips, feature_extractor, min_frames=crop_frames, skipped=skipped,
                storage_dtype=data_args.storage_dtype, device=preprocess_device(accelerator),
                batch_size=data_args.preprocessing_batch_size,
            )
        else:
            store = prepare_store(clips, key, data_args, feature_extractor, crop_frames, cache_dir, skipped, accelerator)
            skipped = store.skip_report()
    if data_args.streaming:
        if training_args.loss == "sogclr" and index_size is None:
            raise ValueError(
                "SogCLR keeps a state per clip, keyed by its index in the source, but this stream does not say how "
                "many clips it has: use --loss infonce with --streaming, or cache the set (drop --streaming)."
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
        num_clips, batches_per_epoch, plan = None, None, None
    else:
        num_clips = len(store)
        plan = BatchPlan(
            store.num_frames, global_batch, crop_frames, training_args.seed, data_args.max_crop_distance,
            num_views=data_args.num_views,
        )
        batches_per_epoch = plan.batches_per_epoch
        if batches_per_epoch == 0:
            raise ValueError(
                f"{num_clips} usable clips are fewer than one global batch ({batch_size} x {world_size} processes): "
                "lower per_device_batch_size or add clips."
            )
        placement, numbers = choose_placement(
            data_args.spectrogram_placement,
            store.nbytes,
            accelerator.device,
            free_memory(accelerator.device),
            processes_per_host=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
        )
        # Resident: the whole file is read, and its checksum checked on the way; out-of-core: the size now, the
        # checksum by a background thread while training runs.
        data = store.bank(accelerator.device, resident=placement == "resident")
        if placement != "resident":
            verifier = StoreVerifier(store)
        accelerator.print(
            f"spectrograms: {num_clips} clips, {store.total_frames} frames, {gib(store.nbytes)} as "
            f"{store.meta['dtype']} ({numbers}) -> "
            + ("resident on " + str(accelerator.device) if placement == "resident" else
               f"out-of-core: read from {store.frames_path} by a background thread")
        )

    max_steps = training_args.max_steps
    if max_steps <= 0:
        if batches_per_epoch is None:
            raise ValueError("a streamed set has no epochs: set --max_steps.")
        max_steps = math.ceil(training_args.num_epochs * batches_per_epoch / training_args.gradient_accumulation_steps)

    # Loss, optimiser, schedule.
    if training_args.loss == "sogclr":
        loss_fn = SogCLRLoss(
            num_clips if num_clips is not None else index_size,
            training_args.temperature,
            training_args.sogclr_gamma,
            num_tokenizers=len(config.patch_sizes),
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
    # A stream's position differs per process: saved and restored by each process (accelerate would save the main
    # process's only, and every process would resume from it).
    rank_state = {"stream": data} if isinstance(data, StreamingSpectrograms) else None

    if resuming:
        if checkpoint is None:
            accelerator.print(f"no checkpoint of this run under {output_dir}/{CHECKPOINTS_DIR} yet: starting it.")
        else:
            accelerator.load_state(checkpoint)
            if rank_state:
                load_rank_state(checkpoint, rank, rank_state)
            accelerator.print(f"resumed from {checkpoint} at step {progress.step}: {describe_run(identity, output_dir)}.")
    accelerator.init_trackers("myna-pretrain", config={k: v if v is not None else "" for k, v in hyperparameters.items()})

    # Training.
    accelerator.print(
        f"{num_clips if num_clips is not None else 'streamed'} clips ({skipped}); {max_steps} steps of "
        f"{global_batch * training_args.gradient_accumulation_steps} clips ({world_size} process(es) x {batch_size} "
        f"x {training_args.gradient_accumulation_steps} accumulation); loss {training_args.loss}."
    )
    patch_sizes = config.patch_sizes
    masking_policy = masking_policy_from_config(config)
    # Recent micro-batch losses for logging (a window, not the whole run's history).
    losses = collections.deque(maxlen=max(10, training_args.logging_steps) * training_args.gradient_accumulation_steps)
    # This session's share of the run (a resumed run's totals include the sessions before).
    first_loss, start_time, start_step, start_examples = None, time.perf_counter(), progress.step, progress.examples_seen
    # The compute a run costs, whatever else the machine runs: this process's CPU time (all its threads) in the loop.
    start_cpu, cpu_before = time.process_time(), progress.cpu_seconds
    bar = progress_bar(  # a tqdm bar on a terminal, plain lines with the ETA in a log
        total=max_steps, initial=progress.step, disable=not accelerator.is_local_main_process, desc="pre-training",
        unit="step",
    )
    model.train()
    # An out-of-core bank is read ahead by a background thread from where the run stands (after a resume too).
    prefetcher = None
    if isinstance(data, DiskSpectrogramBank):
        prefetcher = CropPrefetcher(
            data, plan, local_rows, accelerator.device, start=progress.micro_batches,
            check_finite=f"The spectrogram store {store.directory} is damaged: delete that folder; the next run "
            "recomputes it.",
        )
    while progress.step < max_steps:
        if verifier is not None:
            verifier.check()  # raises once the background check found the store damaged
        micro = progress.micro_batches
        generator = torch.Generator(device=accelerator.device).manual_seed((training_args.seed * 1_000_003 + micro) * 2)
        if isinstance(loss_fn, SogCLRLoss):  # libauc's adjust_gamma: the first-visit rule holds in epoch 0 only
            loss_fn.set_epoch(micro // batches_per_epoch if batches_per_epoch else data.epoch)
        view_shift = None  # (global batch,) second crop start minus first, for policies that pair the views' audio
        if prefetcher is not None:
            *views, index = prefetcher.next()
            if masking_policy.uses_view_shift:
                _, *starts = plan(micro)  # the prefetcher's plan: the same draws
                view_shift = starts[1] - starts[0]
        elif plan is not None:
            # Draws for the whole global batch, this process's slice used: the same for any number of processes.
            global_index, *starts = plan(micro)
            view_shift = starts[1] - starts[0]
            index = global_index[local_rows]
            offsets = data.host_offsets[index]
            views = [data.crops(offsets + start[local_rows], crop_frames) for start in starts]
        else:
            *views, index = data.next_batch(
                crop_frames, crop_generator(training_args.seed, micro), data_args.max_crop_distance
            )
            # A stream knows this process's crops only; the other rows' offsets never reach this process's masks.
            view_shift = torch.zeros(global_batch, dtype=torch.long)
            view_shift[local_rows] = data.last_view_shift
        # One draw per tokenizer for the whole global batch by the masking policy (uniform: a (2, global batch,
        # tokens) torch.rand), this process's rows kept, view-major as the model expects.
        mask_ratio = mask_ratio_at(
            progress.step, max_steps, config.mask_ratio, config.mask_ratio_schedule, config.mask_ratio_start
        )
        noise = [
            masking_policy(
                grid_size(config, p), num_kept_tokens(num_tokens(config, p), mask_ratio), global_batch,
                generator=generator, device=accelerator.device, rows=local_rows, views=views, patch_size=p,
                num_views=len(views), view_shift_frames=view_shift if masking_policy.uses_view_shift else None,
            )
            for p in patch_sizes
        ]

        with accelerator.accumulate(model):
            loss = model(views=views, noise=noise, mask_ratio=mask_ratio, loss_fn=loss_fn, index=index).loss
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
            progress.cpu_seconds = cpu_before + time.process_time() - start_cpu
            save_checkpoint(
                accelerator, output_dir, progress.step, training_args.checkpoints_total_limit, identity, rank_state
            )
    bar.close()
    if prefetcher is not None:
        prefetcher.close()
    if verifier is not None:
        verifier.finish()  # a short run waits for the check: no model is exported from a damaged store
    train_seconds = time.perf_counter() - start_time
    progress.cpu_seconds = cpu_before + time.process_time() - start_cpu
    if not list_checkpoints(output_dir) or not list_checkpoints(output_dir)[-1].endswith(f"-{progress.step}"):
        save_checkpoint(
            accelerator, output_dir, progress.step, training_args.checkpoints_total_limit, identity, rank_state
        )

    # Export: encoder + projection, feature extractor, model card with the training config.
    unwrapped = accelerator.unwrap_model(model)
    model_dir = os.path.join(output_dir, MODEL_DIR)
    summary = {
        "output_dir": output_dir,
        "model_dir": model_dir,
        "run_id": identity["run_id"],
        "steps": progress.step,  # the run's totals
        "examples_seen": progress.examples_seen,
        "resumed_at_step": start_step if checkpoint is not None else None,
        "session_steps": progress.step - start_step,  # this session's
        "session_examples": progress.examples_seen - start_examples,
        "train_seconds": train_seconds,
        # Process CPU time of the training loop (main process): this session's, and the run's over every session.
        "session_cpu_seconds": progress.cpu_seconds - cpu_before,
        "cpu_seconds": progress.cpu_seconds,
        "num_views": data_args.num_views,
        "num_clips": num_clips,
        "skipped": skipped.total,
        "skipped_detail": str(skipped),
        "loss_name": training_args.loss,
        "device": f"{accelerator.device} x {world_size} process{'es' if world_size > 1 else ''}",
        "precision": {"no": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}.get(
            accelerator.mixed_precision, accelerator.mixed_precision
        ),
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
        save_export(
            unwrapped,
            feature_extractor,
            model_dir,
            model_card_kwargs={
                "training_data": training_data + f" {skipped}.",
                "training_config": hyperparameters,
                "source": "pre-trained with `accelerate launch training/pretrain.py` (myna_training)",
            },
        )
        if training_args.push_to_hub:
            summary["hub_url"] = push_folder_to_hub(
                model_dir,  # the export alone: checkpoints, logs and cache live beside it
                training_args.hub_model_id,
                training_args.hub_private_repo,
                commit_message="Upload Myna pre-trained with myna_training.pretrain",
            )
    accelerator.wait_for_everyone()

    # Closing linear probe: pre-trained vs the same architecture at random initialisation.
    if accelerator.is_main_process and data_args.probe_clips > 0:
        print(
            f"export written. Closing probe: embedding {data_args.probe_clips} held-out generated clips "
            "with the pre-trained and a randomly initialised model, then 5-fold logistic regressions (key, style); "
            "about a minute on CPU (--probe_clips 0 skips it).",
            flush=True,
        )
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


def describe_masking(config) -> str:
    """`"uniform, 90% of the tokens dropped (constant)"`; a schedule gives its start and end."""
    options = ", ".join(f"{k}={v}" for k, v in sorted((config.masking_policy_kwargs or {}).items()))
    policy = config.masking_policy + (f" ({options})" if options else "")
    if config.mask_ratio_schedule == "constant" or config.mask_ratio_start is None:
        return f"{policy}, {config.mask_ratio:.0%} of the tokens dropped (constant ratio)"
    return (
        f"{policy}, ratio {config.mask_ratio_start:.0%} -> {config.mask_ratio:.0%} of the tokens dropped "
        f"({config.mask_ratio_schedule} schedule)"
    )


def format_summary(summary: dict, config, probe_clips: int) -> str:
    lines = [
        "",
        "=== Myna pre-training summary ===",
        f"model: {config.num_hidden_layers} layers x {config.hidden_size}, patches {config.patch_sizes}",
        f"masking: {describe_masking(config)}",
        f"device: {summary['device']}; precision {summary['precision']}",
        f"data: {summary['num_clips'] if summary['num_clips'] is not None else 'streamed'} clips; "
        f"{summary['skipped_detail']}",
    ]
    rate = summary["session_examples"] / max(summary["train_seconds"], 1e-9)
    session = (
        f"{summary['session_steps']} steps, {summary['session_examples']} examples in {summary['train_seconds']:.1f} s "
        f"({rate:.0f} examples/s, {summary['session_cpu_seconds']:.1f} CPU-s)"
    )
    if summary["resumed_at_step"] is None:
        lines.append(f"training: {session}")
    else:
        lines.append(
            f"training: resumed at step {summary['resumed_at_step']}; this session {session}; run total "
            f"{summary['steps']} steps, {summary['examples_seen']} examples"
            + (" (it had already reached max_steps: nothing left to train)" if not summary["session_steps"] else "")
        )
    if summary["first_loss"] is not None:
        # libauc's GCLoss_v1 surrogate: cosine terms not divided by T, summed over both views.
        note = " (SogCLR surrogate: its gradient is the global contrastive loss's, its value is not and may go below 0)"
        first = (
            "first step" if summary["resumed_at_step"] is None
            else f"first micro-batch after resuming at step {summary['resumed_at_step']}"
        )
        lines.append(
            f"loss: {summary['first_loss']:.3f} ({first}) -> {summary['last_loss']:.3f} (last 10 micro-batches)"
            + (note if summary["loss_name"] == "sogclr" else "")
        )
    if "probe" in summary:
        lines.append(f"linear probe, 5-fold accuracy on {probe_clips} held-out generated clips (mean chunk embedding):")
        lines.append(f"  {'task':<8}{'random init':>14}{'pre-trained':>14}")
        for task, scores in summary["probe"].items():
            lines.append(f"  {task:<8}{scores['random init']:>14.3f}{scores['pre-trained']:>14.3f}")
    folders = [f"{n}/" for n in (CHECKPOINTS_DIR, LOGS_DIR, CACHE_DIR)
               if os.path.isdir(os.path.join(summary["output_dir"], n))]
    lines.append(f"run {summary['run_id']} in {summary['output_dir']} ({', '.join(folders + ['run.json'])})")
    lines.append(f"model saved to {summary['model_dir']} (AutoModel.from_pretrained loads it), e.g.")
    lines.append(f"  myna embed song.flac --model {summary['model_dir']} --output embeddings.npz")
    lines.append(f"  python evaluation/probe.py --model {summary['model_dir']} --fast --output_dir outputs/eval")
    if "hub_url" in summary:
        lines.append(f"pushed to {summary['hub_url']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main, "pretrain.py"))
