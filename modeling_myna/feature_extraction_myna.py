"""Feature extractor for Myna: raw audio to the raw power mel spectrogram of the released checkpoints.

Audio is downmixed to mono, resampled to 16 kHz with soxr, and turned into a 128-bin power mel spectrogram: nnAudio's
`MelSpectrogram` with its defaults (n_fft 2048, hop 512, Hann, centred reflect padding, Slaney mel), as the
reference code (ghost-signal/myna, example.py) computes it, here with its STFT done by FFT (`MynaMelSpectrogram`,
equal to nnAudio's to ~1e-6 of the maximum). No log is taken: the released models take the raw power.
"""

from collections.abc import Sequence

import numpy as np
import soxr
import torch

from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

from .audio_utils import downmix
from .configuration_myna import (
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    SAMPLING_RATE,
    SQUARE_PATCH,
    chunk_frames_for,
)
from .mel import MynaMelSpectrogram


# A 2-D input is one multi-channel recording; its channel axis is the shorter one, and has at most this many.
MAX_CHANNELS = 8
# How the mel spectrogram is computed: "fft" (`MynaMelSpectrogram`, the default) or "nnaudio" (nnAudio's own
# convolution STFT, the definition; slower on CPU).
MEL_BACKENDS = ("fft", "nnaudio")


class MynaFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Turns raw audio into Myna's model inputs: `input_values` `(num_chunks, num_mel_bins, chunk_frames)`.

    Each input is downmixed, resampled to `sampling_rate`, and its mel spectrogram is cut into `chunk_frames`
    windows every `hop_frames` frames (non-overlapping by default, the paper's track embedding); the tail that
    does not fill a window is dropped. Audio shorter than one chunk is zero-padded at the end to one chunk.
    `audio_index` maps every chunk to its input, and `chunk_start_frames` gives where it starts.

    Args:
        feature_size (`int`, *optional*, defaults to 128):
            Mel bins.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Rate the model expects; other rates are resampled.
        n_fft (`int`, *optional*, defaults to 2048):
            STFT size (nnAudio's default).
        hop_length (`int`, *optional*, defaults to 512):
            STFT hop (nnAudio's default).
        chunk_frames (`int`, *optional*, defaults to 96):
            Frames of one model input (96 for square and hybrid models, 98 for the vertical model).
        hop_frames (`int`, *optional*):
            Frames between chunk starts; defaults to `chunk_frames` (no overlap).
        padding_value (`float`, *optional*, defaults to 0.0):
            Value used to pad spectrograms of different lengths when `chunk=False`.
        mel_backend (`str`, *optional*, defaults to `"fft"`):
            `"fft"` computes nnAudio's mel spectrogram with `torch.stft` ([`MynaMelSpectrogram`]); `"nnaudio"` runs
            nnAudio's `MelSpectrogram` itself, for comparison. The two agree to ~1e-6 of the maximum. A run-time
            choice, not saved with the extractor.
    """

    model_input_names = ["input_values"]

    def __init__(
        self,
        feature_size: int = N_MELS,
        sampling_rate: int = SAMPLING_RATE,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        chunk_frames: int | None = None,
        hop_frames: int | None = None,
        padding_value: float = 0.0,
        mel_backend: str = "fft",
        **kwargs,
    ):
        # Chunks all have one width and the model takes no attention mask; folders saved before this stored
        # `return_attention_mask: true`, which never had an effect.
        kwargs.pop("return_attention_mask", None)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=False,
            **kwargs,
        )
        if mel_backend not in MEL_BACKENDS:
            raise ValueError(f"mel_backend={mel_backend!r}: choose one of {MEL_BACKENDS}.")
        self.mel_backend = mel_backend
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.chunk_frames = chunk_frames if chunk_frames is not None else chunk_frames_for([SQUARE_PATCH])
        self.hop_frames = hop_frames
        self._mel_modules: dict[str, torch.nn.Module] = {}

    @classmethod
    def from_config(cls, config, **kwargs) -> "MynaFeatureExtractor":
        """The feature extractor matching a [`MynaConfig`] (its mel bins, sampling rate and chunk width)."""
        return cls(
            feature_size=config.num_mel_bins,
            sampling_rate=config.sampling_rate,
            chunk_frames=config.chunk_frames,
            **kwargs,
        )

    @classmethod
    def from_dict(cls, feature_extractor_dict: dict, **kwargs):
        # transformers applies only keywords the saved dict holds, and `mel_backend` is never saved.
        if "mel_backend" in kwargs:
            feature_extractor_dict = {**feature_extractor_dict, "mel_backend": kwargs.pop("mel_backend")}
        return super().from_dict(feature_extractor_dict, **kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.pop("_mel_modules", None)
        # How the same numbers are computed is no property of a saved extractor: folders stay loadable everywhere
        # and cache keys built from `to_dict` do not change.
        output.pop("mel_backend", None)
        return output

    def mel_spectrogram(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The mel module on `device`, built once per device: `(batch, samples)` float waveforms to
        `(batch, num_mel_bins, samples // hop_length + 1)` float32 raw power."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" share one module
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if self.mel_backend != "fft":
            key = f"{key} {self.mel_backend}"
        if key not in self._mel_modules:
            if self.mel_backend == "nnaudio":
                from nnAudio.features.mel import MelSpectrogram

                module = MelSpectrogram(
                    sr=self.sampling_rate,
                    n_fft=self.n_fft,
                    n_mels=self.feature_size,
                    hop_length=self.hop_length,
                    verbose=False,
                )
            else:
                module = MynaMelSpectrogram(
                    sampling_rate=self.sampling_rate,
                    n_fft=self.n_fft,
                    hop_length=self.hop_length,
                    n_mels=self.feature_size,
                )
            self._mel_modules[key] = module.to(device).eval()
        return self._mel_modules[key]

    def to_mono(self, audio, position: int = -1) -> np.ndarray:
        """One recording as validated mono float32: integer PCM scaled, the shorter axis of 2-D audio averaged.

        `position` names the recording in errors (its index in a batch; -1 for a single recording).
        """
        name = "audio" if position < 0 else f"audio #{position} of the batch"
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().numpy()
        audio = np.asarray(audio)
        if not np.issubdtype(audio.dtype, np.number):
            raise ValueError(f"{name} must hold numbers, got dtype {audio.dtype}.")
        if audio.ndim > 2:
            raise ValueError(
                f"{name} has {audio.ndim} dimensions {audio.shape}; expected (samples,) or (channels, samples): "
                "pass a list of recordings for a batch."
            )
        if audio.size == 0:
            raise ValueError(f"{name} is empty (shape {audio.shape}): there is nothing to embed.")
        if np.issubdtype(audio.dtype, np.integer):
            # PCM integers to [-1, 1), as soundfile and torchaudio read them as floats. Unsigned PCM (8-bit WAV)
            # is offset binary: silence is the middle code, 128 for uint8.
            info = np.iinfo(audio.dtype)
            half_range = (int(info.max) - int(info.min) + 1) / 2
            zero = info.min + half_range
            audio = ((audio.astype(np.float64) - zero) / half_range).astype(np.float32)
        audio = audio.astype(np.float32, copy=False)
        if audio.ndim == 2:
            channel_axis = int(np.argmin(audio.shape))
            if audio.shape[channel_axis] > MAX_CHANNELS:
                raise ValueError(
                    f"{name} has shape {audio.shape}, which is no (channels, samples) layout with at most "
                    f"{MAX_CHANNELS} channels: pass a list of 1-D arrays for a batch of mono recordings."
                )
            audio = downmix(audio, channel_axis)
        if not np.isfinite(audio).all():
            bad = int((~np.isfinite(audio)).sum())
            raise ValueError(f"{name} has {bad} NaN or infinite samples: clean or drop this recording.")
        return audio

    def _prepare(self, raw_speech, sampling_rate: int) -> list[np.ndarray]:
        if isinstance(raw_speech, (list, tuple)) and len(raw_speech) == 0:
            raise ValueError("got an empty list of audio: pass at least one recording.")
        is_batched = isinstance(raw_speech, (list, tuple)) and not np.isscalar(raw_speech[0])
        recordings = raw_speech if is_batched else [raw_speech]
        mono = [self.to_mono(a, i if is_batched else -1) for i, a in enumerate(recordings)]
        if sampling_rate != self.sampling_rate:
            mono = [soxr.resample(a, sampling_rate, self.sampling_rate, quality="HQ").astype(np.float32) for a in mono]
        return mono

    @torch.no_grad()
    def _spectrograms(self, audios: list[np.ndarray], device: str | torch.device) -> list[torch.Tensor]:
        """One `(num_mel_bins, frames)` float32 spectrogram per recording; equal lengths share one call."""
        mel = self.mel_spectrogram(device)
        if len({len(a) for a in audios}) == 1:
            batch = torch.from_numpy(np.stack(audios)).to(device)
            return list(mel(batch).unbind(0))
        return [mel(torch.from_numpy(a).to(device)[None])[0] for a in audios]

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | Sequence,
        sampling_rate: int | None = None,
        chunk: bool = True,
        hop_frames: int | None = None,
        return_tensors: str | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]` or a list of these):
                One recording, `(samples,)` or `(channels, samples)` / `(samples, channels)` (the shorter axis is
                taken as channels and averaged), or a list of recordings. Integer PCM is scaled to [-1, 1)
                (unsigned PCM, such as 8-bit WAV, centred on its middle code).
            sampling_rate (`int`):
                Rate of `raw_speech`. Required: a wrong rate silently gives wrong spectrograms.
            chunk (`bool`, *optional*, defaults to `True`):
                Cut into `chunk_frames` windows. With `False`, returns whole spectrograms padded to the longest
                with `padding_value`, and their true lengths as `num_frames`.
            hop_frames (`int`, *optional*):
                Overrides the instance's `hop_frames` (e.g. overlapping windows for training).
            return_tensors (`str`, *optional*):
                `"pt"` or `"np"`; lists of arrays otherwise.
            device (`str` or `torch.device`, *optional*, defaults to `"cpu"`):
                Where the mel spectrogram is computed (a GPU makes long batches faster). Outputs stay on that device
                with `"pt"`.

        Returns:
            [`BatchFeature`] with `input_values` `(num_chunks, num_mel_bins, chunk_frames)`, `audio_index`
            `(num_chunks,)` and `chunk_start_frames` `(num_chunks,)`; or, with `chunk=False`, `input_values`
            `(batch, num_mel_bins, max_frames)` and `num_frames` `(batch,)`.
        """
        self._refuse_padding_options(**kwargs)
        if sampling_rate is None:
            raise ValueError(
                f"sampling_rate is required: pass the rate of your audio (e.g. sampling_rate=44100); it is "
                f"resampled to {self.sampling_rate} Hz."
            )
        if sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {sampling_rate}.")
        audios = self._prepare(raw_speech, int(sampling_rate))

        if not chunk:
            specs = self._spectrograms(audios, device)
            num_frames = [s.shape[-1] for s in specs]
            padded = specs[0].new_full((len(specs), self.feature_size, max(num_frames)), self.padding_value)
            for i, spec in enumerate(specs):
                padded[i, :, : spec.shape[-1]] = spec
            return self._pack({"input_values": padded, "num_frames": torch.tensor(num_frames)}, return_tensors)

        # Zero-pad short audio so that its spectrogram fills one chunk.
        min_samples = (self.chunk_frames - 1) * self.hop_length
        audios = [np.pad(a, (0, min_samples - len(a))) if len(a) < min_samples else a for a in audios]
        specs = self._spectrograms(audios, device)
        hop = hop_frames or self.hop_frames or self.chunk_frames
        chunks, audio_index, starts = [], [], []
        for i, spec in enumerate(specs):
            # (num_chunks, F, chunk_frames) windows every `hop` frames; the tail that fills no window is dropped.
            windows = spec.unfold(-1, self.chunk_frames, hop).permute(1, 0, 2)
            chunks.append(windows)
            audio_index.append(torch.full((windows.shape[0],), i, dtype=torch.long))
            starts.append(torch.arange(windows.shape[0], dtype=torch.long) * hop)
        features = {
            "input_values": torch.cat(chunks).contiguous(),
            "audio_index": torch.cat(audio_index),
            "chunk_start_frames": torch.cat(starts),
        }
        return self._pack(features, return_tensors)

    @staticmethod
    def _refuse_padding_options(
        padding=None, truncation=None, max_length=None, pad_to_multiple_of=None, return_attention_mask=None, **_
    ) -> None:
        """transformers' padding options mean nothing for Myna: refuse them rather than ignore them silently."""
        asked = {
            name: value
            for name, value in (
                # Padding to the longest is what chunking (all one width) and `chunk=False` already do.
                ("padding", None if padding in (None, False, True, "do_not_pad", "longest") else padding),
                ("truncation", truncation or None),
                ("max_length", max_length),
                ("pad_to_multiple_of", pad_to_multiple_of),
                ("return_attention_mask", return_attention_mask or None),
            )
            if value is not None
        }
        if asked:
            raise ValueError(
                f"MynaFeatureExtractor does not take {sorted(asked)}: it cuts audio into chunks of exactly "
                "`chunk_frames` frames (shorter audio is zero-padded to one chunk, the tail that fills no chunk is "
                "dropped), so every row of `input_values` has the same width and Myna needs no attention mask. "
                "Use `hop_frames` for overlapping chunks, or `chunk=False` for whole spectrograms padded to the "
                "longest (true lengths in `num_frames`)."
            )

    def pad(
        self,
        processed_features,
        padding=True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Collates examples of one chunk each (what `DataCollatorWithPadding` hands over) into one batch.

        Myna's chunks all have the same `(num_mel_bins, chunk_frames)` shape, so they are stacked, never padded:
        `input_values` becomes `(batch, num_mel_bins, chunk_frames)` and every other key (labels, `audio_index`)
        is stacked as well. Examples of different widths, or of several chunks, are refused with the reason;
        `max_length`, truncation, `pad_to_multiple_of` and attention masks are refused too.

        Args:
            processed_features: a list of feature dicts, or a dict of lists.
            return_tensors: `"pt"`, `"np"`, or `None` for lists.
        """
        self._refuse_padding_options(
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=return_attention_mask,
        )
        if isinstance(processed_features, (list, tuple)):
            if not processed_features:
                raise ValueError("pad got no examples: pass a list of feature dicts with `input_values`.")
            processed_features = {key: [f[key] for f in processed_features] for key in processed_features[0]}
        if "input_values" not in processed_features:
            raise ValueError(f"pad needs `input_values`, got the keys {sorted(processed_features)}.")
        batch = {}
        for key, values in processed_features.items():
            values = [v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for v in values]
            shapes = {tuple(v.shape) for v in values}
            if key == "input_values" and (len(shapes) > 1 or len(next(iter(shapes))) != 2):
                raise ValueError(
                    f"pad stacks single chunks of shape (num_mel_bins, chunk_frames), got input_values of shapes "
                    f"{sorted(shapes)}: cut examples into {self.chunk_frames}-frame chunks with this extractor (one "
                    "chunk per example), or batch whole recordings by calling the extractor on a list of them "
                    "(it returns `audio_index` to map chunks back)."
                )
            if len(shapes) > 1:
                raise ValueError(f"pad cannot stack `{key}`: its examples have different shapes {sorted(shapes)}.")
            batch[key] = torch.stack(values)
        return self._pack(batch, return_tensors)

    @staticmethod
    def _pack(features: dict[str, torch.Tensor], return_tensors: str | None) -> BatchFeature:
        if return_tensors == "pt":
            return BatchFeature(features)
        features = {k: v.cpu().numpy() for k, v in features.items()}
        if return_tensors is None:
            features = {k: list(v) for k, v in features.items()}
        return BatchFeature(features, tensor_type=return_tensors)

    def chunk_start_seconds(self, chunk_start_frames) -> np.ndarray:
        """Start time in seconds of chunks starting at these frames."""
        return np.asarray(chunk_start_frames) * self.hop_length / self.sampling_rate


__all__ = ["MynaFeatureExtractor"]
