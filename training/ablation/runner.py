"""The sweep from start to end: check every run's folder (`stages.check_run`, before any work), run each point
with each seed, seed-major, reusing finished stages, with an overall ETA, then write `results.json`, `results.md`
(rewritten after every run, a partial table as it goes) and the plots.
"""

import os
import time
from dataclasses import asdict

import torch

from myna_common.atomic import write_json, write_text
from myna_training.ablation.arguments import AblationArguments, split_list
from myna_training.ablation.plots import plot_results
from myna_training.ablation.stages import check_run, run_point, run_state
from myna_training.ablation.statistics import aggregate, load_baselines
from myna_training.ablation.sweep import run_name, sweep_points
from myna_training.ablation.tables import render_markdown


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


def write_report(results, points, args, seconds, baselines, plots=()) -> dict:
    aggregated = aggregate(results)
    table = render_markdown(aggregated, args, seconds, baselines)
    report = {
        "arguments": asdict(args), "base": points[0], "points": aggregated, "runs": results, "baselines": baselines,
        "seconds": seconds, "plots": list(plots),
    }
    os.makedirs(args.output_dir, exist_ok=True)
    write_json(os.path.join(args.output_dir, "results.json"), report)
    write_text(os.path.join(args.output_dir, "results.md"), table + "\n")
    report["table"] = table
    return report


def run_sweep(args: AblationArguments) -> dict:
    """Every run of the sweep `args` describes; returns the report (also written to `args.output_dir`)."""
    seeds = split_list(args.seeds, int)
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
    for point, seed in runs:  # another sweep's pre-training in a run's folder fails now, not hours in
        check_run(point, args, seed)
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


__all__ = ["ETA", "run_sweep", "write_report"]
