"""What `myna app` shows, as data: a store and its index opened for browsing (the app's page is `app.py`).

    >>> from myna_pipelines.explore import LibraryExplorer
    >>> library = LibraryExplorer.open(index="index/")            # or store="store/": the index is built on the way
    >>> found = library.search_clip("query.flac", k=5)            # nearest tracks, best 3 s and per-chunk timelines
    >>> found.results[0]["path"], found.results[0]["segment_start"]
    >>> library.layout                                            # (tracks, 2): the map (UMAP if installed, else PCA)
    >>> library.self_similarity(0)                                # (chunks, chunks) cosine of a track's 3 s chunks

Here: opening (the index, built from the store when needed; the store checked against it), the query model, the
tracks. The rest is in one module a subject, each called from here: `explore_cache` (what opening writes once
beside the index, in `INDEX/app/`: unit track vectors, the map's layout, the timelines as one memory-mapped array,
keyed by the index and the store's shards), `explore_map` (the layout and the metadata colours), `explore_search`
(search by a clip or a track), `explore_segments` (the players' WAV segments), `explore_types` (what they share).
Their public names are importable from here as well. Everything a user can get wrong (a file that is not audio,
a clip shorter than one chunk, a store of another model, an empty store) is a `LibraryError` whose message is
written for the page; the library stays usable. Needs the `search` extra (FAISS, pyarrow); the map needs
scikit-learn (PCA) or umap-learn.
"""

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import explore_cache as cache_files
from .explore_cache import CACHE_DIR, CACHE_FORMAT, store_signature  # noqa: F401  (re-exported: their first home)
from .explore_map import (  # noqa: F401  (re-exported: their first home)
    LAYOUTS,
    MAX_CATEGORIES,
    METADATA_FILE,
    PATH_COLUMNS,
    UMAP_MIN_TRACKS,
    common_root,
    compute_layout,
    default_colour,
    layout_method,
    metadata_columns,
)
from .explore_search import search_clip, search_track
from .explore_segments import SegmentClips
from .explore_types import Column, LibraryError, SearchResult
from .search import MynaIndex, build_index
from .store import META_DIR, EmbeddingStore


STORE_INDEX = os.path.join(META_DIR, "index")  # where `--store` keeps the index it builds
# How long a search by a clip waits for the query model the app loads after serving its page: torch, transformers
# and a Myna-Base's weights load in seconds, or a minute on a busy machine; past this the page says so.
QUERY_MODEL_WAIT_SECONDS = 120.0


