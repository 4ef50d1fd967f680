"""What a person reads on MLflow's own pages, recorded into an sqlite store under tmp_path (no
server, no Ray): a diverged trial's name, description and `diverged_epoch`; the sweep's summary
metrics, named short enough for MLflow's chart titles."""

from __future__ import annotations

import math
import re

import pytest
from mlflow import MlflowClient

from bnsweep import tracking
from bnsweep.config import REFERENCE, RUN_METRICS, SWEEP_COUNT_METRICS, sweep_best_metric
from bnsweep.trials import display_name, mark_diverged, trial_tags

# What MLflow 3.17 shows of a chart card's title at 1280 and 1600 px ("best_val_a…", issue 21).
CHART_TITLE_CHARS = 10
# The characters MLflow allows in a metric name (mlflow.utils.validation).
METRIC_NAME = re.compile(r"^[\w\-./: ]+$")


def epoch(n: int, train_loss: float, val_loss: float, val_acc: float, diverged: bool = False) -> dict:
    return {"epoch": n, "train_loss": train_loss, "train_acc": 0.2, "val_loss": val_loss, "val_acc": val_acc,
            "diverged": float(diverged), "timestamp": 1.7e9 + n}


@pytest.fixture
def record(tmp_path) -> tracking.SweepRecord:
    return tracking.start_sweep(f"sqlite:///{tmp_path}/mlflow.db", "bnsweep-pages", "pages", "grid",
                                str(tmp_path / "results" / "pages-1"), "pages.py", "SPACE = {}", {"epochs": 3},
                                ["bn", "lr"], elsewhere="use another store")


def trial(runs: tracking.TrialRuns, trial_id: str, bn: bool, lr: float) -> str:
    cfg = {**REFERENCE, "bn": bn, "lr": lr}
    return runs.find_or_create(trial_id, cfg, trial_tags(cfg, "grid"))


def test_the_mark_follows_the_settings():
    assert mark_diverged("no_bn lr=1000") == "no_bn lr=1000 DIVERGED"
    assert mark_diverged("no_bn lr=1000 DIVERGED") == "no_bn lr=1000 DIVERGED"  # once
    assert mark_diverged("bn") == "bn DIVERGED"
    assert display_name({"bn": False, "lr": 1e6}, ["bn", "lr"]) == "no_bn lr=1e6"


def test_a_diverged_trial_says_when_and_how_on_its_page(record):
    runs = tracking.TrialRuns(record)
    run_id = trial(runs, "t1", bn=False, lr=1e6)
    history = [epoch(1, 2.31, 2.30, 0.12), epoch(2, 2.25, 2.28, 0.17), epoch(3, math.nan, math.nan, 0.1, True)]
    runs.log_results("t1", history[:2])
    run = MlflowClient(record.uri).get_run(run_id)
    assert run.info.run_name == "no_bn lr=1e6" and "mlflow.note.content" not in run.data.tags
    runs.log_results("t1", history)
    runs.log_results("t1", history)  # a repeated sync changes nothing
    run = MlflowClient(record.uri).get_run(run_id)
    assert run.info.run_name == "no_bn lr=1e6 DIVERGED"
    assert run.data.metrics["diverged_epoch"] == 3 and "diverged_epoch" in RUN_METRICS
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("**Diverged at epoch 3**: its training loss became NaN and its validation loss became NaN")
    assert "last finite training loss: 2.2500, at epoch 2" in note
    assert "best val_acc reached: 0.1700, at epoch 2" in note


def test_a_validation_loss_that_overflowed_is_named_alone(record):
    runs = tracking.TrialRuns(record)
    run_id = trial(runs, "t2", bn=True, lr=10.0)
    runs.log_results("t2", [epoch(1, 2.1, math.inf, 0.1, True)])
    run = MlflowClient(record.uri).get_run(run_id)
    note = run.data.tags["mlflow.note.content"]
    assert run.info.run_name == "bn lr=10 DIVERGED" and run.data.metrics["diverged_epoch"] == 1
    assert "its validation loss became inf (its training loss was still finite, 2.1000)" in note
    assert "last finite training loss: 2.1000, at epoch 1" in note


def test_a_trial_that_diverged_in_its_first_epoch_has_no_finite_loss(record):
    runs = tracking.TrialRuns(record)
    run_id = trial(runs, "t3", bn=False, lr=10.0)
    runs.log_results("t3", [epoch(1, math.inf, math.nan, math.nan, True)])
    note = MlflowClient(record.uri).get_run(run_id).data.tags["mlflow.note.content"]
    assert "its training loss became inf and its validation loss became NaN" in note
    assert "last finite training loss: none: it diverged in its first epoch" in note
    assert "best val_acc reached: none (no finite val_acc)" in note


def test_the_summary_names_fit_a_chart_title(record):
    runs = tracking.TrialRuns(record)
    for i, (bn, acc) in enumerate(((True, 0.6), (False, 0.4))):
        trial(runs, f"s{i}", bn=bn, lr=0.1)
        runs.log_results(f"s{i}", [epoch(1, 2.0, 2.0, acc) | {"best_val_acc": acc}])
        runs.finish(f"s{i}", {"epoch": 1}, "FINISHED", "completed")
    client = MlflowClient(record.uri)
    tracking.summarize(client, record)
    metrics = client.get_run(record.parent_run_id).data.metrics
    assert metrics == {"bn best": 0.6, "no_bn best": 0.4, "n done": 2, "n diverged": 0, "n failed": 0}
    names = [*SWEEP_COUNT_METRICS.values(), *(sweep_best_metric(a) for a in ("bn", "no_bn"))]
    assert all(len(n) <= CHART_TITLE_CHARS and METRIC_NAME.match(n) for n in names), names
    assert sweep_best_metric("no_bn+dropout") == "no_bn_dropout best"
    note = client.get_run(record.parent_run_id).data.tags["mlflow.note.content"]
    assert "2 trials" in note and "`bn best`" in note and "`no_bn best`" in note and "`n diverged`" in note
