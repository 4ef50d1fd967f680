"""bnsweep report: the study's scripts run on a real tiny sweep, report.md and
report.html written with every figure and CSV, and logged to the sweep's parent run."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest

from test_analysis import sweep  # the session's tiny real sweeps, trained once


@pytest.fixture(scope="session")
def lr_sweep(request, tmp_path_factory, ray_address):
    return sweep(tmp_path_factory, ray_address, "lr", request.session)


def test_report_for_lr_study(lr_sweep, tmp_path):
    from mlflow import MlflowClient

    from bnsweep.report import build_report
    from bnsweep.results import claim_accuracy_speed, load_experiment

    uri, experiment = lr_sweep
    out = tmp_path / "report"
    page = build_report(experiment, out, uri)
    assert page == out / "report.html"
    md = (out / "report.md").read_text()
    html = page.read_text()
    # lr study: the lr figure and the curves, then the summary and claims; every figure with PNG, SVG, CSV.
    for fig in ("lr_accuracy", "curves"):
        for ext in ("png", "svg", "csv"):
            assert (out / f"{fig}.{ext}").stat().st_size > 0
        assert f"]({fig}.png)" in md and f"]({fig}.csv)" in md and f"href='{fig}.csv'" in html
    for table in ("claims", "summary", "trials"):
        assert len(pd.read_csv(out / f"{table}.csv")) > 0
        assert f"]({table}.csv)" in md
    assert not (out / "batch_size.png").exists() and not (out / "dropout_curves.png").exists()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    # The verdicts come first, as computed from the same runs; the synthetic data is flagged.
    assert md.index("The study's claims") < md.index("![")
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims["claim"]) == [1, 2, 3, 4, 5]
    r = load_experiment(experiment, uri)
    assert claims.loc[0, "verdict"] == claim_accuracy_speed(r.trials, r.history).verdict == "supported"
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name(experiment).experiment_id],
                                         "tags.`bnsweep.role` = 'trial'")
    n_failed = sum(run.info.status == "FAILED" for run in runs)
    n_diverged = sum(run.data.tags.get("diverged") == "true" for run in runs)
    assert n_failed == 2 and n_diverged >= 2  # as the lr study's space file makes them (test_analysis.py)
    assert "synthetic (not the official CIFAR-10)" in md and f"{n_failed} failed" in md
    assert f"{n_diverged} diverged" in md and f"{len(runs) - n_failed - n_diverged} completed" in md
    # Logged as artifacts of the sweep's parent run.
    logged = {a.path for a in MlflowClient(uri).list_artifacts(r.parents["run_id"].iloc[0], "report")}
    assert {"report/report.md", "report/report.html", "report/lr_accuracy.png", "report/claims.csv"} <= logged


def test_scripts_follow_the_study(lr_sweep):
    from bnsweep.report import scripts_for
    from bnsweep.results import load_experiment

    r = load_experiment(lr_sweep[1], lr_sweep[0])
    assert scripts_for(r) == ["lr", "curves", "summary"]
    r.study = "dropout"
    assert scripts_for(r) == ["dropout", "summary"]
    r.study = "quick"  # not a known study: what its data supports (here lr varies, nothing else)
    assert scripts_for(r) == ["lr", "curves", "summary"]
    r.study, r.search = "my_search", "optuna"  # sampled settings: no grid figure, whatever the name
    assert scripts_for(r) == ["optuna", "curves", "summary"]


def test_report_bad_input(lr_sweep, tmp_path, monkeypatch):
    from bnsweep import report
    from bnsweep.errors import UsageError
    from bnsweep.results import ResultsError

    uri, experiment = lr_sweep
    with pytest.raises(ResultsError, match="no MLflow experiment named 'bnsweep-missing'.*experiments there: .*bnsweep-lr"):
        report.build_report("bnsweep-missing", tmp_path, uri)
    # A folder that exists but takes no file (as root, /proc stands in for a read-only one).
    with pytest.raises(UsageError, match="cannot write the report to /proc"):
        report.build_report(experiment, Path("/proc"), uri, log_to_mlflow=False)
    monkeypatch.setattr(report, "ANALYSIS_DIR", tmp_path / "nowhere")
    with pytest.raises(ResultsError, match="analysis script .*nowhere/lr.py is missing"):
        report.build_report(experiment, tmp_path, uri, log_to_mlflow=False)
