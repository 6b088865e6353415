"""The Debian tools the build calls: apt and dpkg to fetch and unpack the soundtrack packages, FluidSynth and a
General MIDI SoundFont to render the labelled clips.

Nothing is installed unless the user asks (`--install`): a missing tool stops the build with one line that names
the Debian packages and the command that installs them.
"""

import logging
import os
import shutil
import subprocess

from . import scores


logger = logging.getLogger(__name__)

# General MIDI SoundFonts that Debian ships, by the package that ships them. The first is the default of the
# labelled tasks (`scores.find_soundfont`); the others re-render the same clips (`--clips_from`).
SOUNDFONT_PACKAGES = {
    "/usr/share/sounds/sf2/FluidR3_GM.sf2": "fluid-soundfont-gm",  # Frank Wen's Fluid R3, 141 MiB, MIT
    "/usr/share/sounds/sf2/TimGM6mb.sf2": "timgm6mb-soundfont",  # Tim Brechbill's TimGM6mb, 6 MiB, GPL-2
}
DEFAULT_SOUNDFONT_PACKAGE = "fluid-soundfont-gm"


class MissingToolError(FileNotFoundError):
    """A program or file the build needs is not there; the message names the Debian packages and the command."""


def install_command(packages: list[str]) -> str:
    return f"apt-get install -y {' '.join(packages)}"


def install_packages(packages: list[str], install: bool, purpose: str) -> None:
    """Installs the Debian `packages` with apt-get when `install`; otherwise raises `MissingToolError`, one line
    saying what is missing, for what, and the command (nothing runs)."""
    if not packages:
        return
    command = install_command(packages)
    if not install:
        raise MissingToolError(
            f"{', '.join(packages)} missing ({purpose}): install with `{command}` (as root), or rerun with --install."
        )
    if shutil.which("apt-get") is None:
        raise MissingToolError(f"{', '.join(packages)} missing ({purpose}) and no apt-get here: install them by hand.")
    if os.geteuid() != 0:
        raise PermissionError(f"--install runs `{command}`, which needs root: run it with sudo, then rerun.")
    logger.info("installing %s with apt-get", " ".join(packages))
    result = subprocess.run(["apt-get", "install", "-y", "-q", *packages], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{command} failed ({result.stderr.strip().splitlines()[-1:]}); run `apt-get update && {command}` as "
            "root, then rerun."
        )


def ensure_renderer(install: bool, soundfont: str | None) -> str:
    """FluidSynth on PATH and the SoundFont (`soundfont`, or fluid-soundfont-gm's FluidR3_GM), apt-installed only
    when `install`; returns the SoundFont's path."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth")
    try:
        path = scores.find_soundfont(soundfont)
    except FileNotFoundError:
        package = SOUNDFONT_PACKAGES.get(os.path.abspath(soundfont)) if soundfont else DEFAULT_SOUNDFONT_PACKAGE
        if package is None:
            raise MissingToolError(f"--soundfont {soundfont}: no such file.") from None
        missing.append(package)
        path = None
    install_packages(missing, install, "to render the labelled clips")
    return path or scores.find_soundfont(soundfont)


def ensure_package_tools() -> None:
    """apt-get, apt-cache and dpkg on PATH: the pre-training stage fetches and unpacks Debian packages with them
    (none of them is installable: they are Debian's own)."""
    missing = [tool for tool in ("apt-get", "apt-cache", "dpkg") if shutil.which(tool) is None]
    if missing:
        raise MissingToolError(
            f"{', '.join(missing)} not found: the pre-training stage fetches Debian packages with apt and dpkg; run "
            "it on Debian or Ubuntu, or build only the labelled tasks (--stages tasks)."
        )


__all__ = [
    "DEFAULT_SOUNDFONT_PACKAGE",
    "SOUNDFONT_PACKAGES",
    "MissingToolError",
    "ensure_package_tools",
    "ensure_renderer",
    "install_command",
    "install_packages",
]