@dataclass
class LibraryExplorer:
    """A store and its index, opened for the app: search by example or by track, the map, timelines."""

    index: MynaIndex | None
    store: str
    paths: list[str]
    vectors: np.ndarray  # (tracks, D) unit vectors in the index's order
    durations: np.ndarray
    layout: np.ndarray  # (tracks, 2)
    layout_method: str
    chunks: np.ndarray | None = None  # (all chunks, D) unit vectors, tracks back to back; None without timelines
    chunk_offsets: np.ndarray | None = None  # (tracks + 1,)
    chunk_starts: np.ndarray | None = None  # (all chunks,) seconds
    columns: dict[str, Column] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # shown on the page: what does not work, and what to do
    query_problem: str | None = None  # why searching by a clip is off (no model, another model), if it is
    audio_root: str | None = None
    model_name: str | None = None
    device: str = "cpu"
    clip_seconds: float = 10.0
    opened_in: float = 0.0
    _names: list[str] = field(default_factory=list, repr=False)
    _ids: dict[str, int] = field(default_factory=dict, repr=False)
    _segments: SegmentClips = field(default_factory=SegmentClips, repr=False)
    _model: str | None = field(default=None, repr=False)  # what `index.model` was given (its cache key)
    _model_ready: threading.Event = field(default_factory=lambda: _set_event(), repr=False)
    _path_ids: dict[str, int] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        index: str | None = None,
        store: str | None = None,
        model: str | None = None,
        metadata: list[str] | tuple[str, ...] = (),
        audio_root: str | None = None,
        layout: str = "auto",
        patch_mode: str | None = None,
        device: str = "cpu",
        load_query_model: bool = True,
        clip_seconds: float = 10.0,
    ) -> "LibraryExplorer":
        """Opens `index` (its store is the one it was built from, or `store`), or `store` alone: its index is built
        in `store/.myna/index` when missing or older than the store. Missing folders raise `FileNotFoundError`;
        an empty store, another model's store or a store without timelines open with `problems` to show."""
        started = time.perf_counter()
        if index is None and store is None:
            raise ValueError("give an index folder (`myna index` writes one) or a store folder (`myna embed`).")
        problems: list[str] = []
        built_here = index is None
        if index is None:
            index = os.path.join(store, STORE_INDEX)
        has_index = os.path.exists(os.path.join(index, "index.json"))
        if not has_index and store is None:
            raise FileNotFoundError(
                f"{index} is not a Myna index (no index.json): build one with `myna index STORE --output {index}`, "
                "or start the app with --store STORE."
            )
        loaded = MynaIndex.load(index) if has_index else None
        store = store or loaded.info["store"]
        if not os.path.isdir(store):
            raise FileNotFoundError(
                f"the store {store} does not exist"
                + (f" (the index {index} was built from it; pass --store where it is now)" if loaded else "")
                + ": write one with `myna embed MUSIC --model MODEL --output STORE --timeline`."
            )
        signature = store_signature(store)
        if not EmbeddingStore(store).shard_files():
            problems.append(
                f"The store `{store}` holds no embeddings yet. Fill it, then start the app again: `myna embed MUSIC/ "
                f"--model MODEL --output {store} --timeline`."
            )
            library = cls.empty(store, problems, audio_root)
            library.opened_in = time.perf_counter() - started
            return library
        cache = os.path.join(index, CACHE_DIR)
        if loaded is None or (built_here and cache_files.read_record(cache).get("store") != signature):
            try:
                loaded = build_index(store, index, patch_mode)  # missing, or the store changed since
            except ValueError as error:  # e.g. a store mixing models
                problems.append(f"The store `{store}` cannot be indexed: {error}")
                library = cls.empty(store, problems, audio_root)
                library.opened_in = time.perf_counter() - started
                return library
        library = cls._from_index(loaded, store, signature, cache, layout, problems, audio_root)
        library.columns = metadata_columns(
            library.paths, library.names, library.durations, audio_root, list(metadata), library.problems
        )
        library.clip_seconds, library.device = clip_seconds, device
        if load_query_model:
            library.load_query_model(model)
        library.opened_in = time.perf_counter() - started
        return library

    @classmethod
    def empty(cls, store: str, problems: list[str], audio_root: str | None = None) -> "LibraryExplorer":
        return cls(
            None, store, [], np.zeros((0, 1), np.float32), np.zeros(0), np.zeros((0, 2), np.float32), "pca",
            problems=problems, query_problem=problems[0] if problems else "the library is empty.",
            audio_root=audio_root,
        )  # fmt: skip

    @classmethod
    def _from_index(cls, index, store, signature, cache, layout, problems, audio_root) -> "LibraryExplorer":
        info = index.info
        key = cache_files.cache_key(info, signature, os.path.join(index.folder, "paths.json"))
        record, writable = cache_files.open_cache(cache, key, signature)
        paths = index.paths
        ids = {path: i for i, path in enumerate(paths)}
        store_reader = EmbeddingStore(store)
        settings_problem = _check_store_model(store_reader, info)
        if settings_problem:
            problems.append(settings_problem)

        vectors = cache_files.cached(
            cache, "vectors.npy", writable, lambda: cache_files.track_vectors(store_reader, info, ids)
        )
        table = store_reader.read_table(["path", "duration"])
        durations = np.full(len(paths), np.nan)
        stored = table["path"].to_pylist()
        for path, duration in zip(stored, table["duration"].to_pylist()):
            if path in ids:
                durations[ids[path]] = duration
        missing, extra = len(set(paths) - set(stored)), len(set(stored) - set(paths))
        if missing or extra:
            problems.append(
                f"The index and its store differ ({missing} tracks of the index are not in the store, {extra} of the "
                f"store not in the index): rebuild the index, `myna index {store} --output {index.folder} "
                "--overwrite`, or start the app with --store alone."
            )

        method = layout_method(layout, len(paths))
        points = cache_files.cached(cache, f"layout-{method}.npy", writable, lambda: compute_layout(vectors, method))

        library = cls(index, store, paths, vectors, durations, points, method, problems=problems)
        library.audio_root = audio_root
        if info.get("segments"):
            offsets = cache_files.cached(
                cache, "chunk_offsets.npy", writable, lambda: cache_files.chunk_offsets(store_reader, ids)
            )
            chunks, starts = cache_files.timelines(store_reader, info, ids, offsets, cache, writable)
            library.chunks, library.chunk_offsets, library.chunk_starts = chunks, offsets, starts
        else:
            problems.append(
                "This store has no per-chunk timelines, so results have no best-matching 3 s and no timeline. To add "
                f"them, embed again with timelines: `myna embed MUSIC/ --model {info['model']} --output {store} "
                "--timeline --overwrite`, then start the app again."
            )
        if writable:
            cache_files.save_record(cache, record)
        if not writable:
            problems.append(f"`{cache}` is not writable: the map and timelines are computed at every start.")
        return library

    def load_query_model(self, model: str | None = None, background: bool = False) -> None:
        """Loads the model that embeds queries (default: the index's); another model's weights, or any failure to
        load, turn clip search off with `query_problem` saying why. `background`: in a thread, so that the page is
        served meanwhile (a search waits for it: `wait_for_model`). Searches waiting are released in every case,
        an empty library's at once (its `query_problem` was written on opening)."""
        if self.index is None:
            self._model_ready.set()
            return
        self.model_name, self._model = model or self.index.info["model"], model
        self._model_ready.clear()
        if background:
            threading.Thread(target=self._load_query_model, name="myna-model", daemon=True).start()
        else:
            self._load_query_model()

    def expect_query_model(self) -> None:
        """Searches by a clip wait from now on until `load_query_model` has run (the app serves its page first)."""
        self._model_ready.clear()

    def wait_for_model(self, timeout: float | None = None) -> None:
        """Returns once the query model is loaded (or failed to: `query_problem`), if a load is expected; raises
        `LibraryError` when it is still loading after `timeout` seconds (`QUERY_MODEL_WAIT_SECONDS`)."""
        timeout = QUERY_MODEL_WAIT_SECONDS if timeout is None else timeout
        if not self._model_ready.wait(timeout):
            raise LibraryError(
                f"The model that embeds clips is still loading after {timeout:.0f} s: search again in a moment (a "
                "search from a track of the library answers meanwhile)."
            )

    def query_model(self):
        """`(inference model, feature extractor)` that embed queries (loaded once; `load_query_model`)."""
        return self.index.model(self._model, self.device)

    def close(self) -> None:
        """Removes the players' segment WAVs (`clips_folder`); the library stays usable and writes anew if asked."""
        self._segments.close()

    def _load_query_model(self) -> None:
        try:
            self._try_loading_query_model()
        except Exception as error:  # noqa: BLE001  (a broken install, a corrupt file: the rest of the page answers)
            self._query_model_failed(
                f"Search by a clip is off: loading the model `{self.model_name}` failed ({type(error).__name__}: "
                f"{_first_line(error)})."
            )
        finally:
            self._model_ready.set()

    def _query_model_failed(self, problem: str) -> None:
        self.query_problem = problem
        self.problems.append(problem)

    def _try_loading_query_model(self) -> None:
        try:
            self.index.model(self._model, self.device)
            self.query_problem = None
        except ValueError as error:  # another model's fingerprint
            self._query_model_failed(f"Search by a clip is off, the store was embedded with another model: {error}")
        except OSError as error:  # a missing folder, an unknown Hub id, no network
            self._query_model_failed(
                f"Search by a clip is off: the model `{self.model_name}` could not be loaded ({_first_line(error)}). "
                "Start the app with --model pointing at the folder or Hub id the store was embedded with."
            )

    # ------------------------------------------------------------------------------------------------ tracks

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def root(self) -> str:
        return common_root(self.paths)

    @property
    def names(self) -> list[str]:
        """Each track's path relative to the library's common folder: what the page shows."""
        if not self._names and self.paths:
            root = self.root
            self._names = [os.path.relpath(p, root) if root else p for p in self.paths]
            self._ids = {name: i for i, name in enumerate(self._names)}
        return self._names

    def track_id(self, name_or_path: str) -> int:
        self.names  # noqa: B018  (builds the lookup)
        if name_or_path in self._ids:
            return self._ids[name_or_path]
        try:
            return self.paths.index(name_or_path)
        except ValueError:
            raise LibraryError(f"`{name_or_path}` is not a track of this library; pick one from the list.") from None

    def find(self, text: str = "", limit: int = 50) -> list[str]:
        """Names containing `text` (case-insensitive), at most `limit`, in order."""
        text = (text or "").strip().lower()
        names = self.names
        if not text:
            return names[:limit]
        found = []
        for name in names:
            if text in name.lower():
                found.append(name)
                if len(found) == limit:
                    break
        return found

    def audio_path(self, track: int) -> str | None:
        """Where track `track`'s audio is now (under `audio_root` when the library moved), or None if missing."""
        path = self.paths[track]
        if self.audio_root:
            path = os.path.join(self.audio_root, os.path.relpath(path, self.root) if self.root else path)
        return path if os.path.isfile(path) else None

    @property
    def has_timelines(self) -> bool:
        return self.chunks is not None

    def track_chunks(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """`((chunks, D) unit vectors, (chunks,) start seconds)` of a track (needs timelines)."""
        if not self.has_timelines:
            raise LibraryError(self._no_timelines())
        a, b = int(self.chunk_offsets[track]), int(self.chunk_offsets[track + 1])
        return np.asarray(self.chunks[a:b], dtype=np.float32), np.asarray(self.chunk_starts[a:b])

    def self_similarity(self, track: int) -> tuple[np.ndarray, np.ndarray]:
        """`((chunks, chunks) cosine similarity, (chunks,) start seconds)` of a track's chunks with each other:
        repeats are bright off the diagonal, sections are blocks."""
        chunks, starts = self.track_chunks(track)
        return chunks @ chunks.T, starts

    @property
    def default_colour(self) -> str:
        """The map's first colouring (see `explore_map.default_colour`)."""
        return default_colour(self.columns)

    def column(self, name: str) -> Column:
        if name not in self.columns:
            raise LibraryError(f"no metadata column {name!r}; the library has {', '.join(self.columns)}.")
        return self.columns[name]

    def index_id(self, path: str) -> int:
        """The row of the index (the track id) of a stored path."""
        if not self._path_ids:
            self._path_ids.update({p: i for i, p in enumerate(self.paths)})
        return self._path_ids[path]

    def _no_timelines(self) -> str:
        return next((p for p in self.problems if "timelines" in p), "This store has no per-chunk timelines.")

    # ------------------------------------------------------------------------------------------------ search

    def search_clip(self, source: Any, k: int = 10) -> SearchResult:
        """The `k` tracks nearest to an audio clip (a path, bytes, `{"array", "sampling_rate"}`), embedded as the
        store was; with segments and timelines when the store has them (`explore_search.search_clip`)."""
        return search_clip(self, source, k)

    def search_track(self, track: int | str, k: int = 10) -> SearchResult:
        """The `k` tracks nearest to a track of the library (the first is the track itself)."""
        return search_track(self, track, k)

    # ------------------------------------------------------------------------------------------------ audio

    def segment_clip(self, track: int, start: float, seconds: float | None = None) -> str | None:
        """A WAV of track `track` from `start` seconds (the best-matching chunk) for `seconds` (`clip_seconds`),
        for a player that starts there; None when the track's audio is not where the store says. Safe to call
        from several threads at once (`explore_segments`)."""
        path = self.audio_path(track)
        if path is None:
            return None
        return self._segments.write(path, track, start, seconds or self.clip_seconds)

    @property
    def clips_folder(self) -> str:
        """Where `segment_clip` writes (the page serves audio from it)."""
        return self._segments.folder


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_store_model(store: EmbeddingStore, info: dict[str, Any]) -> str | None:
    table = store.read_table(["model", "model_fingerprint"])
    fingerprints = set(table["model_fingerprint"].to_pylist())
    if fingerprints != {info["model_fingerprint"]}:
        models = ", ".join(sorted(set(table["model"].to_pylist())))
        return (
            f"The store `{store.path}` holds embeddings of {models}, but the index was built from "
            f"{info['model']}: rebuild the index (`myna index {store.path} --output INDEX --overwrite`) or start the "
            "app with --store alone."
        )
    return None


__all__ = [
    "CACHE_DIR", "LAYOUTS", "QUERY_MODEL_WAIT_SECONDS", "Column", "LibraryError", "LibraryExplorer", "SearchResult",
    "compute_layout", "layout_method", "store_signature",
]  # fmt: skip
