"""The documentation site in a real browser.

The site is built once per test session with Sphinx (warnings are errors), or taken from
``DOCS_BUILD_DIR`` when ``nox -s docs`` has just built it; a local HTTP server (the
standard library's, on a thread) serves it, and headless Chromium opens it through
playwright. Every page must load without a console error, a failed request or a request
that leaves the local server.

Skipped when the ``docs`` extra (Sphinx, myst-nb, playwright) is not installed, or when
no Chromium is found (``python -m playwright install chromium``, or Debian's
``apt-get install chromium``). ``nox -s docs`` installs the extra and runs this file.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the docs extra is not installed: pip install -e '.[docs]'"
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
GUIDE = "E2I_Digital_Twin_Implementation.html"
BUILD_ENV = "DOCS_BUILD_DIR"
SCREENSHOT = REPO_ROOT / "reports" / "docs" / "guide.png"
DEBIAN_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: Executed pages and the plots each must show at least.
IMAGE_PAGES = {
    "notebooks/01_quickstart.html": 4,
    "notebooks/02_fidelity.html": 2,
    "notebooks/03_agent_tools.html": 1,
    "results/calibration.html": 3,
    "results/benchmark.html": 1,
}
#: Built pages that are not documents of the toctree.
NOT_DOCUMENTS = {"genindex.html", "search.html", "py-modindex.html"}


# -- the site -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built HTML: ``DOCS_BUILD_DIR`` when set, else a fresh ``-W`` build."""
    given = os.environ.get(BUILD_ENV)
    if given:
        path = Path(given).resolve()
        assert (path / GUIDE).is_file(), f"{BUILD_ENV}={given} holds no {GUIDE}"
        return path
    out = tmp_path_factory.mktemp("docs-html")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)]
    build = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-6000:]
    return out


def _documents(site: Path) -> set[str]:
    """Every page of the toctree, as a path relative to the site."""
    skip = ("_static", "_sources", "_images", "_downloads", "_modules", ".doctrees")
    pages = set()
    for path in site.rglob("*.html"):
        rel = path.relative_to(site).as_posix()
        if rel in NOT_DOCUMENTS or rel.startswith(skip):
            continue
        pages.add(rel)
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def base_url(site_dir: Path) -> Iterator[str]:
    """The site served on loopback by ``http.server`` on a thread."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the browser --------------------------------------------------------------------------


def _chromium(playwright: Any) -> str | None:
    """Playwright's own Chromium (None: use it), else Debian's; skip when neither is there."""
    try:
        bundled = playwright.chromium.executable_path
    except Exception:  # noqa: BLE001 - a missing bundled browser is reported in several ways
        bundled = ""
    if bundled and Path(bundled).exists():
        return None
    for path in (*DEBIAN_CHROMIUM, shutil.which("chromium") or ""):
        if path and Path(path).exists():
            return path
    pytest.skip(
        "no Chromium: run `python -m playwright install chromium`, or `apt-get install chromium`"
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium through playwright."""
    with sync_api.sync_playwright() as playwright:
        executable = _chromium(playwright)
        chromium = playwright.chromium.launch(headless=True, executable_path=executable)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Visit:
    """A browser page and every problem it met."""

    page: Any
    base: str
    problems: list[str] = field(default_factory=list)

    def open(self, path: str, wait_until: str = "load") -> Any:
        """Go to ``path`` (relative to the site); the response must be 200."""
        url = urljoin(self.base, path)
        response = self.page.goto(url, wait_until=wait_until)
        assert response is not None and response.status == 200, f"{url}: {response}"
        return response

    def assert_clean(self) -> None:
        """No console error, page error, failed or non-local request so far."""
        assert not self.problems, "\n".join(self.problems[:30])


@pytest.fixture
def visit(browser: Any, base_url: str) -> Iterator[Visit]:
    """A fresh browser page that records console errors and failed or outside requests."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    v = Visit(page, base_url)

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            v.problems.append(f"console error on {page.url}: {msg.text}")

    def on_request(request: Any) -> None:
        url = request.url
        if not url.startswith(base_url) and not url.startswith(("data:", "about:", "blob:")):
            v.problems.append(f"request outside the site from {page.url}: {url}")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            v.problems.append(f"HTTP {response.status} for {response.url}")

    def on_request_failed(request: Any) -> None:
        failure = request.failure or ""
        # a request still pending when the test moves to the next page is cancelled
        if "ERR_ABORTED" not in failure:
            v.problems.append(f"request failed ({failure}): {request.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: v.problems.append(f"page error on {page.url}: {exc}"))
    page.on("request", on_request)
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    try:
        yield v
    finally:
        context.close()


# -- the tests ----------------------------------------------------------------------------


def _unlinked_references(page: Any) -> list[str]:
    """Cross-references of the page's text that resolved to no target."""
    return page.eval_on_selector_all(
        "article code.xref", "els => els.filter(e => !e.closest('a')).map(e => e.textContent)"
    )


