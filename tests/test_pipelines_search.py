"""`myna index` / `myna search` and `MynaIndex`: a track's own copy (also re-encoded as mp3) comes first, the best
segment comes from the timelines, a hybrid store indexes the half asked for, other models are refused, and the
approximate kinds agree with exact search."""

import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("faiss")

from myna_pipelines.cli import main  # noqa: E402
from myna_pipelines.library import embed_library  # noqa: E402
from myna_pipelines.search import MynaIndex, build_index, make_index, normalize  # noqa: E402
from myna_training.synthetic import generate_clip  # noqa: E402

from .pipelines_support import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Six generated songs (different keys, styles, tempi), embedded with timelines into a store."""
    root = tmp_path_factory.mktemp("search")
    model = save_tiny_model(root / "model", variant="hybrid")
    music = root / "music"
    music.mkdir()
    for i in range(6):
        audio, _ = generate_clip([7, i], duration=10.0, style=i % 5)
        sf.write(str(music / f"song{i}.wav"), audio, 16_000, subtype="FLOAT")
    store = root / "store"
    embed_library([str(music)], str(store), model, timeline=True, num_workers=0, progress=False)
    return {"root": root, "model": model, "music": music, "store": str(store)}


def test_a_track_and_its_mp3_find_the_track_first(library, tmp_path):
    index = build_index(library["store"], str(tmp_path / "index"))
    assert index.info["kind"] == "flat" and index.info["count"] == 6 and index.info["dim"] == 64

    loaded = MynaIndex.load(str(tmp_path / "index"))
    original = str(library["music"] / "song3.wav")
    results = loaded.search_audio(original, k=3)
    assert results[0]["path"] == original and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [r["rank"] for r in results] == [0, 1, 2] and results[1]["score"] <= results[0]["score"]

    # The same audio re-encoded as a 44.1 kHz mp3: other bytes, other rate, lossy; still its own track first.
    audio, rate = sf.read(original)
    mp3 = tmp_path / "copy.mp3"
    sf.write(str(mp3), np.interp(np.arange(0, len(audio), rate / 44_100), np.arange(len(audio)), audio), 44_100)
    results = loaded.search_audio(str(mp3), k=6, segments=True)
    assert results[0]["path"] == original and results[0]["score"] > results[1]["score"]
    assert results[0]["segment_start"] == results[0]["query_segment_start"]  # the same 3 s match each other


def test_hybrid_store_indexes_the_chosen_half(library, tmp_path):
    square = build_index(library["store"], str(tmp_path / "square"), patch_mode="square")
    vertical = build_index(library["store"], str(tmp_path / "vertical"), patch_mode="vertical")
    assert square.info["dim"] == vertical.info["dim"] == 32 and square.info["patch_mode"] == "square"
    original = str(library["music"] / "song1.wav")
    for index in (square, vertical):
        assert index.search_audio(original, k=1)[0]["path"] == original


def test_the_index_refuses_another_model(library, tmp_path):
    build_index(library["store"], str(tmp_path / "index"))
    index = MynaIndex.load(str(tmp_path / "index"))
    other = save_tiny_model(tmp_path / "other", variant="hybrid", seed=1)
    with pytest.raises(ValueError, match="built with the model .* not comparable"):
        index.search_audio(str(library["music"] / "song0.wav"), model=other)
    with pytest.raises(ValueError, match="fingerprint"):
        index.search(np.ones(64), model_fingerprint="0" * 32)
    assert main(["search", str(tmp_path / "index"), str(library["music"] / "song0.wav"), "--model", other]) == 1


def test_index_and_search_commands(library, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["index", library["store"], "--output", str(index)]) == 0
    assert "indexed 6 tracks (both embeddings, 64 wide, flat)" in capsys.readouterr().out
    query = str(library["music"] / "song5.wav")
    assert main(["search", str(index), query, "-k", "2", "--json", "--segments"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["query"] == query and len(answer["results"]) == 2 and answer["results"][0]["path"] == query
    # An existing index is not replaced without --overwrite (one line, exit status 2).
    assert main(["index", library["store"], "--output", str(index)]) == 2
    assert "holds an index; pass --overwrite" in capsys.readouterr().err
    # A mistyped index folder is named as missing, with the command that builds it.
    assert main(["search", str(tmp_path / "indx"), query]) == 1
    assert f"no index at {tmp_path / 'indx'} (no such folder): build one with `myna index" in capsys.readouterr().err


def test_a_query_shorter_than_one_chunk_is_refused_in_the_pages_words(library, tmp_path, capsys):
    # Before, a 0.2 s clip was zero-padded to one chunk of near silence and searched (scores about 0.05).
    from myna_pipelines.query_rules import QueryTooShortError

    index = tmp_path / "index"
    build_index(library["store"], str(index))
    clip = str(tmp_path / "clip.wav")
    sf.write(clip, np.random.default_rng(0).uniform(-0.5, 0.5, 3_200), 16_000)  # 0.2 s
    message = f"`{clip}` is 0.20 s long; a search needs at least one chunk, 3.04 s of audio. Use a longer clip."
    with pytest.raises(QueryTooShortError) as error:
        MynaIndex.load(str(index)).search_audio(clip)
    assert str(error.value) == message
    assert main(["search", str(index), clip]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [f"myna search: {message}"]  # and no loading bar (load_model)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_exact_search(kind):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 32))
    vectors = normalize(centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 32)))
    queries = normalize(vectors[:50] + 0.05 * rng.standard_normal((50, 32)))
    _, exact = make_index(vectors, "flat").search(queries, 10)
    _, approximate = make_index(vectors, kind).search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert recall >= 0.9
