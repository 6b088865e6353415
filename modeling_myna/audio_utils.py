"""Reading audio for Myna: files, bytes and `datasets` audio dicts to mono float32 arrays.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, mp3, aiff, ...), which needs no FFmpeg. Every
failure is an `AudioDecodeError` naming the input and what to do, so that long jobs can skip and count bad items.

Two doors: `load_audio` reads a whole source (or a stretch of it) into one array; `open_audio` opens any source for
reading block by block (what the streaming pipelines use: one call, which probes decoder objects, unpacks dicts,
opens files, resamples and checks every block, and raises the message a user reads).

`datasets` audio comes in three shapes, all accepted: decoded dicts (`{"array", "sampling_rate"}`, the array a NumPy
array or a list, as the project's own `synthetic_music_dataset` gives), undecoded dicts (`Audio(decode=False)`:
`{"bytes", "path"}`, read here with soundfile) and the decoder objects a decoded `datasets.Audio()` column gives from
datasets 4 on (torchcodec's `AudioDecoder`). A decoded column needs torchcodec (and FFmpeg) only to be read at all;
`dataset.cast_column("audio", datasets.Audio(decode=False))` reads the same audio through soundfile instead.
"""

import io
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")
# Frames `open_audio` reads from a file per block (at the file's rate): ~1.7 s at 44.1 kHz, a few hundred kilobytes.
# A multiple of 1152, the samples of an MPEG-1 layer III frame (two MPEG-2 frames): libsndfile 1.2 decodes some mono
# MPEG-2 mp3s (11/22/24 kHz) differently when a read ends inside a frame; whole frames give the whole-file samples.
READ_BLOCK_FRAMES = 64 * 1152


class AudioDecodeError(ValueError):
    """An input that could not be read as audio; the message names it and says what to do."""


# A decoded `datasets.Audio()` column needs this; the undecoded path needs nothing more than soundfile.
TORCHCODEC_HINT = (
    "decoding a `datasets.Audio()` column needs torchcodec and FFmpeg (pip install 'myna-hf[torchcodec]'); or read "
    "it through soundfile, which needs neither: dataset.cast_column('audio', datasets.Audio(decode=False))"
)


def is_audio_decoder(source: Any) -> bool:
    """Whether `source` is a decoder object (torchcodec's `AudioDecoder`, what a decoded `datasets.Audio()` column
    gives from datasets 4 on)."""
    return hasattr(source, "get_all_samples") and callable(source.get_all_samples)


def decoder_samples(source: Any, name: str) -> tuple[np.ndarray, int]:
    """`((channels, samples) float32, rate)` of a decoder object."""
    try:
        samples = source.get_all_samples()
        data = samples.data
        audio = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
        return np.asarray(audio, dtype=np.float32), int(samples.sample_rate)
    except Exception as error:
        raise AudioDecodeError(f"{name}: the decoder failed ({error}); {TORCHCODEC_HINT}.") from None


def describe(source: Any) -> str:
    """A short name of an audio source for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, dict):
        return str(source.get("path") or "<datasets audio dict>")
    if is_audio_decoder(source):
        return f"<decoded datasets audio ({type(source).__name__})>"
    return f"<{type(source).__name__}>"


# Signatures of the binary formats libsndfile reads; a file with none of them that decodes as text is not audio.
_AUDIO_SIGNATURES = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b".snd", b"caff", b"\xff")


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file are text (a playlist, a web page, a note renamed `.mp3`), not audio."""
    if not head or head.startswith(_AUDIO_SIGNATURES) or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not merely a character cut at the end of the sample
            return False
    return True


def open_sound_file(source, name: str | None = None) -> sf.SoundFile:
    """Opens a path, encoded bytes or a file-like object with soundfile; `AudioDecodeError` naming it otherwise."""
    name = name or describe(source)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise AudioDecodeError(f"{name}: no such file; check the path.")
        if os.path.isdir(source):
            raise AudioDecodeError(f"{name}: is a folder, not an audio file; pass the files in it.")
        if os.path.getsize(source) == 0:
            raise AudioDecodeError(f"{name}: the file is empty (0 bytes); re-download or drop it.")
        with open(source, "rb") as f:
            head = f.read(512)
        if looks_like_text(head):  # before libsndfile, whose decoders print resync noise on such files
            first_line = head.decode("utf-8", errors="replace").strip().splitlines()[0][:40] if head.strip() else ""
            raise AudioDecodeError(
                f"{name}: could not be decoded: it is a text file, not audio (it begins {first_line!r}); drop it."
            )
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioDecodeError(f"{name}: no bytes to decode.")
        source = io.BytesIO(source)
    try:
        return sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        reason = str(error)
        if "does not exist or is not a regular file" in reason:  # libsndfile's words for "no format recognised"
            reason = "libsndfile recognises no audio format in it"
        raise AudioDecodeError(
            f"{name}: could not be decoded ({reason}); supported formats are those of libsndfile "
            f"({', '.join(AUDIO_EXTENSIONS)}): convert it, or skip it."
        ) from None


