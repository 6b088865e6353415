"""Pre-training data: clip sources, the once-per-clip spectrogram cache, and vectorised two-view cropping.

Sources (SPEC §4, §6), each a `datasets` dataset with an `audio` column (a dict `load_audio` reads) and an `id`:
- the generated corpus (`myna_training.synthetic`), the default;
- any local folder of audio files, recursive (`AUDIO_EXTENSIONS`);
- the AudioSet music subset, from the Hub dataset `agkphysics/AudioSet` or from the original segment CSVs plus a
  folder of audio named by YouTube id, keeping the segments labelled Music (/m/04rlf) or one of its descendants in
  the AudioSet ontology (`data/audioset_music_ids.txt`).

Each clip's raw power mel spectrogram is computed once with `MynaFeatureExtractor(chunk=False)` (on the GPU when
there is one) and cached as Arrow through `Dataset.map` (float32, or bfloat16 stored as uint16; never float16, which
overflows on power mels). Undecodable, empty, silent and too-short clips are kept as rows with a `skip_reason`, then
filtered out, so the count survives the cache. A training step then only crops: `SpectrogramBank` holds every
spectrogram in one `(num_mel_bins, total_frames)` tensor on the device and gathers two random crops per clip with
one indexing operation; `StreamingSpectrograms` does the same per batch for streamed sets.
"""

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from modeling_myna import MynaFeatureExtractor
from modeling_myna.audio_utils import AUDIO_EXTENSIONS, AudioDecodeError, load_audio


MUSIC_IDS_FILE = Path(__file__).parent / "data" / "audioset_music_ids.txt"
MUSIC_ID = "/m/04rlf"
# Peak amplitude below which a clip counts as silent (-80 dBFS): its spectrogram carries nothing to contrast.
SILENCE_THRESHOLD = 1e-4
STORAGE_DTYPES = ("float32", "bfloat16")


def audioset_music_ids() -> dict[str, str]:
    """`{ontology id: name}` of Music and all its descendants in the AudioSet ontology (189 ids)."""
    ids = {}
    for line in MUSIC_IDS_FILE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            mid, name = line.split("\t", 1)
            ids[mid] = name
    return ids


