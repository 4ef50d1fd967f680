"""MLflow as the user left it: experiments and runs deleted with MLflow's own CLI
(`mlflow experiments delete`, `mlflow runs delete`) on a real `mlflow server`.

A deleted experiment or parent run stops run, resume and sync with one line naming it
and the two ways on (restore it, or record elsewhere), exit 2, before Ray starts or
anything is written; nothing is restored behind the user's back. A deleted trial run is
left deleted, and no second run stands in for it; the report counts each trial once.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import VENV_BIN, bnsweep_env, ledger_trials, write_space
from helpers import TINY, bnsweep_here, sweep_without_ray
from mlflow import MlflowClient
from mlflow.entities import ViewType

from bnsweep.analysis.results import load_experiment


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path]:
    """(the study file, a finished sweep of it, run without MLflow and without Ray:
    helpers.sweep_without_ray): each test records it into an experiment of its own with
    `bnsweep sync`, which needs no Ray either."""
    root = tmp_path_factory.mktemp("lifecycle")
    space = write_space(root / "kept.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 2}}
    """)
    return space, sweep_without_ray(space, root / "results")


@pytest.fixture
def bnsweep(monkeypatch, capsys):
    """`bnsweep ARGS` in this process (helpers.bnsweep_here): sync needs no Ray, and resume
    and run are expected to stop before it; a subprocess would spend its time on imports."""
    return lambda *args, env, cwd: bnsweep_here(monkeypatch, capsys, *args, env=env, cwd=cwd)


def record_into(bnsweep, server, sweep_dir: Path, experiment: str) -> dict:
    """Record the sweep into `experiment` on the server as `sync` does for a sweep run with
    --no-tracking --experiment EXPERIMENT; return sweep.json's record of it."""
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    (sweep_dir / "sweep.json").write_text(json.dumps({**spec, "tracking": None, "experiment": experiment}))
    r = sync(bnsweep, server, sweep_dir)
    assert r.returncode == 0 and "had no record" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((sweep_dir / "sweep.json").read_text())["tracking"]


def sync(bnsweep, server, sweep_dir: Path) -> subprocess.CompletedProcess:
    return bnsweep("sync", str(sweep_dir), env=bnsweep_env(MLFLOW_TRACKING_URI=server.uri), cwd=sweep_dir.parent)


def mlflow_cli(server, *args: str) -> None:
    """MLflow's own CLI, as a user would delete or restore (it reads MLFLOW_TRACKING_URI)."""
    r = subprocess.run([str(VENV_BIN / "mlflow"), *args], capture_output=True, text=True, timeout=120,
                       env=bnsweep_env(MLFLOW_TRACKING_URI=server.uri))
    assert r.returncode == 0, r.stderr[-2000:]


def runs_of(server, record: dict, role: str) -> list:
    """Every run of the sweep's experiment with that role, whatever its lifecycle."""
    runs = MlflowClient(server.uri).search_runs([record["experiment_id"]], run_view_type=ViewType.ALL,
                                                max_results=1000)
    return [r for r in runs if r.data.tags.get("bnsweep.role") == role]


