"""The evaluation report: a Markdown table in the layout of the Myna paper's Table 1, and t-SNE plots.

Table 1 of the paper (arXiv 2502.12511) gives, on test and x100: MTT ROC-AUC and AP, GTZAN accuracy, GiantSteps
weighted key score, EmoMusic R^2 of arousal and valence, and their average, where the metrics of one task are
averaged first and then the four tasks (SPEC §5). Its published rows are printed alongside for comparison.
MARBLE's clip-level tasks (MTG-Jamendo, NSynth, VocalSet) get their own block of columns and average, and any other
task (generated, custom) one column per metric. A line above the table names the probe protocol that produced it
(`protocol_line`: the layer or layers probed, the pooling over time, the grid).
"""

import numpy as np

from .task_families.marble import MARBLE_TASKS
from .tasks import PAPER_TASKS, TaskSpec


TABLE1_COLUMNS = ("MTT AUC", "MTT AP", "GTZAN", "GS", "Emo A", "Emo V")
# Paper, Table 1 (test, x100): MTT AUC, MTT AP, GTZAN, GS, Emo A, Emo V, average.
PAPER_ROWS = {
    "Myna-Base (paper)": (90.8, 39.5, 78.3, 63.5, 73.5, 55.8, 67.9),
    "Myna-Vertical (paper)": (90.1, 37.4, 75.9, 68.6, 66.5, 45.9, 66.1),
    "Myna-Hybrid (paper)": (91.0, 39.8, 77.9, 68.0, 70.8, 55.2, 68.6),
    "MERT-95M (paper)": (91.0, 39.3, 78.6, 63.5, 76.4, 60.0, 68.9),
    "MULE (paper)": (91.2, 40.1, 75.5, 64.9, 73.1, 60.7, 68.2),
    "MERT-95M-public (paper)": (90.7, 38.4, 72.8, 67.3, 72.5, 59.7, 67.7),
    "CLMR (paper)": (89.4, 36.1, 68.6, 14.9, 67.8, 45.8, 50.8),
}


def task_score(spec: TaskSpec, metrics: dict[str, float]) -> float:
    """The mean of a task's table columns (the per-task value the Table 1 average is taken over)."""
    return float(np.mean([metrics[key] for _, key in spec.columns]))


def table1_average(results: dict[str, tuple[TaskSpec, dict[str, float]]]) -> float | None:
    """Average over the four paper tasks of each task's mean metric; `None` unless all four were run."""
    if not all(task in results for task in PAPER_TASKS):
        return None
    return float(np.mean([task_score(*results[task]) for task in PAPER_TASKS]))


def marble_average(results: dict[str, tuple[TaskSpec, dict[str, float]]]) -> float | None:
    """Mean over the MARBLE clip-level tasks of this run (the four paper tasks, which MARBLE also covers, and the
    MTG-Jamendo, NSynth and VocalSet tasks) of each task's mean metric; `None` when no MARBLE-only task was run.

    The per-task-then-over-tasks rule is Table 1's; MARBLE's leaderboard average could not be checked offline.
    """
    if not any(name in MARBLE_TASKS for name in results):
        return None
    names = [n for n in results if n in MARBLE_TASKS or n in PAPER_TASKS]
    return float(np.mean([task_score(*results[n]) for n in names]))


POOLING_NAMES = {"mean": "mean pooling", "meanstd": "mean+std pooling"}


def protocol_line(grid: str, layers: list[int] | None, num_layers: int, pooling: str) -> str:
    """The line above the table: the layer(s) probed (`layers=None`: the last, the paper's), the pooling over time
    and the probe grid, e.g. "Probe protocol: layer chosen on validation (of 13), mean+std pooling; JukeMIR grid
    (216 probes)."."""
    if layers is None:
        layer_text = "last layer"
    elif num_layers == 1:
        layer_text = "the features' only layer"  # hand-crafted features
    elif len(layers) == 1:
        layer_text = f"layer {layers[0]} (of {num_layers})"
    elif sorted(layers) == list(range(num_layers)):
        layer_text = f"layer chosen on validation (of {num_layers})"
    else:
        layer_text = f"layer chosen on validation among {', '.join(map(str, layers))} (of {num_layers})"
    paper = " (the paper's)" if layers is None and pooling == "mean" else ""
    return f"Probe protocol: {layer_text}, {POOLING_NAMES[pooling]}{paper}; {grid}."