@dataclass
class SkipReport:
    """Clips left out of training, counted by reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # reason -> one clip id, to point at

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, reason: str, clip_id: str, count: int = 1) -> None:
        self.counts[reason] += count
        self.examples.setdefault(reason, clip_id)

    def __str__(self) -> str:
        if not self.total:
            return "0 clips skipped"
        parts = [f"{n} {reason} (e.g. {self.examples.get(reason, '?')})" for reason, n in sorted(self.counts.items())]
        return f"{self.total} clips skipped: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Sources


def synthetic_clips(num_clips: int, seed: int, duration: float):
    """The generated corpus: `num_clips` labelled clips, each depending only on `(seed, i)`."""
    from myna_training.synthetic import synthetic_music_dataset

    return synthetic_music_dataset(num_clips, seed=seed, duration=duration)


def folder_clips(data_dir: str, segment_seconds: float | None = None, min_seconds: float = 0.0):
    """Every audio file under `data_dir` (recursive, `AUDIO_EXTENSIONS`), as a dataset of paths.

    With `segment_seconds`, each file is cut into clips of that length (rows with `offset` and `duration` in
    seconds, ids `path#k`), so that a folder of whole tracks gives many clips, not one per track; a tail shorter
    than `min_seconds` (one training crop) joins the segment before it. A file whose length cannot be read stays
    one row, and is counted as undecodable when its spectrogram is computed. Each file's size and modification time
    are columns, so the dataset's fingerprint (and the spectrogram cache key) changes when a file does.
    """
    import datasets
    import soundfile as sf

    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"data_dir {data_dir} is not a folder: pass a folder of audio files.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not paths:
        raise ValueError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {data_dir}: check the path or convert the files."
        )
    rows = {"id": [], "audio": [], "offset": [], "duration": [], "size": [], "mtime": []}
    for path in paths:
        name, stat = str(path.relative_to(root)), path.stat()
        segments = [(0.0, None)]
        if segment_seconds:
            try:
                info = sf.info(str(path))
                length = info.frames / info.samplerate
            except Exception:  # unreadable header: one row, counted when decoded
                length = 0.0
            count = max(1, int(length // segment_seconds))
            if count > 1 and length - count * segment_seconds >= min_seconds:
                count += 1  # the tail is long enough to be a clip of its own
            segments = [
                (k * segment_seconds, segment_seconds if k < count - 1 else None) for k in range(count)
            ]
        for k, (offset, duration) in enumerate(segments):
            rows["id"].append(name if len(segments) == 1 else f"{name}#{k}")
            rows["audio"].append({"path": str(path)})
            rows["offset"].append(offset)
            rows["duration"].append(duration)
            rows["size"].append(stat.st_size)
            rows["mtime"].append(stat.st_mtime_ns)
    return datasets.Dataset.from_dict(rows)


def read_segments_csv(path: str) -> list[dict]:
    """Rows of an AudioSet segment CSV: `# comment` lines, then `YTID, start_seconds, end_seconds, "l1,l2"`."""
    import csv

    rows = []
    with open(path, encoding="utf-8") as f:
        for fields in csv.reader((line for line in f if not line.startswith("#")), skipinitialspace=True):
            if len(fields) < 4:
                continue
            rows.append(
                {"ytid": fields[0], "start": float(fields[1]), "end": float(fields[2]), "labels": fields[3].split(",")}
            )
    if not rows:
        raise ValueError(f"{path} holds no segment rows (YTID, start, end, labels): is it an AudioSet segment CSV?")
    return rows


def audioset_csv_clips(segments_csv: str, data_dir: str, skipped: SkipReport):
    """The Music segments of an AudioSet CSV whose audio file (named by YouTube id) is under `data_dir`.

    Files may be named `<YTID>.<ext>` or `<YTID>_<start>...<ext>`; segments without a file are counted as
    `missing file` in `skipped`.
    """
    import datasets

    music = audioset_music_ids()
    files = {}
    for p in Path(data_dir).rglob("*"):
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS:
            files.setdefault(p.stem, p)
            files.setdefault(p.stem[:11], p)  # YouTube ids are 11 characters
    ids, audio, stats = [], [], []
    for row in read_segments_csv(segments_csv):
        if not music.keys() & set(row["labels"]):
            continue
        path = files.get(row["ytid"])
        if path is None:
            skipped.add("missing file", row["ytid"])
            continue
        ids.append(row["ytid"])
        audio.append({"path": str(path)})
        stats.append((path.stat().st_size, path.stat().st_mtime_ns))
    if not ids:
        raise ValueError(f"no Music segment of {segments_csv} has an audio file under {data_dir}.")
    # Size and modification time make the fingerprint (and so the cache key) change when a file does.
    return datasets.Dataset.from_dict(
        {"id": ids, "audio": audio, "size": [s for s, _ in stats], "mtime": [m for _, m in stats]}
    )


def audioset_hub_clips(name: str, config: str, split: str, streaming: bool):
    """The Music subset of the Hub dataset `name` (columns video_id, audio, labels), audio left undecoded.

    Each clip keeps `index`, its position in the whole split (counted before the Music filter, so it is stable when
    the split is streamed), and the split's size is returned with it: `(dataset, split_size or None)`.
    """
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as error:  # offline, unknown id, missing config: all end here
        raise RuntimeError(
            f"could not load the Hub dataset {name!r} (config {config!r}, split {split!r}): {error}. The Hub must be "
            "reachable (HF_HUB_OFFLINE unset), or download it once and use --dataset audioset_csv or folder."
        ) from error
    size = None
    if isinstance(dataset, datasets.IterableDataset):
        splits = dataset.info.splits or {}
        size = splits[split].num_examples if split in splits else None
        dataset = dataset.map(lambda _, i: {"index": i}, with_indices=True)
    else:
        size = len(dataset)
        dataset = dataset.add_column("index", list(range(size)))
    music = set(audioset_music_ids())
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    dataset = dataset.filter(lambda labels: bool(music.intersection(labels)), input_columns="labels")
    return dataset.rename_column("video_id", "id").select_columns(["id", "audio", "index"]), size


def load_clips(data_args, seed: int, skipped: SkipReport, min_seconds: float = 0.0):
    """The clips `data_args` names, and how many stable indices they use: `(dataset, index_size)`.

    The dataset has columns `id`, `audio` and `index` (a clip's stable position in its source, which keys the
    SogCLR state also when the set is streamed; `index_size` bounds it, `None` when a streamed source does not say),
    plus `offset` / `duration` for segmented files. It is an `IterableDataset` when streaming.
    """
    import datasets

    index_size = None
    if data_args.dataset == "synthetic":
        dataset = synthetic_clips(data_args.num_clips, seed, data_args.clip_seconds).select_columns(["id", "audio"])
    elif data_args.dataset == "folder":
        if not data_args.data_dir:
            raise ValueError("--dataset folder needs --data_dir.")
        segment_seconds = data_args.segment_seconds if data_args.segment_seconds is not None else 10.0
        dataset = folder_clips(data_args.data_dir, segment_seconds or None, min_seconds)
    elif data_args.dataset == "audioset_csv":
        if not (data_args.segments_csv and data_args.data_dir):
            raise ValueError("--dataset audioset_csv needs --segments_csv and --data_dir (audio named by YouTube id).")
        dataset = audioset_csv_clips(data_args.segments_csv, data_args.data_dir, skipped)
    elif data_args.dataset == "audioset":
        dataset, index_size = audioset_hub_clips(
            data_args.dataset_name, data_args.dataset_config, data_args.dataset_split, data_args.streaming
        )
    else:
        raise ValueError(
            f"dataset={data_args.dataset!r}: choose 'synthetic', 'folder', 'audioset' or 'audioset_csv'."
        )
    if data_args.max_clips is not None and not isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.select(range(min(data_args.max_clips, len(dataset))))
    if "index" not in dataset.column_names:
        index_size = len(dataset)
        dataset = dataset.add_column("index", list(range(index_size)))
    if data_args.streaming and not isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.to_iterable_dataset()
    elif data_args.max_clips is not None and isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.take(data_args.max_clips)
    return dataset, index_size


# ---------------------------------------------------------------------------------------------------------------
# Spectrograms, once per clip


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


# ---------------------------------------------------------------------------------------------------------------
# Crops


def random_crop_starts(
    num_frames: torch.Tensor, crop_frames: int, generator: torch.Generator, max_distance: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent uniform crop starts per clip, `(B,)` each, in `[0, num_frames - crop_frames]`.

    With `max_distance`, the second start is drawn uniformly among the valid starts within `max_distance` frames
    of the first (the reference code's option).
    """
    device = num_frames.device
    room = (num_frames - crop_frames + 1).clamp(min=1).to(torch.float64)  # valid start positions per clip
    uniform = torch.rand((2, num_frames.shape[0]), generator=generator, device=device, dtype=torch.float64)
    first = (uniform[0] * room).long()
    if max_distance is None:
        second = (uniform[1] * room).long()
    else:
        low = (first - max_distance).clamp(min=0)
        high = torch.minimum(first + max_distance, room.long() - 1)
        second = low + (uniform[1] * (high - low + 1).to(torch.float64)).long()
    return first, second


