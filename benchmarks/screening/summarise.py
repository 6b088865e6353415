"""Screening table: each run's settings, steps, CPU-seconds, and its dev-task test metrics under both probe protocols
(`SCREEN=... python benchmarks/screening/summarise.py`); then, for every probe of two or more seeds of one run name
(an hour's `hour.sh` runs, a screened row's second seed; `sf2-` probes: the other SoundFont's tasks), the mean and
the half-width of the 95% t-interval over the seeds. The first table's last column is the paper's protocol on the
other SoundFont's build of the tasks (`sf2-RUN-last-mean` probes; `sf2-base-...` for the hand-crafted rows)."""

import glob
import json
import os
import pathlib
import re
from collections import defaultdict

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
        + ["(same)", " / ".join(metrics(f"{ROOT}/probes/sf2-{name}/results.json"))]
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
    other = metrics(f"{ROOT}/probes/sf2-{run}-last-mean/results.json")
    rows.append(
        [f"{name} `{jobs.get(name, '')}`", run.rsplit("seed", 1)[1], found[1], f"{float(found[3]):.0f}"]
        + last
        + [" / ".join(every), " / ".join(other)]
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
    "other SoundFont, paper's: key / comp. / AUC / AP",
]
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for row in rows:
    print("| " + " | ".join(row) + " |")


# Seeds of one run name, one probe set: "[sf2-]NAME-seedN-PROTOCOL" folders.
groups = defaultdict(dict)
for folder in sorted(glob.glob(f"{ROOT}/probes/*-seed*-*")):
    found = re.fullmatch(r"(sf2-)?(.+)-seed(\d+)-(last-mean|all-meanstd)", os.path.basename(folder))
    if found and os.path.exists(f"{folder}/results.json"):
        prefix, name, seed, protocol = found.groups()
        groups[(name, protocol, prefix or "")][int(seed)] = metrics(f"{folder}/results.json")
if any(len(seeds) > 1 for seeds in groups.values()):
    from myna_training.ablation.statistics import interval95

    print("\n| run | tasks | protocol | seeds | key | composer | instr. AUC | instr. AP |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for (name, protocol, prefix), seeds in sorted(groups.items()):
        if len(seeds) < 2:
            continue
        cells = []
        for column in zip(*seeds.values()):
            mean, half = interval95([float(value) for value in column])
            cells.append(f"{mean:.1f} ± {half:.1f}")
        tasks = "other SoundFont" if prefix else "dev"
        protocol_name = "paper's" if protocol == "last-mean" else "layer-chosen"
        seed_list = ", ".join(map(str, sorted(seeds)))
        print(f"| {name} | {tasks} | {protocol_name} | {seed_list} | " + " | ".join(cells) + " |")