def assert_stopped(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line, no traceback; returns the line."""
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.strip()]
    for needle in needles:
        assert needle in line, line
    return line


def assert_sync_and_resume_stopped(bnsweep, server, sweep_dir: Path, *needles: str) -> None:
    """`sync` and `resume` stop in one line holding `needles` and their own way on, before
    a driver starts (no new log) or anything is written."""
    logs = sorted((sweep_dir / "logs").iterdir())
    assert_stopped(sync(bnsweep, server, sweep_dir), *needles, f"bnsweep sync {sweep_dir} --tracking-uri URI")
    r = bnsweep("resume", str(sweep_dir), env=bnsweep_env(), cwd=sweep_dir.parent)
    assert_stopped(r, *needles, f"bnsweep resume {sweep_dir} --no-tracking")
    assert sorted((sweep_dir / "logs").iterdir()) == logs


def test_a_deleted_trial_run_stays_deleted_and_gets_no_twin(bnsweep, mlflow_server, swept):
    _, sweep_dir = swept
    record = record_into(bnsweep, mlflow_server, sweep_dir, "kept-trial-deleted")
    trials = ledger_trials(sweep_dir)
    deleted = runs_of(mlflow_server, record, "trial")[0]
    mlflow_cli(mlflow_server, "runs", "delete", "--run-id", deleted.info.run_id)

    r = sync(bnsweep, mlflow_server, sweep_dir)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"mlflow runs restore --run-id {deleted.info.run_id}" in r.stdout  # said, with the way back
    kids = runs_of(mlflow_server, record, "trial")
    assert len(kids) == len(trials)  # no second run for the deleted trial's
    assert MlflowClient(mlflow_server.uri).get_run(deleted.info.run_id).info.lifecycle_stage == "deleted"
    assert len(load_experiment("kept-trial-deleted", mlflow_server.uri).trials) == len(trials) - 1

    mlflow_cli(mlflow_server, "runs", "restore", "--run-id", deleted.info.run_id)
    r = sync(bnsweep, mlflow_server, sweep_dir)
    assert r.returncode == 0 and "is deleted" not in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(runs_of(mlflow_server, record, "trial")) == len(trials)
    results = load_experiment("kept-trial-deleted", mlflow_server.uri)
    assert sorted(results.trials["ray_trial_id"]) == sorted(t.trial_id for t in trials)


def test_the_report_counts_a_trial_once_where_a_store_holds_two_runs_of_it(bnsweep, mlflow_server, swept):
    # What an older bnsweep left: a second run for a trial whose first was deleted, then restored.
    _, sweep_dir = swept
    record = record_into(bnsweep, mlflow_server, sweep_dir, "kept-twin")
    client = MlflowClient(mlflow_server.uri)
    first = runs_of(mlflow_server, record, "trial")[0]
    twin = client.create_run(record["experiment_id"], run_name=first.info.run_name, tags=first.data.tags)
    client.log_metric(twin.info.run_id, "val_acc", 0.5, step=1)  # one epoch; the first has two
    client.set_terminated(twin.info.run_id, "KILLED")

    results = load_experiment("kept-twin", mlflow_server.uri)
    trials = ledger_trials(sweep_dir)
    assert sorted(results.trials["ray_trial_id"]) == sorted(t.trial_id for t in trials)
    assert first.info.run_id in set(results.trials["run_id"])  # the one with every epoch
    assert "1 more run of a trial already counted left out" in results.note


def test_a_deleted_parent_run_stops_sync_and_resume(bnsweep, mlflow_server, swept):
    _, sweep_dir = swept
    record = record_into(bnsweep, mlflow_server, sweep_dir, "kept-parent-deleted")
    parent = record["parent_run_id"]
    mlflow_cli(mlflow_server, "runs", "delete", "--run-id", parent)
    assert_sync_and_resume_stopped(bnsweep, mlflow_server, sweep_dir, f"parent run {parent}", "is deleted",
                                   f"mlflow runs restore --run-id {parent}")
    assert [p.info.lifecycle_stage for p in runs_of(mlflow_server, record, "sweep")] == ["deleted"]  # no new one

    mlflow_cli(mlflow_server, "runs", "restore", "--run-id", parent)
    r = sync(bnsweep, mlflow_server, sweep_dir)
    assert r.returncode == 0 and "0 epoch(s) added" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_a_deleted_experiment_stops_run_resume_and_sync_and_stays_deleted(bnsweep, mlflow_server, swept, tmp_path):
    space, sweep_dir = swept
    record = record_into(bnsweep, mlflow_server, sweep_dir, "kept-experiment-deleted")
    exp_id = record["experiment_id"]
    mlflow_cli(mlflow_server, "experiments", "delete", "--experiment-id", exp_id)
    restore = f"mlflow experiments restore --experiment-id {exp_id}"
    named = "MLflow experiment 'kept-experiment-deleted'"
    assert_sync_and_resume_stopped(bnsweep, mlflow_server, sweep_dir, named, restore)
    # The same study run again into it: refused before Ray or the results folder.
    r = bnsweep("run", str(space), "--experiment", "kept-experiment-deleted", "--storage",
                str(tmp_path / "again"), env=bnsweep_env(MLFLOW_TRACKING_URI=mlflow_server.uri), cwd=tmp_path)
    assert_stopped(r, named, restore, "--experiment NAME", "--tracking-uri URI")
    assert not (tmp_path / "again").exists()
    client = MlflowClient(mlflow_server.uri)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"  # nothing came back
    runs = runs_of(mlflow_server, record, "sweep") + runs_of(mlflow_server, record, "trial")
    assert runs and {r.info.lifecycle_stage for r in runs} == {"deleted"}
    # The report says the same, not "no experiment named ...".
    r = bnsweep("report", "kept-experiment-deleted", "--out", str(tmp_path / "report"),
                env=bnsweep_env(MLFLOW_TRACKING_URI=mlflow_server.uri), cwd=tmp_path)
    assert_stopped(r, named, restore, "report another experiment")
    assert not (tmp_path / "report").exists()

    mlflow_cli(mlflow_server, "experiments", "restore", "--experiment-id", exp_id)
    r = sync(bnsweep, mlflow_server, sweep_dir)
    assert r.returncode == 0 and "0 epoch(s) added" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
