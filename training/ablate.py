"""Ablations of Myna pre-training: masking ratio, masking policy, batch size, model size and patch layout.

The paper's ablations (arXiv 2502.12511: masking ratio, Figure 4; batch size, Appendix A / Table 3; patch layout,
Table 1) are the experiments every adaptation of Myna repeats. Each run of a sweep is a short pre-training
(`myna_training.pretrain.main`, in this process) followed by the evaluation probes (`myna_evaluation.probe`, the
fast 8-probe subset by default, `--full_grid` for the paper's 216 probes) on the generated tasks, which need no
download. The sweep writes one table (`results.json`, `results.md`) and plots: metric vs masking ratio per task (as
Figure 4), metric vs batch size (as Table 3), and one bar per masking policy.

    python training/ablate.py                                    # the default sweep (CPU, generated corpus)
    python training/ablate.py --mask_ratios 0.5,0.9 --masking_policies uniform --variants base \
        --batch_sizes 64 --output_dir outputs/ablation-ratio     # a 2-point sweep
    python training/ablate.py --design grid ...                  # every combination instead of one factor at a time
    python training/ablate.py --plot_policies docs/masking       # one PNG per masking policy on a generated clip

`--design one_at_a_time` (the default, as the paper's ablations) varies one factor at a time around a base run (the
paper's values where the sweep has them: 90% masking, uniform, square patches, the largest batch; else the first
value). Every run sees the same number of training examples (`--examples_per_run`), so a smaller batch takes more
steps. A run whose `result.json` exists is reused, so a killed sweep continues where it stopped.
"""

import itertools
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import HfArgumentParser

from modeling_myna.configuration_myna import MASKING_POLICIES, MODEL_SIZES, VARIANTS


FACTORS = ("mask_ratio", "masking_policy", "batch_size", "model_size", "variant")
# The paper's values, used as the base of a one-factor-at-a-time sweep when the sweep lists them.
PAPER_VALUES = {"mask_ratio": 0.9, "masking_policy": "uniform", "variant": "base", "model_size": "vit-s"}