def _check_finite(audio: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(audio).all():
        raise AudioDecodeError(f"{name}: holds NaN or infinite samples; the file is corrupt.")
    return audio


def _failed_part_way(name: str, error: Exception) -> AudioDecodeError:
    return AudioDecodeError(f"{name}: decoding failed part way ({error}); the file is corrupt.")


def downmix(audio: np.ndarray, channel_axis: int) -> np.ndarray:
    """The mean over `channel_axis` of 2-D audio, bit for bit `audio.mean(axis=channel_axis)`.

    NumPy's mean over the short axis of interleaved `(samples, channels)` audio (what soundfile reads) runs a strided
    reduction per sample: 0.12 s for three minutes of stereo, as long as decoding the FLAC. Summing whole channels
    in the same order (NumPy adds up to 7 values one after the other) gives the same numbers in a few milliseconds.
    """
    channels = audio.shape[channel_axis]
    if channel_axis != audio.ndim - 1 or channels >= 8 or not np.issubdtype(audio.dtype, np.floating):
        return audio.mean(axis=channel_axis)  # contiguous channels are fast already; 8+ are summed pairwise
    total = audio[:, 0].copy()
    for channel in range(1, channels):
        total += audio[:, channel]
    return total / channels if channels > 1 else total


# Long FLAC files decode in pieces, one thread each. libFLAC decodes about 110M samples/s on one core (0.14 s for
# three minutes of 44.1 kHz stereo, as long as the rest of the int8 CPU front end and a quarter of the whole int8
# embedding); libsndfile seeks FLAC to the exact sample, and soundfile releases the GIL while it decodes, so pieces
# read on separate handles give the same samples bit for bit (a test checks it). Other formats decode in one piece:
# MP3's and Vorbis's frame counts and seeks are not exact in every file, and WAV is read at memory speed.
PARALLEL_DECODE_FORMATS = ("FLAC",)
PARALLEL_DECODE_MIN_SECONDS = 30.0
PARALLEL_DECODE_MAX_THREADS = 4
_decode_pool: tuple[int, ThreadPoolExecutor] | None = None


def decode_threads() -> int:
    """Threads that decode one long FLAC file: `MYNA_DECODE_THREADS` if set (1: one piece), else the cores this
    process may run on, at most `PARALLEL_DECODE_MAX_THREADS`."""
    if os.environ.get("MYNA_DECODE_THREADS"):
        try:
            return max(1, min(PARALLEL_DECODE_MAX_THREADS, int(os.environ["MYNA_DECODE_THREADS"])))
        except ValueError:
            raise ValueError(
                f"MYNA_DECODE_THREADS={os.environ['MYNA_DECODE_THREADS']!r} is not a number of threads; set it to "
                "an integer (1 decodes every file in one piece) or unset it."
            ) from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(PARALLEL_DECODE_MAX_THREADS, cores))


def _pool() -> ThreadPoolExecutor:
    global _decode_pool
    if _decode_pool is None or _decode_pool[0] != os.getpid():  # a forked worker has no threads of its parent's pool
        _decode_pool = (os.getpid(), ThreadPoolExecutor(PARALLEL_DECODE_MAX_THREADS, thread_name_prefix="myna-decode"))
    return _decode_pool[1]


def _read_in_pieces(path, start: int, frames: int, channels: int, threads: int) -> np.ndarray | None:
    """`frames` frames from `start` of the file at `path`, `(frames, channels)` float32, in `threads` pieces read
    concurrently, each on its own handle; `None` if a piece ends early (a header whose length is wrong), for the
    caller to read the file in one piece instead."""
    audio = np.empty((frames, channels), dtype=np.float32)
    edges = np.linspace(0, frames, threads + 1).astype(int)

    def read_piece(begin: int, end: int) -> int:
        with sf.SoundFile(path) as piece:
            piece.seek(start + begin)
            return len(piece.read(end - begin, dtype="float32", always_2d=True, out=audio[begin:end]))

    read = list(_pool().map(read_piece, edges[:-1], edges[1:]))
    return audio if read == list(np.diff(edges)) else None


