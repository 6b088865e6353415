"""Searching the library the app shows: by a clip (embedded as the store was) or by one of its tracks, to the
nearest tracks, each with its best-matching 3 s chunk and a timeline of its chunks against the query's when the
store has timelines. The functions take an opened `LibraryExplorer` (`explore.py`), whose methods call them."""

import os
import time
from typing import Any

import numpy as np

from .explore_types import LibraryError, SearchResult
from .search import normalize
from .store import select_patch_mode


def search_clip(library, source: Any, k: int = 10) -> SearchResult:
    """The `k` tracks nearest to an audio clip (a path, bytes, `{"array", "sampling_rate"}`), embedded as the store
    was; with segments and timelines when the store has them."""
    from modeling_myna.audio_utils import AudioDecodeError, load_audio, open_audio

    from .library import embed_chunks
    from .query_rules import (
        MAX_QUERY_SECONDS,
        QueryTooLongError,
        QueryTooShortError,
        check_query_length,
        shortest_query_seconds,
    )

    started = time.perf_counter()
    library.wait_for_model()
    check_searchable(library, clip=True)
    inference, feature_extractor = library.query_model()
    name = os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else "The clip"
    shortest = shortest_query_seconds(feature_extractor)
    try:
        with open_audio(source) as header:  # its length from the header: an hour-long upload is never decoded
            check_query_length(header.duration, name, shortest, MAX_QUERY_SECONDS)
        audio, rate = load_audio(source, sampling_rate=feature_extractor.sampling_rate)
        check_query_length(len(audio) / rate, name, shortest)  # a file that decodes to less than its header says
    except AudioDecodeError as error:
        raise LibraryError(
            f"`{name}` cannot be read as audio: {_short(str(error), str(source))} Upload a wav, flac, ogg or "
            "mp3 file, or record a clip."
        ) from None
    except (QueryTooShortError, QueryTooLongError) as error:
        raise LibraryError(str(error)) from None
    info = library.index.info
    chunks, starts = embed_chunks(
        {"array": audio, "sampling_rate": rate}, inference, feature_extractor, info["store_settings"]["patch_mode"]
    )
    chunks = select_patch_mode(chunks, info["store_settings"], info["patch_mode"])
    found = nearest(library, chunks.mean(axis=0), normalize(chunks), starts, k)
    return SearchResult(name, len(audio) / rate, found, library.has_timelines, time.perf_counter() - started)


def search_track(library, track: int | str, k: int = 10) -> SearchResult:
    """The `k` tracks nearest to a track of the library (the first is the track itself)."""
    started = time.perf_counter()
    check_searchable(library, clip=False)
    track = library.track_id(track) if isinstance(track, str) else int(track)
    chunks, starts = library.track_chunks(track) if library.has_timelines else (None, None)
    found = nearest(library, library.vectors[track], chunks, starts, k)
    return SearchResult(
        library.names[track], float(library.durations[track]), found, library.has_timelines,
        time.perf_counter() - started,
    )  # fmt: skip


def check_searchable(library, clip: bool) -> None:
    """Raises the page's message when the library cannot be searched (empty), or not by a clip (no model)."""
    if library.index is None or not len(library):
        raise LibraryError(library.problems[0] if library.problems else "The library is empty.")
    if clip and library.query_problem:
        raise LibraryError(library.query_problem)


def nearest(library, vector, query_chunks, query_starts, k) -> list[dict[str, Any]]:
    """The index's `k` nearest tracks to `vector`; with the query's `(chunks, D)` unit chunk vectors and their
    start seconds, each result also gets its best-matching chunk and its timeline."""
    results = library.index.search(vector, k)[0]
    names = library.names
    for result in results:
        track = library.index_id(result["path"])
        result.update(id=track, name=names[track], duration=float(library.durations[track]))
        if query_chunks is None or not library.has_timelines:
            continue
        chunks, starts = library.track_chunks(track)
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


def _short(message: str, source: str) -> str:
    """An audio error without the (long, temporary) path it starts with."""
    message = message.strip()
    if source and message.startswith(source):
        message = message[len(source) :].lstrip(": ")
    for advice in ("; drop it.", "; convert it, or skip it."):  # what `myna embed` advises about a library file
        message = message.replace(advice, ".")
    message = message.removeprefix("could not be decoded: ")
    return message + ("" if message.endswith(".") else ".")


__all__ = ["check_searchable", "nearest", "search_clip", "search_track"]
