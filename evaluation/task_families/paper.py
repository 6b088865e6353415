"""The four downstream tasks of the Myna paper's Table 1: MagnaTagATune (`mtt`), GTZAN, GiantSteps key and
EmoMusic, each as `(TaskSpec, DatasetDict)` from (a) the original release on disk, (b) the MARBLE layout (per-split
JSONL with `audio_path` and `label`, Yuan et al. 2023) or (c) a Hugging Face Hub id.

They follow JukeMIR's definitions (Castellon et al. 2021, p-lambda/jukemir), as the paper does; split lists and
vocabularies are shipped in `data/` (see `data/README.md` for their sources). `myna_evaluation.tasks.load_task`
dispatches here by name.
"""

import csv
import dataclasses
import glob
import hashlib
import json
import os
import re

import datasets

from myna_common.cli_support import did_you_mean

from ..scoring import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from .base import (
    DATA_DIR,
    DOWNLOAD_HINTS,
    ENCODED_AUDIO,
    KEY_NAMES,
    SPLITS,
    TaskSpec,
    _apply_split_file,
    _build,
    _marble,
    _marble_files,
    _marble_label,
    _missing_error,
    _require_files,
    _sha1_int,
    normalize_key,
    read_lines,
    standardize_targets,
)
from .synthetic import SYNTHETIC_TASKS


GTZAN_GENRES = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]
MTT_CORRUPT_CLIPS = ("35644", "55753", "57881")  # mp3s that do not decode (JukeMIR)
EMO_TARGETS = ["arousal", "valence"]
PAPER_TASKS = ("mtt", "gtzan", "giantsteps", "emomusic")
TASK_ALIASES = {"magnatagatune": "mtt", "gs": "giantsteps", "emo": "emomusic", "emomusic": "emomusic"}
HUB_IDS = {
    "mtt": ["m-a-p/MTT", "confit/magnatagatune"],
    "gtzan": ["m-a-p/GTZAN", "marsyas/gtzan"],
    "giantsteps": ["m-a-p/GS"],
    "emomusic": ["m-a-p/EMO"],
}



def _spec(name: str, source: str) -> TaskSpec:
    tags = tuple(read_lines(os.path.join(DATA_DIR, "mtt_top50_tags.txt")))
    specs = {
        "mtt": (
            MULTI_LABEL,
            tags,
            "myna_tagging",
            "roc_auc_macro",
            (("MTT AUC", "roc_auc_macro"), ("MTT AP", "average_precision_macro")),
        ),
        "gtzan": (SINGLE_LABEL, tuple(GTZAN_GENRES), "myna_accuracy", "accuracy", (("GTZAN", "accuracy"),)),
        "giantsteps": (SINGLE_LABEL, tuple(KEY_NAMES), "myna_key", "weighted_score", (("GS", "weighted_score"),)),
        "emomusic": (
            REGRESSION,
            tuple(EMO_TARGETS),
            "myna_r2",
            "r2_mean",
            (("Emo A", "r2_arousal"), ("Emo V", "r2_valence")),
        ),
    }
    problem_type, labels, metric, primary, columns = specs[name]
    return TaskSpec(name, problem_type, labels, metric, primary, columns, source)


# ---------------------------------------------------------------------------------------------- original layouts


def _mtt_original(root: str, spec: TaskSpec) -> dict[str, list]:
    annotations = os.path.join(root, "annotations_final.csv")
    expected = ["annotations_final.csv (tab separated) and the mp3 folders 0/ ... f/ (from mp3.zip) beside it"]
    if not os.path.isfile(annotations):
        raise _missing_error("mtt", root, expected, ["annotations_final.csv"])
    audio_root = root if os.path.isdir(os.path.join(root, "0")) else os.path.join(root, "mp3")
    with open(annotations, encoding="utf-8") as f:
        records = list(csv.DictReader(f, delimiter="\t"))
    tag_columns = [c for c in records[0] if c not in ("clip_id", "mp3_path")]
    counts = {t: sum(r[t] == "1" for r in records) for t in tag_columns}
    top50 = sorted(tag_columns, key=lambda t: -counts[t])[:50]
    if len(records) > 1000 and set(top50) != set(spec.label_names):
        # Only meaningful on the full release; a partial copy can rank tags differently.
        raise ValueError(
            f"mtt: the 50 most frequent tags of {annotations} differ from the shipped vocabulary "
            f"(data/mtt_top50_tags.txt): {sorted(set(top50) ^ set(spec.label_names))}. Is this the original file?"
        )
    rows = {split: [] for split in SPLITS}
    paths = []
    for record in records:
        clip_id = str(int(record["clip_id"])).zfill(5)
        mp3_path = record["mp3_path"].strip()
        if clip_id in MTT_CORRUPT_CLIPS or not mp3_path:
            continue
        folder = mp3_path.split("/")[0]
        split = "train" if folder in "0123456789ab" else "validation" if folder == "c" else "test"
        path = os.path.join(audio_root, mp3_path)
        paths.append(path)
        label = [float(record[t] == "1") for t in spec.label_names]
        rows[split].append((clip_id, path, label))
    _require_files("mtt", root, paths, expected)
    return rows


