"""The dashboard and examples/web in a real headless Chromium, against a real uvicorn server on loopback.

Chromium and chromedriver are the Debian packages (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them), driven by selenium with the system driver, so nothing is downloaded.
Without them the tests are skipped, except under CI (``CI`` set), where a missing browser fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragtune import Ragtune
from tests.server.live import free_port, running

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "examples" / "web"
CHROMIUM = os.environ.get("RAGTUNE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RAGTUNE_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Flags that keep Chromium off the network and out of the way on a closed CI machine.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(path) or Path(path).is_file()):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so the browser tests must run: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ragtune-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # the system driver: selenium-manager downloads nothing
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def _static_site(directory: Path, port: int) -> Iterator[None]:
    """``python -m http.server`` for ``directory`` on loopback, in a thread."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> Iterator[dict[str, Any]]:
    """A workspace made here (two versions, the tiny model), the service over it, and examples/web served from another origin."""
    from ragtune import RagtuneConfig
    from tests.conftest import DOCS

    tmp = tmp_path_factory.mktemp("browser")
    first, second = tmp / "first.jsonl", tmp / "second.jsonl"
    first.write_text("".join(json.dumps(d) + "\n" for d in DOCS[:5]), encoding="utf-8")
    second.write_text("".join(json.dumps(d) + "\n" for d in DOCS[5:]), encoding="utf-8")
    config = RagtuneConfig().with_overrides({"model.name": tiny_model, "model.batch_size": 8})
    rt = Ragtune.init(tmp / "ws", config, progress=False)
    rt.index([first])
    rt.index([second])  # a second version: v0002 serves, v0001 before it
    web_port = free_port()
    web_origin = f"http://127.0.0.1:{web_port}"
    with _static_site(WEB, web_port), running(rt, cors_origins=[web_origin]) as api_port:
        yield {"rt": rt, "url": f"http://127.0.0.1:{api_port}", "web": web_origin, "web_port": web_port}


def _wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def _text_in(driver: Any, css: str, text: str) -> Any:
    from selenium.webdriver.common.by import By

    def check(d: Any) -> bool:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return bool(found) and text in found[0].text

    return _wait(driver, check)


def _feedback_of(rt: Ragtune, query: str) -> Any:
    """The logged search with text ``query`` (read back through the public feedback log)."""
    found = [r for r in rt.feedback.records() if r.text == query]
    assert len(found) == 1, f"expected one logged search {query!r}, found {len(found)}"
    return found[0]


def test_the_dashboard_shows_the_versions_and_its_search_logs_nothing(driver, site):
    from selenium.webdriver.common.by import By

    rt: Ragtune = site["rt"]
    driver.get(site["url"] + "/")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
    rows = driver.find_elements(By.CSS_SELECTOR, "#versions-table tbody tr")
    assert [r.get_attribute("data-version") for r in rows] == ["v0002", "v0001"]  # newest first
    assert [v["name"] for v in rt.versions()] == ["v0001", "v0002"]
    assert "serving" in rows[0].text and "indexed" in rows[0].text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#versions-chart g[data-version]")) == 2
    assert "v0002" in driver.find_element(By.ID, "overview").text
    decisions = driver.find_elements(By.CSS_SELECTOR, "#decisions-table tbody tr[data-event='indexed']")
    assert len(decisions) == 2 and "5 docs (5 added" in decisions[1].text
    assert "no feedback logged yet" in driver.find_element(By.ID, "daily-chart").text

    # the search box is a preview: it shows the serving version's results and logs no query, no click
    before = rt.feedback.stats()
    query = "how do I reset the router"
    box = driver.find_element(By.ID, "search-input")
    box.send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#search-results li[data-doc]")) == 5)
    _text_in(driver, "#search-status", "a preview, not logged")
    shown = [li.get_attribute("data-doc") for li in driver.find_elements(By.CSS_SELECTOR, "#search-results li[data-doc]")]
    assert shown == [h.doc_id for h in rt.search(query, 5, log=False)]
    assert driver.find_elements(By.CSS_SELECTOR, "#search-results a") == []  # nothing to click
    driver.find_elements(By.CSS_SELECTOR, "#search-results li[data-doc]")[1].click()
    assert rt.feedback.stats() == before
    assert [r for r in rt.feedback.records() if r.text == query] == []
    assert "not logged" in driver.find_element(By.ID, "search").text


def test_the_web_example_searches_clicks_and_rates_from_another_origin(driver, site):
    from selenium.webdriver.common.by import By

    rt: Ragtune = site["rt"]
    driver.get(f"{site['web']}/index.html?api={site['url']}")
    query = "change the wireless password"
    driver.find_element(By.ID, "q").send_keys(query)
    driver.find_element(By.CSS_SELECTOR, "#form button").click()
    _text_in(driver, "#status", "5 results")
    items = driver.find_elements(By.CSS_SELECTOR, "#results li")
    assert len(items) == 5
    clicked = items[0].find_element(By.CSS_SELECTOR, "a").get_attribute("data-doc")
    items[0].find_element(By.CSS_SELECTOR, "a").click()
    _text_in(driver, "#status", f"click on {clicked} recorded")
    rated = items[2].find_element(By.CSS_SELECTOR, "a").get_attribute("data-doc")
    items[2].find_element(By.CSS_SELECTOR, "button.down").click()
    _text_in(driver, "#status", f"rating on {rated} recorded")
    items[1].find_element(By.CSS_SELECTOR, "button.up").click()
    up = items[1].find_element(By.CSS_SELECTOR, "a").get_attribute("data-doc")
    _text_in(driver, "#status", f"rating on {up} recorded")

    rec = _feedback_of(rt, query)
    assert [d for d, _ in rec.clicks] == [clicked]
    assert sorted(rec.ratings) == sorted([(rated, -1), (up, 1)])
    fids = [e.get("feedback_id") for e in rt.feedback.export_events() if e["type"] != "query" and e["query_id"] == rec.qid]
    assert len(fids) == 3 and all(fids) and len(set(fids)) == 3  # each event sent with its own id: a retry counts once

    # an error's detail is shown as text, a validation error's list of field errors too
    driver.execute_script("post('/feedback', {query_id: 'x', doc_id: 'y', type: 'rating', value: true}).catch((err) => say(err.message));")
    _text_in(driver, "#status", "/feedback: 422 [{")
    assert "[object Object]" not in driver.find_element(By.ID, "status").text


def test_the_service_refuses_an_origin_it_was_not_told_of(driver, site):
    """The same page from ``localhost`` (another origin than the allowed ``127.0.0.1``): the browser blocks the search."""
    from selenium.webdriver.common.by import By

    rt: Ragtune = site["rt"]
    before = rt.feedback.stats()["queries"]
    driver.get(f"http://localhost:{site['web_port']}/index.html?api={site['url']}")
    driver.find_element(By.ID, "q").send_keys("guest network for visitors")
    driver.find_element(By.CSS_SELECTOR, "#form button").click()
    _text_in(driver, "#status", "Failed to fetch")
    assert driver.find_elements(By.CSS_SELECTOR, "#results li") == []
    assert rt.feedback.stats()["queries"] == before  # the preflight failed: the search never ran
