"""The markdown table of a sweep or a curve: one row per point (the factors that vary, seeds, steps, pre-training
CPU-minutes, each task's metrics as mean ± 95% half-width), the baselines as rows in `code`, and a caption that says
what was measured on which data."""

import math

from myna_training.ablation.arguments import AblationArguments
from myna_training.ablation.statistics import metric_columns
from myna_training.ablation.sweep import FACTOR_LABELS, FACTORS, format_factor, varying_factors


def _cell(stats: dict | None) -> str:
    if stats is None:
        return "–"
    if math.isnan(stats["half_width"]):
        return f"{stats['mean']:.1f}"
    return f"{stats['mean']:.1f} ± {stats['half_width']:.1f}"


def render_markdown(points: list[dict], args: AblationArguments, seconds: float, baselines: dict | None = None) -> str:
    baselines = baselines or {}
    varying = varying_factors(points)
    columns = metric_columns(points)
    header = [FACTOR_LABELS.get(f, f) for f in varying] + ["seeds", "steps", "pre-training CPU-min"] + [
        f"{task} ({metric})" for task, metric in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        cpu = point["cpu_seconds"]
        cpu_cell = _cell({"mean": cpu["mean"] / 60, "half_width": cpu["half_width"] / 60})
        lines.append(
            "| " + " | ".join(
                [format_factor(f, point[f]) for f in varying]
                + [str(len(point["seeds"])), str(point["steps"]), cpu_cell]
                + [_cell(point["tasks"].get(task, {}).get(metric)) for task, metric in columns]
            ) + " |"
        )
    for name, tasks in baselines.items():
        cells = [f"{tasks[t][m]:.1f}" if m in tasks.get(t, {}) else "–" for t, m in columns]
        lines.append("| " + " | ".join([f"`{name}`"] + [""] * (len(varying) - 1) + ["", "", "0"] + cells) + " |")
    fixed = [f"{FACTOR_LABELS.get(f, f)} {format_factor(f, points[0][f])}" for f in (*FACTORS, "examples")
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


__all__ = ["render_markdown"]