def _gtzan_original(root: str, spec: TaskSpec) -> dict[str, list]:
    candidates = [os.path.join(root, d) for d in ("genres", "genres_original", "Data/genres_original", "")]
    genres_dir = next((c for c in candidates if os.path.isdir(os.path.join(c, "blues"))), None)
    expected = [
        "genres/<genre>/<genre>.000NN.wav for the 10 genres (also accepted: genres_original/ or the genre "
        "folders directly under the path)"
    ]
    if genres_dir is None:
        raise _missing_error("gtzan", root, expected)
    rows, paths = {}, []
    for split, list_name in zip(SPLITS, ("train", "valid", "test")):
        rows[split] = []
        for relative in read_lines(os.path.join(DATA_DIR, f"gtzan_{list_name}_filtered.txt")):
            genre = relative.split("/")[0]
            path = os.path.join(genres_dir, relative)
            paths.append(path)
            rows[split].append((os.path.splitext(os.path.basename(relative))[0], path, GTZAN_GENRES.index(genre)))
    _require_files("gtzan", root, paths, expected)
    return rows


def _find_dir(root: str, prefix: str) -> str | None:
    matches = sorted(d for d in glob.glob(os.path.join(root, prefix + "*")) if os.path.isdir(d))
    return matches[0] if matches else None


def _giantsteps_original(root: str, spec: TaskSpec) -> dict[str, list]:
    expected = [
        "giantsteps-key-dataset*/annotations/key/<id>.LOFI.key and audio/<id>.LOFI.mp3 (the 604 test tracks)",
        "giantsteps-mtg-key-dataset*/annotations/annotations.txt, annotations/beatport_metadata.txt and "
        "audio/<id>.LOFI.mp3 (train and valid)",
    ]
    key_dir, mtg_dir = _find_dir(root, "giantsteps-key-dataset"), _find_dir(root, "giantsteps-mtg-key-dataset")
    if key_dir is None or mtg_dir is None:
        raise _missing_error("giantsteps", root, expected)
    rows = {split: [] for split in SPLITS}
    paths = []
    for key_file in sorted(glob.glob(os.path.join(key_dir, "annotations", "key", "*.key"))):
        track_id = os.path.basename(key_file).split(".")[0]
        with open(key_file, encoding="utf-8") as f:
            key = normalize_key(f.read().strip())
        path = os.path.join(key_dir, "audio", f"{track_id}.LOFI.mp3")
        paths.append(path)
        rows["test"].append((track_id, path, KEY_NAMES.index(key)))

    annotations_path = os.path.join(mtg_dir, "annotations", "annotations.txt")
    metadata_path = os.path.join(mtg_dir, "annotations", "beatport_metadata.txt")
    _require_files("giantsteps", root, [annotations_path, metadata_path], expected)
    with open(metadata_path, encoding="utf-8") as f:
        artists = {
            r["ID"].strip(): [a.strip() for a in r["ARTIST"].strip().split(",")]
            for r in csv.DictReader(f, delimiter="\t")
        }
    # JukeMIR's artist-disjoint split: SHA-1 of each lower-cased artist modulo 116, residues >= 100 valid;
    # collaborators of valid artists become valid (two passes reach collaborators of collaborators).
    artist_split = {
        a: ("validation" if _sha1_int(a.lower()) % 116 >= 100 else "train")
        for names in artists.values()
        for a in names
    }
    for _ in range(2):
        for names in artists.values():
            if any(artist_split[a] == "validation" for a in names):
                artist_split.update({a: "validation" for a in names})
    with open(annotations_path, encoding="utf-8") as f:
        for record in csv.DictReader(f, delimiter="\t"):
            record = {k.strip(): (v or "").strip() for k, v in record.items()}
            manual_key = record["MANUAL KEY"]
            # Single-key tracks annotated with confidence 2 only (Korzeniowski & Widmer 2018).
            if "/" in manual_key or record["C"] != "2" or record["ID"] not in artists:
                continue
            split = "validation" if any(artist_split[a] == "validation" for a in artists[record["ID"]]) else "train"
            path = os.path.join(mtg_dir, "audio", f"{record['ID']}.LOFI.mp3")
            paths.append(path)
            rows[split].append((record["ID"], path, KEY_NAMES.index(normalize_key(manual_key))))
    _require_files("giantsteps", root, paths, expected)
    return rows


