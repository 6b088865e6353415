"""Myna's mel front end: nnAudio's raw power mel spectrogram, with its STFT computed by FFT.

The released checkpoints were trained on nnAudio's `MelSpectrogram(sr=16000, n_mels=128)` (SPEC §1). nnAudio
computes the STFT as a 1-D convolution of the reflect-padded signal with 1025 windowed sine and cosine kernels of
2048 taps each, then squares the magnitude and multiplies by its Slaney mel filterbank. That convolution is an
O(n_fft) dot product per bin and frame; `torch.stft` gives the same sums by FFT, about 12x faster on a CPU core.

`MynaMelSpectrogram` keeps nnAudio as the definition: its window and filterbank are the tensors nnAudio builds
(`nnAudio.utils.get_window` + `pad_center`, `nnAudio.utils.get_mel`, the very calls `MelSpectrogram` makes), and
the test suite checks the output against nnAudio's module (max difference ~1e-6 of the spectrogram's maximum; the
two differ only in float32 summation order). The mapping, term by term:

    nnAudio                                          here
    ReflectionPad1d(n_fft // 2)                      torch.stft(center=True, pad_mode="reflect")
    conv1d(x, cos(2 pi k s / n_fft) * window)        real part of the windowed FFT, onesided: k = 0 .. n_fft // 2
    conv1d(x, sin(2 pi k s / n_fft) * window)        minus its imaginary part (the sign vanishes when squared)
    sqrt(re^2 + im^2) ** power (power = 2)           re^2 + im^2 (no normalisation on either side)
    matmul(mel_basis, spec)                          the same matmul, the same mel_basis
"""

import functools

import torch
from torch import nn

from .configuration_myna import HOP_LENGTH, N_FFT, N_MELS, SAMPLING_RATE


@functools.lru_cache(maxsize=8)
def nnaudio_mel_filters(
    sampling_rate: int = SAMPLING_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """nnAudio's STFT window `(n_fft,)` and mel filterbank `(n_mels, n_fft // 2 + 1)`, float32 on the CPU.

    Built once per setting with the calls `nnAudio.features.mel.MelSpectrogram` makes (defaults: periodic Hann
    window, Slaney mel scale with area norm, `fmax=None` meaning Nyquist). Treat the tensors as read-only: they are
    shared.
    """
    from nnAudio.utils import get_mel, get_window, pad_center  # scipy-backed; imported once, when first needed

    window = torch.tensor(pad_center(get_window("hann", n_fft, fftbins=True), n_fft), dtype=torch.float32)
    mel_basis = torch.tensor(get_mel(sampling_rate, n_fft, n_mels, fmin, fmax, htk=False, norm=1))
    return window, mel_basis


class MynaMelSpectrogram(nn.Module):
    r"""
    nnAudio's `MelSpectrogram` (raw power, no log), computed with `torch.stft`: the front end of the released Myna
    checkpoints. Works on any device; input of any floating dtype is computed in float32.

    Args:
        sampling_rate (`int`, *optional*, defaults to 16000):
            Rate of the input; places the mel bands.
        n_fft (`int`, *optional*, defaults to 2048):
            STFT size and Hann window length.
        hop_length (`int`, *optional*, defaults to 512):
            Samples between frames.
        n_mels (`int`, *optional*, defaults to 128):
            Mel bins.
        fmin (`float`, *optional*, defaults to 0.0):
            Lowest mel band edge in Hz.
        fmax (`float`, *optional*):
            Highest mel band edge in Hz; defaults to Nyquist, as nnAudio's does.

    Input: waveforms `(batch, samples)`, or `(samples,)` / `(batch, 1, samples)` as nnAudio accepts them, with more
    than `n_fft // 2` samples (reflect padding needs them). Output: `(batch, n_mels, samples // hop_length + 1)`
    float32.
    """

    def __init__(
        self,
        sampling_rate: int = SAMPLING_RATE,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
        n_mels: int = N_MELS,
        fmin: float = 0.0,
        fmax: float | None = None,
    ):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        window, mel_basis = nnaudio_mel_filters(sampling_rate, n_fft, n_mels, fmin, fmax)
        # Not persistent: derived from the arguments, never state to save or load.
        self.register_buffer("window", window.clone(), persistent=False)
        self.register_buffer("mel_basis", mel_basis.clone(), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.dim() == 3 and waveforms.shape[1] == 1:
            waveforms = waveforms[:, 0]
        elif waveforms.dim() == 1:
            waveforms = waveforms[None]
        if waveforms.dim() != 2:
            raise ValueError(
                f"expected waveforms of shape (batch, samples), (samples,) or (batch, 1, samples), got "
                f"{tuple(waveforms.shape)}: downmix multi-channel audio first."
            )
        if not waveforms.is_floating_point():
            raise ValueError(f"expected floating-point waveforms in [-1, 1], got dtype {waveforms.dtype}.")
        num_samples = waveforms.shape[-1]
        if num_samples <= self.n_fft // 2:
            # nnAudio fails here too (an AssertionError, or ReflectionPad1d's RuntimeError at exactly n_fft // 2).
            raise ValueError(
                f"audio of {num_samples} samples is too short for the centred STFT: its reflect padding needs more "
                f"than n_fft // 2 = {self.n_fft // 2} samples. Zero-pad it (the feature extractor does so with "
                "chunk=True)."
            )
        stft = torch.stft(
            waveforms.to(self.window.dtype),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (B, n_fft // 2 + 1, T) complex; stored frame-major, (B, T, n_fft // 2 + 1)
        # |X|^2 as re^2 + im^2 on the contiguous (B, T, bins, 2) view: far faster than abs() then square.
        squares = torch.view_as_real(stft.transpose(-1, -2)).square()
        power = squares[..., 0] + squares[..., 1]  # (B, T, bins)
        return torch.matmul(self.mel_basis, power.transpose(-1, -2))  # (B, n_mels, T)


__all__ = ["MynaMelSpectrogram", "nnaudio_mel_filters"]
