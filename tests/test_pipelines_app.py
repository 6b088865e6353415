"""`myna app` without a browser: what `LibraryExplorer` opens and finds (a clip's source first, the segment it was
cut from, timelines, the map, metadata colours), its caches, every bad input as one message, the figures and the
command line. tests/test_app_browser.py drives the page itself."""

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("faiss")

from myna_pipelines.cli import main  # noqa: E402
from myna_pipelines.explore import CACHE_DIR, LibraryError, LibraryExplorer, compute_layout, layout_method  # noqa: E402
from myna_pipelines.library import embed_library  # noqa: E402
from myna_pipelines.store import EmbeddingStore  # noqa: E402

from .app_support import (  # noqa: E402
    cut_clip,
    files_under,
    free_port,
    make_library,
    serve_command,
    write_not_audio,
    write_short_clip,
)
from .pipelines_support import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def opened(library):
    return LibraryExplorer.open(index=library["index"], layout="pca")


def test_a_clip_finds_its_source_and_the_segment_it_was_cut_from(opened, library, tmp_path):
    assert len(opened) == 8 and opened.has_timelines and opened.problems == []
    for source in library["paths"][:4]:
        clip, start = cut_clip(source, str(tmp_path / "clip.wav"), first_chunk=1, chunks=3)
        found = opened.search_clip(clip, k=3)
        best = found.results[0]
        assert best["path"] == source and best["score"] > found.results[1]["score"]
        assert found.query == "clip.wav" and found.query_duration == pytest.approx(3 * 3.072, abs=1e-3)
        # The query's chunk q matched the track's chunk at start + q: the segment the clip was cut from.
        assert best["segment_start"] == pytest.approx(start + best["query_segment_start"], abs=1e-3)
        assert len(best["timeline_scores"]) == len(best["timeline_starts"]) == 4  # the track's four chunks
        assert max(best["timeline_scores"]) == pytest.approx(best["segment_score"])
    # As `myna search --segments` finds them.
    expected = opened.index.search_audio(clip, k=3, segments=True)
    assert [(r["path"], r["segment_start"]) for r in expected] == [
        (r["path"], r["segment_start"]) for r in found.results
    ]


def test_a_track_of_the_library_finds_itself_and_its_own_timeline(opened, library):
    found = opened.search_track("rock/song3.wav", k=4)
    assert found.results[0]["path"] == library["paths"][3] and found.results[0]["score"] == pytest.approx(1.0)
    track = opened.track_id("rock/song3.wav")
    assert opened.search_track(track, k=4).results == found.results
    matrix, starts = opened.self_similarity(track)
    assert matrix.shape == (4, 4) and np.allclose(np.diag(matrix), 1.0, atol=1e-5) and np.allclose(matrix, matrix.T)
    np.testing.assert_allclose(starts, np.arange(4) * 3.072, atol=1e-3)
    with pytest.raises(LibraryError, match="not a track of this library"):
        opened.search_track("nope.wav")


def test_names_map_and_metadata_columns(opened, library, tmp_path):
    assert opened.names[:2] == ["jazz/song0.wav", "jazz/song2.wav"] and opened.find("ROCK/SONG")[0] == "rock/song1.wav"
    assert opened.layout.shape == (8, 2) and opened.layout_method == "pca" and np.isfinite(opened.layout).all()
    columns = opened.columns
    assert set(columns) >= {"folder", "format", "duration (s)", "style", "tempo"}
    assert columns["folder"].values == ["jazz"] * 4 + ["rock"] * 4 and not columns["folder"].numeric
    assert columns["duration (s)"].numeric and all(v == pytest.approx(12.388, abs=1e-3) for v in columns["duration (s)"].values)
    assert None not in columns["style"].values  # from the metadata.csv beside each folder's tracks
    assert opened.default_colour == "folder"

    tags = tmp_path / "tags.csv"  # a CSV of its own: absolute paths, or names relative to the CSV
    tags.write_text(f"path,mood\n{library['paths'][0]},calm\n{os.path.relpath(library['paths'][1], tmp_path)},loud\n")
    tagged = LibraryExplorer.open(index=library["index"], metadata=[str(tags)], load_query_model=False)
    tagged.columns["folder"].values = ["all"] * 8  # one folder: the map is coloured by a column of a few labels
    assert tagged.default_colour == "mood"  # the first (the CSV given comes before those found)
    mood = tagged.column("mood").values
    assert mood[tagged.track_id("jazz/song0.wav")] == "calm" and mood[tagged.track_id("rock/song1.wav")] == "loud"
    assert sum(v is None for v in mood) == 6
    with pytest.raises(LibraryError, match="no metadata column"):
        tagged.column("genre")