def _clean_artist(artist: str) -> str:
    kept = "".join(c for c in artist.lower() if ord(c) < 128 and (c.isalpha() or c.isspace()))
    return " ".join(kept.split())


def _emomusic_original(root: str, spec: TaskSpec) -> dict[str, list]:
    expected = [
        "songs_info.csv, static_annotations.csv and clips_45seconds/<song_id>.mp3 (from annotations.zip "
        "and clips_45sec_mp3.zip)"
    ]
    info_path = _first_file(root, "songs_info.csv")
    static_path = _first_file(root, "static_annotations.csv")
    if info_path is None or static_path is None:
        raise _missing_error(
            "emomusic",
            root,
            expected,
            [n for n, p in (("songs_info.csv", info_path), ("static_annotations.csv", static_path)) if p is None],
        )
    clips_dir = os.path.join(root, "clips_45seconds")
    with open(info_path, encoding="utf-8") as f:
        info = {
            str(int(r["song_id"])): r
            for r in ({k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f))
        }
    with open(static_path, encoding="utf-8") as f:
        static = {
            str(int(r["song_id"])): r
            for r in ({k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f))
        }
    rows = {split: [] for split in SPLITS}
    paths = []
    for song_id, record in info.items():
        if song_id not in static:
            continue  # songs_info lists songs whose annotations were withdrawn (duplicates); 744 remain
        if record["Mediaeval 2013 set"] == "evaluation":
            split = "test"
        else:
            # JukeMIR's artist-disjoint 80/20 split of the development songs.
            split = "validation" if _sha1_int(_clean_artist(record["Artist"])) % 10 >= 8 else "train"
        path = os.path.join(clips_dir, f"{song_id}.mp3")
        paths.append(path)
        targets = [float(static[song_id]["mean_arousal"]), float(static[song_id]["mean_valence"])]
        rows[split].append((song_id, path, targets))
    _require_files("emomusic", root, paths, expected)
    return rows


def _first_file(root: str, name: str) -> str | None:
    matches = sorted(glob.glob(os.path.join(root, "**", name), recursive=True))
    return matches[0] if matches else None


# ---------------------------------------------------------------------------------------------- Hub


def hub_revision_signature(loaded: datasets.DatasetDict, revision: str | None) -> str:
    """Which snapshot of a Hub dataset was loaded: the requested revision and a hash of the splits' fingerprints.

    `datasets` derives each split's fingerprint from its cache folder, which is named by the repository's commit,
    so a new revision changes it even when the revision was not pinned (and the track ids are row numbers).
    """
    fingerprints = sorted(f"{name}:{getattr(split, '_fingerprint', '')}" for name, split in loaded.items())
    digest = hashlib.sha1(json.dumps(fingerprints).encode()).hexdigest()[:12]
    return f"{revision or 'main'}:{digest}"


