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
each task's probes), and an overall ETA is printed before every run. A stage is reused only for the settings that
made it (data, tasks, --pretrain_args, --probe_args, ...): a run folder whose pre-training other settings made is
refused in one line, before any work (`myna_training.ablation.fingerprint`).

This file is the command; the runner lives in `myna_training.ablation`, one module per subject: `arguments`,
`sweep` (points, run names, the flags of each run), `fingerprint` and `stages` (what a stage depends on; one run,
stage by stage), `statistics`, `tables`, `plots` (and the masking pictures), `curve` and `runner` (the sweep's main).
Their names are re-exported here, where they lived before.
"""

if __name__ == "__main__":
    from myna_common.progress import quiet_library_bars

    # In a log: no "Loading weights" bars from the exported checkpoints, datasets' bars every 30 s. Before anything
    # imports tqdm, which reads TQDM_MININTERVAL once.
    quiet_library_bars(datasets=False)

import sys

from transformers import HfArgumentParser

from myna_training.ablation.arguments import AblationArguments, parse_recipes, split_list
from myna_training.ablation.curve import curve_checkpoints, curve_point, probe_curve
from myna_training.ablation.plots import NUMERIC_FACTORS, _y_limits, plot_policies, plot_results
from myna_training.ablation.runner import ETA, run_sweep, write_report
from myna_training.ablation.stages import PRETRAIN_SUMMARY, RESULT_FILE, run_point, run_state
from myna_training.ablation.statistics import (
    SECONDARY_METRICS,
    aggregate,
    interval95,
    load_baselines,
    primary_metric,
    shown_metrics,
)
from myna_training.ablation.sweep import (
    FACTOR_LABELS,
    FACTORS,
    PAPER_VALUES,
    factor_values,
    point_key,
    pretrain_argv,
    probe_argv,
    run_name,
    sweep_points,
    task_folder,
    task_list,
)
from myna_training.ablation.tables import render_markdown
from myna_training.export import PROGRESS_STATE, export_checkpoint


def main(argv: list[str] | None = None) -> dict:
    """Parses the options and runs what they ask for: the masking pictures, a curve, or the sweep."""
    (args,) = HfArgumentParser((AblationArguments,)).parse_args_into_dataclasses(args=argv)
    if args.plot_policies:
        seeds = split_list(args.seeds, int)
        paths = plot_policies(args.plot_policies, seed=seeds[0] if seeds else 0)
        print("\n".join(paths))
        return {"plots": paths}
    if args.curve:
        return probe_curve(args)
    return run_sweep(args)


# The names this module held before the runner became a package (tests and scripts import them from here).
__all__ = [
    "ETA", "FACTORS", "FACTOR_LABELS", "NUMERIC_FACTORS", "PAPER_VALUES", "PRETRAIN_SUMMARY", "PROGRESS_STATE",
    "RESULT_FILE", "SECONDARY_METRICS", "AblationArguments", "_y_limits", "aggregate", "curve_checkpoints",
    "curve_point", "export_checkpoint", "factor_values", "interval95", "load_baselines", "main", "parse_recipes",
    "plot_policies", "plot_results", "point_key", "pretrain_argv", "primary_metric", "probe_argv", "probe_curve",
    "render_markdown", "run_name", "run_point", "run_state", "shown_metrics", "sweep_points", "task_folder",
    "task_list", "write_report",
]


if __name__ == "__main__":
    from myna_common.cli_support import run_cli

    sys.exit(run_cli(main, "ablate.py"))
