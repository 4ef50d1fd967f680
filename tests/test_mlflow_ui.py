"""The third step of using bnsweep, as a person meets it: MLflow's UI, in headless Chromium
on a real `mlflow server`, over one 4-trial sweep (run once for this file). Each test opens
a fresh browser, whose MLflow 3 default is GenAI's pages (bnsweep/mlflow_ui.py says why):
the links `bnsweep run` prints, and the README's own route (the UI's home page, the
experiment, a run). Screenshots go to /tmp/ui-shots/ for a person to look at."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import bnsweep_env, run_bnsweep, sweep_dir_of, write_space
from helpers import TINY, children
from mlflow import MlflowClient

from bnsweep import mlflow_ui
from bnsweep.trials import ARM_KEYS

SHOTS = Path("/tmp/ui-shots")
NAMES = ["bn lr=0.05", "bn lr=1e6", "no_bn lr=0.05", "no_bn lr=1e6"]
# What GenAI's overview of an experiment shows, and no "Run Name": its sidebar's "Observability"
# and "Traces" (MLflow 3.17 and 3.18; 3.17 adds a "Detect Issues" pop-up, 3.18 "Send your first trace").
GENAI = ["Observability", "Traces"]


def test_the_runs_view_names_the_arm_the_varied_settings_and_best_val_acc():
    # Fast: what the runs link asks MLflow to show, for a study varying lr and seed by arm
    # (the arm is a tag, and where the data or the device is says nothing of the experiment).
    view = mlflow_ui.runs_view("p1", ["lr", "seed", "bn", "norm", "device"], ARM_KEYS)
    assert view["selectedColumns"] == ["tags.`arm`", "params.`lr`", "params.`seed`", "metrics.`best_val_acc`"]
    assert view["searchFilter"] == "tags.`mlflow.parentRunId` = 'p1'"
    assert mlflow_ui.runs_link("sqlite:///mlflow.db", "3", "p1") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=bnsweep-p1")


@pytest.fixture(scope="module")
def sweep(ray_address, mlflow_server, tmp_path_factory) -> SimpleNamespace:
    # lr 1e6 diverges in the first epoch without BN (with BN it may not).
    tmp = tmp_path_factory.mktemp("uilinks")
    space = write_space(tmp / "uilinks.py", f"""
        SPACE = {{"lr": [0.05, 1e6], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 1}}
        """)
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    r = run_bnsweep("run", str(space), "--storage", str(tmp / "results"), env=env, cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = children(mlflow_server.uri, "bnsweep-uilinks")
    client = MlflowClient(mlflow_server.uri)
    return SimpleNamespace(
        out=r.stdout, uri=mlflow_server.uri, runs=runs, names=sorted(x.info.run_name for x in runs),
        parent=client.get_run(runs[0].data.tags["mlflow.parentRunId"]),
        experiment=client.get_experiment_by_name("bnsweep-uilinks"), sweep_name=sweep_dir_of(tmp / "results").name)


def _link(out: str, label: str) -> str:
    match = re.search(rf"^  {label}:\s+(http\S+)", out, re.M)
    assert match, out[-3000:]
    return match.group(1)


def _text_when(page, needles: list[str], timeout_s: float = 60) -> str:
    """The page's text once every needle shows in it (MLflow's UI fills in after load)."""
    for _ in range(int(timeout_s * 2)):
        text = page.inner_text("body")
        if all(n in text for n in needles):
            return text
        page.wait_for_timeout(500)
    text = page.inner_text("body")
    missing = [n for n in needles if n not in text]
    raise AssertionError(f"not on {page.url} after {timeout_s:g} s: {missing}; the page says: {text[:600]!r}")


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def _breadcrumb(page) -> str:
    """The run page's breadcrumb: its experiment, then "Runs" or (GenAI's) "Evaluations"."""
    return page.get_by_test_id("experiment-observatory-link-runs").first.inner_text()


def test_the_sweep_is_recorded_for_people(sweep):
    names, runs = sweep.names, sweep.runs
    diverged = [x for x in runs if x.data.tags["diverged"] == "true"]
    # The marker after the settings, so that the runs table's cut keeps what tells runs apart.
    assert sorted(n.removesuffix(" DIVERGED") for n in names) == NAMES, names
    assert "no_bn lr=1e6 DIVERGED" in names and all(
        x.info.run_name.endswith(" DIVERGED") == (x in diverged) for x in runs), names
    metrics = sweep.parent.data.metrics
    assert metrics["n done"] == 4 and metrics["n diverged"] == len(diverged), metrics
    assert {"bn best", "no_bn best"} <= set(metrics), metrics
    assert "| bn | 2 | 2 |" in sweep.parent.data.tags["mlflow.note.content"]
    for run in runs:  # a run spans its trial: it starts before the first epoch's result
        epoch_ms = run.data.metrics["epoch_time_s"] * 1000
        assert run.info.end_time - run.info.start_time >= 0.9 * epoch_ms, run.info
    tags = sweep.experiment.tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    # The runs link's view: this sweep's trials by arm, the columns the comparison needs.
    view = json.loads(tags[f"mlflow.sharedViewState.bnsweep-{sweep.parent.info.run_id}"])
    assert view["selectedColumns"] == ["tags.`arm`", "params.`lr`", "metrics.`best_val_acc`"], view
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "arm"}], view


def test_printed_links_open_the_sweeps_runs(browser, sweep):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        # The runs link: this sweep's trials under one row per arm, with the arm, lr and
        # best val_acc as columns, in model training's runs table (not GenAI's overview).
        page.goto(_link(sweep.out, "runs"), wait_until="load")
        text = _text_when(page, ["Run Name", "Group: bn", "Group: no_bn", "best_val_acc", "lr", "arm", *sweep.names])
        assert "Observability" not in text and "Additional runs" in text, text[:2000]
        _shot(page, "printed-runs-link")
        # The trials link: the parent's summary metrics beside every trial.
        page.goto(_link(sweep.out, "trials"), wait_until="load")
        _text_when(page, [*sweep.names, "bn best", "no_bn best", "n diverged"])
        _shot(page, "printed-trials-link")
        # A run opened from the runs table loses the link's workflowType: a fresh browser
        # labels it GenAI's "Evaluations" (the README says so, and which click fixes it).
        page = context.new_page()
        page.goto(_link(sweep.out, "runs"), wait_until="load")
        _text_when(page, ["Group: bn"])
        page.get_by_text("bn lr=0.05", exact=True).first.click()
        _text_when(page, ["Model metrics"])
        assert _breadcrumb(page) == "Evaluations"
        _shot(page, "printed-runs-link-then-run")
    finally:
        context.close()


def test_readme_route_shows_model_training_after_one_click(browser, sweep):
    # Each route starts in a new tab of one browser, as a person pastes an address.
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        # What the README says a browser that never chose shows: GenAI's empty overview.
        page = context.new_page()
        page.goto(sweep.uri + "/", wait_until="load")
        page.get_by_text("bnsweep-uilinks", exact=True).first.click()
        # A fresh browser's first experiment page: GenAI's overview, by its address and its text.
        text = _text_when(page, GENAI)
        assert "workflowType=genai" in page.url or "workflowType" not in page.url, page.url
        assert "Run Name" not in text, text[:2000]
        _shot(page, "route-before-click-experiment")

        # The README's click: Model training, on the UI's home page; then its route.
        page = context.new_page()
        page.goto(sweep.uri + "/", wait_until="load")
        page.get_by_role("button", name="Model training").click()
        page.get_by_text("bnsweep-uilinks", exact=True).first.click()
        text = _text_when(page, ["Run Name", sweep.sweep_name])
        assert "Observability" not in text, text[:2000]
        _shot(page, "route-experiment")
        # One row per sweep; a person unfolds it with the + beside its name.
        page.locator('[role=gridcell] button[data-component-id*="runnamecellrenderer"]').first.click()
        _text_when(page, sweep.names)
        page.get_by_text("no_bn lr=1e6 DIVERGED", exact=True).first.click()
        text = _text_when(page, ["Model metrics", "Diverged at epoch 1", "diverged_epoch"])
        assert _breadcrumb(page) == "Runs" and "Evaluations" not in text, text[:2000]
        _shot(page, "route-diverged-run")

        # The compare page's experiment breadcrumb opens the runs too, once chosen.
        page = context.new_page()
        page.goto(_link(sweep.out, "trials"), wait_until="load")
        _text_when(page, sweep.names)
        page.get_by_role("link", name="bnsweep-uilinks", exact=True).first.click()
        text = _text_when(page, ["Run Name", sweep.sweep_name])
        assert "Observability" not in text, text[:2000]
        _shot(page, "route-compare-breadcrumb")
    finally:
        context.close()
