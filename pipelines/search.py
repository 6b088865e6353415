"""Similarity search over an embedding store with FAISS: `myna index` builds it, `myna search` queries it.

    myna index store/ --output index/                       # the store's embedding; hybrid: --patch_mode vertical
    myna search index/ query.mp3 -k 10                      # nearest tracks, cosine similarity
    myna search index/ query.mp3 -k 10 --segments           # + the best-matching 3 s segment of each track

    >>> from myna_pipelines.search import MynaIndex
    >>> index = MynaIndex.load("index/")
    >>> index.search_audio("query.mp3", k=10)               # [{"path", "score", "rank"}, ...]

Vectors are L2-normalised, so inner product is cosine similarity. Up to `EXACT_LIMIT` tracks the index is exact
(`IndexFlatIP`: a 100k x 768 search is one matrix product, tens of milliseconds); beyond it, HNSW (`IndexHNSWFlat`,
M = 32, efSearch = 128, no training) or, with `--kind ivf`, an inverted file (`IndexIVFFlat`, 4 sqrt(n) lists,
nprobe 32: faster to build). Measured by benchmarks/benchmark_library.py on 100k random 768-d unit vectors (the
worst case: every neighbour almost equally far) on a busy 2-core machine: flat 347 ms/query, HNSW 9.4 ms/query with
recall@10 0.19 (fresh random queries) and 0.39 (noisy copies), the copy itself found first every time; so the
threshold is set where exact search still answers in well under a second, and near-duplicate lookup, not a
complete top 10, is what the approximate kinds promise. An index records the model fingerprint and settings of its store, and refuses queries embedded with another
model. FAISS (`faiss-cpu`, extra `search`) is imported only here.
"""

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from myna_common.atomic import atomic_path, write_json

from .store import EmbeddingStore, select_patch_mode


EXACT_LIMIT = 50_000  # tracks; above this an approximate index (HNSW by default)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_NPROBE = 32
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("similarity search needs FAISS: pip install faiss-cpu (or myna-hf[search]).") from None
    return faiss


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def make_index(vectors: np.ndarray, kind: str = "auto"):
    """A FAISS inner-product index holding `vectors` (already normalised), `(n, D)` float32."""
    faiss = _faiss()
    n, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if n <= EXACT_LIMIT else "hnsw"
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # FAISS wants >= 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(IVF_NPROBE, nlist)
    else:
        raise ValueError(f"kind={kind!r} is not one of {INDEX_KINDS}.")
    index.add(vectors)
    return index


def index_kind(index) -> str:
    faiss = _faiss()
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    return "ivf" if isinstance(index, faiss.IndexIVFFlat) else "flat"


def build_index(store: str, output: str, patch_mode: str | None = None, kind: str = "auto") -> "MynaIndex":
    """Builds and saves the index of a store's track embeddings (`patch_mode` picks a hybrid store's half)."""
    paths, vectors, settings = EmbeddingStore(store).embeddings(patch_mode)
    patch_mode = patch_mode or settings["patch_mode"]
    index = make_index(normalize(vectors), kind)
    info = {
        "format": 1,
        "model": settings["model"],
        "model_fingerprint": settings["model_fingerprint"],
        "store": os.path.abspath(store),
        "store_settings": {k: v for k, v in settings.items() if k not in ("model", "model_fingerprint")},
        "patch_mode": patch_mode,
        "kind": index_kind(index),
        "count": len(paths),
        "dim": int(vectors.shape[1]),
        "segments": bool(settings.get("timeline")),
    }
    result = MynaIndex(index, paths, info, output)
    result.save(output)
    return result


