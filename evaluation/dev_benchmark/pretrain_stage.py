"""The pre-training stage: Debian packages with recorded music (a named set of `soundtracks.PACKAGE_SETS`, or
`--packages`) fetched, their music files decoded, analysed, filtered (`decide`: unreadable, silent, jingle,
duplicate, near duplicate; loops cut to one period) and written to `<output>/pretrain/` as 16 kHz mono FLAC, with
`pretrain_files.csv` and the hours per package, before and after cleaning, in the manifest. The file-level analysis
and its rules live in `soundtracks`; this module runs them over the packages."""

import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from myna_common.atomic import atomic_path

from . import soundtracks, system_tools
from .arguments import BuildArguments, package_names
from .outputs import SAMPLING_RATE, Manifest, atomic_write_audio, progress_bar, safe_name, write_csv


logger = logging.getLogger(__name__)


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

    names = package_names(args)
    # The names, not the set's: a benchmark built before package sets existed is still done.
    settings = {"packages": ",".join(names), "min_seconds": args.min_seconds}
    if manifest.done("pretrain", settings) and os.path.isdir(os.path.join(args.output, "pretrain")):
        logger.info("pre-training audio: done earlier (%s)", manifest.path)
        return manifest.data["stages"]["pretrain"]
    system_tools.ensure_package_tools()
    started = time.perf_counter()
    scratch = os.path.join(args.output, "scratch")
    packages, failed = [], {}
    for name in names:
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
        raise RuntimeError(f"no soundtrack package could be fetched and unpacked ({'; '.join(failed.values())}).")
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
            progress_bar(pool.map(_analyse, jobs), args.progress, total=len(jobs), desc="soundtracks", unit="file")
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
    for record in progress_bar(records, args.progress, desc="pretrain/", unit="file"):
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
    columns = [
        "package",
        "source",
        "status",
        "seconds",
        "kept_seconds",
        "loop_seconds",
        "duplicate_of",
        "output",
        "sha256",
        "error",
    ]
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
        "package_set": None if args.packages else args.package_set,
        "hours_found": round(sum(p["hours_found"] for p in per_package.values()), 3),
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
    logger.info("hours per package, before and after cleaning:\n%s", hours_table(summary))
    logger.info("pre-training audio: %.2f h in %d files under %s", summary["hours"], summary["files"], out_root)
    return summary


def hours_table(summary: dict) -> str:
    """The pre-training stage's hours per package (found, kept after cleaning) and files kept, as a Markdown table."""
    lines = ["| package | hours found | hours kept | files kept |", "|---|---:|---:|---:|"]
    for package, values in summary["packages"].items():
        lines.append(f"| `{package}` | {values['hours_found']:.2f} | {values['hours_kept']:.2f} | {values['kept']} |")
    found = sum(v["hours_found"] for v in summary["packages"].values())
    lines.append(f"| all | {found:.2f} | {summary['hours']:.2f} | {summary['files']} |")
    return "\n".join(lines)


__all__ = ["build_pretrain", "decide", "hours_table", "output_name"]
