"""The app's cache on disk, `INDEX/app/`: what opening a library computes once from its index and store, kept for the
next start. The unit track vectors, the map's layout and the store's per-chunk timelines (one memory-mapped array,
so that a result's timeline is a slice, not a Parquet read), and `cache.json`, the key they were computed for.

The key is the index's settings, its paths file and the store's shard files (`store_signature`): a changed store
or index empties the folder and writes it again. A folder that cannot be written is no error: everything is then
computed in memory at every start. Every file is written under a unique temporary name and renamed
(`myna_common.atomic`), so two apps opening one index never read half an array.
"""

import hashlib
import json
import os
from typing import Any

import numpy as np

from myna_common.atomic import atomic_path, write_json

from .search import normalize
from .store import DATA_DIR, EmbeddingStore, select_patch_mode


CACHE_FORMAT = 1
CACHE_DIR = "app"  # inside the index folder
RECORD_FILE = "cache.json"


def store_signature(store: str) -> str:
    """A hash of the store's shard files (names and sizes): what changes when the store does. Every write makes a
    shard of a new name, so modification times are not needed, and a store copied elsewhere (a Space) keeps its
    signature and the caches built for it."""
    data = os.path.join(store, DATA_DIR)
    names = sorted(n for n in os.listdir(data) if n.endswith(".parquet")) if os.path.isdir(data) else []
    entries = [[name, os.path.getsize(os.path.join(data, name))] for name in names]
    return hashlib.blake2b(json.dumps(entries).encode(), digest_size=12).hexdigest()


def cache_key(info: dict[str, Any], signature: str, paths_file: str) -> str:
    """What the cached arrays were computed from: the index's settings and paths, and the store's signature."""
    return hashlib.blake2b(
        json.dumps([info, signature, _file_digest(paths_file)], sort_keys=True).encode(), digest_size=12
    ).hexdigest()


def read_record(folder: str) -> dict[str, Any]:
    """The folder's `cache.json` ({} when missing or unreadable)."""
    return _read_json(os.path.join(folder, RECORD_FILE))


def open_cache(folder: str, key: str, signature: str) -> tuple[dict[str, Any], bool]:
    """`(record, writable)` of the cache folder for `key`: arrays of another key or format are removed first."""
    writable = _writable(folder)
    record = read_record(folder)
    if record.get("key") != key or record.get("format") != CACHE_FORMAT:
        record = {"format": CACHE_FORMAT, "key": key, "store": signature}
        if writable:
            for name in os.listdir(folder):
                if name.endswith(".npy"):
                    os.remove(os.path.join(folder, name))
    return record, writable


def save_record(folder: str, record: dict[str, Any]) -> None:
    write_json(os.path.join(folder, RECORD_FILE), record, indent=None)


def cached(folder: str, name: str, writable: bool, compute) -> np.ndarray:
    """The array `folder/name`, or `compute()` (saved there when `writable`)."""
    path = os.path.join(folder, name)
    if os.path.exists(path):
        return np.load(path)
    value = compute()
    if writable:
        with atomic_path(path, suffix=".npy") as partial:  # np.save appends .npy to a name without it
            np.save(partial, value)
    return value


def timelines(store, info, ids, offsets, folder: str, writable: bool) -> tuple[np.ndarray, np.ndarray]:
    """`((all chunks, D) unit vectors, (all chunks,) start seconds)` of every indexed track, back to back in track
    order: read from the cache (memory-mapped), or from the store and written there when `writable`."""
    chunks_file, starts_file = os.path.join(folder, "chunks.npy"), os.path.join(folder, "chunk_starts.npy")
    if writable and os.path.exists(starts_file) and os.path.exists(chunks_file):
        return np.load(chunks_file, mmap_mode="r"), np.load(starts_file)
    shape = (int(offsets[-1]), int(info["dim"]))
    if not writable:
        chunks = np.zeros(shape, np.float32)
        return chunks, _read_timelines(store, info, ids, offsets, chunks)
    with atomic_path(chunks_file, suffix=".npy") as partial:  # written one shard at a time, never held whole
        chunks = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
        starts = _read_timelines(store, info, ids, offsets, chunks)
        chunks.flush()
        del chunks
    with atomic_path(starts_file, suffix=".npy") as partial:
        np.save(partial, starts)
    return np.load(chunks_file, mmap_mode="r"), starts


