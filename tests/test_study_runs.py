"""Study files on a real Ray head: the Tune and Optuna forms run; a trial that cannot
succeed is not retried; every command bnsweep prints pastes into a real shell; two
sweeps may create one new sqlite store together."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    VENV_BIN,
    bnsweep_env,
    free_port,
    ledger_trials,
    results_of,
    run_bnsweep,
    sweep_dir_of,
    trial_dirs,
    write_space,
)
from helpers import TINY, children, start_driver, wait_for_first_result
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_tune_and_optuna_forms_run_in_smoke_mode(ray_address, tmp_path):
    grid = write_space(tmp_path / "tunegrid.py", f"""
        from ray import tune
        SPACE = {{"lr": tune.grid_search([0.1, 0.01]), "bn": tune.grid_search([True, False])}}
        FIXED = {TINY}
        SMOKE = {{"epochs": 1}}
        """)
    search = write_space(tmp_path / "mixed.py", """
        import optuna
        from ray import tune
        SEARCH = "optuna"
        ARMS = {"bn": [True, False]}
        SPACE = {
            "lr": tune.loguniform(1e-3, 1e-1),
            "batch_size": optuna.distributions.IntDistribution(20, 60, step=20),
            "lr_drop_period": ("intuniform", 1, 3),
            "dropout": tune.quniform(0.0, 0.4, 0.2),
        }
        FIXED = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "augment": False,
                 "epochs": 2}
        NUM_SAMPLES = 8
        SMOKE_NUM_SAMPLES = 2
        CONFIRM_SEEDS = 0  # the forms are the point here; tests/test_confirm.py runs confirmations
        """)
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    for space, n_trials in ((grid, 4), (search, 4)):
        storage = tmp_path / f"results-{space.stem}"
        r = run_bnsweep("run", str(space), "--smoke", "--no-tracking", "--storage", str(storage), env=env,
                        cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        trials = ledger_trials(sweep_dir_of(storage))
        # The Optuna study runs under ASHA, which may stop a trial after its first epoch.
        assert len(trials) == n_trials and all(t.status in ("completed", "stopped") and t.epochs for t in trials)
        params = [t.config for t in trials]
        if space is search:  # sampled inside the ranges bnsweep checked, integers as integers
            for p in params:
                assert 1e-3 <= p["lr"] <= 1e-1
                assert p["batch_size"] in (20, 40, 60) and p["lr_drop_period"] in (1, 2, 3)
                assert min(abs(p["dropout"] - v) for v in (0.0, 0.2, 0.4)) < 1e-9
            assert sorted(p["bn"] for p in params) == [False, False, True, True]
        else:
            assert sorted((p["lr"], p["bn"]) for p in params) == [(0.01, False), (0.01, True), (0.1, False),
                                                                  (0.1, True)]


def test_a_trial_that_cannot_succeed_is_not_retried(ray_address, mlflow_server, tmp_path):
    # On a cluster the driver does not read the data (the nodes have their own), so a node
    # without it is a trial's error: a data error, which a retry would only repeat.
    space = write_space(tmp_path / "nodata.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{"data_dir": "{tmp_path}/no-such-folder", "download": False, "width": 0.0625, "n_train": 200,
                 "n_val": 100, "epochs": 1, "batch_size": 50}}
        MAX_FAILURES = 2
        """)
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    storage = tmp_path / "results"
    r = run_bnsweep("run", str(space), "--storage", str(storage), env=env, cwd=tmp_path)
    assert r.returncode == 1 and "\nsummary\n" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    summary = r.stdout.split("\nsummary\n")[1]
    assert "failed 1" in summary and "2 trials failed for a reason another attempt cannot fix" in summary
    assert "CIFAR-10" in summary and "resume" not in summary, summary
    sweep_dir = sweep_dir_of(storage)
    trials = ledger_trials(sweep_dir)
    assert len(trials) == 2 and all(t.status == "failed" and "CIFAR-10" in t.end["reason"] for t in trials)
    for t in trial_dirs(sweep_dir):  # Tune retries only a trial that raised; these ended, with no error
        assert not (t / "error.txt").exists() and not results_of(t)
    runs = children(mlflow_server.uri, "bnsweep-nodata")
    assert len(runs) == 2 and {x.info.status for x in runs} == {"FAILED"}
    assert all("CIFAR-10" in x.data.tags["failure_reason"] for x in runs)
    # A config that reaches a trial invalid (here forced past the checks) fails the same way.
    script = f"""
import sys
from bnsweep import runner
from bnsweep.space import load_study
study = load_study({str(write_space(tmp_path / 'badcfg.py', 'SPACE = {"bn": [True]}' + chr(10) + f'FIXED = {TINY}'))!r})
study.fixed["batch_size"] = 10 ** 6
sys.exit(runner.run(study, {{}}, address={ray_address!r}, storage={str(tmp_path / 'results2')!r}, mlflow=False))
"""
    r = subprocess.run([str(VENV_BIN / "python"), "-c", script], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "batch_size=1000000 is larger than the training set" in r.stdout.split("\nsummary\n")[1]
    (trial,) = ledger_trials(sweep_dir_of(tmp_path / "results2"))
    assert trial.status == "failed" and "batch_size=1000000" in trial.end["reason"]


def _printed(out: str, pattern: str) -> str:
    match = re.search(pattern, out, re.M)
    assert match, out[-3000:]
    return match.group(1)


def _shell(command: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert r.returncode == 0, (command, r.stdout[-3000:], r.stderr[-3000:])
    return r


def test_printed_commands_paste_into_a_shell(ray_address, tmp_path):
    # A folder, a results path and an experiment name that need quoting.
    work = tmp_path / "work dir"
    work.mkdir()
    space = write_space(work / "pasted.py", f"""
        SPACE = {{"bn": [True]}}
        FIXED = {{**{TINY}, "n_train": 400, "epochs": 4}}
        """)
    experiment = "odd name: 'q' #1"
    env = {**bnsweep_env(RAY_ADDRESS=ray_address), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    driver = start_driver(space, Path("my results/a b"), env, work, "--no-tracking", "--experiment", experiment)
    wait_for_first_result(work / "my results/a b")
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, out[-3000:]
    resumed = _shell(_printed(out, r"Continue with:\n  (bnsweep resume .*)$"), env, work)
    synced = _shell(_printed(resumed.stdout, r"^next: (bnsweep sync .*?)   \("), env, work)
    assert "epoch(s) added" in synced.stdout
    reported = _shell(_printed(synced.stdout, r"^next: (bnsweep report .*?)   \("), env, work)
    from bnsweep.storage import folder_name  # a name becomes a folder by one rule (the ':', quotes and '#' go)

    assert (work / "reports" / folder_name(experiment) / "report.html").is_file(), reported.stdout[-2000:]
    ui = _printed(synced.stdout, r"^  view:    (mlflow ui .*?)   \(then")
    port = free_port()
    server = subprocess.Popen(["bash", "-c", f"exec {ui} --host 127.0.0.1 --port {port}"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = (f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?"
               f"{urllib.parse.urlencode({'experiment_name': experiment})}")
        deadline = time.monotonic() + 120
        while True:
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=5).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "the pasted `mlflow ui` did not serve the sweep's store"
                time.sleep(1)
        assert body["experiment"]["name"] == experiment
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_two_sweeps_started_together_create_one_new_store(ray_address, tmp_path):
    space = write_space(tmp_path / "together.py", f"""
        SPACE = {{"bn": [True]}}
        FIXED = {{**{TINY}, "epochs": 1}}
        """)
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    assert not (tmp_path / "mlflow.db").exists()
    drivers = [start_driver(space, tmp_path / f"results{i}", env, tmp_path) for i in range(2)]
    outs = [d.communicate(timeout=600)[0] for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [o[-3000:] for o in outs]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("bnsweep-together")
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("bnsweep.role") == "sweep"]
    assert len(parents) == 2 and len(children(f"sqlite:///{tmp_path}/mlflow.db", "bnsweep-together")) == 2
