"""The report as a reader sees it: `bnsweep report`'s HTML for a real tiny sweep,
opened in headless Chromium (Playwright, the `browser` fixture in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_analysis import sweep  # the session's tiny real sweeps, trained once


@pytest.fixture(scope="session")
def dropout_sweep(request, tmp_path_factory, ray_address):
    """The dropout study's tiny sweep (3 trials): a report with a figure and its tables."""
    return sweep(tmp_path_factory, ray_address, "dropout", request.session)


@pytest.mark.slow
def test_report_page_shows_every_figure_in_chromium(browser, dropout_sweep, tmp_path):  # no browser: skips before the sweep
    from bnsweep.report import build_report

    uri, experiment = dropout_sweep
    report = build_report(experiment, tmp_path / "report", uri, log_to_mlflow=False)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(report.as_uri(), wait_until="load")
        assert f"Batch Normalization study: {experiment}" in page.locator("h1").inner_text()
        images = page.eval_on_selector_all(
            "img", "els => els.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"
                   " shown: i.getBoundingClientRect().width}))")
        assert page.locator("figure img").count() >= 1, "no figure on the page"
        broken = [i["alt"] for i in images if not (i["complete"] and i["width"] > 0 and i["shown"] > 0)]
        assert not broken, f"figures that did not load: {broken}"
        # Every file the page links to (each figure's PNG, SVG and CSV; the tables' CSVs) is there.
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.getAttribute('href'))")
        assert hrefs and all((report.parent / h).is_file() for h in hrefs), hrefs
        assert not errors, errors
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
