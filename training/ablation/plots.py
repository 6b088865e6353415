"""The sweep's figures and the masking pictures.

`plot_results`: metric vs each factor varied around the base run (the paper's Figure 4 for the masking ratio, Table 3
for the batch size), and metric vs pre-training compute (measured CPU-seconds, and examples) for every point; error
bars are the 95% interval over seeds, axes start at the metric's floor, baselines are dashed lines. `plot_policies`:
one picture per masking policy, its kept patches on a generated clip. Every PNG is written whole or not at all
(`myna_common.atomic`).
"""

import math
import os

import numpy as np
import torch

from modeling_myna.configuration_myna import MASKING_POLICIES
from myna_common.atomic import atomic_path
from myna_training.ablation.statistics import metric_columns
from myna_training.ablation.sweep import FACTOR_LABELS, FACTORS, format_factor, varying_factors


NUMERIC_FACTORS = {"mask_ratio": False, "batch_size": True, "crop_frames": False}  # factor: log x axis


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str, dpi: int) -> str:
    with atomic_path(path, suffix=".png") as partial:
        figure.savefig(partial, dpi=dpi, format="png")
    return path


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


def draw_panels(points_by_series, columns, baselines, x_of, xlabel, path, log_x=False, categorical=None) -> str:
    """One panel per `(task, metric)` of `columns`: each `(label, points)` series against `x_of(point)`."""
    plt = _pyplot()
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
    _, labels = axes[0][-1].get_legend_handles_labels()
    if labels:
        axes[0][-1].legend(fontsize=6, loc="lower right")
    figure.tight_layout()
    _save(figure, path, dpi=90)
    plt.close(figure)
    return path


def plot_results(points: list[dict], base: dict, output_dir: str, baselines: dict | None = None) -> list[str]:
    """One figure per factor varied around the base (metric vs factor, error bars: the 95% interval over seeds), and
    metric vs pre-training compute (CPU-seconds, and examples) for every point; baselines as dashed lines."""
    baselines = baselines or {}
    columns = metric_columns(points)
    written = []
    budget = max(p["examples"] for p in points)
    base = {**base, "examples": budget}
    for factor in FACTORS:
        rows = _series(points, factor, base)
        if len(rows) < 2:
            continue
        path = os.path.join(output_dir, f"metric_vs_{factor}.png")
        if factor in NUMERIC_FACTORS:
            written.append(draw_panels(
                [(FACTOR_LABELS[factor], rows)], columns, baselines, lambda p, f=factor: p[f] or 96,
                FACTOR_LABELS[factor], path, log_x=NUMERIC_FACTORS[factor],
            ))
        else:
            names = [format_factor(factor, p[factor]) for p in rows]
            written.append(draw_panels(
                [(FACTOR_LABELS[factor], rows)], columns, baselines, lambda p, r=rows: r.index(p),
                FACTOR_LABELS[factor], path, categorical=names,
            ))
    # Compute: every point, grouped into curves over the budget.
    varying = [f for f in varying_factors(points) if f != "examples"]
    curves: dict[tuple, list[dict]] = {}
    for point in points:
        curves.setdefault(tuple(point[f] for f in FACTORS), []).append(point)
    series = [
        (" ".join(format_factor(f, rows[0][f]) for f in varying) or "base", sorted(rows, key=lambda p: p["examples"]))
        for rows in curves.values()
    ]
    written.append(draw_panels(
        series, columns, baselines, lambda p: p["cpu_seconds"]["mean"] / 60,
        "pre-training CPU-minutes (measured)", os.path.join(output_dir, "metric_vs_cpu_seconds.png"),
    ))
    written.append(draw_panels(
        series, columns, baselines, lambda p: p["examples"], "pre-training examples",
        os.path.join(output_dir, "metric_vs_examples.png"), log_x=True,
    ))
    return written


