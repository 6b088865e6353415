"""The embedding store: a folder of sharded Parquet files, one row per track, that a killed run resumes.

    store/
      data/part-r000-<id>.parquet   one row per track: path, size, mtime_ns, content_hash, duration, num_chunks,
                                    model, model_fingerprint, settings, settings_key, embedded_at, embedding
                                    (+ timeline, start_times when asked for)
      .myna/store.json              format version and the settings of the last run
      .myna/errors-r000-<id>.jsonl  unreadable files: path, size, mtime_ns, settings_key, error (the reason)

`datasets.load_dataset("parquet", data_dir="store")` opens the rows (files and folders whose names start with a
dot are not data for `datasets`). Shards are written whole and renamed into place, so a killed run leaves only
complete shards; the next run reads their `(path, size, mtime_ns, settings_key)` and skips what is already done.
A file is re-embedded when its size or modification time changed and its content hash did too; the newer row
supersedes the older one (`embedded_at`), and `compact()` rewrites the shards that hold superseded rows, so the store
keeps one row per path. A store holds the embeddings of one model with one set of settings (`.myna/store.json`,
written when the first run starts): one Parquet schema, one vector space to search.
"""

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from myna_common.atomic import atomic_path, write_json, write_text


STORE_FORMAT = 1
DATA_DIR = "data"
META_DIR = ".myna"
# Columns read to decide what is done; the embeddings themselves are not read for that.
KEY_COLUMNS = ["path", "size", "mtime_ns", "content_hash", "settings_key", "embedded_at"]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("the embedding store needs pyarrow: pip install pyarrow (or myna-hf[search]).") from None
    return pa, pq


