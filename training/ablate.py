"""Ablations of Myna pre-training: masking ratio and its schedule, masking policy, batch size, crop length, model size,
patch layout and any named recipe, on any pre-training data and any probe tasks, each point over several seeds.

The paper's ablations (arXiv 2502.12511: masking ratio, Figure 4; batch size, Appendix A / Table 3; patch layout,
Table 1) are the experiments every adaptation of Myna repeats. Each run of a sweep is a short pre-training
(`myna_training.pretrain.main`, in this process) followed by the evaluation probes (`myna_evaluation.probe`, the
fast 8-probe subset by default, `--full_grid` for the paper's 216 probes) on the given tasks: the generated ones by
default (no download), or task files (`--tasks custom:path/task.yaml,...`), on the generated corpus by default or on
any folder of audio (`--dataset folder --data_dir DIR`, passed through to pre-training).

    python training/ablate.py                                    # the default sweep (CPU, generated corpus)
    python training/ablate.py --mask_ratios 0.5,0.9 --masking_policies uniform --variants base \
        --batch_sizes 64 --output_dir outputs/ablation-ratio     # a 2-point sweep, 3 seeds each
    python training/ablate.py --dataset folder --data_dir /data/music --tasks custom:/data/tasks/key.yaml ...
    python training/ablate.py --design grid ...                  # every combination instead of one factor at a time
    python training/ablate.py --plot_policies docs/masking       # one PNG per masking policy on a generated clip

`--design one_at_a_time` (the default, as the paper's ablations) varies one factor at a time around a base run (the
paper's values where the sweep has them: 90% masking, constant, uniform, square patches, the largest batch; else the
first value). Every run sees the same number of training examples (`--examples_per_run`), so a smaller batch takes
more steps; a list of budgets (`--examples_per_run 32000,128000`) runs every point at each, for a curve. Each point
runs with every seed of `--seeds` (three by default: the seed of the weights, data order, masks and probes), and the
table gives the mean and the 95% t-interval over seeds; the plots draw it as error bars, on axes that start at the
metric's floor (0, or 50 for ROC-AUC), with hand-crafted baselines (`--baselines`, `probe.py` results) as
horizontal lines. Compute is counted in examples and in CPU-seconds: the process CPU time of each pre-training's
loop, measured (`time.process_time`), so a loaded machine does not inflate it as it does wall time.

A killed sweep continues where it stopped: every finished stage of a run is reused (its pre-training, kept with
`pretrain.json`; an unfinished pre-training resumes from its last checkpoint; the embeddings, cached by shards;
each task's probes), and an overall ETA is printed before every run.
"""

if __name__ == "__main__":
    from myna_common.progress import quiet_library_bars

    # In a log: no "Loading weights" bars from the exported checkpoints, datasets' bars every 30 s. Before anything
    # imports tqdm, which reads TQDM_MININTERVAL once.
    quiet_library_bars(datasets=False)

import itertools
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from transformers import HfArgumentParser

from modeling_myna.configuration_myna import MASK_RATIO_SCHEDULES, MASKING_POLICIES, MODEL_SIZES, VARIANTS
from myna_common.atomic import write_json
from myna_training.export import PROGRESS_STATE, export_checkpoint  # noqa: F401 (the runner's names before)


# The factors of a point, in table order; `examples` (the budget) crosses every point instead of being varied around
# the base, and `seed` crosses everything.
FACTORS = (
    "variant", "model_size", "crop_frames", "mask_ratio", "mask_schedule", "masking_policy", "batch_size", "recipe",
)
# The paper's values, used as the base of a one-factor-at-a-time sweep when the sweep lists them.
PAPER_VALUES = {
    "mask_ratio": 0.9, "mask_schedule": "constant", "masking_policy": "uniform", "variant": "base",
    "model_size": "vit-s", "crop_frames": None,
}
FACTOR_LABELS = {
    "variant": "patches", "model_size": "size", "crop_frames": "crop frames", "mask_ratio": "mask ratio",
    "mask_schedule": "ratio schedule", "masking_policy": "policy", "batch_size": "batch", "recipe": "recipe",
}
# Metrics shown besides each task's primary one (tags: average precision beside ROC-AUC).
SECONDARY_METRICS = ("average_precision_macro",)
PRETRAIN_SUMMARY = "pretrain.json"  # written when a run's pre-training has finished: the stage is then reused
RESULT_FILE = "result.json"  # written when the whole run (pre-training and every task's probes) has finished


