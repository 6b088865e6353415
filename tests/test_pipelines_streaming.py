"""Streaming front end: streamed chunk spectrograms equal the feature extractor's whole-track chunks, in bounded
memory, and bad audio fails with an `AudioDecodeError` naming it."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_myna import MynaFeatureExtractor
from modeling_myna import audio_utils
from modeling_myna.audio_utils import AudioDecodeError, load_audio
from myna_pipelines.streaming import audio_blocks, segment_audio, segment_chunks, stream_segments

from .pipelines_support import music_like, write_audio


@pytest.fixture(scope="module")
def extractor():
    return MynaFeatureExtractor()


def streamed(source, extractor, chunks_per_segment, **kwargs):
    """All chunks of a streamed source, `(num_chunks, 128, chunk_frames)`, their start frames, and the segments."""
    segments = list(stream_segments(source, extractor, chunks_per_segment, **kwargs))
    chunks = torch.cat([segment_chunks(s, extractor) for s in segments])
    starts = np.concatenate([s.chunk_start_frames() for s in segments])
    return chunks, starts, segments


def assert_same_chunks(chunks, reference):
    assert chunks.shape == reference.shape
    # Same STFT frames computed from different slices: equal up to float rounding of the convolution.
    torch.testing.assert_close(chunks, reference, rtol=1e-5, atol=1e-6 * float(reference.abs().max()))


# Lengths around the edge cases: shorter than a chunk, exactly the zero-padding length, one sample more, a
# chunk's window end, several chunks with a tail; and overlapping chunks (hop 40 frames).
@pytest.mark.parametrize(
    "num_samples, chunks_per_segment, hop_frames",
    [
        (1_000, 1, None),
        (48_640, 1, None),
        (48_641, 2, None),
        (50_177, 1, None),
        (200_001, 1, None),
        (200_001, 3, None),
        (150_000, 2, 40),
    ],
)
def test_streamed_chunks_equal_whole_track_chunks(extractor, monkeypatch, num_samples, chunks_per_segment, hop_frames):
    monkeypatch.setattr(audio_utils, "READ_BLOCK_FRAMES", 10_007)  # many blocks, none aligned with the hop
    audio = music_like(num_samples / 16_000, 16_000, seed=num_samples)[:num_samples]
    reference = extractor(audio, sampling_rate=16_000, hop_frames=hop_frames, return_tensors="pt")

    chunks, starts, segments = streamed(
        {"array": audio, "sampling_rate": 16_000}, extractor, chunks_per_segment, hop_frames=hop_frames
    )

    assert_same_chunks(chunks, reference["input_values"])
    np.testing.assert_array_equal(starts, reference["chunk_start_frames"].numpy())
    assert [s.is_last for s in segments] == [False] * (len(segments) - 1) + [True]
    assert max(s.num_chunks for s in segments) <= chunks_per_segment


@pytest.mark.parametrize(
    "extension, sampling_rate, channels",
    [(".wav", 44_100, 2), (".flac", 44_100, 2), (".ogg", 44_100, 2), (".mp3", 44_100, 2), (".mp3", 22_050, 1)],
)
def test_streamed_files_equal_decoding_whole_then_extracting(
    tmp_path, extractor, monkeypatch, extension, sampling_rate, channels
):
    # Exercises the downmix and the streaming resampler against load_audio's one-shot soxr; mono 22.05 kHz mp3 is
    # MPEG-2, which libsndfile decodes differently unless reads end on frame boundaries.
    monkeypatch.setattr(audio_utils, "READ_BLOCK_FRAMES", 3 * 1152)  # many blocks (whole mp3 frames, see audio_utils)
    path = write_audio(tmp_path / f"track{extension}", seconds=7.0, sampling_rate=sampling_rate, channels=channels)
    audio, rate = load_audio(path, sampling_rate=16_000)
    reference = extractor(audio, sampling_rate=rate, return_tensors="pt")

    chunks, starts, _ = streamed(path, extractor, chunks_per_segment=1)

    assert chunks.shape[0] == 2  # 7 s: two whole 3.072 s chunks
    assert_same_chunks(chunks, reference["input_values"])
    np.testing.assert_array_equal(starts, [0, 96])


def test_one_hour_is_segmented_as_it_is_read(extractor):
    """An hour of audio arrives block by block; segments come out long before the end, and none grows."""
    block = music_like(4.096, 16_000)  # 65,536 samples
    num_blocks = 3_600 * 16_000 // len(block)  # 879 blocks, 57.6M samples
    blocks_read = []

    def blocks():
        for i in range(num_blocks):
            blocks_read.append(i)
            yield block

    segments = segment_audio(blocks(), extractor, chunks_per_segment=8)
    first = next(segments)
    # 8 chunks are 6.3 blocks; a segment is handed out once the next one is complete (so it is known not to be
    # the last): about two segments of audio are read before the first comes out.
    assert len(blocks_read) <= 14
    sizes, num_chunks, last = [len(first.samples)], first.num_chunks, first
    for segment in segments:
        assert segment.start_frame == last.start_frame + last.num_chunks * 96  # no chunk lost or repeated
        sizes.append(len(segment.samples))
        num_chunks += segment.num_chunks
        last = segment

    total_samples = num_blocks * len(block)
    assert num_chunks == (total_samples // 512 + 1 - 96) // 96 + 1
    assert last.is_last
    # A segment is 8 chunks of samples plus the window overhang, for the first minute as for the last.
    assert max(sizes) <= 8 * 96 * 512 + 2048


def test_short_audio_is_one_zero_padded_chunk(extractor):
    audio = music_like(0.5, 16_000)
    chunks, starts, segments = streamed({"array": audio, "sampling_rate": 16_000}, extractor, 4)
    assert_same_chunks(chunks, extractor(audio, sampling_rate=16_000, return_tensors="pt")["input_values"])
    assert len(segments) == 1 and segments[0].is_last and starts.tolist() == [0]


def test_array_inputs_are_downmixed_scaled_and_resampled(extractor):
    stereo = music_like(7.0, 22_050, channels=2)  # (samples, 2)
    pcm = (stereo.T * 32767).astype(np.int16)  # (2, samples) integer PCM
    reference = extractor(stereo.mean(axis=1), sampling_rate=22_050, return_tensors="pt")["input_values"]
    for source, kwargs in [
        ({"array": stereo, "sampling_rate": 22_050}, {}),
        ({"raw": torch.from_numpy(stereo.T.copy()), "sampling_rate": 22_050}, {}),
        (pcm, {"sampling_rate": 22_050}),
    ]:
        chunks, _, _ = streamed(source, extractor, 2, **kwargs)
        torch.testing.assert_close(chunks, reference, rtol=1e-3, atol=1e-3 * float(reference.abs().max()))


def test_encoded_bytes_and_datasets_dicts_read_like_the_file(tmp_path, extractor):
    path = write_audio(tmp_path / "clip.flac", seconds=7.0)
    reference, _, _ = streamed(path, extractor, 8)
    data = open(path, "rb").read()
    for source in [data, {"bytes": data, "path": "clip.flac"}, {"bytes": None, "path": path}, open(path, "rb")]:
        torch.testing.assert_close(streamed(source, extractor, 8)[0], reference, rtol=0, atol=0)


def test_bad_audio_fails_with_the_input_named(tmp_path, extractor):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio at all")
    sf.write(tmp_path / "silent.wav", np.zeros((0, 1), dtype=np.float32), 16_000)  # a header, no frames
    nan = music_like(4.0, 16_000)
    nan[1000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16_000, subtype="FLOAT")
    cases = {
        str(tmp_path / "missing.wav"): "no such file",
        str(tmp_path / "empty.wav"): "empty (0 bytes)",
        str(tmp_path / "text.mp3"): "could not be decoded",
        str(tmp_path / "silent.wav"): "zero samples",
        str(tmp_path / "nan.wav"): "NaN",
        str(tmp_path): "is a folder",
    }
    for source, message in cases.items():
        with pytest.raises(AudioDecodeError, match=re.escape(message)) as error:
            list(stream_segments(source, extractor))
        assert str(source) in str(error.value)
    with pytest.raises(AudioDecodeError, match="no bytes"):
        list(stream_segments(b"", extractor))
    with pytest.raises(AudioDecodeError, match="empty"):
        list(stream_segments({"array": np.zeros(0, dtype=np.float32), "sampling_rate": 16_000}, extractor))


def test_inputs_that_are_not_audio_say_what_to_pass(extractor):
    with pytest.raises(ValueError, match="sampling_rate"):
        list(audio_blocks(np.zeros(16_000, dtype=np.float32), extractor))
    with pytest.raises(ValueError, match="cannot read audio from a float"):
        list(audio_blocks(0.5, extractor))
    with pytest.raises(AudioDecodeError, match="none of 'array', 'raw', 'bytes' or 'path'"):
        list(audio_blocks({"sampling_rate": 16_000}, extractor))
    with pytest.raises(ValueError, match="hop_frames=200 must be between 1 and the chunk width"):
        list(stream_segments({"array": music_like(20.0, 16_000), "sampling_rate": 16_000}, extractor, hop_frames=200))


def test_open_audio_is_the_one_door_to_decoding(tmp_path, extractor):
    """What `myna embed --output` needs of a file comes from one `open_audio` call: the header's duration before
    decoding, then model-rate blocks that stream into the same chunks; a bad file fails on opening, worded."""
    path = write_audio(tmp_path / "track.flac", seconds=7.0, sampling_rate=44_100, channels=2)
    with audio_utils.open_audio(path, 16_000) as audio:
        assert audio.duration == pytest.approx(7.0) and audio.sampling_rate == 16_000 and audio.name == path
        chunks, _, _ = streamed(audio, extractor, chunks_per_segment=1)
    torch.testing.assert_close(chunks, streamed(path, extractor, 1)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="opened at 44100 Hz; the model reads 16000 Hz"):
        list(stream_segments(audio_utils.open_audio(path), extractor))
    (tmp_path / "notes.mp3").write_text("not audio at all")
    with pytest.raises(AudioDecodeError, match=r"notes.mp3: could not be decoded: it is a text file"):
        audio_utils.open_audio(str(tmp_path / "notes.mp3"))
