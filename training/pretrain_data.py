"""The data stage of pre-training: which clips, the hash that names them, the spectrogram store computed once, and
what the training step reads from it.

The main process computes each clip's spectrogram once into a content-keyed `SpectrogramStore` (the other processes
wait, then read it); the store is placed resident on the training device or read out-of-core, and its checksum is
checked on the way or by a background thread, by one process per machine. Whatever one process finds wrong with the
store or its crops stops every process at the same point with its message (`process_errors`), rather than leaving
the others waiting in the next collective. With `--streaming` the spectrograms are computed as they are read, and
each process reads its share of the stream. `TrainingData` hands the step each micro-batch's views: for a store,
drawn by the `BatchPlan` for the whole global batch, this process's rows kept, so that N processes with batch B train
exactly like one with N * B.
"""

import os
import shutil
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from modeling_myna.configuration_myna import HOP_LENGTH
from myna_training.audio_sources import SkipReport, load_clips
from myna_training.batch_plan import BatchPlan, CropPrefetcher, crop_generator
from myna_training.process_errors import StepCheck, main_process_first, raise_together
from myna_training.run_folder import CACHE_DIR
from myna_training.spectrogram_banks import DiskSpectrogramBank, SpectrogramBank, StreamingSpectrograms
from myna_training.spectrogram_store import (
    STORE_FORMAT,
    SpectrogramStore,
    StoreVerifier,
    check_disk_space,
    choose_placement,
    free_memory,
    gib,
    stored_format,
)
from myna_training.spectrograms import cache_key, compute_spectrograms


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


@dataclass
class Clips:
    """The run's clips as its source lists them, before any spectrogram is computed."""

    dataset: object  # a `datasets` set of audio (an `IterableDataset` when streamed)
    index_size: int | None  # how many clips the source numbers (SogCLR's state); `None` when a stream does not say
    skipped: SkipReport  # clips left out so far, and why


def list_clips(accelerator: Accelerator, data_args, seed: int, config) -> Clips:
    """The run's clips (the main process first: it fills the `datasets` cache the others read)."""
    skipped = SkipReport()
    with main_process_first(accelerator):
        dataset, index_size = load_clips(data_args, seed, skipped, min_seconds=crop_seconds(config))
    return Clips(dataset, index_size, skipped)


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


@dataclass
class TrainingData:
    """What the training step reads, on this process: a bank (resident or out-of-core) with the plan of every
    micro-batch's clips and crops, or a stream; and the checks that run beside it."""

    source: SpectrogramBank | DiskSpectrogramBank | StreamingSpectrograms
    plan: BatchPlan | None  # `None` for a stream, which draws its own crops
    store: SpectrogramStore | None
    verifier: StoreVerifier | None  # an out-of-core store's checksum, checked while training runs (one per machine)
    num_clips: int | None  # `None` for a stream
    index_size: int | None
    skipped: SkipReport
    crop_frames: int
    global_batch: int
    local_rows: slice  # this process's rows of the global batch
    seed: int
    max_crop_distance: int | None
    step_check: StepCheck  # every process learns at each micro-batch whether any found its data damaged
    prefetcher: CropPrefetcher | None = None

    @property
    def batches_per_epoch(self) -> int | None:
        return self.plan.batches_per_epoch if self.plan is not None else None

    @property
    def rank_state(self) -> dict | None:
        """What a checkpoint saves per process: a stream's position differs per process (accelerate would save the
        main process's only, and every process would resume from it)."""
        return {"stream": self.source} if isinstance(self.source, StreamingSpectrograms) else None

    def epoch(self, micro_batch: int) -> int:
        return micro_batch // self.batches_per_epoch if self.batches_per_epoch else self.source.epoch

    def start(self, micro_batch: int, device) -> None:
        """An out-of-core bank is read ahead by a background thread from `micro_batch`, where the run stands (after a
        resume too)."""
        if isinstance(self.source, DiskSpectrogramBank):
            self.prefetcher = CropPrefetcher(
                self.source, self.plan, self.local_rows, device, start=micro_batch,
                check_finite=f"The spectrogram store {self.store.directory} is damaged: delete that folder; the next "
                "run recomputes it.",
            )

    def checked_micro_batch(self, micro_batch: int, view_shift: bool):
        """`micro_batch(...)`, once every process has read its share of it and none has found its data damaged (the
        background checksum, a non-finite crop, a failed read): otherwise every process raises the first one's
        error here, at the same micro-batch, before the step's collectives."""
        error, batch = self.verifier.error if self.verifier is not None else None, None
        if error is None:
            try:
                batch = self.micro_batch(micro_batch, view_shift)
            except Exception as found:  # noqa: BLE001  (raised by every process below)
                error = found
        self.step_check(error)
        return batch

    def micro_batch(self, micro_batch: int, view_shift: bool) -> tuple[list, torch.Tensor | None, torch.Tensor | None]:
        """`(views, index, shift)`: this process's `(B, F, crop)` views of `micro_batch`, their clips' indices `(B,)`
        and the `(global batch,)` second crop start minus the first (for masking policies that pair the views' audio;
        left out of a prefetched batch unless `view_shift`)."""
        if self.prefetcher is not None:
            *views, index = self.prefetcher.next()
            if not view_shift:
                return views, index, None
            _, *starts = self.plan(micro_batch)  # the prefetcher's plan: the same draws
            return views, index, starts[1] - starts[0]
        if self.plan is not None:
            # Draws for the whole global batch, this process's slice used: the same for any number of processes.
            global_index, *starts = self.plan(micro_batch)
            index = global_index[self.local_rows]
            offsets = self.source.host_offsets[index]
            views = [self.source.crops(offsets + start[self.local_rows], self.crop_frames) for start in starts]
            return views, index, starts[1] - starts[0]
        *views, index = self.source.next_batch(
            self.crop_frames, crop_generator(self.seed, micro_batch), self.max_crop_distance
        )
        # A stream knows this process's crops only; the other rows' offsets never reach this process's masks.
        shift = torch.zeros(self.global_batch, dtype=torch.long)
        shift[self.local_rows] = self.source.last_view_shift
        return views, index, shift

    def finish(self) -> None:
        """Stops reading ahead and waits for the store's check, whose outcome every process learns: no model is
        exported from a damaged store."""
        if self.prefetcher is not None:
            self.prefetcher.close()
        error = None
        if self.verifier is not None:
            try:
                self.verifier.finish()
            except Exception as found:  # noqa: BLE001  (raised by every process below)
                error = found
        self.step_check(error)


