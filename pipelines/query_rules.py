"""One rule for what a query or a track must hold to be embedded, worded once for the command line and the page.

A clip is embedded chunk by chunk; audio shorter than one chunk has no chunk at all, so its "embedding" would be
the empty mean (or a padded chunk of silence) and every score against it noise. `myna embed`, `myna search` and
the page refuse such audio with the same sentence, and the library skips such tracks and lists them.
"""

from __future__ import annotations

# A query longer than this is not a clip: the page refuses it before decoding the whole of it.
MAX_QUERY_SECONDS = 600.0


class QueryTooShortError(ValueError):
    """Audio shorter than one chunk: nothing to embed."""


class QueryTooLongError(ValueError):
    """A query longer than `MAX_QUERY_SECONDS`."""


def shortest_query_seconds(feature_extractor) -> float:
    """The shortest audio that yields one chunk: `chunk_frames` frames of the mel spectrogram (centred frames, so
    `(chunk_frames - 1) * hop_length` samples)."""
    return (feature_extractor.chunk_frames - 1) * feature_extractor.hop_length / feature_extractor.sampling_rate


def check_query_length(
    seconds: float, source: str, shortest: float, longest: float | None = None, use: str = "a search"
) -> None:
    """Raise `QueryTooShortError` (or `QueryTooLongError`) naming `source`, its length and the bound.

    `use` names what the audio is for ("a search", "an embedding"): the one sentence serves every caller."""
    if seconds < shortest:
        raise QueryTooShortError(
            f"`{source}` is {seconds:.2f} s long; {use} needs at least one chunk, {shortest:.2f} s of audio. "
            "Use a longer clip."
        )
    if longest is not None and seconds > longest:
        raise QueryTooLongError(
            f"`{source}` is {seconds / 60:.1f} min long; a query is at most {longest / 60:.0f} min. Cut the part "
            "you want to search for and use that."
        )
