"""Quality against compute along one pre-training (`--curve`): every kept checkpoint (or those of `--curve_steps`)
is exported (`myna_training.export.export_checkpoint`), probed on the tasks, and tabled and drawn against the run's
CPU-seconds at that checkpoint. Several pre-trainings of one recipe with different seeds give each step's mean and
95% interval.

    <output_dir>/curve/seed<N>/step-<S>/   model/, eval/, result.json (with its fingerprint: `fingerprint.py`)
    <output_dir>/curve.json, curve.md, curve.png

A checkpoint's probes are kept: a rerun probes only new checkpoints, and again those probed with other settings.
"""

import os
import shutil
import time
from dataclasses import replace

from myna_common.atomic import write_json, write_text
from myna_training.ablation import fingerprint
from myna_training.ablation.arguments import AblationArguments, split_list
from myna_training.ablation.plots import draw_panels
from myna_training.ablation.stages import RESULT_FILE, read_json, without_fingerprint
from myna_training.ablation.statistics import aggregate, load_baselines, metric_columns, task_results
from myna_training.ablation.sweep import probe_argv, task_list
from myna_training.ablation.tables import render_markdown
from myna_training.arguments import DEFAULT_STATISTICS_TARGET_NAMES
from myna_training.export import export_checkpoint
from myna_training.run_folder import RUN_FILE


# Settings named in the curve's recipe column when they differ from their default (the paper's).
RECIPE_SETTINGS = (
    ("input_scale", "power"), ("projection_hidden_size", 0), ("statistics_loss_weight", 0.0),
    ("statistics_targets", list(DEFAULT_STATISTICS_TARGET_NAMES)), ("tokenizer_loss_weights", None),
)


def _compact(value) -> str:
    """`3` for 3.0, `3:1` for [3.0, 1.0]: a recipe column stays short."""
    if isinstance(value, list):
        return ":".join(_compact(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


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
        "masking_policy": settings["masking_policy"], "batch_size": settings["per_device_batch_size"],
        # What no other column names: the log-mel input, an MLP projection head, the statistics loss, a hybrid's
        # tokenizer weights (a settings file of an older run has none of them).
        "recipe": ",".join(
            f"{name}={_compact(settings[name])}" for name, default in RECIPE_SETTINGS
            if settings.get(name, default) != default
        ),
    }


def curve_checkpoints(args: AblationArguments) -> list[tuple[int, str]]:
    """`(seed, checkpoint folder)` of every checkpoint to probe, over the pre-trainings of `--curve`, which must be
    one recipe with distinct seeds."""
    from myna_training.pretrain import list_checkpoints

    wanted = set(split_list(args.curve_steps, int))
    recipe, seeds, checkpoints = None, {}, []
    for folder in split_list(args.curve, str):
        kept = [c for c in list_checkpoints(folder) if not wanted or int(c.rsplit("-", 1)[1]) in wanted]
        if not kept:
            raise ValueError(
                f"--curve {folder}: no checkpoints{' at steps ' + args.curve_steps if wanted else ''} under "
                f"{folder}/checkpoints; pre-train with --checkpointing_steps N and --checkpoints_total_limit 0."
            )
        settings = read_json(os.path.join(kept[-1], RUN_FILE))["settings"]
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


def _probe_checkpoint(args: AblationArguments, seed: int, checkpoint: str, run_dir: str, step: int) -> dict:
    """Exports one checkpoint into `run_dir/model` and probes it on every task."""
    from myna_evaluation import probe

    print(f"\n=== seed {seed}, checkpoint at step {step}: {checkpoint} ===", flush=True)
    model_dir = os.path.join(run_dir, "model")
    progress = export_checkpoint(checkpoint, model_dir)
    settings = read_json(os.path.join(checkpoint, RUN_FILE))["settings"]
    result = {
        **curve_point(settings), "examples": progress["examples_seen"], "seed": seed, "run": f"step-{step}",
        "steps": progress["step"], "cpu_seconds": round(progress["cpu_seconds"], 3), "tasks": {},
    }
    for task in task_list(args):
        report = probe.main(probe_argv(args, model_dir, os.path.join(run_dir, "eval"), task, seed))
        result["tasks"].update(task_results(report))
    return result


def probe_curve(args: AblationArguments) -> dict:
    """Probes every kept checkpoint (or those of `--curve_steps`) of the pre-trainings in `args.curve` (one, or
    seeds of one recipe) on the tasks, and writes the quality-vs-CPU-seconds table and plot. Each checkpoint's probes
    are kept: a rerun probes only new ones (and those another sweep's probe settings made)."""
    checkpoints = curve_checkpoints(args)
    baselines = load_baselines(args.baselines)
    settings = read_json(os.path.join(checkpoints[-1][1], RUN_FILE))["settings"]
    args = replace(args, dataset=settings["dataset"], data_dir=settings.get("data_dir"))  # for the table's caption
    results, started = [], time.perf_counter()
    for seed, checkpoint in checkpoints:
        step = int(checkpoint.rsplit("-", 1)[1])
        run_dir = os.path.join(args.output_dir, "curve", f"seed{seed}", f"step-{step}")
        result_path = os.path.join(run_dir, RESULT_FILE)
        wanted = fingerprint.curve_step(read_json(os.path.join(checkpoint, RUN_FILE))["run_id"], step, args)
        if os.path.exists(result_path):
            result = read_json(result_path)
            if result.get(fingerprint.FINGERPRINT) == wanted:
                results.append(without_fingerprint(result))
                continue
        result = _probe_checkpoint(args, seed, checkpoint, run_dir, step)
        shutil.rmtree(os.path.join(run_dir, "eval", "embeddings"), ignore_errors=True)
        write_json(result_path, {**result, fingerprint.FINGERPRINT: wanted})
        results.append(result)
    results.sort(key=lambda r: (r["steps"], r["seed"]))  # rows by step, each step's seeds together
    points = aggregate(results)
    table = render_markdown(points, args, time.perf_counter() - started, baselines)
    plot = draw_panels(
        [("pre-training", points)], metric_columns(points), baselines, lambda p: p["cpu_seconds"]["mean"] / 60,
        "pre-training CPU-minutes (measured)", os.path.join(args.output_dir, "curve.png"),
    )
    report = {"pretraining": args.curve, "points": points, "runs": results, "baselines": baselines, "plot": plot,
              "table": table}
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "curve.json"), report)
    write_text(os.path.join(args.output_dir, "curve.md"), table + "\n")
    print("\n" + table)
    return report


__all__ = ["curve_checkpoints", "curve_point", "probe_curve"]
