"""The one length rule for queries and tracks (`pipelines/query_rules.py`)."""

import pytest
from myna_pipelines.query_rules import (
    MAX_QUERY_SECONDS,
    QueryTooLongError,
    QueryTooShortError,
    check_query_length,
    shortest_query_seconds,
)

from modeling_myna import MynaFeatureExtractor


def test_shortest_query_is_one_chunk_of_the_feature_extractor():
    extractor = MynaFeatureExtractor()
    assert shortest_query_seconds(extractor) == pytest.approx(95 * 512 / 16000)
    # one chunk is what the extractor cuts from exactly that much audio, and nothing from less
    import numpy as np

    samples = round(shortest_query_seconds(extractor) * 16000)
    assert len(extractor(np.zeros(samples, np.float32), sampling_rate=16000)["input_values"]) == 1


def test_too_short_names_the_source_its_length_and_the_bound():
    with pytest.raises(
        QueryTooShortError, match=r"`clip.wav` is 0.20 s long; an embedding needs at least one chunk, 3.04 s"
    ):
        check_query_length(0.2, "clip.wav", 3.04, use="an embedding")
    check_query_length(3.04, "clip.wav", 3.04)  # exactly one chunk is enough


def test_too_long_only_when_a_bound_is_given():
    check_query_length(4000.0, "set.flac", 3.04)
    with pytest.raises(QueryTooLongError, match=r"`set.flac` is 66.7 min long; a query is at most 10 min"):
        check_query_length(4000.0, "set.flac", 3.04, MAX_QUERY_SECONDS)