@dataclass
class AblationArguments:
    output_dir: str = field(default="outputs/ablation", metadata={"help": "Runs, results.json, results.md, plots."})
    mask_ratios: str = field(default="0.5,0.75,0.9", metadata={"help": "Comma list of masking ratios."})
    masking_policies: str = field(
        default=",".join(MASKING_POLICIES), metadata={"help": f"Comma list of policies of {list(MASKING_POLICIES)}."}
    )
    batch_sizes: str = field(default="16,64", metadata={"help": "Comma list of batch sizes."})
    model_sizes: str = field(default="small", metadata={"help": f"Comma list of sizes of {list(MODEL_SIZES)}."})
    variants: str = field(default="base,vertical", metadata={"help": f"Comma list of {sorted(VARIANTS)}."})
    design: str = field(
        default="one_at_a_time", metadata={"help": "'one_at_a_time' around a base run (the paper's way) or 'grid'."}
    )
    examples_per_run: int = field(default=6400, metadata={"help": "Training examples each run sees (steps x batch)."})
    num_clips: int = field(default=256, metadata={"help": "Clips of the generated pre-training corpus."})
    tasks: str = field(
        default="synthetic-key,synthetic-tempo,synthetic-style", metadata={"help": "Comma list of probe tasks."}
    )
    synthetic_sizes: str = field(default="256,96,96", metadata={"help": "Generated clips per probe split."})
    synthetic_duration: float = field(default=10.0, metadata={"help": "Seconds per generated probe clip."})
    full_grid: bool = field(default=False, metadata={"help": "The paper's 216-probe grid instead of --fast (8)."})
    pretrain_args: str = field(default="", metadata={"help": "Extra flags for every pretrain.py run, one string."})
    seed: int = field(default=0, metadata={"help": "Seed of every run (weights, data order, masks, probes)."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep each run's checkpoints (large)."})
    plot_policies: str | None = field(
        default=None, metadata={"help": "Only draw one PNG per masking policy into this folder, then exit."}
    )


def _values(text: str, cast) -> list:
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def sweep_points(args: AblationArguments) -> list[dict]:
    """The runs of the sweep, each a dict over `FACTORS`, base run first."""
    values = {
        "mask_ratio": _values(args.mask_ratios, float),
        "masking_policy": _values(args.masking_policies, str),
        "batch_size": _values(args.batch_sizes, int),
        "model_size": _values(args.model_sizes, str),
        "variant": _values(args.variants, str),
    }
    for name, allowed in (("masking_policy", MASKING_POLICIES), ("model_size", MODEL_SIZES), ("variant", VARIANTS)):
        unknown = [v for v in values[name] if v not in allowed]
        if unknown:
            raise ValueError(f"unknown {name} {unknown}: choose from {list(allowed)}.")
    if any(not v for v in values.values()):
        raise ValueError(f"every factor needs at least one value, got {values}.")
    if args.design == "grid":
        return [dict(zip(FACTORS, combo)) for combo in itertools.product(*(values[f] for f in FACTORS))]
    if args.design != "one_at_a_time":
        raise ValueError(f"design={args.design!r}: choose 'one_at_a_time' or 'grid'.")
    base = {f: PAPER_VALUES[f] if PAPER_VALUES.get(f) in values[f] else values[f][0] for f in FACTORS}
    base["batch_size"] = max(values["batch_size"])
    points = [base]
    for factor in FACTORS:
        for value in values[factor]:
            point = {**base, factor: value}
            if point not in points and _valid(point):
                points.append(point)
    return points


def _valid(point: dict) -> bool:
    # frequency_band keeps a band of patch rows; a vertical-only model has one row (MynaConfig rejects it).
    return not (point["masking_policy"] == "frequency_band" and point["variant"] == "vertical")


def run_name(point: dict) -> str:
    return (
        f"{point['variant']}-{point['model_size']}-r{point['mask_ratio']:g}-{point['masking_policy']}"
        f"-b{point['batch_size']}"
    )


def pretrain_argv(point: dict, args: AblationArguments, run_dir: str) -> list[str]:
    steps = max(1, math.ceil(args.examples_per_run / point["batch_size"]))
    return [
        "--output_dir", run_dir,
        "--overwrite_output_dir",  # a run folder without result.json is an interrupted run: it starts again
        "--cache_dir", os.path.join(args.output_dir, "cache"),  # spectrograms computed once for the sweep
        "--variant", point["variant"],
        "--model_size", point["model_size"],
        "--mask_ratio", str(point["mask_ratio"]),
        "--masking_policy", point["masking_policy"],
        "--per_device_batch_size", str(point["batch_size"]),
        "--max_steps", str(steps),
        "--warmup_steps", str(max(1, steps // 10)),
        "--num_clips", str(args.num_clips),
        "--checkpointing_steps", "0",
        "--probe_clips", "0",
        "--seed", str(args.seed),
        *args.pretrain_args.split(),
    ]


def probe_argv(args: AblationArguments, model_dir: str, eval_dir: str) -> list[str]:
    return [
        "--model", model_dir,
        "--tasks", args.tasks,
        "--output_dir", eval_dir,
        "--synthetic_sizes", args.synthetic_sizes,
        "--synthetic_duration", str(args.synthetic_duration),
        "--seed", str(args.seed),
        "--tsne", "false",
        "--progress", "false",
        *([] if args.full_grid else ["--fast"]),
    ]


def primary_metric(metrics: dict) -> tuple[str, float]:
    """The first metric a task reports (the one its probe is selected on)."""
    name = next(iter(metrics))
    return name, float(metrics[name])


def run_point(point: dict, args: AblationArguments) -> dict:
    """Pre-trains and probes one point of the sweep (or reads its earlier result)."""
    from myna_evaluation import probe
    from myna_training import pretrain

    run_dir = os.path.join(args.output_dir, "runs", run_name(point))
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path, encoding="utf-8") as f:
            return json.load(f)
    started = time.perf_counter()
    summary = pretrain.main(pretrain_argv(point, args, run_dir))
    trained = time.perf_counter()
    report = probe.main(probe_argv(args, summary["model_dir"], os.path.join(run_dir, "eval")))
    result = {
        **point,
        "run": run_name(point),
        "steps": summary["steps"],
        "examples_seen": summary["examples_seen"],
        "last_loss": summary["last_loss"],
        "pretrain_seconds": round(trained - started, 1),
        "probe_seconds": round(time.perf_counter() - trained, 1),
        "tasks": {},
    }
    for task, entry in report["tasks"].items():
        name, value = primary_metric(entry["test_metrics"])
        result["tasks"][task] = {
            "metric": name, "test": value, "valid": entry["valid_score"], "patch_mode": entry["patch_mode"],
            "test_metrics": entry["test_metrics"],
        }
    if not args.keep_checkpoints:
        shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)
        shutil.rmtree(os.path.join(run_dir, "eval", "embeddings"), ignore_errors=True)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def render_markdown(results: list[dict], args: AblationArguments, seconds: float) -> str:
    tasks = list(results[0]["tasks"])
    metric_names = {t: results[0]["tasks"][t]["metric"] for t in tasks}
    header = ["variant", "size", "mask ratio", "policy", "batch", "steps"] + [
        f"{t} ({metric_names[t]})" for t in tasks
    ] + ["mean", "pretrain s", "probe s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        scores = [100 * r["tasks"][t]["test"] for t in tasks]
        lines.append(
            "| " + " | ".join(
                [r["variant"], r["model_size"], f"{r['mask_ratio']:g}", r["masking_policy"], str(r["batch_size"]),
                 str(r["steps"])]
                + [f"{s:.1f}" for s in scores]
                + [f"{np.mean(scores):.1f}", f"{r['pretrain_seconds']:.0f}", f"{r['probe_seconds']:.0f}"]
            ) + " |"
        )
    protocol = "216-probe JukeMIR grid" if args.full_grid else "fast 8-probe subset of the JukeMIR grid"
    lines += [
        "",
        f"Test metrics x100 of the generated tasks ({protocol}, configuration chosen on validation); "
        f"{args.examples_per_run} training examples per run, {args.num_clips} generated clips, seed {args.seed}; "
        f"{len(results)} runs in {seconds / 60:.1f} min.",
    ]
    return "\n".join(lines)


def _series(results: list[dict], factor: str, base: dict) -> list[dict]:
    """Runs that differ from `base` at most in `factor`, ordered by it."""
    others = [f for f in FACTORS if f != factor]
    rows = [r for r in results if all(r[f] == base[f] for f in others)]
    return sorted(rows, key=lambda r: r[factor])


def plot_results(results: list[dict], base: dict, output_dir: str) -> list[str]:
    """metric vs masking ratio per task (Figure 4), metric vs batch size (Table 3), one bar per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results[0]["tasks"])
    written = []
    for factor, filename, label, log_x in (
        ("mask_ratio", "metric_vs_mask_ratio.png", "masking ratio", False),
        ("batch_size", "metric_vs_batch_size.png", "batch size", True),
    ):
        variants = sorted({r["variant"] for r in results}) if factor == "mask_ratio" else [base["variant"]]
        figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 2.8), squeeze=False)
        plotted = False
        for ax, task in zip(axes[0], tasks):
            for variant in variants:
                rows = _series(results, factor, {**base, "variant": variant})
                if len(rows) < 2:
                    continue
                plotted = True
                ax.plot([r[factor] for r in rows], [100 * r["tasks"][task]["test"] for r in rows], "o-", label=variant)
            ax.set_title(f"{task}\n({results[0]['tasks'][task]['metric']})", fontsize=9)
            ax.set_xlabel(label)
            if log_x:
                ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test metric x100")
        if plotted:
            axes[0][-1].legend(fontsize=8)
            figure.tight_layout()
            path = os.path.join(output_dir, filename)
            figure.savefig(path, dpi=90)
            written.append(path)
        plt.close(figure)
    rows = _series(results, "masking_policy", base)
    if len(rows) >= 2:
        figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            ax.bar(range(len(rows)), [100 * r["tasks"][task]["test"] for r in rows])
            ax.set_xticks(range(len(rows)), [r["masking_policy"] for r in rows], rotation=45, ha="right", fontsize=8)
            ax.set_title(task, fontsize=9)
        axes[0][0].set_ylabel("test metric x100")
        figure.tight_layout()
        path = os.path.join(output_dir, "metric_vs_masking_policy.png")
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


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


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser((AblationArguments,)).parse_args_into_dataclasses(args=argv)
    if args.plot_policies:
        paths = plot_policies(args.plot_policies, seed=args.seed)
        print("\n".join(paths))
        return {"plots": paths}
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    points = sweep_points(args)
    os.makedirs(args.output_dir, exist_ok=True)
    print(f"ablation: {len(points)} runs -> {args.output_dir}")
    started = time.perf_counter()
    results = []
    for i, point in enumerate(points):
        print(f"\n=== run {i + 1}/{len(points)}: {run_name(point)} ===")
        results.append(run_point(point, args))
    seconds = time.perf_counter() - started
    table = render_markdown(results, args, seconds)
    plots = plot_results(results, points[0], args.output_dir)
    report = {"arguments": asdict(args), "base": points[0], "runs": results, "seconds": seconds, "plots": plots}
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print("\n" + table)
    return report


if __name__ == "__main__":
    main()
