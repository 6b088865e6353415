"""The closing check of a pre-training run: a linear probe on the embeddings of held-out generated clips, for the
pre-trained model and the same architecture at random initialisation (tasks: key, style).

A quick sanity check of the project's main job, not an evaluation: `evaluation/probe.py` runs the real tasks. The
clips come from the generated corpus with a seed the run never trained on; each model's embedding of a clip is its
mean chunk embedding, and each task is scored by a 5-fold cross-validated, standardised logistic regression.
"""

import numpy as np
import torch

from modeling_myna import MynaFeatureExtractor, MynaModel, pool_chunks


@torch.no_grad()
def embed_clips(model: MynaModel, feature_extractor: MynaFeatureExtractor, audios, sampling_rate: int, device) -> np.ndarray:
    """Mean chunk embedding of every clip, `(num_clips, embedding_size)`, unmasked, in eval mode."""
    model.eval()
    embeddings = []
    for start in range(0, len(audios), 16):
        features = feature_extractor(audios[start : start + 16], sampling_rate=sampling_rate, return_tensors="pt")
        pooled = model(features["input_values"].to(device)).pooler_output.float()
        embeddings.append(pool_chunks(pooled, features["audio_index"].to(device)).cpu().numpy())
    return np.concatenate(embeddings)


def probe_accuracy(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """5-fold cross-validated accuracy of a standardised logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, embeddings, labels, cv=folds).mean())


def linear_probe(models: dict, feature_extractor, num_clips: int, duration: float, seed: int, device) -> dict:
    """Probe accuracy `{task: {model name: accuracy}}` on held-out generated clips (tasks: key, style)."""
    from myna_common.synthetic import synthetic_music_dataset

    clips = synthetic_music_dataset(num_clips, seed=seed, duration=duration)
    audios = [np.asarray(a["array"], dtype=np.float32) for a in clips["audio"]]
    sampling_rate = clips[0]["audio"]["sampling_rate"]
    embeddings = {name: embed_clips(m, feature_extractor, audios, sampling_rate, device) for name, m in models.items()}
    results = {}
    for task in ("key", "style"):
        labels = np.asarray(clips[task])
        if np.bincount(labels).max() < 5 or len(set(labels)) < 2:
            continue  # too few clips per class for 5 folds
        _, counts = np.unique(labels, return_counts=True)
        keep = np.isin(labels, np.unique(labels)[counts >= 5])
        results[task] = {name: probe_accuracy(e[keep], labels[keep], seed) for name, e in embeddings.items()}
    return results


def closing_probe(
    pretrained: MynaModel, config, feature_extractor, num_clips: int, duration: float, seed: int, device
) -> dict:
    """`linear_probe` of the pre-trained encoder against a `MynaModel(config)` at random initialisation (drawn with
    `seed`), on `num_clips` generated clips of `duration` seconds that training never saw."""
    print(
        f"export written. Closing probe: embedding {num_clips} held-out generated clips "
        "with the pre-trained and a randomly initialised model, then 5-fold logistic regressions (key, style); "
        "about a minute on CPU (--probe_clips 0 skips it).",
        flush=True,
    )
    torch.manual_seed(seed)
    random_model = MynaModel(config).to(device)
    return linear_probe(
        {"random init": random_model, "pre-trained": pretrained},
        feature_extractor,
        num_clips,
        duration,
        seed=seed + 10_000,  # clips never seen in training
        device=device,
    )


__all__ = ["closing_probe", "embed_clips", "linear_probe", "probe_accuracy"]
