"""/docs and /redoc in a real browser (Debian's chromium, headless, driven by chromedriver through
selenium), against the real server: the pages load Swagger UI and ReDoc from the server itself
(fastapi-offline's files), never from a CDN, render both /v1 operations, and Swagger UI's
"Try it out" on /v1/sentiment gets 200. The machine running the tests may be offline: a page that
needed a CDN would stay blank here."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import httpx
import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, css: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def _assert_code_came_from(driver, url: str) -> None:
    """Every script, stylesheet and fetch of the page (the OpenAPI document) came from `url`. An
    image may not: ReDoc's bundle shows its vendor's logo from their site (offline, a broken image
    in the sidebar's footer; the page itself is whole)."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.initiatorType])"
    )
    assert any(name.endswith(".js") for name, _ in entries), entries
    elsewhere = [(name, kind) for name, kind in entries if not name.startswith(url)]
    assert all(kind == "img" for _, kind in elsewhere), elsewhere


def test_docs_page_serves_its_assets_from_the_server(server):
    html = httpx.get(f"{server.url}/docs", timeout=10).text
    assert "cdn.jsdelivr.net" not in html and "/static-offline-docs/swagger-ui-bundle.js" in html
    js = httpx.get(f"{server.url}/static-offline-docs/swagger-ui-bundle.js", timeout=10)
    assert js.status_code == 200 and len(js.content) > 100_000
    html = httpx.get(f"{server.url}/redoc", timeout=10).text
    assert "cdn.jsdelivr.net" not in html and "/static-offline-docs/redoc.standalone.js" in html


def test_swagger_ui_renders_both_operations_and_try_it_out_gets_200(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/docs")
    sentiment = _wait(browser, "#operations-inference-sentiment")
    _wait(browser, "#operations-inference-translate")
    assert "Classify reviews" in sentiment.text
    sentiment.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    _wait(browser, "#operations-inference-sentiment .try-out__btn").click()
    _wait(browser, "#operations-inference-sentiment .execute").click()
    status = _wait(browser, "#operations-inference-sentiment .live-responses-table tr.response .response-col_status")
    assert status.text.strip().startswith("200"), status.text
    body = browser.find_element(By.CSS_SELECTOR, "#operations-inference-sentiment .live-responses-table .microlight")
    assert '"label"' in body.text and '"results"' in body.text
    _assert_code_came_from(browser, server.url)


def test_redoc_renders_both_operations(server, browser):
    browser.get(f"{server.url}/redoc")
    _wait(browser, "[data-section-id='tag/inference/operation/sentiment']")
    _wait(browser, "[data-section-id='tag/inference/operation/translate']")
    text = browser.find_element("css selector", "body").text
    assert "Classify reviews as positive or negative" in text and "Translate sentences (beam search)" in text
    _assert_code_came_from(browser, server.url)
