"""The labelled clips of an existing benchmark, rendered again through another SoundFont (`--clips_from EXISTING
--soundfont OTHER.sf2`): the same pieces, excerpts, tempi, transpositions, instruments, labels and splits, so that a
recipe whose scores drop on the new audio is seen to have learned the first SoundFont's sounds.

Each row of the existing `clips.csv` is planned again from its piece (parsed from the score corpus), its index and
its start, with the settings in the existing manifest (`scores.plan_clip`: the draws of tempo, transposition,
programs and velocities are seeded by the piece and the index), and checked against the row in every column: a
changed corpus or planner is an error, never a silent difference. The clips are rendered with the new SoundFont and
written with the existing rows as they were. The rows, not a new draw of pieces, are the source: a benchmark is
re-rendered as it is, whatever drew its pieces.
"""

import csv
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor

from . import scores, system_tools
from .arguments import BuildArguments
from .outputs import Manifest, csv_text
from .task_files import CLIP_COLUMNS, clip_rows
from .tasks_stage import PLAN_OPTIONS, TaskPlan, finish_tasks, parse_score_file, render_clips, score_cache


logger = logging.getLogger(__name__)


def read_source(source: str) -> tuple[dict, list[dict]]:
    """`(the tasks stage's entry of <source>/manifest.json, the rows of <source>/tasks/clips.csv as strings)`."""
    manifest_path = os.path.join(source, "manifest.json")
    clips_path = os.path.join(source, "tasks", "clips.csv")
    if not os.path.isfile(manifest_path) or not os.path.isfile(clips_path):
        raise FileNotFoundError(
            f"--clips_from {source}: no manifest.json and tasks/clips.csv there; give a benchmark folder whose tasks "
            "stage has finished."
        )
    with open(manifest_path, encoding="utf-8") as f:
        entry = json.load(f)["stages"].get("tasks")
    if not entry:
        raise ValueError(f"--clips_from {source}: its manifest has no finished tasks stage; finish that build first.")
    with open(clips_path, encoding="utf-8", newline="") as f:
        return entry, list(csv.DictReader(f))


def load_pieces(piece_ids: set[str], scratch: str, workers: int) -> tuple[dict[str, scores.ScorePiece], dict]:
    """`({piece id: piece}, {file: error})`: the pieces of `piece_ids` parsed from music21's corpus (a piece id is
    the file's path inside the corpus without extension, `#n` for the n-th tune of a collection file)."""
    stems = {piece_id.split("#", 1)[0] for piece_id in piece_ids}
    collections = sorted({stem.split("/", 1)[0] for stem in stems})
    files = {
        os.path.splitext(str(path).replace(os.sep, "/").split("/corpus/", 1)[-1])[0]: (path, collection)
        for collection, paths in scores.corpus_files(collections).items()
        for path in paths
    }
    jobs = [
        (files[stem][0], files[stem][1], score_cache(scratch, files[stem][0])) for stem in sorted(stems & set(files))
    ]
    os.makedirs(os.path.join(scratch, "scores"), exist_ok=True)
    pieces, failures = {}, {stem: "not in music21's corpus" for stem in sorted(stems - set(files))}
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for path, values, error in pool.map(parse_score_file, jobs):
            if error:
                failures[path] = error
                continue
            pieces.update(
                (v["piece_id"], scores.ScorePiece.from_dict(v)) for v in values if v["piece_id"] in piece_ids
            )
    return pieces, failures


def as_strings(rows: list[dict]) -> list[dict]:
    """`rows` as `clips.csv` holds them: every value the string the CSV writer gives it."""
    return list(csv.DictReader(csv_text(rows, CLIP_COLUMNS).splitlines()))


