"""The third step of using bnsweep, as a person meets it: the links `bnsweep run` prints,
opened in headless Chromium on a real `mlflow server`, in a fresh browser (whose MLflow
3 default is the GenAI view), show the sweep's runs."""

from __future__ import annotations

import re

import pytest
from conftest import bnsweep_env, run_bnsweep, sweep_dir_of, write_space
from helpers import TINY, children
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


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
    missing = [n for n in needles if n not in page.inner_text("body")]
    raise AssertionError(f"not on {page.url} after {timeout_s:g} s: {missing}")


def test_printed_links_open_the_sweeps_runs(browser, ray_address, mlflow_server, tmp_path):
    # lr 1e6 diverges in the first epoch without BN (with BN it may not).
    space = write_space(tmp_path / "uilinks.py", f"""
        SPACE = {{"lr": [0.05, 1e6], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 1}}
        """)
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    client = MlflowClient(mlflow_server.uri)
    runs = children(mlflow_server.uri, "bnsweep-uilinks")
    names = sorted(x.info.run_name for x in runs)
    assert sorted(n.replace(" DIVERGED", "") for n in names) == ["bn lr=0.05", "bn lr=1e6", "no_bn lr=0.05",
                                                                 "no_bn lr=1e6"], names
    diverged = [x for x in runs if x.data.tags["diverged"] == "true"]
    assert "no_bn DIVERGED lr=1e6" in names and all(
        (" DIVERGED " in x.info.run_name) == (x in diverged) for x in runs), names
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["trials/done"] == 4 and parent.data.metrics["trials/diverged"] == len(diverged)
    assert {"best_val_acc/bn", "best_val_acc/no_bn"} <= set(parent.data.metrics)
    assert "| bn | 2 | 2 |" in parent.data.tags["mlflow.note.content"]
    for run in runs:  # a run spans its trial: it starts before the first epoch's result
        epoch_ms = run.data.metrics["epoch_time_s"] * 1000
        assert run.info.end_time - run.info.start_time >= 0.9 * epoch_ms, run.info
    experiment = client.get_experiment_by_name("bnsweep-uilinks")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    sweep_name = sweep_dir_of(tmp_path / "results").name
    for label, needles in (("runs", [sweep_name]),
                           ("trials", [*names, "best_val_acc/bn", "best_val_acc/no_bn", "trials/diverged"])):
        context = browser.new_context(viewport={"width": 1600, "height": 1000})  # MLflow's GenAI default
        page = context.new_page()
        try:
            page.goto(_link(r.stdout, label), wait_until="load")
            text = _text_when(page, needles)
            if label == "runs":  # the model-training runs table, not the GenAI overview of traces
                assert "Run Name" in text and "No traces" not in text
                # One row per sweep; a person unfolds it with the + beside its name.
                page.locator('[role=gridcell] button[data-component-id*="runnamecellrenderer"]').first.click()
                _text_when(page, names)
            page.screenshot(path=str(tmp_path / f"mlflow-{label}.png"))
        finally:
            context.close()
