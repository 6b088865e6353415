"""What the explorer's modules share and the app's page receives: the page's one error, a search's answer, a
metadata column. Defined here, imported by `explore.py` and by the modules it is made of (`explore_map`,
`explore_search`), so that none of them imports another in a circle."""

from dataclasses import dataclass
from typing import Any


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


__all__ = ["Column", "LibraryError", "SearchResult"]