def plan_rows(rows: list[dict], pieces: dict, settings: dict, source: str) -> list[scores.ClipPlan]:
    """One plan per distinct clip of `rows`, planned again; raises ValueError unless each gives its row back."""
    low, high = (float(v) for v in settings["tempo_range"].split(","))
    plan_settings = scores.PlanSettings(
        settings["clip_seconds"], (low, high), settings["max_families"], seed=settings["seed"]
    )
    profiles = scores.key_profiles()
    plans, differences = {}, []
    for row in rows:
        if row["clip"] in plans:  # a clip listed twice (builds before the parsed-score cache fix drew a few twice)
            continue
        piece = pieces.get(row["piece"])
        if piece is None:
            differences.append(f"piece {row['piece']} cannot be read")
            continue
        index = int(row["clip"].rsplit("@", 1)[1])
        tonal = scores.COLLECTIONS.get(piece.collection, False)
        plan = scores.plan_clip(piece, index, float(row["start_quarter"]), plan_settings, tonal, profiles)
        again = as_strings(clip_rows([plan], {plan.group: row["split"]}))[0]
        if again != row:
            column = next((c for c in CLIP_COLUMNS if again.get(c) != row.get(c)), "columns")
            differences.append(f"clip {row['clip']}: {column} {row.get(column)!r} then, {again.get(column)!r} now")
        plans[row["clip"]] = plan
    if differences:
        raise ValueError(
            f"--clips_from {source}: {len(differences)} of its {len(rows)} clips are planned differently now "
            f"({differences[0]}): the score corpus (music21) or the planner changed since it was built; rebuild it "
            "with this version first."
        )
    return list(plans.values())


def build_tasks_from(args: BuildArguments, manifest: Manifest) -> dict:
    """The tasks stage of `args.output` as the clips of `args.clips_from` rendered through `args.soundfont`."""
    source = os.path.abspath(os.path.expanduser(args.clips_from))
    if source == args.output:
        raise ValueError(f"--clips_from {source} is --output: give the new benchmark another folder.")
    entry, existing = read_source(source)
    planned_with = {k: entry["settings"][k] for k in PLAN_OPTIONS}
    soundfont = system_tools.ensure_renderer(args.install, args.soundfont)
    if os.path.realpath(soundfont) == os.path.realpath(entry.get("soundfont", "")):
        raise ValueError(
            f"--soundfont {soundfont} is the one {source} was rendered with: pass another (for instance Debian's "
            "timgm6mb-soundfont, /usr/share/sounds/sf2/TimGM6mb.sf2)."
        )
    settings = {**planned_with, "soundfont": soundfont, "clips_from": source}
    folder = os.path.join(args.output, "tasks")
    if manifest.done("tasks", settings) and os.path.isfile(os.path.join(folder, "clips.csv")):
        logger.info("labelled tasks from %s: done earlier (%s)", source, manifest.path)
        return manifest.data["stages"]["tasks"]
    started = time.perf_counter()
    logger.info("planning the %d clips of %s again, with its settings %s", len(existing), source, planned_with)
    pieces, parse_failures = load_pieces(
        {row["piece"] for row in existing}, os.path.join(args.output, "scratch"), args.workers
    )
    plans = plan_rows(existing, pieces, planned_with, source)
    by_clip = {row["clip"]: row for row in existing}
    task_plan = TaskPlan(
        pieces=pieces,
        plans=plans,
        rows=[by_clip[plan.clip_id] for plan in plans],
        collections=sorted({row["composer"] for row in existing}),
        parse_failures=parse_failures,
    )
    failures = render_clips(task_plan, folder, soundfont, args)
    rendered = [row for row in existing if os.path.isfile(os.path.join(folder, row["file"]))]
    if len(rendered) < len(existing):
        logger.warning(
            "%d of the %d clips did not render with %s (tasks/failures.csv): the task files hold the others",
            len(existing) - len(rendered),
            len(existing),
            soundfont,
        )
    summary = finish_tasks(folder, rendered, task_plan, failures, soundfont)
    summary.update(
        clips_from=source,
        source_soundfont=entry.get("soundfont"),
        clips_missing=len(existing) - len(rendered),
        seconds=round(time.perf_counter() - started, 1),
    )
    manifest.record("tasks", settings, summary)
    return summary


__all__ = ["as_strings", "build_tasks_from", "load_pieces", "plan_rows", "read_source"]
