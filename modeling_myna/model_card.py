"""Model cards (the `README.md` of a saved Myna folder), in the Hugging Face Hub's format.

This file travels with the model code into `trust_remote_code` folders, so it imports nothing but the standard
library.
"""

import os


CITATION = """@article{yonay2025myna,
  title   = {Myna: Masking-Based Contrastive Learning of Musical Representations},
  author  = {Yonay, Ori and Hammond, Tracy and Yang, Tianbao},
  journal = {arXiv preprint arXiv:2502.12511},
  year    = {2025}
}"""

PAPER_TRAINING_DATA = (
    "AudioSet, music subset: the ~822k 10 s segments whose labels include Music (/m/04rlf) or one of its "
    "descendants in the AudioSet ontology; 500 epochs at batch 4096 (paper, §4)."
)


# Paper, Table 1 (test, x100): the released checkpoints' scores (Yonay et al. 2025), per variant.
PAPER_RESULTS_HEADER = (
    "MTT ROC-AUC", "MTT AP", "GTZAN acc.", "GiantSteps key", "Emo arousal R2", "Emo valence R2", "Average"
)
PAPER_RESULTS = {
    "base": (90.8, 39.5, 78.3, 63.5, 73.5, 55.8, 67.9),
    "vertical": (90.1, 37.4, 75.9, 68.6, 66.5, 45.9, 66.1),
    "hybrid": (91.0, 39.8, 77.9, 68.0, 70.8, 55.2, 68.6),
}

CLASSIFIER_ARCHITECTURE = "MynaForAudioClassification"


def paper_evaluation_table(variant: str) -> str:
    """The paper's Table 1 row for a released variant, as a Markdown table (for cards of converted checkpoints)."""
    if variant not in PAPER_RESULTS:
        raise ValueError(f"the paper reports no results for variant {variant!r}; it has {sorted(PAPER_RESULTS)}.")
    return "\n".join(
        [
            "Frozen-embedding probes, test split, x100, as reported in the paper (Table 1) for "
            f"Myna-{variant.capitalize()} (JukeMIR protocol; GiantSteps: weighted key score); not re-measured for "
            "this folder.",
            "",
            "| " + " | ".join(PAPER_RESULTS_HEADER) + " |",
            "|" + "---|" * len(PAPER_RESULTS_HEADER),
            "| " + " | ".join(f"{value:.1f}" for value in PAPER_RESULTS[variant]) + " |",
        ]
    )


def variant_name(config) -> str:
    """`"base"`, `"vertical"` or `"hybrid"` for a released geometry; a description of the patches otherwise."""
    modes = config.patch_modes
    if modes == ["square", "vertical"]:
        return "hybrid"
    if modes == ["vertical"]:
        return "vertical"
    return "base" if config.patch_sizes == [[16, 16]] else "custom"


