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


def folder_clips(data_dir: str):
    """Every audio file under `data_dir` (recursive, `AUDIO_EXTENSIONS`), as a dataset of paths."""
    import datasets

    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"data_dir {data_dir} is not a folder: pass a folder of audio files.")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not paths:
        raise ValueError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {data_dir}: check the path or convert the files."
        )
    return datasets.Dataset.from_dict(
        {"id": [str(p.relative_to(root)) for p in paths], "audio": [{"path": str(p)} for p in paths]}
    )


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
    ids, audio = [], []
    for row in read_segments_csv(segments_csv):
        if not music.keys() & set(row["labels"]):
            continue
        path = files.get(row["ytid"])
        if path is None:
            skipped.add("missing file", row["ytid"])
            continue
        ids.append(row["ytid"])
        audio.append({"path": str(path)})
    if not ids:
        raise ValueError(f"no Music segment of {segments_csv} has an audio file under {data_dir}.")
    return datasets.Dataset.from_dict({"id": ids, "audio": audio})


def audioset_hub_clips(name: str, config: str, split: str, streaming: bool):
    """The Music subset of the Hub dataset `name` (columns video_id, audio, labels), audio left undecoded."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as error:  # offline, unknown id, missing config: all end here
        raise RuntimeError(
            f"could not load the Hub dataset {name!r} (config {config!r}, split {split!r}): {error}. The Hub must be "
            "reachable (HF_HUB_OFFLINE unset), or download it once and use --dataset audioset_csv or folder."
        ) from error
    music = set(audioset_music_ids())
    dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
    dataset = dataset.filter(lambda labels: bool(music.intersection(labels)), input_columns="labels")
    return dataset.rename_column("video_id", "id").select_columns(["id", "audio"])


def load_clips(data_args, seed: int, skipped: SkipReport):
    """The clip dataset `data_args` names, with columns `id` and `audio` (an `IterableDataset` when streaming)."""
    import datasets

    if data_args.dataset == "synthetic":
        dataset = synthetic_clips(data_args.num_clips, seed, data_args.clip_seconds).select_columns(["id", "audio"])
    elif data_args.dataset == "folder":
        if not data_args.data_dir:
            raise ValueError("--dataset folder needs --data_dir.")
        dataset = folder_clips(data_args.data_dir)
    elif data_args.dataset == "audioset_csv":
        if not (data_args.segments_csv and data_args.data_dir):
            raise ValueError("--dataset audioset_csv needs --segments_csv and --data_dir (audio named by YouTube id).")
        dataset = audioset_csv_clips(data_args.segments_csv, data_args.data_dir, skipped)
    elif data_args.dataset == "audioset":
        dataset = audioset_hub_clips(
            data_args.dataset_name, data_args.dataset_config, data_args.dataset_split, data_args.streaming
        )
    else:
        raise ValueError(
            f"dataset={data_args.dataset!r}: choose 'synthetic', 'folder', 'audioset' or 'audioset_csv'."
        )
    if data_args.streaming and not isinstance(dataset, datasets.IterableDataset):
        dataset = dataset.to_iterable_dataset()
    if data_args.max_clips is not None:
        dataset = dataset.take(data_args.max_clips) if data_args.streaming else dataset.select(
            range(min(data_args.max_clips, len(dataset)))
        )
    return dataset


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
    """A batched `Dataset.map` function: `{id, audio}` rows to `{id, spectrogram, num_frames, skip_reason}`.

    With `single_threaded_workers`, a call in any process other than this one (a `Dataset.map(num_proc=...)`
    worker) first sets torch to one thread: one worker per core, no oversubscription, and no OpenMP pool used
    across the fork.
    """
    empty = np.zeros((0, feature_extractor.feature_size), dtype=np.float32 if storage_dtype == "float32" else np.uint16)
    parent_pid = os.getpid()

    def compute(batch):
        if single_threaded_workers and os.getpid() != parent_pid and torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        out = {"id": [], "spectrogram": [], "num_frames": [], "skip_reason": []}
        good, good_ids = [], []
        for clip_id, audio in zip(batch["id"], batch["audio"]):
            reason = None
            try:
                waveform, _ = load_audio(audio, sampling_rate=feature_extractor.sampling_rate)
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
            else:
                out["id"].append(clip_id)
                out["spectrogram"].append(empty)
                out["num_frames"].append(0)
                out["skip_reason"].append(reason)
        if good:
            features = feature_extractor(
                good, sampling_rate=feature_extractor.sampling_rate, chunk=False, return_tensors="pt", device=device
            )
            for clip_id, spectrogram, num_frames in zip(good_ids, features["input_values"], features["num_frames"]):
                out["id"].append(clip_id)
                out["spectrogram"].append(encode_spectrogram(spectrogram[:, : int(num_frames)], storage_dtype))
                out["num_frames"].append(int(num_frames))
                out["skip_reason"].append("")
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
    function = make_spectrogram_function(
        feature_extractor, min_frames, storage_dtype, device, single_threaded_workers=num_proc > 1
    )
    features = spectrogram_features(feature_extractor.feature_size, storage_dtype)
    if isinstance(clips, datasets.IterableDataset):
        return clips.map(
            function, batched=True, batch_size=batch_size, remove_columns=["id", "audio"], features=features
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


def gather_crops(bank: torch.Tensor, starts: torch.Tensor, crop_frames: int) -> torch.Tensor:
    """`(F, total_frames)` bank and `(B,)` absolute start columns to `(B, F, crop_frames)` crops, one gather."""
    columns = starts[:, None] + torch.arange(crop_frames, device=bank.device)  # (B, crop)
    return bank[:, columns].permute(1, 0, 2)  # (F, B, crop) -> (B, F, crop)


class SpectrogramBank:
    """Every cached spectrogram side by side in one `(num_mel_bins, total_frames)` tensor on the device.

    Clip `i` occupies columns `offsets[i] : offsets[i] + num_frames[i]`; `crop_pair` cuts two random crops of a
    batch of clips with a single advanced-indexing gather, no Python loop over the batch and no DataLoader.
    """

    def __init__(self, bank: torch.Tensor, num_frames: torch.Tensor):
        self.bank = bank
        self.num_frames = num_frames.to(bank.device, torch.long)
        self.offsets = torch.cumsum(self.num_frames, 0) - self.num_frames

    def __len__(self) -> int:
        return self.num_frames.shape[0]

    @property
    def device(self) -> torch.device:
        return self.bank.device

    @classmethod
    def from_dataset(cls, dataset, device: str | torch.device = "cpu", chunk_size: int = 256) -> "SpectrogramBank":
        num_frames = torch.tensor(dataset["num_frames"], dtype=torch.long)
        feature = dataset.features["spectrogram"]
        bfloat16 = feature.dtype == "uint16"  # how compute_spectrograms stores bfloat16
        bank = torch.empty(
            (feature.shape[1], int(num_frames.sum())), dtype=torch.bfloat16 if bfloat16 else torch.float32
        )
        column = 0
        numpy_view = dataset.with_format("numpy")
        for start in range(0, len(dataset), chunk_size):  # load-time copy, not the hot path
            for array in numpy_view[start : start + chunk_size]["spectrogram"]:
                spectrogram = decode_spectrograms(array, bfloat16)
                bank[:, column : column + spectrogram.shape[1]] = spectrogram
                column += spectrogram.shape[1]
        return cls(bank.to(device), num_frames)

    def crops(self, starts: torch.Tensor, crop_frames: int) -> torch.Tensor:
        """`(B, F, crop_frames)` crops at absolute bank columns `starts` `(B,)` (a clip's offset + its start)."""
        return gather_crops(self.bank, starts, crop_frames)

    def crop_pair(
        self,
        index: torch.Tensor,
        crop_frames: int,
        generator: torch.Generator,
        max_distance: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two `(B, F, crop_frames)` views of the clips `index` `(B,)`."""
        index = index.to(self.device)
        first, second = random_crop_starts(self.num_frames[index], crop_frames, generator, max_distance)
        offsets = self.offsets[index]
        return gather_crops(self.bank, offsets + first, crop_frames), gather_crops(self.bank, offsets + second, crop_frames)


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
        if self._iterator is None:
            self._iterator = self._rows()
        rows = [next(self._iterator) for _ in range(self.batch_size)]
        spectrograms = [decode_spectrograms(r["spectrogram"], self.bfloat16) for r in rows]
        # This batch's clips side by side, cropped by the same gather as a resident bank.
        batch = SpectrogramBank(
            torch.cat(spectrograms, dim=1).to(self.device), torch.tensor([s.shape[1] for s in spectrograms])
        )
        return batch.crop_pair(torch.arange(len(rows)), crop_frames, generator, max_distance)


__all__ = [
    "MUSIC_ID",
    "SkipReport",
    "SpectrogramBank",
    "StreamingSpectrograms",
    "audioset_music_ids",
    "compute_spectrograms",
    "gather_crops",
    "load_clips",
    "random_crop_starts",
    "read_segments_csv",
]