@dataclass
class MynaIndex:
    """A FAISS index over a store's tracks, with their paths and the model and settings they were embedded with."""

    index: Any
    paths: list[str]
    info: dict[str, Any]
    folder: str | None = None
    _models: dict = field(default_factory=dict, repr=False)

    def save(self, folder: str) -> None:
        faiss = _faiss()
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, "index.faiss")) as partial:
            faiss.write_index(self.index, partial)
        write_json(os.path.join(folder, "paths.json"), self.paths, indent=None)
        write_json(os.path.join(folder, "index.json"), self.info, indent=2)  # last: a folder with it is an index
        self.folder = folder

    @classmethod
    def load(cls, folder: str) -> "MynaIndex":
        faiss = _faiss()
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"no index at {folder} (no such folder): build one with `myna index STORE "
                                    f"--output {folder}`.")
        if not os.path.exists(os.path.join(folder, "index.json")):
            raise FileNotFoundError(f"{folder} is not a Myna index (no index.json): build one with `myna index`.")
        store = "STORE"

        def damaged(name: str, why: str) -> ValueError:
            return ValueError(
                f"{os.path.join(folder, name)} is damaged ({why}): build the index again with `myna index {store} "
                f"--output {folder} --overwrite`."
            )

        def read_json(name: str, kind: type):
            try:
                with open(os.path.join(folder, name)) as f:
                    value = json.load(f)
            except FileNotFoundError:
                raise damaged(name, "missing") from None
            except ValueError as error:
                raise damaged(name, f"not valid JSON: {str(error).splitlines()[0][:100]}") from None
            if not isinstance(value, kind):
                raise damaged(name, f"a {type(value).__name__}, not a {kind.__name__}")
            return value

        info = read_json("index.json", dict)
        store = info.get("store", store)
        missing = [key for key in ("kind", "model", "model_fingerprint", "dim", "patch_mode") if key not in info]
        if missing:
            raise damaged("index.json", f"no {', '.join(missing)}")
        paths = read_json("paths.json", list)
        try:
            index = faiss.read_index(os.path.join(folder, "index.faiss"))
        except Exception:  # noqa: BLE001  (FAISS raises RuntimeError with its C++ message)
            present = os.path.exists(os.path.join(folder, "index.faiss"))
            why = "not a FAISS index FAISS can read" if present else "missing"
            raise damaged("index.faiss", why) from None
        if index.ntotal != len(paths) or index.d != info["dim"]:
            raise damaged("index.faiss", f"{index.ntotal} vectors of {index.d} values for {len(paths)} paths of "
                                         f"{info['dim']}: it and paths.json are from different builds")
        if info["kind"] == "hnsw":
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(index, paths, info, folder)

    # --------------------------------------------------------------------------------------------- vectors

    def check_fingerprint(self, model_fingerprint: str, model_name: str = "the query model") -> None:
        if model_fingerprint != self.info["model_fingerprint"]:
            raise ValueError(
                f"this index was built with the model {self.info['model']} (fingerprint "
                f"{self.info['model_fingerprint'][:12]}), but {model_name} has fingerprint {model_fingerprint[:12]}: "
                "embeddings of different models are not comparable. Query with the index's model, or embed and "
                "index the library again with this one."
            )

    def check_front_end(self, feature_extractor, model_name: str = "the query model") -> None:
        """Refuses a query front end (sampling rate, hop, FFT size, mel backend, ...) other than the store's."""
        from .library import front_end_settings

        stored = self.info["store_settings"].get("front_end")
        if stored is None:
            return  # a store written before front ends were recorded
        mine = front_end_settings(feature_extractor)
        changed = [f"{k}: {stored.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(stored) | set(mine))
                   if stored.get(k) != mine.get(k)]
        if changed:
            raise ValueError(
                f"this index's store was embedded with another front end than {model_name}'s feature extractor "
                f"({'; '.join(changed)}): its embeddings would not be comparable. Query with the store's model "
                "folder as it was, or embed the library again with this one."
            )

    def search(self, queries: np.ndarray, k: int = 10, model_fingerprint: str | None = None) -> list[list[dict]]:
        """Nearest tracks of each query vector, `(q, D)` or `(D,)` in the index's embedding (not yet normalised):
        one list per query of `{"rank", "path", "score"}` with cosine similarity scores, best first."""
        if model_fingerprint is not None:
            self.check_fingerprint(model_fingerprint)
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.info["dim"]:
            raise ValueError(
                f"queries have {queries.shape[1]} features, the index {self.info['dim']} "
                f"({self.info['patch_mode']} embeddings of {self.info['model']})."
            )
        scores, ids = self.index.search(normalize(queries), min(k, len(self.paths)))
        results = []
        for row_ids, row_scores in zip(ids, scores):
            found = row_ids >= 0  # FAISS pads with -1 when fewer than k are found
            pairs = zip(row_ids[found], row_scores[found])
            results.append([{"rank": r, "path": self.paths[i], "score": float(s)} for r, (i, s) in enumerate(pairs)])
        return results

    # ------------------------------------------------------------------------------------------------ audio

    def model(self, model=None, device: str = "cpu"):
        """`(inference model, feature extractor)` for queries: `model` (an id, folder or loaded Myna model), by
        default the one the index was built with; refused if its weights differ from the index's."""
        from .library import load_model, model_fingerprint
        from .precision import MynaInferenceModel

        cache_key = model if model is None or isinstance(model, str) else id(model)
        if cache_key in self._models:
            return self._models[cache_key]
        name = model if isinstance(model, str) else self.info["model"] if model is None else type(model).__name__
        if model is None or isinstance(model, str):
            loaded, feature_extractor = load_model(model or self.info["model"], device)
        else:
            from modeling_myna import MynaFeatureExtractor

            loaded, feature_extractor = model, MynaFeatureExtractor.from_config(model.config)
        self.check_fingerprint(model_fingerprint(loaded), f"the query model {name}")
        self.check_front_end(feature_extractor, f"the query model {name}")
        settings, on_cpu = self.info["store_settings"], loaded.device.type == "cpu"
        precision = settings.get("precision", "float32") if on_cpu else "float32"
        if on_cpu and settings.get("backend") == "onnxruntime":  # queries through the store's backend
            from .onnx_backend import MynaOnnxInferenceModel

            inference = MynaOnnxInferenceModel(loaded, precision, feature_extractor=feature_extractor)
        else:
            inference = MynaInferenceModel(loaded, precision)
        result = (inference, feature_extractor)
        self._models[cache_key] = result
        return result

    def search_audio(self, audio: Any, k: int = 10, segments: bool = False, model=None) -> list[dict]:
        """Nearest tracks of one audio input (a path, bytes, `{"array", "sampling_rate"}`, ...), embedded as the
        store was. With `segments`, each result also gets the best-matching 3 s segment of that track
        (`segment_start`, `segment_score`) and of the query (`query_segment_start`), from the store's timelines.

        Raises:
            QueryTooShortError: the audio is shorter than one chunk (`query_rules.py`): it has nothing to search
                with.
        """
        from .library import embed_chunks

        inference, feature_extractor = self.model(model)
        stored_mode = self.info["store_settings"]["patch_mode"]
        chunks, starts = embed_chunks(audio, inference, feature_extractor, stored_mode, use="a search")
        chunks = select_patch_mode(chunks, self.info["store_settings"], self.info["patch_mode"])
        results = self.search(chunks.mean(axis=0), k)[0]
        if segments:
            self._add_segments(results, normalize(chunks), starts)
        return results

    def _add_segments(self, results: list[dict], query_chunks: np.ndarray, query_starts: np.ndarray) -> None:
        if not self.info.get("segments"):
            raise ValueError(
                "this index's store has no timelines: embed with `myna embed ... --timeline` to search segments."
            )
        timelines = EmbeddingStore(self.info["store"]).timelines(r["path"] for r in results)
        for result in results:
            chunks, starts = timelines[result["path"]]
            chunks = normalize(select_patch_mode(chunks, self.info["store_settings"], self.info["patch_mode"]))
            similarity = query_chunks @ chunks.T  # (query chunks, track chunks)
            q, t = np.unravel_index(similarity.argmax(), similarity.shape)
            result.update(
                segment_start=float(starts[t]), segment_score=float(similarity[q, t]),
                query_segment_start=float(query_starts[q]),
            )  # fmt: skip


