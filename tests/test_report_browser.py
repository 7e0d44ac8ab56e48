"""The HTML report in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): the page
loads, every plot and thumbnail decodes, the curator's sections render with their pictures (captions on the
cards, nouns, dropped images by reason, config and timings, the comparison of two outputs), the mask toggle
switches what is on screen, and a screenshot is produced."""
import shutil
from collections import Counter

import numpy as np
import pytest

from mining.cli import main
from mining.postrun.curate import CurationFilters, curate
from mining.sinks.reader import read_manifest, read_pairs

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver: bash scripts/install-browser.sh")

GALLERY, TOP = 6, 4


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
    from test_stats_report import mine_with_drops

    root = tmp_path_factory.mktemp("report")
    out = mine_with_drops(root)
    threshold = float(np.median(read_pairs(str(out)).column("similarity").to_numpy()))
    curate(str(out), str(root / "cur"), CurationFilters(min_similarity=threshold))
    common = ["--gallery", str(GALLERY), "--top", str(TOP)]
    assert main(["stats", str(out), "--html", str(root / "report.html"), *common]) == 0
    assert main(["stats", str(root / "cur"), "--compare", str(out), "--html", str(root / "compare.html"), *common]) == 0
    return root


def images_by_section(browser):
    """[complete, naturalWidth, id of the nearest ancestor with an id] of every <img>."""
    return browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.parentElement.closest('[id]').id])")


def test_report_loads_images_render_and_screenshot(browser, report):
    browser.get((report / "report.html").as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title.startswith("ovmine report")
    images = images_by_section(browser)
    assert images and all(complete and width > 0 for complete, width, _ in images), images
    sections = [where for _, _, where in images]
    pairs = read_manifest(str(report / "out"))["totals"]["pairs"]
    # each pair card: the picture and its mask layer
    assert sections.count("random") == 2 * min(GALLERY, pairs) and sections.count("lowest") == 2 * min(GALLERY, pairs)
    assert sections.count("distributions-body") >= 6
    summary = browser.execute_script("return document.getElementById('summary').innerText")
    assert f"pairs\t{pairs}" in summary
    shot = report / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_cards_show_captions_with_the_phrase_marked(browser, report):
    browser.get((report / "report.html").as_uri())
    cards = browser.execute_script("""
        return Array.from(document.querySelectorAll('#random figure.card')).map(c => [
            Array.from(c.querySelectorAll('ol.captions li')).map(li => li.innerText),
            c.querySelector('mark') ? c.querySelector('mark').innerText : null,
            c.querySelector('.phrase').innerText])""")
    assert len(cards) == GALLERY
    for captions, marked, phrase in cards:
        assert captions and all(captions), cards
        assert marked and any(marked in caption for caption in captions)
        assert marked.lower().split()[-1] in phrase.lower()   # the caption's words for the pair's entity


def test_noun_section_dropped_examples_and_run_details(browser, report):
    from test_stats_report import DROPPED

    browser.get((report / "report.html").as_uri())
    nouns = browser.execute_script("""
        return Array.from(document.querySelectorAll('section.noun')).map(s => [s.dataset.noun,
            Array.from(s.querySelectorAll('img.raw')).filter(i => i.complete && i.naturalWidth > 0).length,
            s.querySelectorAll('svg.hist rect').length, s.querySelector('.phrases').innerText])""")
    counts = Counter(read_pairs(str(report / "out")).column("noun").to_pylist())
    assert len(nouns) == TOP   # the most frequent nouns, most frequent first (ties in either order)
    assert [counts[noun] for noun, *_ in nouns] == sorted(counts.values(), reverse=True)[:TOP]
    for noun, pictures, bars, phrases in nouns:
        assert pictures >= 1 and bars >= 1 and phrases.startswith("phrases: ")

    drops = browser.execute_script("""
        return Object.fromEntries(Array.from(document.querySelectorAll('section.dropreason')).map(s => [
            s.dataset.reason, [s.querySelectorAll('img.raw').length, s.innerText]]))""")
    assert set(drops) == set(DROPPED)
    assert drops["no_entities"][0] == 1 and "a picture" in drops["no_entities"][1]
    assert drops["no_caption"][0] == 1 and "(no caption)" in drops["no_caption"][1]
    assert drops["decode_error"][0] == 0 and "image not decodable (UnidentifiedImageError)" in drops["decode_error"][1]
    assert "a red square on grass" in drops["decode_error"][1]

    config = browser.execute_script("return document.getElementById('config').innerText")
    assert "working_size: 96" in config and "kind: felzenszwalb" in config
    timings = browser.execute_script("return document.getElementById('timings').innerText")
    assert all(stage in timings for stage in ("decode", "entities", "teacher", "regions", "match"))


def test_the_toggle_switches_between_overlay_and_raw_image(browser, report):
    browser.get((report / "report.html").as_uri())
    thumb = browser.find_element("css selector", "#random .thumb")
    browser.execute_script("arguments[0].scrollIntoView()", thumb)
    visibility = "return getComputedStyle(arguments[0].querySelector('img.mask')).visibility"
    with_mask = thumb.screenshot_as_png
    assert browser.execute_script(visibility, thumb) == "visible"
    browser.find_element("id", "show-masks").click()
    assert browser.execute_script(visibility, thumb) == "hidden"
    raw = thumb.screenshot_as_png
    assert raw != with_mask
    browser.find_element("id", "show-masks").click()
    assert browser.execute_script(visibility, thumb) == "visible" and thumb.screenshot_as_png == with_mask
    thumb.click()   # one card alone
    assert browser.execute_script(visibility, thumb) == "hidden"
    others = browser.find_elements("css selector", "#lowest .thumb")
    assert all(browser.execute_script(visibility, t) == "visible" for t in others)


def test_compare_view(browser, report):
    browser.get((report / "compare.html").as_uri())
    images = images_by_section(browser)
    assert images and all(complete and width > 0 for complete, width, _ in images)
    a = read_manifest(str(report / "cur"))["totals"]
    b = read_manifest(str(report / "out"))["totals"]
    totals = browser.execute_script("return document.getElementById('compare-totals').innerText")
    assert f"pairs\t{a['pairs']}\t{b['pairs']}\t{b['pairs'] - a['pairs']:+d}" in totals
    assert "images in\t12\t12\t+0" in totals
    nouns = browser.execute_script("return document.querySelectorAll('#compare-nouns tr').length")
    assert nouns == 1 + TOP
    drops = browser.execute_script("return document.getElementById('compare-drops').innerText")
    assert "curated_out" in drops and "decode_error\t1\t1\t+0" in drops
    summary = browser.execute_script("return document.getElementById('summary').innerText")
    assert f"curated from\t{report / 'out'}" in summary
    # a curated output's dropped examples include images curate filtered away, with their pictures
    curated_out = browser.execute_script(
        "const s = document.querySelector('section.dropreason[data-reason=curated_out]');"
        "return s ? Array.from(s.querySelectorAll('img.raw')).filter(i => i.naturalWidth > 0).length : -1")
    assert curated_out >= 1
