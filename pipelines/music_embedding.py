"""The `music-embedding` pipeline: Myna embeddings of audio files, bytes, arrays or `datasets` audio, any length.

    >>> import modeling_myna  # registers Myna and "music-embedding" (so does importing this module)
    >>> from transformers import pipeline
    >>> embed = pipeline("music-embedding", model="path/to/myna-hybrid")
    >>> embed("song.mp3").shape                      # mean over the track's 3 s chunks
    (768,)
    >>> timeline = embed("set.flac", pooling="none")  # one row per chunk
    >>> timeline["embeddings"].shape, timeline["start_times"][:3]
    ((1171, 768), array([0.   , 3.072, 6.144]))

Chunks are those of the paper's track embedding: the mel spectrogram cut into non-overlapping 96-frame (3.072 s)
windows, the tail dropped (audio shorter than one chunk is zero-padded to one). Long recordings are streamed, so
memory does not grow with their length.
"""

from typing import Any

import numpy as np
import torch
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .base import MynaChunkPipeline


POOLING_MODES = ("mean", "none")
TASK = "music-embedding"


class MusicEmbeddingPipeline(MynaChunkPipeline):
    """
    Myna embeddings of whole tracks (mean over their chunks) or of each chunk (a timeline with start times).

    Inputs (one, or a list of them): a file path (wav, flac, ogg, mp3, and anything else libsndfile reads); the
    bytes of such a file; a `datasets` audio dict (`{"array", "sampling_rate"}`, or `{"bytes", "path"}` from
    `Audio(decode=False)`); `{"raw": array, "sampling_rate": rate}`; a NumPy array or torch tensor, `(samples,)` or
    `(channels, samples)`, with `sampling_rate=` given to the call. Audio is downmixed and resampled to 16 kHz.

    Options (at construction or per call):
        pooling (`str`, defaults to `"mean"`): `"mean"` returns one `(embedding_size,)` array per input; `"none"`
            returns `{"embeddings": (num_chunks, embedding_size), "start_times": (num_chunks,)}`, start times in
            seconds.
        patch_mode (`str`, defaults to the model's `default_patch_mode`): `"square"`, `"vertical"`, or, for a
            hybrid model, `"both"` (the two embeddings concatenated, twice as wide).
        batch_size (`int`, defaults to 32): chunks per forward pass; sets peak memory, whatever the track length.
        sampling_rate (`int`): the rate of bare arrays.
        hop_frames (`int`, defaults to the chunk width): frames between chunk starts; smaller values give
            overlapping chunks (a denser timeline).
        device, dtype: as for any transformers pipeline (`device="cuda"`, `dtype=torch.bfloat16`); the spectrogram
            is computed in float32 on the same device and reaches the model's float32 patch LayerNorm unchanged,
            so float16 models work too.

    Options at construction only:
        backend (`str`, defaults to `"pytorch"`): `"onnxruntime"` runs the model's exported ONNX graph on the CPU
            (`myna export`; exported on the fly when the folder has none), through `onnx_backend.inference_model`.
        precision (`str`, defaults to `"float32"`): `"int8"` (either backend) or `"bfloat16"` (PyTorch), checked
            against float32 on generated music first, as `myna embed --precision` is (`precision.py`).

    Unreadable inputs raise `modeling_myna.audio_utils.AudioDecodeError` (a `ValueError`) naming the input.
    """

    def __init__(self, model, *args, backend: str = "pytorch", precision: str = "float32", **kwargs):
        super().__init__(model, *args, **kwargs)
        self.inference, self.checks = None, []
        if backend != "pytorch" or precision != "float32":
            from .onnx_backend import inference_model

            self.inference, self.checks = inference_model(
                self.model, precision, backend, feature_extractor=self.feature_extractor
            )

    def _sanitize_parameters(self, pooling: str | None = None, patch_mode: str | None = None, **kwargs):
        preprocess_params = self._sanitize_common(**kwargs)
        forward_params, postprocess_params = {}, {}
        if patch_mode is not None:
            available = self.model.config.available_patch_modes
            if patch_mode not in available:
                raise ValueError(
                    f"patch_mode={patch_mode!r} is not available for this model: choose one of {available}."
                )
            forward_params["patch_mode"] = patch_mode
        if pooling is not None:
            if pooling not in POOLING_MODES:
                raise ValueError(f"pooling={pooling!r} is not one of {POOLING_MODES}.")
            postprocess_params["pooling"] = pooling
        return preprocess_params, forward_params, postprocess_params

    def _forward(self, model_inputs: dict[str, Any], patch_mode: str | None = None) -> dict[str, Any]:
        chunks, start_frames = self._segment_chunks(model_inputs)
        if self.inference is not None:  # another backend or precision
            embeddings = self.inference.embed(chunks, patch_mode)  # (num_chunks, D)
        else:
            # The bare encoder, also when the model given is a classifier or a pre-training model.
            embeddings = self.model.base_model(input_values=chunks, patch_mode=patch_mode).pooler_output
        return {"embeddings": embeddings.float(), "start_frames": start_frames, "is_last": model_inputs["is_last"]}

    def postprocess(self, model_outputs: list[dict[str, Any]], pooling: str = "mean") -> np.ndarray | dict:
        embeddings = torch.cat([output["embeddings"] for output in model_outputs]).numpy()  # (num_chunks, D)
        if pooling == "mean":
            return embeddings.mean(axis=0)
        start_frames = torch.cat([output["start_frames"] for output in model_outputs]).numpy()
        return {"embeddings": embeddings, "start_times": self.feature_extractor.chunk_start_seconds(start_frames)}


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MusicEmbeddingPipeline, pt_model=AutoModel, type="audio")

__all__ = ["POOLING_MODES", "TASK", "MusicEmbeddingPipeline"]
