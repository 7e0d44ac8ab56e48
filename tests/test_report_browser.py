"""The HTML report in a real headless browser (Debian's chromium + chromedriver, driven by Selenium): the page
loads, every plot and thumbnail decodes, the curator's sections render with their pictures (captions on the
cards, nouns, dropped images by reason, config and timings, the comparison of two outputs), the mask toggle
switches what is on screen, and a screenshot is produced."""
import json
import shutil
import time
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
    # both runs' plots, and the pairs curate removed as the gallery of pairs only the mining run has
    plots = browser.execute_script(
        "return ['plots-a', 'plots-b'].map(id => document.querySelectorAll('#' + id + ' img.plot').length)")
    assert plots[0] >= 6 and plots[1] >= 6
    only = browser.execute_script("""return ['a', 'b'].map(side => [
        document.querySelector('#only-in-' + side).previousElementSibling.innerText,
        document.querySelectorAll('#only-in-' + side + ' figure.card').length])""")
    removed = b["pairs"] - a["pairs"]
    assert only[0] == ["pairs only in A (0)", 0]
    assert only[1][0].startswith(f"pairs only in B ({removed}") and only[1][1] == min(GALLERY, removed) > 0


# --- the explorer: filter, sort, page, the per-image view, ground truth and the audit file ---------------------

EXPLORE = 24


@pytest.fixture(scope="module")
def explored(world_mined, tmp_path_factory):
    """The report of a toy world's unfiltered output, judged against its ground truth, whose explorer holds a
    sample of the frequent nouns."""
    root, gt = world_mined
    page = tmp_path_factory.mktemp("explore") / "report.html"
    assert main(["stats", str(root / "all"), "--html", str(page), "--gt", gt, "--explore", str(EXPLORE)]) == 0
    return root / "all", page, gt


def cards(browser):
    return browser.execute_script("""return Array.from(document.querySelectorAll('#x-cards figure.card')).map(c => [
        c.dataset.noun, Number(c.dataset.order), Number(c.dataset.similarity)])""")


