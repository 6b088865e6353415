"""Where the spectrograms are kept for training, and where they are placed. `SpectrogramStore` is a folder written
once from the Arrow cache, every clip's frames back to back in one file, so that a crop is one contiguous read. A
resident `SpectrogramBank` holds every spectrogram side by side in one `(total_frames, num_mel_bins)` tensor on the
training device and crops with one gather; an out-of-core `DiskSpectrogramBank` reads each crop from the store's
file instead; `choose_placement` picks one of the two from the set's size and the free memory, and
`check_disk_space` checks the disk before the store is written. Streamed sets have no store: `StreamingSpectrograms`
lays each batch of clips side by side in a small bank and crops it the same way.

A store proves it is whole. Writing refuses non-finite frames (naming the clip) and records in `meta.json` the size of
`frames.bin` and a checksum of it (xxh3-128, computed block by block as the file is written, at disk speed). Opening
a store checks the size always; the resident path, which reads the whole file anyway, checks the checksum as it
reads; the out-of-core path checks it in a background thread (`StoreVerifier`) while training runs. A mismatch is
one line (`DamagedStoreError`) that names the folder and says to delete it: it is recomputed on the next run.
"""

import json
import os
import shutil
import threading

import numpy as np
import torch

from myna_training.audio_sources import SkipReport
from myna_training.batch_plan import NonFiniteCropError, random_crop_starts


# ---------------------------------------------------------------------------------------------------------------
# Banks: the frames a training step crops, resident or out-of-core


def gather_crops(frames: torch.Tensor, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None):
    """`(total_frames, F)` frames and `(B,)` absolute start rows to `(B, F, crop_frames)` crops, one gather.

    A crop is `crop_frames` consecutive rows: one contiguous read, in memory or (`DiskSpectrogramBank`) on disk.
    `out`, when given, is a `(B * crop_frames, F)` buffer (pinned memory, say) that receives the rows.
    """
    rows = (starts.to(frames.device)[:, None] + torch.arange(crop_frames, device=frames.device)).reshape(-1)
    if frames.dtype == torch.bfloat16 and frames.device.type == "cpu":
        # The same bits through the int16 kernel: ~5x faster than the CPU's bfloat16 index_select.
        bits = torch.index_select(frames.view(torch.int16), 0, rows, out=None if out is None else out.view(torch.int16))
        gathered = bits.view(torch.bfloat16)
    else:
        gathered = torch.index_select(frames, 0, rows, out=out)  # (B * crop, F)
    return gathered.view(starts.shape[0], crop_frames, frames.shape[1]).transpose(1, 2)  # (B, F, crop)


