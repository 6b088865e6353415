"""What `myna app` shows, as data: a store and its index opened for browsing (the app's page is `app.py`).

    >>> from myna_pipelines.explore import LibraryExplorer
    >>> library = LibraryExplorer.open(index="index/")            # or store="store/": the index is built on the way
    >>> found = library.search_clip("query.flac", k=5)            # nearest tracks, best 3 s and per-chunk timelines
    >>> found.results[0]["path"], found.results[0]["segment_start"]
    >>> library.layout                                            # (tracks, 2): the map (UMAP if installed, else PCA)
    >>> library.self_similarity(0)                                # (chunks, chunks) cosine of a track's 3 s chunks

Opening reads the index and, once, writes what the page needs beside it, in `INDEX/app/`: the unit track vectors,
the map's 2-D layout and the store's per-chunk timelines as one memory-mapped array (so that a result's timeline
is a slice, not a Parquet read). The files are keyed by the index and the store's shards; a changed store or index
writes them again. Everything a user can get wrong (a file that is not audio, a clip shorter than one chunk, a
store of another model, an empty store) is a `LibraryError` whose message is written for the page; the library
stays usable. Needs the `search` extra (FAISS, pyarrow); the map needs scikit-learn (PCA) or umap-learn.
"""

import csv
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .search import MynaIndex, build_index, normalize
from .store import DATA_DIR, META_DIR, EmbeddingStore, select_patch_mode


CACHE_FORMAT = 1
CACHE_DIR = "app"  # inside the index folder
STORE_INDEX = os.path.join(META_DIR, "index")  # where `--store` keeps the index it builds
LAYOUTS = ("auto", "umap", "pca")
UMAP_MIN_TRACKS = 30  # fewer tracks: PCA (UMAP's neighbour graph needs a few dozen points)
METADATA_FILE = "metadata.csv"  # the `audiofolder` convention; found beside the tracks
PATH_COLUMNS = ("path", "file_name", "filename", "file", "track")
MAX_CATEGORIES = 20  # a column's most frequent values get a colour each; the rest are "other"


class LibraryError(ValueError):
    """Something the user gave or has that the page explains in one message; the app carries on."""


@dataclass
class SearchResult:
    """One search: what was searched for and the nearest tracks, best first.

    Each result: `rank`, `id` (the track's row in the index), `path`, `name`, `score` (cosine of the track
    embeddings) and, when the store has timelines, `segment_start` / `segment_score` (the track's best-matching 3 s
    chunk), `query_segment_start` (the query's chunk it matched) and `timeline_starts` / `timeline_scores` (each of
    the track's chunks: its best cosine with any chunk of the query)."""

    query: str
    query_duration: float
    results: list[dict[str, Any]]
    segments: bool
    seconds: float = 0.0  # how long the search took


@dataclass
class Column:
    """A metadata column of the tracks, for the map's colours: `values[i]` of track `i` (None when unknown)."""

    name: str
    values: list[Any]
    numeric: bool = False


def store_signature(store: str) -> str:
    """A hash of the store's shard files (names and sizes): what changes when the store does. Every write makes a
    shard of a new name, so modification times are not needed, and a store copied elsewhere (a Space) keeps its
    signature and the caches built for it."""
    data = os.path.join(store, DATA_DIR)
    names = sorted(n for n in os.listdir(data) if n.endswith(".parquet")) if os.path.isdir(data) else []
    entries = [[name, os.path.getsize(os.path.join(data, name))] for name in names]
    return hashlib.blake2b(json.dumps(entries).encode(), digest_size=12).hexdigest()


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def layout_method(requested: str, count: int) -> str:
    """The map's method: `umap` where umap-learn is installed (and there are enough tracks), else `pca`."""
    if requested not in LAYOUTS:
        raise ValueError(f"layout={requested!r} is not one of {LAYOUTS}.")
    if requested == "umap" and not _umap_available():
        raise ImportError("layout='umap' needs umap-learn: pip install umap-learn (or myna-hf[umap]).")
    if requested == "auto":
        requested = "umap" if _umap_available() else "pca"
    return "pca" if count < UMAP_MIN_TRACKS else requested


