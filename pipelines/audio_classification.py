"""Audio classification with a Myna classifier folder, for files of any length and any sampling rate.

transformers' own `pipeline("audio-classification", model=folder)` works with a Myna classifier for 16 kHz NumPy
arrays. It decodes files and bytes with FFmpeg and resamples with torchaudio, so without them it cannot read a
path or take another rate, and it computes a whole track's spectrogram at once. This subclass of the same task
decodes with libsndfile, resamples with soxr and streams long tracks; pass it as `pipeline_class`:

    >>> import myna_pipelines
    >>> from transformers import pipeline
    >>> classify = pipeline(
    ...     "audio-classification", model="my-genre-probe", pipeline_class=MynaAudioClassificationPipeline
    ... )
    >>> classify("song.mp3", top_k=2)
    [{'score': 0.91, 'label': 'jazz'}, {'score': 0.04, 'label': 'blues'}]

Scores equal the stock pipeline's: chunk logits are averaged over the track (what `MynaForAudioClassification`
does with `audio_index`), then softmax (single-label), sigmoid (multi-label) or nothing (regression).
"""

from typing import Any

import torch

from .base import MynaChunkPipeline


FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")
_UNSET = object()  # `top_k=None` means "all labels", so "not given" needs its own marker


class MynaAudioClassificationPipeline(MynaChunkPipeline):
    """
    Labels and scores for each input, from a `MynaForAudioClassification` model, as
    `transformers.AudioClassificationPipeline` returns them: `[{"label", "score"}, ...]`, best first.

    Takes the inputs and the `batch_size`, `sampling_rate`, `hop_frames`, `device` and `dtype` options of
    [`MusicEmbeddingPipeline`], plus:
        top_k (`int`, defaults to 5): labels returned; `None` for all of them.
        function_to_apply (`str`): `"softmax"`, `"sigmoid"` or `"none"`; defaults to what `config.problem_type`
            implies (sigmoid for multi-label, none for regression, softmax otherwise).
    """

    def __init__(self, *args, **kwargs):
        # As transformers' audio-classification pipeline: 5 labels unless told, all of them for top_k=None.
        kwargs.setdefault("top_k", 5)
        super().__init__(*args, **kwargs)

    def _sanitize_parameters(self, top_k: Any = _UNSET, function_to_apply: str | None = None, **kwargs):
        preprocess_params = self._sanitize_common(**kwargs)
        postprocess_params = {}
        num_labels = self.model.config.num_labels
        if top_k is None:
            postprocess_params["top_k"] = num_labels
        elif top_k is not _UNSET:
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer or None (all labels), got {top_k!r}.")
            postprocess_params["top_k"] = min(top_k, num_labels)
        if function_to_apply is not None:
            if function_to_apply not in FUNCTIONS_TO_APPLY:
                raise ValueError(f"function_to_apply={function_to_apply!r} is not one of {FUNCTIONS_TO_APPLY}.")
            postprocess_params["function_to_apply"] = function_to_apply
        return preprocess_params, {}, postprocess_params

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        chunks, _ = self._segment_chunks(model_inputs)
        logits = self.model(input_values=chunks).logits  # (num_chunks, num_labels), no audio_index: per chunk
        return {"logits": logits.float(), "is_last": model_inputs["is_last"]}

    def postprocess(
        self, model_outputs: list[dict[str, Any]], top_k: int = 5, function_to_apply: str | None = None
    ) -> list[dict[str, Any]]:
        logits = torch.cat([output["logits"] for output in model_outputs]).mean(dim=0)  # (num_labels,)
        if function_to_apply is None:
            problem_type = self.model.config.problem_type
            function_to_apply = {"regression": "none", "multi_label_classification": "sigmoid"}.get(
                problem_type, "softmax"
            )
        if function_to_apply == "softmax":
            scores = logits.softmax(-1)
        elif function_to_apply == "sigmoid":
            scores = logits.sigmoid()
        else:
            scores = logits
        values, ids = scores.topk(min(top_k, scores.shape[-1]))
        id2label = self.model.config.id2label
        return [{"score": value, "label": id2label[i]} for value, i in zip(values.tolist(), ids.tolist())]


__all__ = ["MynaAudioClassificationPipeline"]