def plot_policies(output_dir: str, seed: int = 0, mask_ratio: float = 0.9) -> list[str]:
    """One PNG per masking policy: its masks of both views on a generated clip, square (16x16) and vertical (128x2)
    patches. Kept patches are drawn in full colour on one colour scale (its bar beside the panels), whose low end is
    not black, so a quiet kept patch still reads as kept; dropped patches are the same spectrogram dimmed to light
    grey. Axes: time in seconds, mel bin."""
    from matplotlib.colors import ListedColormap

    from modeling_myna import MynaFeatureExtractor
    from modeling_myna.masking import build_masking_policy, masks_from_noise
    from modeling_myna.modeling_myna import num_kept_tokens
    from myna_common.synthetic import generate_clip

    plt = _pyplot()
    os.makedirs(output_dir, exist_ok=True)
    audio, _ = generate_clip(seed, key="A minor", tempo=120.0, style="jazz")
    extractor = MynaFeatureExtractor()
    mel = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")["input_values"]
    views = (mel[0:1], mel[1:2])  # two consecutive 96-frame chunks stand for the two crops
    log_mels = [torch.log1p(view[0]).numpy() for view in views]  # (n_mels, frames) each
    low, high = np.percentile(np.stack(log_mels), [0, 99])  # the loudest 1% saturate: colour for the rest
    n_mels, frames = log_mels[0].shape
    seconds = frames * extractor.hop_length / extractor.sampling_rate
    extent = (0.0, seconds, 0.0, n_mels)  # imshow's (left, right, bottom, top): x in s, y in mel bins
    kept_colours = ListedColormap(plt.get_cmap("magma")(np.linspace(0.25, 1.0, 192)))  # no black at the low end
    written = []
    for name in MASKING_POLICIES:
        policy = build_masking_policy(name)
        figure, axes = plt.subplots(2, 2, figsize=(7.2, 4.4), sharex=True, sharey=True, layout="constrained")
        for column, patch in enumerate(([16, 16], [128, 2])):
            grid = (n_mels // patch[0], frames // patch[1])
            num_kept = num_kept_tokens(grid[0] * grid[1], mask_ratio)
            if name == "frequency_band" and patch[0] == n_mels:
                policy_here = build_masking_policy("uniform")  # what a hybrid's vertical tokenizer draws
            else:
                policy_here = policy
            noise = policy_here(
                grid, num_kept, 1, generator=torch.Generator().manual_seed(seed), views=views, patch_size=patch
            )
            kept = masks_from_noise(noise, num_kept).view(2, *grid)
            for row in range(2):
                ax = axes[row][column]
                shade = kept[row].repeat_interleave(patch[0], 0).repeat_interleave(patch[1], 1).numpy()
                ax.imshow(log_mels[row], origin="lower", aspect="auto", cmap="gray", vmin=low, vmax=high,
                          alpha=0.3, extent=extent, interpolation="nearest")  # fmt: skip
                image = ax.imshow(np.where(shade, log_mels[row], np.nan), origin="lower", aspect="auto",
                                  cmap=kept_colours, vmin=low, vmax=high, extent=extent,
                                  interpolation="nearest")  # fmt: skip
                ax.tick_params(labelsize=7)
                if row == 0:
                    ax.set_title(f"{'square 16x16' if column == 0 else 'vertical 128x2'}: keeps {num_kept} of "
                                 f"{grid[0] * grid[1]}", fontsize=8)  # fmt: skip
                else:
                    ax.set_xlabel("time (s)", fontsize=7)
                if column == 0:
                    ax.set_ylabel(f"view {row + 1}: mel bin", fontsize=7)
        bar = figure.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
        bar.set_label("kept patches: log(1 + mel power)", fontsize=7)
        bar.ax.tick_params(labelsize=7)
        figure.suptitle(f"masking policy: {name} ({mask_ratio:.0%} masked; dropped patches in grey)", fontsize=9)
        written.append(_save(figure, os.path.join(output_dir, f"masking_{name}.png"), dpi=72))
        plt.close(figure)
    return written


__all__ = ["NUMERIC_FACTORS", "draw_panels", "plot_policies", "plot_results"]
