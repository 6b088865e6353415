"""Tests of modeling_myna.mel: the FFT mel front end against nnAudio's `MelSpectrogram`, its definition.

Closeness is measured per example as max |fast - nnAudio| / max |nnAudio| over the whole (128, frames) spectrogram:
the power mel spans ten orders of magnitude, so the error that matters is relative to the loudest bin (both sides
sum in float32, in a different order).
"""

import numpy as np
import pytest
import torch

from modeling_myna import MynaMelSpectrogram
from modeling_myna.mel import nnaudio_mel_filters


SR = 16_000
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def nnaudio():
    from nnAudio.features.mel import MelSpectrogram

    return MelSpectrogram(sr=SR, n_mels=128, verbose=False).eval()


@pytest.fixture(scope="module")
def mel():
    return MynaMelSpectrogram().eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """(batch,) max absolute difference over the max absolute reference value, per example."""
    return (actual - expected).abs().amax((-2, -1)) / expected.abs().amax((-2, -1))


def music_like(batch: int, num_samples: int, seed: int) -> torch.Tensor:
    """Tones over noise, different per example: energy across the bands, with a 60 dB range."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    rows = []
    for _ in range(batch):
        tones = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(50, 7000) * t) for _ in range(4))
        rows.append(tones + 1e-3 * rng.standard_normal(num_samples))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def test_window_and_filterbank_are_nnaudios(nnaudio, mel):
    window, mel_basis = nnaudio_mel_filters()
    assert torch.equal(window, nnaudio.stft.window_mask.flatten()) and torch.equal(mel.window, window)
    assert torch.equal(mel_basis, nnaudio.mel_basis) and mel.mel_basis.shape == (128, 1025)
    assert nnaudio_mel_filters() is nnaudio_mel_filters()  # built once per setting


# 1025 is the shortest input reflect padding takes; 50,000 is one model chunk; the others end mid-hop.
@pytest.mark.parametrize("num_samples", [1025, 1500, 2048, 5_000, 50_000, 3 * SR + 7])
@pytest.mark.parametrize("batch", [1, 3])
def test_equals_nnaudio(nnaudio, mel, num_samples, batch):
    audio = music_like(batch, num_samples, seed=num_samples + batch)
    with torch.no_grad():
        expected = nnaudio(audio)
        actual = mel(audio)
    assert actual.shape == expected.shape == (batch, 128, num_samples // 512 + 1)
    assert actual.dtype == torch.float32 and actual.is_contiguous()
    assert relative_error(actual, expected).max() <= TOLERANCE
    assert expected.amax() > 100  # real signal, not a comparison of zeros


def test_float64_and_float32_inputs_agree_and_layouts_match_nnaudio(nnaudio, mel):
    audio = music_like(2, 20_000, seed=1)
    with torch.no_grad():
        single = mel(audio)
        torch.testing.assert_close(mel(audio.double()), single, rtol=0, atol=0)  # computed in float32
        torch.testing.assert_close(mel(audio[:, None]), single, rtol=0, atol=0)  # (batch, 1, samples)
        torch.testing.assert_close(mel(audio[0]), mel(audio[:1]), rtol=0, atol=0)  # (samples,)
        # nnAudio's conv kernels are float32; it takes float32 only.
        assert relative_error(single, nnaudio(audio)).max() <= TOLERANCE


def test_batch_rows_equal_each_row_alone(mel):
    audio = music_like(4, 30_000, seed=2)
    with torch.no_grad():
        batched = mel(audio)
        for i in range(4):
            assert relative_error(mel(audio[i : i + 1]), batched[i : i + 1]).max() <= 1e-6


def test_tone_energy_is_in_its_mel_band(mel):
    t = np.arange(2 * SR) / SR
    spectrogram = mel(torch.from_numpy(np.sin(2 * np.pi * 440.0 * t).astype(np.float32)))[0]
    # 440 Hz is 6.6 Slaney mels; band k is centred at (k + 1) * 45.245 / 129 mels.
    assert spectrogram.sum(-1).argmax() == round(440 / (200 / 3) / (45.245 / 129)) - 1
    assert spectrogram.max() > 1e4  # raw power of a full-scale tone: no log, no normalisation


@pytest.mark.parametrize("num_samples", [1, 100, 1023, 1024])
def test_audio_too_short_for_reflect_padding_is_a_clear_error(nnaudio, mel, num_samples):
    audio = torch.zeros(1, num_samples)
    with pytest.raises((AssertionError, RuntimeError)):
        nnaudio(audio)  # nnAudio fails too, less readably
    with pytest.raises(ValueError, match=f"{num_samples} samples is too short.*more than n_fft // 2 = 1024"):
        mel(audio)


@pytest.mark.parametrize(
    "audio, message",
    [(torch.zeros(2, 2, 4096), "downmix"), (torch.zeros(1, 4096, dtype=torch.int16), "floating-point")],
)
def test_bad_input_is_a_value_error(mel, audio, message):
    with pytest.raises(ValueError, match=message):
        mel(audio)


def test_nothing_is_saved_in_a_state_dict(mel):
    assert mel.state_dict() == {}  # window and filterbank derive from the arguments
    assert {name for name, _ in mel.named_buffers()} == {"window", "mel_basis"}  # but move with .to(device)


@pytest.mark.gpu
def test_gpu_equals_cpu(mel):
    audio = music_like(3, 3 * SR, seed=3)
    with torch.no_grad():
        on_gpu = MynaMelSpectrogram().cuda()(audio.cuda())
        assert on_gpu.device.type == "cuda"
        assert relative_error(on_gpu.cpu(), mel(audio)).max() <= TOLERANCE