# ------------------------------------------------------------------------------------------------ commands


@dataclass
class IndexArguments:
    output: str = field(metadata={"help": "Folder to write the index to."})
    patch_mode: Literal["square", "vertical", "both"] | None = field(
        default=None,
        metadata={"help": "Which embedding of a store embedded with `both` (hybrid) to index. Default: the store's."},
    )
    kind: Literal["auto", "flat", "hnsw", "ivf"] = field(
        default="auto",
        metadata={"help": f"auto: exact (flat) up to {EXACT_LIMIT} tracks, HNSW beyond. ivf: inverted file."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace --output if it exists."})


@dataclass
class SearchArguments:
    k: int = field(default=10, metadata={"aliases": ["-k"], "help": "Tracks to return per query."})
    model: str | None = field(
        default=None, metadata={"help": "Model for the queries. Default: the index's; another one is refused."}
    )
    segments: bool = field(
        default=False, metadata={"help": "Also give each track's best-matching 3 s segment (needs --timeline)."}
    )
    device: str = field(default="cpu", metadata={"help": "Where the query is embedded."})
    json: bool = field(default=False, metadata={"help": "Print JSON lines instead of a table."})


def index_command(argv: list[str]) -> int:
    from myna_common.cli_support import UsageError, check_output_folder, dataclass_parser, parse_into

    parser = dataclass_parser(
        IndexArguments,
        prog="myna index",
        description="Build a FAISS similarity index (cosine) over the track embeddings of a `myna embed` store.",
    )
    parser.add_argument("store", metavar="STORE", help="Store folder written by `myna embed ... --output STORE`.")
    args, positional = parse_into(parser, IndexArguments, argv)
    state = check_output_folder(
        args.output, overwrite=args.overwrite, own=lambda path: os.path.isfile(os.path.join(path, "index.json")),
        what="index",
    )
    if state == "own" and not args.overwrite:
        raise UsageError(f"--output {args.output} holds an index; pass --overwrite to replace it.")
    try:
        index = build_index(positional.store, args.output, args.patch_mode, args.kind)
    except (OSError, ValueError, ImportError) as error:
        print(f"myna index: {error}", file=sys.stderr)
        return 1
    info = index.info
    print(
        f"indexed {info['count']} tracks ({info['patch_mode']} embeddings, {info['dim']} wide, {info['kind']}) "
        f"of {info['model']} -> {args.output}"
    )
    return 0


def search_command(argv: list[str]) -> int:
    from modeling_myna.audio_utils import AudioDecodeError
    from myna_common.cli_support import check_model_name, dataclass_parser, parse_into

    parser = dataclass_parser(
        SearchArguments,
        prog="myna search",
        description="The tracks of an index most similar to audio files (cosine similarity of Myna embeddings).",
    )
    parser.add_argument("index", metavar="INDEX", help="Index folder written by `myna index`.")
    parser.add_argument("queries", nargs="+", metavar="AUDIO", help="Audio files to search for.")
    args, positional = parse_into(parser, SearchArguments, argv)
    if args.k < 1:
        parser.error(f"-k must be at least 1, got {args.k}.")
    if args.model is not None:
        check_model_name(args.model)
    try:
        index = MynaIndex.load(positional.index)
        index.model(args.model, args.device)  # loaded and checked once, before any query
        for query in positional.queries:
            results = index.search_audio(query, args.k, segments=args.segments, model=args.model)
            if args.json:
                print(json.dumps({"query": query, "results": results}))
                continue
            print(query)
            for r in results:
                segment = ""
                if args.segments:
                    segment = f"  best 3 s at {r['segment_start']:.1f} s ({r['segment_score']:.3f})"
                print(f"  {r['rank'] + 1:>3}  {r['score']:.4f}  {r['path']}{segment}")
    except (OSError, ValueError, ImportError, AudioDecodeError) as error:
        print(f"myna search: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = ["EXACT_LIMIT", "INDEX_KINDS", "MynaIndex", "build_index", "index_command", "make_index", "search_command"]