def compute_layout(vectors: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """`(n, 2)` float32 map coordinates of unit vectors, by `umap` (cosine neighbours) or `pca`."""
    n = len(vectors)
    if n < 3:
        return np.column_stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=seed)
        return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise ImportError("the map needs scikit-learn (PCA): pip install scikit-learn (or myna-hf[app]).") from None
    components = min(2, vectors.shape[1])
    points = PCA(components, random_state=seed).fit_transform(vectors).astype(np.float32)
    return points if components == 2 else np.column_stack([points, np.zeros(n, np.float32)])


def _common_root(paths: list[str]) -> str:
    if not paths:
        return ""
    folders = {os.path.dirname(p) for p in paths}
    try:
        return os.path.commonpath(sorted(folders))
    except ValueError:  # different drives
        return ""


def _read_csv_columns(csv_path: str, lookup) -> dict[str, dict[int, str]]:
    """`{column: {track id: value}}` of a metadata CSV whose rows name tracks by path (`lookup` resolves them)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    header = list(rows[0])
    key = next((c for c in header if c.strip().lower() in PATH_COLUMNS), header[0])
    base = os.path.dirname(os.path.abspath(csv_path))
    out: dict[str, dict[int, str]] = {c.strip(): {} for c in header if c != key}
    for row in rows:
        track = lookup(row.get(key) or "", base)
        if track is None:
            continue
        for column, value in row.items():
            if column != key and column is not None and value not in (None, ""):
                out[column.strip()][track] = value
    return {name: values for name, values in out.items() if values}


def _as_column(name: str, values: list[Any]) -> Column:
    present = [v for v in values if v is not None]
    try:
        numbers = [float(v) for v in present]
    except (TypeError, ValueError):
        return Column(name, values)
    if len(set(numbers)) > MAX_CATEGORIES // 2:  # a measurement (tempo, duration), not a handful of labels
        return Column(name, [None if v is None else float(v) for v in values], numeric=True)
    return Column(name, [None if v is None else str(v) for v in values])


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
    _clips: str | None = field(default=None, repr=False)
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
        if loaded is None or (built_here and _read_json(os.path.join(cache, "cache.json")).get("store") != signature):
            try:
                loaded = build_index(store, index, patch_mode)  # missing, or the store changed since
            except ValueError as error:  # e.g. a store mixing models
                problems.append(f"The store `{store}` cannot be indexed: {error}")
                library = cls.empty(store, problems, audio_root)
                library.opened_in = time.perf_counter() - started
                return library
        library = cls._from_index(loaded, store, signature, cache, layout, problems, audio_root)
        library._read_metadata(list(metadata))
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
        key = hashlib.blake2b(
            json.dumps([info, signature, _file_digest(os.path.join(index.folder, "paths.json"))], sort_keys=True)
            .encode(), digest_size=12,
        ).hexdigest()  # fmt: skip
        writable = _writable(cache)
        record = _read_json(os.path.join(cache, "cache.json"))
        if record.get("key") != key or record.get("format") != CACHE_FORMAT:
            record = {"format": CACHE_FORMAT, "key": key, "store": signature}
            if writable:
                for name in os.listdir(cache):
                    if name.endswith(".npy"):
                        os.remove(os.path.join(cache, name))
        paths = index.paths
        ids = {path: i for i, path in enumerate(paths)}
        store_reader = EmbeddingStore(store)
        settings_problem = _check_store_model(store_reader, info)
        if settings_problem:
            problems.append(settings_problem)

        vectors = _cached(cache, "vectors.npy", writable, lambda: _track_vectors(store_reader, info, ids))
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
        points = _cached(cache, f"layout-{method}.npy", writable, lambda: compute_layout(vectors, method))

        library = cls(index, store, paths, vectors, durations, points, method, problems=problems)
        library.audio_root = audio_root
        if info.get("segments"):
            offsets = _cached(cache, "chunk_offsets.npy", writable, lambda: _chunk_offsets(store_reader, ids))
            starts_file = os.path.join(cache, "chunk_starts.npy")
            if not (writable and os.path.exists(starts_file) and os.path.exists(os.path.join(cache, "chunks.npy"))):
                chunks, starts = _write_timelines(store_reader, info, ids, offsets, cache if writable else None)
            else:
                chunks = np.load(os.path.join(cache, "chunks.npy"), mmap_mode="r")
                starts = np.load(starts_file)
            library.chunks, library.chunk_offsets, library.chunk_starts = chunks, offsets, starts
        else:
            problems.append(
                "This store has no per-chunk timelines, so results have no best-matching 3 s and no timeline. To add "
                f"them, embed again with timelines: `myna embed MUSIC/ --model {info['model']} --output {store} "
                "--timeline --overwrite`, then start the app again."
            )
        if writable:
            with open(os.path.join(cache, "cache.json"), "w") as f:
                json.dump(record, f)
        if not writable:
            problems.append(f"`{cache}` is not writable: the map and timelines are computed at every start.")
        return library

    def load_query_model(self, model: str | None = None, background: bool = False) -> None:
        """Loads the model that embeds queries (default: the index's); another model's weights turn clip search
        off with `query_problem` saying why. `background`: in a thread, so that the page is served meanwhile (a
        search waits for it: `wait_for_model`)."""
        if self.index is None:
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

    def wait_for_model(self) -> None:
        """Returns once the query model is loaded (or failed to: `query_problem`), if a load is expected."""
        self._model_ready.wait()

    def _load_query_model(self) -> None:
        try:
            self._try_loading_query_model()
        finally:
            self._model_ready.set()

    def _try_loading_query_model(self) -> None:
        try:
            self.index.model(self._model, self.device)
            self.query_problem = None
        except ValueError as error:  # another model's fingerprint
            self.query_problem = f"Search by a clip is off, the store was embedded with another model: {error}"
            self.problems.append(self.query_problem)
        except OSError as error:  # a missing folder, an unknown Hub id, no network
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            self.query_problem = (
                f"Search by a clip is off: the model `{self.model_name}` could not be loaded ({first}). Start the "
                "app with --model pointing at the folder or Hub id the store was embedded with."
            )
            self.problems.append(self.query_problem)

    # ------------------------------------------------------------------------------------------------ tracks

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def root(self) -> str:
        return _common_root(self.paths)

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
        """The map's first colouring: the folder, unless all tracks share one; then the first column of a few
        labels (2 to `MAX_CATEGORIES` values, e.g. a CSV's genre or style)."""
        def labels(column: Column) -> int:
            return 0 if column.numeric else len({v for v in column.values if v is not None})

        if "folder" in self.columns and labels(self.columns["folder"]) > 1:
            return "folder"
        return next((n for n, c in self.columns.items() if 2 <= labels(c) <= MAX_CATEGORIES), "folder")

    def column(self, name: str) -> Column:
        if name not in self.columns:
            raise LibraryError(f"no metadata column {name!r}; the library has {', '.join(self.columns)}.")
        return self.columns[name]

    # ------------------------------------------------------------------------------------------------ search

    def search_clip(self, source: Any, k: int = 10) -> SearchResult:
        """The `k` tracks nearest to an audio clip (a path, bytes, `{"array", "sampling_rate"}`), embedded as the
        store was; with segments and timelines when the store has them."""
        from modeling_myna.audio_utils import AudioDecodeError, load_audio

        from .library import embed_chunks

        started = time.perf_counter()
        self.wait_for_model()
        self._check_searchable(clip=True)
        inference, feature_extractor = self.index.model(self._model, self.device)
        name = os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else "The clip"
        try:
            audio, rate = load_audio(source, sampling_rate=feature_extractor.sampling_rate)
        except AudioDecodeError as error:
            raise LibraryError(
                f"`{name}` cannot be read as audio: {_short(str(error), str(source))} Upload a wav, flac, ogg or "
                "mp3 file, or record a clip."
            ) from None
        shortest = (feature_extractor.chunk_frames - 1) * feature_extractor.hop_length
        if len(audio) < shortest:
            raise LibraryError(
                f"`{name}` is {len(audio) / rate:.2f} s long; a search needs at least one chunk, "
                f"{shortest / rate:.2f} s of audio. Upload or record a longer clip."
            )
        info = self.index.info
        chunks, starts = embed_chunks(
            {"array": audio, "sampling_rate": rate}, inference, feature_extractor, info["store_settings"]["patch_mode"]
        )
        chunks = select_patch_mode(chunks, info["store_settings"], info["patch_mode"])
        found = self._nearest(chunks.mean(axis=0), normalize(chunks), starts, k)
        return SearchResult(name, len(audio) / rate, found, self.has_timelines, time.perf_counter() - started)

    def search_track(self, track: int | str, k: int = 10) -> SearchResult:
        """The `k` tracks nearest to a track of the library (the first is the track itself)."""
        started = time.perf_counter()
        self._check_searchable(clip=False)
        track = self.track_id(track) if isinstance(track, str) else int(track)
        chunks, starts = self.track_chunks(track) if self.has_timelines else (None, None)
        found = self._nearest(self.vectors[track], chunks, starts, k)
        return SearchResult(
            self.names[track], float(self.durations[track]), found, self.has_timelines, time.perf_counter() - started
        )

    def _check_searchable(self, clip: bool) -> None:
        if self.index is None or not len(self):
            raise LibraryError(self.problems[0] if self.problems else "The library is empty.")
        if clip and self.query_problem:
            raise LibraryError(self.query_problem)

    def _nearest(self, vector, query_chunks, query_starts, k) -> list[dict[str, Any]]:
        results = self.index.search(vector, k)[0]
        names = self.names
        for result in results:
            track = self._index_id(result["path"])
            result.update(id=track, name=names[track], duration=float(self.durations[track]))
            if query_chunks is None or not self.has_timelines:
                continue
            chunks, starts = self.track_chunks(track)
            if not len(chunks):
                continue
            similarity = query_chunks @ chunks.T  # (query chunks, track chunks)
            q, t = np.unravel_index(similarity.argmax(), similarity.shape)
            result.update(
                segment_start=float(starts[t]), segment_score=float(similarity[q, t]),
                query_segment_start=float(query_starts[q]),
                timeline_starts=starts.astype(float).tolist(), timeline_scores=similarity.max(axis=0).tolist(),
            )  # fmt: skip
        return results

    def _index_id(self, path: str) -> int:
        if not self._path_ids:
            self._path_ids.update({p: i for i, p in enumerate(self.paths)})
        return self._path_ids[path]

    def _no_timelines(self) -> str:
        return next((p for p in self.problems if "timelines" in p), "This store has no per-chunk timelines.")

    # ------------------------------------------------------------------------------------------------ audio

    def segment_clip(self, track: int, start: float, seconds: float | None = None) -> str | None:
        """A WAV of track `track` from `start` seconds (the best-matching chunk) for `seconds` (`clip_seconds`),
        for a player that starts there; None when the track's audio is not where the store says."""
        path = self.audio_path(track)
        if path is None:
            return None
        seconds = seconds or self.clip_seconds
        if self._clips is None:
            self._clips = tempfile.mkdtemp(prefix="myna-app-clips-")
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.join(self._clips, str(track))  # one folder a track: names stay the track's own
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, f"{stem}-from-{start:.2f}s.wav")
        if not os.path.exists(out):
            import soundfile as sf

            from modeling_myna.audio_utils import AudioDecodeError, load_audio

            try:
                audio, rate = load_audio(path, offset=start, duration=seconds)
            except AudioDecodeError:
                return None
            sf.write(out + ".tmp", audio, rate, format="WAV", subtype="PCM_16")
            os.replace(out + ".tmp", out)
        return out

    @property
    def clips_folder(self) -> str:
        if self._clips is None:
            self._clips = tempfile.mkdtemp(prefix="myna-app-clips-")
        return self._clips

    # ------------------------------------------------------------------------------------------------ metadata

    def _read_metadata(self, files: list[str]) -> None:
        """Columns for the map's colours: the folder, the format, the duration, and those of metadata CSVs (the
        files given, and every `metadata.csv` beside the tracks)."""
        names, root = self.names, self.root
        self.columns = {
            "folder": Column("folder", [os.path.dirname(n) or os.path.basename(root) or "." for n in names]),
            "format": Column("format", [os.path.splitext(p)[1].lstrip(".").lower() or "?" for p in self.paths]),
            "duration (s)": Column("duration (s)", [None if np.isnan(d) else float(d) for d in self.durations],
                                   numeric=True),
        }  # fmt: skip
        by_path = {os.path.normpath(p): i for i, p in enumerate(self.paths)}
        if self.audio_root:
            by_path.update({os.path.normpath(os.path.join(self.audio_root, n)): i for i, n in enumerate(names)})
        by_base: dict[str, int | None] = {}
        for i, p in enumerate(self.paths):
            base = os.path.basename(p)
            by_base[base] = None if base in by_base else i  # ambiguous names match nothing

        def lookup(value: str, base: str) -> int | None:
            value = value.strip()
            if not value:
                return None
            full = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
            return by_path[full] if full in by_path else by_base.get(os.path.basename(value))

        found = [f for f in files]
        folders = sorted({os.path.dirname(p) for p in self.paths})
        if self.audio_root:
            folders += sorted({os.path.dirname(os.path.join(self.audio_root, n)) for n in names})
        for folder in dict.fromkeys(folders + ([root] if root else [])):
            candidate = os.path.join(folder, METADATA_FILE)
            if os.path.isfile(candidate) and candidate not in found:
                found.append(candidate)
        merged: dict[str, dict[int, str]] = {}
        for csv_path in found:
            if not os.path.isfile(csv_path):
                self.problems.append(f"The metadata file `{csv_path}` does not exist; its columns are missing.")
                continue
            try:
                for name, values in _read_csv_columns(csv_path, lookup).items():
                    merged.setdefault(name, {}).update(values)
            except (OSError, csv.Error, UnicodeDecodeError) as error:
                self.problems.append(f"The metadata file `{csv_path}` could not be read ({error}).")
        for name, values in merged.items():
            label = name if name not in self.columns else f"{name} (csv)"
            self.columns[label] = _as_column(label, [values.get(i) for i in range(len(self.paths))])


# ------------------------------------------------------------------------------------------------ cache helpers


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


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


def _cached(folder: str, name: str, writable: bool, compute) -> np.ndarray:
    path = os.path.join(folder, name)
    if os.path.exists(path):
        return np.load(path)
    value = compute()
    if writable:
        np.save(path + ".tmp.npy", value)
        os.replace(path + ".tmp.npy", path)
    return value


def _short(message: str, source: str) -> str:
    """An audio error without the (long, temporary) path it starts with."""
    message = message.strip()
    if source and message.startswith(source):
        message = message[len(source) :].lstrip(": ")
    for advice in ("; drop it.", "; convert it, or skip it."):  # what `myna embed` advises about a library file
        message = message.replace(advice, ".")
    if message.startswith("could not be decoded: "):
        message = message[len("could not be decoded: ") :]
    return message + ("" if message.endswith(".") else ".")


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


def _track_vectors(store: EmbeddingStore, info: dict[str, Any], ids: dict[str, int]) -> np.ndarray:
    table = store.read_table(["path", "embedding", "settings"])
    settings = json.loads(table["settings"][0].as_py())
    vectors = table["embedding"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
    vectors = normalize(select_patch_mode(vectors, settings, info["patch_mode"]))
    out = np.zeros((len(ids), vectors.shape[1]), np.float32)
    for row, path in enumerate(table["path"].to_pylist()):
        if path in ids:
            out[ids[path]] = vectors[row]
    return out


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


def _chunk_offsets(store: EmbeddingStore, ids: dict[str, int]) -> np.ndarray:
    counts = np.zeros(len(ids), np.int64)
    for rows in _latest_rows_by_shard(store, ids).values():
        for _, track, n in rows:
            counts[track] = n
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _write_timelines(store, info, ids, offsets, folder) -> tuple[np.ndarray, np.ndarray]:
    """Every indexed track's chunk embeddings (unit vectors, the index's patch mode), back to back in track order,
    read one shard at a time into a memory-mapped `chunks.npy` (or memory when `folder` is None)."""
    _, pq = _pyarrow()
    settings = info["store_settings"]
    total, width = int(offsets[-1]), int(info["dim"])
    if folder:
        chunks_tmp = os.path.join(folder, "chunks.tmp.npy")
        chunks = np.lib.format.open_memmap(chunks_tmp, mode="w+", dtype=np.float32, shape=(total, width))
    else:
        chunks = np.zeros((total, width), np.float32)
    starts = np.zeros(total, np.float32)
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
    if folder:
        chunks.flush()
        del chunks
        os.replace(chunks_tmp, os.path.join(folder, "chunks.npy"))
        np.save(os.path.join(folder, "chunk_starts.npy"), starts)
        chunks = np.load(os.path.join(folder, "chunks.npy"), mmap_mode="r")
    return chunks, starts


def _pyarrow():
    from .store import _pyarrow as load

    return load()


__all__ = [
    "CACHE_DIR", "LAYOUTS", "Column", "LibraryError", "LibraryExplorer", "SearchResult", "compute_layout",
    "layout_method", "store_signature",
]  # fmt: skip
