"""Where the spectrograms are kept for training, and where they are placed. `SpectrogramStore` is a folder written
once from the Arrow cache, every clip's frames back to back in one file, so that a crop is one contiguous read;
`bank()` opens it as a resident or an out-of-core bank (`spectrogram_banks`), `choose_placement` picks one of the two
from the set's size and the free memory, and `check_disk_space` checks the disk before the store is written.

A store proves it is whole. Writing refuses non-finite frames (naming the clip) and records in `meta.json` the size of
`frames.bin` and a checksum of it (xxh3-128, computed block by block as the file is written, at disk speed); the
folder is written under a temporary name and renamed when complete (`myna_common.atomic`). Opening a store checks
the size always; the resident path, which reads the whole file anyway, checks the checksum as it reads; the
out-of-core path checks it in a background thread (`StoreVerifier`) while training runs. In a run of several
processes, one process per machine checks the checksum and the others learn the outcome (`pretrain_data`). A
mismatch is one line (`DamagedStoreError`) that names the folder and says to delete it: it is recomputed on the next
run.
"""

import json
import os
import shutil
import threading

import numpy as np
import torch

from myna_common.atomic import atomic_path
from myna_training.audio_sources import SkipReport
from myna_training.spectrogram_banks import DiskSpectrogramBank, SpectrogramBank, iter_stored_spectrograms

# Banks and streamed sets lived here before `spectrogram_banks`: importable from here as they always were.
from myna_training.spectrogram_banks import StreamingSpectrograms, gather_crops, stored_to_tensor  # noqa: F401, E402


# Format 2 adds the size and checksum of frames.bin to meta.json; a format-1 store is refused (delete to recompute).
STORE_FORMAT = 2
# Share of the free memory (of the device, or of the host for CPU training) a resident bank may take: the model's
# activations, the optimiser and, on a host, the other processes need the rest.
RESIDENT_MEMORY_FRACTION = 0.5
PLACEMENTS = ("auto", "resident", "out_of_core")
CHECKSUM_ALGORITHM = "xxh3_128"
# Bytes hashed (and, when verifying, read) at a time.
CHECKSUM_BLOCK_BYTES = 64 << 20


def new_checksum():
    """The running checksum of a store's `frames.bin` (xxh3-128: several GB/s on one core, so it costs no more than
    the disk; `xxhash` comes with `datasets`)."""
    import xxhash

    return xxhash.xxh3_128()


def stored_format(directory: str) -> int | None:
    """The format number a store's `meta.json` records; `None` when it cannot be read (`SpectrogramStore` then says
    how it is damaged)."""
    try:
        with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
            found = json.load(f).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, int) else None


class DamagedStoreError(ValueError):
    """A spectrogram store whose files do not match what its `meta.json` recorded when it was written."""

    def __init__(self, directory: str, what: str):
        super().__init__(
            f"the spectrogram store {directory} is damaged: {what}. Delete that folder (rm -r {directory}); the next "
            "run recomputes it."
        )
        self.directory, self.what = directory, what

    def __reduce__(self):  # rebuilt from its two parts in another process (`process_errors`)
        return type(self), (self.directory, self.what)


def non_finite_rows(array: np.ndarray) -> np.ndarray:
    """Indices of the rows of a stored `(T, F)` array (float32, or bfloat16 as uint16 bits) holding NaN or inf."""
    if array.dtype == np.uint16:  # bfloat16 bits: non-finite when the 8 exponent bits are all set
        bad = (array & 0x7F80) == 0x7F80
    else:
        bad = ~np.isfinite(array)
    return np.flatnonzero(bad.reshape(array.shape[0], -1).any(axis=1))


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