@pytest.mark.parametrize(
    "path",
    [
        "concepts/twins.html",
        "concepts/model.html",
        "concepts/simulation.html",
        "concepts/decision.html",
        "concepts/sample-sizes.html",
        "concepts/fidelity.html",
        "api/index.html",
    ],
)
def test_concept_pages_link_into_the_reference(visit: Visit, path: str) -> None:
    visit.open(path)
    assert visit.page.locator("article h1").count() == 1
    assert _unlinked_references(visit.page) == []
    visit.assert_clean()


def test_the_guide_renders(visit: Visit) -> None:
    visit.open(GUIDE)
    page = visit.page
    assert "E2I Digital Twin Implementation" in page.title()
    assert page.locator("h1").first.inner_text().startswith("E2I Digital Twin Implementation")
    # the table of the specification's sections links every section 1-12 somewhere
    rows = page.locator("#guide-sections table tbody tr")
    assert rows.count() == 12
    for i in range(12):
        row = rows.nth(i)
        assert row.locator("td").first.inner_text().startswith(f"{i + 1}.")
        assert row.locator("td").last.locator("a").count() >= 1
    # every reference into the API reference resolved to a link
    assert _unlinked_references(page) == []
    # the stylesheet applied: furo's layout is there and the page has a real width
    assert page.locator(".sidebar-tree").count() == 1
    assert page.evaluate("document.documentElement.scrollHeight") > 2000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    visit.assert_clean()


def test_the_guide_links_resolve(visit: Visit) -> None:
    """Every link of the guide's section table lands on a page, and its anchor exists."""
    visit.open(GUIDE)
    hrefs = visit.page.eval_on_selector_all(
        "#guide-sections table a", "els => els.map(e => e.href)"
    )
    assert len(hrefs) >= 12
    for href in sorted(set(hrefs)):
        url, anchor = urldefrag(href)
        visit.open(url)
        if anchor:
            assert visit.page.locator(f"[id='{anchor}']").count() == 1, href
    visit.assert_clean()


def test_the_navigation_reaches_every_page(visit: Visit, site_dir: Path) -> None:
    """Crawl the toctree (the sidebar of every page) from the start page."""
    documents = _documents(site_dir)
    base = visit.base
    seen: set[str] = set()
    queue = ["index.html"]
    while queue:
        rel = queue.pop()
        if rel in seen:
            continue
        seen.add(rel)
        visit.open(rel, wait_until="domcontentloaded")
        assert visit.page.locator("article h1").count() >= 1, rel
        hrefs = visit.page.eval_on_selector_all(
            ".sidebar-tree a.reference, article .toctree-wrapper a.reference",
            "els => els.map(e => e.href)",
        )
        for href in hrefs:
            url, _ = urldefrag(href)
            if not url.startswith(base):
                continue
            target = urlparse(url).path.lstrip("/") or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if target not in seen:
                queue.append(target)
    assert documents <= seen, sorted(documents - seen)
    assert "E2I_Digital_Twin_Implementation.html" in seen
    assert {"api/index.html", "api/rest.html", *IMAGE_PAGES} <= seen
    visit.assert_clean()


def test_search_finds_assurance(visit: Visit) -> None:
    visit.open("search.html?q=assurance")
    page = visit.page
    page.wait_for_selector("#search-results .search-summary", timeout=60_000)
    results = page.locator("#search-results ul.search li")
    assert results.count() >= 1
    links = page.eval_on_selector_all(
        "#search-results ul.search li a", "els => els.map(e => e.getAttribute('href'))"
    )
    assert any("concepts/sample-sizes" in (link or "") for link in links), links
    visit.assert_clean()


@pytest.mark.parametrize("path", sorted(IMAGE_PAGES))
def test_executed_pages_show_their_images(visit: Visit, path: str) -> None:
    visit.open(path)
    page = visit.page
    images = page.locator("article img")
    count = images.count()
    assert count >= IMAGE_PAGES[path], f"{path}: {count} images"
    for i in range(count):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        image.evaluate(
            "img => img.complete ? null : new Promise(r => { img.onload = img.onerror = r; })"
        )
        width = image.evaluate("img => img.naturalWidth")
        assert width > 0, f"{path}: image {i} ({image.get_attribute('src')}) did not load"
    visit.assert_clean()
