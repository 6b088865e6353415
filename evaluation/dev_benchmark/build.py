"""Builds the real-audio development benchmark in one resumable command (`benchmarks/build_dev_benchmark.py`).

    <output>/
      manifest.json          settings, per-stage state, per-package hours, counts of what was dropped and why
      pretrain/<package>/    recorded game soundtracks, 16 kHz mono FLAC (`--dataset folder --data_dir` this)
      pretrain_files.csv     every music file found: kept or why not, its length, the loop cut
      tasks/audio/           rendered clips (16 kHz mono FLAC)
      tasks/clips.csv        every clip with all its labels and its split (by work)
      tasks/dev-*.yaml       the task files: custom:<output>/tasks/dev-key.yaml, ...
      scratch/               downloaded .debs, unpacked packages, analysis and parsed scores (cache)

The command line is `benchmarks/build_dev_benchmark.py` (it parses `BuildArguments` and calls `run`). Each stage
records itself in the manifest when it completes and is skipped on the next run; inside a stage every
output file is written to a temporary name and renamed, and files already there are kept, so a killed build
continues where it stopped. Items that cannot be read (a package apt does not know, an undecodable file, a score
music21 cannot parse, a failed render) are skipped and counted, never fatal.
"""

import csv
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from myna_common.atomic import atomic_path, write_text

from . import scores, soundtracks


logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
SAMPLING_RATE = 16_000
TASK_NAMES = ("dev-key", "dev-composer", "dev-instruments", "dev-tempo")
TUNE_FILES = 4  # a class from collection files (.abc of hundreds of tunes) takes its tunes from about this many


