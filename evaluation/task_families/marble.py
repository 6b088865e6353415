"""MARBLE's clip-level tasks beyond the paper's four: MTG-Jamendo, NSynth and VocalSet (Yuan et al. 2023).

Task names and what they score (metrics as MARBLE reports them):

| task | labels | metric |
| --- | --- | --- |
| `mtg-genre`, `-instrument`, `-moodtheme`, `-top50tags` | 87 / 40 / 56 / 50 tags, split 0 | macro ROC-AUC, AP |
| `nsynth-instrument` | 11 instrument families | accuracy |
| `nsynth-pitch` | 128 MIDI pitches | accuracy |
| `vocalset-singer` | 20 singers | accuracy |
| `vocalset-technique` | 10 techniques | accuracy |

Each loads from the original release (the layouts below) or from MARBLE's per-split JSONL files (`audio_path`,
`label`), the layout `myna_evaluation.tasks` reads for the paper's tasks. Vocabularies are shipped in `data/` with
their sources (`data/README.md`); the MTG-Jamendo split lists are read from the release itself (its
`data/splits/split-0/`), NSynth's splits are its three archives, and VocalSet's splits (which MARBLE draws at
random) are derived by documented rules, see [`vocalset_split`].

MARBLE's probe protocol differs from JukeMIR's (the paper's): one MLP (hidden 512, dropout 0.2, batch 64, Adam,
L2 0) searched over five learning rates, and non-overlapping windows for training as for evaluation.
[`marble_probe_grid`] gives that grid for `probe.py --protocol marble`; the default stays JukeMIR's 216 probes.
"""

import glob
import json
import os

from ..scoring import MULTI_LABEL, SINGLE_LABEL
from .base import (
    DATA_DIR,
    SPLITS,
    DatasetLayoutError,
    TaskSpec,
    _build,
    _marble,
    _marble_files,
    _sha1_int,
    read_lines,
)


MTG_SUBSETS = {
    "mtg-genre": "genre",
    "mtg-instrument": "instrument",
    "mtg-moodtheme": "moodtheme",
    "mtg-top50tags": "top50tags",
}
MTG_SPLIT = 0  # the official split MARBLE reports on
MARBLE_TASKS = (*MTG_SUBSETS, "nsynth-instrument", "nsynth-pitch", "vocalset-singer", "vocalset-technique")
MARBLE_ALIASES = {
    "mtg-mood": "mtg-moodtheme",
    "mtg-top50": "mtg-top50tags",
    "nsynth-family": "nsynth-instrument",
    "nsynthi": "nsynth-instrument",
    "nsynthp": "nsynth-pitch",
    "vocalset-tech": "vocalset-technique",
    "vocalsett": "vocalset-technique",
    "vocalsets": "vocalset-singer",
}
# Table headers of each task (the order of MARBLE's tables: MTG, NSynth, VocalSet).
MARBLE_HEADERS = {
    "mtg-genre": "MTG-G",
    "mtg-instrument": "MTG-I",
    "mtg-moodtheme": "MTG-M",
    "mtg-top50tags": "MTG-50",
    "nsynth-instrument": "NSynth-I",
    "nsynth-pitch": "NSynth-P",
    "vocalset-technique": "VocalSet-T",
    "vocalset-singer": "VocalSet-S",
}
NSYNTH_PITCHES = tuple(str(p) for p in range(128))  # MIDI numbers; MARBLE's probe has 128 outputs
# VocalSet recordings MARBLE drops as duplicates or absent from the dataset paper's Table 2 (its preprocess.py).
VOCALSET_DROPPED = (
    "vibrato/f2_scales_vibrato_a(1).wav",
    "vibrato/caro_vibrato.wav",
    "vibrato/dona_vibrato.wav",
    "vibrato/row_vibrato.wav",
    "vibrato/slow_vibrato_arps.wav",
)
# The 17 technique folders of VocalSet that MARBLE keeps for singer identification.
VOCALSET_ALL_TECHNIQUES = (
    "belt", "breathy", "inhaled", "lip_trill", "spoken", "straight", "trill", "trillo", "vibrato", "vocal_fry",
    "fast_forte", "fast_piano", "forte", "messa", "pp", "slow_forte", "slow_piano",
)  # fmt: skip
DOWNLOAD_HINTS = {
    "mtg": "github.com/MTG/mtg-jamendo-dataset (clone it for data/splits/, then download the audio with its "
    "scripts/download/download.py into <folder>/audio or <folder>/audio-low), or MARBLE's JSONL copy",
    "nsynth": "the NSynth release (nsynth-train.jsonwav.tar.gz, nsynth-valid..., nsynth-test..., "
    "https://magenta.tensorflow.org/datasets/nsynth), or MARBLE's JSONL copy",
    "vocalset": "VocalSet (VocalSet1-2.zip, https://zenodo.org/record/1442513), or MARBLE's copy "
    "(JSONL, or its preprocessed audio/ with train_s.txt ... test_t.txt)",
}


