"""Reading audio for Myna: files, bytes and `datasets` audio dicts to mono float32 arrays.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, mp3, aiff, ...), which needs no FFmpeg. Every
failure is an `AudioDecodeError` naming the input and what to do, so that long jobs can skip and count bad items.
"""

import io
import os
from typing import Any

import numpy as np
import soundfile as sf
import soxr


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")


class AudioDecodeError(ValueError):
    """An input that could not be read as audio; the message names it and says what to do."""


def describe(source: Any) -> str:
    """A short name of an audio source for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, dict):
        return str(source.get("path") or "<datasets audio dict>")
    return f"<{type(source).__name__}>"


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
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioDecodeError(f"{name}: no bytes to decode.")
        source = io.BytesIO(source)
    try:
        return sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioDecodeError(
            f"{name}: could not be decoded ({error}); supported formats are those of libsndfile "
            f"({', '.join(AUDIO_EXTENSIONS)}): convert it, or skip it."
        ) from None


def _read(source, name: str, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    with open_sound_file(source, name) as sound_file:
        try:
            rate = sound_file.samplerate
            if offset > 0:
                sound_file.seek(min(int(round(offset * rate)), sound_file.frames))
            frames = -1 if duration is None else int(round(duration * rate))
            audio = sound_file.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(f"{name}: decoding failed part way ({error}); the file is corrupt.") from None
        return audio.mean(axis=1), int(sound_file.samplerate)  # (samples,) mono


def load_audio(
    source, sampling_rate: int | None = None, offset: float = 0.0, duration: float | None = None
) -> tuple[np.ndarray, int]:
    """Reads `source` as mono float32 audio.

    Args:
        source: a path, encoded bytes, a file-like object, or a `datasets` audio dict (`{"array",
            "sampling_rate"}` decoded, or `{"bytes", "path"}` with `Audio(decode=False)`).
        sampling_rate: resample to this rate with soxr; keep the file's rate when `None`.
        offset, duration: read only `duration` seconds (to the end when `None`) from `offset` seconds on; a file
            is sought, not decoded from its start.

    Returns:
        `(audio, sampling_rate)`, `audio` of shape `(samples,)`.

    Raises:
        AudioDecodeError: the source is missing, empty, undecodable or holds NaN/inf samples.
    """
    name = describe(source)
    if isinstance(source, dict):
        if source.get("array") is not None:
            if source.get("sampling_rate") is None:
                raise AudioDecodeError(f"{name}: the audio dict has an 'array' but no 'sampling_rate'.")
            audio, rate = np.asarray(source["array"], dtype=np.float32), int(source["sampling_rate"])
            if audio.ndim == 2:
                audio = audio.mean(axis=int(np.argmin(audio.shape)))
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
    if not np.isfinite(audio).all():
        raise AudioDecodeError(f"{name}: holds NaN or infinite samples; the file is corrupt.")
    if sampling_rate is not None and rate != sampling_rate:
        audio = soxr.resample(audio, rate, sampling_rate, quality="HQ").astype(np.float32)
        rate = sampling_rate
    return audio, rate


__all__ = ["AUDIO_EXTENSIONS", "AudioDecodeError", "describe", "load_audio", "open_sound_file"]
