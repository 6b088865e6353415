"""Where pre-training clips come from (SPEC §4, §6), each source a `datasets` dataset with an `audio` column (a dict
`load_audio` reads) and an `id`: the generated corpus (`myna_common.synthetic`), the default; any local folder of
audio files, recursive (`AUDIO_EXTENSIONS`), whole tracks cut into clips; the AudioSet music subset, from the Hub
dataset `agkphysics/AudioSet` or from the original segment CSVs plus a folder of audio named by YouTube id, keeping
the segments labelled Music (/m/04rlf) or one of its descendants in the AudioSet ontology
(`data/audioset_music_ids.txt`). `load_clips` opens the source the data arguments name; `SkipReport` counts the
clips left out, here and at every later stage.
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from modeling_myna.audio_utils import AUDIO_EXTENSIONS


MUSIC_IDS_FILE = Path(__file__).parent / "data" / "audioset_music_ids.txt"
MUSIC_ID = "/m/04rlf"


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


def synthetic_clips(num_clips: int, seed: int, duration: float):
    """The generated corpus: `num_clips` labelled clips, each depending only on `(seed, i)`."""
    from myna_common.synthetic import synthetic_music_dataset

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


__all__ = [
    "MUSIC_ID",
    "SkipReport",
    "audioset_csv_clips",
    "audioset_hub_clips",
    "audioset_music_ids",
    "folder_clips",
    "load_clips",
    "read_segments_csv",
    "synthetic_clips",
]