def test_the_segment_player_starts_at_the_segment(opened, library):
    clip = opened.segment_clip(opened.track_id("rock/song1.wav"), 3.072, seconds=4.0)
    played, rate = sf.read(clip, dtype="float32")
    source, _ = sf.read(library["paths"][1], dtype="float32")
    assert rate == 16_000 and len(played) == 4 * 16_000 and clip.endswith("song1-from-3.07s.wav")
    np.testing.assert_allclose(played, source[49152 : 49152 + len(played)], atol=1e-4)  # 16-bit WAV


def test_concurrent_searches_write_their_segments_without_error(library):
    # Gradio runs searches in several threads, and each writes the WAV segments of its results: a temporary name
    # shared by two writers of one segment made the second rename fail (FileNotFoundError).
    opened = LibraryExplorer.open(index=library["index"], load_query_model=False)  # a clips folder of its own
    together = threading.Barrier(4, timeout=60)

    def searches(_) -> list[str | None]:
        written = []
        for call in range(20):
            together.wait()  # each round, the four threads write the same new segments at once
            for result in opened.search_track("rock/song1.wav", k=3).results:
                written.append(opened.segment_clip(result["id"], result["segment_start"] + call * 0.01, 1.0))
        return written

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(searches, range(4)))
    assert all(outcome == outcomes[0] for outcome in outcomes) and len(set(outcomes[0])) == 20 * 3
    assert all(sf.info(path).frames == 16_000 for path in outcomes[0])
    assert not [name for _, _, names in os.walk(opened.clips_folder) for name in names if ".tmp" in name]


