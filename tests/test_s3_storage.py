"""A sweep on S3 storage, the kind every node of a cluster reaches: a real
S3-protocol server (moto's server mode, on loopback) behind `--storage
s3://BUCKET/PREFIX?endpoint_override=HOST:PORT&scheme=http`, pyarrow's URI
options. The sweep is interrupted, resumed and synced, all from what is on S3.

Each bnsweep command starts a Ray of its own (no RAY_ADDRESS), whose workers get
the driver's AWS_* credentials as a cluster's nodes get theirs (cluster.yaml: an
instance profile). So the resume runs in a fresh Ray session with no local copy
of the interrupted run's files: whatever it restores, it reads from S3.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RAY_TEMP, bnsweep_env, run_bnsweep, write_space
from helpers import AWS, BUCKET, TINY, S3Server, children, start_driver, steps
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

PREFIX = "results"
EPOCHS = 4

def _results_on_s3(s3: S3Server) -> dict[str, list[dict]]:
    """Trial folder key -> the rows of its result.json, for every trial on S3 so far."""
    out = {}
    for key, size in s3.files(f"{BUCKET}/{PREFIX}").items():
        if key.endswith("/result.json") and "/orphaned/" not in key:
            out[key.rsplit("/", 1)[0]] = [json.loads(x) for x in s3.read(key).splitlines() if x.strip()] if size else []
    return out


def _first_reported(rows: list[dict]) -> dict[int, dict]:
    by_epoch: dict[int, dict] = {}
    for r in rows:
        by_epoch.setdefault(r["epoch"], r)
    return by_epoch


def test_sweep_on_s3_is_interrupted_resumed_and_synced(s3, mlflow_server, tmp_path, monkeypatch):
    space = write_space(tmp_path / "ons3.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": {EPOCHS}}}
        MAX_CONCURRENT = 1
    """)
    # One trial at a time: at the interrupt the second has not started, so the resume both
    # continues a trial from its checkpoint on S3 and runs one from the start.
    scratch = tmp_path / "scratch"  # the commands' temporary folder: what they write there must go
    scratch.mkdir()
    env = bnsweep_env(MLFLOW_TRACKING_URI=mlflow_server.uri, RAY_TMPDIR=str(Path(RAY_TEMP).parent),
                      TMPDIR=str(scratch), **AWS)
    driver = start_driver(space, s3.uri(f"{BUCKET}/{PREFIX}"), env, tmp_path)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 300
        while not any(_results_on_s3(s3).values()):
            assert driver.poll() is None, driver.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "timed out waiting for the first result on S3"
            time.sleep(0.5)
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out[-4000:]
    (sweep_uri,) = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("results: ")]
    assert sweep_uri.startswith(f"s3://{BUCKET}/{PREFIX}/ons3-") and sweep_uri.endswith(
        f"?endpoint_override={s3.endpoint}&scheme=http"), sweep_uri
    sweep_key = sweep_uri.split("?")[0][len("s3://"):]
    resume_cmd = shlex.split(out.split("Continue with:\n", 1)[1].splitlines()[0])
    assert resume_cmd == ["bnsweep", "resume", sweep_uri], out[-2000:]
    (run_log,) = [line.split(": ", 1)[1].split("  (")[0] for line in out.splitlines()
                  if line.startswith("Ray's and Tune's own output: ")]
    interrupted = _results_on_s3(s3)
    assert 1 <= len(interrupted) <= 2 and sum(len(rows) for rows in interrupted.values()) < 2 * EPOCHS

    # (a) The resume, with the command the run printed, in a Ray that never saw the run: it finishes the sweep.
    r = run_bnsweep(*resume_cmd[1:], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "\ninterrupted:" not in r.stdout and f"results on storage: {sweep_uri}" in r.stdout, r.stdout[-3000:]
    results = _results_on_s3(s3)
    assert len(results) == 2, sorted(results)
    for trial, rows in results.items():
        assert sorted(_first_reported(rows)) == list(range(1, EPOCHS + 1)), (trial, [x["epoch"] for x in rows])
        assert rows[-1]["epoch"] == EPOCHS
    for trial, rows in interrupted.items():  # the interrupted trial went on from its checkpoint
        assert [x["epoch"] for x in results[trial][:len(rows)]] == [x["epoch"] for x in rows]
        assert [x["epoch"] for x in results[trial]].count(1) == 1, results[trial]

    # `sync` reads the sweep from S3: MLflow had it all live, and a second sync adds nothing.
    for _ in range(2):
        sync = run_bnsweep("sync", sweep_uri, env=env, cwd=tmp_path)
        assert sync.returncode == 0, sync.stdout[-3000:] + sync.stderr[-3000:]
        assert f"synced {sweep_uri} into {mlflow_server.uri}" in sync.stdout, sync.stdout[-2000:]
    assert "0 epoch(s) added" in sync.stdout and "had no record" not in sync.stdout, sync.stdout[-2000:]

    # (b) bnsweep's ledger on S3 holds each trial's every epoch once, and each trial's end;
    # MLflow: each trial once, each epoch once, the values those of the ledger.
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    from bnsweep.ledger import read_trials

    trials = read_trials(sweep_uri)
    assert len(trials) == 2 and all(t.status == "completed" for t in trials), [t.end for t in trials]
    for t in trials:
        assert [r["epoch"] for r in t.epochs] == list(range(1, EPOCHS + 1)), t.name
    uri = mlflow_server.uri
    runs = children(uri, "bnsweep-ons3")
    assert len(runs) == 2 and len({x.data.tags["ray_trial_id"] for x in runs}) == 2
    assert sorted(x.data.params["bn"] for x in runs) == ["False", "True"]
    by_trial_id = {t.trial_id: {r["epoch"]: r for r in t.epochs} for t in trials}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert steps(uri, run.info.run_id) == list(range(1, EPOCHS + 1))
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "val_acc")
        on_s3 = by_trial_id[run.data.tags["ray_trial_id"]]
        assert sorted((m.step, m.value) for m in history) == [(e, float(on_s3[e]["val_acc"])) for e in sorted(on_s3)]
    parent = MlflowClient(uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep_dir"] == sweep_uri
    assert parent.info.run_name == sweep_key.rsplit("/", 1)[1]

    # (c) The objects on S3: sweep.json, the ledger (one object per fact), Tune's state, each
    # trial's params, results and checkpoints.
    files = s3.files(f"{BUCKET}/{PREFIX}")
    assert all(key.startswith(f"{sweep_key}/") for key in files), sorted(files)  # the probe left nothing
    assert not [key for key in files if "?" in key or "endpoint_override" in key], sorted(files)
    record = json.loads(s3.read(f"{sweep_key}/sweep.json"))
    assert record["tracking"]["parent_run_id"] == parent.info.run_id and record["study_text"] == space.read_text()
    for t in trials:
        assert {k.rsplit("/", 1)[1] for k in files if k.startswith(f"{sweep_key}/ledger/{t.name}/")} == {
            "trial.json", "end.json", *(f"epoch-{e:04d}.json" for e in range(1, EPOCHS + 1))}
    experiment = f"{sweep_key}/grid-{sweep_key.rsplit('/', 1)[1]}"
    assert f"{experiment}/tuner.pkl" in files
    assert [k for k in files if k.startswith(f"{experiment}/experiment_state-") and k.endswith(".json")]
    for trial in results:
        assert trial.startswith(f"{experiment}/"), trial
        assert files[f"{trial}/params.json"] > 0
        assert [k for k in files if k.startswith(f"{trial}/checkpoint_") and k.endswith("/checkpoint.pt")], trial

    # (d) The driver's log of each of run and resume, uploaded to the sweep folder.
    logs = {k: size for k, size in files.items() if k.startswith(f"{sweep_key}/logs/driver-") and k.endswith(".log")}
    assert len(logs) == 2 and all(logs.values()), logs
    from pyarrow import fs as pafs

    assert pafs.FileSystem.from_uri(run_log)[1] in logs, (run_log, sorted(logs))
    # (e) Run, resume and sync left nothing in the temporary folder (the log was written there first)
    # but torch's own compile cache, which torch keeps there on purpose.
    left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    assert not left, left


def test_the_lock_on_s3_lets_one_racing_process_in_and_a_silent_holder_goes_stale(s3, monkeypatch, capsys):
    from bnsweep.lock import LOCK_FILE, STALE_S, LockedError, SweepLock
    from bnsweep.storage import join, read_text, write_text

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    sweep_dir = s3.uri(f"{BUCKET}/locks/sweep-1")
    race = ("import sys, time\nfrom bnsweep.lock import LockedError, SweepLock\n"
            "time.sleep(float(sys.argv[2]) - time.time())\n"
            "try:\n    with SweepLock(sys.argv[1], 'bnsweep sync'):\n        print('won', flush=True); time.sleep(4)\n"
            "except LockedError:\n    print('refused', flush=True)\n")
    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", race, sweep_dir, start], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **AWS}) for _ in range(3)]
    assert sorted(p.communicate(timeout=60)[0].strip() for p in procs) == ["refused", "refused", "won"]
    assert not s3.files(f"{BUCKET}/locks/sweep-1")  # released: the winner deleted its lock object
    # A holder on another machine: refused while it beats, taken over once it has been silent too long.
    lock = join(sweep_dir, LOCK_FILE)
    other = {"host": "node-7", "pid": 1234, "started": time.time(), "command": "bnsweep run", "token": "abc"}
    write_text(lock, json.dumps({**other, "beat": time.time()}))
    with pytest.raises(LockedError, match="being written by `bnsweep run` \\(pid 1234 on node-7"):
        SweepLock(sweep_dir, "bnsweep resume").acquire()
    write_text(lock, json.dumps({**other, "beat": time.time() - STALE_S - 1}))
    with SweepLock(sweep_dir, "bnsweep resume"):
        assert "took over the lock" in capsys.readouterr().out
        assert json.loads(read_text(lock))["pid"] == os.getpid()
