"""The documentation site (mkdocs.yml, pages in docs/) builds with `mkdocs build --strict`: a broken link, a missing
anchor (`validation.links.anchors: warn`, made fatal by --strict), a page left out of the menu or a menu entry without
a page fails the build, and every heading of a page comes out as a heading (Python-Markdown reads a line that starts
with a tag, such as `<output>`, as raw HTML up to the next blank line, which silently swallows what follows).

Then the built site is served over HTTP from a thread (Material's search runs in a web worker that fetches its
index, which a `file://` page cannot) and headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`, as tests/test_app_browser.py does) clicks a menu entry and a tab, and searches: a result for a
word of one page links to that page. Skipped, with the reason, without mkdocs-material, Playwright or Chromium.
"""

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from .test_readme import ROOT, documentation_pages


pytest.importorskip("mkdocs", reason="the documentation site needs mkdocs (`dev` extra)")
pytest.importorskip("material", reason="the documentation site needs mkdocs-material (`dev` extra)")

FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def chromium() -> str | None:
    """Debian's Chromium (or `$MYNA_CHROMIUM`), as tests/test_app_browser.py finds it."""
    for candidate in (os.environ.get("MYNA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """The site, built strictly into a temporary folder."""
    folder = str(tmp_path_factory.mktemp("site"))
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", folder],
        cwd=ROOT, capture_output=True, text=True, check=False, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )  # fmt: skip
    problems = [line for line in built.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert built.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [built.stderr[-3000:]])
    return folder


def built_page(site: str, page: str) -> str:
    name = os.path.splitext(os.path.relpath(page, "docs"))[0]
    path = os.path.join(site, "index.html" if name == "index" else os.path.join(name, "index.html"))
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_the_site_builds_strictly_and_every_heading_renders(site):
    for page in documentation_pages()[1:]:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            source = FENCE.sub("", f.read())
        headings = re.findall(r"^#{1,6} .+$", source, re.MULTILINE)
        html = built_page(site, page)
        rendered = re.findall(r"<h([1-6]) id=", html)
        assert len(rendered) == len(headings), f"{page}: {len(headings)} headings in the source, {len(rendered)} built"
    assert os.path.isfile(os.path.join(site, "search", "search_index.json"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def title(page) -> str:
    """The page's h1, without the permalink's pilcrow."""
    return page.locator("article h1").inner_text().rstrip("¶").strip()


@pytest.fixture(scope="module")
def served(site):
    """The built site over HTTP, from a thread of this process."""
    handler = functools.partial(QuietHandler, directory=site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def page(served):
    playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (`dev` extra)")
    if chromium() is None:
        pytest.skip("no Chromium: `apt-get install chromium` (make install does, as root on Debian)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})  # wide: tabs and the side menu show
        page.set_default_timeout(30_000)
        page.goto(served + "/")
        yield page
        browser.close()


@pytest.mark.timeout(180)
def test_the_menu_and_the_tabs_change_the_page(page, served):
    page.goto(served + "/")
    assert title(page).startswith("Myna")
    page.locator(".md-tabs__link", has_text="Train").click()  # a tab opens its section's first page
    page.wait_for_url("**/pretraining/")
    assert title(page) == "Pre-training"
    page.locator(".md-sidebar--primary a.md-nav__link", has_text="Fine-tuning").first.click()
    page.wait_for_url("**/finetuning/")
    assert title(page) == "Fine-tuning"
    assert page.locator(".md-sidebar--primary .md-nav__link--active", has_text="Fine-tuning").count() >= 1


@pytest.mark.timeout(180)
def test_search_finds_the_page_that_holds_a_word(page, served):
    page.goto(served + "/")
    search = page.locator("input.md-search__input")
    search.click()
    search.press_sequentially("Krumhansl", delay=50)  # keystrokes, as Material listens for; one page's word
    result = page.locator(".md-search-result__item a").first
    result.wait_for()
    assert "dev-benchmark/" in result.get_attribute("href")
    result.click()
    page.wait_for_url("**/dev-benchmark/**")
    assert title(page) == "A real-audio development benchmark"
    assert "Krumhansl" in page.locator("article").inner_text()
