"""The app's map: where each track sits (a 2-D layout of the track embeddings, UMAP or PCA) and what colours it
(metadata columns: the folder, the format, the duration, and the columns of `metadata.csv` files beside the tracks
or given with --metadata). UMAP needs umap-learn, PCA scikit-learn; `explore_cache` keeps the layout on disk."""

import csv
import os
from typing import Any

import numpy as np

from .explore_types import Column


LAYOUTS = ("auto", "umap", "pca")
UMAP_MIN_TRACKS = 30  # fewer tracks: PCA (UMAP's neighbour graph needs a few dozen points)
METADATA_FILE = "metadata.csv"  # the `audiofolder` convention; found beside the tracks
PATH_COLUMNS = ("path", "file_name", "filename", "file", "track")
MAX_CATEGORIES = 20  # a column's most frequent values get a colour each; the rest are "other"


# ------------------------------------------------------------------------------------------------ layout


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


# ------------------------------------------------------------------------------------------------ colours


def common_root(paths: list[str]) -> str:
    """The folder all `paths` are under ("" when none, or on different drives)."""
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


def metadata_columns(
    paths: list[str], names: list[str], durations: np.ndarray, audio_root: str | None, files: list[str],
    problems: list[str],
) -> dict[str, Column]:  # fmt: skip
    """Columns for the map's colours: the folder, the format, the duration, and those of metadata CSVs (the `files`
    given, and every `metadata.csv` beside the tracks). A CSV that cannot be read adds a line to `problems`."""
    root = common_root(paths)
    columns = {
        "folder": Column("folder", [os.path.dirname(n) or os.path.basename(root) or "." for n in names]),
        "format": Column("format", [os.path.splitext(p)[1].lstrip(".").lower() or "?" for p in paths]),
        "duration (s)": Column("duration (s)", [None if np.isnan(d) else float(d) for d in durations], numeric=True),
    }
    by_path = {os.path.normpath(p): i for i, p in enumerate(paths)}
    if audio_root:
        by_path.update({os.path.normpath(os.path.join(audio_root, n)): i for i, n in enumerate(names)})
    by_base: dict[str, int | None] = {}
    for i, p in enumerate(paths):
        base = os.path.basename(p)
        by_base[base] = None if base in by_base else i  # ambiguous names match nothing

    def lookup(value: str, base: str) -> int | None:
        value = value.strip()
        if not value:
            return None
        full = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
        return by_path[full] if full in by_path else by_base.get(os.path.basename(value))

    found = list(files)
    folders = sorted({os.path.dirname(p) for p in paths})
    if audio_root:
        folders += sorted({os.path.dirname(os.path.join(audio_root, n)) for n in names})
    for folder in dict.fromkeys(folders + ([root] if root else [])):
        candidate = os.path.join(folder, METADATA_FILE)
        if os.path.isfile(candidate) and candidate not in found:
            found.append(candidate)
    merged: dict[str, dict[int, str]] = {}
    for csv_path in found:
        if not os.path.isfile(csv_path):
            problems.append(f"The metadata file `{csv_path}` does not exist; its columns are missing.")
            continue
        try:
            for name, values in _read_csv_columns(csv_path, lookup).items():
                merged.setdefault(name, {}).update(values)
        except (OSError, csv.Error, UnicodeDecodeError) as error:
            problems.append(f"The metadata file `{csv_path}` could not be read ({error}).")
    for name, values in merged.items():
        label = name if name not in columns else f"{name} (csv)"
        columns[label] = _as_column(label, [values.get(i) for i in range(len(paths))])
    return columns


def default_colour(columns: dict[str, Column]) -> str:
    """The map's first colouring: the folder, unless all tracks share one; then the first column of a few labels
    (2 to `MAX_CATEGORIES` values, e.g. a CSV's genre or style)."""

    def labels(column: Column) -> int:
        return 0 if column.numeric else len({v for v in column.values if v is not None})

    if "folder" in columns and labels(columns["folder"]) > 1:
        return "folder"
    return next((n for n, c in columns.items() if 2 <= labels(c) <= MAX_CATEGORIES), "folder")


__all__ = [
    "LAYOUTS", "MAX_CATEGORIES", "METADATA_FILE", "common_root", "compute_layout", "default_colour", "layout_method",
    "metadata_columns",
]  # fmt: skip
