"""Unlabelled pre-training audio: recorded game soundtracks from Debian's packages, fetched with `apt-get download`,
unpacked with `dpkg -x` (never installed), filtered, and written as 16 kHz mono FLAC for `--dataset folder`.

What is kept: audio files under a folder whose name says music (`music`, `cdtracks`, `*soundtrack*`), also inside
zip archives named like music (Nexuiz's `music.pk3`). What is dropped, and counted per package:
- jingles: shorter than `min_seconds` after loop trimming;
- silence: RMS below `min_rms`;
- exact duplicates: the same file bytes (SHA-256) seen before;
- near duplicates: two of a file's three probe windows (20 s of a 2 Hz log-mel) match a longer file at the same
  offset (correlation of the band-centred windows), as a track and an edit of it;
- loops within a file: a game track that repeats itself (Planet Blupi's 25-minute files are a 2-3 minute loop)
  is cut after the first period: the smallest lag at which the rest of the file matches itself frame by frame.
"""

import glob
import hashlib
import io
import itertools
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from myna_common.atomic import atomic_path


# Named sets of Debian packages (all in main, so under DFSG-free licences) that ship recorded music. The first set
# is the default and stays as it is, so that results measured on it remain comparable; `wide` adds packages.
SOUNDTRACKS14 = (  # 14.0 h after cleaning
    "wesnoth-1.16-music",
    "warzone2100-music",
    "supertux-data",
    "freedroidrpg-data",
    "widelands-data",
    "nexuiz-music",
    "planetblupi-music-ogg",
    "singularity-music",
    "megaglest-data",
)
WIDE_ADDITIONS = (  # checked by hand (`dpkg-deb -c`, and the archives' listings): recorded music, not MIDI or modules
    "0ad-data",
    "ufoai-music",
    "naev-data",
    "hedgewars-data",
    "supertuxkart-data",
    "blobwars-data",
    "hyperrogue-music",
    "colobot-common-sounds",
    "unknown-horizons",
    "marsshooter-data",
    "flare-game",
    "freecol",
    "starfighter-data",
    "warmux-data",
    "drascula-music",
    "pushover-data",
    "openclonk-data",
    "trackballs-data",
    "enigma-data",
    "searchandrescue-data",
    "gigalomania-data",
    "xmoto-data",
    "extremetuxracer-data",
    "asc-music",
    "adonthell-data",
    "fillets-ng-data",
    "ardentryst",
    "titanion-data",
    "mu-cade-data",
    "torus-trooper-data",
    "gunroar-data",
    "btanks-data",
    "berusky2-data",
    "plee-the-bear-data",
    "davegnukem-data",
    "lordsawar-data",
    "hex-a-hop-data",
    "zaz-data",
    "frozen-bubble-data",
    "amoebax-data",
    "glob2-data",
)
PACKAGE_SETS = {"soundtracks14": SOUNDTRACKS14, "wide": SOUNDTRACKS14 + WIDE_ADDITIONS}
PACKAGES = SOUNDTRACKS14


@dataclass(frozen=True)
class MusicLayout:
    """Where a package keeps music that the default rules (audio files in music folders, audio members of music
    archives) miss. Each package is checked by hand: its other audio is sound effects or speech."""

    folders: tuple[str, ...] = ()  # names of folders that hold its music, though not named for it
    archives: tuple[str, ...] = ()  # names of zip archives whose members in music folders are music
    untyped: bool = False  # music files without an extension, known by their first bytes (Ogg, FLAC, WAVE, MP3)


MUSIC_LAYOUTS = {
    "0ad-data": MusicLayout(archives=("public.zip",)),  # audio/music/ of the 3 GiB data archive
    "adonthell-data": MusicLayout(folders=("audio",)),  # the at-demo-*.ogg themes (and two clicks, jingles)
    "blobwars-data": MusicLayout(untyped=True),  # music/arctic, music/biomech, ...: Ogg Vorbis without extension
    "btanks-data": MusicLayout(folders=("tunes",)),
    "drascula-music": MusicLayout(folders=("audio",)),  # the CD tracks (the language folders link to them)
    "frozen-bubble-data": MusicLayout(folders=("snd",)),  # three tunes among short effects (jingles)
    "glob2-data": MusicLayout(folders=("zik",)),
    "hex-a-hop-data": MusicLayout(folders=("hex-a-hop",)),  # music-*.ogg among short effects
    "pushover-data": MusicLayout(folders=("themes",)),  # one tune per level theme
    "zaz-data": MusicLayout(folders=("zaz",)),  # mus1-4.ogg among short effects
}
AUDIO_EXTENSIONS = (".ogg", ".oga", ".flac", ".wav", ".mp3", ".opus")
MUSIC_FOLDER_WORDS = ("music", "cdtracks", "soundtrack")
ARCHIVE_EXTENSIONS = (".pk3", ".zip")
FINGERPRINT_RATE = 2.0  # frames per second of the fingerprint
FINGERPRINT_BANDS = 32