def load_training_data(
    accelerator: Accelerator, clips: Clips, key: str, crop_frames: int, feature_extractor, data_args, training_args
) -> TrainingData:
    """The spectrograms of `clips` (`key`: their hash): computed once into the store (the main process computes, the
    others read) and placed resident or out-of-core, or with `--streaming` computed as this process reads its share.
    The store's checksum is checked by the local main process of each machine, which reads the whole file, and every
    process learns the outcome; an error of any process here stops them all."""
    world_size, rank = accelerator.num_processes, accelerator.process_index
    batch_size = training_args.per_device_batch_size
    local_rows = slice(rank * batch_size, (rank + 1) * batch_size)
    skipped = clips.skipped
    with main_process_first(accelerator):
        if data_args.streaming:
            spectrograms = compute_spectrograms(
                clips.dataset, feature_extractor, min_frames=crop_frames, skipped=skipped,
                storage_dtype=data_args.storage_dtype, device=preprocess_device(accelerator),
                batch_size=data_args.preprocessing_batch_size,
            )
        else:
            cache_dir = data_args.cache_dir or os.path.join(training_args.output_dir, CACHE_DIR)
            store = prepare_store(
                clips.dataset, key, data_args, feature_extractor, crop_frames, cache_dir, skipped, accelerator
            )
            skipped = store.skip_report()
    common = dict(
        index_size=clips.index_size, skipped=skipped, crop_frames=crop_frames, global_batch=batch_size * world_size,
        local_rows=local_rows, seed=training_args.seed, max_crop_distance=data_args.max_crop_distance,
        step_check=StepCheck(accelerator),
    )
    if data_args.streaming:
        if training_args.loss == "sogclr" and clips.index_size is None:
            raise ValueError(
                "SogCLR keeps a state per clip, keyed by its index in the source, but this stream does not say how "
                "many clips it has: use --loss infonce with --streaming, or cache the set (drop --streaming)."
            )
        from datasets.distributed import split_dataset_by_node

        stream = StreamingSpectrograms(
            split_dataset_by_node(spectrograms, rank=rank, world_size=world_size),
            batch_size,
            accelerator.device,
            storage_dtype=data_args.storage_dtype,
            shuffle_buffer_size=data_args.shuffle_buffer_size,
            seed=training_args.seed,
            skipped=skipped,
        )
        return TrainingData(stream, plan=None, store=None, verifier=None, num_clips=None, **common)

    num_clips = len(store)
    plan = BatchPlan(
        store.num_frames, batch_size * world_size, crop_frames, training_args.seed, data_args.max_crop_distance,
        num_views=data_args.num_views,
    )
    if plan.batches_per_epoch == 0:
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
    # checksum by a background thread while training runs. Once per machine: the other processes read it only as
    # they need it, and learn the outcome (now, and at each micro-batch).
    verify, error, bank = accelerator.is_local_main_process, None, None
    try:
        bank = store.bank(accelerator.device, resident=placement == "resident", verify=verify)
    except Exception as found:  # noqa: BLE001  (raised by every process below)
        error = found
    raise_together(accelerator, error)
    verifier = StoreVerifier(store) if placement != "resident" and verify else None
    accelerator.print(
        f"spectrograms: {num_clips} clips, {store.total_frames} frames, {gib(store.nbytes)} as "
        f"{store.meta['dtype']} ({numbers}) -> "
        + ("resident on " + str(accelerator.device) if placement == "resident" else
           f"out-of-core: read from {store.frames_path} by a background thread")
    )
    return TrainingData(bank, plan=plan, store=store, verifier=verifier, num_clips=num_clips, **common)


__all__ = [
    "SPECTROGRAM_FIELDS",
    "Clips",
    "TrainingData",
    "crop_seconds",
    "data_hash",
    "expected_clip_seconds",
    "list_clips",
    "load_training_data",
    "prepare_store",
    "preprocess_device",
]
