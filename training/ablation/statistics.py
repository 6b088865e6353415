"""What the tables and plots show: each task's metrics from a probe report, the mean and 95% t-interval over seeds
of every point, and the hand-crafted baselines (probe.py `results.json` files) they are drawn against.

Values are x100 once aggregated; a point with one seed has a NaN half-width (no interval).
"""

import json
import math
import os

import numpy as np

from myna_training.ablation.sweep import FACTORS, point_key


# Metrics shown besides each task's primary one (tags: average precision beside ROC-AUC).
SECONDARY_METRICS = ("average_precision_macro",)


def primary_metric(metrics: dict) -> tuple[str, float]:
    """The first metric a task reports (the one its probe is selected on)."""
    name = next(iter(metrics))
    return name, float(metrics[name])


def shown_metrics(test_metrics: dict) -> list[str]:
    """The metrics of a task in the table: its primary one, and the secondary ones it reports."""
    return [primary_metric(test_metrics)[0]] + [m for m in SECONDARY_METRICS if m in test_metrics]


def task_results(report: dict) -> dict[str, dict]:
    """`{task: {"metric", "test", "valid", "patch_mode", "test_metrics"}}` from one probe.py report."""
    results = {}
    for name, entry in report["tasks"].items():
        metric, value = primary_metric(entry["test_metrics"])
        results[name] = {
            "metric": metric, "test": value, "valid": entry["valid_score"], "patch_mode": entry["patch_mode"],
            "test_metrics": entry["test_metrics"],
        }
    return results


def interval95(values) -> tuple[float, float]:
    """`(mean, half-width)` of the two-sided 95% t-interval of the mean (`scipy.stats.t`); half-width NaN for n < 2."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    sem = float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * sem)


def aggregate(results: list[dict]) -> list[dict]:
    """One entry per point (in first-seen order): its seeds, and per task and shown metric the mean, the 95%
    interval's half-width and the per-seed values (x100); the same for pre-training CPU-seconds and steps."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(point_key(result), []).append(result)
    points = []
    for runs in groups.values():
        first = runs[0]
        entry = {f: first[f] for f in (*FACTORS, "examples")}
        entry["seeds"] = [r["seed"] for r in runs]
        entry["steps"] = first["steps"]
        entry["cpu_seconds"] = dict(zip(("mean", "half_width"), interval95([r["cpu_seconds"] for r in runs])))
        entry["tasks"] = {}
        for task, first_task in first["tasks"].items():
            metrics = {}
            for metric in shown_metrics(first_task["test_metrics"]):
                values = [100 * float(r["tasks"][task]["test_metrics"][metric]) for r in runs if task in r["tasks"]]
                mean, half = interval95(values)
                metrics[metric] = {"mean": mean, "half_width": half, "values": values}
            entry["tasks"][task] = metrics
        points.append(entry)
    return points


def metric_columns(points: list[dict]) -> list[tuple[str, str]]:
    """Every `(task, metric)` the aggregated points report, in first-seen order: a table's columns, a figure's
    panels."""
    columns = []
    for point in points:
        for task, metrics in point["tasks"].items():
            for metric in metrics:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    return columns


def load_baselines(paths: str | None) -> dict[str, dict]:
    """`{row name: {task: {metric: value x100}}}` from probe.py `results.json` files."""
    baselines = {}
    for path in filter(None, (p.strip() for p in (paths or "").split(","))):
        if not os.path.isfile(path):
            raise ValueError(f"--baselines {path}: no such file; give probe.py results.json files, comma-separated.")
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        name = report.get("model_name") or os.path.basename(os.path.dirname(path))
        if str(report.get("model", "")).startswith("handcrafted:"):
            name = report["model"]
        baselines[name] = {
            task: {m: 100 * float(v) for m, v in entry["test_metrics"].items() if isinstance(v, (int, float))}
            for task, entry in report["tasks"].items()
        }
    return baselines


__all__ = [
    "SECONDARY_METRICS", "aggregate", "interval95", "load_baselines", "metric_columns", "primary_metric",
    "shown_metrics", "task_results",
]
