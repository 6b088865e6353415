"""Batching Myna's chunked examples for `transformers.Trainer`: [`MynaDataCollatorForAudioClassification`].

`MynaFeatureExtractor` cuts each recording into a variable number of 96-frame chunks and returns `audio_index` to map
them back; transformers' default collator stacks equal shapes and cannot batch that. This collator concatenates the
chunks of every example into one `(total_chunks, num_mel_bins, chunk_frames)` batch, builds `audio_index` (the
example each chunk comes from, so that `MynaForAudioClassification` averages its logits per example, as the Myna
paper's probes average over a track's chunks) and stacks the labels, one row per example.

For training, `random_crop=True` takes one random `chunk_frames` window per example instead (a new one each epoch),
and optional SpecAugment-style masks (Park et al. 2019) blank random time and frequency bands. It imports only numpy
and torch, so a user's own `Trainer` script can use it without the training extras.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


LABEL_KEYS = ("labels", "label", "label_ids")


def _as_float_array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=np.float32)


@dataclass
class MynaDataCollatorForAudioClassification:
    r"""
    Collates examples `{"input_values", "labels" | "label", ...}` into `input_values`, `audio_index` and `labels`.

    Each example's `input_values` is either the feature extractor's chunks, `(num_chunks, num_mel_bins,
    chunk_frames)`, or one whole spectrogram `(num_mel_bins, num_frames)` (the extractor with `chunk=False`); lists,
    NumPy arrays and tensors are all accepted. Other keys (`audio_index`, `chunk_start_frames`, `id`, ...) are
    ignored: `audio_index` is rebuilt for the batch.

    Args:
        random_crop (`bool`, *optional*, defaults to `False`):
            `False` (evaluation and prediction): every chunk of every example; a whole spectrogram is cut into
            non-overlapping `chunk_frames` windows, tail dropped, as the feature extractor does. `True` (training):
            one `chunk_frames` window per example at a uniformly drawn start frame. The chunks of an example are
            joined along time first, which gives the recording's spectrogram when they are consecutive and
            non-overlapping (the feature extractor's default).
        chunk_frames (`int`, *optional*):
            Width of a model input. Defaults to the width of chunked examples; required for whole spectrograms.
        time_mask_frames (`int`, *optional*, defaults to 0):
            SpecAugment: largest width of a time mask, in frames (0: no time masks). Applied when `random_crop`.
        num_time_masks (`int`, *optional*, defaults to 2):
            Time masks per chunk, each of a width drawn uniformly in `[0, time_mask_frames]`.
        freq_mask_bins (`int`, *optional*, defaults to 0):
            SpecAugment: largest height of a frequency mask, in mel bins (0: no frequency masks).
        num_freq_masks (`int`, *optional*, defaults to 2):
            Frequency masks per chunk.
        seed (`int`, *optional*):
            With a seed, each example's draws depend only on `(seed, epoch, example_index)` (examples must then
            carry an integer `example_index`), so that any number of processes and data-loader workers draw the same
            crops; call [`set_epoch`] at each epoch for new crops. Without one, draws come from torch's global RNG
            (which `Trainer` seeds per worker).
        padding_value (`float`, *optional*, defaults to 0.0):
            Fills spectrograms shorter than `chunk_frames` and the masked bands (0 is silence for a power mel).

    Returns a dict: `input_values` `(total_chunks, num_mel_bins, chunk_frames)` float32, `audio_index`
    `(total_chunks,)` int64 and, when the examples have labels, `labels`: `(batch,)` int64 for class indices,
    `(batch, num_labels)` float32 for multi-hot vectors and regression targets (`(batch,)` for scalar floats).

    Example:

    ```python
    >>> collator = MynaDataCollatorForAudioClassification()
    >>> batch = collator([{"input_values": np.zeros((3, 128, 96)), "label": 1},
    ...                   {"input_values": np.zeros((1, 128, 96)), "label": 0}])
    >>> batch["input_values"].shape, batch["audio_index"].tolist(), batch["labels"].tolist()
    (torch.Size([4, 128, 96]), [0, 0, 0, 1], [1, 0])
    ```
    """

    random_crop: bool = False
    chunk_frames: int | None = None
    time_mask_frames: int = 0
    num_time_masks: int = 2
    freq_mask_bins: int = 0
    num_freq_masks: int = 2
    seed: int | None = None
    padding_value: float = 0.0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Draws of the following batches use `epoch` (with a `seed`, the crops of an epoch are reproducible)."""
        self.epoch = int(epoch)

    def _spectrogram(self, values: np.ndarray, position: int) -> tuple[np.ndarray, int]:
        """One example as a `(F, frames)` spectrogram and the chunk width to use."""
        if values.ndim == 3:
            chunk_frames = self.chunk_frames or values.shape[-1]
            # (num_chunks, F, T) -> (F, num_chunks * T): consecutive non-overlapping chunks rejoined along time.
            return values.transpose(1, 0, 2).reshape(values.shape[1], -1), chunk_frames
        if values.ndim == 2:
            if self.chunk_frames is None:
                raise ValueError(
                    f"example #{position} is a whole spectrogram {values.shape}: pass chunk_frames (the model's "
                    "config.chunk_frames) to cut it, or give chunked input_values (num_chunks, num_mel_bins, frames)."
                )
            return values, self.chunk_frames
        raise ValueError(
            f"example #{position} has input_values of shape {values.shape}; expected chunks (num_chunks, "
            "num_mel_bins, chunk_frames) or a spectrogram (num_mel_bins, frames) from MynaFeatureExtractor."
        )

    def _pad(self, spectrogram: np.ndarray, chunk_frames: int) -> np.ndarray:
        missing = chunk_frames - spectrogram.shape[-1]
        if missing <= 0:
            return spectrogram
        return np.pad(spectrogram, ((0, 0), (0, missing)), constant_values=self.padding_value)

    def _rng(self, feature: Mapping, position: int, batch_rng: np.random.Generator) -> np.random.Generator:
        if self.seed is None:
            return batch_rng
        if "example_index" not in feature:
            raise ValueError(
                f"example #{position} has no 'example_index', which a seeded collator needs to draw the same crops "
                "in every process: add one (e.g. dataset.map(lambda _, i: {'example_index': i}, with_indices=True)) "
                "or set seed=None."
            )
        return np.random.default_rng((self.seed, self.epoch, int(feature["example_index"])))

    def _mask(self, chunk: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """SpecAugment time and frequency masks on one `(F, T)` chunk."""
        chunk = chunk.copy()
        masks = ((1, self.time_mask_frames, self.num_time_masks), (0, self.freq_mask_bins, self.num_freq_masks))
        for axis, width, count in masks:
            if width <= 0:
                continue
            size = chunk.shape[axis]
            for _ in range(count):
                w = int(rng.integers(0, min(width, size) + 1))
                start = int(rng.integers(0, size - w + 1))
                if axis == 1:
                    chunk[:, start : start + w] = self.padding_value
                else:
                    chunk[start : start + w, :] = self.padding_value
        return chunk

    def _labels(self, features: Sequence[Mapping]) -> torch.Tensor | None:
        key = next((k for k in LABEL_KEYS if k in features[0]), None)
        if key is None:
            return None
        labels = [f[key] for f in features]
        first = labels[0]
        if isinstance(first, torch.Tensor):
            first = first.item() if first.dim() == 0 else first.tolist()
        if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
            return torch.tensor([int(label) for label in labels], dtype=torch.long)
        return torch.from_numpy(np.stack([_as_float_array(label) for label in labels]))

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) == 0:
            raise ValueError("got an empty list of examples: a batch needs at least one.")
        batch_rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if self.random_crop else None
        chunks, counts = [], []
        for position, feature in enumerate(features):
            if "input_values" not in feature:
                raise ValueError(
                    f"example #{position} has no 'input_values' (keys: {sorted(feature)}): map the audio through "
                    "MynaFeatureExtractor first."
                )
            values = _as_float_array(feature["input_values"])
            if not self.random_crop and values.ndim == 3 and (self.chunk_frames in (None, values.shape[-1])):
                chunks.append(values)  # already the extractor's non-overlapping chunks
                counts.append(values.shape[0])
                continue
            spectrogram, chunk_frames = self._spectrogram(values, position)
            spectrogram = self._pad(spectrogram, chunk_frames)
            if self.random_crop:
                rng = self._rng(feature, position, batch_rng)
                start = int(rng.integers(0, spectrogram.shape[-1] - chunk_frames + 1))
                chunk = self._mask(spectrogram[:, start : start + chunk_frames], rng)
                chunks.append(chunk[None])
                counts.append(1)
            else:
                usable = spectrogram.shape[-1] // chunk_frames * chunk_frames
                windows = spectrogram[:, :usable].reshape(spectrogram.shape[0], -1, chunk_frames).transpose(1, 0, 2)
                chunks.append(windows)
                counts.append(windows.shape[0])
        if len({c.shape[1:] for c in chunks}) > 1:
            raise ValueError(
                f"examples have chunks of different shapes {sorted({c.shape[1:] for c in chunks})}: compute every "
                "example with the same feature extractor."
            )
        batch = {
            "input_values": torch.from_numpy(np.ascontiguousarray(np.concatenate(chunks))),
            "audio_index": torch.repeat_interleave(torch.arange(len(features)), torch.tensor(counts)),
        }
        labels = self._labels(features)
        if labels is not None:
            batch["labels"] = labels
        return batch


__all__ = ["MynaDataCollatorForAudioClassification"]