# ------------------------------------------------------------------------------------------------ from the store


def track_vectors(store: EmbeddingStore, info: dict[str, Any], ids: dict[str, int]) -> np.ndarray:
    """`(tracks, D)` unit track embeddings (the index's patch mode), in the index's order."""
    table = store.read_table(["path", "embedding", "settings"])
    settings = json.loads(table["settings"][0].as_py())
    vectors = table["embedding"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    vectors = normalize(select_patch_mode(vectors, settings, info["patch_mode"]))
    out = np.zeros((len(ids), vectors.shape[1]), np.float32)
    for row, path in enumerate(table["path"].to_pylist()):
        if path in ids:
            out[ids[path]] = vectors[row]
    return out


def chunk_offsets(store: EmbeddingStore, ids: dict[str, int]) -> np.ndarray:
    """`(tracks + 1,)`: track `i`'s chunks are rows `offsets[i]:offsets[i + 1]` of the timelines."""
    counts = np.zeros(len(ids), np.int64)
    for rows in _latest_rows_by_shard(store, ids).values():
        for _, track, n in rows:
            counts[track] = n
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _latest_rows_by_shard(store: EmbeddingStore, ids: dict[str, int]) -> dict[str, list[tuple[int, int, int]]]:
    """`{shard: [(row in shard, track id, chunks)]}` of the newest row of each indexed path."""
    _, pq = _pyarrow()
    newest: dict[str, tuple[float, str, int, int]] = {}
    for shard in store.shard_files():
        table = pq.read_table(shard, columns=["path", "embedded_at", "num_chunks"])
        for row, (path, at, n) in enumerate(
            zip(table["path"].to_pylist(), table["embedded_at"].to_pylist(), table["num_chunks"].to_pylist())
        ):
            if path in ids and (path not in newest or newest[path][0] < at):
                newest[path] = (at, shard, row, n)
    by_shard: dict[str, list[tuple[int, int, int]]] = {}
    for path, (_, shard, row, n) in newest.items():
        by_shard.setdefault(shard, []).append((row, ids[path], n))
    return by_shard


def _read_timelines(store, info, ids, offsets, chunks: np.ndarray) -> np.ndarray:
    """Fills `chunks` (an array or a memory map) with every indexed track's chunk embeddings, one shard at a time;
    returns their start seconds."""
    _, pq = _pyarrow()
    settings = info["store_settings"]
    starts = np.zeros(len(chunks), np.float32)
    for shard, rows in _latest_rows_by_shard(store, ids).items():
        table = pq.read_table(shard, columns=["timeline", "start_times"])
        for row, track, _ in rows:
            a, b = int(offsets[track]), int(offsets[track + 1])
            if b == a:
                continue
            # flatten(), not .values: .values ignores the slice's offset
            timeline = table["timeline"][row].values.flatten().to_numpy().reshape(b - a, -1)
            chunks[a:b] = normalize(select_patch_mode(timeline, settings, info["patch_mode"]))
            starts[a:b] = np.asarray(table["start_times"][row].as_py(), dtype=np.float32)
    return starts


# ------------------------------------------------------------------------------------------------ files


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _file_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _pyarrow():
    from .store import _pyarrow as load

    return load()


__all__ = [
    "CACHE_DIR", "CACHE_FORMAT", "cache_key", "cached", "chunk_offsets", "open_cache", "read_record", "save_record",
    "store_signature", "timelines", "track_vectors",
]  # fmt: skip