def gather_crops(frames: torch.Tensor, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None):
    """`(total_frames, F)` frames and `(B,)` absolute start rows to `(B, F, crop_frames)` crops, one gather.

    A crop is `crop_frames` consecutive rows: one contiguous read, in memory or (`DiskSpectrogramBank`) on disk.
    `out`, when given, is a `(B * crop_frames, F)` buffer (pinned memory, say) that receives the rows.
    """
    rows = (starts.to(frames.device)[:, None] + torch.arange(crop_frames, device=frames.device)).reshape(-1)
    if frames.dtype == torch.bfloat16 and frames.device.type == "cpu":
        # The same bits through the int16 kernel: ~5x faster than the CPU's bfloat16 index_select.
        bits = torch.index_select(frames.view(torch.int16), 0, rows, out=None if out is None else out.view(torch.int16))
        gathered = bits.view(torch.bfloat16)
    else:
        gathered = torch.index_select(frames, 0, rows, out=out)  # (B * crop, F)
    return gathered.view(starts.shape[0], crop_frames, frames.shape[1]).transpose(1, 2)  # (B, F, crop)


def epoch_order(num_clips: int, seed: int, epoch: int) -> torch.Tensor:
    """The clip order of `epoch`: a permutation that depends only on `(seed, epoch)`."""
    return torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def crop_generator(seed: int, micro_batch: int) -> torch.Generator:
    """The CPU generator of one micro-batch's crop starts (the mask noise has its own stream, on the device)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_batch) * 2 + 1)


class BatchPlan:
    """Which clips and crop starts micro-batch `m` uses: a pure function of `(seed, m)` for the whole global batch.

    Every placement of the spectrograms (a device-resident bank, the store on disk read by a background thread)
    and any number of processes follow the same plan, so they train on exactly the same crops.
    """

    def __init__(self, num_frames: torch.Tensor, global_batch: int, crop_frames: int, seed: int, max_distance=None):
        self.num_frames = num_frames.cpu()
        self.global_batch = global_batch
        self.crop_frames = crop_frames
        self.seed = seed
        self.max_distance = max_distance
        self.batches_per_epoch = len(self.num_frames) // global_batch
        self._order, self._order_epoch = None, None

    def __call__(self, micro_batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(index, first, second)`, `(global_batch,)` CPU tensors: clip indices and the starts of their two views."""
        epoch, position = divmod(micro_batch, self.batches_per_epoch)
        if self._order_epoch != epoch:
            self._order, self._order_epoch = epoch_order(len(self.num_frames), self.seed, epoch), epoch
        index = self._order[position * self.global_batch : (position + 1) * self.global_batch]
        first, second = random_crop_starts(
            self.num_frames[index], self.crop_frames, crop_generator(self.seed, micro_batch), self.max_distance
        )
        return index, first, second