def test_caches_are_written_once_and_follow_the_store(library, tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for path in library["paths"][:3]:
        shutil.copy(path, music)
    store = str(tmp_path / "store")
    embed_library([str(music)], store, library["model"], timeline=True, num_workers=0, progress=False)
    first = LibraryExplorer.open(store=store, layout="pca", load_query_model=False)
    cache = os.path.join(store, ".myna", "index", CACHE_DIR)
    names = sorted(os.listdir(cache))
    assert names == ["cache.json", "chunk_offsets.npy", "chunk_starts.npy", "chunks.npy", "layout-pca.npy",
                     "vectors.npy"]  # fmt: skip
    stamps = {n: os.stat(os.path.join(cache, n)).st_mtime_ns for n in names if n != "cache.json"}
    again = LibraryExplorer.open(store=store, layout="pca", load_query_model=False)
    assert {n: os.stat(os.path.join(cache, n)).st_mtime_ns for n in stamps} == stamps  # read, not computed
    np.testing.assert_array_equal(again.layout, first.layout)
    np.testing.assert_array_equal(np.asarray(again.chunks), np.asarray(first.chunks))

    # A track added to the store: the index and the caches are built again.
    shutil.copy(library["paths"][3], music / "added.wav")
    embed_library([str(music)], store, library["model"], timeline=True, num_workers=0, progress=False)
    grown = LibraryExplorer.open(store=store, layout="pca", load_query_model=False)
    assert len(grown) == grown.index.info["count"] == 4 and len(grown.layout) == 4
    chunks, _ = grown.track_chunks(grown.track_id("added.wav"))
    np.testing.assert_allclose(chunks, opened_chunks(library, "rock/song3.wav"), atol=1e-6)


def opened_chunks(library, name):
    full = LibraryExplorer.open(index=library["index"], load_query_model=False)
    return full.track_chunks(full.track_id(name))[0]


def test_a_read_only_index_folder_computes_in_memory(library, tmp_path, monkeypatch):
    import myna_pipelines.explore_cache as explore_cache

    index = tmp_path / "index"
    shutil.copytree(library["index"], index, ignore=shutil.ignore_patterns(CACHE_DIR))
    monkeypatch.setattr(explore_cache, "_writable", lambda folder: False)  # as a read-only folder (root can write anyway)
    opened = LibraryExplorer.open(index=str(index), load_query_model=False)
    assert not os.path.exists(index / CACHE_DIR / "chunks.npy") and any("not writable" in p for p in opened.problems)
    assert opened.has_timelines and opened.self_similarity(0)[0].shape == (4, 4) and opened.layout.shape == (8, 2)


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_clips_are_one_message(opened, tmp_path):
    with pytest.raises(LibraryError, match=r"^`notes.wav` cannot be read as audio: it is a text file, not audio .* Upload a wav"):
        opened.search_clip(write_not_audio(str(tmp_path / "notes.wav")))
    with pytest.raises(LibraryError, match=r"`short.wav` is 1.00 s long; a search needs at least one chunk, 3.04 s"):
        opened.search_clip(write_short_clip(str(tmp_path / "short.wav")))
    assert opened.search_clip(write_short_clip(str(tmp_path / "enough.wav"), 3.1), k=1).results  # one chunk will do


def test_a_query_longer_than_ten_minutes_is_refused_before_it_is_decoded(opened, tmp_path, monkeypatch):
    import modeling_myna.audio_utils as audio_utils
    from myna_pipelines.query_rules import MAX_QUERY_SECONDS

    concert = str(tmp_path / "concert.wav")
    sf.write(concert, np.zeros(int((MAX_QUERY_SECONDS + 60) * 1000), np.int16), 1000, subtype="PCM_16")  # 11 min
    decoded, load_audio = [], audio_utils.load_audio

    def decoding(source, **options):
        decoded.append(source)
        return load_audio(source, **options)

    monkeypatch.setattr(audio_utils, "load_audio", decoding)
    with pytest.raises(LibraryError, match=r"^`concert.wav` is 11.0 min long; a query is at most 10 min\. Cut"):
        opened.search_clip(concert)
    assert decoded == []  # refused from its header
    clip, _ = cut_clip(opened.paths[0], str(tmp_path / "clip.wav"))
    assert opened.search_clip(clip, k=1).results and decoded == [clip]  # a clip within the bounds: decoded once


def test_another_models_store_turns_clip_search_off_not_the_app(library, tmp_path):
    other = save_tiny_model(tmp_path / "other", variant="base", seed=1)
    opened = LibraryExplorer.open(index=library["index"], model=other, load_query_model=True)
    assert opened.query_problem and "another model" in opened.query_problem and opened.query_problem in opened.problems
    with pytest.raises(LibraryError, match="embedded with another model"):
        opened.search_clip(library["paths"][0])
    assert opened.search_track(0, k=2).results[0]["id"] == 0  # the map and the library's own tracks still work
    missing = LibraryExplorer.open(index=library["index"], model=str(tmp_path / "missing"))
    assert "could not be loaded" in missing.query_problem


def test_an_empty_store_and_a_store_without_timelines_open_with_a_message(library, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    opened = LibraryExplorer.open(store=str(empty))
    assert len(opened) == 0 and "holds no embeddings yet" in opened.problems[0] and "myna embed" in opened.problems[0]
    with pytest.raises(LibraryError, match="holds no embeddings yet"):
        opened.search_clip(library["paths"][0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LibraryExplorer.open(store=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="not a Myna index"):
        LibraryExplorer.open(index=str(empty))

    plain = tmp_path / "plain"
    embed_library([library["paths"][0], library["paths"][1]], str(plain), library["model"], num_workers=0,
                  progress=False)  # fmt: skip
    opened = LibraryExplorer.open(store=str(plain), load_query_model=False)
    assert not opened.has_timelines and "--timeline --overwrite" in opened.problems[0]
    assert "segment_start" not in opened.search_track(0, k=1).results[0]
    with pytest.raises(LibraryError, match="no per-chunk timelines"):
        opened.self_similarity(0)


def test_an_index_of_another_store_says_so(library, tmp_path):
    other = tmp_path / "other-store"
    other_model = save_tiny_model(tmp_path / "m", variant="base", seed=2)
    embed_library([library["paths"][0]], str(other), other_model, timeline=True, num_workers=0, progress=False)
    opened = LibraryExplorer.open(index=library["index"], store=str(other), load_query_model=False)
    assert any("holds embeddings of" in p for p in opened.problems)
    assert any("differ" in p for p in opened.problems)


# ------------------------------------------------------------------------------------------------ the map


def test_layouts():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    assert compute_layout(vectors, "pca").shape == (40, 2)
    assert compute_layout(vectors[:2], "pca").shape == (2, 2) and compute_layout(vectors[:0], "pca").shape == (0, 2)
    assert layout_method("pca", 10_000) == "pca" and layout_method("auto", 5) == "pca"
    with pytest.raises(ValueError, match="not one of"):
        layout_method("tsne", 100)


def test_map_figure_holds_50k_points_in_one_gl_trace_per_colour():
    pytest.importorskip("plotly")
    from myna_pipelines.app import map_figure
    from myna_pipelines.explore import Column

    n = 50_000
    rng = np.random.default_rng(0)
    fake = LibraryExplorer(None, "store", [f"/m/{i % 30}/t{i}.wav" for i in range(n)], np.zeros((n, 1), np.float32),
                           np.full(n, 30.0), rng.standard_normal((n, 2)).astype(np.float32), "pca")  # fmt: skip
    fake.columns = {
        "folder": Column("folder", [str(i % 30) for i in range(n)]),
        "tempo": Column("tempo", [float(i % 200) for i in range(n)], numeric=True),
    }
    figure = map_figure(fake, "folder")
    assert {trace.type for trace in figure.data} == {"scattergl"} and len(figure.data) == 21  # 20 colours + other
    assert sum(len(trace.x) for trace in figure.data) == n
    ids = np.concatenate([trace.customdata for trace in figure.data])
    assert sorted(ids.tolist()) == list(range(n))
    numeric = map_figure(fake, "tempo")
    assert len(numeric.data) == 1 and numeric.data[0].marker.showscale


def test_the_maps_legend_and_colour_bar_are_below_the_points(opened):
    # On the right, Plotly's toolbar covered the legend's title and hover labels ran over it.
    pytest.importorskip("plotly")
    from myna_pipelines.app import map_figure

    legend = map_figure(opened, "folder").layout.legend
    assert legend.orientation == "h" and legend.y <= 0 and legend.yanchor == "top" and legend.title.text == "folder"
    bar = map_figure(opened, "duration (s)").data[-1].marker.colorbar  # a numeric column: a colour bar
    assert bar.orientation == "h" and bar.y <= 0 and bar.yanchor == "top" and bar.title.text == "duration (s)"


# ------------------------------------------------------------------------------------------------ the command


def test_app_command_prepares_and_refuses_mistakes(library, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(library["store"], store)
    assert main(["app", "--store", str(store), "--prepare", "--layout", "pca"]) == 0
    assert "8 tracks, map by PCA, timelines" in capsys.readouterr().err
    info = json.load(open(store / ".myna" / "index" / "index.json"))
    assert info["count"] == 8 and os.path.exists(store / ".myna" / "index" / CACHE_DIR / "layout-pca.npy")
    assert main(["app", "--index", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["app"])  # neither --index nor --store
    with pytest.raises(SystemExit):
        main(["app", "--index", library["index"], "-k", "0"])
    assert "between 1 and" in capsys.readouterr().err


def test_myna_app_serves_its_page_answers_a_search_and_leaves_no_temporary_files(library, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    temporary = tmp_path / "tmp"  # the server's temporary folder: the players' WAVs and Gradio's cache
    temporary.mkdir()
    clip, _ = cut_clip(library["paths"][2], str(tmp_path / "clip.wav"))
    with serve_command(["--index", library["index"], "-k", "3"], env={"TMPDIR": str(temporary)}) as served:
        client = Client(served.url, verbose=False, download_files=False)
        answer = client.predict(handle_file(clip), None, 3, api_name="/search")
        client.predict("rock/song1.wav", api_name="/show_track")  # a whole track played
        client.close()  # its heartbeat stream would hold the server's graceful shutdown open until it is collected
        assert "3 nearest tracks to **clip.wav**" in answer[0] and "**1. jazz/song2.wav** · score" in str(answer)
        written = files_under(temporary)
    port = served.url.split(":")[-1].strip("/")
    assert f"serving on http://127.0.0.1:{port}" in served.err and "8 tracks, map by" in served.err
    assert "myna app: stopped" in served.err and served.returncode == 0
    assert "warning" not in served.err  # served to this machine alone
    # While it served: the results' WAVs and Gradio's copies of them, of the uploaded clip and of the played track.
    assert sum(name.startswith("myna-app-clips-") and name.endswith(".wav") for name in written) == 3, written
    assert any(name.startswith("gradio") and name.endswith("/song1.wav") for name in written), written
    assert any(name.startswith("gradio") and name.endswith("/clip.wav") for name in written), written
    assert files_under(temporary) == [] and not [n for n in os.listdir(temporary) if n.startswith("myna-app-clips-")]


def test_myna_app_on_an_empty_store_answers_a_clip_search_at_once(library, tmp_path):
    # The command serves the page, then loads the query model; with nothing to index there is no model to load,
    # and a search by a clip waited for it for ever.
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    empty = tmp_path / "empty"
    empty.mkdir()
    clip, _ = cut_clip(library["paths"][2], str(tmp_path / "clip.wav"))
    with serve_command(["--store", str(empty)]) as served:
        client = Client(served.url, verbose=False, download_files=False)
        try:  # at once: well within the 2 minutes a search waits for a model still loading
            answer = client.submit(handle_file(clip), None, 3, api_name="/search").result(timeout=30)
        finally:
            client.close()
    assert answer[0].startswith("⚠️ The store `") and "holds no embeddings yet" in answer[0], answer[0]
    assert served.returncode == 0 and "holds no embeddings yet" in served.err


def test_a_search_waits_for_the_query_model_a_bounded_time(library, tmp_path, monkeypatch):
    from myna_pipelines import explore

    opened = LibraryExplorer.open(index=library["index"], load_query_model=False)
    opened.expect_query_model()  # as the app does before it serves; here the model never comes
    monkeypatch.setattr(explore, "QUERY_MODEL_WAIT_SECONDS", 1.0, raising=False)
    clip, _ = cut_clip(library["paths"][0], str(tmp_path / "clip.wav"))
    outcome = []
    searching = threading.Thread(target=lambda: outcome.append(_raised(opened.search_clip, clip)), daemon=True)
    searching.start()
    searching.join(timeout=30)
    assert outcome, "a search by a clip still waits for the query model after 30 s"
    assert isinstance(outcome[0], LibraryError) and "still loading after 1 s: search again" in str(outcome[0])
    assert opened.search_track(0, k=1).results[0]["id"] == 0  # a track of the library answers meanwhile


def _raised(function, *args) -> Exception | None:
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001  (returned, and asserted by the caller)
        return error
    return None


def test_the_page_serves_the_audio_it_played_and_nothing_else_of_the_library(library, opened):
    # Gradio serves everything below an allowed folder: a key or a web page beside a track came back.
    pytest.importorskip("gradio")
    import httpx
    from gradio_client import Client

    from myna_pipelines.app import launch

    jazz = os.path.dirname(library["paths"][0])
    os.makedirs(os.path.join(jazz, ".ssh"), exist_ok=True)
    secret, page = os.path.join(jazz, ".ssh", "id_rsa"), os.path.join(jazz, "x.html")
    with open(secret, "w") as f:
        f.write("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    with open(page, "w") as f:
        f.write("<script>alert('from the library page')</script>\n")
    port = free_port()
    demo = launch(opened, "127.0.0.1", port, k=2, block=False, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        note, played, _ = client.predict("jazz/song0.wav", api_name="/show_track")  # the Track tab plays it
        client.close()
        assert note.startswith("4 chunks of 3 s") and played["path"].endswith("song0.wav")

        def fetch(path: str) -> httpx.Response:
            return httpx.get(f"http://127.0.0.1:{port}/gradio_api/file={path}", timeout=30)

        for refused in (secret, page, library["paths"][1], jazz):  # a track not played, the folder itself
            response = fetch(refused)
            assert response.status_code == 403, (refused, response.status_code, response.headers["content-type"])
        track = fetch(library["paths"][0])
        with open(library["paths"][0], "rb") as f:
            assert track.status_code == 200 and track.content == f.read()
        assert fetch(played["path"]).status_code == 200  # Gradio's copy, which the player fetches
    finally:
        demo.close()


def test_launch_limits_uploads_and_asks_for_a_login(opened):
    pytest.importorskip("gradio")
    import httpx

    from myna_pipelines.app import launch

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    demo = launch(opened, "127.0.0.1", port, k=2, block=False, quiet=True, max_upload_mb=1, auth=("me", "a-pass"))
    try:
        upload = f"{url}/gradio_api/upload"
        assert httpx.post(upload, files={"files": ("clip.wav", b"x" * 1000)}).status_code == 401  # no login
        with httpx.Client() as session:
            assert session.post(f"{url}/login", data={"username": "me", "password": "wrong"}).status_code == 400
            assert session.post(f"{url}/login", data={"username": "me", "password": "a-pass"}).status_code == 200
            assert session.post(upload, files={"files": ("clip.wav", b"x" * 1000)}).status_code == 200
            too_big = session.post(upload, files={"files": ("clip.wav", b"x" * (2 << 20))})  # 2 MB
            assert too_big.status_code == 413 and "maximum allowed size" in too_big.text
    finally:
        demo.close()


def test_myna_app_warns_when_shared_and_passes_its_login_and_upload_limit(tmp_path, monkeypatch, capsys):
    import myna_pipelines.app as app

    launched = []

    class Served:
        def block_thread(self):  # as if Ctrl+C came at once
            pass

    def fake_launch(library, host, port, k, **options):
        launched.append({"host": host, "port": port, **options})
        return Served()

    monkeypatch.setattr(app, "launch", fake_launch)
    empty = tmp_path / "empty"
    empty.mkdir()
    store = ["app", "--store", str(empty), "--port", "8080"]
    assert main(store + ["--host", "0.0.0.0", "--auth", "me:a:pass", "--max_upload_mb", "5"]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if "warning" in line)
    assert "--host 0.0.0.0 serves beyond this machine: anyone who reaches port 8080 can search the library" in warning
    assert "--auth" not in warning  # it has a login already
    assert launched[-1]["auth"] == ("me", "a:pass") and launched[-1]["max_upload_mb"] == 5
    assert main(store + ["--host", "192.168.1.20"]) == 0
    assert "--auth USER:PASSWORD asks for a login" in capsys.readouterr().err and launched[-1]["auth"] is None
    assert launched[-1]["max_upload_mb"] == 200  # the default
    for loopback in ("127.0.0.1", "localhost", "::1"):
        assert main(store + ["--host", loopback]) == 0
        assert "warning" not in capsys.readouterr().err
    for bad, said in (
        (["--auth", "me"], "--auth takes USER:PASSWORD"),
        (["--auth", ":a-pass"], "--auth takes USER:PASSWORD"),
        (["--max_upload_mb", "0"], "--max_upload_mb must be positive"),
    ):
        with pytest.raises(SystemExit):
            main(store + bad)
        assert said in capsys.readouterr().err


def test_the_app_builds_its_page(opened):
    gr = pytest.importorskip("gradio")
    from myna_pipelines.app import create_app

    demo = create_app(opened, k=3)
    assert isinstance(demo, gr.Blocks)
    ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert {"query-clip", "query-track", "library-map", "map-click", "self-similarity", "result-0-player"} <= ids
    assert EmbeddingStore(opened.store).exists()


# ------------------------------------------------------------------------------------------------ the Space


def load_space_app():
    import importlib.util

    spec = importlib.util.spec_from_file_location("space_app", os.path.join(ROOT, "space", "app.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_space_runs_the_app_on_a_moved_store_with_its_prepared_caches(library, tmp_path, monkeypatch):
    # Prepared where the music is, then uploaded: the store (with .myna/index) and the music in another folder.
    local = tmp_path / "local"
    shutil.copytree(library["store"], local / "store")
    assert main(["app", "--store", str(local / "store"), "--prepare", "--layout", "pca"]) == 0
    space = tmp_path / "space"
    shutil.copytree(os.path.join(ROOT, "space"), space)
    shutil.copytree(local / "store", space / "store")
    shutil.copytree(os.path.join(library["root"], "music"), space / "music")
    cache = space / "store" / ".myna" / "index" / CACHE_DIR
    stamps = {name: os.stat(cache / name).st_mtime_ns for name in os.listdir(cache) if name.endswith(".npy")}

    monkeypatch.setenv("MYNA_MODEL", library["model"])
    app = load_space_app()
    app.HERE = str(space)  # as if it ran from the Space's folder
    opened = app.open_library()
    assert len(opened) == 8 and opened.problems == [] and opened.query_problem is None
    assert {name: os.stat(cache / name).st_mtime_ns for name in stamps} == stamps  # the caches came along
    track = opened.track_id("rock/song1.wav")
    assert opened.audio_path(track) == str(space / "music" / "rock" / "song1.wav")
    assert opened.segment_clip(track, 3.072, 1.0).endswith("song1-from-3.07s.wav")
    assert opened.search_clip(str(space / "music" / "rock" / "song1.wav"), k=1).results[0]["id"] == track
    assert None not in opened.column("style").values  # metadata.csv found beside the moved music

    monkeypatch.setenv("MYNA_STORE", "no-store")
    empty = app.open_library()
    assert len(empty) == 0 and "No store at" in empty.problems[0]


def test_the_space_readme_has_the_front_matter_a_space_needs():
    yaml = pytest.importorskip("yaml")
    text = open(os.path.join(ROOT, "space", "README.md"), encoding="utf-8").read()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and os.path.exists(os.path.join(ROOT, "space", "app.py"))
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        app_extra = tomllib.load(f)["project"]["optional-dependencies"]["app"]
    from packaging.specifiers import SpecifierSet

    gradio_pin = next(r for r in app_extra if r.startswith("gradio"))
    assert SpecifierSet(gradio_pin[len("gradio") :]).contains(front["sdk_version"])  # the Gradio the app is pinned to
