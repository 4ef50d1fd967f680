"""bnsweep report: the study's scripts run on a real tiny sweep, report.md and
report.html written with every figure and CSV, and logged to the sweep's parent run;
the quick studies' own files, run in smoke mode, reported with the claims they speak to."""

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
    r.study = "quick_batch_size"  # the quick studies get their full-size study's treatment
    assert scripts_for(r) == ["batch_size", "curves", "summary"]
    r.study = "quick_dropout"
    assert scripts_for(r) == ["dropout", "summary"]
    r.study = "quick"
    assert scripts_for(r) == ["curves", "summary"]
    r.study = "my_lr_grid"  # not a known study: what its data supports (here lr varies, nothing else)
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


# ------------------------------------------------------- the quick studies ---

# Each quick study's file (search_spaces/), the claims it speaks to, its figures and trials.
QUICK = {
    "quick_batch_size": {"claims": (4, 2), "figures": ("batch_size", "curves"), "trials": 6},
    "quick_dropout": {"claims": (5,), "figures": ("dropout_curves",), "trials": 3},
}


@pytest.fixture(scope="session")
def quick_sweeps(request, tmp_path_factory, ray_address, cifar_dir):
    """(tracking_uri, experiment) per quick study: `bnsweep run search_spaces/<study>.py --smoke`
    on the CIFAR-10 files, both started at once."""
    names = tuple(QUICK)
    return {s: sweep(tmp_path_factory, ray_address, s, request.session, cifar_dir, together=names) for s in names}


@pytest.mark.parametrize("study", QUICK)
def test_quick_study_report_names_its_claims_with_verdicts_from_its_trials(study, quick_sweeps, tmp_path):
    from bnsweep.report import build_report
    from bnsweep.results import (STATEMENTS, claim_batch_size, claim_regularisation, claim_step_time,
                                 load_experiment)

    uri, experiment = quick_sweeps[study]
    expect = QUICK[study]
    r = load_experiment(experiment, uri)
    t = r.trials
    assert r.study == study and len(t) == expect["trials"] and (t["outcome"] == "completed").all()
    build_report(experiment, tmp_path, uri, log_to_mlflow=False)
    md = (tmp_path / "report.md").read_text()
    for fig in expect["figures"]:
        assert f"]({fig}.png)" in md and (tmp_path / f"{fig}.png").stat().st_size > 0
    # The verdicts, computed here from the same trials by the claims' own functions.
    computed = {2: lambda: claim_step_time(t, r.history), 4: lambda: claim_batch_size(t),
                5: lambda: claim_regularisation(t, r.history)}
    verdicts = {n: computed[n]().verdict for n in expect["claims"]}
    (line,) = [x for x in md.splitlines() if x.startswith("- **speaks to**: ")]
    assert line == "- **speaks to**: " + "; ".join(f"claim {n} ({STATEMENTS[n]}): {verdicts[n]}"
                                                   for n in expect["claims"])
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    assert sorted(claims.index[claims["speaks_to"]]) == sorted(expect["claims"])
    assert all(claims.loc[n, "verdict"] == v for n, v in verdicts.items())
    # Their numbers are the trials': the BN arm's best accuracy per batch size, each pair's
    # step times; the last-epoch train - val gap of each dropout arm.
    if study == "quick_batch_size":
        bn = t[t["bn"]].set_index("batch_size")["best_val_acc"]
        assert claims.loc[4, "n:per_batch"] == ";".join(f"{b}:{bn[b]:.3f}" for b in (5, 50, 100))
        assert claims.loc[2, "n:pairs"] == 3  # BN and no BN at each batch size, same seed and device
    else:
        for arm, row in t.set_index("arm").iterrows():
            assert claims.loc[5, f"n:{arm}_gap"] == pytest.approx(row["train_acc"] - row["val_acc"])
