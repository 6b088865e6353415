"""Myna's front end, streamed: recordings of any length to chunk spectrograms, one bounded segment at a time.

The feature extractor computes a whole track's spectrogram at once; for an hour of audio its STFT alone needs about
a gigabyte. Here the track is decoded block by block, downmixed and resampled with a streaming soxr resampler (all
three by one call, `modeling_myna.audio_utils.open_audio`), and cut into *segments*: stretches of samples whose
centred STFT holds the frames of a few consecutive chunks. Each segment's chunks are identical (to float
tolerance) to the feature extractor's chunks of the whole track, so memory depends on the segment size, never on
the track length.

Why the segments are exact. The front end's STFT (nnAudio's, computed by `torch.stft`) is centred: frame `t` is
the window of `n_fft` samples starting at `t * hop - n_fft // 2`, and the track is reflect-padded by `n_fft // 2` at
both ends. Chunk `k` covers frames
`[k * H, k * H + C)` (C = `chunk_frames`, H = `hop_frames`). For the chunks `k0 .. k1 - 1` a segment takes samples
`[a, b)` with

    a = max(0, k0 * H * hop - n_fft // 2 rounded down to a multiple of hop)     (frame k0 * H's window starts here)
    b = min(track length, ((k1 - 1) * H + C - 1) * hop - n_fft // 2 + n_fft)  (the last frame's window ends here)

and runs the same centred STFT on it. Segment frame `j` is centred on track sample `a + j * hop`, so track frame
`t` is segment frame `t - a / hop`. Frames whose window lies inside `[a, b)` are the track's frames; the segment's
own reflect padding only touches frames outside the chunks, except at the track's edges, where `a = 0` or
`b = length` and the segment's padding *is* the track's. Audio shorter than one chunk is zero-padded first, as the
feature extractor does.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modeling_myna.audio_utils import READ_BLOCK_FRAMES, AudioDecodeError, AudioStream, open_audio


@dataclass
class AudioSegment:
    """A stretch of model-rate mono audio whose centred spectrogram holds `num_chunks` consecutive chunks.

    Attributes:
        samples: `(num_samples,)` float32 at the feature extractor's sampling rate.
        first_frame: index, in this segment's spectrogram, of the first frame of its first chunk.
        num_chunks: chunks in this segment.
        start_frame: track frame where the segment's first chunk starts.
        hop_frames: frames between the starts of consecutive chunks.
        is_last: whether this is the track's last segment.
    """

    samples: np.ndarray | torch.Tensor
    first_frame: int
    num_chunks: int
    start_frame: int
    hop_frames: int
    is_last: bool = False

    def chunk_start_frames(self) -> np.ndarray:
        """Track frame where each chunk of the segment starts, `(num_chunks,)`."""
        return self.start_frame + np.arange(self.num_chunks) * self.hop_frames


class _SampleBuffer:
    """The track's samples from `start` on, in one float32 array that grows to a segment's size and is then reused:
    appending a block copies the block only, and a long track allocates no new buffers."""

    def __init__(self):
        self.data = np.empty(READ_BLOCK_FRAMES, dtype=np.float32)
        self.start = 0  # track sample of data[0]
        self.size = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    def append(self, block: np.ndarray) -> None:
        end = self.size + len(block)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), dtype=np.float32)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = block
        self.size = end

    def samples(self, start: int, stop: int) -> np.ndarray:
        """A copy of track samples `[start, stop)`."""
        return self.data[start - self.start : stop - self.start].copy()

    def drop_before(self, sample: int) -> None:
        offset = sample - self.start
        kept = self.size - offset
        self.data[:kept] = self.data[offset : self.size]  # numpy copies overlapping slices correctly
        self.start, self.size = sample, kept


def open_stream(source: Any, feature_extractor, sampling_rate: int | None = None) -> AudioStream:
    """`source` opened for the model: mono float32 blocks at `feature_extractor.sampling_rate` (one call to
    `modeling_myna.audio_utils.open_audio`, which decodes, resamples and words every error). An `AudioStream` that
    is already open at that rate is taken as it is."""
    if isinstance(source, AudioStream):
        if source.sampling_rate != feature_extractor.sampling_rate:
            raise ValueError(
                f"{source.name} was opened at {source.sampling_rate} Hz; the model reads "
                f"{feature_extractor.sampling_rate} Hz: open it with open_audio(source, "
                f"sampling_rate={feature_extractor.sampling_rate})."
            )
        return source
    return open_audio(
        source, feature_extractor.sampling_rate, source_rate=sampling_rate, to_mono=feature_extractor.to_mono
    )


def audio_blocks(source: Any, feature_extractor, sampling_rate: int | None = None) -> Iterator[np.ndarray]:
    """Mono float32 blocks of `source`, resampled to `feature_extractor.sampling_rate` as they are read.

    Args:
        source: any input of `modeling_myna.audio_utils.open_audio` (a path, bytes, a file object, `datasets`
            audio, a `{"raw", "sampling_rate"}` dict, an array or tensor with `sampling_rate`), or an
            `AudioStream` it opened.
        feature_extractor: a [`MynaFeatureExtractor`]; gives the target rate and the array checks.
        sampling_rate: the rate of a bare array; ignored for encoded audio, which knows its rate.

    Raises:
        AudioDecodeError: the source is missing, empty, undecodable, or holds NaN/inf samples.
        ValueError: an array without a sampling rate, or an input of an unsupported type.
    """
    yield from open_stream(source, feature_extractor, sampling_rate)


def segment_audio(
    blocks: Iterator[np.ndarray],
    feature_extractor,
    chunks_per_segment: int,
    hop_frames: int | None = None,
    name: str = "audio",
) -> Iterator[AudioSegment]:
    """Groups model-rate blocks into [`AudioSegment`]s of at most `chunks_per_segment` chunks each.

    Holds about two segments of samples at most, whatever the length of the track: the one being filled, and the
    previous one, handed out once it is known not to be the track's last.

    Raises:
        AudioDecodeError: the audio has no samples.
    """
    if chunks_per_segment < 1:
        raise ValueError(f"chunks_per_segment must be at least 1, got {chunks_per_segment}.")
    hop = feature_extractor.hop_length
    chunk = feature_extractor.chunk_frames
    chunk_hop = hop_frames or feature_extractor.hop_frames or chunk
    if not 1 <= chunk_hop <= chunk:
        raise ValueError(
            f"hop_frames={chunk_hop} must be between 1 and the chunk width ({chunk} frames): chunks may overlap, "
            "but not leave gaps."
        )
    half_window = feature_extractor.n_fft // 2
    # Samples before a frame's centre that its window reaches, rounded up to whole hops so segments start on the
    # hop grid.
    lead = -(-half_window // hop) * hop

    def bounds(first_chunk: int, end_chunk: int) -> tuple[int, int]:
        first_frame = first_chunk * chunk_hop
        last_frame = (end_chunk - 1) * chunk_hop + chunk - 1
        return max(0, first_frame * hop - lead), last_frame * hop - half_window + feature_extractor.n_fft

    buffer = _SampleBuffer()
    next_chunk = 0

    def cut(end_chunk: int, length: int | None) -> AudioSegment:
        nonlocal next_chunk
        start, stop = bounds(next_chunk, end_chunk)
        if length is not None:
            stop = min(stop, length)
        segment = AudioSegment(
            samples=buffer.samples(start, stop),
            first_frame=(next_chunk * chunk_hop * hop - start) // hop,
            num_chunks=end_chunk - next_chunk,
            start_frame=next_chunk * chunk_hop,
            hop_frames=chunk_hop,
        )
        next_chunk = end_chunk
        buffer.drop_before(bounds(next_chunk, next_chunk + 1)[0])
        return segment

    pending: AudioSegment | None = None
    for block in blocks:
        buffer.append(block)
        # Emit every segment whose samples have all arrived; the previous one is then known not to be the last.
        while bounds(next_chunk, next_chunk + chunks_per_segment)[1] <= buffer.end:
            if pending is not None:
                yield pending
            pending = cut(next_chunk + chunks_per_segment, None)

    length = buffer.end
    if length == 0:
        raise AudioDecodeError(f"{name}: decoded to zero samples; the recording is empty.")
    min_samples = (chunk - 1) * hop
    if length < min_samples:
        # Shorter than one chunk: zero-padded at the end to one chunk, as the feature extractor does. Nothing has
        # been emitted or dropped yet, so the buffer holds the whole track.
        buffer.append(np.zeros(min_samples - length, dtype=np.float32))
        length = min_samples
    num_frames = length // hop + 1
    num_chunks = (num_frames - chunk) // chunk_hop + 1
    while next_chunk < num_chunks:
        if pending is not None:
            yield pending
        pending = cut(min(next_chunk + chunks_per_segment, num_chunks), length)
    if pending is not None:
        pending.is_last = True
        yield pending


def segment_chunks(segment: AudioSegment, feature_extractor, device: str | torch.device = "cpu") -> torch.Tensor:
    """The chunk spectrograms of a segment, `(num_chunks, num_mel_bins, chunk_frames)` float32 on `device`."""
    chunk, chunk_hop = feature_extractor.chunk_frames, segment.hop_frames
    samples = segment.samples if isinstance(segment.samples, torch.Tensor) else torch.from_numpy(segment.samples)
    with torch.no_grad():
        spectrogram = feature_extractor.mel_spectrogram(device)(samples.to(device)[None])[0]  # (F, frames)
    span = (segment.num_chunks - 1) * chunk_hop + chunk
    frames = spectrogram[:, segment.first_frame : segment.first_frame + span]
    return frames.unfold(-1, chunk, chunk_hop).permute(1, 0, 2).contiguous()


def stream_segments(
    source: Any,
    feature_extractor,
    chunks_per_segment: int = 32,
    sampling_rate: int | None = None,
    hop_frames: int | None = None,
) -> Iterator[AudioSegment]:
    """[`AudioSegment`]s of any audio input (see [`audio_blocks`]), decoded and resampled as they are needed."""
    audio = open_stream(source, feature_extractor, sampling_rate)
    yield from segment_audio(audio.blocks, feature_extractor, chunks_per_segment, hop_frames, name=audio.name)


__all__ = ["AudioSegment", "audio_blocks", "open_stream", "segment_audio", "segment_chunks", "stream_segments"]
