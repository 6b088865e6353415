"""The points of a sweep and what each run is called and given: the factors and their paper values, the design (one
factor at a time around a base run, or the grid), run names, and the flags of a run's `pretrain.py` and of its
`probe.py` per task.

A point is a dict over `FACTORS` plus `examples` (the training budget): the same examples for every point, so a
smaller batch takes more steps. A run is a point with a seed.
"""

import itertools
import math
import os
import re

from modeling_myna.configuration_myna import MASKING_POLICIES, MODEL_SIZES, VARIANTS
from myna_training.ablation.arguments import (
    AblationArguments,
    parse_model_size,
    parse_recipes,
    parse_schedule,
    split_list,
)


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


def factor_values(args: AblationArguments) -> dict[str, list]:
    """The values the sweep lists for each factor, checked."""
    values = {
        "mask_ratio": split_list(args.mask_ratios, float),
        "mask_schedule": [parse_schedule(v) for v in split_list(args.mask_schedules, str)],
        "masking_policy": split_list(args.masking_policies, str),
        "batch_size": split_list(args.batch_sizes, int),
        "crop_frames": split_list(args.crop_frames, int) or [None],
        "model_size": [parse_model_size(v) for v in split_list(args.model_sizes, str)],
        "variant": split_list(args.variants, str),
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
    budgets = split_list(args.examples_per_run, int)
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


def varying_factors(points: list[dict]) -> list[str]:
    """The factors (and `examples`) whose value differs between points: the columns that tell rows apart."""
    names = [f for f in (*FACTORS, "examples") if len({str(p[f]) for p in points}) > 1]
    return names or ["variant"]


def format_factor(factor: str, value) -> str:
    """A factor's value as a table cell or axis label."""
    if factor == "crop_frames" and value is None:
        return "96"
    if factor == "mask_ratio":
        return f"{value:g}"
    if factor == "recipe" and value == "":
        return "-"
    return str(value)


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


__all__ = [
    "FACTORS", "FACTOR_LABELS", "PAPER_VALUES", "factor_values", "format_factor", "point_key", "pretrain_argv",
    "probe_argv", "run_name", "sweep_points", "task_folder", "task_list", "varying_factors",
]
