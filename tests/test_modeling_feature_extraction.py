"""Tests of MynaFeatureExtractor and the audio reader: nnAudio parity, chunking, resampling, bad input."""

import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_myna import MynaConfig, MynaFeatureExtractor
from modeling_myna import audio_utils
from modeling_myna.audio_utils import AudioDecodeError, downmix, load_audio
from transformers import AutoFeatureExtractor


SR = 16_000


def tone(seconds: float, frequency: float = 440.0, sampling_rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def reference_mel(audio: np.ndarray) -> torch.Tensor:
    """nnAudio called directly, as the reference code does."""
    from nnAudio.features.mel import MelSpectrogram

    return MelSpectrogram(sr=16000, n_mels=128, verbose=False)(torch.from_numpy(audio)[None])[0]


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The FFT front end against nnAudio: max |difference| <= 1e-5 of the spectrogram's max (see test_modeling_mel)."""
    assert actual.shape == expected.shape
    assert float((actual - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_whole_spectrogram_equals_nnaudio_called_directly():
    audio = np.random.default_rng(0).standard_normal(40_000).astype(np.float32) * 0.1
    features = MynaFeatureExtractor()(audio, sampling_rate=SR, chunk=False, return_tensors="pt")
    expected = reference_mel(audio)
    assert features["input_values"].shape == (1, 128, 40_000 // 512 + 1)
    assert_close_to_reference(features["input_values"][0], expected)
    assert features["num_frames"].tolist() == [79]
    # The escape hatch runs nnAudio's own module: the reference, bit for bit.
    nnaudio = MynaFeatureExtractor(mel_backend="nnaudio")(audio, sampling_rate=SR, chunk=False, return_tensors="pt")
    torch.testing.assert_close(nnaudio["input_values"][0], expected, rtol=0, atol=0)


def test_batched_spectrograms_of_mixed_lengths_equal_nnaudio():
    rng = np.random.default_rng(3)
    batch = [rng.standard_normal(n).astype(np.float32) * 0.2 for n in (20_000, 33_333, 20_000)]
    for lengths in ([batch[0], batch[2]], batch):  # one stacked call; one call per recording
        features = MynaFeatureExtractor()(lengths, sampling_rate=SR, chunk=False, return_tensors="pt")
        for audio, spectrogram, frames in zip(lengths, features["input_values"], features["num_frames"]):
            assert_close_to_reference(spectrogram[:, :frames], reference_mel(audio))


def test_too_short_for_the_stft_without_chunking_is_a_clear_error():
    with pytest.raises(ValueError, match="too short for the centred STFT"):
        MynaFeatureExtractor()(tone(0.05), sampling_rate=SR, chunk=False)  # 800 samples


def test_raw_power_of_a_full_scale_tone_is_large_and_float32():
    features = MynaFeatureExtractor()(tone(3.2, amplitude=1.0), sampling_rate=SR, return_tensors="pt")
    values = features["input_values"]
    assert values.dtype == torch.float32
    # ~1.3e4 for a full-scale sine; dense full-scale music reaches ~1e6 (SPEC §1), past float16's 65504.
    assert values.max() > 1e4
    # The energy sits in the band of 440 Hz: 6.6 Slaney mels; band k is centred at (k + 1) * 45.245 / 129 mels.
    assert values[0].sum(-1).argmax() == round(440 / (200 / 3) / (45.245 / 129)) - 1


def test_chunks_are_windows_of_the_whole_spectrogram():
    extractor = MynaFeatureExtractor()
    audio = np.random.default_rng(1).standard_normal(16_000 * 10).astype(np.float32)
    whole = extractor(audio, sampling_rate=SR, chunk=False, return_tensors="pt")["input_values"][0]  # 313 frames
    assert_close_to_reference(whole, reference_mel(audio))
    chunks = extractor(audio, sampling_rate=SR, return_tensors="pt")
    assert chunks["input_values"].shape == (3, 128, 96)  # tail of 25 frames dropped
    for i in range(3):
        torch.testing.assert_close(chunks["input_values"][i], whole[:, 96 * i : 96 * (i + 1)], rtol=0, atol=0)
    assert chunks["chunk_start_frames"].tolist() == [0, 96, 192]
    np.testing.assert_allclose(extractor.chunk_start_seconds([0, 96]), [0.0, 96 * 512 / 16000])

    overlapping = extractor(audio, sampling_rate=SR, hop_frames=48, return_tensors="pt")
    assert overlapping["chunk_start_frames"].tolist() == [0, 48, 96, 144, 192]
    torch.testing.assert_close(overlapping["input_values"][1], whole[:, 48:144], rtol=0, atol=0)


def test_batches_map_chunks_back_to_their_inputs():
    extractor = MynaFeatureExtractor()
    batch = [tone(7.0), tone(1.0), tone(12.0, 220.0)]
    features = extractor(batch, sampling_rate=SR, return_tensors="pt")
    assert features["audio_index"].tolist() == [0, 0, 1, 2, 2, 2]
    # Each input's chunks equal that input on its own.
    alone = extractor(batch[2], sampling_rate=SR, return_tensors="pt")["input_values"]
    torch.testing.assert_close(features["input_values"][3:], alone)


def test_short_audio_is_zero_padded_to_one_chunk():
    extractor = MynaFeatureExtractor()
    short = tone(0.5)
    features = extractor(short, sampling_rate=SR, return_tensors="pt")
    assert features["input_values"].shape == (1, 128, 96)
    padded = np.concatenate([short, np.zeros(95 * 512 - len(short), np.float32)])
    assert_close_to_reference(features["input_values"][0], reference_mel(padded)[:, :96])


def test_vertical_model_chunks_are_98_frames():
    extractor = MynaFeatureExtractor.from_config(MynaConfig.from_variant("vertical"))
    assert extractor.chunk_frames == 98
    assert extractor(tone(3.2), sampling_rate=SR, return_tensors="pt")["input_values"].shape == (1, 128, 98)


def test_input_types_and_channel_layouts_agree():
    extractor = MynaFeatureExtractor()
    mono = tone(3.5)
    stereo = np.stack([mono, mono * 0.5])  # (channels, samples)
    expected = extractor(mono * 0.75, sampling_rate=SR, return_tensors="np")["input_values"]
    for variant in (stereo, stereo.T, torch.from_numpy(stereo)):
        np.testing.assert_allclose(extractor(variant, sampling_rate=SR, return_tensors="np")["input_values"], expected, rtol=1e-5)
    as_list = extractor(mono.tolist(), sampling_rate=SR, return_tensors="np")["input_values"]
    np.testing.assert_allclose(as_list, extractor(mono, sampling_rate=SR, return_tensors="np")["input_values"])
    pcm = (mono * 32768).astype(np.int16)
    np.testing.assert_allclose(
        extractor(pcm, sampling_rate=SR, return_tensors="np")["input_values"],
        extractor(mono, sampling_rate=SR, return_tensors="np")["input_values"],
        rtol=1e-3,
        atol=1e-3,
    )
    lists = extractor(mono, sampling_rate=SR)
    assert isinstance(lists["input_values"], list) and lists["input_values"][0].shape == (128, 96)


def test_resampling_with_soxr_keeps_the_pitch():
    extractor = MynaFeatureExtractor()
    native = extractor(tone(4.0, 440.0), sampling_rate=SR, return_tensors="pt")["input_values"]
    from_44k = extractor(tone(4.0, 440.0, sampling_rate=44_100), sampling_rate=44_100, return_tensors="pt")["input_values"]
    assert from_44k.shape == native.shape
    # Same band, same energy to within the resampler's passband ripple.
    assert from_44k[0].sum(-1).argmax() == native[0].sum(-1).argmax()
    torch.testing.assert_close(from_44k[0, :, 10:-10].sum(), native[0, :, 10:-10].sum(), rtol=0.02, atol=0)


@pytest.mark.parametrize(
    "audio, kwargs, message",
    [
        (np.zeros(0, np.float32), {"sampling_rate": SR}, "empty"),
        (np.array([0.0, np.nan, 0.1], np.float32), {"sampling_rate": SR}, "NaN"),
        (np.array([0.0, np.inf], np.float32), {"sampling_rate": SR}, "NaN or infinite"),
        (np.zeros((2, 2, 100), np.float32), {"sampling_rate": SR}, "3 dimensions"),
        (np.zeros((20, 50_000), np.float32), {"sampling_rate": SR}, "channels"),
        (tone(1.0), {}, "sampling_rate is required"),
        (tone(1.0), {"sampling_rate": 0}, "positive"),
        ([], {"sampling_rate": SR}, "empty list"),
        ([tone(1.0), np.zeros(0, np.float32)], {"sampling_rate": SR}, "audio #1 of the batch is empty"),
    ],
)
def test_bad_input_is_a_clear_value_error(audio, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MynaFeatureExtractor()(audio, **kwargs)


def test_save_load_round_trip(tmp_path):
    extractor = MynaFeatureExtractor(chunk_frames=98, hop_frames=49, mel_backend="nnaudio")
    extractor(tone(1.0), sampling_rate=SR)  # builds the mel module, which must not be serialised
    extractor.save_pretrained(tmp_path)
    saved = (tmp_path / "preprocessor_config.json").read_text()
    # How the mel is computed is a run-time choice: saved folders look as they did before the FFT front end.
    assert "_mel_modules" not in saved and "mel_backend" not in saved
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(loaded, MynaFeatureExtractor)
    assert loaded.to_dict() == extractor.to_dict() and loaded.hop_frames == 49
    assert loaded.mel_backend == "fft"
    assert AutoFeatureExtractor.from_pretrained(tmp_path, mel_backend="nnaudio").mel_backend == "nnaudio"
    with pytest.raises(ValueError, match="mel_backend='torchaudio'"):
        MynaFeatureExtractor(mel_backend="torchaudio")


# --- audio_utils ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["wav", "flac", "ogg"])
def test_load_audio_reads_files_bytes_and_dicts(tmp_path, extension):
    stereo = np.stack([tone(1.0, 440.0, 22_050), tone(1.0, 440.0, 22_050)], axis=1)
    path = tmp_path / f"clip.{extension}"
    sf.write(path, stereo, 22_050)
    audio, rate = load_audio(str(path))
    assert rate == 22_050 and audio.shape == (22_050,)
    tolerance = 0.05 if extension == "ogg" else 1e-3  # vorbis is lossy
    assert abs(np.abs(audio).max() - 0.5) < tolerance
    resampled, rate = load_audio(path.read_bytes(), sampling_rate=SR)
    assert rate == SR and abs(len(resampled) - SR) <= 1
    from_dict, _ = load_audio({"bytes": None, "path": str(path)})
    np.testing.assert_array_equal(from_dict, audio)
    decoded, rate = load_audio({"array": audio, "sampling_rate": 22_050, "path": "x.wav"})
    assert rate == 22_050 and np.array_equal(decoded, audio)


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
def test_downmix_is_numpys_mean_bit_for_bit(channels):
    rng = np.random.default_rng(channels)
    interleaved = (0.3 * rng.standard_normal((10_001, channels))).astype(np.float32)  # soundfile's layout
    np.testing.assert_array_equal(downmix(interleaved, 1), interleaved.mean(axis=1))
    planar = np.ascontiguousarray(interleaved.T)
    np.testing.assert_array_equal(downmix(planar, 0), planar.mean(axis=0))
    assert downmix(interleaved, 1).dtype == np.float32


@pytest.fixture
def flac_in_pieces(tmp_path, monkeypatch):
    """A 6 s stereo FLAC that `load_audio` decodes in 3 concurrent pieces (a minimum of 1 s instead of 30), and a
    record of the pieces' spans."""
    rng = np.random.default_rng(0)
    path = tmp_path / "long.flac"
    sf.write(path, (0.3 * rng.standard_normal((6 * 22_050, 2))).astype(np.float32), 22_050)
    monkeypatch.setattr(audio_utils, "PARALLEL_DECODE_MIN_SECONDS", 1.0)
    monkeypatch.setattr(audio_utils, "decode_threads", lambda: 3)
    calls = []
    read_in_pieces = audio_utils._read_in_pieces
    monkeypatch.setattr(
        audio_utils, "_read_in_pieces", lambda *args: calls.append(args[1:3]) or read_in_pieces(*args)
    )
    return path, calls


def test_a_long_flac_decodes_in_pieces_to_the_same_samples(flac_in_pieces):
    path, calls = flac_in_pieces
    whole = sf.read(path, dtype="float32")[0].mean(axis=1)
    for offset, duration, expected in [
        (0.0, None, whole),
        (1.3, 2.5, whole[28_665 : 28_665 + 55_125]),
        (4.5, 10.0, whole[99_225:]),  # past the end: what is there
    ]:
        audio, rate = load_audio(str(path), offset=offset, duration=duration)
        assert rate == 22_050
        np.testing.assert_array_equal(audio, expected)  # bit for bit
    assert calls == [(0, 132_300), (28_665, 55_125), (99_225, 33_075)]
    _, rate = load_audio(path.read_bytes())  # bytes, and other formats, decode in one piece
    sf.write(path.with_suffix(".wav"), sf.read(path)[0], 22_050)
    load_audio(str(path.with_suffix(".wav")))
    assert len(calls) == 3


def test_decode_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv("MYNA_DECODE_THREADS", "1")
    assert audio_utils.decode_threads() == 1
    monkeypatch.setenv("MYNA_DECODE_THREADS", "64")
    assert audio_utils.decode_threads() == audio_utils.PARALLEL_DECODE_MAX_THREADS
    monkeypatch.setenv("MYNA_DECODE_THREADS", "two")
    with pytest.raises(ValueError, match="MYNA_DECODE_THREADS='two' is not a number"):
        audio_utils.decode_threads()


def test_a_short_piece_falls_back_to_one_read(flac_in_pieces, monkeypatch):
    """A file whose header overstates its length: a piece ends early, and the file is read in one piece, as before."""
    path, calls = flac_in_pieces
    whole = sf.read(path, dtype="float32")[0].mean(axis=1)
    monkeypatch.setattr(sf.SoundFile, "frames", property(lambda self: 7 * 22_050))
    audio, _ = load_audio(str(path))
    assert len(calls) == 1
    np.testing.assert_array_equal(audio, whole)


def test_load_audio_errors_name_the_input(tmp_path):
    with pytest.raises(AudioDecodeError, match="missing.wav: no such file"):
        load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty.wav: the file is empty"):
        load_audio(str(tmp_path / "empty.wav"))
    (tmp_path / "corrupt.mp3").write_bytes(b"not audio at all" * 64)
    with pytest.raises(AudioDecodeError, match="corrupt.mp3: could not be decoded"):
        load_audio(str(tmp_path / "corrupt.mp3"))
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), np.float32), SR)
    with pytest.raises(AudioDecodeError, match="zero samples"):
        load_audio(str(tmp_path / "silent.wav"))
    with pytest.raises(AudioDecodeError, match="no 'sampling_rate'"):
        load_audio({"array": np.zeros(10)})
    assert issubclass(AudioDecodeError, ValueError)
