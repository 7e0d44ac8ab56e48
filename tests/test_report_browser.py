"""The HTML report in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): the page
loads, every plot and thumbnail decodes, and a screenshot is produced."""
import shutil

import pytest

from mining.cli import main
from mining.sinks.reader import read_manifest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver: bash scripts/install-browser.sh")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1300,2200", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import TINY
    from mining.config import build_config
    from mining.pipeline import run_mining
    from mining.synthetic import make_shards

    root = tmp_path_factory.mktemp("report")
    make_shards(root / "in", shards=2, per_shard=5, size=96)
    run_mining(build_config({k: dict(v) for k, v in TINY.items()}), [str(root / "in")], str(root / "out"))
    assert main(["stats", str(root / "out"), "--html", str(root / "report.html"), "--gallery", "6"]) == 0
    return root


def test_report_loads_images_render_and_screenshot(browser, report):
    browser.get((report / "report.html").as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title.startswith("ovmine report")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.closest('div').id || 'plots'])")
    assert images and all(complete and width > 0 for complete, width, _ in images), images
    sections = [where for _, _, where in images]
    pairs = read_manifest(str(report / "out"))["totals"]["pairs"]
    assert sections.count("random") == min(6, pairs) and sections.count("lowest") == min(6, pairs)
    assert sections.count("plots") >= 6
    summary = browser.execute_script("return document.getElementById('summary').innerText")
    assert f"pairs\t{pairs}" in summary
    shot = report / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
