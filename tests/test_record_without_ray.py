"""The upper layers in the fast tier: a sweep's ledger (written as the trainable writes it,
trials trained here by train(), no Ray head) replayed by `bnsweep sync` into an sqlite
MLflow store, read back by bnsweep.analysis.results and turned into a report. The same code paths
the slow tests reach through a real sweep: ledger, recorder, tracking, runner.sync,
results, claims, the analysis modules and the report's renderers."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import write_space
from helpers import TINY, children, metric_history, sweep_without_ray
from mlflow import MlflowClient

from bnsweep.cli import main
from bnsweep.config import EPOCH_METRICS
from bnsweep.ledger import read_trials

# lr 1e6 diverges without BN in the first epoch; two epochs, so a history has a shape.
SPACE = f"""
\"\"\"Fast-tier sweep: the lr axis at two points, one of them diverging.\"\"\"
SPACE = {{"lr": [0.05, 1e6], "bn": [True, False]}}
FIXED = {{**{TINY}, "epochs": 2}}
"""


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """(sweep folder, tracking URI, the first sync's exit code and output) of the module's sweep."""
    import contextlib
    import io

    work = tmp_path_factory.mktemp("no-ray")
    sweep_dir = sweep_without_ray(write_space(work / "fast.py", SPACE), work / "results")
    uri = f"sqlite:///{work}/mlflow.db"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["sync", str(sweep_dir), "--tracking-uri", uri])
    return sweep_dir, uri, rc, out.getvalue()


def test_sync_records_every_epoch_of_the_ledger_once(synced):
    sweep_dir, uri, rc, out = synced
    assert rc == 0 and "had no record of this sweep: created parent run" in out, out
    trials = read_trials(str(sweep_dir))
    assert len(trials) == 4 and {t.status for t in trials} <= {"completed", "diverged"}
    runs = {r.data.tags["ray_trial_id"]: r for r in children(uri, "bnsweep-fast")}
    assert sorted(runs) == sorted(t.trial_id for t in trials)
    for t in trials:
        run = runs[t.trial_id]
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == t.status
        assert run.data.tags["diverged"] == str(t.status == "diverged").lower()
        for key in (k for k in EPOCH_METRICS if k != "epoch"):
            got = metric_history(uri, run.info.run_id, key)
            want = [(r["epoch"], float(r[key])) for r in t.epochs]
            assert [s for s, _ in got] == [s for s, _ in want], (t.name, key)
            assert all(a == b or (math.isnan(a) and math.isnan(b)) for (_, a), (_, b) in zip(got, want)), key
    assert any(t.status == "diverged" for t in trials)  # lr 1e6 without BN
    # A setting reads the same in the runs table's columns as in the run's name (formats.number).
    for run in runs.values():
        assert f"lr={run.data.params['lr']}" in run.info.run_name and run.data.params["lr"] in ("0.05", "1e6")


def test_a_second_sync_adds_nothing(synced):
    sweep_dir, uri, _, _ = synced
    before = {r.info.run_id: metric_history(uri, r.info.run_id, "val_acc") for r in children(uri, "bnsweep-fast")}
    assert main(["sync", str(sweep_dir), "--tracking-uri", uri]) == 0
    after = {r.info.run_id: metric_history(uri, r.info.run_id, "val_acc") for r in children(uri, "bnsweep-fast")}
    assert after == before


def test_results_and_report_read_the_synced_sweep(synced, tmp_path):
    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment

    _, uri, _, _ = synced
    r = load_experiment("bnsweep-fast", uri)
    assert len(r.trials) == 4 and set(r.trials["arm"]) == {"bn", "no_bn"}
    blown = r.trials[(r.trials["lr"] == 1e6) & ~r.trials["bn"]]
    assert blown["diverged"].all() and (blown["outcome"] == "diverged").all()
    page = build_report("bnsweep-fast", tmp_path / "report", uri)
    html, md = page.read_text(), (tmp_path / "report" / "report.md").read_text()
    # What its trials hold decides the figures (lr varied: the lr figure, and the curves) and
    # the claims: 4 steps an epoch measure no step time (claim 2). Claim 1 is undecided too, for
    # one of two reasons, by the arms' accuracy after 8 steps, which depends on the CPU's path
    # (bf16 where the CPU computes it natively, fp32 elsewhere): the statistics are too young,
    # or neither arm is above chance + margin yet.
    assert html.count("<img") >= 2 and "## Best validation accuracy per learning rate" in md
    claims = pd.read_csv(tmp_path / "report" / "claims.csv").set_index("claim")["verdict"]
    assert claims[2].startswith("undecided (trials too short") and claims[2] in md
    assert claims[1].startswith(("undecided (trials too short", "undecided (neither arm gets above")), claims[1]
    parent = MlflowClient(uri).get_run(r.parents["run_id"].iloc[0])
    assert parent.data.tags["mlflow.note.content"].startswith("Sweep of study **fast**")
