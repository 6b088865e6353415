"""Scores of the downstream tasks: the `evaluate` modules shipped in `metrics/`, and batched torch versions of the
primary metrics used for early stopping and model selection over many probes at once.

The batched versions compute exactly what the `evaluate` modules compute (tested against them), for a leading
probe dimension: `(num_probes, num_tracks, num_outputs)` outputs in, `(num_probes,)` scores out.
"""

import functools
import os

import mir_eval
import numpy as np
import torch


METRICS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics")

# Problem types, as `config.problem_type` of transformers names them.
SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"


@functools.lru_cache(maxsize=None)
def load_metric(name: str):
    """One of the shipped metric modules (`myna_tagging`, `myna_accuracy`, `myna_key`, `myna_r2`), loaded locally."""
    import evaluate

    path = os.path.join(METRICS_DIR, name)
    if not os.path.isfile(os.path.join(path, f"{name}.py")):
        available = sorted(d for d in os.listdir(METRICS_DIR) if os.path.isdir(os.path.join(METRICS_DIR, d)))
        raise ValueError(f"no metric module {name!r} in {METRICS_DIR}; available: {available}.")
    return evaluate.load(path)


@functools.lru_cache(maxsize=None)
def key_score_matrix(key_names: tuple[str, ...]) -> torch.Tensor:
    """`(K, K)` mir_eval weighted score of estimating key `j` when the reference is key `i`."""
    return torch.tensor(
        [[mir_eval.key.weighted_score(ref, est) for est in key_names] for ref in key_names], dtype=torch.float64
    )


def batched_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`logits` `(P, N, C)`, `targets` `(N,)` class indices -> `(P,)` accuracies."""
    return (logits.argmax(-1) == targets).double().mean(-1)


def batched_key_score(logits: torch.Tensor, targets: torch.Tensor, key_names: list[str]) -> torch.Tensor:
    """`(P,)` mean mir_eval weighted key score of the argmax key."""
    matrix = key_score_matrix(tuple(key_names)).to(logits.device)
    return matrix[targets, logits.argmax(-1)].mean(-1)


def batched_r2(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`predictions` `(P, N, T)`, `targets` `(N, T)` -> `(P,)` mean over targets of R^2 (scikit-learn's definition)."""
    predictions, targets = predictions.double(), targets.double()
    residual = ((predictions - targets) ** 2).sum(1)  # (P, T)
    total = ((targets - targets.mean(0)) ** 2).sum(0)  # (T,)
    return (1 - residual / total).mean(-1)


def batched_macro_roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`scores` `(P, N, C)`, multi-hot `targets` `(N, C)` -> `(P,)` macro ROC-AUC over the tags that have both
    classes, via the Mann-Whitney statistic with tied scores given their average rank (as scikit-learn)."""
    targets = targets.bool()
    positives = targets.sum(0)
    defined = (positives > 0) & (positives < targets.shape[0])
    scores, targets, positives = scores[..., defined].double(), targets[:, defined], positives[defined].double()
    negatives = targets.shape[0] - positives
    columns = scores.transpose(1, 2).contiguous()  # (P, C, N)
    ordered = columns.sort(-1).values
    below = torch.searchsorted(ordered, columns, right=False)
    up_to = torch.searchsorted(ordered, columns, right=True)
    ranks = (below + up_to + 1).double() / 2  # 1-based average ranks, (P, C, N)
    positive_rank_sum = (ranks * targets.T.double()).sum(-1)  # (P, C)
    auc = (positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return auc.mean(-1)


def primary_batched_score(problem_type: str, metric: str, outputs: torch.Tensor, targets: torch.Tensor, label_names):
    """The task's primary score for every probe at once (higher is better)."""
    if metric == "myna_key":
        return batched_key_score(outputs, targets, label_names)
    if problem_type == SINGLE_LABEL:
        return batched_accuracy(outputs, targets)
    if problem_type == MULTI_LABEL:
        return batched_macro_roc_auc(outputs, targets)
    return batched_r2(outputs, targets)


def compute_metrics(task, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Every metric of `task` for one probe's per-track `outputs` `(N, C)` through its `evaluate` modules: `metric`,
    then any `extra_metrics` (their keys added beside, never replacing, the first module's)."""
    results = _compute_one(task, task.metric, outputs, targets)
    for name in getattr(task, "extra_metrics", ()):
        for key, value in _compute_one(task, name, outputs, targets).items():
            results.setdefault(key, value)
    return results


def _compute_one(task, metric: str, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    module = load_metric(metric)
    if task.problem_type == MULTI_LABEL:
        return module.compute(predictions=outputs.tolist(), references=targets.astype(int).tolist())
    if task.problem_type == REGRESSION:
        return module.compute(
            predictions=outputs.tolist(), references=targets.tolist(), target_names=list(task.label_names)
        )
    predicted = outputs.argmax(-1)
    if metric == "myna_key":
        names = list(task.label_names)
        return module.compute(predictions=[names[i] for i in predicted], references=[names[i] for i in targets])
    return module.compute(predictions=predicted.tolist(), references=targets.tolist())


__all__ = [
    "MULTI_LABEL",
    "REGRESSION",
    "SINGLE_LABEL",
    "batched_accuracy",
    "batched_key_score",
    "batched_macro_roc_auc",
    "batched_r2",
    "compute_metrics",
    "key_score_matrix",
    "load_metric",
    "primary_batched_score",
]