class SpectrogramBank:
    """Every spectrogram side by side in one `(total_frames, num_mel_bins)` tensor, cropped with one gather.

    Clip `i` occupies rows `offsets[i] : offsets[i] + num_frames[i]`. The frames live on the training device
    (resident); `DiskSpectrogramBank` is the same interface over the store's file (out-of-core).
    """

    def __init__(self, frames: torch.Tensor, num_frames: torch.Tensor):
        if frames.dim() != 2 or frames.shape[0] != int(num_frames.sum()):
            raise ValueError(
                f"frames {tuple(frames.shape)} do not hold the {int(num_frames.sum())} frames of {len(num_frames)} "
                "clips as (total_frames, num_mel_bins) rows."
            )
        self.frames = frames
        self.num_frames = num_frames.to(frames.device, torch.long)
        self.offsets = torch.cumsum(self.num_frames, 0) - self.num_frames
        # Host copies: the batch plan indexes them on the CPU, with no device round trip in the training step.
        self.host_num_frames = num_frames.cpu().long()
        self.host_offsets = torch.cumsum(self.host_num_frames, 0) - self.host_num_frames

    def __len__(self) -> int:
        return self.num_frames.shape[0]

    @property
    def device(self) -> torch.device:
        return self.frames.device

    @property
    def nbytes(self) -> int:
        return self.frames.numel() * self.frames.element_size()

    @property
    def num_mel_bins(self) -> int:
        return self.frames.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.frames.dtype

    @classmethod
    def from_dataset(cls, dataset, device: str | torch.device = "cpu", chunk_size: int = 256) -> "SpectrogramBank":
        """A resident bank from a `compute_spectrograms` dataset (read chunk by chunk)."""
        num_frames = torch.tensor(dataset["num_frames"], dtype=torch.long)
        feature = dataset.features["spectrogram"]
        bfloat16 = feature.dtype == "uint16"  # how compute_spectrograms stores bfloat16
        frames = torch.empty(
            (int(num_frames.sum()), feature.shape[1]), dtype=torch.bfloat16 if bfloat16 else torch.float32
        )
        row = 0
        for array in iter_stored_spectrograms(dataset, chunk_size):  # load-time copy, not the hot path
            frames[row : row + array.shape[0]] = stored_to_tensor(array, bfloat16)
            row += array.shape[0]
        return cls(frames.to(device), num_frames)

    def crops(self, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, F, crop_frames)` crops at absolute rows `starts` `(B,)` (a clip's offset + its start)."""
        return gather_crops(self.frames, starts, crop_frames, out)

    def crop_pair(
        self,
        index: torch.Tensor,
        crop_frames: int,
        generator: torch.Generator,
        max_distance: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two `(B, F, crop_frames)` views of the clips `index` `(B,)`, starts drawn with `generator` (on CPU)."""
        index = index.cpu()
        first, second = random_crop_starts(self.host_num_frames[index], crop_frames, generator, max_distance)
        offsets = self.host_offsets[index]
        return self.crops(offsets + first, crop_frames), self.crops(offsets + second, crop_frames)


class DiskSpectrogramBank:
    """An out-of-core `SpectrogramBank`: the frames stay in the store's file and each crop is one `pread` of its
    `crop_frames` consecutive rows, spread over a few threads (the reads release the GIL).

    Nothing is memory-mapped: the process holds only the batch being read, whatever the store's size, and the
    kernel's page cache keeps what was read for the next time.
    """

    def __init__(self, path: str, num_frames: torch.Tensor, num_mel_bins: int, dtype: torch.dtype, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.path = path
        self.num_frames = num_frames.cpu().long()
        self.offsets = torch.cumsum(self.num_frames, 0) - self.num_frames
        self.host_num_frames, self.host_offsets = self.num_frames, self.offsets  # already on the host
        self.num_mel_bins, self.dtype = num_mel_bins, dtype
        self.row_bytes = num_mel_bins * torch.empty((), dtype=dtype).element_size()
        expected = int(self.num_frames.sum()) * self.row_bytes
        if os.path.getsize(path) != expected:
            raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, not the {expected} of its clips: the store "
                             "is damaged; delete its folder to recompute it.")
        self.fd = os.open(path, os.O_RDONLY)
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="myna-pread")

    def __len__(self) -> int:
        return self.num_frames.shape[0]

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.pool.shutdown(wait=False)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def nbytes(self) -> int:
        return int(self.num_frames.sum()) * self.row_bytes

    def _read(self, buffer: np.ndarray, positions: list[int]) -> None:
        for row, position in zip(buffer, positions):
            done = os.preadv(self.fd, [row], position)
            if done != row.nbytes:  # regular files return whole reads; anything else is a truncated store
                raise OSError(f"short read of {self.path} at byte {position}: the store is damaged, delete it.")

    def crops(self, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, F, crop_frames)` crops at absolute rows `starts` `(B,)`, read into `out` (`(B * crop_frames, F)`,
        pinned memory, say) or a new tensor."""
        count = starts.shape[0]
        if out is None:
            out = torch.empty((count * crop_frames, self.num_mel_bins), dtype=self.dtype)
        buffer = out.view(torch.uint8).numpy().reshape(count, crop_frames * self.row_bytes)
        positions = (starts.long() * self.row_bytes).tolist()
        share = -(-count // self.threads)
        jobs = [
            self.pool.submit(self._read, buffer[i : i + share], positions[i : i + share])
            for i in range(0, count, share)
        ]
        for job in jobs:
            job.result()
        return out.view(count, crop_frames, self.num_mel_bins).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# The on-disk store and the resident / out-of-core decision


STORE_FORMAT = 1
# Share of the free memory (of the device, or of the host for CPU training) a resident bank may take: the model's
# activations, the optimiser and, on a host, the other processes need the rest.
RESIDENT_MEMORY_FRACTION = 0.5
PLACEMENTS = ("auto", "resident", "out_of_core")


def iter_stored_spectrograms(dataset, chunk_size: int = 256):
    """The stored `(frames, num_mel_bins)` arrays of a spectrogram dataset, in order, `chunk_size` rows at a time."""
    numpy_view = dataset.with_format("numpy", columns=["spectrogram"])
    for start in range(0, len(dataset), chunk_size):
        yield from numpy_view[start : start + chunk_size]["spectrogram"]


def stored_to_tensor(array: np.ndarray, bfloat16: bool) -> torch.Tensor:
    """A stored `(T, F)` array as a `(T, F)` tensor: float32, or bfloat16 when the array holds its uint16 bits."""
    if bfloat16:
        return torch.from_numpy(np.require(array, np.uint16, ["C", "W"]).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.require(array, np.float32, ["C", "W"]))


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


class SpectrogramStore:
    """A folder holding a set's spectrograms for training, written once from the Arrow cache:

    - `frames.bin`: every clip's `(frames, num_mel_bins)` rows back to back, raw float32 or bfloat16;
    - `num_frames.npy`: frames per clip, `(num_clips,)` int64;
    - `meta.json`: format, dtype, shape and the skip report of the preprocessing.

    Rows of one clip are contiguous, so a 96-frame crop is one contiguous read. The folder is written under a
    temporary name and renamed when complete: a folder with this name is always whole.
    """

    def __init__(self, directory: str):
        self.directory = directory
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
            self.meta = json.load(f)
        if self.meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{directory} is a spectrogram store of format {self.meta.get('format')}, not "
                             f"{STORE_FORMAT}: delete it to recompute.")
        self.num_frames = torch.from_numpy(np.load(os.path.join(directory, "num_frames.npy")))
        self.dtype = getattr(torch, self.meta["dtype"])
        self.num_mel_bins = self.meta["num_mel_bins"]

    def __len__(self) -> int:
        return len(self.num_frames)

    @property
    def total_frames(self) -> int:
        return int(self.meta["total_frames"])

    @property
    def nbytes(self) -> int:
        return self.total_frames * self.num_mel_bins * torch.empty((), dtype=self.dtype).element_size()

    def skip_report(self) -> SkipReport:
        report = SkipReport()
        for reason, count in self.meta.get("skipped", {}).get("counts", {}).items():
            report.add(reason, self.meta["skipped"]["examples"].get(reason, "?"), count)
        return report

    @property
    def frames_path(self) -> str:
        return os.path.join(self.directory, "frames.bin")

    def bank(self, device, resident: bool) -> "SpectrogramBank | DiskSpectrogramBank":
        """A resident bank on `device` (the file read once, 256 MiB at a time), or an out-of-core bank that reads
        each crop from the file."""
        if not resident:
            return DiskSpectrogramBank(self.frames_path, self.num_frames, self.num_mel_bins, self.dtype)
        frames = torch.empty((self.total_frames, self.num_mel_bins), dtype=self.dtype, device=device)
        itemsize = frames.element_size()
        step = max(1, (256 << 20) // (self.num_mel_bins * itemsize))
        with open(self.frames_path, "rb") as f:
            for row in range(0, self.total_frames, step):
                rows = min(step, self.total_frames - row)
                bits = np.fromfile(f, dtype=np.int16 if itemsize == 2 else np.float32, count=rows * self.num_mel_bins)
                chunk = torch.from_numpy(bits).view(self.dtype).view(rows, self.num_mel_bins)
                frames[row : row + rows] = chunk.to(device)
        return SpectrogramBank(frames, self.num_frames)

    @classmethod
    def write(cls, spectrograms, directory: str, skipped: SkipReport, chunk_size: int = 256) -> "SpectrogramStore":
        """Writes the store of a `compute_spectrograms` dataset (bad clips already dropped) to `directory`."""
        feature = spectrograms.features["spectrogram"]
        bfloat16 = feature.dtype == "uint16"
        stored_dtype = np.uint16 if bfloat16 else np.float32  # `datasets` hands uint16 columns out as int64
        arrays = (np.asarray(a, dtype=stored_dtype) for a in iter_stored_spectrograms(spectrograms, chunk_size))
        return cls.write_arrays(
            directory,
            arrays,
            np.asarray(spectrograms["num_frames"], dtype=np.int64),
            "bfloat16" if bfloat16 else "float32",
            int(feature.shape[1]),
            skipped,
        )

    @classmethod
    def write_arrays(cls, directory, arrays, num_frames, dtype: str, num_mel_bins: int, skipped=None):
        """Writes a store from `arrays`, `(frames, num_mel_bins)` numpy arrays in the stored dtype (bfloat16 as its
        uint16 bits) whose rows add up to `num_frames` `(num_clips,)`, clip after clip."""
        num_frames = np.asarray(num_frames, dtype=np.int64)
        skipped = skipped or SkipReport()
        partial = directory + ".tmp"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        rows = 0
        with open(os.path.join(partial, "frames.bin"), "wb") as f:
            for array in arrays:
                if array.ndim != 2 or array.shape[1] != num_mel_bins:
                    raise ValueError(f"expected (frames, {num_mel_bins}) arrays, got {array.shape}.")
                f.write(np.ascontiguousarray(array).tobytes())
                rows += array.shape[0]
        if rows != int(num_frames.sum()):
            raise ValueError(f"the arrays hold {rows} frames but num_frames adds up to {int(num_frames.sum())}.")
        np.save(os.path.join(partial, "num_frames.npy"), num_frames)
        meta = {
            "format": STORE_FORMAT,
            "dtype": dtype,
            "num_mel_bins": num_mel_bins,
            "num_clips": int(len(num_frames)),
            "total_frames": rows,
            "skipped": {"counts": dict(skipped.counts), "examples": dict(skipped.examples)},
        }
        with open(os.path.join(partial, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(partial, directory)
        return cls(directory)


def free_memory(device: torch.device) -> int:
    """Bytes free for a resident bank on `device`: the GPU's free memory, or the host's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_placement(
    requested: str, set_bytes: int, device: torch.device, free_bytes: int, processes_per_host: int = 1
) -> tuple[str, str]:
    """`("resident" | "out_of_core", why)` for a set of `set_bytes` bytes.

    Resident when every process's copy fits in `RESIDENT_MEMORY_FRACTION` of `free_bytes` (of the device; of the host,
    shared by its processes, on CPU), out-of-core otherwise; `requested` other than `"auto"` overrides, and a
    resident bank that cannot fit is an error that gives the numbers.
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"spectrogram_placement={requested!r}: choose one of {PLACEMENTS}.")
    device = torch.device(device)
    copies = processes_per_host if device.type == "cpu" else 1
    budget = int(free_bytes * RESIDENT_MEMORY_FRACTION)
    where = "GPU" if device.type == "cuda" else "host"
    numbers = (
        f"{gib(set_bytes)} per process{f' x {copies} processes' if copies > 1 else ''}; {gib(free_bytes)} free "
        f"on the {where}, {int(RESIDENT_MEMORY_FRACTION * 100)}% of it usable"
    )
    fits = set_bytes * copies <= budget
    if requested == "resident" and not fits:
        raise ValueError(
            f"the spectrograms do not fit in memory as a resident bank ({numbers}): use "
            "--spectrogram_placement out_of_core (or auto), --storage_dtype bfloat16, or fewer clips."
        )
    if requested == "resident" or (requested == "auto" and fits):
        return "resident", numbers
    return "out_of_core", numbers


def check_disk_space(directory: str, needed_bytes: int, what: str) -> None:
    """Raises a clear error when the disk holding `directory` has less than `needed_bytes` free."""
    os.makedirs(directory, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise ValueError(
            f"{what} need about {gib(needed_bytes)} on disk in {directory}, which has {gib(free)} free: point "
            "--cache_dir at a larger disk, use --streaming, or limit the set with --max_clips."
        )


class CropPrefetcher:
    """Reads upcoming micro-batches' crops from an out-of-core bank in a background thread.

    The thread follows `plan` from micro-batch `start`, reads this process's rows of each batch (`rows`, a slice of
    the global batch) from the store's file into pinned host buffers and, on a GPU, starts their copy to the
    device on a side stream, so that disk reads and host-to-device copies overlap the training step. `next()` returns
    `(view1, view2, index)` in order; the consumer's stream waits for the copy on the device, not on the host.
    """

    def __init__(self, bank, plan: BatchPlan, rows: slice, device, start: int = 0, depth: int = 2):
        import queue
        import threading

        self.bank, self.plan, self.rows = bank, plan, rows
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:  # "cuda": the current device, named, for the filling thread
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.queue = queue.Queue(maxsize=depth)
        local = len(range(*rows.indices(plan.global_batch)))
        shape = (local * plan.crop_frames, bank.num_mel_bins)
        # Two views per batch; `depth` batches queued, one being filled and one being used.
        self.buffers = [
            [torch.empty(shape, dtype=bank.dtype, pin_memory=True) for _ in range(2)]
            for _ in range(depth + 2 if self.cuda else 0)
        ]
        self.copied = [None] * max(len(self.buffers), 1)  # the event after which a buffer may be refilled
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(start,), daemon=True, name="myna-crop-prefetch")
        self.thread.start()

    def _fill(self, micro_batch: int) -> None:
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            slot = 0
            while not self._stop.is_set():
                index, first, second = self.plan(micro_batch)
                index, first, second = index[self.rows], first[self.rows], second[self.rows]
                offsets = self.bank.host_offsets[index]
                if self.copied[slot] is not None:
                    self.copied[slot].synchronize()  # the last copy out of this buffer is done
                buffers = self.buffers[slot] if self.cuda else (None, None)
                views = [self.bank.crops(offsets + s, self.plan.crop_frames, out=b) for s, b in zip((first, second), buffers)]
                event = None
                if self.cuda:
                    with torch.cuda.stream(self.stream):
                        views = [v.to(self.device, non_blocking=True) for v in views]
                        event = torch.cuda.Event()
                        event.record(self.stream)
                    self.copied[slot] = event
                self._put((views, index, event))
                micro_batch += 1
                slot = (slot + 1) % len(self.copied)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(error)

    def _put(self, item) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise RuntimeError(f"reading crops from the spectrogram store failed: {item}") from item
        (view1, view2), index, event = item
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            view1.record_stream(stream)
            view2.record_stream(stream)
        return view1, view2, index

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


class StreamingSpectrograms:
    """Batches of two-view crops from a streamed (`IterableDataset`) spectrogram set.

    Each batch of clips is laid side by side in a small `SpectrogramBank` on the device and cropped with its
    vectorised gather. Bad clips (rows with a `skip_reason`) are skipped and counted in
    `skipped` as they come. The stream's position is saved with checkpoints through `state_dict` (the shuffle
    buffer's content is not, so a resumed stream continues with fresh data).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        device,
        storage_dtype: str = "float32",
        shuffle_buffer_size: int = 1000,
        seed: int = 0,
        skipped: SkipReport | None = None,
    ):
        self.skipped = skipped if skipped is not None else SkipReport()
        self.bfloat16 = storage_dtype == "bfloat16"
        self.dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size) if shuffle_buffer_size else dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.epoch = 0
        self._iterator = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.dataset.load_state_dict(state["dataset"])
        self._iterator = None

    def _rows(self):
        while True:
            self.dataset.set_epoch(self.epoch)
            for row in self.dataset:
                if row["skip_reason"]:
                    if self.epoch == 0:  # count each bad clip once
                        self.skipped.add(row["skip_reason"], row["id"])
                    continue
                yield row
            self.epoch += 1

    def next_batch(self, crop_frames: int, generator: torch.Generator, max_distance: int | None = None):
        """`(view1, view2, index)`: two `(B, F, crop_frames)` views and each clip's stable `index` (`(B,)`, or
        `None` when the stream has no `index` column), crop starts drawn with the CPU `generator`."""
        if self._iterator is None:
            self._iterator = self._rows()
        rows = [next(self._iterator) for _ in range(self.batch_size)]
        spectrograms = [stored_to_tensor(r["spectrogram"], self.bfloat16) for r in rows]
        # This batch's clips side by side, cropped by the same gather as a resident bank.
        batch = SpectrogramBank(
            torch.cat(spectrograms).to(self.device), torch.tensor([s.shape[0] for s in spectrograms])
        )
        view1, view2 = batch.crop_pair(torch.arange(len(rows)), crop_frames, generator, max_distance)
        index = torch.tensor([-1 if r.get("index") is None else r["index"] for r in rows])
        return view1, view2, (index if bool((index >= 0).all()) else None)


__all__ = [
    "MUSIC_ID",
    "PLACEMENTS",
    "BatchPlan",
    "CropPrefetcher",
    "DiskSpectrogramBank",
    "SkipReport",
    "SpectrogramBank",
    "SpectrogramStore",
    "StreamingSpectrograms",
    "audioset_music_ids",
    "choose_placement",
    "compute_spectrograms",
    "crop_generator",
    "epoch_order",
    "gather_crops",
    "load_clips",
    "random_crop_starts",
    "read_segments_csv",
]
