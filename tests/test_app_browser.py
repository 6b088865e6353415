"""`myna app` in a real browser: the app serves a tiny generated library on a free localhost port, headless Chromium
(Debian's `chromium`, driven by Playwright through `executable_path`; no browser is downloaded) uploads a clip cut
from one of its tracks, and the page must list that track first with a player that starts at the segment the clip
was cut from; a click on the map plays a track and searches from it; a text file and a too-short clip are one
message each, and the app keeps serving. Screenshots of the search page and the map go to `$MYNA_APP_SCREENSHOTS`,
else to the test's temporary folder. `$MYNA_APP_INDEX` runs the same checks on an index of your own (its middle
track is the clip's source and the map's click); the screenshots of docs/app.md (docs/app/) are this test on the demo's
model and generated music:

    MYNA_APP_INDEX=index/ MYNA_APP_SCREENSHOTS=docs/app python -m pytest tests/test_app_browser.py

Skipped, with the reason, without Chromium (`make install` installs it on Debian, as root), Playwright or Gradio.
"""

import io
import os
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("faiss")
pytest.importorskip("gradio", reason="the app needs the `app` extra: pip install 'myna-hf[app]'")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (`dev` extra)")

from .app_support import cut_clip, make_library, write_not_audio, write_short_clip  # noqa: E402


