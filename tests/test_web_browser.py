"""The web app in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium):
the firm list loads, a firm's page draws its charts with the record's numbers, an export button
downloads a file. Screenshots are kept under test-artifacts/ at the repository root."""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from cloud_ingest.projects import ProjectStore
from cloud_ingest.record import build_project_reports
from cloud_ingest.store import Store
from cloud_ingest.web.server import WebServer
from edgeproof.netutil import free_port, wait_port
from tests.test_bundle import PROJECT
from tests.test_report_evidence import AGENT
from tests.test_web import PASSWORD, USER, seed_web_store

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[webdriver.Chrome, Path]]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "headless Chromium is needed: apt-get install -y --no-install-recommends chromium chromium-driver "
            "(.ci/run installs them)"
        )
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    # HTTP Basic for every request of the page, downloads included, without a credentials prompt
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
    try:
        yield driver, downloads
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    db = seed_web_store(tmp_path_factory.mktemp("web-browser"))
    port = free_port()
    server = WebServer(db, "127.0.0.1", port, auth=True).start()
    wait_port(port)
    yield f"http://127.0.0.1:{port}", db
    server.stop()


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page, not only the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 8000))
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def test_firm_list_and_firm_page_in_chromium(browser: tuple[webdriver.Chrome, Path], site: tuple[str, Path]) -> None:
    driver, _ = browser
    url, db = site
    with Store(db) as store, ProjectStore(db) as projects:
        [record] = build_project_reports(store, projects.get(PROJECT))
    driver.get(url + "/")
    assert driver.find_element(By.TAG_NAME, "h1").text == "企业列表"
    rows = driver.find_elements(By.CSS_SELECTOR, "#firms tbody tr")
    assert [r.get_attribute("data-project") for r in rows] == ["wx-2024-002", PROJECT]
    cell = driver.find_element(By.CSS_SELECTOR, f'tr[data-project="{PROJECT}"] div[data-indicator="networking_rate"]')
    assert cell.text == "25.0% → 75.0%"
    assert screenshot(driver, "web-firm-list.png").stat().st_size > 10_000

    driver.find_element(By.LINK_TEXT, "苏州示范精密机械有限公司").click()
    assert driver.current_url == f"{url}/projects/{PROJECT}"
    charts = {c.get_attribute("data-chart"): c for c in driver.find_elements(By.CSS_SELECTOR, "svg.chart")}
    assert set(charts) == {"series", "oee", "timeline-baseline", "timeline-post", "coverage", "gaps"}
    for chart in charts.values():  # drawn, not empty
        assert chart.size["width"] > 300 and chart.size["height"] > 40
    oee = record.indicator("oee")
    point = driver.find_element(By.CSS_SELECTOR, 'circle[data-series="oee"][data-day="2024-06-01"]')
    assert float(point.get_attribute("data-value") or "nan") == oee.post.value
    labels = [t.text for t in charts["series"].find_elements(By.CSS_SELECTOR, 'text[data-series="oee"]')]
    assert labels == [f"{oee.baseline.value * 100:.1f}%", f"{oee.post.value * 100:.1f}%"] == ["62.1%", "74.8%"]
    fault = driver.find_element(By.CSS_SELECTOR, 'rect[data-state="FAULT"]')
    assert fault.get_attribute("data-machine") == "M2" and fault.size["width"] > 10  # 10 of 120 minutes
    assert screenshot(driver, "web-firm-page.zh-CN.png").stat().st_size > 30_000

    driver.find_element(By.ID, "lang-switch").click()
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert "Machine state timeline" in driver.find_element(By.TAG_NAME, "body").text
    screenshot(driver, "web-firm-page.en.png")


def test_an_export_button_downloads_the_file(browser: tuple[webdriver.Chrome, Path], site: tuple[str, Path]) -> None:
    driver, downloads = browser
    url, _ = site
    driver.get(f"{url}/projects/{PROJECT}")
    driver.find_element(By.CSS_SELECTOR, 'a[data-export="evidence.csv.zip"]').click()
    target = downloads / f"{PROJECT}-{AGENT}-evidence.csv.zip"
    deadline = time.monotonic() + 60
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.exists(), sorted(p.name for p in downloads.iterdir())
    assert target.read_bytes().startswith(b"PK\x03\x04")
    driver.find_element(By.ID, "export-bundle").click()
    bundle = downloads / f"{PROJECT}.zip"
    deadline = time.monotonic() + 60
    while not bundle.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert bundle.exists() and bundle.read_bytes().startswith(b"PK\x03\x04")