class PackageError(RuntimeError):
    """A Debian package that could not be fetched or unpacked; the message says what to do."""


@dataclass
class MusicSource:
    """One music file: a file of an unpacked package, or a member of a zip archive inside it."""

    package: str
    path: str  # the file, or the archive
    member: str | None = None

    @property
    def name(self) -> str:
        """A stable id inside the package: the path under the package's root (`archive.pk3!member` for members)."""
        return self.path if self.member is None else f"{self.path}!{self.member}"

    def read_bytes(self) -> bytes:
        if self.member is None:
            with open(self.path, "rb") as f:
                return f.read()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)


# ---------------------------------------------------------------------------------------------- fetching


def apt_candidate(package: str) -> str | None:
    """The version apt would fetch, or None when the package is unknown to apt here."""
    result = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            return None if version in ("", "(none)") else version
    return None


def resolve_package(package: str) -> str:
    """`package`, or for a versioned Wesnoth music package apt does not know, the newest `wesnoth-X.Y-music` it
    knows."""
    if apt_candidate(package):
        return package
    if package.startswith("wesnoth-") and package.endswith("-music"):
        result = subprocess.run(
            ["apt-cache", "search", "--names-only", r"^wesnoth-[0-9.]+-music$"], capture_output=True, text=True
        )
        names = sorted(line.split(" ", 1)[0] for line in result.stdout.splitlines() if line.strip())
        if names:
            return names[-1]
    raise PackageError(f"apt knows no package {package}: run `apt-get update` first, or leave it out with --packages.")


def _apt_sandbox_ids() -> tuple[int, int] | None:
    """`(uid, gid)` of apt's sandbox user `_apt` when running as root, else None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam("_apt")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def download_deb(package: str, folder: str) -> str:
    """The package's `.deb` in `folder`, fetched with `apt-get download` unless it is there already. The download
    runs in a temporary folder and the file is moved in when complete, so an interrupted one is never taken.

    `apt-get download` needs no root: a user fetches into any folder they can write. Run as root, apt drops to its
    sandbox user `_apt` for the fetch, which must then be able to write the folder itself (mode 755 is not enough);
    where it cannot (the folder, or one above it, is closed to `_apt`), apt downloads as root after the warning
    "Download is performed unsandboxed as root". The temporary folder is handed to `_apt` so that the download stays
    sandboxed where apt can reach it, and the finished file is given back to root.
    """
    os.makedirs(folder, exist_ok=True)
    found = sorted(glob.glob(os.path.join(folder, f"{package}_*.deb")))
    if found:
        return found[-1]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        sandbox = _apt_sandbox_ids()
        if sandbox:
            os.chown(scratch, *sandbox)
        result = subprocess.run(["apt-get", "download", package], cwd=scratch, capture_output=True, text=True)
        debs = glob.glob(os.path.join(scratch, "*.deb"))
        if result.returncode != 0 or not debs:
            raise PackageError(
                f"apt-get download {package} failed: {result.stderr.strip().splitlines()[-1:] or ['no .deb']}; "
                "check that Debian's archive is reachable (apt-get update), or leave it out with --packages."
            )
        target = os.path.join(folder, os.path.basename(debs[0]))
        shutil.move(debs[0], target)
        if sandbox:
            os.chown(target, os.geteuid(), os.getegid())
    return target


def unpack_deb(deb: str, folder: str) -> str:
    """`dpkg -x deb` into `folder` (not installed), through a temporary folder renamed when complete."""
    if os.path.isdir(folder):
        return folder
    with atomic_path(folder) as partial:  # a failure removes the partial folder
        result = subprocess.run(["dpkg", "-x", deb, partial], capture_output=True, text=True)
        if result.returncode != 0:
            raise PackageError(
                f"dpkg -x {deb} failed: {result.stderr.strip()[-200:]}; delete the .deb to fetch it again."
            )
    return folder


# ---------------------------------------------------------------------------------------------- finding music


def is_music_path(relative: str, folder_names: tuple[str, ...] = ()) -> bool:
    """Whether a path (relative to the package root) lies in a music folder: one whose name holds a word of
    `MUSIC_FOLDER_WORDS`, or is one of `folder_names`."""
    folders = [part.lower() for part in relative.replace(os.sep, "/").split("/")[:-1]]
    return any(any(word in folder for word in MUSIC_FOLDER_WORDS) or folder in folder_names for folder in folders)


def is_untyped_audio(path: str) -> bool:
    """Whether a file without an extension begins as an Ogg, FLAC, WAVE or ID3-tagged MP3 file does."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] in (b"OggS", b"fLaC") or head[:3] == b"ID3" or (head[:4] == b"RIFF" and head[8:12] == b"WAVE")