class SpectrogramBank:
    """Every spectrogram side by side in one `(total_frames, num_mel_bins)` tensor, cropped with one gather.

    Clip `i` occupies rows `offsets[i] : offsets[i] + num_frames[i]`. The frames live on the training device
    (resident); `DiskSpectrogramBank` is the same interface over the store's file (out-of-core).
    """

    def __init__(self, frames: torch.Tensor, num_frames: torch.Tensor):
        if frames.dim() != 2 or frames.shape[0] != int(num_frames.sum()):
            raise ValueError(
                f"frames {tuple(frames.shape)} do not hold the {int(num_frames.sum())} frames of {len(num_frames)} "
                "clips as (total_frames, num_mel_bins) rows."
            )
        self.frames = frames
        self.num_frames = num_frames.to(frames.device, torch.long)
        self.offsets = torch.cumsum(self.num_frames, 0) - self.num_frames
        # Host copies: the batch plan indexes them on the CPU, with no device round trip in the training step.
        self.host_num_frames = num_frames.cpu().long()
        self.host_offsets = torch.cumsum(self.host_num_frames, 0) - self.host_num_frames

    def __len__(self) -> int:
        return self.num_frames.shape[0]

    @property
    def device(self) -> torch.device:
        return self.frames.device

    @property
    def nbytes(self) -> int:
        return self.frames.numel() * self.frames.element_size()

    @property
    def num_mel_bins(self) -> int:
        return self.frames.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.frames.dtype

    @classmethod
    def from_dataset(cls, dataset, device: str | torch.device = "cpu", chunk_size: int = 256) -> "SpectrogramBank":
        """A resident bank from a `compute_spectrograms` dataset (read chunk by chunk)."""
        num_frames = torch.tensor(dataset["num_frames"], dtype=torch.long)
        feature = dataset.features["spectrogram"]
        bfloat16 = feature.dtype == "uint16"  # how compute_spectrograms stores bfloat16
        frames = torch.empty(
            (int(num_frames.sum()), feature.shape[1]), dtype=torch.bfloat16 if bfloat16 else torch.float32
        )
        row = 0
        for array in iter_stored_spectrograms(dataset, chunk_size):  # load-time copy, not the hot path
            frames[row : row + array.shape[0]] = stored_to_tensor(array, bfloat16)
            row += array.shape[0]
        return cls(frames.to(device), num_frames)

    def crops(self, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, F, crop_frames)` crops at absolute rows `starts` `(B,)` (a clip's offset + its start)."""
        return gather_crops(self.frames, starts, crop_frames, out)

    def crop_pair(
        self,
        index: torch.Tensor,
        crop_frames: int,
        generator: torch.Generator,
        max_distance: int | None = None,
        return_starts: bool = False,
    ):
        """Two `(B, F, crop_frames)` views of the clips `index` `(B,)`, starts drawn with `generator` (on CPU); with
        `return_starts`, also the `(B,)` start frames of each view within its clip."""
        index = index.cpu()
        first, second = random_crop_starts(self.host_num_frames[index], crop_frames, generator, max_distance)
        offsets = self.host_offsets[index]
        views = self.crops(offsets + first, crop_frames), self.crops(offsets + second, crop_frames)
        return (*views, first, second) if return_starts else views


class DiskSpectrogramBank:
    """An out-of-core `SpectrogramBank`: the frames stay in the store's file and each crop is one `pread` of its
    `crop_frames` consecutive rows, spread over a few threads (the reads release the GIL).

    Nothing is memory-mapped: the process holds only the batch being read, whatever the store's size, and the
    kernel's page cache keeps what was read for the next time.
    """

    def __init__(self, path: str, num_frames: torch.Tensor, num_mel_bins: int, dtype: torch.dtype, threads: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self.path = path
        self.num_frames = num_frames.cpu().long()
        self.offsets = torch.cumsum(self.num_frames, 0) - self.num_frames
        self.host_num_frames, self.host_offsets = self.num_frames, self.offsets  # already on the host
        self.num_mel_bins, self.dtype = num_mel_bins, dtype
        self.row_bytes = num_mel_bins * torch.empty((), dtype=dtype).element_size()
        expected = int(self.num_frames.sum()) * self.row_bytes
        if os.path.getsize(path) != expected:
            raise ValueError(f"{path} holds {os.path.getsize(path)} bytes, not the {expected} of its clips: the store "
                             "is damaged; delete its folder to recompute it.")
        self.fd = os.open(path, os.O_RDONLY)
        self.threads = threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="myna-pread")

    def __len__(self) -> int:
        return self.num_frames.shape[0]

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.pool.shutdown(wait=False)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def nbytes(self) -> int:
        return int(self.num_frames.sum()) * self.row_bytes

    def _read(self, buffer: np.ndarray, positions: list[int]) -> None:
        for row, position in zip(buffer, positions):
            done = os.preadv(self.fd, [row], position)
            if done != row.nbytes:  # regular files return whole reads; anything else is a truncated store
                raise OSError(f"short read of {self.path} at byte {position}: the store is damaged, delete it.")

    def crops(self, starts: torch.Tensor, crop_frames: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, F, crop_frames)` crops at absolute rows `starts` `(B,)`, read into `out` (`(B * crop_frames, F)`,
        pinned memory, say) or a new tensor."""
        count = starts.shape[0]
        if out is None:
            out = torch.empty((count * crop_frames, self.num_mel_bins), dtype=self.dtype)
        buffer = out.view(torch.uint8).numpy().reshape(count, crop_frames * self.row_bytes)
        positions = (starts.long() * self.row_bytes).tolist()
        share = -(-count // self.threads)
        jobs = [
            self.pool.submit(self._read, buffer[i : i + share], positions[i : i + share])
            for i in range(0, count, share)
        ]
        for job in jobs:
            job.result()
        return out.view(count, crop_frames, self.num_mel_bins).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------
# The on-disk store and the resident / out-of-core decision


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
        self.directory = directory


def iter_stored_spectrograms(dataset, chunk_size: int = 256):
    """The stored `(frames, num_mel_bins)` arrays of a spectrogram dataset, in order, `chunk_size` rows at a time."""
    numpy_view = dataset.with_format("numpy", columns=["spectrogram"])
    for start in range(0, len(dataset), chunk_size):
        yield from numpy_view[start : start + chunk_size]["spectrogram"]


def stored_to_tensor(array: np.ndarray, bfloat16: bool) -> torch.Tensor:
    """A stored `(T, F)` array as a `(T, F)` tensor: float32, or bfloat16 when the array holds its uint16 bits."""
    if bfloat16:
        return torch.from_numpy(np.require(array, np.uint16, ["C", "W"]).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.require(array, np.float32, ["C", "W"]))


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

    def bank(self, device, resident: bool) -> "SpectrogramBank | DiskSpectrogramBank":
        """A resident bank on `device` (the file read once, 64 MiB at a time, its checksum checked on the way), or
        an out-of-core bank that reads each crop from the file (size checked; `StoreVerifier` checks the checksum)."""
        self.check_size()
        if not resident:
            return DiskSpectrogramBank(self.frames_path, self.num_frames, self.num_mel_bins, self.dtype)
        frames = torch.empty((self.total_frames, self.num_mel_bins), dtype=self.dtype, device=device)
        host_dtype = np.int16 if frames.element_size() == 2 else np.float32
        step = max(1, CHECKSUM_BLOCK_BYTES // self.row_bytes)
        checksum = new_checksum()
        with open(self.frames_path, "rb") as f:
            for row in range(0, self.total_frames, step):
                rows = min(step, self.total_frames - row)
                bits = np.fromfile(f, dtype=host_dtype, count=rows * self.num_mel_bins)
                if bits.size != rows * self.num_mel_bins:  # changed since the size check
                    raise DamagedStoreError(self.directory, "frames.bin ended early while it was read")
                checksum.update(bits)
                chunk = torch.from_numpy(bits).view(self.dtype).view(rows, self.num_mel_bins)
                frames[row : row + rows] = chunk.to(device)
            if f.read(1):
                raise DamagedStoreError(self.directory, "frames.bin grew while it was read")
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
        partial = directory + ".tmp"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        rows = 0
        checksum = new_checksum()
        try:
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
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if rows != int(num_frames.sum()):
            shutil.rmtree(partial, ignore_errors=True)
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
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(partial, directory)
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


# ---------------------------------------------------------------------------------------------------------------
# Streamed sets, which have no store


class StreamingSpectrograms:
    """Batches of two-view crops from a streamed (`IterableDataset`) spectrogram set.

    Each batch of clips is laid side by side in a small `SpectrogramBank` on the device and cropped with its
    vectorised gather. Bad clips (rows with a `skip_reason`) are skipped and counted in
    `skipped` as they come. The stream's position is saved with checkpoints through `state_dict` (the shuffle
    buffer's content is not, so a resumed stream continues with fresh data).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        device,
        storage_dtype: str = "float32",
        shuffle_buffer_size: int = 1000,
        seed: int = 0,
        skipped: SkipReport | None = None,
    ):
        self.skipped = skipped if skipped is not None else SkipReport()
        self.bfloat16 = storage_dtype == "bfloat16"
        self.dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size) if shuffle_buffer_size else dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.epoch = 0
        self._iterator = None
        self.last_view_shift = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.dataset.load_state_dict(state["dataset"])
        self._iterator = None

    def _rows(self):
        while True:
            self.dataset.set_epoch(self.epoch)
            for row in self.dataset:
                if row["skip_reason"]:
                    if self.epoch == 0:  # count each bad clip once
                        self.skipped.add(row["skip_reason"], row["id"])
                    continue
                yield row
            self.epoch += 1

    def next_batch(self, crop_frames: int, generator: torch.Generator, max_distance: int | None = None):
        """`(view1, view2, index)`: two `(B, F, crop_frames)` views and each clip's stable `index` (`(B,)`, or
        `None` when the stream has no `index` column), crop starts drawn with the CPU `generator`."""
        if self._iterator is None:
            self._iterator = self._rows()
        rows = [next(self._iterator) for _ in range(self.batch_size)]
        spectrograms = [stored_to_tensor(r["spectrogram"], self.bfloat16) for r in rows]
        index = torch.tensor([-1 if r.get("index") is None else r["index"] for r in rows])
        frames = torch.cat(spectrograms)
        if not torch.isfinite(frames.sum(dtype=torch.float32)):  # on the host, before the device: no sync
            bad = next(i for i, s in enumerate(spectrograms) if not torch.isfinite(s.float()).all())
            raise NonFiniteCropError(
                f"clip {rows[bad]['id']!r} (index {int(index[bad])} of the stream) has NaN or inf values in its "
                "spectrogram: training stopped before they reach the loss. Its audio is corrupt: remove it from the "
                "source and resume."
            )
        # This batch's clips side by side, cropped by the same gather as a resident bank.
        batch = SpectrogramBank(frames.to(self.device), torch.tensor([s.shape[0] for s in spectrograms]))
        view1, view2, first, second = batch.crop_pair(
            torch.arange(len(rows)), crop_frames, generator, max_distance, return_starts=True
        )
        self.last_view_shift = second - first  # (B,) for masking policies that pair the views' audio
        return view1, view2, (index if bool((index >= 0).all()) else None)


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
