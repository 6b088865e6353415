"""Each clip's raw power mel spectrogram, computed once with `MynaFeatureExtractor(chunk=False)` (on the GPU when
there is one, else in one single-threaded worker process per core) and cached as Arrow through `Dataset.map`:
float32, or bfloat16 stored as its uint16 bits (never float16, which overflows on power mels). Undecodable, empty,
silent and too-short clips are kept as rows with a `skip_reason`, then filtered out and counted, so the count
survives the cache. In a log the progress is plain lines (`map_progress_lines`), never tqdm's carriage returns.
This module also owns the stored row format (`encode_spectrogram`, `decode_spectrograms`) and `cache_key`, which
names a cache by what it was computed from.
"""

import hashlib
import json
import os
import time
from contextlib import contextmanager

import numpy as np
import torch

from modeling_myna import MynaFeatureExtractor
from modeling_myna.audio_utils import AudioDecodeError, load_audio
from myna_common.progress import LineProgress, is_terminal
from myna_training.audio_sources import SkipReport


# Peak amplitude below which a clip counts as silent (-80 dBFS): its spectrogram carries nothing to contrast.
SILENCE_THRESHOLD = 1e-4
STORAGE_DTYPES = ("float32", "bfloat16")


def spectrogram_features(num_mel_bins: int, storage_dtype: str):
    import datasets

    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype={storage_dtype!r}: use one of {STORAGE_DTYPES} (float16 overflows).")
    arrow_dtype = "float32" if storage_dtype == "float32" else "uint16"
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            # (frames, num_mel_bins): Arrow allows a variable first dimension only.
            "spectrogram": datasets.Array2D((None, num_mel_bins), arrow_dtype),
            "num_frames": datasets.Value("int32"),
            "skip_reason": datasets.Value("string"),
            "index": datasets.Value("int64"),  # the clip's stable index in its source (`load_clips`)
        }
    )


def encode_spectrogram(spectrogram: torch.Tensor, storage_dtype: str) -> np.ndarray:
    """`(F, T)` float tensor to the `(T, F)` array stored in Arrow (bfloat16 as its uint16 bits)."""
    spectrogram = spectrogram.T.contiguous()
    if storage_dtype == "bfloat16":
        return spectrogram.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    return spectrogram.float().cpu().numpy()


def decode_spectrograms(array: np.ndarray, bfloat16: bool = False) -> torch.Tensor:
    """A stored `(T, F)` array to a `(F, T)` tensor: float32, or bfloat16 when the array holds its uint16 bits."""
    if bfloat16:
        bits = np.ascontiguousarray(array, dtype=np.uint16).view(np.int16)
        return torch.from_numpy(bits).view(torch.bfloat16).T
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).T


def make_spectrogram_function(
    feature_extractor: MynaFeatureExtractor,
    min_frames: int,
    storage_dtype: str,
    device,
    single_threaded_workers: bool = False,
):
    """A batched `Dataset.map` function: `{id, audio, index[, offset, duration]}` rows to `{id, spectrogram,
    num_frames, skip_reason, index}`.

    With `single_threaded_workers`, a call in any process other than this one (a `Dataset.map(num_proc=...)`
    worker) first sets torch to one thread: one worker per core, no oversubscription, and no OpenMP pool used
    across the fork.
    """
    empty = np.zeros((0, feature_extractor.feature_size), dtype=np.float32 if storage_dtype == "float32" else np.uint16)
    parent_pid = os.getpid()

    def compute(batch):
        if single_threaded_workers and os.getpid() != parent_pid and torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        out = {"id": [], "spectrogram": [], "num_frames": [], "skip_reason": [], "index": []}
        good, good_ids, good_index = [], [], []
        size = len(batch["id"])
        indices = batch.get("index") or [-1] * size
        offsets = batch.get("offset") or [0.0] * size
        durations = batch.get("duration") or [None] * size
        for clip_id, audio, index, offset, duration in zip(batch["id"], batch["audio"], indices, offsets, durations):
            reason = None
            try:
                waveform, _ = load_audio(
                    audio, sampling_rate=feature_extractor.sampling_rate, offset=offset or 0.0, duration=duration
                )
                num_frames = len(waveform) // feature_extractor.hop_length + 1
                if np.abs(waveform).max() < SILENCE_THRESHOLD:
                    reason = "silent"
                elif num_frames < min_frames:
                    reason = f"shorter than {min_frames} frames"
            except AudioDecodeError:
                reason = "undecodable"
            if reason is None:
                good.append(waveform)
                good_ids.append(clip_id)
                good_index.append(index)
            else:
                out["id"].append(clip_id)
                out["spectrogram"].append(empty)
                out["num_frames"].append(0)
                out["skip_reason"].append(reason)
                out["index"].append(index)
        if good:
            features = feature_extractor(
                good, sampling_rate=feature_extractor.sampling_rate, chunk=False, return_tensors="pt", device=device
            )
            rows = zip(good_ids, good_index, features["input_values"], features["num_frames"])
            for clip_id, index, spectrogram, num_frames in rows:
                out["id"].append(clip_id)
                out["spectrogram"].append(encode_spectrogram(spectrogram[:, : int(num_frames)], storage_dtype))
                out["num_frames"].append(int(num_frames))
                out["skip_reason"].append("")
                out["index"].append(index)
        return out

    return compute