def render_model_card(
    config,
    num_parameters: int | None = None,
    training_data: str | None = None,
    training_config: dict | None = None,
    evaluation_table: str | None = None,
    source: str | None = None,
    tags: list[str] | None = None,
) -> str:
    """The text of a model card for a Myna checkpoint with `config`.

    Args:
        config: the model's `MynaConfig`; a classifier's (`architectures` `MynaForAudioClassification`) card lists
            its labels and shows the audio-classification pipeline.
        num_parameters: parameters of the saved model.
        training_data: what it was trained on; defaults to the paper's pre-training data.
        training_config: hyper-parameters, listed as they are.
        evaluation_table: Markdown results (e.g. [`paper_evaluation_table`] for a converted release).
        source: where the weights come from (converted release, training script, ...).
        tags: extra Hub tags.
    """
    variant = variant_name(config)
    patches = ", ".join(f"{mode} {h}x{w}" for mode, (h, w) in zip(config.patch_modes, config.patch_sizes))
    is_classifier = CLASSIFIER_ARCHITECTURE in (getattr(config, "architectures", None) or [])
    all_tags = ["audio", "music", "myna", "music-information-retrieval"]
    all_tags += [tag for tag in tags or [] if tag not in all_tags]
    lines = [
        "---",
        "library_name: transformers",
        "license: mit",
        f"pipeline_tag: {'audio-classification' if is_classifier else 'feature-extraction'}",
        "tags:",
        *[f"- {tag}" for tag in all_tags],
        "---",
        "",
        f"# Myna ({variant}{', audio classifier' if is_classifier else ''})",
        "",
        "Myna is a self-supervised music representation model (arXiv 2502.12511): a ViT-S on 128-bin mel",
        "spectrograms of 3 s chunks, trained contrastively on two crops of each clip with 90% of the patch tokens",
        "of each crop dropped.",
        "",
        "## Model",
        "",
        f"- Variant: **{variant}**; tokenizers: {patches}; default mode `{config.default_patch_mode}` "
        f"(embedding width {config.embedding_size()}).",
        f"- Encoder: {config.num_hidden_layers} blocks, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads.",
        f"- Input: raw power mel spectrogram, {config.num_mel_bins} bins at {config.sampling_rate} Hz, "
        f"{config.chunk_frames} frames a chunk (computed by the bundled feature extractor).",
    ]
    if num_parameters is not None:
        lines.append(f"- Parameters: {num_parameters / 1e6:.1f}M.")
    if source:
        lines.append(f"- Source: {source}.")
    if is_classifier:
        labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        problem = getattr(config, "problem_type", None) or "single_label_classification"
        hidden = getattr(config, "classifier_hidden_size", 0)
        head = f"an MLP head (hidden width {hidden})" if hidden else "a linear classifier"
        lines.append(
            f"- Head: {head} on the `{config.default_patch_mode}` embedding, "
            f"{problem.replace('_', ' ')}, "
            f"{len(labels)} labels ({', '.join(labels)}); chunk logits are averaged over each input."
        )
    lines += [
        "",
        "## Training data",
        "",
        training_data or PAPER_TRAINING_DATA,
        "",
    ]
    if training_config:
        lines += ["Training configuration:", "", "```"]
        lines += [f"{key}: {value}" for key, value in sorted(training_config.items())]
        lines += ["```", ""]
    lines += [
        "## Intended use",
        "",
        "Frozen embeddings for music information retrieval: tagging, genre, key, emotion, similarity. Embed each",
        "chunk and average over a track (or keep the timeline). Vertical patches carry key information best; the",
        "hybrid model's `both` mode concatenates square and vertical embeddings. Not trained on speech; it does",
        "not transcribe, separate or generate audio. Inputs are mono 16 kHz; the model sees 3 s at a time, so",
        "anything longer is described by the mean (or the sequence) of 3 s embeddings.",
        "",
        "## How to use",
        "",
        "With the `myna-hf` package (`modeling_myna`, `myna_pipelines`), files of any length and format:",
        "",
        "```python",
    ]
    if is_classifier:
        lines += [
            "from myna_pipelines import MynaAudioClassificationPipeline  # also registers Myna with the Auto classes",
            "from transformers import pipeline",
            "",
            'classify = pipeline("audio-classification", model="path/to/this/folder",',
            "                    pipeline_class=MynaAudioClassificationPipeline)",
            'classify("song.mp3")  # [{"label": ..., "score": ...}, ...]',
            "```",
            "",
            "transformers' stock audio-classification pipeline also works, given 16 kHz mono NumPy arrays.",
            "",
        ]
    else:
        lines += [
            "import modeling_myna  # registers Myna with the Auto classes and the music-embedding pipeline",
            "from transformers import pipeline",
            "",
            'embed = pipeline("music-embedding", model="path/to/this/folder")',
            'embed("song.mp3")                    # (embedding width,) mean over 3 s chunks',
            'embed("set.flac", pooling="none")    # {"embeddings": (chunks, width), "start_times": seconds}',
            "```",
            "",
            "or from the shell: `myna embed music/ --model path/to/this/folder --output embeddings.npz`.",
            "",
        ]
    lines += [
        "With transformers alone:",
        "",
        "```python",
        "from transformers import AutoFeatureExtractor, AutoModel",
        "",
        'model = AutoModel.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        'extractor = AutoFeatureExtractor.from_pretrained("path/to/this/folder", trust_remote_code=True)',
        'features = extractor(audio, sampling_rate=sr, return_tensors="pt")  # audio: a mono NumPy array',
        "embeddings = model(**features).pooler_output  # one row per 3 s chunk",
        "```",
        "",
        "`trust_remote_code=True` runs the model code saved in this folder; with `modeling_myna` installed and",
        "imported it is not needed. The raw power mel spectrogram reaches ~1e6, past float16's range: pass",
        "`input_values` in float32 (the model's first LayerNorm runs in float32, so float16 weights are fine).",
        "",
    ]
    if evaluation_table:
        lines += ["## Evaluation", "", evaluation_table.strip(), ""]
    lines += ["## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)


def write_model_card(save_directory: str, config, **kwargs) -> str:
    """Writes `README.md` into `save_directory` and returns its path."""
    path = os.path.join(save_directory, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_model_card(config, **kwargs))
    return path