def _read(source, name: str, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    with open_sound_file(source, name) as sound_file:
        try:
            rate = sound_file.samplerate
            start = min(int(round(offset * rate)), sound_file.frames) if offset > 0 else 0
            if start:
                sound_file.seek(start)
            frames = -1 if duration is None else int(round(duration * rate))
            span = sound_file.frames - start if frames < 0 else min(frames, sound_file.frames - start)
            threads, audio = decode_threads(), None
            if (
                isinstance(source, (str, os.PathLike))
                and sound_file.format in PARALLEL_DECODE_FORMATS
                and threads > 1
                and span >= PARALLEL_DECODE_MIN_SECONDS * rate
            ):
                audio = _read_in_pieces(source, start, span, sound_file.channels, threads)
            if audio is None:
                audio = sound_file.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise _failed_part_way(name, error) from None
        return downmix(audio, 1), int(sound_file.samplerate)  # (samples,) mono


def load_audio(
    source, sampling_rate: int | None = None, offset: float = 0.0, duration: float | None = None
) -> tuple[np.ndarray, int]:
    """Reads `source` as mono float32 audio.

    Args:
        source: a path, encoded bytes, a file-like object, or `datasets` audio: a dict (`{"array",
            "sampling_rate"}` decoded, the array a NumPy array or list, or `{"bytes", "path"}` with
            `Audio(decode=False)`), or the decoder object of a decoded `datasets.Audio()` column.
        sampling_rate: resample to this rate with soxr; keep the file's rate when `None`.
        offset, duration: read only `duration` seconds (to the end when `None`) from `offset` seconds on; a file
            is sought, not decoded from its start.

    Returns:
        `(audio, sampling_rate)`, `audio` of shape `(samples,)`.

    Raises:
        AudioDecodeError: the source is missing, empty, undecodable or holds NaN/inf samples.
    """
    name = describe(source)
    if is_audio_decoder(source):
        array, rate = decoder_samples(source, name)
        source = {"array": array, "sampling_rate": rate}
    if isinstance(source, dict):
        if source.get("array") is not None:
            if source.get("sampling_rate") is None:
                raise AudioDecodeError(f"{name}: the audio dict has an 'array' but no 'sampling_rate'.")
            audio, rate = np.asarray(source["array"], dtype=np.float32), int(source["sampling_rate"])
            if audio.ndim == 2:
                audio = downmix(audio, int(np.argmin(audio.shape)))
            start = int(round(offset * rate))
            audio = audio[start : None if duration is None else start + int(round(duration * rate))]
        elif source.get("bytes"):
            audio, rate = _read(source["bytes"], name, offset, duration)
        elif source.get("path"):
            audio, rate = _read(source["path"], name, offset, duration)
        else:
            raise AudioDecodeError(f"{name}: the audio dict has none of 'array', 'bytes' or 'path'.")
    else:
        audio, rate = _read(source, name, offset, duration)

    if audio.size == 0:
        raise AudioDecodeError(f"{name}: decoded to zero samples; the recording is empty.")
    _check_finite(audio, name)
    if sampling_rate is not None and rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ").astype(np.float32)
        rate = sampling_rate
    return audio, rate


# ------------------------------------------------------------------------------------------------ block by block


@dataclass
class AudioStream:
    """A source opened by `open_audio`: mono float32 `blocks` at `sampling_rate`, decoded (and resampled) as they
    are read, each checked. Iterating gives the blocks; `with` closes the file when not all of it is read.

    Attributes:
        name: the source as error messages name it.
        sampling_rate: the rate of the blocks.
        duration: the source's length in seconds, known before decoding (a file's header).
        blocks: `(samples,)` float32 arrays.
    """

    name: str
    sampling_rate: int
    duration: float
    blocks: Iterator[np.ndarray]
    _close: Callable[[], None] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.blocks

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_tensor(source: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported; this module does not need it
    return torch is not None and isinstance(source, torch.Tensor)


def _array_mono(audio: Any) -> np.ndarray:
    """A 1-D or `(channels, samples)` array as mono float32, as `load_audio` reads a decoded dict."""
    audio = np.asarray(audio.detach().cpu().numpy() if _is_tensor(audio) else audio, dtype=np.float32)
    return _check_finite(downmix(audio, int(np.argmin(audio.shape))) if audio.ndim == 2 else audio, "audio")


def _file_blocks(sound_file: sf.SoundFile, name: str, block_frames: int) -> Iterator[np.ndarray]:
    with sound_file:
        while True:
            try:
                block = sound_file.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                raise _failed_part_way(name, error) from None
            if len(block):
                yield _check_finite(downmix(block, 1), name)  # the same downmix as `load_audio`
            if len(block) < block_frames:
                return


def _resampled(blocks: Iterator[np.ndarray], rate: int, target: int) -> Iterator[np.ndarray]:
    # soxr's streaming resampler gives the same samples as its one-shot `resample` over the whole track.
    resampler = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")
    for block in blocks:
        resampled = resampler.resample_chunk(block, last=False)
        if len(resampled):
            yield resampled
    tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if len(tail):
        yield tail


def open_audio(
    source: Any,
    sampling_rate: int | None = None,
    source_rate: int | None = None,
    block_frames: int | None = None,
    to_mono: Callable[[Any], np.ndarray] | None = None,
) -> AudioStream:
    """Opens `source` for reading block by block: the one call between the pipelines and decoding.

    Args:
        source: a path; encoded bytes; a file object; `datasets` audio: a dict (`{"array", "sampling_rate"}`, the
            array a NumPy array or a list; `{"bytes", "path"}` or `{"path"}`) or a decoded `datasets.Audio()` item
            (torchcodec's `AudioDecoder`); a `{"raw", "sampling_rate"}` dict; or a NumPy array / torch tensor
            `(samples,)` or `(channels, samples)` together with `source_rate`.
        sampling_rate: the rate of the blocks (resampled with soxr as they are read); the source's when `None`.
        source_rate: the rate of a bare array; ignored for encoded audio, which knows its rate.
        block_frames: frames read from a file per block (`READ_BLOCK_FRAMES`).
        to_mono: turns an array into validated mono float32 (the feature extractor's `to_mono`); its `ValueError`
            becomes an `AudioDecodeError`. Default: the channels are averaged, as `load_audio` does.

    Raises:
        AudioDecodeError: the source is missing, empty or undecodable (on opening), or holds NaN/inf samples or
            stops decoding part way (as its blocks are read); the message names it and says what to do.
        ValueError: an array without a sampling rate, or an input of an unsupported type.
    """
    name = describe(source)
    block_frames = block_frames or READ_BLOCK_FRAMES
    if is_audio_decoder(source):  # a decoded `datasets.Audio()` item (datasets >= 4)
        source, source_rate = decoder_samples(source, name)
    if isinstance(source, dict):
        array = source.get("array", source.get("raw"))
        if array is not None:
            if source.get("sampling_rate") is None:
                raise AudioDecodeError(f"{name}: the audio dict has an 'array' but no 'sampling_rate'.")
            source, source_rate = array, int(source["sampling_rate"])
            if isinstance(source, (list, tuple)):  # datasets' List(float32) arrays, e.g. synthetic_music_dataset
                source = np.asarray(source, dtype=np.float32)
        elif source.get("bytes"):
            source = source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise AudioDecodeError(f"{name}: the audio dict has none of 'array', 'raw', 'bytes' or 'path'.")

    close = None
    if isinstance(source, np.ndarray) or _is_tensor(source):
        if source_rate is None:
            raise ValueError(
                "got an audio array without its sampling rate: pass {'array': audio, 'sampling_rate': rate}, or "
                "sampling_rate=rate to the call."
            )
        try:
            mono = (to_mono or _array_mono)(source)
        except ValueError as error:
            raise AudioDecodeError(str(error)) from None
        rate = int(source_rate)
        blocks = (mono[start : start + block_frames] for start in range(0, len(mono), block_frames))
        frames = len(mono)
    elif isinstance(source, (str, os.PathLike, bytes, bytearray)) or hasattr(source, "read"):
        sound_file = open_sound_file(source, name)
        rate, frames, close = int(sound_file.samplerate), sound_file.frames, sound_file.close
        blocks = _file_blocks(sound_file, name, block_frames)
    else:
        raise ValueError(
            f"cannot read audio from a {type(source).__name__}: pass a file path, bytes, a NumPy array with its "
            "sampling rate, or `datasets` audio (a decoded or `Audio(decode=False)` item; " + TORCHCODEC_HINT + ")."
        )

    if rate <= 0:
        if close is not None:
            close()
        raise AudioDecodeError(f"{name}: sampling rate {rate} is not positive.")
    duration = frames / rate
    if sampling_rate is not None and rate != sampling_rate:
        blocks, rate = _resampled(blocks, rate, sampling_rate), sampling_rate
    return AudioStream(name, rate, duration, blocks, close)


__all__ = [
    "AUDIO_EXTENSIONS",
    "PARALLEL_DECODE_FORMATS",
    "READ_BLOCK_FRAMES",
    "TORCHCODEC_HINT",
    "AudioDecodeError",
    "AudioStream",
    "decode_threads",
    "decoder_samples",
    "describe",
    "downmix",
    "is_audio_decoder",
    "load_audio",
    "looks_like_text",
    "open_audio",
    "open_sound_file",
]