def _family(name: str) -> str:
    return name.split("-")[0]


def _layout_error(name: str, path: str, expected: list[str], missing: list[str] | None = None):
    lines = [f"{name}: {path} is not a complete copy of the dataset in a layout this loader reads."]
    lines += ["Expected one of:"] + [f"  - {e}" for e in expected]
    if missing:
        lines.append(f"Missing ({len(missing)}): " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if os.path.isdir(path):
        found = sorted(os.listdir(path))
        lines.append(f"Found in {path}: " + (", ".join(found[:15]) + (" ..." if len(found) > 15 else "") or "nothing"))
    lines.append(f"Get it from {DOWNLOAD_HINTS[_family(name)]}.")
    return DatasetLayoutError("\n".join(lines))


def marble_spec(name: str, source: str = "") -> TaskSpec:
    """The spec of a MARBLE task; columns are `(header, metric key)` pairs for the report table."""
    header = MARBLE_HEADERS[name]
    if name in MTG_SUBSETS:
        labels = tuple(read_lines(os.path.join(DATA_DIR, f"mtg_{MTG_SUBSETS[name]}_tags.txt")))
        columns = ((f"{header} AUC", "roc_auc_macro"), (f"{header} AP", "average_precision_macro"))
        return TaskSpec(name, MULTI_LABEL, labels, "myna_tagging", "roc_auc_macro", columns, source)
    if name == "nsynth-instrument":
        labels = tuple(read_lines(os.path.join(DATA_DIR, "nsynth_instrument_families.txt")))
    elif name == "nsynth-pitch":
        labels = NSYNTH_PITCHES
    elif name == "vocalset-singer":
        labels = tuple(read_lines(os.path.join(DATA_DIR, "vocalset_singers.txt")))
    else:
        labels = tuple(read_lines(os.path.join(DATA_DIR, "vocalset_techniques.txt")))
    return TaskSpec(name, SINGLE_LABEL, labels, "myna_accuracy", "accuracy", ((header, "accuracy"),), source)


# ---------------------------------------------------------------------------------------------- MTG-Jamendo


def _mtg_audio_dir(root: str) -> tuple[str, bool] | None:
    """Where the mp3 folders `00/` ... `99/` are, and whether they hold the low-quality `*.low.mp3` files."""
    for folder, low in (("audio", False), ("mp3", False), ("", False), ("audio-low", True), ("low", True)):
        directory = os.path.join(root, folder)
        if os.path.isdir(os.path.join(directory, "00")):
            return directory, low or bool(glob.glob(os.path.join(directory, "00", "*.low.*")))
    return None


def _mtg_original(name: str, root: str, spec: TaskSpec) -> dict[str, list]:
    subset = MTG_SUBSETS[name]
    split_dir = os.path.join(root, "data", "splits", f"split-{MTG_SPLIT}")
    files = {s: os.path.join(split_dir, f"autotagging_{subset}-{s}.tsv") for s in SPLITS}
    expected = [
        f"data/splits/split-{MTG_SPLIT}/autotagging_{subset}-{{train,validation,test}}.tsv (a clone of "
        "MTG/mtg-jamendo-dataset) and the audio folders 00/ ... 99/ under audio/ (or audio-low/ with *.low.mp3)"
    ]
    missing = [os.path.relpath(p, root) for p in files.values() if not os.path.isfile(p)]
    audio = _mtg_audio_dir(root)
    if missing or audio is None:
        raise _layout_error(name, root, expected, missing + ([] if audio else ["audio/00/ ... audio/99/"]))
    audio_dir, low = audio
    vocabulary = set(spec.label_names)
    rows = {}
    for split, path in files.items():
        rows[split] = []
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        header = lines[0].split("\t")
        if header[:4] != ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH"]:
            raise ValueError(
                f"{path}: expected the header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS, got {header}."
            )
        for line_number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            fields = line.split("\t")
            tags = [t.strip() for t in fields[5:] if t.strip()]
            unknown = [t for t in tags if t not in vocabulary]
            if unknown:
                raise ValueError(
                    f"{path}:{line_number}: tags {unknown} are not in the {name} vocabulary "
                    f"(data/mtg_{subset}_tags.txt); is this split {MTG_SPLIT} of the official release?"
                )
            relative = fields[3].replace(".mp3", ".low.mp3") if low else fields[3]
            rows[split].append(
                (fields[0], os.path.join(audio_dir, relative), [float(t in tags) for t in spec.label_names])
            )
    return rows


# ---------------------------------------------------------------------------------------------- NSynth


def _nsynth_original(name: str, root: str, spec: TaskSpec) -> dict[str, list]:
    expected = ["nsynth-train/, nsynth-valid/ and nsynth-test/, each with examples.json and audio/<note_str>.wav"]
    folders = {s: os.path.join(root, f"nsynth-{n}") for s, n in zip(SPLITS, ("train", "valid", "test"))}
    missing = [os.path.relpath(os.path.join(f, "examples.json"), root) for f in folders.values()]
    missing = [m for m in missing if not os.path.isfile(os.path.join(root, m))]
    if missing:
        raise _layout_error(name, root, expected, missing)
    rows = {}
    for split, folder in folders.items():
        with open(os.path.join(folder, "examples.json"), encoding="utf-8") as f:
            examples = json.load(f)
        rows[split] = []
        for note, record in sorted(examples.items()):
            field = "instrument_family" if name == "nsynth-instrument" else "pitch"
            if field not in record:
                raise ValueError(f"{folder}/examples.json: note {note!r} has no {field!r}, only {sorted(record)}.")
            path = os.path.join(folder, "audio", f"{note}.wav")
            rows[split].append((note, path, int(record[field])))
    return rows


# ---------------------------------------------------------------------------------------------- VocalSet


def vocalset_split(name: str, relative: str, singer: str) -> str:
    """The split of one VocalSet recording (`relative`: its path from the singer folder), by rule.

    MARBLE draws its VocalSet splits at random per run of its preprocessing (scikit-learn's `GroupShuffleSplit`
    over recordings); those lists are not published, so this loader derives them deterministically in the same
    proportions. Technique: test = MARBLE's five held-out singers (`data/vocalset_technique_test_singers.txt`),
    the other singers' recordings 60 / 40 train / valid by SHA-1 of the path. Singer: recordings 20 % test, then
    of the rest 40 % valid (so 48 / 32 / 20 overall), by SHA-1 of the path. Whole recordings are the unit, so no
    recording spans two splits.
    """
    residue = _sha1_int(relative) % 100
    if name == "vocalset-technique":
        if singer in read_lines(os.path.join(DATA_DIR, "vocalset_technique_test_singers.txt")):
            return "test"
        return "validation" if residue < 40 else "train"
    if residue < 20:
        return "test"
    return "validation" if residue < 52 else "train"


def _vocalset_original(name: str, root: str, spec: TaskSpec) -> dict[str, list]:
    singers = set(read_lines(os.path.join(DATA_DIR, "vocalset_singers.txt")))
    kept = set(spec.label_names) if name == "vocalset-technique" else set(VOCALSET_ALL_TECHNIQUES)
    rows = {split: [] for split in SPLITS}
    for path in sorted(glob.glob(os.path.join(root, "**", "*.wav"), recursive=True)):
        parts = os.path.relpath(path, root).split(os.sep)
        technique = parts[-2] if len(parts) > 1 else ""
        singer = next((p for p in parts[:-1] if p in singers), None)
        relative = f"{technique}/{parts[-1]}"
        if singer is None or technique not in kept or relative in VOCALSET_DROPPED:
            continue
        label = spec.label_names.index(technique if name == "vocalset-technique" else singer)
        track_id = "/".join(parts[parts.index(singer) :])
        rows[vocalset_split(name, track_id, singer)].append((track_id, path, label))
    if not any(rows.values()):
        raise _layout_error(
            name,
            root,
            [
                "VocalSet's FULL/<singer>/<context>/<technique>/<file>.wav (singers f1-f9, m1-m11)",
                "MARBLE's preprocessed audio/<technique>/<file>.wav with train_s.txt, valid_s.txt, test_s.txt "
                "(singer) or train_t.txt, valid_t.txt, test_t.txt (technique)",
                "MARBLE JSONL: <name>.train.jsonl, <name>.val.jsonl, <name>.test.jsonl",
            ],
        )
    return rows


def _vocalset_marble_lists(name: str, root: str, spec: TaskSpec) -> dict[str, list] | None:
    """MARBLE v1's preprocessed layout: `{train,valid,test}_{s,t}.txt` lines `technique/<singer>_..._NN.wav`."""
    suffix = "t" if name == "vocalset-technique" else "s"
    lists = {s: os.path.join(root, f"{n}_{suffix}.txt") for s, n in zip(SPLITS, ("train", "valid", "test"))}
    if not all(os.path.isfile(p) for p in lists.values()):
        return None
    audio_dir = os.path.join(root, "audio") if os.path.isdir(os.path.join(root, "audio")) else root
    rows = {}
    for split, list_path in lists.items():
        rows[split] = []
        for line_number, relative in enumerate(read_lines(list_path), 1):
            technique, file_name = relative.split("/")[-2:]
            value = technique if name == "vocalset-technique" else file_name.split("_")[0]
            if value not in spec.label_names:
                raise ValueError(f"{list_path}:{line_number}: {value!r} is not one of {list(spec.label_names)}.")
            rows[split].append((relative, os.path.join(audio_dir, relative), spec.label_names.index(value)))
    return rows


# ---------------------------------------------------------------------------------------------- entry point


def load_marble_task(name: str, path: str, layout: str = "auto") -> tuple[TaskSpec, dict[str, list]]:
    """A MARBLE task's spec and rows `{split: [(id, audio path, label), ...]}` from `path`.

    `layout`: `auto` (MARBLE JSONL when the folder holds `*.train.jsonl`, else the original release), `marble` or
    `original`. Audio files are not opened here: missing or corrupt ones are skipped and counted at extraction.
    """
    name = MARBLE_ALIASES.get(name, name)
    if name not in MARBLE_TASKS:
        raise ValueError(f"unknown MARBLE task {name!r}: choose one of {list(MARBLE_TASKS)}.")
    if not os.path.isdir(path):
        raise _layout_error(name, path, [f"a folder with the {_family(name)} data"])
    marble_files = _marble_files(path)
    if layout == "marble" or (layout == "auto" and marble_files):
        spec = marble_spec(name, f"marble:{os.path.abspath(path)}")
        return spec, _marble(path, spec, marble_files or {}, require_audio=False)
    spec = marble_spec(name, f"original:{os.path.abspath(path)}")
    if name in MTG_SUBSETS:
        return spec, _mtg_original(name, path, spec)
    if name.startswith("nsynth"):
        return spec, _nsynth_original(name, path, spec)
    rows = _vocalset_marble_lists(name, path, spec)
    if rows is not None:
        spec = marble_spec(name, f"marble-lists:{os.path.abspath(path)}")
        return spec, rows
    return spec, _vocalset_original(name, path, spec)


def load_marble(name: str, path: str, layout: str = "auto"):
    """[`load_marble_task`] as `(TaskSpec, DatasetDict)`, the form every task loader returns."""
    spec, rows = load_marble_task(name, path, layout)
    return spec, _build(spec, rows)


def marble_probe_grid(fast: bool = False):
    """MARBLE's probe search on this project's probe: MLP 512, dropout 0.2, batch 64, L2 0, no standardisation,
    learning rate 1e-2, 5e-3, 1e-3, 5e-4 or 1e-4 (MARBLE's `hp_search` space; `fast`: 1e-3 and 1e-4).

    MARBLE also lowers the learning rate on plateaus (patience 3); this grid keeps the fixed rate of JukeMIR's
    probes, and dropout acts on the input and the hidden layer as in JukeMIR's MLP.
    """
    from ..grid import HIDDEN_WIDTH, ProbeConfig

    rates = (1e-3, 1e-4) if fast else (1e-2, 5e-3, 1e-3, 5e-4, 1e-4)
    return [ProbeConfig(False, HIDDEN_WIDTH, 64, rate, 0.2, 0.0) for rate in rates]


__all__ = [
    "MARBLE_ALIASES",
    "MARBLE_HEADERS",
    "MARBLE_TASKS",
    "MTG_SUBSETS",
    "load_marble",
    "load_marble_task",
    "marble_probe_grid",
    "marble_spec",
    "vocalset_split",
]
