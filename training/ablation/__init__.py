"""The ablation runner of `training/ablate.py` (the command), one module per subject:

    arguments    the options (`AblationArguments`) and the readers of their comma lists
    sweep        the points of a sweep, run names, the flags of each run's pretrain.py and probe.py
    fingerprint  what each stage's result depends on, and the line that refuses a stage other settings made
    stages       one run, stage by stage (pre-training, each task's probes, result.json), finished stages reused
    statistics   task metrics from probe reports, mean and 95% t-interval over seeds, baselines
    tables       the markdown table
    plots        the figures (metric vs factor, vs compute) and the masking pictures
    curve        quality vs CPU-seconds along the checkpoints of one pre-training (`--curve`)
    runner       the sweep's main: every run, the ETA, results.json / results.md and the plots

Imports run one way: arguments <- sweep <- fingerprint, statistics <- stages, tables, plots <- curve, runner.
Kept free of imports, so that importing one module loads only what it needs.
"""
