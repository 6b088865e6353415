"""Redraw the generated-corpus ablation figures (`docs/ablation/`) from the runner's results JSON of several seeds: the
points averaged over the seeds with their 95% intervals as error bars, on axes that start at the metric's floor (the
runner's own `aggregate` and `plot_results`).

The JSON files in `docs/ablation/` were written by an earlier runner, one file per seed, before it kept a run's seed
and CPU-seconds per run: the seed is read from each file's arguments, and the pre-training seconds it measured (one
thread, so wall and CPU agree to a few percent) stand for the CPU-seconds.

    python benchmarks/redraw_ablation_results.py docs/ablation/results.json docs/ablation/results-seed1.json \\
        --output_dir docs/ablation
"""

from __future__ import annotations

import argparse
import json
import os

from myna_training.ablation.plots import plot_results
from myna_training.ablation.statistics import aggregate
from myna_training.ablation.sweep import FACTORS

# A factor an earlier runner did not vary has the value the runner uses when it is not swept.
UNSWEPT = {"crop_frames": None, "mask_schedule": "constant", "recipe": ""}


def read_runs(path: str) -> tuple[list[dict], dict]:
    """`(runs, base)` of one results file, each run with every factor, its seed, examples and CPU-seconds."""
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    seed = results["arguments"]["seed"]
    runs = []
    for run in results["runs"]:
        run = {**UNSWEPT, **run, "seed": seed}
        run.setdefault("examples", run.get("examples_seen"))
        run.setdefault("cpu_seconds", run.get("pretrain_seconds"))
        missing = [f for f in (*FACTORS, "examples", "cpu_seconds") if run.get(f, "") == "" and f not in UNSWEPT]
        if missing:
            raise ValueError(f"{path}: run {run.get('run')} has no {', '.join(missing)}; is it a runner results file?")
        runs.append(run)
    return runs, {**UNSWEPT, **results["base"]}


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="The runner's results.json of each seed.")
    parser.add_argument("--output_dir", required=True, help="Where the PNGs go.")
    args = parser.parse_args(argv)
    runs, base = [], None
    for path in args.results:
        more, base = read_runs(path)
        runs += more
    seeds = sorted({r["seed"] for r in runs})
    if len(seeds) < 2:
        raise SystemExit(f"one seed ({seeds}) gives no interval: pass the results of at least two seeds")
    os.makedirs(args.output_dir, exist_ok=True)
    return plot_results(aggregate(runs), base, args.output_dir)


if __name__ == "__main__":
    print("\n".join(main()))
