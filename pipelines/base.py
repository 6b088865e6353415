"""The part the Myna pipelines share: any audio input, streamed through the model a few chunks at a time.

A `transformers.ChunkPipeline` whose `preprocess` yields the [`AudioSegment`]s of one input (see `streaming.py`)
and whose `_forward` computes each segment's chunk spectrograms on the pipeline's device and runs the model on
them. `postprocess` sees the per-chunk outputs of one whole input, which are small (one row per 3 s chunk).
"""

from collections.abc import Iterator
from typing import Any

import torch

from modeling_myna import MynaFeatureExtractor
from transformers.pipelines.base import ChunkPipeline

from .streaming import AudioSegment, segment_chunks, stream_segments


DEFAULT_BATCH_SIZE = 32  # chunks per forward: ~100 s of audio, ~50 MB of STFT work space


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


class MynaChunkPipeline(ChunkPipeline):
    """Base of the Myna pipelines; see [`MusicEmbeddingPipeline`] for the inputs and common options.

    `batch_size` here is the number of *chunks* per forward pass (the segment size), not a number of inputs: one
    long track already fills many batches, and a batch never mixes tracks, so peak memory depends on `batch_size`
    only.
    """

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_tokenizer = False
    # Optional: a folder without preprocessor_config.json gets the feature extractor matching its config.
    _load_feature_extractor = None

    def __init__(self, model, *args, batch_size: int | None = None, **kwargs):
        if kwargs.get("feature_extractor") is None:
            kwargs["feature_extractor"] = MynaFeatureExtractor.from_config(model.config)
        if batch_size is not None:
            kwargs["batch_size_chunks"] = batch_size
        # Any model dtype works, float16 included: chunks stay float32 and the model's first LayerNorm runs in
        # float32, so the raw power mel (~1e6, past float16's 65504) never passes through float16.
        super().__init__(model, *args, **kwargs)

    def __call__(self, inputs, batch_size: int | None = None, **kwargs):
        # The DataLoader's batch stays 1 (one input at a time); `batch_size` sizes the segments instead.
        if batch_size is not None:
            kwargs["batch_size_chunks"] = batch_size
        return super().__call__(inputs, **kwargs)

    def _sanitize_common(
        self,
        batch_size_chunks: int | None = None,
        sampling_rate: int | None = None,
        hop_frames: int | None = None,
        **unknown,
    ) -> dict:
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for {type(self).__name__}; see help({type(self).__name__})."
            )
        preprocess_params = {}
        if batch_size_chunks is not None:
            preprocess_params["batch_size"] = _positive_int(batch_size_chunks, "batch_size")
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = _positive_int(sampling_rate, "sampling_rate")
        if hop_frames is not None:
            preprocess_params["hop_frames"] = _positive_int(hop_frames, "hop_frames")
        return preprocess_params

    def preprocess(
        self,
        inputs: Any,
        batch_size: int = DEFAULT_BATCH_SIZE,
        sampling_rate: int | None = None,
        hop_frames: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        for segment in stream_segments(
            inputs, self.feature_extractor, batch_size, sampling_rate=sampling_rate, hop_frames=hop_frames
        ):
            yield {
                "samples": torch.from_numpy(segment.samples),  # (num_samples,) moved to the device by `forward`
                "first_frame": segment.first_frame,
                "num_chunks": segment.num_chunks,
                "start_frame": segment.start_frame,
                "hop_frames": segment.hop_frames,
                "is_last": segment.is_last,
            }

    def _segment_chunks(self, model_inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A segment's `(num_chunks, num_mel_bins, chunk_frames)` float32 spectrograms on the pipeline's device, and
        the `(num_chunks,)` track frames where they start."""
        segment = AudioSegment(**model_inputs)
        chunks = segment_chunks(segment, self.feature_extractor, device=self.device)
        return chunks, torch.as_tensor(segment.chunk_start_frames())


__all__ = ["DEFAULT_BATCH_SIZE", "MynaChunkPipeline"]
