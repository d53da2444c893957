"""The website and the decks, built and opened in a real (headless) Chromium.

Builds ``build/slides/`` and ``build/site/`` as ``make slides`` and ``make site`` do, serves
``build/`` on a free loopback port, and asserts what a reader would notice: every page loads
without a console error, math is typeset (no raw ``$$``/``\\(``), every image loads, the
navigation reaches every notebook with all its stored figures, search finds a page, and every
deck starts and advances. Screenshots go to ``build/web-check/``. Needs the Debian packages
``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``); without
them the test is skipped, saying so. Run it with ``make test-web``.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest

from course.sections import course_notebooks, figures, read_outline
from course.slides import horizontal_titles
from helpers import BUILD_DIR, REPO_ROOT

pytestmark = [pytest.mark.web, pytest.mark.slow, pytest.mark.timeout(1800)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = BUILD_DIR / "web-check"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--window-size=1280,800",
]
MATHJAX_DONE = """if (!document.querySelector('script[src*="mathjax/"]')) return true;
if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) return false;
if (!window.__courseHooked) {
  window.__courseHooked = true;
  MathJax.startup.promise.then(() => { window.__courseTypeset = true; });
}
return window.__courseTypeset === true;"""
PROSE_TEXT = """const copy = document.body.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, .highlight, textarea').forEach(e => e.remove());
return copy.textContent;"""
BROKEN_IMAGES = """return Array.from(document.images)
  .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120));"""


def require_browser() -> None:
    if not CHROMIUM or not Path(CHROMEDRIVER).is_file():
        pytest.skip(
            "headless Chromium not installed: install the Debian packages chromium and "
            "chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    pytest.importorskip("selenium", reason="the selenium package is not installed (pip)")


@pytest.fixture(scope="module")
def server():
    """Build the decks and the site, then serve build/ on 127.0.0.1 (a free port)."""
    require_browser()
    for module in ("course.slides", "course.site"):
        subprocess.run([sys.executable, "-m", module], cwd=REPO_ROOT, check=True, timeout=600)
    handler = functools.partial(Quiet, directory=str(BUILD_DIR))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    SHOTS.mkdir(parents=True, exist_ok=True)
    (BUILD_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=BUILD_DIR / "tmp")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    home = Path(profile) / "home"  # Chromium's crash reports and dconf go here, not under ~
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    service = Service(executable_path=CHROMEDRIVER, env=env)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} on {driver.current_url}"
    )


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, url: str, shot: str) -> str:
    """Load ``url``, wait for MathJax, check console, math and images; return the prose text."""
    driver.get(url)
    wait_for(driver, "return document.readyState === 'complete'", what="the page to load")
    wait_for(driver, MATHJAX_DONE, what="MathJax to typeset")
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    wait_for(driver, "return Array.from(document.images).every(i => i.complete)", what="images")
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(SHOTS / f"{shot}.png"))
    errors = console_errors(driver)
    assert not errors, f"console errors on {url}: {errors}"
    broken = driver.execute_script(BROKEN_IMAGES)
    assert not broken, f"images that did not load on {url}: {broken}"
    prose = driver.execute_script(PROSE_TEXT)
    for raw in ("$$", "\\(", "\\["):
        assert raw not in prose, f"untypeset math ({raw!r}) on {url}"
    assert not driver.find_elements("css selector", "mjx-merror, [data-mjx-error]"), (
        f"math errors on {url}"
    )
    return prose


def test_site_navigation_reaches_every_notebook_with_its_outputs(server, browser):
    open_page(browser, server + "site/index.html", "site-index")
    nav = browser.find_elements("css selector", ".bd-sidebar-primary a.reference")
    hrefs = {a.get_attribute("href").split("#")[0] for a in nav}
    for notebook in course_notebooks():
        outline = read_outline(BUILD_DIR / "site-src" / notebook.name)  # the built snapshot
        url = urljoin(server, f"site/{notebook.stem}.html")
        assert url in hrefs, f"the navigation does not reach {notebook.stem}"
        open_page(browser, url, f"site-{notebook.stem}")
        heading = browser.find_element("css selector", "article h1").get_attribute("textContent")
        assert heading.strip().rstrip("#¶ ") == outline.plain_title
        stored = sum(figures(cell) for cell in _cells(BUILD_DIR / "site-src" / notebook.name))
        shown = len(browser.find_elements("css selector", ".cell_output img"))
        assert shown == stored, f"{notebook.stem}: {shown} figures on the page, {stored} stored"
        math = len(browser.find_elements("css selector", "span.math, div.math"))
        typeset = len(browser.find_elements("css selector", "mjx-container"))
        assert typeset >= math, f"{notebook.stem}: {math} formulas, {typeset} typeset"
        links = {
            a.text: a.get_attribute("href")
            for a in browser.find_elements("css selector", "a.course-link")
        }
        assert links.get("Slides", "").endswith(f"slides/{notebook.stem}.html")
        assert links.get("Notebook", "").endswith(f"_sources/{notebook.name}")


def _cells(notebook: Path):
    import nbformat

    return nbformat.read(notebook, as_version=4).cells


def test_site_report_guides_and_search(server, browser):
    open_page(browser, server + "site/report.html", "site-report")
    first = course_notebooks()[0].stem
    prose = open_page(browser, server + f"site/guides/{first}.html", "site-guide")
    assert "Agenda" in prose and "total" in prose
    browser.get(server + "site/search.html?q=checkpoint")
    results = wait_for(
        browser,
        "return document.querySelectorAll('#search-results li').length",
        what="search results",
    )
    browser.save_screenshot(str(SHOTS / "site-search.png"))
    assert results >= 1
    assert not console_errors(browser)


def test_every_deck_loads_renders_and_advances(server, browser):
    for notebook in course_notebooks():
        url = server + f"slides/{notebook.stem}.html"
        open_page(browser, url, f"slides-{notebook.stem}-title")
        wait_for(browser, "return window.Reveal && Reveal.isReady()", what="reveal.js")
        outline = read_outline(BUILD_DIR / "site-src" / notebook.name)  # the built snapshot
        expected = len(horizontal_titles(outline))
        if any("$" in b.source for s in outline.sections for b in s.all_blocks()):
            assert browser.find_elements("css selector", "mjx-container"), (
                f"no math typeset in {url}"
            )
        assert browser.execute_script("return Reveal.getHorizontalSlides().length") == expected
        assert browser.execute_script("return Reveal.getIndices().h") == 0
        body = browser.find_element("tag name", "body")
        for _ in range(10):  # fragments first, then the next section
            body.send_keys("\ue014")  # the right-arrow key
            if browser.execute_script("return Reveal.getIndices().h") == 1:
                break
        assert browser.execute_script("return Reveal.getIndices().h") == 1, f"{url} did not advance"
        time.sleep(0.3)
        browser.save_screenshot(str(SHOTS / f"slides-{notebook.stem}-next.png"))
        assert not console_errors(browser)