def _hub(hub_id: str, spec: TaskSpec, revision: str | None = None) -> tuple[datasets.DatasetDict, str]:
    """A Hub dataset mapped to the task's columns, and its `hub_revision_signature`. Needs the network (or a
    populated `datasets` cache)."""
    try:
        loaded = datasets.load_dataset(hub_id, revision=revision)
    except Exception as error:  # offline: ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ...
        raise ConnectionError(
            f"{spec.name}: could not load the Hub dataset {hub_id!r} ({type(error).__name__}: {error}). The Hub is "
            f"unreachable or HF_HUB_OFFLINE=1 is set: download the data once and pass its folder instead "
            f"(original layout or MARBLE JSONL). Sources: {DOWNLOAD_HINTS[spec.name]}."
        ) from None
    signature = hub_revision_signature(loaded, revision)
    audio_column = next(
        (c for c, f in loaded[next(iter(loaded))].features.items() if isinstance(f, datasets.Audio)), None
    )
    label_column = next(
        (c for c in ("label", "genre", "key", "tags", "labels") if c in loaded[next(iter(loaded))].column_names), None
    )
    if audio_column is None or label_column is None:
        raise ValueError(
            f"{hub_id}: found no audio column or no label column among {loaded[next(iter(loaded))].column_names}."
        )
    rows = {split: [] for split in SPLITS}
    split_names = {
        "train": "train",
        "validation": "validation",
        "valid": "validation",
        "val": "validation",
        "test": "test",
    }
    if spec.name == "gtzan" and set(loaded) == {"train"}:
        # marsyas/gtzan ships all 1,000 tracks as one split: apply the fault-filtered lists by file name.
        membership = {}
        for split, list_name in zip(SPLITS, ("train", "valid", "test")):
            for relative in read_lines(os.path.join(DATA_DIR, f"gtzan_{list_name}_filtered.txt")):
                membership[os.path.basename(relative)] = split
        names = loaded["train"].features[label_column].names
        for example in loaded["train"].cast_column(audio_column, datasets.Audio(decode=False)):
            base = os.path.basename(example[audio_column]["path"] or "")
            if base in membership:
                rows[membership[base]].append(
                    (
                        os.path.splitext(base)[0],
                        example[audio_column],
                        spec.label_names.index(names[example[label_column]]),
                    )
                )
        return _build(spec, rows, ENCODED_AUDIO), signature
    for hub_split, dataset in loaded.items():
        split = split_names.get(hub_split)
        if split is None:
            continue
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
        for index, example in enumerate(dataset):
            label = example[label_column]
            feature = dataset.features[label_column]
            if isinstance(feature, datasets.ClassLabel):
                label = feature.names[label]
            rows[split].append((str(index), example[audio_column], _marble_label(spec, label, f"{hub_id}[{index}]")))
    return _build(spec, rows, ENCODED_AUDIO), signature


# ---------------------------------------------------------------------------------------------- entry point


ORIGINAL_LOADERS = {
    "mtt": _mtt_original,
    "gtzan": _gtzan_original,
    "giantsteps": _giantsteps_original,
    "emomusic": _emomusic_original,
}


def load_paper_task(name: str, path: str, layout: str = "auto", split_file: str | None = None):
    """One of the paper's four tasks from `path`: a folder in the original or the MARBLE layout, or a Hub id.

    Args:
        name: `mtt`, `gtzan`, `giantsteps` or `emomusic` (aliases: `magnatagatune`, `gs`, `emo`).
        path: the dataset folder, or a Hub id such as `m-a-p/GTZAN`, optionally pinned as `m-a-p/GTZAN@<revision>`.
        layout: `auto` (MARBLE if the folder holds `*.train.jsonl`, else original), `original`, `marble` or `hub`.
        split_file: a JSON file `{"train": [ids], "valid": [ids], "test": [ids]}` that replaces the split.

    Returns:
        `(TaskSpec, DatasetDict)`.
    """
    name = TASK_ALIASES.get(name, name)
    if name not in ORIGINAL_LOADERS:
        known = list(PAPER_TASKS) + list(SYNTHETIC_TASKS)
        raise ValueError(f"unknown task {name!r}.{did_you_mean(name, known)} Choose one of {known}.")
    if layout not in ("auto", "original", "marble", "hub"):
        raise ValueError(f"layout must be auto, original, marble or hub, got {layout!r}.")
    if layout == "hub" or (
        layout == "auto" and not os.path.exists(path) and re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", path)
    ):
        hub_id, _, revision = path.partition("@")
        spec = _spec(name, f"hub:{hub_id}")
        dataset, signature = _hub(hub_id, spec, revision or None)
        # The source is part of the embedding cache key: another revision of the data is another entry.
        return dataclasses.replace(spec, source=f"hub:{hub_id}@{signature}"), dataset
    if not os.path.isdir(path):
        raise _missing_error(name, path, [f"a folder with the {name} data, or a Hub id among {HUB_IDS[name]}"])
    marble_files = _marble_files(path)
    if layout == "marble" or (layout == "auto" and marble_files):
        spec = _spec(name, f"marble:{os.path.abspath(path)}")
        rows = _marble(path, spec, marble_files or {})
    else:
        spec = _spec(name, f"original:{os.path.abspath(path)}")
        rows = ORIGINAL_LOADERS[name](path, spec)
    if split_file is not None:
        rows = _apply_split_file({r[0]: r for split_rows in rows.values() for r in split_rows}, split_file)
    if spec.problem_type == REGRESSION:
        rows, _, _ = standardize_targets(rows)
    return spec, _build(spec, rows)


__all__ = [
    "EMO_TARGETS",
    "GTZAN_GENRES",
    "HUB_IDS",
    "ORIGINAL_LOADERS",
    "PAPER_TASKS",
    "TASK_ALIASES",
    "hub_revision_signature",
    "load_paper_task",
]