def find_music(package: str, root: str) -> list[MusicSource]:
    """Music files of an unpacked package, sorted: audio in music folders, and audio members of music archives (with
    the package's `MUSIC_LAYOUTS` where it keeps music elsewhere)."""
    layout = MUSIC_LAYOUTS.get(package, MusicLayout())
    sources = []
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            extension = os.path.splitext(name)[1].lower()
            if extension in AUDIO_EXTENSIONS and is_music_path(relative, layout.folders):
                sources.append(MusicSource(package, path))
            elif layout.untyped and not extension and is_music_path(relative, layout.folders):
                if os.path.isfile(path) and is_untyped_audio(path):
                    sources.append(MusicSource(package, path))
            elif extension in ARCHIVE_EXTENSIONS and "music" in name.lower() and zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        if os.path.splitext(member)[1].lower() in AUDIO_EXTENSIONS:
                            sources.append(MusicSource(package, path, member))
            elif name in layout.archives and zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        if os.path.splitext(member)[1].lower() in AUDIO_EXTENSIONS and is_music_path(member):
                            sources.append(MusicSource(package, path, member))
    return sorted(sources, key=lambda s: s.name)


# ---------------------------------------------------------------------------------------------- fingerprints


def fingerprint(audio: np.ndarray, sampling_rate: int = 16_000) -> np.ndarray:
    """`(frames, 32)` log-mel at 2 Hz: 0.1 s frames averaged over 1 s, every 0.5 s (smooth enough that two copies
    of the same audio offset by a fraction of a frame still match)."""
    import librosa

    hop = sampling_rate // 10
    if len(audio) < 2 * hop:
        return np.zeros((0, FINGERPRINT_BANDS), np.float32)
    mel = librosa.feature.melspectrogram(
        y=audio, sr=sampling_rate, n_fft=2048, hop_length=hop, n_mels=FINGERPRINT_BANDS, power=2.0
    )
    log = np.log10(mel + 1e-8).T
    width = 10
    if len(log) < width:
        return log.mean(0, keepdims=True).astype(np.float32)
    cumulative = np.cumsum(np.vstack([np.zeros((1, log.shape[1])), log]), 0)
    smooth = (cumulative[width:] - cumulative[:-width]) / width
    return smooth[:: int(10 / FINGERPRINT_RATE)].astype(np.float32)