def chromium() -> str | None:
    """Debian's Chromium (or `$MYNA_CHROMIUM`)."""
    for candidate in (os.environ.get("MYNA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


pytestmark = [
    pytest.mark.skipif(
        chromium() is None, reason="no Chromium: `apt-get install chromium` (make install does, as root on Debian)"
    ),
    pytest.mark.timeout(300),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on a tiny library, served from this process on a free localhost port."""
    from myna_pipelines.app import launch
    from myna_pipelines.explore import LibraryExplorer

    if os.environ.get("MYNA_APP_INDEX"):
        opened = LibraryExplorer.open(index=os.environ["MYNA_APP_INDEX"])
        source, clicked = len(opened) // 2, 0
    else:
        library = make_library(tmp_path_factory.mktemp("browser"))
        opened = LibraryExplorer.open(index=library["index"], layout="pca")
        source, clicked = opened.track_id("rock/song5.wav"), opened.track_id("jazz/song0.wav")
    port = free_port()
    demo = launch(opened, host="127.0.0.1", port=port, k=5, block=False, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "opened": opened, "source": source, "clicked": clicked}
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(served):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--enable-unsafe-swiftshader"]  # WebGL for the map
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(served["url"])
        page.wait_for_selector("#query-clip input[type=file]", state="attached")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> str:
    folder = os.environ.get("MYNA_APP_SCREENSHOTS") or str(tmp_path_factory.mktemp("screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


def overlap(a: dict, b: dict) -> bool:
    """Whether two client rectangles (`left`, `top`, `right`, `bottom`) share any area."""
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def upload(page, path: str) -> None:
    page.locator("#query-clip input[type=file]").set_input_files(path)


def message(page, contains: str) -> str:
    locator = page.locator("#search-message", has_text=contains)
    locator.wait_for()
    return locator.inner_text()


def clear_clip(page) -> None:
    """The clip box's ✕, so that the next file is a new upload."""
    clear = page.locator("#query-clip button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
        page.locator("#query-clip input[type=file]").wait_for(state="attached")


def test_bad_uploads_are_one_message_and_the_app_keeps_serving(page, tmp_path):
    upload(page, write_not_audio(str(tmp_path / "notes.wav")))
    assert "notes.wav cannot be read as audio: it is a text file" in message(page, "cannot be read as audio")
    clear_clip(page)
    upload(page, write_short_clip(str(tmp_path / "short.wav")))
    assert "a search needs at least one chunk" in message(page, "at least one chunk")
    clear_clip(page)


def test_an_uploaded_clip_finds_its_source_and_plays_the_matched_segment(page, served, tmp_path, screenshots):
    opened = served["opened"]
    source, name = opened.paths[served["source"]], opened.names[served["source"]]
    chunks = len(opened.track_chunks(served["source"])[0])
    assert chunks >= 2, f"{name} is shorter than two chunks: the clip is cut from its second chunk on"
    clip, start = cut_clip(source, str(tmp_path / "excerpt.wav"), first_chunk=1, chunks=min(3, chunks - 1))
    upload(page, clip)
    message(page, "nearest tracks to excerpt.wav")
    title = page.locator("#result-0-title").inner_text()
    assert title.startswith(f"1. {name} · score")

    # The first result's player plays the track from its best-matching 3 s: the segment the clip was cut from.
    expected = opened.search_clip(clip, k=1).results[0]
    assert expected["path"] == source
    segment = expected["segment_start"]
    assert segment == pytest.approx(start + expected["query_segment_start"], abs=1e-3)
    minutes, seconds = divmod(segment, 60)
    assert f"best 3 s at {int(minutes)}:{seconds:04.1f}" in title
    href = page.locator("#result-0-player a.download-link").get_attribute("href")
    stem = os.path.splitext(os.path.basename(source))[0]
    assert href.endswith(f"/{stem}-from-{segment:.2f}s.wav"), href
    with urllib.request.urlopen(href, timeout=30) as response:
        played, rate = sf.read(io.BytesIO(response.read()), dtype="float32")
    original, original_rate = sf.read(source, dtype="float32", always_2d=True)
    assert rate == original_rate
    first = int(round(segment * rate))
    np.testing.assert_allclose(played, original.mean(axis=1)[first : first + len(played)], atol=1e-4)
    page.locator("#result-0-timeline .js-plotly-plot").wait_for()  # its per-chunk timeline
    assert page.locator("#result-4-title").inner_text().startswith("5. ")  # k = 5 results shown
    page.wait_for_timeout(500)  # the players' waveforms
    page.screenshot(path=os.path.join(screenshots, "search.png"), full_page=True)


def test_a_click_on_the_map_plays_the_track_and_searches_from_it(page, served, screenshots):
    name = served["opened"].names[served["clicked"]]
    page.get_by_role("tab", name="Map").click()
    page.locator("#library-map .js-plotly-plot").wait_for()
    # Where the track's point is drawn, from the plot's own axes.
    point = page.evaluate(
        """(track) => {
          const gd = document.querySelector('#library-map .js-plotly-plot');
          const layout = gd._fullLayout, box = gd.getBoundingClientRect();
          for (const trace of gd._fullData) {
            const i = Array.from(trace.customdata).indexOf(track);
            if (i >= 0) return {x: box.left + layout._size.l + layout.xaxis.l2p(trace.x[i]),
                                y: box.top + layout._size.t + layout.yaxis.l2p(trace.y[i])};
          }
        }""",
        served["clicked"],
    )
    deadline = time.monotonic() + 30
    while page.locator("#map-player", has_text=f"Now playing: {name}").count() == 0:  # the hook is set within 0.3 s
        assert time.monotonic() < deadline, "a click on the map did nothing"
        page.mouse.move(point["x"], point["y"])
        page.mouse.click(point["x"], point["y"])
        page.wait_for_timeout(1500)
    page.locator("#map-nearest", has_text=name).wait_for()
    cells = [line.strip() for line in page.locator("#map-nearest").inner_text().splitlines() if line.strip()]
    first = cells.index(name)
    assert cells[first - 1 : first + 2] == ["1", name, "1"], cells  # rank, track, score
    page.mouse.move(point["x"], point["y"])  # its name on hover, for the screenshot
    page.wait_for_timeout(300)
    page.screenshot(path=os.path.join(screenshots, "map.png"), full_page=True)
    # The legend is below the points, clear of Plotly's toolbar (shown on hover) and of the hover label.
    boxes = page.evaluate(
        """() => {
          const gd = document.querySelector('#library-map .js-plotly-plot');
          const box = (selector) => {
            const r = gd.querySelector(selector).getBoundingClientRect();
            return {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
          };
          return {legend: box('.legend'), points: box('.nsewdrag'), toolbar: box('.modebar'),
                  hover: box('.hoverlayer')};
        }"""
    )
    legend, points, toolbar = boxes["legend"], boxes["points"], boxes["toolbar"]
    assert legend["top"] >= points["bottom"] - 1, boxes
    assert toolbar["right"] > toolbar["left"] and not overlap(legend, toolbar), boxes
    assert not overlap(legend, boxes["hover"]), boxes
    # The Track tab follows: the track's self-similarity.
    page.get_by_role("tab", name="Track").click()
    page.locator("#self-similarity .js-plotly-plot").wait_for()
    chunks = len(served["opened"].track_chunks(served["clicked"])[0])
    assert f"{chunks} chunks of 3 s" in page.locator("#track-message").inner_text()
