"""The audio the app's players start at a result's best-matching chunk: a WAV of a track from a start second, cut
once per (track, start, length) into a temporary folder that the page may serve, and that goes when the app
closes (`close`, or at the latest when the process exits).

Searches run in Gradio's worker threads, so several may write the same segment at once (two results of one track,
two users). Each writer writes under a name of its own and renames it into place (`myna_common.atomic`); the
last rename wins, and a segment already there is taken as it is.
"""

import os
import tempfile
import threading

from myna_common.atomic import atomic_path


class SegmentClips:
    """A folder of segment WAVs, made on first use (`folder`) and removed by `close`."""

    def __init__(self):
        # tempfile's own: removed by `cleanup`, or when it is collected or the interpreter exits, whichever is first
        self._folder: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> str:
        with self._lock:  # one folder, even when the first searches come at once
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="myna-app-clips-", ignore_cleanup_errors=True)
            return self._folder.name

    def close(self) -> None:
        """Removes the folder and its WAVs; a later `write` makes a new one."""
        with self._lock:
            folder, self._folder = self._folder, None
        if folder is not None:
            folder.cleanup()

    def write(self, path: str, track: int, start: float, seconds: float) -> str | None:
        """A WAV of the audio file `path` (track `track`) from `start` seconds for `seconds`; None when it does
        not decode."""
        import soundfile as sf

        from modeling_myna.audio_utils import AudioDecodeError, load_audio

        stem = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.join(self.folder, str(track))  # one folder a track: names stay the track's own
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, f"{stem}-from-{start:.2f}s.wav")
        if os.path.exists(out):  # written before, by this search or a concurrent one
            return out
        try:
            audio, rate = load_audio(path, offset=start, duration=seconds)
        except AudioDecodeError:
            return None
        with atomic_path(out, suffix=".wav", makedirs=False) as partial:
            sf.write(partial, audio, rate, format="WAV", subtype="PCM_16")
        return out


__all__ = ["SegmentClips"]