def loop_length(
    features: np.ndarray,
    rate: float = FINGERPRINT_RATE,
    min_period: float = 20.0,
    min_repeat: float = 60.0,
    threshold: float = 0.8,
    fraction: float = 0.9,
) -> float | None:
    """Seconds to keep when the file loops, or None.

    A file loops at lag L from frame i0 on when at least `fraction` of the frames from i0 to the end, and of the 10 s
    after i0, match the frame L earlier (cosine of band-standardised log-mel frames above `threshold`), over at
    least `min_repeat` seconds and a quarter of the file. The earliest end of the first period over all lags,
    `i0 + L`, is kept.
    """
    count = len(features)
    if count < (min_period + min_repeat) * rate:
        return None
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-9
    need = max(int(min_repeat * rate), count // 4)
    width = int(10 * rate)  # the repeat starts where 10 s of frames in a row mostly match
    best = None
    for lag in range(int(min_period * rate), count - need + 1):
        similar = (np.einsum("ij,ij->i", z[:-lag], z[lag:]) > threshold).astype(np.float64)
        remaining = np.arange(len(similar), 0, -1)
        cumulative = np.concatenate([[0.0], np.cumsum(similar)])
        suffix = (cumulative[-1] - cumulative[:-1]) / remaining
        ahead = np.minimum(np.arange(len(similar)) + width, len(similar))
        local = (cumulative[ahead] - cumulative[:-1]) / (ahead - np.arange(len(similar)))
        ok = np.flatnonzero((suffix >= fraction) & (local >= fraction) & (remaining >= need))
        if len(ok) and (best is None or ok[0] + lag < best):
            best = ok[0] + lag
    return None if best is None else best / rate


def _windows(features: np.ndarray, frames: int) -> np.ndarray:
    """`(num_windows, frames * bands)` sliding windows, each band centred within the window and the whole window
    scaled to unit norm (so that a dot product is a correlation)."""
    if len(features) < frames:
        return np.zeros((0, frames * features.shape[1]), np.float32)
    view = np.lib.stride_tricks.sliding_window_view(features, frames, axis=0)  # (W, bands, frames)
    windows = view - view.mean(2, keepdims=True)
    windows = windows.reshape(len(windows), -1)
    return (windows / (np.linalg.norm(windows, axis=1, keepdims=True) + 1e-9)).astype(np.float32)


def near_duplicates(
    fingerprints: dict[str, np.ndarray],
    window_seconds: float = 20.0,
    threshold: float = 0.8,
    rate: float = FINGERPRINT_RATE,
    tolerance_seconds: float = 1.0,
) -> dict[str, str]:
    """`{dropped: kept}` for files that are copies or edits of a longer file (ties: the name sorted first is kept).

    Three probe windows of each file (at 25, 50 and 75%) are looked up in every longer file; a file is a copy when
    two of them match (correlation at least `threshold`) at the same offset, within `tolerance_seconds`, so that
    the match is one stretch of shared audio, not two windows that merely sound alike (music of one genre reaches
    0.85 by chance, at unrelated places). Files shorter than a window are never matched.
    """
    frames = int(window_seconds * rate)
    tolerance = tolerance_seconds * rate
    names = sorted(fingerprints, key=lambda n: (-len(fingerprints[n]), n))  # longest first
    probes, owners, positions = [], [], []
    for name in names:
        features = fingerprints[name]
        if len(features) < frames:
            continue
        windows = _windows(features, frames)
        for fraction in (0.25, 0.5, 0.75):
            position = min(len(windows) - 1, int(fraction * len(windows)))
            probes.append(windows[position])
            owners.append(name)
            positions.append(position)
    if not probes:
        return {}
    probes, owners, positions = np.stack(probes), np.array(owners), np.array(positions)
    rank = {name: index for index, name in enumerate(names)}
    owner_rank = np.array([rank[o] for o in owners])
    dropped: dict[str, str] = {}
    for name in names:  # each candidate container, longest first
        windows = _windows(fingerprints[name], frames)
        if not len(windows) or name in dropped:
            continue
        scores = probes @ windows.T
        best, where = scores.max(1), scores.argmax(1)
        hits = (best >= threshold) & (owner_rank > rank[name])  # only files sorted after it (shorter) are dropped
        for owner in sorted(set(owners[hits])):
            offsets = (where - positions)[hits & (owners == owner)]
            if any(abs(a - b) <= tolerance for a, b in itertools.combinations(offsets, 2)):
                dropped.setdefault(owner, name)
    return dropped


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(source: MusicSource, sampling_rate: int = 16_000) -> tuple[np.ndarray, bytes]:
    """`(mono float32 audio at sampling_rate, the file's bytes)`."""
    from modeling_myna.audio_utils import load_audio

    data = source.read_bytes()
    audio, _ = load_audio(io.BytesIO(data), sampling_rate=sampling_rate)
    return audio, data


__all__ = [
    "MUSIC_LAYOUTS",
    "MusicLayout",
    "MusicSource",
    "PACKAGES",
    "PACKAGE_SETS",
    "SOUNDTRACKS14",
    "WIDE_ADDITIONS",
    "PackageError",
    "download_deb",
    "find_music",
    "fingerprint",
    "is_music_path",
    "is_untyped_audio",
    "loop_length",
    "near_duplicates",
    "read_source",
    "resolve_package",
    "unpack_deb",
]
