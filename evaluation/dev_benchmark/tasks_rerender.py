"""The labelled clips of an existing benchmark, rendered again through another SoundFont (`--clips_from EXISTING
--soundfont OTHER.sf2`): the same pieces, excerpts, tempi, transpositions, instruments, labels and splits, so that a
recipe whose scores drop on the new audio is seen to have learned the first SoundFont's sounds.

The clips are planned again from the existing benchmark's manifest (planning is a pure function of its settings and
the score corpus), checked against its `clips.csv` row by row (a changed corpus or planner is an error, never a
silent difference), rendered with the new SoundFont, and written with the existing `clips.csv` rows as they were.
"""

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import replace

from . import system_tools
from .arguments import BuildArguments
from .outputs import Manifest, csv_text
from .task_files import CLIP_COLUMNS
from .tasks_stage import PLAN_OPTIONS, finish_tasks, plan_tasks, render_clips


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


def as_strings(rows: list[dict]) -> list[dict]:
    """`rows` as `clips.csv` holds them: every value the string the CSV writer gives it."""
    return list(csv.DictReader(csv_text(rows, CLIP_COLUMNS).splitlines()))


def check_same_clips(source: str, planned: list[dict], existing: list[dict]) -> None:
    """Raises ValueError unless every row of the existing clips.csv is planned again, identical in every column."""
    by_clip = {row["clip"]: row for row in as_strings(planned)}
    differences = []
    for row in existing:
        again = by_clip.get(row["clip"])
        if again is None:
            differences.append(f"clip {row['clip']} is not planned again")
        elif again != row:
            column = next((c for c in CLIP_COLUMNS if again.get(c) != row.get(c)), "columns")
            differences.append(f"clip {row['clip']}: {column} {row.get(column)!r} then, {again.get(column)!r} now")
    if differences:
        raise ValueError(
            f"--clips_from {source}: {len(differences)} of its {len(existing)} clips are planned differently now "
            f"({differences[0]}): the score corpus (music21) or the planner changed since it was built; rebuild it "
            "with this version first."
        )


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
    scratch = os.path.join(args.output, "scratch")
    if os.path.isdir(os.path.join(source, "scratch", "scores")):  # the parsed scores: read, never written there
        shutil.copytree(os.path.join(source, "scratch", "scores"), os.path.join(scratch, "scores"), dirs_exist_ok=True)
    logger.info("re-planning the %d clips of %s with its settings %s", len(existing), source, planned_with)
    task_plan = plan_tasks(replace(args, **planned_with), scratch)
    check_same_clips(source, task_plan.rows, existing)
    failures = render_clips(task_plan, folder, soundfont, args, only={row["clip"] for row in existing})
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


__all__ = ["as_strings", "build_tasks_from", "check_same_clips", "read_source"]
