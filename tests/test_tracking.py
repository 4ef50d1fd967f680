"""MLflow records every trial exactly once, against a real `mlflow server` on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from conftest import bnsweep_env, ledger_trials, run_bnsweep, sweep_dir_of, write_space
from helpers import (
    TINY,
    assert_mlflow_equals_ledger,
    children,
    metric_history,
    start_driver,
    steps,
    wait_for_first_result,
)
from mlflow import MlflowClient

from bnsweep.config import REFERENCE
from bnsweep.train import native_bf16

TAGS = ("arm", "pair_id", "seed", "ray_trial_id", "diverged", "dataset_verified", "dataset_source",
        "dataset_fingerprint", "git_commit", "git_dirty", "torch_version", "ray_version", "mlflow_version",
        "optuna_version", "device_name", "study", "exec.device", "exec.autocast", "exec.pool_kernel")


def test_sweep_records_one_parent_and_one_child_per_trial(ray_address, mlflow_server, tmp_path):
    space = write_space(tmp_path / "rec.py", f"""
        \"\"\"Recording test.\"\"\"
        SPACE = {{"lr": [0.01, 0.05], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 2}}
    """)
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "next: bnsweep report bnsweep-rec   (" in r.stdout  # the server is the environment's: no flag
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("bnsweep-rec")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get("bnsweep.role") == "sweep"]
    kids = [x for x in runs if x.data.tags.get("bnsweep.role") == "trial"]
    assert len(parents) == 1 and len(kids) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "rec"
    assert parent.data.tags["sweep_dir"] == str(sweep_dir_of(tmp_path / "results"))
    # The parent's params: what every trial shares; not lr or bn, which the trials vary.
    assert parent.data.params["epochs"] == "2" and not {"lr", "bn"} & set(parent.data.params)
    text = client.download_artifacts(parent.info.run_id, "search_space/rec.py", str(tmp_path / "dl"))
    assert open(text).read() == space.read_text()
    for kid in kids:
        assert kid.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert kid.info.status == "FINISHED"
        for tag in TAGS:
            assert kid.data.tags.get(tag), (tag, kid.data.tags)
        assert kid.data.tags["dataset_source"] == "synthetic" and kid.data.tags["dataset_verified"] == "false"
        # What ran, not what was asked: amp is auto, which a CPU turns into bf16 only where it computes
        # bf16 natively; cuda_graphs default on, and a CPU has none.
        assert kid.data.params["amp"] == "auto"
        assert kid.data.tags["exec.autocast"] == ("bf16" if native_bf16(torch.device("cpu")) else "none")
        assert kid.data.tags["exec.cuda_graphs"] == "false" and kid.data.tags["exec.device"] == "cpu"
        assert kid.data.tags["arm"] == ("bn" if kid.data.params["bn"] == "True" else "no_bn")
        assert set(REFERENCE) <= set(kid.data.params)
        assert kid.data.params["epochs"] == "2" and kid.data.params["width"] == "0.0625"
        assert kid.info.run_name == f"{kid.data.tags['arm']} lr={float(kid.data.params['lr']):g}"  # arm first
        assert kid.data.metrics["epochs_completed"] == 2
    pairs = {}
    for kid in kids:
        pairs.setdefault(kid.data.tags["pair_id"], []).append(kid.data.tags["arm"])
    assert sorted(map(sorted, pairs.values())) == [["bn", "no_bn"], ["bn", "no_bn"]]
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-rec", sweep_dir_of(tmp_path / "results"))


def test_tracking_server_outage_then_sync(ray_address, mlflow_server, tmp_path):
    space = write_space(tmp_path / "outage.py", f"""
        SPACE = {{"lr": [0.01, 0.02, 0.03]}}
        FIXED = {{**{TINY}, "epochs": 3}}
        MAX_CONCURRENT = 1
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    driver = start_driver(space, storage, env, tmp_path)
    try:
        wait_for_first_result(storage)
        mlflow_server.stop()  # the tracking server dies mid-sweep
        out, _ = driver.communicate(timeout=600)
    finally:
        mlflow_server.start()  # ... and comes back later
    assert driver.returncode == 0, out[-4000:]
    assert "bnsweep sync" in out
    sweep_dir = sweep_dir_of(storage)
    assert all(t.epochs[-1]["epoch"] == 3 and t.status == "completed" for t in ledger_trials(sweep_dir))

    r = run_bnsweep("sync", str(sweep_dir), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-outage", sweep_dir)
    runs = children(mlflow_server.uri, "bnsweep-outage")
    assert all(x.info.status == "FINISHED" for x in runs)
    snapshot = {x.info.run_id: metric_history(mlflow_server.uri, x.info.run_id, "val_acc") for x in runs}

    r = run_bnsweep("sync", str(sweep_dir), env=env, cwd=tmp_path)  # idempotent
    assert r.returncode == 0 and "0 epoch(s) added" in r.stdout, r.stdout
    runs = children(mlflow_server.uri, "bnsweep-outage")
    assert {x.info.run_id: metric_history(mlflow_server.uri, x.info.run_id, "val_acc") for x in runs} == snapshot


def test_sweep_run_without_tracking_is_synced_then_resumed_into_mlflow(ray_address, mlflow_server, tmp_path):
    # --no-tracking, interrupted; `sync` into a server that has no record of the sweep
    # (the sweep directory given as a file:// URI: sync reads storage the way it reads
    # s3://); then `resume` records the rest live into that server, although the
    # callback Tune restores was pickled by a run without tracking.
    space = write_space(tmp_path / "offline.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 4}}
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    driver = start_driver(space, storage, env, tmp_path, "--no-tracking")
    wait_for_first_result(storage)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, out[-4000:]
    sweep_dir = sweep_dir_of(storage)
    for _ in range(2):  # the second sync finds the record the first made, and adds nothing
        r = run_bnsweep("sync", f"file://{sweep_dir}", "--tracking-uri", mlflow_server.uri, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 epoch(s) added" in r.stdout and "had no record" not in r.stdout
    for run in children(mlflow_server.uri, "bnsweep-offline"):  # the second sync changed nothing
        assert len(metric_history(mlflow_server.uri, run.info.run_id, "epochs_completed")) == 1
    r = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-offline", sweep_dir)
    runs = children(mlflow_server.uri, "bnsweep-offline")
    assert len(runs) == 2 and all(x.info.status == "FINISHED" for x in runs)
    assert all(steps(mlflow_server.uri, x.info.run_id) == [1, 2, 3, 4] for x in runs)
    parent = MlflowClient(mlflow_server.uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep_dir"] == f"file://{sweep_dir}"
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["tracking"]["parent_run_id"] == parent.info.run_id
    # A resume whose store is lost or down says so and what to do, before Ray or MLflow is touched.
    for tracking, needle in [({"uri": f"sqlite:///{tmp_path}/gone.db"}, "no MLflow store at"),
                             ({"parent_run_id": "0" * 32}, "has no record of this sweep"),
                             ({"uri": "http://127.0.0.1:9"}, f"bnsweep resume {sweep_dir} --no-tracking")]:
        (sweep_dir / "sweep.json").write_text(json.dumps({**record, "tracking": {**record["tracking"], **tracking}}))
        r = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = run_bnsweep("resume", str(sweep_dir), "--no-tracking", env=env, cwd=tmp_path)  # the server still down
    assert r.returncode == 0 and "MLflow is off for this resume" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((sweep_dir / "sweep.json").read_text())["tracking"]["uri"] == "http://127.0.0.1:9"
    assert MlflowClient(mlflow_server.uri).get_run(parent.info.run_id).info.status == "FINISHED"


def test_unreachable_server_at_start_is_a_clear_error(tmp_path):
    space = write_space(tmp_path / "s.py", 'SPACE = {"bn": [True]}\nFIXED = {"dataset": "synthetic"}\n')
    env = bnsweep_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9")  # the discard port: nothing listens
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
    assert r.returncode == 1
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in r.stderr and "--no-tracking" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "results").exists()


def test_failed_trial_is_recorded_failed(ray_address, mlflow_server, tmp_path):
    space = write_space(tmp_path / "fails.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{**{TINY}, "dataset": "cifar10", "data_dir": "{tmp_path}/no-data-here", "download": False}}
        MAX_FAILURES = 0
    """)
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "2 trials failed" in r.stdout
    runs = children(mlflow_server.uri, "bnsweep-fails")
    assert len(runs) == 2 and all(x.info.status == "FAILED" for x in runs)
    assert [x.data.tags["outcome"] for x in runs] == ["failed", "failed"]  # the ledger's word, as the terminal's
    # The report says what happened in the same words, with the reason, not "no trial has logged an epoch yet".
    r = run_bnsweep("report", "bnsweep-fails", "--out", str(tmp_path / "report"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "all 2 trials failed before their first epoch (2 x " in md and "no trial has logged" not in md, md
    assert "| 2 failed" in md or "2 failed" in md


def test_interrupted_sweep_marks_runs_killed_and_resume_finishes_them(ray_address, mlflow_server, tmp_path):
    # Two trials running (one per CPU of the session's head) and one waiting when SIGTERM comes.
    space = write_space(tmp_path / "stopme.py", f"""
        SPACE = {{"lr": [0.01, 0.02, 0.03]}}
        FIXED = {{**{TINY}, "epochs": 4}}
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    driver = start_driver(space, storage, env, tmp_path)
    wait_for_first_result(storage)
    driver.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, out[-4000:]
    assert "bnsweep resume" in out
    # Ray's own advice, which bnsweep's replaces: its resume call, and trials without results yet.
    assert "Tuner.restore" not in out and "Failed to fetch metrics" not in out, out[-4000:]
    client = MlflowClient(mlflow_server.uri)
    runs = children(mlflow_server.uri, "bnsweep-stopme")
    assert runs and all(x.info.status in ("FINISHED", "KILLED") for x in runs)
    assert any(x.info.status == "KILLED" for x in runs)
    assert {x.data.tags["outcome"] for x in runs if x.info.status == "KILLED"} == {"unfinished"}
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    r = run_bnsweep("sync", str(sweep_dir_of(storage)), env=env, cwd=tmp_path)  # the trial never started: no run
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(children(mlflow_server.uri, "bnsweep-stopme")) == len(ledger_trials(sweep_dir_of(storage))) < 3

    r = run_bnsweep("resume", str(sweep_dir_of(storage)), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = children(mlflow_server.uri, "bnsweep-stopme")
    assert len(runs) == 3 and all(x.info.status == "FINISHED" for x in runs)
    assert {x.data.tags["outcome"] for x in runs} == {"completed"}  # a resumed trial's end replaces "unfinished"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-stopme", sweep_dir_of(storage))
    assert [t.config["epochs"] for t in ledger_trials(sweep_dir_of(storage))] == [4, 4, 4]


def test_the_ledger_keeps_each_epoch_once_as_first_reported(tmp_path):
    # A trial retried from the checkpoint before its last epoch, or run again from its start,
    # reports epochs a second time (other timings); the ledger keeps the first, as MLflow did.
    from bnsweep import ledger
    from bnsweep.tracking import _metric_batch

    sweep = str(tmp_path / "sweep")
    ledger.start_trial(sweep, "t1", "abc_00000", "grid", {"bn": True})
    for epoch, seconds in ((1, 1.0), (2, 1.1), (2, 1.5), (3, 1.2), (1, 9.0)):
        ledger.record_epoch(sweep, "t1", {"epoch": epoch, "val_acc": 0.1 * epoch, "epoch_time_s": seconds})
    ledger.end_trial(sweep, "t1", "errored", "worker died")
    (t,) = ledger.read_trials(sweep)
    assert [(r["epoch"], r["epoch_time_s"]) for r in t.epochs] == [(1, 1.0), (2, 1.1), (3, 1.2)]
    assert t.status == "errored" and t.end["reason"] == "worker died"
    first_start = t.started
    ledger.start_trial(sweep, "t1", "abc_00000", "grid", {"bn": True})  # resumed: running again
    (t,) = ledger.read_trials(sweep)
    assert t.end is None and t.started == first_start
    ledger.end_trial(sweep, "t1", "completed")
    # The driver's view comes second (sweep.LedgerEnds): it neither withdraws nor replaces that end.
    ledger.start_trial(sweep, "t1", "abc_00000", "grid", {"bn": True}, attempt=False)
    ledger.end_trial(sweep, "t1", "stopped", if_open=True)
    assert ledger.read_trials(sweep)[0].status == "completed"
    logged = [(m.key, m.step, m.value) for m in _metric_batch(t.epochs, after_step=1) if m.key == "epoch_time_s"]
    assert logged == [("epoch_time_s", 2, 1.1), ("epoch_time_s", 3, 1.2)]
    assert sorted(p.name for p in (tmp_path / "sweep" / "ledger" / "t1").iterdir()) == [
        "end.json", "epoch-0001.json", "epoch-0002.json", "epoch-0003.json", "trial.json"]  # no temporary left


def test_no_module_reads_ray_tunes_own_files():
    # Tune's saved state (experiment_state-*.json, tuner.pkl, result.json, params.json) and its
    # private modules change with Ray's minor releases; bnsweep reads only its ledger and Tune's
    # public API (Tuner, Tuner.restore / can_restore, tune.report / get_checkpoint, Callback).
    import ast
    from pathlib import Path

    import bnsweep

    private_files = ("experiment_state", "tuner.pkl", "result.json", "params.json", "progress.csv",
                     "TuneFunctionDecoder", "cloudpickle")
    found = []
    for path in sorted(Path(bnsweep.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                found += [f"{path.name}: import {n}" for n in names if n.startswith("ray") and
                          ("._" in n or n.startswith(("ray.tune.utils", "ray.tune.execution", "ray.train._")))]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{path.name}: {node.value[:60]!r}" for name in private_files if name in node.value]
    assert not found, found


def test_arm_means_one_thing_a_tuned_dropout_is_a_setting():
    # An Optuna search over dropout within the BN arm is still the BN arm; only a grid that
    # varies dropout as an arm of its own (the dropout study) has a no_bn+dropout arm.
    from bnsweep.config import make_config
    from bnsweep.trials import trial_tags

    with_dropout = make_config({"bn": True, "dropout": 0.3})
    assert trial_tags(with_dropout, "bn")["arm"] == "bn"
    assert trial_tags(make_config({"bn": False, "dropout": 0.3}), "no_bn")["arm"] == "no_bn"
    assert trial_tags(make_config({"bn": False, "dropout": 0.5}), "grid")["arm"] == "no_bn+dropout"
    assert trial_tags(make_config({"bn": True}), "grid")["arm"] == "bn"


def test_the_recorded_versions_are_the_modules_own_without_importing_torch():
    # The driver records the stack's versions on every sweep; it trains nothing, so asking must
    # not import torch (~2 CPU-s a process), yet torch's build ("+cu130", "+cpu") is kept.
    code = ("import sys, json\nfrom bnsweep.tracking import code_version\nv = code_version()\n"
            "assert 'torch' not in sys.modules and 'optuna' not in sys.modules, 'imported'\n"
            "import torch, ray, mlflow, optuna\n"
            "print(json.dumps([v, [torch.__version__, ray.__version__, mlflow.__version__, optuna.__version__]]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    recorded, imported = json.loads(r.stdout)
    assert [recorded[f"{m}_version"] for m in ("torch", "ray", "mlflow", "optuna")] == imported, recorded


@pytest.mark.slow  # a fresh interpreter importing torch and Ray: about 5 s
def test_a_trial_process_never_imports_mlflow():
    # Only the driver writes to MLflow. A trial's process imports the trainable's module (Ray
    # pickles sweep.run_trial by reference) and what the trial imports as it starts (train);
    # none of it may pull in mlflow (seconds of import and its threads in every worker).
    code = ("import sys, bnsweep.sweep, bnsweep.train\n"
            "assert bnsweep.sweep.run_trial.__module__ == 'bnsweep.trainable'\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout
