"""Results tables built by hand, for the rules behind the report's header, verdicts and
tables (tests/test_report_rules.py, test_stats.py, test_study_asks.py): bnsweep.analysis.results's
shapes without a sweep."""

from __future__ import annotations

import json

import pandas as pd

from bnsweep.config import REFERENCE


def trial(run_id: str, bn: bool, seed: int = 0, **values) -> dict:
    """One trial's row as bnsweep.analysis.results loads it: the reference config, then `values`."""
    row = {**REFERENCE, "run_id": run_id, "run_name": run_id, "bn": bn, "seed": seed, "arm": "bn" if bn else "no_bn",
           "bn_arm": "bn" if bn else "no_bn", "outcome": "completed", "status": "FINISHED",
           "diverged": False, "best_val_acc": 0.5, "val_acc": 0.5, "train_acc": 0.6, "time_total_s": 100.0,
           "epochs_completed": 30, "device_name": "cpu", "dataset_source": "official", "dataset_verified": True,
           "git_commit": "abc"}
    row.update(values)
    if row["dropout"] and "arm" not in values:
        row["arm"] += "+dropout"
    if "pair_id" not in values:  # BN and no BN at the same settings and seed pair up, as tracking.py tags them
        row["pair_id"] = f"{row['seed']}-{row['lr']}-{row['batch_size']}-{row['dropout']}-{row['width']}"
    return row


def history(trials: pd.DataFrame, step_ms: dict[str, float] | None = None) -> pd.DataFrame:
    """Two epochs per trial: val_acc reaches its best at epoch 2 (BN at epoch 1), 10 ms per step."""
    rows = []
    for r in trials.itertuples():
        for epoch in (1, 2):
            acc = r.best_val_acc if (epoch == 2 or r.bn) else r.best_val_acc / 2
            rows.append({"run_id": r.run_id, "epoch": epoch, "val_acc": acc, "train_acc": r.train_acc,
                         "time_total_s": 50.0 * epoch, "step_time_ms": (step_ms or {}).get(r.run_id, 10.0)})
    return pd.DataFrame(rows)


def results(rows: list[dict], tmp_path, smoke: bool | None = False, study: str = "lr", asks: dict | None = None):
    from bnsweep.analysis.results import Results

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir(exist_ok=True)
    if smoke is not None:
        (sweep_dir / "sweep.json").write_text(json.dumps({"smoke": smoke}))
    trials = pd.DataFrame(rows)
    parents = pd.DataFrame([{"run_id": "parent", "run_name": "lr-sweep", "sweep_dir": str(sweep_dir)}])
    return Results("bnsweep-test", "sqlite:///test.db", study, "grid", parents, trials, history(trials),
                   asks=asks or {})
