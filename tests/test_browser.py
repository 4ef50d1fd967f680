"""The report as a reader sees it: `bnsweep report`'s HTML for a real tiny sweep,
opened in headless Chromium (Playwright, the `browser` fixture in conftest.py) in a
1280 x 900 window: every figure loads, nothing widens the page beyond the window
(wide tables scroll inside their own box), and a click on a column header sorts
numbers as numbers. A full-page screenshot is kept in the test's tmp folder, and
copied to $BNSWEEP_SCREENSHOTS when that names a folder, for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

WINDOW = {"width": 1280, "height": 900}  # a laptop's browser window, px


@pytest.mark.slow
@pytest.mark.parametrize("study", ["dropout", "lr"])
def test_report_page_reads_in_chromium(browser, recorded_sweeps, study, tmp_path):  # no browser: skips first
    from bnsweep.analysis.report import build_report

    uri, experiment = recorded_sweeps(study).result()
    report = build_report(experiment, tmp_path / "report", uri, log_to_mlflow=False)
    page = browser.new_page(viewport=WINDOW)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(report.as_uri(), wait_until="load")
        assert f"Batch Normalization study: {experiment}" in page.locator("h1").inner_text()
        assert "Not the reference experiment" in page.locator(".box.scale").inner_text()
        images = page.eval_on_selector_all(
            "img", "els => els.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"
                   " shown: i.getBoundingClientRect().width}))")
        assert page.locator("figure img").count() >= 1, "no figure on the page"
        broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0 and i["shown"] > 0)]
        assert not broken, f"figures that did not load: {broken}"
        # Nothing widens the page: a reader never scrolls sideways to see the whole page.
        widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"page {widths[0]} px wide in a {widths[1]} px window"
        assert page.locator("table.t").count() == page.locator("div.scroll > table.t").count() >= 3
        # Every file the page links to (each figure's PNG, SVG and CSV; the tables' CSVs) is there.
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
        assert hrefs and all((report.parent / h).is_file() for h in hrefs), hrefs
        # A click on the seed / lr header of the trials table sorts its rows by value.
        trials = page.locator("table.t").last
        column = "lr" if study == "lr" else "seed"
        headers = trials.locator("th").all_inner_texts()
        index = [h.replace("\u200b", "") for h in headers].index(column)
        trials.locator("th").nth(index).click()
        values = trials.locator(f"tbody tr td:nth-child({index + 1})").evaluate_all(
            "tds => tds.map(td => parseFloat(td.dataset.v))")
        assert values == sorted(values), values
        assert not errors, errors
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    keep = os.environ.get("BNSWEEP_SCREENSHOTS")
    if keep and Path(keep).is_dir():
        shutil.copy(tmp_path / "report.png", Path(keep) / f"report-{study}.png")