class ClipProgress(LineProgress):
    """`Dataset.map`'s progress as plain lines, with the clips per second: `Spectrograms (num_proc=2): 8/16 clips
    (50%), 12s elapsed, ETA 12s [0.7 clips/s]`, one every `MYNA_PROGRESS_INTERVAL` seconds (30) and one at the end.
    Takes the keyword arguments `Dataset.map` gives its tqdm bar."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "unit": "clip", "disable": False})

    def _print(self) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed > 0 and self.n > self.initial:
            self.postfix = f"{(self.n - self.initial) / elapsed:.1f} clips/s"
        super()._print()


@contextmanager
def map_progress_lines():
    """Within it, `Dataset.map` reports its progress as `ClipProgress` lines when stderr is not a terminal (a log, a
    pipe) or `datasets`' bars are turned off; on a terminal its tqdm bar stays. Preprocessing can take hours, so a
    log needs its progress, and tqdm's redraws (carriage returns) are debris in a file. `datasets` takes no bar
    class: its module's name for the bar is swapped for the call and put back (the bar lives in the main process,
    also with `num_proc` workers, which send it their counts)."""
    from datasets import arrow_dataset
    from datasets.utils import are_progress_bars_disabled

    if (is_terminal() and not are_progress_bars_disabled()) or not hasattr(arrow_dataset, "hf_tqdm"):
        yield
        return
    bar = arrow_dataset.hf_tqdm
    arrow_dataset.hf_tqdm = ClipProgress
    try:
        yield
    finally:
        arrow_dataset.hf_tqdm = bar


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def compute_spectrograms(
    clips,
    feature_extractor: MynaFeatureExtractor,
    min_frames: int,
    skipped: SkipReport,
    storage_dtype: str = "float32",
    device: str | torch.device = "cpu",
    cache_file: str | None = None,
    batch_size: int = 16,
    num_proc: int | None = 1,
):
    """Spectrograms of every clip, computed once (cached in `cache_file` when given), bad clips dropped and counted.

    Returns a `Dataset` with `id`, `spectrogram` `(frames, num_mel_bins)` and `num_frames`. A streamed
    `IterableDataset` is mapped lazily and keeps its bad rows (`skip_reason` set): `StreamingSpectrograms` skips
    and counts them as it reads.

    `num_proc` worker processes (`None`: one per CPU core) decode and transform on the CPU, each single-threaded,
    each writing its contiguous shard of the cache (`<cache_file stem>_0000r_of_0000n.arrow`); `datasets` reloads
    a complete set of shards whatever `num_proc` is later. On a GPU, and for streamed sets, one process does it all.
    """
    import datasets

    if num_proc is None:
        num_proc = os.cpu_count() or 1
    if num_proc < 1:
        raise ValueError(f"num_proc={num_proc}: use 1 (the main process) or more worker processes.")
    if torch.device(device).type != "cpu":
        num_proc = 1  # forked workers cannot use the parent's CUDA context; the GPU is the fast path anyway
    if num_proc > 1:
        feature_extractor.mel_spectrogram(device)  # built once here and handed to the workers with the extractor
    function = make_spectrogram_function(
        feature_extractor, min_frames, storage_dtype, device, single_threaded_workers=num_proc > 1
    )
    features = spectrogram_features(feature_extractor.feature_size, storage_dtype)
    if isinstance(clips, datasets.IterableDataset):
        return clips.map(
            function, batched=True, batch_size=batch_size, remove_columns=clips.column_names or ["id", "audio"],
            features=features,
        )
    if cache_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
    workers = min(num_proc, len(clips))
    with map_progress_lines():
        mapped = clips.map(
            function,
            batched=True,
            batch_size=batch_size,
            remove_columns=clips.column_names,
            features=features,
            cache_file_name=cache_file,
            num_proc=workers if workers > 1 else None,  # None: the main process (datasets pools even num_proc=1)
            desc="Spectrograms",
        )
    reasons = mapped["skip_reason"]
    ids = mapped["id"]
    for clip_id, reason in zip(ids, reasons):
        if reason:
            skipped.add(reason, clip_id)
    keep = [i for i, reason in enumerate(reasons) if not reason]
    if not keep:
        raise ValueError(f"no usable clip is left ({skipped}): check the data source.")
    return mapped.select(keep).remove_columns("skip_reason")


__all__ = [
    "STORAGE_DTYPES",
    "ClipProgress",
    "cache_key",
    "compute_spectrograms",
    "decode_spectrograms",
    "encode_spectrogram",
    "make_spectrogram_function",
    "map_progress_lines",
    "spectrogram_features",
]