def test_explorer_filters_sorts_and_pages(browser, explored):
    from selenium.webdriver.support.ui import Select

    output, page, _ = explored
    counts = Counter(read_pairs(str(output)).column("noun").to_pylist())
    browser.get(page.as_uri())
    assert browser.get_log("browser") == []
    Select(browser.find_element("id", "x-page-size")).select_by_value("12")
    assert browser.find_element("id", "x-page").text == f"page 1 of 2 · {EXPLORE} pairs"
    first = cards(browser)
    assert len(first) == 12 and [o for _, o, _ in first] == list(range(12))   # the sample order
    browser.find_element("id", "x-next").click()
    second = cards(browser)
    assert [o for _, o, _ in second] == list(range(12, 24))
    assert browser.find_element("id", "x-next").get_property("disabled")

    Select(browser.find_element("id", "x-sort")).select_by_value("similarity-asc")   # back to page 1
    assert browser.find_element("id", "x-page").text.startswith("page 1 of 2")
    shown = [sim for _, _, sim in cards(browser)]
    assert shown == sorted(shown)

    frequent = counts.most_common(1)[0][0]
    Select(browser.find_element("id", "x-noun")).select_by_value(frequent)
    chosen = cards(browser)
    assert chosen and {noun for noun, _, _ in chosen} == {frequent}
    note = browser.find_element("id", "x-noun-note").text
    assert f"of the {counts[frequent]} pairs of \"{frequent}\"" in note or f"all {counts[frequent]} pairs" in note
    assert len(chosen) < 12   # one page holds them
    floor = sorted(sim for _, _, sim in chosen)[len(chosen) // 2]
    browser.find_element("id", "x-sim-min").send_keys(str(floor))
    assert sorted(sim for _, _, sim in cards(browser)) == sorted(sim for _, _, sim in chosen if sim >= floor)


def test_ground_truth_marks_each_pair_and_the_noun_table_sums_to_eval(browser, explored):
    from selenium.webdriver.support.ui import Select
    from mining.postrun.explore import judge

    output, page, gt = explored
    browser.get(page.as_uri())
    Select(browser.find_element("id", "x-page-size")).select_by_value("96")
    shown = browser.execute_script("""return Array.from(document.querySelectorAll('#x-cards figure.card')).map(c =>
        [c.querySelector('small').innerText, c.dataset.noun, c.querySelector('.truth').innerText])""")
    truth = judge(str(output), gt, None, set())
    verdicts = {}
    for row in read_pairs(str(output)).to_pylist():
        verdicts.setdefault((f"{row['shard']}/{row['key']} mask {row['mask_index']}", row["noun"]), None)
    assert len(shown) == EXPLORE and all((where, noun) in verdicts for where, noun, _ in shown)
    picked = judge(str(output), gt, None, {tuple(where.split(" ")[0].split("/")) for where, _, _ in shown})
    for where, noun, text in shown:
        stem_key, mask = where.split(" mask ")
        stem, key = stem_key.split("/")
        assert text == f"ground truth: {picked.verdicts[(stem, key, int(mask), noun)]}"
    table = browser.execute_script("""return Array.from(document.querySelectorAll('#truth-nouns tr')).slice(1)
        .map(r => Array.from(r.children).map(c => c.innerText))""")
    assert {row[0]: int(row[3]) for row in table} == {r["noun"]: r["right"] for r in truth.noun_rows()}
    Select(browser.find_element("id", "x-status")).select_by_value("truth:right")
    right = browser.execute_script(
        "return Array.from(document.querySelectorAll('#x-cards .truth')).map(t => t.innerText)")
    assert right and set(right) == {"ground truth: right"}


def test_the_image_view_shows_every_mask_and_entity(browser, explored):
    from mining.sinks.reader import iter_records

    output, page, _ = explored
    browser.get(page.as_uri())
    first = browser.find_element("css selector", "#x-cards figure.card")
    where = first.find_element("css selector", "small").text.split(" mask ")[0]
    first.find_element("css selector", ".thumb").click()
    view = browser.find_element("id", "image-view")
    assert view.is_displayed() and view.find_element("css selector", "h3").text == where
    record = next(r for r in iter_records(str(output)) if where.endswith("/" + r.key))
    items = [li.text for li in view.find_elements("css selector", "ol.masklist li")]
    assert len(items) == len(record.masks)
    paired = {p.mask_index for p in record.pairs}
    assert sum("no pair (dropped)" in item for item in items) == len(record.masks) - len(paired)
    assert len(view.find_elements("css selector", "ul.entities li")) == len(record.entities)
    picture = view.find_elements("css selector", ".view-picture img")
    assert len(picture) == 2 and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in picture)
    browser.find_element("css selector", "#image-view .close").click()
    assert not view.is_displayed()


def test_marks_are_saved_as_an_audit_file_that_stats_and_curate_read(browser, explored, tmp_path, capsys):
    output, page, _ = explored
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(page.as_uri())
    buttons = browser.find_elements("css selector", "#x-cards figure.card .verdict button")
    marked = cards(browser)[:3]
    buttons[0].click()   # card 1: right (the page re-renders: find the buttons again)
    browser.find_elements("css selector", "#x-cards figure.card .mark-right")[1].click()
    browser.find_elements("css selector", "#x-cards figure.card .mark-wrong")[2].click()
    assert browser.find_element("id", "x-marked").text == "3 marked: 2 right, 1 wrong"
    browser.get(page.as_uri())   # the marks outlive a reload
    assert browser.find_element("id", "x-marked").text == "3 marked: 2 right, 1 wrong"
    from selenium.webdriver.support.ui import Select
    Select(browser.find_element("id", "x-status")).select_by_value("wrong")
    assert [c[1] for c in cards(browser)] == [marked[2][1]]
    browser.find_element("id", "x-save").click()
    saved = downloads / "all-audit.json"
    for _ in range(50):
        if saved.exists():
            break
        time.sleep(0.1)
    doc = json.loads(saved.read_text())
    assert doc["config_hash"] == read_manifest(str(output))["config_hash"] and len(doc["marks"]) == 3
    assert sorted(m["verdict"] for m in doc["marks"]) == ["right", "right", "wrong"]
    assert [m["noun"] for m in doc["marks"] if m["verdict"] == "wrong"] == [marked[2][0]]
    assert main(["stats", str(output), "--audit", str(saved), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)["audit"]
    assert audit["marks"] == 3 and sum(r["right"] for r in audit["nouns"]) == 2
