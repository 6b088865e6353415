"""Redraw an ablation runner's figure from its markdown table (`docs/ablation-real/*.md`), when the runs' folders
are gone but the table the runner wrote is kept: the same `draw_panels` as the runner, so the picture is the one the
runner would draw today (labels, axes from the metric's floor, 95% intervals as error bars).

    python benchmarks/redraw_ablation_table.py docs/ablation-real/batch.md docs/ablation-real/metric_vs_batch_size.png
"""

from __future__ import annotations

import argparse
import math
import re

from myna_training.ablation.plots import draw_panels

_VALUE = re.compile(r"^(-?[\d.]+)(?: ± ([\d.]+))?$")
_METRIC = re.compile(r"^(\S+) \((\S+)\)$")


def read_table(path: str) -> tuple[list[str], list[dict], dict]:
    """`(leading factor columns, points, baselines)` of a runner table: a point is `{"label", "tasks": {task:
    {metric: {"mean", "half_width"}}}}`; baseline rows (names in backticks) are `{name: {task: {metric: value}}}`."""
    with open(path, encoding="utf-8") as handle:
        rows = [line.strip().strip("|").split("|") for line in handle if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    metrics = {i: _METRIC.match(name).groups() for i, name in enumerate(header) if _METRIC.match(name)}
    factors = header[: header.index("seeds")]
    points, baselines = [], {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row]
        label = " ".join(cells[: len(factors)]).strip()
        values = {}
        for i, (task, metric) in metrics.items():
            match = _VALUE.match(cells[i])
            if match:
                values.setdefault(task, {})[metric] = (float(match[1]), float(match[2] or "nan"))
        if label.startswith("`"):
            baselines[label.strip("`")] = {t: {m: v[0] for m, v in ms.items()} for t, ms in values.items()}
        else:
            tasks = {t: {m: {"mean": v[0], "half_width": v[1]} for m, v in ms.items()} for t, ms in values.items()}
            points.append({"label": label, "tasks": tasks})
    return factors, points, baselines


def _number(label: str) -> float | None:
    try:
        return float(label.split()[0])
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", help="A runner table (.md).")
    parser.add_argument("output", help="The PNG to write.")
    args = parser.parse_args(argv)
    factors, points, baselines = read_table(args.table)
    columns = [(t, m) for t, ms in points[0]["tasks"].items() for m in ms]
    numbers = [_number(p["label"]) for p in points]
    xlabel = " / ".join(factors)
    if len(factors) == 1 and all(n is not None for n in numbers):
        points = [p for _, p in sorted(zip(numbers, points), key=lambda pair: pair[0])]
        log_x = factors[0] == "batch" and all(math.log2(n).is_integer() for n in numbers)
        return draw_panels([(xlabel, points)], columns, baselines, lambda p: _number(p["label"]), xlabel,
                           args.output, log_x=log_x)  # fmt: skip
    names = [p["label"] for p in points]
    return draw_panels([(xlabel, points)], columns, baselines, lambda p: names.index(p["label"]), xlabel,
                       args.output, categorical=names)  # fmt: skip


if __name__ == "__main__":
    print(main())
