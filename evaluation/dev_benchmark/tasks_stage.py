"""The labelled-tasks stage: pieces drawn from music21's corpus, clips planned over them (`scores`), split by work,
rendered through FluidSynth in batches, and written with their task files (`task_files`) under `<output>/tasks/`."""

import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from myna_common.atomic import write_text

from . import scores, system_tools
from .arguments import BuildArguments
from .outputs import SAMPLING_RATE, Manifest, atomic_write_audio, progress_bar, safe_name, write_csv
from .task_files import clip_rows, write_tasks


logger = logging.getLogger(__name__)

TUNE_FILES = 4  # a class from collection files (.abc of hundreds of tunes) takes its tunes from about this many


def parse_score_file(job: tuple) -> tuple[str, list[dict] | None, str | None]:
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


def score_cache(scratch: str, path: str) -> str:
    """Where the parsed pieces of corpus file `path` are cached: named by its path inside the corpus, since many
    files share a name (`beethoven/opus18no1/movement2.mxl`, `beethoven/opus59no2/movement2.mxl`)."""
    relative = str(path).replace(os.sep, "/").split("/corpus/", 1)[-1]
    return os.path.join(scratch, "scores", safe_name(relative.replace("/", "__")) + ".json")


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
        bar = progress_bar(None, args.progress, total=args.pieces_per_class, desc=f"scores {collection}", unit="piece")
        while len(pieces) < args.pieces_per_class and position < len(paths):
            batch = paths[position : position + max(1, args.workers * 4)]
            position += len(batch)
            jobs = [(p, collection, score_cache(scratch, p)) for p in batch]
            for job in jobs:
                os.makedirs(os.path.dirname(job[2]), exist_ok=True)
            with ProcessPoolExecutor(max(1, args.workers)) as pool:
                for path, values, error in pool.map(parse_score_file, jobs):
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


# The options that decide which clips are planned; with the SoundFont, the tasks stage's settings in the manifest.
PLAN_OPTIONS = (
    "collections",
    "clips_per_class",
    "pieces_per_class",
    "clip_seconds",
    "tempo_range",
    "max_families",
    "fractions",
    "seed",
)


@dataclass
class TaskPlan:
    """Every clip the tasks stage plans: a pure function of `PLAN_OPTIONS` and the score corpus."""

    pieces: dict[str, scores.ScorePiece]  # by piece id
    plans: list[scores.ClipPlan]
    rows: list[dict]  # clips.csv rows, one per plan, in the same order
    collections: list[str]
    parse_failures: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)  # collections with fewer than 3 works: their work count


def plan_tasks(args: BuildArguments, scratch: str) -> TaskPlan:
    """Draws the pieces, plans the clips and splits them by work."""
    low, high = (float(v) for v in args.tempo_range.split(","))
    fractions = tuple(float(v) for v in args.fractions.split(","))
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
    return TaskPlan(
        pieces={p.piece_id: p for pieces in chosen.values() for p in pieces},
        plans=plans,
        rows=clip_rows(plans, membership),
        collections=sorted(chosen),
        parse_failures=parse_failures,
        left_out=too_few,
    )


def render_clips(task_plan: TaskPlan, folder: str, soundfont: str, args: BuildArguments, only=None) -> dict:
    """Renders the planned clips (those whose id is in `only`, when given) that `folder` lacks; returns `{clip id:
    error}` of those that failed."""
    todo = [
        (plan, os.path.join(folder, row["file"]))
        for plan, row in zip(task_plan.plans, task_plan.rows)
        if only is None or plan.clip_id in only
    ]
    todo = [(plan, target) for plan, target in todo if not os.path.isfile(target)]
    jobs = []
    for start in range(0, len(todo), max(1, args.render_batch)):
        batch = todo[start : start + args.render_batch]
        needed = {plan.piece_id: task_plan.pieces[plan.piece_id] for plan, _ in batch}
        jobs.append((needed, [p for p, _ in batch], [t for _, t in batch], soundfont))
    failures = {}
    bar = progress_bar(None, args.progress, total=len(todo), desc="render", unit="clip")
    with ThreadPoolExecutor(max(1, args.workers)) as pool:  # fluidsynth runs as its own process
        for results in pool.map(_render, jobs):
            failures.update({clip: error for clip, error in results if error})
            bar.update(len(results))
    bar.close()
    return failures


def finish_tasks(folder: str, rendered: list[dict], task_plan: TaskPlan, failures: dict, soundfont: str) -> dict:
    """Writes clips.csv, key.csv, the task files and failures.csv; returns the stage's summary."""
    from ..task_families.custom import load_custom_task
    from ..tasks import SPLITS

    paths = write_tasks(folder, rendered)
    counts = {}
    for name, path in paths.items():
        _, dataset = load_custom_task(path)
        counts[name] = {split: len(dataset[split]) for split in SPLITS}
    if failures or task_plan.parse_failures:
        write_csv(
            os.path.join(folder, "failures.csv"),
            [{"item": k, "error": v} for k, v in {**task_plan.parse_failures, **failures}.items()],
            ["item", "error"],
        )
    logger.info("labelled tasks: %d clips; task files %s", len(rendered), ", ".join(paths.values()))
    return {
        "folder": folder,
        "task_files": paths,
        "clips": len(rendered),
        "clips_by_split": {s: sum(r["split"] == s for r in rendered) for s in ("train", "validation", "test")},
        "clips_by_composer": {c: sum(r["composer"] == c for r in rendered) for c in task_plan.collections},
        "pieces": len({r["piece"] for r in rendered}),
        "works": len({r["work"] for r in rendered}),
        "task_sizes": counts,
        "render_failures": len(failures),
        "score_failures": len(task_plan.parse_failures),
        "collections_left_out": task_plan.left_out,
        "soundfont": soundfont,
    }


def build_tasks(args: BuildArguments, manifest: Manifest) -> dict:
    settings = {k: getattr(args, k) for k in (*PLAN_OPTIONS, "soundfont")}
    folder = os.path.join(args.output, "tasks")
    if manifest.done("tasks", settings) and os.path.isfile(os.path.join(folder, "clips.csv")):
        logger.info("labelled tasks: done earlier (%s)", manifest.path)
        return manifest.data["stages"]["tasks"]
    started = time.perf_counter()
    soundfont = system_tools.ensure_renderer(args.install, args.soundfont)
    task_plan = plan_tasks(args, os.path.join(args.output, "scratch"))
    failures = render_clips(task_plan, folder, soundfont, args)
    rendered = [r for r in task_plan.rows if os.path.isfile(os.path.join(folder, r["file"]))]
    summary = finish_tasks(folder, rendered, task_plan, failures, soundfont)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    manifest.record("tasks", settings, summary)
    return summary


__all__ = [
    "PLAN_OPTIONS",
    "TUNE_FILES",
    "TaskPlan",
    "assign_splits",
    "build_tasks",
    "finish_tasks",
    "parse_score_file",
    "plan_collection",
    "plan_tasks",
    "render_clips",
    "score_cache",
    "select_pieces",
]