@dataclass
class AblationArguments:
    output_dir: str = field(
        default="outputs/ablation", metadata={"help": "results.json, results.md, plots (and runs/)."}
    )
    runs_dir: str | None = field(
        default=None,
        metadata={"help": "Where each run's folder goes (default <output_dir>/runs); sweeps sharing it share runs."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Spectrogram cache shared by the runs (default <output_dir>/cache)."}
    )
    mask_ratios: str = field(default="0.5,0.75,0.9", metadata={"help": "Comma list of masking ratios."})
    mask_schedules: str = field(
        default="constant",
        metadata={
            "help": "Comma list of ratio schedules: constant, or linear:START / cosine:START (from START to the "
            "point's mask ratio over the run)."
        },
    )
    masking_policies: str = field(
        default=",".join(MASKING_POLICIES), metadata={"help": f"Comma list of policies of {list(MASKING_POLICIES)}."}
    )
    batch_sizes: str = field(default="16,64", metadata={"help": "Comma list of batch sizes."})
    crop_frames: str = field(
        default="", metadata={"help": "Comma list of crop lengths in frames (empty: the model's default, 96 = 3 s)."}
    )
    model_sizes: str = field(
        default="small",
        metadata={"help": f"Comma list of sizes of {list(MODEL_SIZES)}, or WIDTHxDEPTH (e.g. 256x2; 32-wide heads)."},
    )
    variants: str = field(default="base,vertical", metadata={"help": f"Comma list of {sorted(VARIANTS)}."})
    recipes: str = field(
        default="",
        metadata={
            "help": "Named pre-training flag sets, one factor: 'name=--flag value ...;name2=...' (an empty flag "
            "list is the plain point), e.g. 'plain=;views4=--num_views 4'."
        },
    )
    design: str = field(
        default="one_at_a_time", metadata={"help": "'one_at_a_time' around a base run (the paper's way) or 'grid'."}
    )
    examples_per_run: str = field(
        default="6400",
        metadata={"help": "Training examples each run sees (steps x batch); a comma list runs every point at each."},
    )
    seeds: str = field(
        default="0,1,2", metadata={"help": "Comma list of seeds; every point runs once per seed (mean, 95%% interval)."}
    )
    dataset: str = field(
        default="synthetic",
        metadata={"help": "Pre-training data, passed to pretrain.py: synthetic, folder (with --data_dir), ..."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "Audio folder for --dataset folder."})
    num_clips: int = field(default=256, metadata={"help": "Clips of the generated pre-training corpus."})
    tasks: str = field(
        default="synthetic-key,synthetic-tempo,synthetic-style",
        metadata={"help": "Comma list of probe tasks (probe.py's names, or custom:<task.yaml>)."},
    )
    synthetic_sizes: str = field(default="256,96,96", metadata={"help": "Generated clips per probe split."})
    synthetic_duration: float = field(default=10.0, metadata={"help": "Seconds per generated probe clip."})
    full_grid: bool = field(default=False, metadata={"help": "The paper's 216-probe grid instead of --fast (8)."})
    baselines: str | None = field(
        default=None,
        metadata={"help": "Comma list of probe.py results.json files (hand-crafted features), drawn as references."},
    )
    pretrain_args: str = field(default="", metadata={"help": "Extra flags for every pretrain.py run, one string."})
    probe_args: str = field(default="", metadata={"help": "Extra flags for every probe.py run, one string."})
    checkpoints_per_run: int = field(
        default=4, metadata={"help": "Checkpoints during each pre-training, so a killed run resumes (0: none)."}
    )
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep each run's checkpoints (large)."})
    plot_policies: str | None = field(
        default=None, metadata={"help": "Only draw one PNG per masking policy into this folder, then exit."}
    )
    curve: str | None = field(
        default=None,
        metadata={
            "help": "Instead of a sweep: probe the checkpoints of one pre-training (its --output_dir; keep them with "
            "--checkpoints_total_limit) on --tasks, for quality against its CPU-seconds (curve.md, curve.png). "
            "Several, comma-separated: the same recipe with different --seed; each step's row is then their mean "
            "and 95%% interval."
        },
    )
    curve_steps: str = field(
        default="", metadata={"help": "With --curve: a comma list of checkpoint steps to probe (default: every one)."}
    )


def _values(text: str, cast) -> list:
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def parse_recipes(text: str) -> dict[str, str]:
    """`'a=--x 1;b='` -> `{"a": "--x 1", "b": ""}`; no recipes -> `{"": ""}` (the plain point)."""
    recipes = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        name, sep, flags = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ValueError(
                f"--recipes item {item!r}: write name=flags (a name of letters, digits, . _ + -), items separated by "
                "';'."
            )
        if name in recipes:
            raise ValueError(f"--recipes names {name!r} twice.")
        recipes[name] = flags.strip()
    return recipes or {"": ""}


def _schedule(text: str) -> str:
    name, _, start = text.partition(":")
    if name not in MASK_RATIO_SCHEDULES or (name != "constant") != bool(start):
        raise ValueError(
            f"mask schedule {text!r}: write constant, linear:START or cosine:START (START the first step's ratio)."
        )
    if start:
        float(start)
    return text


def _model_size(text: str) -> str:
    if text in MODEL_SIZES or re.fullmatch(r"\d+x\d+", text):
        return text
    raise ValueError(f"unknown model_size {text!r}: choose from {list(MODEL_SIZES)} or write WIDTHxDEPTH (256x2).")


def factor_values(args: AblationArguments) -> dict[str, list]:
    values = {
        "mask_ratio": _values(args.mask_ratios, float),
        "mask_schedule": [_schedule(v) for v in _values(args.mask_schedules, str)],
        "masking_policy": _values(args.masking_policies, str),
        "batch_size": _values(args.batch_sizes, int),
        "crop_frames": _values(args.crop_frames, int) or [None],
        "model_size": [_model_size(v) for v in _values(args.model_sizes, str)],
        "variant": _values(args.variants, str),
        "recipe": list(parse_recipes(args.recipes)),
    }
    for name, allowed in (("masking_policy", MASKING_POLICIES), ("variant", VARIANTS)):
        unknown = [v for v in values[name] if v not in allowed]
        if unknown:
            raise ValueError(f"unknown {name} {unknown}: choose from {list(allowed)}.")
    if any(not v for v in values.values()):
        raise ValueError(f"every factor needs at least one value, got {values}.")
    return values


def sweep_points(args: AblationArguments) -> list[dict]:
    """The points of the sweep, each a dict over `FACTORS` plus `examples`, base point first (per budget)."""
    values = factor_values(args)
    budgets = _values(args.examples_per_run, int)
    if not budgets or min(budgets) <= 0:
        raise ValueError(f"--examples_per_run {args.examples_per_run!r}: give one or more positive numbers.")
    if args.design == "grid":
        designs = [dict(zip(FACTORS, combo)) for combo in itertools.product(*(values[f] for f in FACTORS))]
        designs = [p for p in designs if _valid(p)]
    elif args.design == "one_at_a_time":
        base = {f: PAPER_VALUES[f] if PAPER_VALUES.get(f, "-") in values[f] else values[f][0] for f in FACTORS}
        base["batch_size"] = max(values["batch_size"])
        designs = [base]
        for factor in FACTORS:
            for value in values[factor]:
                point = {**base, factor: value}
                if point not in designs and _valid(point):
                    designs.append(point)
    else:
        raise ValueError(f"design={args.design!r}: choose 'one_at_a_time' or 'grid'.")
    return [{**point, "examples": budget} for budget in budgets for point in designs]


def _valid(point: dict) -> bool:
    # frequency_band keeps a band of patch rows; a vertical-only model has one row (MynaConfig rejects it).
    return not (point["masking_policy"] == "frequency_band" and point["variant"] == "vertical")


def point_key(point: dict) -> tuple:
    return tuple(point[f] for f in (*FACTORS, "examples"))


def run_name(point: dict, seed: int | None = None) -> str:
    name = f"{point['variant']}-{point['model_size']}-r{point['mask_ratio']:g}"
    if point.get("mask_schedule", "constant") != "constant":
        name += "-" + point["mask_schedule"].replace(":", "")
    name += f"-{point['masking_policy']}-b{point['batch_size']}"
    if point.get("crop_frames"):
        name += f"-c{point['crop_frames']}"
    if point.get("recipe"):
        name += f"-{point['recipe']}"
    if "examples" in point:
        name += f"-e{point['examples']}"
    return name if seed is None else f"{name}-s{seed}"


def _size_flags(model_size: str) -> list[str]:
    if model_size in MODEL_SIZES:
        return ["--model_size", model_size]
    width, depth = (int(v) for v in model_size.split("x"))
    return [
        "--model_size", "small", "--hidden_size", str(width), "--num_hidden_layers", str(depth),
        "--num_attention_heads", str(max(1, width // 32)), "--intermediate_size", str(4 * width),
    ]


def pretrain_argv(point: dict, args: AblationArguments, output_dir: str, seed: int = 0) -> list[str]:
    """pretrain.py's flags for one run: the sweep's data, the point's factors, then `--pretrain_args` and the
    point's recipe (later flags win)."""
    steps = max(1, math.ceil(point["examples"] / point["batch_size"]))
    schedule, _, start = point["mask_schedule"].partition(":")
    checkpoint_every = math.ceil(steps / args.checkpoints_per_run) if args.checkpoints_per_run > 0 else 0
    return [
        "--output_dir", output_dir,
        "--cache_dir", args.cache_dir or os.path.join(args.output_dir, "cache"),  # spectrograms once per sweep
        "--dataset", args.dataset,
        *(["--data_dir", args.data_dir] if args.data_dir else []),
        # Only the generated corpus has a number of clips; passed for a folder, it would change the cache key.
        *(["--num_clips", str(args.num_clips)] if args.dataset == "synthetic" else []),
        "--variant", point["variant"],
        *_size_flags(point["model_size"]),
        *(["--chunk_frames", str(point["crop_frames"])] if point["crop_frames"] else []),
        "--mask_ratio", str(point["mask_ratio"]),
        "--mask_ratio_schedule", schedule,
        *(["--mask_ratio_start", start] if start else []),
        "--masking_policy", point["masking_policy"],
        "--per_device_batch_size", str(point["batch_size"]),
        "--max_steps", str(steps),
        "--warmup_steps", str(max(1, steps // 10)),
        "--checkpointing_steps", str(checkpoint_every),
        "--checkpoints_total_limit", "1",
        "--probe_clips", "0",
        "--seed", str(seed),
        *args.pretrain_args.split(),
        *parse_recipes(args.recipes).get(point["recipe"], "").split(),
    ]


def task_list(args: AblationArguments) -> list[str]:
    return [t.strip() for t in args.tasks.split(",") if t.strip()]


def task_folder(task: str) -> str:
    """A folder name for a task: `custom:/x/dev-key.yaml` -> `dev-key`."""
    name = os.path.splitext(os.path.basename(task.split(":", 1)[-1].rstrip("/")))[0] if ":" in task else task
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "task"


def probe_argv(args: AblationArguments, model_dir: str, eval_dir: str, task: str, seed: int = 0) -> list[str]:
    """probe.py's flags for one task of one run; the embeddings are cached in `eval_dir/embeddings`, shared by the
    run's tasks (tasks over the same clips embed them once)."""
    return [
        "--model", model_dir,
        "--tasks", task,
        "--output_dir", os.path.join(eval_dir, task_folder(task)),
        "--cache_dir", os.path.join(eval_dir, "embeddings"),
        "--synthetic_sizes", args.synthetic_sizes,
        "--synthetic_duration", str(args.synthetic_duration),
        "--seed", str(seed),
        "--tsne", "false",
        "--progress", "false",
        *(["--num_threads", str(args.num_threads)] if args.num_threads else []),
        *([] if args.full_grid else ["--fast"]),
        *args.probe_args.split(),
    ]


def primary_metric(metrics: dict) -> tuple[str, float]:
    """The first metric a task reports (the one its probe is selected on)."""
    name = next(iter(metrics))
    return name, float(metrics[name])


def shown_metrics(test_metrics: dict) -> list[str]:
    """The metrics of a task in the table: its primary one, and the secondary ones it reports."""
    return [primary_metric(test_metrics)[0]] + [m for m in SECONDARY_METRICS if m in test_metrics]


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value) -> None:
    write_json(path, value)


def _pretrain(point: dict, seed: int, args: AblationArguments, run_dir: str) -> dict:
    """The run's pre-training: reused when finished, resumed from its last checkpoint when interrupted."""
    from myna_training import pretrain
    from myna_training.run_folder import RUN_FILE

    summary_path = os.path.join(run_dir, PRETRAIN_SUMMARY)
    if os.path.exists(summary_path):
        summary = _read_json(summary_path)
        if os.path.isdir(summary["model_dir"]):
            print(f"pre-training finished earlier: reusing {summary['model_dir']}")
            return summary
    output_dir = os.path.join(run_dir, "pretrain")
    argv = pretrain_argv(point, args, output_dir, seed)
    started = time.perf_counter()
    summary = None
    if os.path.exists(os.path.join(output_dir, RUN_FILE)):
        try:  # an interrupted pre-training of this run: continue it from its last checkpoint
            summary = pretrain.main(argv + ["--resume_from_checkpoint", "latest"])
        except ValueError as error:  # another run's folder (the sweep's settings changed): start again
            print(f"not resuming ({error}): starting this run again.")
    if summary is None:
        summary = pretrain.main(argv + ["--overwrite_output_dir"])
    record = {
        key: summary[key]
        for key in ("model_dir", "run_id", "steps", "examples_seen", "cpu_seconds", "resumed_at_step", "last_loss")
    }
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    _write_json(summary_path, record)
    return record


def run_point(point: dict, args: AblationArguments, seed: int = 0) -> dict:
    """Pre-trains and probes one point of the sweep with one seed, reusing every stage that finished before."""
    from myna_evaluation import probe

    run_dir = os.path.join(args.runs_dir or os.path.join(args.output_dir, "runs"), run_name(point, seed))
    result_path = os.path.join(run_dir, RESULT_FILE)
    if os.path.exists(result_path):
        return _read_json(result_path)
    os.makedirs(run_dir, exist_ok=True)
    summary = _pretrain(point, seed, args, run_dir)
    eval_dir = os.path.join(run_dir, "eval")
    probed = time.perf_counter()
    result = {
        **point,
        "seed": seed,
        "run": run_name(point, seed),
        "steps": summary["steps"],
        "examples_seen": summary["examples_seen"],
        "last_loss": summary["last_loss"],
        "cpu_seconds": round(summary["cpu_seconds"], 1),
        "pretrain_seconds": summary["wall_seconds"],
        "tasks": {},
    }
    for task in task_list(args):
        task_results = os.path.join(eval_dir, task_folder(task), "results.json")
        if os.path.exists(task_results):
            report = _read_json(task_results)
            print(f"{task}: probed earlier, reusing {task_results}")
        else:
            report = probe.main(probe_argv(args, summary["model_dir"], eval_dir, task, seed))
        for name, entry in report["tasks"].items():
            metric, value = primary_metric(entry["test_metrics"])
            result["tasks"][name] = {
                "metric": metric, "test": value, "valid": entry["valid_score"], "patch_mode": entry["patch_mode"],
                "test_metrics": entry["test_metrics"],
            }
    result["probe_seconds"] = round(time.perf_counter() - probed, 1)
    if not args.keep_checkpoints:
        shutil.rmtree(os.path.join(run_dir, "pretrain", "checkpoints"), ignore_errors=True)
        shutil.rmtree(os.path.join(eval_dir, "embeddings"), ignore_errors=True)
    _write_json(result_path, result)
    return result


def interval95(values) -> tuple[float, float]:
    """`(mean, half-width)` of the two-sided 95% t-interval of the mean (`scipy.stats.t`); half-width NaN for n < 2."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * sem)


def aggregate(results: list[dict]) -> list[dict]:
    """One entry per point (in first-seen order): its seeds, and per task and shown metric the mean, the 95%
    interval's half-width and the per-seed values (x100); the same for pre-training CPU-seconds and steps."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(point_key(result), []).append(result)
    points = []
    for runs in groups.values():
        first = runs[0]
        entry = {f: first[f] for f in (*FACTORS, "examples")}
        entry["seeds"] = [r["seed"] for r in runs]
        entry["steps"] = first["steps"]
        entry["cpu_seconds"] = dict(zip(("mean", "half_width"), interval95([r["cpu_seconds"] for r in runs])))
        entry["tasks"] = {}
        for task, first_task in first["tasks"].items():
            metrics = {}
            for metric in shown_metrics(first_task["test_metrics"]):
                values = [100 * float(r["tasks"][task]["test_metrics"][metric]) for r in runs if task in r["tasks"]]
                mean, half = interval95(values)
                metrics[metric] = {"mean": mean, "half_width": half, "values": values}
            entry["tasks"][task] = metrics
        points.append(entry)
    return points


def load_baselines(paths: str | None) -> dict[str, dict]:
    """`{row name: {task: {metric: value x100}}}` from probe.py `results.json` files."""
    baselines = {}
    for path in filter(None, (p.strip() for p in (paths or "").split(","))):
        if not os.path.isfile(path):
            raise ValueError(f"--baselines {path}: no such file; give probe.py results.json files, comma-separated.")
        report = _read_json(path)
        name = report.get("model_name") or os.path.basename(os.path.dirname(path))
        if str(report.get("model", "")).startswith("handcrafted:"):
            name = report["model"]
        baselines[name] = {
            task: {m: 100 * float(v) for m, v in entry["test_metrics"].items() if isinstance(v, (int, float))}
            for task, entry in report["tasks"].items()
        }
    return baselines


def _columns(points: list[dict]) -> list[tuple[str, str]]:
    columns = []
    for point in points:
        for task, metrics in point["tasks"].items():
            for metric in metrics:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    return columns


def _varying(points: list[dict]) -> list[str]:
    names = [f for f in (*FACTORS, "examples") if len({str(p[f]) for p in points}) > 1]
    return names or ["variant"]


def _format_factor(factor: str, value) -> str:
    if factor == "crop_frames" and value is None:
        return "96"
    if factor == "mask_ratio":
        return f"{value:g}"
    if factor == "recipe" and value == "":
        return "-"
    return str(value)


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "–"
    if math.isnan(stats["half_width"]):
        return f"{stats['mean']:.1f}"
    return f"{stats['mean']:.1f} ± {stats['half_width']:.1f}"


def render_markdown(points: list[dict], args: AblationArguments, seconds: float, baselines: dict | None = None) -> str:
    baselines = baselines or {}
    varying = _varying(points)
    columns = _columns(points)
    header = [FACTOR_LABELS.get(f, f) for f in varying] + ["seeds", "steps", "pre-training CPU-min"] + [
        f"{task} ({metric})" for task, metric in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        cpu = point["cpu_seconds"]
        cpu_cell = _cell({"mean": cpu["mean"] / 60, "half_width": cpu["half_width"] / 60})
        lines.append(
            "| " + " | ".join(
                [_format_factor(f, point[f]) for f in varying]
                + [str(len(point["seeds"])), str(point["steps"]), cpu_cell]
                + [_cell(point["tasks"].get(task, {}).get(metric)) for task, metric in columns]
            ) + " |"
        )
    for name, tasks in baselines.items():
        cells = [f"{tasks[t][m]:.1f}" if m in tasks.get(t, {}) else "–" for t, m in columns]
        lines.append("| " + " | ".join([f"`{name}`"] + [""] * (len(varying) - 1) + ["", "", "0"] + cells) + " |")
    fixed = [f"{FACTOR_LABELS.get(f, f)} {_format_factor(f, points[0][f])}" for f in (*FACTORS, "examples")
             if f not in varying]
    protocol = "216-probe JukeMIR grid" if args.full_grid else "fast 8-probe subset of the JukeMIR grid"
    data = "the generated corpus" if args.dataset == "synthetic" else f"{args.dataset} {args.data_dir or ''}".strip()
    seeds = sorted({s for p in points for s in p["seeds"]})
    lines += [
        "",
        f"Test metrics x100, mean ± half-width of the 95% t-interval over seeds {seeds} ({protocol}, configuration "
        f"chosen on validation); pre-training on {data}; fixed: {', '.join(fixed) or 'nothing'}; CPU-min: process "
        f"CPU time of the pre-training loop. {sum(len(p['seeds']) for p in points)} runs, {seconds / 60:.1f} min "
        "in this session.",
    ]
    if baselines:
        lines[-1] += " Rows in `code` are reference features (no pre-training), probed the same way."
    return "\n".join(lines)


def _series(points: list[dict], factor: str, base: dict) -> list[dict]:
    """Points that differ from `base` at most in `factor`, in the sweep's order (sorted when numeric)."""
    others = [f for f in (*FACTORS, "examples") if f != factor]
    rows = [p for p in points if all(p[f] == base[f] for f in others)]
    if factor in ("mask_ratio", "batch_size", "crop_frames", "examples"):
        rows = sorted(rows, key=lambda p: p[factor] or 0)
    return rows


def _y_limits(metric: str, lows: list[float], highs: list[float]) -> tuple[float, float]:
    """Axes that start at the metric's floor (chance for ROC-AUC, else 0), so small differences look small."""
    floor = 50.0 if metric.startswith("roc_auc") else 0.0
    low = min([floor] + [v - 2 for v in lows])
    high = 100.0 if metric.startswith("roc_auc") else min(100.0, 10 * math.ceil((max(highs + [floor]) + 5) / 10))
    return low, high


def _draw_panels(points_by_series, columns, baselines, x_of, xlabel, path, log_x=False, categorical=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(columns), figsize=(3.3 * len(columns), 3.1), squeeze=False)
    for ax, (task, metric) in zip(axes[0], columns):
        lows, highs = [], []
        for label, series in points_by_series:
            stats = [p["tasks"].get(task, {}).get(metric) for p in series]
            keep = [(p, s) for p, s in zip(series, stats) if s is not None]
            if not keep:
                continue
            xs = [x_of(p) for p, _ in keep]
            means = [s["mean"] for _, s in keep]
            errors = [0.0 if math.isnan(s["half_width"]) else s["half_width"] for _, s in keep]
            ax.errorbar(xs, means, yerr=errors, fmt="o-" if len(keep) > 1 and not categorical else "o",
                        capsize=3, label=label, markersize=4)
            lows += [m - e for m, e in zip(means, errors)]
            highs += [m + e for m, e in zip(means, errors)]
        for i, (name, tasks) in enumerate(baselines.items()):
            if metric in tasks.get(task, {}):
                value = tasks[task][metric]
                ax.axhline(value, color=f"C{7 + i % 3}", linestyle="--", linewidth=1, label=name)
                highs.append(value)
                lows.append(value)
        if lows:
            ax.set_ylim(*_y_limits(metric, lows, highs))
        ax.set_title(f"{task}\n({metric})", fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        if log_x:
            ax.set_xscale("log", base=2)
        if categorical:
            ax.set_xticks(range(len(categorical)), categorical, rotation=40, ha="right", fontsize=7)
            ax.set_xlim(-0.5, len(categorical) - 0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test metric x100 (mean, 95% interval)", fontsize=8)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if labels:
        axes[0][-1].legend(fontsize=6, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


NUMERIC_FACTORS = {"mask_ratio": False, "batch_size": True, "crop_frames": False}  # factor: log x axis


def plot_results(points: list[dict], base: dict, output_dir: str, baselines: dict | None = None) -> list[str]:
    """One figure per factor varied around the base (metric vs factor, error bars: the 95% interval over seeds), and
    metric vs pre-training compute (CPU-seconds, and examples) for every point; baselines as dashed lines."""
    baselines = baselines or {}
    columns = _columns(points)
    written = []
    budget = max(p["examples"] for p in points)
    base = {**base, "examples": budget}
    for factor in FACTORS:
        rows = _series(points, factor, base)
        if len(rows) < 2:
            continue
        path = os.path.join(output_dir, f"metric_vs_{factor}.png")
        if factor in NUMERIC_FACTORS:
            written.append(_draw_panels(
                [(FACTOR_LABELS[factor], rows)], columns, baselines, lambda p, f=factor: p[f] or 96,
                FACTOR_LABELS[factor], path, log_x=NUMERIC_FACTORS[factor],
            ))
        else:
            names = [_format_factor(factor, p[factor]) for p in rows]
            written.append(_draw_panels(
                [(FACTOR_LABELS[factor], rows)], columns, baselines, lambda p, r=rows: r.index(p),
                FACTOR_LABELS[factor], path, categorical=names,
            ))
    # Compute: every point, grouped into curves over the budget.
    varying = [f for f in _varying(points) if f != "examples"]
    curves: dict[tuple, list[dict]] = {}
    for point in points:
        curves.setdefault(tuple(point[f] for f in FACTORS), []).append(point)
    series = [
        (" ".join(_format_factor(f, rows[0][f]) for f in varying) or "base", sorted(rows, key=lambda p: p["examples"]))
        for rows in curves.values()
    ]
    written.append(_draw_panels(
        series, columns, baselines, lambda p: p["cpu_seconds"]["mean"] / 60,
        "pre-training CPU-minutes (measured)", os.path.join(output_dir, "metric_vs_cpu_seconds.png"),
    ))
    written.append(_draw_panels(
        series, columns, baselines, lambda p: p["examples"], "pre-training examples",
        os.path.join(output_dir, "metric_vs_examples.png"), log_x=True,
    ))
    return written


class ETA:
    """A rough overall estimate: the runs left, at the pre-training seconds per example and the probe seconds per run
    of the runs computed in this session."""

    def __init__(self):
        self.pretrain_seconds, self.pretrain_examples, self.probe_seconds, self.probed = 0.0, 0, 0.0, 0

    def add(self, result: dict, pretrained: bool, probed: bool) -> None:
        if pretrained:
            self.pretrain_seconds += result["pretrain_seconds"]
            self.pretrain_examples += result["examples"]
        if probed:
            self.probe_seconds += result["probe_seconds"]
            self.probed += 1

    def text(self, remaining: list[dict]) -> str:
        if not remaining:
            return "none left"
        if not self.pretrain_examples or not self.probed:
            return "after the first run"
        # `examples` is 0 for a run whose pre-training is done (only its probes are left).
        seconds = sum(p["examples"] for p in remaining) * self.pretrain_seconds / self.pretrain_examples
        seconds += len(remaining) * self.probe_seconds / self.probed
        return f"about {seconds / 3600:.1f} h for {len(remaining)} run(s) left"


def plot_policies(output_dir: str, seed: int = 0, mask_ratio: float = 0.9) -> list[str]:
    """One PNG per masking policy: its masks of both views on a generated clip, square (16x16) and vertical (128x2)
    patches; the kept patches are shown, the dropped ones dimmed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modeling_myna import MynaFeatureExtractor
    from modeling_myna.masking import build_masking_policy, masks_from_noise
    from modeling_myna.modeling_myna import num_kept_tokens
    from myna_common.synthetic import generate_clip

    os.makedirs(output_dir, exist_ok=True)
    audio, _ = generate_clip(seed, key="A minor", tempo=120.0, style="jazz")
    extractor = MynaFeatureExtractor()
    mel = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")["input_values"]
    views = (mel[0:1], mel[1:2])  # two consecutive 96-frame chunks stand for the two crops
    written = []
    for name in MASKING_POLICIES:
        policy = build_masking_policy(name)
        figure, axes = plt.subplots(2, 2, figsize=(6.4, 3.6), gridspec_kw={"height_ratios": [1, 1]})
        for column, patch in enumerate(([16, 16], [128, 2])):
            grid = (128 // patch[0], 96 // patch[1])
            num_kept = num_kept_tokens(grid[0] * grid[1], mask_ratio)
            if name == "frequency_band" and patch[0] == 128:
                policy_here = build_masking_policy("uniform")  # what a hybrid's vertical tokenizer draws
            else:
                policy_here = policy
            noise = policy_here(
                grid, num_kept, 1, generator=torch.Generator().manual_seed(seed), views=views, patch_size=patch
            )
            kept = masks_from_noise(noise, num_kept).view(2, *grid)
            for row in range(2):
                ax = axes[row][column]
                log_mel = torch.log1p(views[row][0]).numpy()
                shade = kept[row].repeat_interleave(patch[0], 0).repeat_interleave(patch[1], 1).numpy()
                ax.imshow(log_mel, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
                ax.imshow(np.where(shade, np.nan, 1.0), origin="lower", aspect="auto", cmap="gray", vmin=0, vmax=1,
                          alpha=0.75, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{'square 16x16' if column == 0 else 'vertical 128x2'}: keeps {num_kept} of "
                                 f"{grid[0] * grid[1]}", fontsize=8)
                if column == 0:
                    ax.set_ylabel(f"view {row + 1}", fontsize=8)
        figure.suptitle(f"masking policy: {name} ({mask_ratio:.0%} masked)", fontsize=9)
        figure.tight_layout()
        path = os.path.join(output_dir, f"masking_{name}.png")
        figure.savefig(path, dpi=72)
        plt.close(figure)
        written.append(path)
    return written


def curve_point(settings: dict) -> dict:
    """The sweep point a pre-training's settings describe (for the table's and plots' columns)."""
    schedule = settings.get("mask_ratio_schedule", "constant")
    if schedule != "constant":
        schedule += f":{settings['mask_ratio_start']:g}"
    width, depth = settings.get("hidden_size"), settings.get("num_hidden_layers")
    return {
        "variant": settings["variant"],
        "model_size": f"{width}x{depth}" if width and depth else settings["model_size"],
        "crop_frames": settings.get("chunk_frames"), "mask_ratio": settings["mask_ratio"], "mask_schedule": schedule,
        "masking_policy": settings["masking_policy"], "batch_size": settings["per_device_batch_size"], "recipe": "",
    }


def curve_checkpoints(args: AblationArguments) -> list[tuple[int, str]]:
    """`(seed, checkpoint folder)` of every checkpoint to probe, over the pre-trainings of `--curve`, which must be
    one recipe with distinct seeds."""
    from myna_training.pretrain import list_checkpoints

    wanted = set(_values(args.curve_steps, int))
    recipe, seeds, checkpoints = None, {}, []
    for folder in _values(args.curve, str):
        kept = [c for c in list_checkpoints(folder) if not wanted or int(c.rsplit("-", 1)[1]) in wanted]
        if not kept:
            raise ValueError(
                f"--curve {folder}: no checkpoints{' at steps ' + args.curve_steps if wanted else ''} under "
                f"{folder}/checkpoints; pre-train with --checkpointing_steps N and --checkpoints_total_limit 0."
            )
        settings = _read_json(os.path.join(kept[-1], "run.json"))["settings"]
        seed, point = int(settings.get("seed", 0)), curve_point(settings)
        if recipe is not None and point != recipe[1]:
            differ = sorted(k for k in point if point[k] != recipe[1][k])
            raise ValueError(
                f"--curve: {folder} and {recipe[0]} are different recipes ({', '.join(differ)} differ); a curve "
                "averages seeds of one recipe: probe each recipe with its own --curve and --output_dir."
            )
        if seed in seeds:
            raise ValueError(
                f"--curve: {folder} and {seeds[seed]} were both pre-trained with --seed {seed}; give each seed once."
            )
        recipe, seeds[seed] = recipe or (folder, point), folder
        checkpoints += [(seed, checkpoint) for checkpoint in kept]
    return checkpoints


def probe_curve(args: AblationArguments) -> dict:
    """Probes every kept checkpoint (or those of `--curve_steps`) of the pre-trainings in `args.curve` (one, or
    seeds of one recipe) on the tasks, and writes the quality-vs-CPU-seconds table and plot. Each checkpoint's probes
    are kept: a rerun probes only new ones."""
    from myna_evaluation import probe

    checkpoints = curve_checkpoints(args)
    baselines = load_baselines(args.baselines)
    settings = _read_json(os.path.join(checkpoints[-1][1], "run.json"))["settings"]
    args = replace(args, dataset=settings["dataset"], data_dir=settings.get("data_dir"))  # for the table's caption
    results, started = [], time.perf_counter()
    for seed, checkpoint in checkpoints:
        step = int(checkpoint.rsplit("-", 1)[1])
        run_dir = os.path.join(args.output_dir, "curve", f"seed{seed}", f"step-{step}")
        result_path = os.path.join(run_dir, RESULT_FILE)
        if os.path.exists(result_path):
            results.append(_read_json(result_path))
            continue
        print(f"\n=== seed {seed}, checkpoint at step {step}: {checkpoint} ===", flush=True)
        model_dir = os.path.join(run_dir, "model")
        progress = export_checkpoint(checkpoint, model_dir)
        settings = _read_json(os.path.join(checkpoint, "run.json"))["settings"]
        result = {
            **curve_point(settings), "examples": progress["examples_seen"], "seed": seed, "run": f"step-{step}",
            "steps": progress["step"], "cpu_seconds": round(progress["cpu_seconds"], 3), "tasks": {},
        }
        for task in task_list(args):
            report = probe.main(probe_argv(args, model_dir, os.path.join(run_dir, "eval"), task, seed))
            for name, entry in report["tasks"].items():
                metric, value = primary_metric(entry["test_metrics"])
                result["tasks"][name] = {
                    "metric": metric, "test": value, "valid": entry["valid_score"],
                    "patch_mode": entry["patch_mode"], "test_metrics": entry["test_metrics"],
                }
        shutil.rmtree(os.path.join(run_dir, "eval", "embeddings"), ignore_errors=True)
        _write_json(result_path, result)
        results.append(result)
    results.sort(key=lambda r: (r["steps"], r["seed"]))  # rows by step, each step's seeds together
    points = aggregate(results)
    table = render_markdown(points, args, time.perf_counter() - started, baselines)
    plot = _draw_panels(
        [("pre-training", points)], _columns(points), baselines, lambda p: p["cpu_seconds"]["mean"] / 60,
        "pre-training CPU-minutes (measured)", os.path.join(args.output_dir, "curve.png"),
    )
    report = {"pretraining": args.curve, "points": points, "runs": results, "baselines": baselines, "plot": plot,
              "table": table}
    os.makedirs(args.output_dir, exist_ok=True)
    _write_json(os.path.join(args.output_dir, "curve.json"), report)
    with open(os.path.join(args.output_dir, "curve.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print("\n" + table)
    return report


def run_state(point: dict, args: AblationArguments, seed: int) -> str:
    """What a run still needs: "done", "probes" (its pre-training finished) or "all"."""
    run_dir = os.path.join(args.runs_dir or os.path.join(args.output_dir, "runs"), run_name(point, seed))
    if os.path.exists(os.path.join(run_dir, RESULT_FILE)):
        return "done"
    return "probes" if os.path.exists(os.path.join(run_dir, PRETRAIN_SUMMARY)) else "all"


def write_report(results, points, args, seconds, baselines, plots=()) -> dict:
    aggregated = aggregate(results)
    table = render_markdown(aggregated, args, seconds, baselines)
    report = {
        "arguments": asdict(args), "base": points[0], "points": aggregated, "runs": results, "baselines": baselines,
        "seconds": seconds, "plots": list(plots),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    _write_json(os.path.join(args.output_dir, "results.json"), report)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    report["table"] = table
    return report


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser((AblationArguments,)).parse_args_into_dataclasses(args=argv)
    seeds = _values(args.seeds, int)
    if args.plot_policies:
        paths = plot_policies(args.plot_policies, seed=seeds[0] if seeds else 0)
        print("\n".join(paths))
        return {"plots": paths}
    if args.curve:
        return probe_curve(args)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {args.seeds!r}: give one or more distinct seeds, e.g. 0,1,2.")
    if args.dataset == "folder" and not args.data_dir:
        raise ValueError("--dataset folder needs --data_dir, the folder of audio to pre-train on.")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    points = sweep_points(args)
    baselines = load_baselines(args.baselines)  # a wrong path fails before any run
    # Seed-major: a partial sweep has every point once before any point twice.
    runs = [(point, seed) for seed in seeds for point in points]
    os.makedirs(args.output_dir, exist_ok=True)
    print(f"ablation: {len(points)} points x {len(seeds)} seed(s) = {len(runs)} runs -> {args.output_dir}")
    started = time.perf_counter()
    results, eta = [], ETA()
    for i, (point, seed) in enumerate(runs):
        state = run_state(point, args, seed)
        left = [
            {"examples": p["examples"] if run_state(p, args, s) == "all" else 0}
            for p, s in runs[i:] if run_state(p, args, s) != "done"
        ]
        if state != "done":
            print(f"\n=== run {i + 1}/{len(runs)}: {run_name(point, seed)} (ETA: {eta.text(left)}) ===", flush=True)
        result = run_point(point, args, seed)
        eta.add(result, pretrained=state == "all", probed=state != "done")
        results.append(result)
        write_report(results, points, args, time.perf_counter() - started, baselines)  # a partial table as it goes
    seconds = time.perf_counter() - started
    plots = plot_results(aggregate(results), points[0], args.output_dir, baselines)
    report = write_report(results, points, args, seconds, baselines, plots)
    print("\n" + report["table"])
    return report


if __name__ == "__main__":
    main()
