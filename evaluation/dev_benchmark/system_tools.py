"""The Debian tools the build calls: FluidSynth and a General MIDI SoundFont to render the labelled clips."""

import logging
import shutil
import subprocess

from . import scores


logger = logging.getLogger(__name__)


def ensure_renderer(install: bool, soundfont: str | None) -> str:
    """FluidSynth on PATH and a SoundFont, apt-installed when missing and allowed; returns the SoundFont path."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth")
    try:
        return_path = scores.find_soundfont(soundfont)
    except FileNotFoundError:
        if soundfont:
            raise
        missing.append("fluid-soundfont-gm")
        return_path = None
    if missing:
        if not install or shutil.which("apt-get") is None:
            raise FileNotFoundError(
                f"{', '.join(missing)} missing: install with `apt-get install -y {' '.join(missing)}` (as root), "
                "then rerun."
            )
        logger.info("installing %s with apt-get", " ".join(missing))
        result = subprocess.run(["apt-get", "install", "-y", "-q", *missing], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"apt-get install {' '.join(missing)} failed ({result.stderr.strip().splitlines()[-1:]}); run "
                f"`apt-get update && apt-get install -y {' '.join(missing)}` as root, then rerun."
            )
        return_path = scores.find_soundfont(soundfont)
    return return_path


__all__ = ["ensure_renderer"]