def default_output() -> str:
    """`$XDG_CACHE_HOME/myna-hf/dev-benchmark` (`~/.cache/...` by default): data stays out of the repository."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "myna-hf", "dev-benchmark")


@dataclass
class BuildArguments:
    output: str = field(default_factory=default_output, metadata={"help": "Where the benchmark is built."})
    stages: str = field(default="pretrain,tasks", metadata={"help": "Comma list of stages to run: pretrain, tasks."})
    packages: str = field(
        default=",".join(soundtracks.PACKAGES), metadata={"help": "Comma list of Debian soundtrack packages."}
    )
    min_seconds: float = field(default=30.0, metadata={"help": "Music files shorter than this are jingles."})
    collections: str = field(
        default=",".join(scores.COLLECTIONS), metadata={"help": "Comma list of music21 corpus folders (classes)."}
    )
    clips_per_class: int = field(default=200, metadata={"help": "Rendered clips per collection (about)."})
    pieces_per_class: int = field(default=100, metadata={"help": "Pieces drawn per collection at most."})
    clip_seconds: float = field(default=10.0, metadata={"help": "Seconds per rendered clip."})
    tempo_range: str = field(default="60,160", metadata={"help": "Rendering tempi, quarter notes per minute."})
    max_families: int = field(default=3, metadata={"help": "Instrument families per clip at most."})
    fractions: str = field(default="0.7,0.15,0.15", metadata={"help": "train,validation,test share, split by work."})
    seed: int = field(default=0, metadata={"help": "Seed of the piece draw, the clip plans and the split."})
    soundfont: str | None = field(default=None, metadata={"help": "SoundFont; fluid-soundfont-gm's FluidR3_GM."})
    render_batch: int = field(default=48, metadata={"help": "Clips per FluidSynth call."})
    workers: int = field(default=2, metadata={"help": "Processes for decoding and rendering."})
    install: bool = field(
        default=True, metadata={"help": "apt-get install fluidsynth and fluid-soundfont-gm when missing."}
    )
    keep_scratch: bool = field(
        default=False, metadata={"help": "Keep unpacked packages and decoded audio (the .debs are always kept)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


# ---------------------------------------------------------------------------------------------- small helpers


def atomic_write_audio(path: str, audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
    """A 16-bit FLAC written under a temporary name and renamed, so a killed build never leaves half a file."""
    import soundfile as sf

    with atomic_path(path, suffix=".flac") as partial:
        sf.write(partial, np.clip(audio, -1, 1), sampling_rate, subtype="PCM_16", format="FLAC")


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _progress(iterable, enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, **kwargs)


class Manifest:
    """`manifest.json`: the settings and each stage's summary; a stage listed there is complete."""

    def __init__(self, output: str):
        self.path = os.path.join(output, "manifest.json")
        self.data = {"version": MANIFEST_VERSION, "stages": {}}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)

    def done(self, stage: str, settings: dict) -> bool:
        entry = self.data["stages"].get(stage)
        return bool(entry) and entry.get("settings") == settings

    def record(self, stage: str, settings: dict, summary: dict) -> None:
        self.data["stages"][stage] = {"settings": settings, **summary}
        write_text(self.path, json.dumps(self.data, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- system tools


def ensure_renderer(install: bool, soundfont: str | None) -> str:
    """FluidSynth on PATH and a SoundFont, apt-installed when missing and allowed; returns the SoundFont path."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth")
    try:
        return_path = scores.find_soundfont(soundfont)
    except FileNotFoundError:
        if soundfont:
            raise
        missing.append("fluid-soundfont-gm")
        return_path = None
    if missing:
        if not install or shutil.which("apt-get") is None:
            raise FileNotFoundError(
                f"{', '.join(missing)} missing: install with `apt-get install -y {' '.join(missing)}` (as root), "
                "then rerun."
            )
        logger.info("installing %s with apt-get", " ".join(missing))
        result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"apt-get install {' '.join(missing)} failed ({result.stderr.strip().splitlines()[-1:]}); run "
                f"`apt-get update && apt-get install -y {' '.join(missing)}` as root, then rerun."
            )
        return_path = scores.find_soundfont(soundfont)
    return return_path


# ---------------------------------------------------------------------------------------------- pre-training audio


def _analyse(job: tuple) -> dict:
    """Decodes one music file to 16 kHz mono FLAC in the scratch folder and returns what the filters need."""
    source, name, audio_path, analysis_path = job
    record = {"package": source.package, "source": name, "audio": audio_path}
    if os.path.isfile(analysis_path) and os.path.isfile(audio_path):  # decoded earlier: the rules are re-applied
        with np.load(analysis_path, allow_pickle=False) as cached:
            record.update(json.loads(str(cached["record"])), source=name)
            record["loop_seconds"] = soundtracks.loop_length(cached["fingerprint"])
        return record
    try:
        audio, data = soundtracks.read_source(source, SAMPLING_RATE)
    except Exception as error:  # undecodable or unreadable: counted by the caller
        record["error"] = f"{type(error).__name__}: {error}"[:300]
        return record
    features = soundtracks.fingerprint(audio, SAMPLING_RATE)
    loop = soundtracks.loop_length(features)
    record.update(
        sha256=soundtracks.sha256_bytes(data),
        seconds=len(audio) / SAMPLING_RATE,
        rms=float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if len(audio) else 0.0,
        loop_seconds=loop,
    )
    atomic_write_audio(audio_path, audio)
    with atomic_path(analysis_path, suffix=".npz") as partial:  # np.savez appends .npz to a name without it
        np.savez(partial, fingerprint=features, record=json.dumps({k: v for k, v in record.items() if k != "audio"}))
    return record


def decide(records: list[dict], min_seconds: float, min_rms: float = 1e-3, fingerprints=None) -> list[dict]:
    """Marks each record `status` kept / unreadable / silent / jingle / duplicate / near_duplicate, with
    `duplicate_of` and `kept_seconds` (the loop cut). Pure: the records' fields and the fingerprints only."""
    seen: dict[str, str] = {}
    candidates = {}
    for record in sorted(records, key=lambda r: (r["package"], r["source"])):
        record["duplicate_of"] = ""
        if record.get("error"):
            record["status"] = "unreadable"
            continue
        kept = record["loop_seconds"] or record["seconds"]
        record["kept_seconds"] = kept
        if record["rms"] < min_rms:
            record["status"] = "silent"
        elif kept < min_seconds:
            record["status"] = "jingle"
        elif record["sha256"] in seen:
            record["status"], record["duplicate_of"] = "duplicate", seen[record["sha256"]]
        else:
            seen[record["sha256"]] = record["source"]
            record["status"] = "kept"
            candidates[record["source"]] = record
    if fingerprints is not None:
        trimmed = {
            name: fingerprints[name][: int(round(candidates[name]["kept_seconds"] * soundtracks.FINGERPRINT_RATE))]
            for name in candidates
        }
        for dropped, kept_name in soundtracks.near_duplicates(trimmed).items():
            candidates[dropped]["status"], candidates[dropped]["duplicate_of"] = "near_duplicate", kept_name
    return records


def output_name(record: dict) -> str:
    """`<package>/<path under the package, flattened>.flac`."""
    relative = record["source"].split(f"{record['package']}{os.sep}", 1)[-1]
    stem = os.path.splitext(relative.replace("!", "/"))[0]
    parts = [p for p in stem.replace(os.sep, "/").split("/") if p not in ("usr", "share", "games", "data")]
    return os.path.join(record["package"], safe_name("__".join(parts[-3:])) + ".flac")


def build_pretrain(args: BuildArguments, manifest: Manifest) -> dict:
    import soundfile as sf

    settings = {"packages": args.packages, "min_seconds": args.min_seconds}
    if manifest.done("pretrain", settings) and os.path.isdir(os.path.join(args.output, "pretrain")):
        logger.info("pre-training audio: done earlier (%s)", manifest.path)
        return manifest.data["stages"]["pretrain"]
    started = time.perf_counter()
    scratch = os.path.join(args.output, "scratch")
    packages, failed = [], {}
    for name in [p.strip() for p in args.packages.split(",") if p.strip()]:
        try:
            resolved = soundtracks.resolve_package(name)
            deb = soundtracks.download_deb(resolved, os.path.join(scratch, "debs"))
            root = soundtracks.unpack_deb(deb, os.path.join(scratch, "unpacked", resolved))
            packages.append((resolved, root))
            logger.info("package %s: %s", resolved, os.path.basename(deb))
        except soundtracks.PackageError as error:
            logger.warning("skipping package %s: %s", name, error)
            failed[name] = str(error)
    if not packages:
        raise RuntimeError(
            f"no soundtrack package could be fetched and unpacked ({'; '.join(failed.values())})."
        )
    jobs = []
    for package, root in packages:
        for source in soundtracks.find_music(package, root):
            source = soundtracks.MusicSource(package, source.path, source.member)
            relative = os.path.relpath(source.name, root)
            key = safe_name(relative)
            jobs.append(
                (
                    source,
                    f"{package}/{relative}",
                    os.path.join(scratch, "audio", package, key + ".flac"),
                    os.path.join(scratch, "analysis", package, key + ".npz"),
                )
            )
    for _, _, audio_path, analysis_path in jobs:
        os.makedirs(os.path.dirname(audio_path), exist_ok=True)
        os.makedirs(os.path.dirname(analysis_path), exist_ok=True)
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        records = list(
            _progress(pool.map(_analyse, jobs), args.progress, total=len(jobs), desc="soundtracks", unit="file")
        )
    fingerprints = {}
    for (_, _, _, analysis_path), record in zip(jobs, records):
        if not record.get("error"):
            with np.load(analysis_path, allow_pickle=False) as cached:
                fingerprints[record["source"]] = cached["fingerprint"]
    decide(records, args.min_seconds, fingerprints=fingerprints)

    out_root = os.path.join(args.output, "pretrain")
    taken = set()
    for record in sorted(records, key=lambda r: r["source"]):
        if record["status"] == "kept":
            name = output_name(record)
            stem, number = name[: -len(".flac")], 1
            while name in taken:
                number += 1
                name = f"{stem}-{number}.flac"
            taken.add(name)
            record["output_name"] = name
    for record in _progress(records, args.progress, desc="pretrain/", unit="file"):
        record["output"] = ""
        if record["status"] != "kept":
            continue
        record["output"] = record["output_name"]
        target = os.path.join(out_root, record["output"])
        if os.path.isfile(target):
            continue
        frames = int(round(record["kept_seconds"] * SAMPLING_RATE))
        audio, _ = sf.read(record["audio"], frames=frames, dtype="float32")
        atomic_write_audio(target, audio)
    # `--dataset folder` reads every audio file under the folder: files of earlier settings, and the temporary
    # files of a killed run, go.
    wanted = {os.path.normpath(os.path.join(out_root, r["output"])) for r in records if r["output"]}
    for directory, _, names in os.walk(out_root):
        for name in names:
            path = os.path.normpath(os.path.join(directory, name))
            if path not in wanted:
                os.remove(path)
    columns = ["package", "source", "status", "seconds", "kept_seconds", "loop_seconds", "duplicate_of", "output",
               "sha256", "error"]
    write_csv(os.path.join(args.output, "pretrain_files.csv"), records, columns)

    per_package = {}
    for package, _ in packages:
        mine = [r for r in records if r["package"] == package]
        kept = [r for r in mine if r["status"] == "kept"]
        statuses = [r["status"] for r in mine]
        per_package[package] = {
            "files": len(mine),
            "kept": len(kept),
            "hours_found": round(sum(r.get("seconds", 0.0) for r in mine) / 3600, 3),
            "hours_kept": round(sum(r["kept_seconds"] for r in kept) / 3600, 3),
            "loops_cut": sum(1 for r in kept if r.get("loop_seconds")),
            "dropped": {s: statuses.count(s) for s in sorted(set(statuses) - {"kept"})},
        }
    summary = {
        "folder": out_root,
        "hours": round(sum(p["hours_kept"] for p in per_package.values()), 3),
        "files": sum(p["kept"] for p in per_package.values()),
        "packages": per_package,
        "packages_failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not args.keep_scratch:
        for folder in ("unpacked", "audio"):
            shutil.rmtree(os.path.join(scratch, folder), ignore_errors=True)
    manifest.record("pretrain", settings, summary)
    logger.info("pre-training audio: %.2f h in %d files under %s", summary["hours"], summary["files"], out_root)
    return summary


# ---------------------------------------------------------------------------------------------- labelled tasks


def _parse_file(job: tuple) -> tuple[str, list[dict] | None, str | None]:
    path, collection, cache = job
    if os.path.isfile(cache):
        with open(cache, encoding="utf-8") as f:
            return path, json.load(f), None
    try:
        pieces = scores.read_pieces(path, collection)
    except Exception as error:  # a score music21 cannot read: skipped and counted
        return path, None, f"{type(error).__name__}: {error}"[:300]
    values = [asdict(p) for p in pieces]
    write_text(cache, json.dumps(values))
    return path, values, None


def select_pieces(args: BuildArguments, scratch: str) -> tuple[dict[str, list[scores.ScorePiece]], dict]:
    """Up to `pieces_per_class` pieces of each collection, drawn with the seed; collection files (many tunes in one
    `.abc`) are parsed a few at a time until enough tunes are found."""
    collections = [c.strip() for c in args.collections.split(",") if c.strip()]
    unknown = sorted(set(collections) - set(scores.corpus_collections()))
    if unknown:
        raise ValueError(
            f"--collections {','.join(unknown)}: not folders of music21's corpus; found "
            f"{', '.join(scores.corpus_collections())}."
        )
    files = scores.corpus_files(collections)
    rng = np.random.default_rng(args.seed)
    chosen, failures = {}, {}
    for collection in collections:
        paths = list(files[collection])
        rng.shuffle(paths)
        pieces = []
        position = 0
        bar = _progress(None, args.progress, total=args.pieces_per_class, desc=f"scores {collection}", unit="piece")
        while len(pieces) < args.pieces_per_class and position < len(paths):
            batch = paths[position : position + max(1, args.workers * 4)]
            position += len(batch)
            jobs = [
                (p, collection, os.path.join(scratch, "scores", collection, safe_name(os.path.basename(p)) + ".json"))
                for p in batch
            ]
            for job in jobs:
                os.makedirs(os.path.dirname(job[2]), exist_ok=True)
            with ProcessPoolExecutor(max(1, args.workers)) as pool:
                for path, values, error in pool.map(_parse_file, jobs):
                    if error:
                        failures[path] = error
                        continue
                    found = [scores.ScorePiece.from_dict(v) for v in values]
                    if len(found) > 1:  # a collection file: a seeded share of its tunes
                        order = np.random.default_rng([args.seed, len(pieces)]).permutation(len(found))
                        share = max(1, math.ceil(args.pieces_per_class / TUNE_FILES))
                        found = [found[i] for i in order[:share]]
                    pieces.extend(found)
                    bar.update(len(found))
        bar.close()
        chosen[collection] = pieces[: args.pieces_per_class]
    return chosen, failures


def plan_collection(
    pieces: list[scores.ScorePiece], clips: int, settings: scores.PlanSettings, tonal: bool, profiles=None
) -> list[scores.ClipPlan]:
    """About `clips` plans over `pieces`: the same number from each piece where its length allows (at 100 quarter
    notes per minute), then cut back to `clips` with the seed."""
    if not pieces:
        return []
    per_piece = math.ceil(clips / len(pieces))
    plans = []
    for piece in pieces:
        fits = max(1, int(piece.length * 60 / 100 / settings.clip_seconds))
        plans.extend(scores.plan_clips(piece, min(per_piece, fits), settings, tonal=tonal, profiles=profiles))
    if len(plans) > clips:
        keep = np.sort(np.random.default_rng(settings.seed).permutation(len(plans))[:clips])
        plans = [plans[i] for i in keep]
    return plans


def assign_splits(plans: list[scores.ClipPlan], fractions, seed: int) -> dict[str, str]:
    """`{group: split}`: a seeded split by work within each collection, so every class is in every split and no
    work (hence no piece) is in two splits."""
    from ..task_families.custom import group_split

    membership = {}
    for collection in sorted({p.collection for p in plans}):
        groups = [p.group for p in plans if p.collection == collection]
        membership.update(group_split(groups, fractions, seed))
    return membership


def clip_rows(plans: list[scores.ClipPlan], membership: dict[str, str]) -> list[dict]:
    """One `clips.csv` row per plan: its audio file (relative to the tasks folder), its labels and its split."""
    rows = []
    for plan in plans:
        rows.append(
            {
                "file": os.path.join("audio", plan.collection, safe_name(plan.clip_id) + ".flac"),
                "clip": plan.clip_id,
                "piece": plan.piece_id,
                "work": plan.group,
                "split": membership[plan.group],
                "composer": plan.collection,
                "key": plan.key or "",
                "instruments": ";".join(plan.families),
                "programs": ";".join(str(p) for p in plan.programs),
                "tempo": plan.tempo,
                "transpose": plan.transpose,
                "start_quarter": plan.start,
                "key_correlation": plan.key_correlation,
            }
        )
    return rows


CLIP_COLUMNS = [
    "file", "clip", "piece", "work", "split", "composer", "key", "instruments", "programs", "tempo", "transpose",
    "start_quarter", "key_correlation",
]


def task_files(folder: str) -> dict[str, dict]:
    """The four task files (custom task family format) over `clips.csv` / `key.csv` in `folder`."""
    common = {"audio_column": "file", "splits": {"column": "split"}}
    return {
        "dev-key": {
            "name": "dev-key", "path": "key.csv", "label_column": "key", "problem_type": "single_label",
            "labels": [scores.key_name(t, m) for t in range(12) for m in ("major", "minor")],
            "metrics": ["myna_key", "myna_accuracy"], **common,
        },
        "dev-composer": {
            "name": "dev-composer", "path": "clips.csv", "label_column": "composer",
            "problem_type": "single_label", "metrics": ["myna_accuracy"], **common,
        },
        "dev-instruments": {
            "name": "dev-instruments", "path": "clips.csv", "label_column": "instruments",
            "problem_type": "multi_label", "label_delimiter": ";", "labels": list(scores.GM_FAMILIES),
            "metrics": ["myna_tagging"], **common,
        },
        "dev-tempo": {
            "name": "dev-tempo", "path": "clips.csv", "label_columns": ["tempo"], "problem_type": "regression",
            "metrics": ["myna_r2"], **common,
        },
    }


def write_tasks(folder: str, rows: list[dict]) -> dict[str, str]:
    """clips.csv, key.csv and the task files; returns `{task name: task file}`."""
    import yaml

    write_csv(os.path.join(folder, "clips.csv"), rows, CLIP_COLUMNS)
    keyed = [r for r in rows if r["key"]]
    write_csv(os.path.join(folder, "key.csv"), keyed, CLIP_COLUMNS)
    paths = {}
    for name, values in task_files(folder).items():
        if name == "dev-key" and not keyed:
            logger.warning("no clip has a trusted key (no tonal collection?): dev-key is not written")
            continue
        paths[name] = os.path.join(folder, f"{name}.yaml")
        write_text(paths[name], yaml.safe_dump(values, sort_keys=False))
    return paths


def _render(job) -> list[tuple[str, str | None]]:
    pieces, plans, targets, soundfont = job
    try:
        audios = scores.render_batch(pieces, plans, soundfont, SAMPLING_RATE)
    except Exception as error:  # one failed call: its clips are skipped and counted
        return [(plan.clip_id, f"{type(error).__name__}: {error}"[:300]) for plan in plans]
    results = []
    for plan, audio, target in zip(plans, audios, targets):
        if float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < 1e-4:
            results.append((plan.clip_id, "silent render"))
            continue
        atomic_write_audio(target, scores.normalize_loudness(audio))
        results.append((plan.clip_id, None))
    return results


def build_tasks(args: BuildArguments, manifest: Manifest) -> dict:
    low, high = (float(v) for v in args.tempo_range.split(","))
    fractions = tuple(float(v) for v in args.fractions.split(","))
    settings = {
        k: getattr(args, k)
        for k in ("collections", "clips_per_class", "pieces_per_class", "clip_seconds", "tempo_range",
                  "max_families", "fractions", "seed", "soundfont")
    }
    folder = os.path.join(args.output, "tasks")
    if manifest.done("tasks", settings) and os.path.isfile(os.path.join(folder, "clips.csv")):
        logger.info("labelled tasks: done earlier (%s)", manifest.path)
        return manifest.data["stages"]["tasks"]
    started = time.perf_counter()
    soundfont = ensure_renderer(args.install, args.soundfont)
    scratch = os.path.join(args.output, "scratch")
    chosen, parse_failures = select_pieces(args, scratch)
    plan_settings = scores.PlanSettings(args.clip_seconds, (low, high), args.max_families, seed=args.seed)
    profiles = scores.key_profiles()
    plans, too_few = [], {}
    for collection, pieces in chosen.items():
        found = plan_collection(
            pieces, args.clips_per_class, plan_settings, scores.COLLECTIONS.get(collection, False), profiles
        )
        if len({p.group for p in found}) < 3:
            too_few[collection] = len({p.group for p in found})
            continue
        plans.extend(found)
    if too_few:
        logger.warning("collections left out (fewer than 3 works to split): %s", too_few)
    membership = assign_splits(plans, fractions, args.seed)
    rows = clip_rows(plans, membership)
    by_id = {p.piece_id: p for pieces in chosen.values() for p in pieces}

    todo = [(plan, os.path.join(folder, row["file"])) for plan, row in zip(plans, rows)]
    todo = [(plan, target) for plan, target in todo if not os.path.isfile(target)]
    jobs = []
    for start in range(0, len(todo), max(1, args.render_batch)):
        batch = todo[start : start + args.render_batch]
        needed = {plan.piece_id: by_id[plan.piece_id] for plan, _ in batch}
        jobs.append((needed, [p for p, _ in batch], [t for _, t in batch], soundfont))
    failures = {}
    bar = _progress(None, args.progress, total=len(todo), desc="render", unit="clip")
    with ThreadPoolExecutor(max(1, args.workers)) as pool:  # fluidsynth runs as its own process
        for results in pool.map(_render, jobs):
            failures.update({clip: error for clip, error in results if error})
            bar.update(len(results))
    bar.close()
    rendered = [r for r in rows if os.path.isfile(os.path.join(folder, r["file"]))]
    paths = write_tasks(folder, rendered)

    from ..task_families.custom import load_custom_task
    from ..tasks import SPLITS

    counts = {}
    for name, path in paths.items():
        _, dataset = load_custom_task(path)
        counts[name] = {split: len(dataset[split]) for split in SPLITS}
    summary = {
        "folder": folder,
        "task_files": paths,
        "clips": len(rendered),
        "clips_by_split": {s: sum(r["split"] == s for r in rendered) for s in ("train", "validation", "test")},
        "clips_by_composer": {c: sum(r["composer"] == c for r in rendered) for c in sorted(chosen)},
        "pieces": len({r["piece"] for r in rendered}),
        "works": len({r["work"] for r in rendered}),
        "task_sizes": counts,
        "render_failures": len(failures),
        "score_failures": len(parse_failures),
        "collections_left_out": too_few,
        "soundfont": soundfont,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if failures or parse_failures:
        write_csv(
            os.path.join(folder, "failures.csv"),
            [{"item": k, "error": v} for k, v in {**parse_failures, **failures}.items()],
            ["item", "error"],
        )
    manifest.record("tasks", settings, summary)
    logger.info("labelled tasks: %d clips; task files %s", len(rendered), ", ".join(paths.values()))
    return summary


# ---------------------------------------------------------------------------------------------- entry point


def folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(folder) for n in names
        if os.path.isfile(os.path.join(d, n))
    )


def run(args: BuildArguments) -> dict:
    """Runs the stages `args.stages` asks for and returns their summaries (also in `<output>/manifest.json`)."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - {"pretrain", "tasks"})
    if unknown:
        raise ValueError(f"--stages {','.join(unknown)}: the stages are pretrain and tasks.")
    args.output = os.path.abspath(os.path.expanduser(args.output))
    os.makedirs(args.output, exist_ok=True)
    manifest = Manifest(args.output)
    started = time.perf_counter()
    summary = {}
    if "pretrain" in stages:
        summary["pretrain"] = build_pretrain(args, manifest)
    if "tasks" in stages:
        summary["tasks"] = build_tasks(args, manifest)
    sizes = {
        name: round(folder_bytes(os.path.join(args.output, name)) / 2**20, 1)
        for name in ("pretrain", "tasks", "scratch")
        if os.path.isdir(os.path.join(args.output, name))
    }
    manifest.data["size_mib"] = sizes
    manifest.data["last_run_seconds"] = round(time.perf_counter() - started, 1)
    write_text(manifest.path, json.dumps(manifest.data, indent=2) + "\n")
    print(f"\nBenchmark in {args.output} (MiB: {sizes}):")
    if "pretrain" in summary:
        print(f"  pre-training: --dataset folder --data_dir {summary['pretrain']['folder']} "
              f"({summary['pretrain']['hours']} h, {summary['pretrain']['files']} files)")
    if "tasks" in summary:
        tasks = ",".join(f"custom:{p}" for p in summary["tasks"]["task_files"].values())
        print(f"  tasks ({summary['tasks']['clips']} clips): --tasks {tasks}")
    return summary


__all__ = ["BuildArguments", "Manifest", "assign_splits", "decide", "plan_collection", "run", "write_tasks"]