def render_table(
    model_name: str,
    results: dict[str, tuple[TaskSpec, dict[str, float]]],
    with_paper: bool = True,
    protocol: str | None = None,
) -> str:
    """Markdown table: one row for `model_name` (test metrics x100), then the paper's rows; `protocol`
    ([`protocol_line`]), when given, is the line above it.

    `results` maps a task name to its spec and test metrics. Columns are Table 1's and its average, then (when a
    MARBLE task was run) one per metric of each MARBLE task run and "MARBLE avg." ([`marble_average`]), then one per
    metric of any other task (generated, custom); "Avg. (run)" is Table 1's rule over every task of this run.
    MARBLE's published numbers are not printed: no source for them could be verified offline.
    """
    marble = [
        (header, name)
        for name in MARBLE_TASKS
        if name in results
        for header, _ in results[name][0].columns
    ]
    extra = [
        (header, name)
        for name, (spec, _) in results.items()
        if name not in PAPER_TASKS and name not in MARBLE_TASKS
        for header, _ in spec.columns
    ]
    marble_headers = [h for h, _ in marble] + (["MARBLE avg."] if marble else [])
    headers = ["Model", *TABLE1_COLUMNS, "Avg.", *marble_headers, *[h for h, _ in extra], "Avg. (run)"]
    values = {}
    for name, (spec, metrics) in results.items():
        for header, key in spec.columns:
            values[header] = 100 * metrics[key]
    average = table1_average(results)
    marble_mean = marble_average(results)
    run_average = float(np.mean([task_score(*r) for r in results.values()])) if results else None

    def cell(value):
        return "–" if value is None else f"{value:.1f}"

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    row = [
        model_name,
        *[cell(values.get(c)) for c in TABLE1_COLUMNS],
        cell(None if average is None else 100 * average),
    ]
    row += [cell(values.get(h)) for h, _ in marble] + ([cell(100 * marble_mean)] if marble else [])
    row += [cell(values.get(h)) for h, _ in extra] + [cell(None if run_average is None else 100 * run_average)]
    lines.append("| " + " | ".join(row) + " |")
    if with_paper:
        blanks = len(marble_headers) + len(extra) + 1
        for name, numbers in PAPER_ROWS.items():
            lines.append("| " + " | ".join([name, *[cell(v) for v in numbers], *["–"] * blanks]) + " |")
    if protocol:
        lines = [protocol, ""] + lines
    return "\n".join(lines)


def column_notes(results: dict) -> str:
    """What the table's less obvious columns measure (the key columns are not accuracies)."""
    headers = {header for spec, _ in results.values() for header, _ in spec.columns}
    notes = []
    keys = sorted(h for h in headers if h in ("GS", "Syn key"))
    if keys:
        notes.append(
            f"{' and '.join(keys)}: mean mir_eval weighted key score (1 exact, 0.5 fifth, 0.3 relative, 0.2 parallel; "
            "plain accuracy is in results.json), the probe chosen on validation from the grid. The pre-training "
            "demo's closing key probe is another, quicker check: 5-fold cross-validated accuracy of a logistic "
            "regression on clip embeddings."
        )
    return "\n".join(notes)


def class_styles(num_classes: int) -> tuple[list, list[str]]:
    """One distinct `(colour, marker)` per class: matplotlib's qualitative palettes (tab10, then tab20) while they
    have a colour per class; beyond 20 classes (24 keys), as many hues spread around the colour wheel at two
    lightnesses, alternating, with a second marker shape for the second half, so that no two classes share a look."""
    import colorsys

    import matplotlib.pyplot as plt

    if num_classes <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(num_classes)], ["o"] * num_classes
    if num_classes <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(num_classes)], ["o"] * num_classes
    half = (num_classes + 1) // 2
    colours = []
    for i in range(num_classes):
        hue = (i % half) / half
        lightness, saturation = (0.45, 0.85) if i < half else (0.62, 0.95)
        colours.append((*colorsys.hls_to_rgb(hue, lightness, saturation), 1.0))
    markers = ["o" if i < half else "^" for i in range(num_classes)]
    return colours, markers


def plot_tsne(
    embeddings: np.ndarray,
    labels: np.ndarray,
    label_names,
    path: str,
    title: str,
    seed: int = 0,
    num_threads: int | None = None,
) -> str:
    """Saves a 2-D t-SNE (scikit-learn) of `embeddings` `(N, D)` coloured by class index `labels` `(N,)` to `path`.

    `num_threads` caps scikit-learn's OpenMP threads (on a busy machine, one thread is many times faster).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(embeddings) - 1) / 3)))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=num_threads):
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            embeddings.astype(np.float64)
        )
    figure, axis = plt.subplots(figsize=(7, 6), dpi=110)
    colours, markers = class_styles(len(label_names))
    for index, name in enumerate(label_names):
        mask = labels == index
        if mask.any():
            axis.scatter(points[mask, 0], points[mask, 1], s=14, color=colours[index], marker=markers[index],
                         label=name)
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    if len(label_names) <= 24:
        axis.legend(fontsize=6, markerscale=1.2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


__all__ = [
    "column_notes",
    "PAPER_ROWS",
    "TABLE1_COLUMNS",
    "marble_average",
    "class_styles",
    "plot_tsne",
    "protocol_line",
    "render_table",
    "table1_average",
    "task_score",
]