class SpectrogramStore:
    """A folder holding a set's spectrograms for training, written once from the Arrow cache:

    - `frames.bin`: every clip's `(frames, num_mel_bins)` rows back to back, raw float32 or bfloat16;
    - `num_frames.npy`: frames per clip, `(num_clips,)` int64;
    - `meta.json`: format, dtype, shape, the byte size and checksum of `frames.bin`, and the skip report of the
      preprocessing.

    Rows of one clip are contiguous, so a 96-frame crop is one contiguous read. The folder is written under a
    temporary name and renamed when complete, and opening it checks that `frames.bin` has the recorded size (and,
    for a resident bank, the recorded checksum): a damaged store is refused with `DamagedStoreError`.
    """

    def __init__(self, directory: str):
        self.directory = directory
        try:
            with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
                self.meta = json.load(f)
        except (OSError, ValueError) as error:
            raise DamagedStoreError(directory, f"its meta.json cannot be read ({error})") from None
        if self.meta.get("format") != STORE_FORMAT:
            raise DamagedStoreError(
                directory, f"it is a spectrogram store of format {self.meta.get('format')}, not {STORE_FORMAT} (written "
                "by another version, without the checks of this one)"
            )
        try:
            self.num_frames = torch.from_numpy(np.load(os.path.join(directory, "num_frames.npy")))
        except (OSError, ValueError) as error:
            raise DamagedStoreError(directory, f"its num_frames.npy cannot be read ({error})") from None
        self.dtype = getattr(torch, self.meta["dtype"])
        self.num_mel_bins = self.meta["num_mel_bins"]
        if len(self.num_frames) != self.meta["num_clips"] or int(self.num_frames.sum()) != self.total_frames:
            raise DamagedStoreError(
                directory, f"num_frames.npy lists {len(self.num_frames)} clips of {int(self.num_frames.sum())} frames, "
                f"meta.json {self.meta['num_clips']} clips of {self.total_frames}"
            )
        self.check_size()

    def __len__(self) -> int:
        return len(self.num_frames)

    @property
    def total_frames(self) -> int:
        return int(self.meta["total_frames"])

    @property
    def row_bytes(self) -> int:
        return self.num_mel_bins * torch.empty((), dtype=self.dtype).element_size()

    @property
    def nbytes(self) -> int:
        return self.total_frames * self.row_bytes

    def skip_report(self) -> SkipReport:
        report = SkipReport()
        for reason, count in self.meta.get("skipped", {}).get("counts", {}).items():
            report.add(reason, self.meta["skipped"]["examples"].get(reason, "?"), count)
        return report

    @property
    def frames_path(self) -> str:
        return os.path.join(self.directory, "frames.bin")

    def check_size(self) -> None:
        """Raises `DamagedStoreError` unless `frames.bin` holds exactly the recorded bytes (one `stat`)."""
        expected = self.meta["frames_bytes"]
        if expected != self.nbytes:
            raise DamagedStoreError(
                self.directory, f"meta.json records {expected} bytes of frames, but its {self.total_frames} frames of "
                f"{self.num_mel_bins} {self.meta['dtype']} values take {self.nbytes}"
            )
        try:
            actual = os.path.getsize(self.frames_path)
        except OSError:
            raise DamagedStoreError(self.directory, "frames.bin is missing") from None
        if actual != expected:
            how = "truncated" if actual < expected else "longer than written"
            raise DamagedStoreError(
                self.directory, f"frames.bin holds {actual} bytes, not the {expected} written ({how})"
            )

    def check_checksum(self, checksum: str) -> None:
        """Raises `DamagedStoreError` unless `checksum` (of the whole of `frames.bin`) is the one recorded."""
        recorded = self.meta["checksum"]
        if checksum != recorded["value"]:
            raise DamagedStoreError(
                self.directory, f"the {recorded['algorithm']} checksum of frames.bin is {checksum}, not the "
                f"{recorded['value']} recorded when it was written (its content changed)"
            )

    def verify(self, stop: threading.Event | None = None) -> bool:
        """Reads `frames.bin` once, block by block, and checks its size and checksum (`DamagedStoreError` on a
        mismatch). Returns `False` when `stop` was set before the end (nothing checked), else `True`."""
        self.check_size()
        checksum = new_checksum()
        buffer = bytearray(CHECKSUM_BLOCK_BYTES)
        view = memoryview(buffer)
        with open(self.frames_path, "rb", buffering=0) as f:
            while True:
                if stop is not None and stop.is_set():
                    return False
                count = f.readinto(buffer)
                if not count:
                    break
                checksum.update(view[:count])
                _drop_from_page_cache(f, f.tell() - count, count)
        self.check_checksum(checksum.hexdigest())
        return True

    def bank(self, device, resident: bool, verify: bool = True) -> "SpectrogramBank | DiskSpectrogramBank":
        """A resident bank on `device` (the file read once, 64 MiB at a time, its checksum checked on the way unless
        not `verify`: another process of the machine checks it), or an out-of-core bank that reads each crop from the
        file (size checked; `StoreVerifier` checks the checksum)."""
        self.check_size()
        if not resident:
            return DiskSpectrogramBank(self.frames_path, self.num_frames, self.num_mel_bins, self.dtype)
        frames = torch.empty((self.total_frames, self.num_mel_bins), dtype=self.dtype, device=device)
        host_dtype = np.int16 if frames.element_size() == 2 else np.float32
        step = max(1, CHECKSUM_BLOCK_BYTES // self.row_bytes)
        checksum = new_checksum() if verify else None
        with open(self.frames_path, "rb") as f:
            for row in range(0, self.total_frames, step):
                rows = min(step, self.total_frames - row)
                bits = np.fromfile(f, dtype=host_dtype, count=rows * self.num_mel_bins)
                if bits.size != rows * self.num_mel_bins:  # changed since the size check
                    raise DamagedStoreError(self.directory, "frames.bin ended early while it was read")
                if checksum is not None:
                    checksum.update(bits)
                chunk = torch.from_numpy(bits).view(self.dtype).view(rows, self.num_mel_bins)
                frames[row : row + rows] = chunk.to(device)
            if f.read(1):
                raise DamagedStoreError(self.directory, "frames.bin grew while it was read")
        if checksum is not None:
            self.check_checksum(checksum.hexdigest())
        return SpectrogramBank(frames, self.num_frames)

    @classmethod
    def write(cls, spectrograms, directory: str, skipped: SkipReport, chunk_size: int = 256) -> "SpectrogramStore":
        """Writes the store of a `compute_spectrograms` dataset (bad clips already dropped) to `directory`."""
        feature = spectrograms.features["spectrogram"]
        bfloat16 = feature.dtype == "uint16"
        stored_dtype = np.uint16 if bfloat16 else np.float32  # `datasets` hands uint16 columns out as int64
        arrays = (np.asarray(a, dtype=stored_dtype) for a in iter_stored_spectrograms(spectrograms, chunk_size))
        return cls.write_arrays(
            directory,
            arrays,
            np.asarray(spectrograms["num_frames"], dtype=np.int64),
            "bfloat16" if bfloat16 else "float32",
            int(feature.shape[1]),
            skipped,
            ids=spectrograms["id"] if "id" in spectrograms.column_names else None,
        )

    @classmethod
    def write_arrays(cls, directory, arrays, num_frames, dtype: str, num_mel_bins: int, skipped=None, ids=None):
        """Writes a store from `arrays`, `(frames, num_mel_bins)` numpy arrays in the stored dtype (bfloat16 as its
        uint16 bits) whose rows add up to `num_frames` `(num_clips,)`, clip after clip.

        A clip with a non-finite frame stops the writing with a `ValueError` naming it (`ids[i]` when given, else
        its index): raw power mels of finite audio are finite, so it is corrupt input, and training on it would
        turn the loss into NaN. The size and checksum of `frames.bin` are computed as it is written.
        """
        num_frames = np.asarray(num_frames, dtype=np.int64)
        skipped = skipped or SkipReport()
        # The folder is written under a name of its own and renamed when complete; on an error it is removed.
        with atomic_path(directory) as partial:
            os.makedirs(partial)
            rows = 0
            checksum = new_checksum()
            with open(os.path.join(partial, "frames.bin"), "wb") as f:
                for clip, array in enumerate(arrays):
                    if array.ndim != 2 or array.shape[1] != num_mel_bins:
                        raise ValueError(f"expected (frames, {num_mel_bins}) arrays, got {array.shape}.")
                    bad = non_finite_rows(array)
                    if bad.size:
                        name = f"{ids[clip]!r} (clip {clip})" if ids is not None else f"{clip}"
                        raise ValueError(
                            f"clip {name} has non-finite values (NaN or inf) in {bad.size} of its {array.shape[0]} "
                            f"frames, from frame {int(bad[0])}: its audio is corrupt. Remove it from the source (or "
                            "fix its file) and run again; no store was written."
                        )
                    block = np.ascontiguousarray(array)
                    checksum.update(block)
                    f.write(block.tobytes())
                    rows += array.shape[0]
            if rows != int(num_frames.sum()):
                raise ValueError(f"the arrays hold {rows} frames but num_frames adds up to {int(num_frames.sum())}.")
            np.save(os.path.join(partial, "num_frames.npy"), num_frames)
            meta = {
                "format": STORE_FORMAT,
                "dtype": dtype,
                "num_mel_bins": num_mel_bins,
                "num_clips": int(len(num_frames)),
                "total_frames": rows,
                "frames_bytes": os.path.getsize(os.path.join(partial, "frames.bin")),
                "checksum": {"algorithm": CHECKSUM_ALGORITHM, "value": checksum.hexdigest()},
                "skipped": {"counts": dict(skipped.counts), "examples": dict(skipped.examples)},
            }
            with open(os.path.join(partial, "meta.json"), "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
        return cls(directory)


def _drop_from_page_cache(f, offset: int, length: int) -> None:
    """Tells the kernel a verified block will not be read again soon (a one-pass check should not evict the page
    cache that the crops' reads use)."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(f.fileno(), offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


class StoreVerifier:
    """Checks an out-of-core store's checksum in a background thread while training runs.

    The out-of-core path never reads the whole file for training, so opening it checks only the size; this thread
    reads it once, block by block (dropping each block from the page cache), at disk speed. `check()` (called every
    step: an attribute read) raises the `DamagedStoreError` once it is known; `finish()` waits for the end and
    raises it, so that a short run does not export a model trained on a damaged store.
    """

    def __init__(self, store: SpectrogramStore):
        self.store = store
        self.error: BaseException | None = None
        self.done = False
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="myna-store-verify")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.store.verify(self._stop)
        except BaseException as error:  # raised in the training loop by check()
            self.error = error
        finally:
            self.done = True

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.thread.join()
        self.check()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


def free_memory(device: torch.device) -> int:
    """Bytes free for a resident bank on `device`: the GPU's free memory, or the host's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_placement(
    requested: str, set_bytes: int, device: torch.device, free_bytes: int, processes_per_host: int = 1
) -> tuple[str, str]:
    """`("resident" | "out_of_core", why)` for a set of `set_bytes` bytes.

    Resident when every process's copy fits in `RESIDENT_MEMORY_FRACTION` of `free_bytes` (of the device; of the host,
    shared by its processes, on CPU), out-of-core otherwise; `requested` other than `"auto"` overrides, and a
    resident bank that cannot fit is an error that gives the numbers.
    """
    if requested not in PLACEMENTS:
        raise ValueError(f"spectrogram_placement={requested!r}: choose one of {PLACEMENTS}.")
    device = torch.device(device)
    copies = processes_per_host if device.type == "cpu" else 1
    budget = int(free_bytes * RESIDENT_MEMORY_FRACTION)
    where = "GPU" if device.type == "cuda" else "host"
    numbers = (
        f"{gib(set_bytes)} per process{f' x {copies} processes' if copies > 1 else ''}; {gib(free_bytes)} free "
        f"on the {where}, {int(RESIDENT_MEMORY_FRACTION * 100)}% of it usable"
    )
    fits = set_bytes * copies <= budget
    if requested == "resident" and not fits:
        raise ValueError(
            f"the spectrograms do not fit in memory as a resident bank ({numbers}): use "
            "--spectrogram_placement out_of_core (or auto), --storage_dtype bfloat16, or fewer clips."
        )
    if requested == "resident" or (requested == "auto" and fits):
        return "resident", numbers
    return "out_of_core", numbers


def check_disk_space(directory: str, needed_bytes: int, what: str) -> None:
    """Raises a clear error when the disk holding `directory` has less than `needed_bytes` free."""
    os.makedirs(directory, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise ValueError(
            f"{what} need about {gib(needed_bytes)} on disk in {directory}, which has {gib(free)} free: point "
            "--cache_dir at a larger disk, use --streaming, or limit the set with --max_clips."
        )


__all__ = [
    "PLACEMENTS",
    "STORE_FORMAT",
    "DamagedStoreError",
    "DiskSpectrogramBank",
    "SpectrogramBank",
    "SpectrogramStore",
    "StoreVerifier",
    "StreamingSpectrograms",
    "check_disk_space",
    "choose_placement",
    "free_memory",
    "gather_crops",
    "stored_format",
]
