"""Screening table: each run's settings, steps, CPU-seconds, and its dev-task test metrics under both probe protocols
(`SCREEN=... python benchmarks/screening/summarise.py`)."""

import glob
import json
import os
import pathlib
import re

ROOT = os.environ.get("SCREEN", "outputs/screening")
COLS = [
    ("dev-key", "weighted_score"),
    ("dev-composer", "accuracy"),
    ("dev-instruments", "roc_auc_macro"),
    ("dev-instruments", "average_precision_macro"),
]
jobs = {
    line.split()[0]: " ".join(line.split()[3:]) or "(preset)"
    for line in pathlib.Path(__file__).with_name("jobs.txt").read_text().splitlines()
    if line.strip()
}


def metrics(path):
    if not os.path.exists(path):
        return ["–"] * len(COLS)
    tasks = json.loads(pathlib.Path(path).read_text())["tasks"]
    return [f"{100 * tasks[t]['test_metrics'][m]:.1f}" if t in tasks else "–" for t, m in COLS]


rows = []
for name in ("base-logmel-meanstd", "base-all-meanstd"):
    rows.append(
        [f"`handcrafted:{name.split('-')[1]}` (mean+std)", "", "", "0"]
        + metrics(f"{ROOT}/probes/{name}/results.json")
        + ["(same)"]
    )
for log in sorted(glob.glob(f"{ROOT}/logs/*-seed*.log")):
    run = os.path.basename(log)[:-4]
    if run.startswith(("calib", "probe")):
        continue
    found = re.search(
        r"training: (\d+) steps, (\d+) examples in [\d.]+ s \([\d.]+ examples/s, ([\d.]+) CPU-s\)",
        pathlib.Path(log).read_text(),
    )
    if not found:
        continue
    name = run.rsplit("-seed", 1)[0]
    if name not in jobs:  # an hour's run (hour.sh): its curve is ablate.py --curve's table
        continue
    last = metrics(f"{ROOT}/probes/{run}-last-mean/results.json")
    every = metrics(f"{ROOT}/probes/{run}-all-meanstd/results.json")
    rows.append(
        [f"{name} `{jobs.get(name, '')}`", run.rsplit("seed", 1)[1], found[1], f"{float(found[3]):.0f}"]
        + last
        + [" / ".join(every)]
    )
header = [
    "run (overrides of cpu-hour.yaml)",
    "seed",
    "steps",
    "CPU-s",
    "key",
    "composer",
    "instr. AUC",
    "instr. AP",
    "layer-chosen, mean+std: key / comp. / AUC / AP",
]
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for row in rows:
    print("| " + " | ".join(row) + " |")