def content_hash(path: str, block_size: int = 1 << 20) -> str:
    """BLAKE2b (128-bit) of a file's bytes: what identifies its content, whatever its name or timestamps."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def settings_key(model_fingerprint: str, settings: dict[str, Any]) -> str:
    """A short hash of the model's weights and the embedding settings: rows with equal keys are interchangeable."""
    text = json.dumps({"model": model_fingerprint, **settings}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class DamagedStoreError(ValueError):
    """A store file that cannot be read; the message names it and the two ways on (`--repair`, `--overwrite`)."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]


def read_shard(path: str, columns: list[str] | None = None):
    """One shard as a `pyarrow.Table`; a `DamagedStoreError` naming the shard when it cannot be read."""
    _, pq = _pyarrow()
    try:
        return pq.read_table(path, columns=columns)
    except Exception as error:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError, ... for damaged files)
        store = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        raise DamagedStoreError(
            f"the store's shard {path} is damaged ({_first_line(error)}). Continue the store with `myna embed ... "
            f"--output {store} --repair` (drops that shard and embeds its files again), or start it again with "
            "--overwrite.",
            path,
        ) from None


@dataclass
class FileState:
    """What the store knows about one path: enough to tell whether it must be embedded again."""

    size: int
    mtime_ns: int
    content_hash: str
    settings_key: str
    embedded_at: float


class EmbeddingStore:
    """A store folder (created on first write). Safe to share between the processes of one distributed run: each
    writes its own shards; only `compact()` (run by one process at the end) removes files."""

    def __init__(self, path: str):
        self.path = path
        self.data_dir = os.path.join(path, DATA_DIR)
        self.meta_dir = os.path.join(path, META_DIR)

    # ------------------------------------------------------------------------------------------------ reading

    def exists(self) -> bool:
        return os.path.isdir(self.data_dir)

    @staticmethod
    def is_store(path: str) -> bool:
        """Whether the folder `path` holds a store (its `.myna/store.json` or `data/*.parquet`)."""
        store = EmbeddingStore(path)
        return os.path.isfile(os.path.join(store.meta_dir, "store.json")) or bool(store.shard_files())

    def clear(self) -> list[str]:
        """Removes the store's own folders (`data/`, `.myna/`), for `--overwrite`; anything else stays."""
        import shutil

        removed = []
        for folder in (self.data_dir, self.meta_dir):
            if os.path.isdir(folder):
                shutil.rmtree(folder)
                removed.append(folder)
        return removed

    def shard_files(self) -> list[str]:
        if not os.path.isdir(self.data_dir):
            return []
        names = sorted(n for n in os.listdir(self.data_dir) if n.endswith(".parquet"))
        return [os.path.join(self.data_dir, n) for n in names]

    def read_table(self, columns: list[str] | None = None, latest: bool = True):
        """All rows as one `pyarrow.Table` (only `columns` when given); with `latest`, one row per path, the newest."""
        pa, pq = _pyarrow()
        shards = self.shard_files()
        if not shards:
            raise FileNotFoundError(f"{self.path} holds no embeddings (no {DATA_DIR}/*.parquet): run `myna embed`.")
        wanted = None if columns is None else sorted(set(columns) | {"path", "embedded_at"})
        table = pa.concat_tables([read_shard(s, columns=wanted) for s in shards], promote_options="default")
        if latest:
            table = table.take(self._latest_rows(table))
        if columns is not None:
            table = table.select(columns)
        return table

    @staticmethod
    def _latest_rows(table) -> np.ndarray:
        """Row indices keeping, for every path, its newest row; in path order."""
        paths = np.asarray(table["path"].to_pylist(), dtype=object)
        times = table["embedded_at"].to_numpy()
        order = np.lexsort((-times, paths))  # by path, newest first
        first = np.ones(len(order), dtype=bool)
        first[1:] = paths[order][1:] != paths[order][:-1]
        return order[first]

    def file_states(self) -> dict[str, FileState]:
        """The newest row's state of every path in the store."""
        if not self.shard_files():
            return {}
        table = self.read_table(KEY_COLUMNS)
        columns = {name: table[name].to_pylist() for name in KEY_COLUMNS}
        return {
            path: FileState(*(columns[name][i] for name in KEY_COLUMNS[1:]))
            for i, path in enumerate(columns["path"])
        }

    def errors(self) -> dict[str, dict[str, Any]]:
        """Unreadable files, newest report per path, minus those embedded since: `{path: record}`."""
        records: dict[str, dict[str, Any]] = {}
        if os.path.isdir(self.meta_dir):
            for name in sorted(os.listdir(self.meta_dir)):
                if name.startswith("errors-") and name.endswith(".jsonl"):
                    with open(os.path.join(self.meta_dir, name)) as f:
                        for line in f:
                            try:
                                record = json.loads(line)
                            except ValueError:  # a damaged line: that file is tried again, nothing is lost
                                continue
                            if record["path"] not in records or records[record["path"]]["time"] <= record["time"]:
                                records[record["path"]] = record
        if records and self.shard_files():
            embedded = self.file_states()
            records = {
                p: r for p, r in records.items() if p not in embedded or embedded[p].embedded_at < r["time"]
            }
        return records

    def metadata(self) -> dict[str, Any]:
        path = os.path.join(self.meta_dir, "store.json")
        if not os.path.exists(path):
            return {}
        try:
            with open(path) as f:
                return json.load(f)
        except ValueError as error:
            raise DamagedStoreError(
                f"the store's settings file {path} is damaged (not valid JSON: {_first_line(error)}). Continue the "
                f"store with `myna embed ... --output {self.path} --repair` (writes it again from the run's "
                "settings), or start it again with --overwrite.",
                path,
            ) from None

    def repair(self) -> list[str]:
        """Moves every shard that cannot be read whole, and a damaged settings file, to `.myna/damaged/`; their
        files are then missing from the store, so the next run embeds them again. Returns what was moved."""
        moved = []
        candidates = [(s, None) for s in self.shard_files()]
        candidates.append((os.path.join(self.meta_dir, "store.json"), "json"))
        for path, kind in candidates:
            if not os.path.exists(path):
                continue
            try:
                if kind == "json":
                    self.metadata()
                else:
                    read_shard(path)
            except DamagedStoreError:
                damaged = os.path.join(self.meta_dir, "damaged")
                os.makedirs(damaged, exist_ok=True)
                os.replace(path, os.path.join(damaged, os.path.basename(path)))
                moved.append(path)
        return moved

    def embeddings(self, patch_mode: str | None = None) -> tuple[list[str], np.ndarray, dict[str, Any]]:
        """`(paths, (tracks, D) float32 embeddings, settings)` of the newest row per path.

        `patch_mode` selects the square or vertical half of a store embedded with `"both"` (a hybrid model).
        """
        table = self.read_table(["path", "embedding", "settings", "model", "model_fingerprint"])
        settings = json.loads(table["settings"][0].as_py())
        keys = set(table["settings"].to_pylist())
        if len(keys) > 1 or len(set(table["model_fingerprint"].to_pylist())) > 1:
            raise ValueError(
                f"{self.path} mixes rows of several models or settings; re-run `myna embed` with one of them to "
                "bring every row up to date."
            )
        vectors = table["embedding"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
        settings["model"] = table["model"][0].as_py()
        settings["model_fingerprint"] = table["model_fingerprint"][0].as_py()
        return table["path"].to_pylist(), select_patch_mode(vectors, settings, patch_mode), settings

    def timelines(self, paths: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`{path: ((chunks, D) embeddings, (chunks,) start seconds)}` for stores embedded with timelines."""
        wanted = set(paths)
        table = self.read_table(["path", "timeline", "start_times"])
        out = {}
        for i, path in enumerate(table["path"].to_pylist()):
            if path in wanted:
                # flatten(), not .values: .values ignores the slice's offset
                timeline = table["timeline"][i].values.flatten().to_numpy()
                starts = np.asarray(table["start_times"][i].as_py(), dtype=np.float32)
                out[path] = (timeline.reshape(len(starts), -1), starts)
        return out

    # ------------------------------------------------------------------------------------------------ writing

    def write_metadata(self, settings: dict[str, Any]) -> None:
        record = {"format": STORE_FORMAT, "updated": time.time(), **settings}
        write_json(os.path.join(self.meta_dir, "store.json"), record, indent=2)

    def write_shard(self, rows: list[dict[str, Any]], rank: int = 0) -> str:
        """Writes `rows` as one new shard, atomically; returns its path."""
        pa, pq = _pyarrow()
        os.makedirs(self.data_dir, exist_ok=True)
        path = os.path.join(self.data_dir, f"part-r{rank:03d}-{time.time_ns():x}-{uuid.uuid4().hex[:6]}.parquet")
        with atomic_path(path) as partial:
            pq.write_table(rows_to_table(rows), partial)
        return path

    def write_errors(self, records: list[dict[str, Any]], rank: int = 0) -> None:
        if not records:
            return
        path = os.path.join(self.meta_dir, f"errors-r{rank:03d}-{time.time_ns():x}-{uuid.uuid4().hex[:6]}.jsonl")
        write_text(path, "".join(json.dumps(r) + "\n" for r in records))

    def compact(self, min_rows: int = 1024) -> int:
        """Drops superseded rows (an older row of a path) and merges small shards; returns the rows dropped.

        Shards with nothing superseded and at least `min_rows` rows are left alone. The merged shard is renamed
        into place before the old ones are removed: a kill in between leaves duplicates, which the next
        `compact()` (and every reader) resolves by `embedded_at`.
        """
        pa, pq = _pyarrow()
        shards = self.shard_files()
        if not shards:
            return 0
        keys = [read_shard(s, columns=["path", "embedded_at"]) for s in shards]
        table = pa.concat_tables(keys)
        keep = np.zeros(len(table), dtype=bool)
        keep[self._latest_rows(table)] = True
        bounds = np.cumsum([0] + [len(k) for k in keys])
        rewrite = [
            i for i, s in enumerate(shards)
            if not keep[bounds[i] : bounds[i + 1]].all() or bounds[i + 1] - bounds[i] < min_rows
        ]
        dropped = int((~keep).sum())
        if len(rewrite) < 2 and not dropped:
            return 0
        parts = []
        for i in rewrite:
            shard = read_shard(shards[i])
            parts.append(shard.filter(pa.array(keep[bounds[i] : bounds[i + 1]])))
        parts = [part for part in parts if len(part)]
        if parts:
            merged = pa.concat_tables(parts, promote_options="default")
            path = os.path.join(self.data_dir, f"part-merged-{time.time_ns():x}-{uuid.uuid4().hex[:6]}.parquet")
            with atomic_path(path) as partial:
                pq.write_table(merged, partial)
        for i in rewrite:
            os.remove(shards[i])
        return dropped


def rows_to_table(rows: list[dict[str, Any]]):
    """Store rows (dicts with NumPy embeddings) as a `pyarrow.Table` with fixed-size-list embedding columns."""
    pa, _ = _pyarrow()
    scalar_types = {
        "path": pa.string(), "size": pa.int64(), "mtime_ns": pa.int64(), "content_hash": pa.string(),
        "duration": pa.float64(), "num_chunks": pa.int32(), "model": pa.string(), "model_fingerprint": pa.string(),
        "settings": pa.string(), "settings_key": pa.string(), "embedded_at": pa.float64(),
    }  # fmt: skip
    columns = {name: pa.array([r[name] for r in rows], type=kind) for name, kind in scalar_types.items()}
    embeddings = np.stack([r["embedding"] for r in rows]).astype(np.float32)
    width = embeddings.shape[1]
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), width)
    if "timeline" in rows[0]:
        # (tracks,) lists of (chunks,) lists of D floats: one row per track, its chunks inside.
        chunks = np.concatenate([r["timeline"] for r in rows]).astype(np.float32)
        per_chunk = pa.FixedSizeListArray.from_arrays(pa.array(chunks.reshape(-1)), width)
        offsets = np.cumsum([0] + [len(r["timeline"]) for r in rows]).astype(np.int32)
        columns["timeline"] = pa.ListArray.from_arrays(pa.array(offsets), per_chunk)
        starts = np.concatenate([r["start_times"] for r in rows]).astype(np.float32)
        columns["start_times"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(starts))
    return pa.table(columns)


def select_patch_mode(vectors: np.ndarray, settings: dict[str, Any], patch_mode: str | None) -> np.ndarray:
    """The columns of `vectors` (embedded with `settings["patch_mode"]`) that make up `patch_mode`'s embedding."""
    stored = settings["patch_mode"]
    if patch_mode is None or patch_mode == stored:
        return vectors
    if stored == "both" and patch_mode in ("square", "vertical"):
        half = vectors.shape[1] // 2
        return vectors[:, :half] if patch_mode == "square" else vectors[:, half:]
    raise ValueError(
        f"the store holds {stored!r} embeddings; patch_mode={patch_mode!r} is not in them. Embed with "
        "--patch_mode both (a hybrid model) to choose square or vertical later."
    )


__all__ = [
    "DamagedStoreError",
    "EmbeddingStore",
    "FileState",
    "content_hash",
    "read_shard",
    "rows_to_table",
    "select_patch_mode",
    "settings_key",
]
