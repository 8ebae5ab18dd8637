"""The report in a real browser: headless Chromium (Debian's, installed by .ci/browser.sh) via Selenium.

Every picture decodes, both curves draw, and the page is screenshotted: to
``$LABELFREE_SCREENSHOT`` when set (the README's picture), else into the test's tmp folder.
``$LABELFREE_REPORT_HTML`` names a report made elsewhere (a full run's) to check and
screenshot instead of the small synthetic run's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from labelfree.pipeline.gather import gather_report
from labelfree.pipeline.report import render_report
from tests.pipeline.report_run import build_run

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            pytest.fail(f"{path} is missing: `bash .ci/browser.sh` installs Chromium (make test runs it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    # an explicit driver path: Selenium Manager never looks for (or downloads) one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_report_renders_every_picture_and_both_curves_in_chromium(browser, tmp_path):
    page = Path(os.environ.get("LABELFREE_REPORT_HTML") or tmp_path / "report.html")
    report = None
    if not os.environ.get("LABELFREE_REPORT_HTML"):
        built = build_run(tmp_path / "run")
        report = gather_report(built.run_id, gt=built.gt, gt_images=built.gt_images, work_dir=tmp_path / "work")
        page.write_text(render_report(report), encoding="utf-8")

    browser.get(page.as_uri())
    state = browser.execute_script("""
        const imgs = [...document.images];
        return {n: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
                curves: [...document.querySelectorAll('svg.curve')].filter(s => s.getBBox().width > 0
                          && s.querySelector('polyline').getAttribute('points').split(' ').length > 1).length,
                headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
                height: document.documentElement.scrollHeight};""")
    assert state["n"] > 0 and (report is None or state["n"] == len(report.lime_tiles) + len(report.detector_tiles))
    assert state["broken"] == 0
    assert state["curves"] == 2
    expected = {"The photos", "Steps and timing"}
    if report is not None:  # the synthetic run is scored against human boxes (a given report may not be)
        expected.add("Against human boxes")
    assert expected <= set(state["headings"])

    shot = Path(os.environ.get("LABELFREE_SCREENSHOT") or tmp_path / "report.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, min(state["height"] + 40, 16000))  # the whole page in one picture
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
