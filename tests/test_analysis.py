"""Analysis on real MLflow data: tiny sweeps trained here, read back by
bnsweep.results and the analysis/ scripts.

The sweeps are real training runs (bnsweep.train on the synthetic data, a small
model, 3 epochs) recorded in bnsweep's MLflow layout. `record_sweep` stands in
for `bnsweep run` so the tests need no Ray; replacing its body with a
`bnsweep run` of a smoke search space is the only change needed to test on
sweeps made by the real driver.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import runpy
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = ROOT / "analysis"

# Small enough for seconds per trial on a CPU, large enough that BN learns the
# synthetic data in 3 epochs (30 steps). bn_momentum 0.5 (Keras convention) lets
# BN's running statistics catch up within those steps (DESIGN.md §2 "small runs").
TINY = {"model": "simple", "dataset": "synthetic", "width": 0.125, "epochs": 3, "batch_size": 50,
        "augment": False, "bn_momentum": 0.5, "lr": 0.05, "device": "cpu", "eval_batch_size": 200}
DIVERGING_LR = 1e6  # no-BN loss becomes NaN in the first epoch (the simple net survives 1e3 with dead ReLUs)

# study -> (search, [(config overrides, fail_after_epoch or None)])
SWEEPS = {
    "lr": ("grid", [({"lr": lr, "bn": bn, "seed": seed}, None)
                    for lr in (0.01, 0.05, DIVERGING_LR) for seed in (0, 1) for bn in (True, False)]
           + [({"lr": 0.05, "bn": True, "seed": 2}, 1)]),  # errors after epoch 1: FAILED, kept, marked
    "batch_size": ("grid", [({"batch_size": b, "bn": bn}, None) for b in (25, 100) for bn in (True, False)]),
    "dropout": ("grid", [({"bn": False}, None), ({"bn": False, "dropout": 0.5}, None), ({"bn": True}, None)]),
    "optuna": ("optuna", [({"bn": bn, "lr": 10 ** r.uniform(-2, -0.7), "batch_size": r.choice([25, 50, 100]),
                            "dropout": round(r.uniform(0, 0.5), 3)}, None)
                          for bn in (True, False) for r in [random.Random(int(bn))] for _ in range(2)]),
}


class _TrialError(RuntimeError):
    pass


def _pair_id(cfg: dict) -> str:
    rest = {k: v for k, v in sorted(cfg.items()) if k not in ("bn", "data_dir", "device")}
    return hashlib.sha1(json.dumps(rest, default=str).encode()).hexdigest()[:10]


def record_sweep(uri: str, study: str) -> str:
    """Train the study's tiny grid and record it as bnsweep does; return the experiment name."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from bnsweep.config import REFERENCE, make_config
    from bnsweep.train import EPOCH_METRICS, train

    search, points = SWEEPS[study]
    client = MlflowClient(uri)
    experiment = f"bnsweep-{study}"
    exp_id = client.create_experiment(experiment)
    sweep_name = f"{study}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = client.create_run(exp_id, run_name=sweep_name, tags={
        "bnsweep.role": "sweep", "study": study, "search": search, "sweep_dir": f"/tmp/{sweep_name}"}).info.run_id
    client.log_text(parent, f"SEARCH = {search!r}\n", f"search_space/{study}.py")
    for i, (overrides, fail_after) in enumerate(points):
        cfg = make_config({**TINY, **overrides})
        arm = ("bn" if cfg["bn"] else "no_bn") + ("+dropout" if cfg["dropout"] else "")
        name = f"{arm}_lr={cfg['lr']:g}_bs={cfg['batch_size']}_seed={cfg['seed']}".replace("+", "_")
        run_id = client.create_run(exp_id, run_name=name, tags={
            "mlflow.parentRunId": parent, "bnsweep.role": "trial", "study": study, "arm": arm,
            "pair_id": _pair_id(cfg), "seed": str(cfg["seed"]), "ray_trial_id": f"t{i:05d}",
            "git_commit": "test", "git_dirty": "false", "device_name": "cpu"}).info.run_id
        client.log_batch(run_id, params=[Param(k, str(cfg[k])) for k in REFERENCE])
        info: dict = {}

        def report(m: dict, state: dict) -> None:
            ts = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(m[k]), ts, int(m["epoch"]))
                                              for k in EPOCH_METRICS if k != "epoch"],
                             tags=[RunTag("diverged", str(bool(m["diverged"])).lower())])
            if fail_after and m["epoch"] >= fail_after:
                raise _TrialError("simulated trial error")

        try:
            out = train(cfg, report, on_start=info.update)
            status, finals = "FINISHED", [Metric("epochs_completed", out["epochs_completed"], 0, 0)]
        except _TrialError:
            status, finals = "FAILED", []
        client.log_batch(run_id, metrics=finals, tags=[
            RunTag(k, str(info[k]).lower() if isinstance(info[k], bool) else str(info[k]))
            for k in ("dataset_source", "dataset_fingerprint", "dataset_verified")])
        client.set_terminated(run_id, status=status)
    client.set_terminated(parent, status="FINISHED")
    return experiment


_STORE: dict = {}


def sweep(tmp_path_factory, study: str) -> tuple[str, str]:
    """(tracking_uri, experiment) of the study's tiny sweep, made once per test session."""
    if "uri" not in _STORE:
        _STORE["uri"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    if study not in _STORE:
        import torch

        torch.set_num_threads(1)  # the machine is shared; one thread is nearly as fast at this size
        _STORE[study] = record_sweep(_STORE["uri"], study)
    return _STORE["uri"], _STORE[study]


@pytest.fixture(scope="session")
def lr_sweep(tmp_path_factory):
    return sweep(tmp_path_factory, "lr")
