"""An Optuna study confirms each arm's best configuration on fresh seeds (issue 18): the
confirmation runs as part of the sweep, is recorded once per trial (also across a driver
killed after the search and `resume`), and the report compares the arms on it. The
searches are kept as Optuna studies in the sweep folder (optuna.db), and the report says
which tuned setting mattered in each arm."""

from __future__ import annotations

import math
import signal
import tempfile
import textwrap
import time

import optuna
import pandas as pd
import pytest
from conftest import bnsweep_env, ledger_trials, run_bnsweep, sweep_dir_of, write_space

from bnsweep import ledger
from bnsweep.analysis.claims import claim_accuracy_speed
from bnsweep.analysis.results import Results
from bnsweep.config import REFERENCE
from bnsweep.optuna_study import best_trial, rebuild_optuna_study, storage_url
from bnsweep.space import SpaceError, load_study

SEARCH_FILE = textwrap.dedent("""
    SEARCH = "optuna"
    ARMS = {"bn": [True, False]}
    SPACE = {"lr": ("loguniform", 1e-3, 1e-1), "batch_size": ("choice", [25, 50]), "dropout": ("uniform", 0.0, 0.4)}
    FIXED = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "augment": False, "epochs": 2}
    NUM_SAMPLES = 2
""")


# ------------------------------------------------------------- the file ---

def test_confirm_seeds_default_smoke_flag_and_mistakes(tmp_path):
    path = write_space(tmp_path / "tuned.py", SEARCH_FILE)
    assert load_study(path).confirm_seeds == 3  # the default: the fewest runs a verdict rests on
    assert load_study(path).n_trials() == (2 + 3) * 2
    path.write_text(path.read_text() + "CONFIRM_SEEDS = 4\nSMOKE_CONFIRM_SEEDS = 2\n")
    assert load_study(path).confirm_seeds == 4 and load_study(path, smoke=True).confirm_seeds == 2
    assert load_study(path, smoke=True, confirm_seeds=0).n_trials() == 2 * 2  # --confirm-seeds 0: none
    for body, says in (("CONFIRM_SEEDS = -1", "CONFIRM_SEEDS must be an integer >= 0"),
                       ("CONFIRM_SEEDS = 1.5", "CONFIRM_SEEDS must be an integer >= 0")):
        write_space(tmp_path / "bad.py", SEARCH_FILE + body + "\n")
        with pytest.raises(SpaceError, match=says):
            load_study(tmp_path / "bad.py")
    grid = write_space(tmp_path / "grid.py", "SPACE = {'lr': [0.1, 0.01]}\nCONFIRM_SEEDS = 2\n")
    with pytest.raises(SpaceError, match="CONFIRM_SEEDS is for Optuna searches"):
        load_study(grid)


def test_fresh_seeds_are_seeds_the_search_did_not_use(tmp_path):
    from bnsweep.sweep import confirm_seeds

    path = write_space(tmp_path / "tuned.py", SEARCH_FILE + "SEEDS = [1]\n")
    assert confirm_seeds(load_study(path)) == [0, 2, 3]
    assert confirm_seeds(load_study(path, seeds=[0], confirm_seeds=2)) == [1, 2]


# ------------------------------------------- the winner, and optuna.db ---

def _record(sweep_dir: str, name: str, tuner: str, cfg: dict, accs: list[float], status: str | None) -> None:
    ledger.start_trial(sweep_dir, name, name, tuner, cfg)
    best = -math.inf
    for epoch, acc in enumerate(accs, 1):
        best = max(best, acc)
        ledger.record_epoch(sweep_dir, name, {"epoch": epoch, "val_acc": acc, "best_val_acc": best})
    if status:
        ledger.end_trial(sweep_dir, name, status)


def test_the_winner_went_furthest_and_optuna_db_holds_every_trial(tmp_path):
    study = load_study(write_space(tmp_path / "tuned.py", SEARCH_FILE))
    d = str(tmp_path / "sweep")
    cfg = {**study.fixed, "seed": 0}
    # ASHA stopped "early" after one epoch at a score no full-length trial reached: not the winner.
    _record(d, "early", "bn", {**cfg, "bn": True, "lr": 0.05, "batch_size": 25, "dropout": 0.1}, [0.9], "stopped")
    _record(d, "full", "bn", {**cfg, "bn": True, "lr": 0.01, "batch_size": 50, "dropout": 0.2}, [0.3, 0.5], "stopped")
    _record(d, "lower", "bn", {**cfg, "bn": True, "lr": 0.002, "batch_size": 25, "dropout": 0.3}, [0.2, 0.4],
            "completed")
    _record(d, "broken", "no_bn", {**cfg, "bn": False, "lr": 0.09, "batch_size": 50, "dropout": 0.0}, [], "failed")
    _record(d, "open", "no_bn", {**cfg, "bn": False, "lr": 0.003, "batch_size": 25, "dropout": 0.05}, [0.2], None)
    _record(d, "again", "confirm_bn", {**cfg, "bn": True, "lr": 0.01, "batch_size": 50, "dropout": 0.2, "seed": 1},
            [0.3, 0.45], "completed")
    trials = ledger.read_trials(d)
    assert best_trial(trials, "bn", "val_acc").name == "full"
    assert best_trial(trials, "no_bn", "val_acc") is None  # nothing finished with a value

    rebuild_optuna_study(d, study)
    rebuild_optuna_study(d, study)  # again, as resume and sync do: rebuilt, not appended to
    assert sorted(optuna.get_all_study_names(storage_url(d))) == ["bn", "no_bn"]  # no confirmation study
    bn = optuna.load_study(study_name="bn", storage=storage_url(d))
    assert bn.direction == optuna.study.StudyDirection.MAXIMIZE
    by_name = {t.user_attrs["trial"]: t for t in bn.trials}
    assert sorted(by_name) == ["early", "full", "lower"]
    for t in trials:
        if t.tuner == "bn":
            got = by_name[t.name]
            assert got.params == {k: t.config[k] for k in study.space}
            assert got.value == t.epochs[-1]["val_acc"] and got.state == optuna.trial.TrialState.COMPLETE
            assert got.intermediate_values == {r["epoch"]: r["val_acc"] for r in t.epochs}
    no_bn = {t.user_attrs["trial"]: t for t in optuna.load_study(study_name="no_bn", storage=storage_url(d)).trials}
    assert no_bn["broken"].state == optuna.trial.TrialState.FAIL and no_bn["broken"].value is None
    assert no_bn["open"].state == optuna.trial.TrialState.RUNNING


# --------------------------------------------------- the report's side ---

def _row(run_id: str, bn: bool, seed: int, acc: float, confirm: bool, **cfg) -> dict:
    return {**REFERENCE, **cfg, "run_id": run_id, "run_name": run_id, "bn": bn, "bn_arm": "bn" if bn else "no_bn",
            "arm": "bn" if bn else "no_bn", "seed": seed, "best_val_acc": acc, "val_acc": acc, "outcome": "completed",
            "diverged": False, "confirm": confirm, "pair_id": run_id, "epochs": 3, "n_train": 20000}


def test_claim_1_compares_the_confirmation_runs_and_shows_the_search_best_beside_them():
    # Each search's best is a lucky draw (0.95 / 0.60); run again, its configuration scores about 0.80 / 0.58.
    rows = [_row("s1", True, 0, 0.95, False, lr=0.1), _row("s2", True, 0, 0.40, False, lr=0.01),
            _row("s3", False, 0, 0.60, False, lr=0.01), _row("s4", False, 0, 0.20, False, lr=0.1)]
    rows += [_row(f"c{s}", True, s, a, True, lr=0.1) for s, a in ((1, 0.80), (2, 0.81), (3, 0.79))]
    rows += [_row(f"d{s}", False, s, a, True, lr=0.01) for s, a in ((1, 0.58), (2, 0.57), (3, 0.59))]
    trials = pd.DataFrame(rows)
    history = pd.DataFrame([{"run_id": r["run_id"], "epoch": e, "val_acc": r["best_val_acc"] * e / 3,
                             "time_total_s": float(e)} for r in rows for e in (1, 2, 3)])
    c = claim_accuracy_speed(trials, history)
    assert c.numbers["bn_best_val_acc"] == pytest.approx(0.80)
    assert c.numbers["no_bn_best_val_acc"] == pytest.approx(0.58)
    assert c.numbers["bn_search_best_val_acc"] == 0.95 and c.numbers["no_bn_search_best_val_acc"] == 0.60
    assert c.tests[0].n == 3 and "rerun on fresh seeds" in c.evidence and "biased upwards" in c.evidence
    # Without the confirmation, the same claim rests on the searches' single-seed bests (n = 1).
    assert claim_accuracy_speed(trials[~trials["confirm"]], history).tests[0].n == 1


def test_the_importance_table_lists_each_tuned_key_per_arm(tmp_path):
    from bnsweep.analysis.optuna import importance_items

    rows = [_row(f"t{i}", bn, 0, acc, False, lr=lr, batch_size=bs, dropout=dr)
            for i, (bn, lr, bs, dr, acc) in enumerate([
                (True, 0.001, 25, 0.1, 0.3), (True, 0.01, 50, 0.2, 0.6), (True, 0.1, 25, 0.3, 0.8),
                (True, 0.05, 50, 0.0, 0.7), (False, 0.001, 25, 0.1, 0.2), (False, 0.01, 50, 0.3, 0.5),
                (False, 0.1, 25, 0.2, 0.1), (False, 0.03, 50, 0.4, 0.4)])]
    trials = pd.DataFrame(rows).assign(dataset_verified=True, dataset_source="official", study="x", sweep="x")
    table = trials.drop(columns="arm").rename(columns={"bn_arm": "arm"})  # as search_table names the BN arm
    results = Results(experiment="x", tracking_uri="", study="x", search="optuna",
                      parents=pd.DataFrame({"run_name": ["x"], "sweep_dir": [None]}), trials=trials,
                      history=pd.DataFrame())
    tuned = ["lr", "batch_size", "dropout"]
    items = importance_items(results, table, tuned, ["no_bn", "bn"], tmp_path)
    assert [item.name for item in items] == ["optuna_importance", "optuna_importance_plot"]
    got = pd.read_csv(tmp_path / "optuna_importance.csv")
    for arm in ("bn", "no_bn"):
        mine = got[got["arm"] == arm]
        assert sorted(mine["key"]) == sorted(tuned)
        assert mine["importance"].sum() == pytest.approx(1.0)


# ------------------------------------------ a real sweep, killed and resumed ---

def test_confirmation_runs_once_each_across_a_kill_and_resume(ray_address, mlflow_server, tmp_path):
    from helpers import assert_mlflow_equals_ledger, start_driver, wait_for

    from bnsweep.analysis import optuna as optuna_report
    from bnsweep.analysis.claims import evaluate_claims
    from bnsweep.analysis.results import load_experiment

    # 5 epochs of 500 images a trial (the other tests' file trains 2 of 200): with one thread
    # per trial a tiny trial ends in about a second, and the whole sweep could finish between
    # the first confirmation epoch and the kill (CI, 2026-12-07).
    longer = SEARCH_FILE.replace('"n_train": 200', '"n_train": 500').replace('"epochs": 2', '"epochs": 5')
    space = write_space(tmp_path / "confirmed.py", longer + "CONFIRM_SEEDS = 2\nMAX_CONCURRENT = 1\n")
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    driver = start_driver(space, storage, env, tmp_path)

    def confirming() -> list:
        if not storage.exists() or not any(storage.iterdir()):
            return []
        return [t for t in ledger_trials(sweep_dir_of(storage)) if t.tuner == "confirm_bn" and t.epochs]

    try:
        wait_for(confirming, 420, "the BN arm's confirmation to report an epoch")
        time.sleep(3.0)  # Tune saves its state every 2 s (sweep.py): the kill lands after a save
        driver.send_signal(signal.SIGTERM)  # as Ctrl-C: Tune saves its state and stops
        out, _ = driver.communicate(timeout=300)
    finally:
        driver.kill()
    sweep_dir = sweep_dir_of(storage)
    assert driver.returncode == 130, out[-3000:]
    before = {t.name: (t.started, [r["timestamp"] for r in t.epochs]) for t in ledger_trials(sweep_dir)
              if t.tuner == "bn"}
    assert len(before) == 2 and all(t.status for t in ledger_trials(sweep_dir) if t.tuner == "bn")
    # Killed after the BN search and before its confirmation finished (the no-BN search not begun).
    assert sum(t.status == "completed" for t in ledger_trials(sweep_dir) if t.tuner == "confirm_bn") < 2

    r = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = ledger_trials(sweep_dir)
    by_tuner = {label: [t for t in trials if t.tuner == label]
                for label in ("bn", "no_bn", "confirm_bn", "confirm_no_bn")}
    assert {k: len(v) for k, v in by_tuner.items()} == {"bn": 2, "no_bn": 2, "confirm_bn": 2, "confirm_no_bn": 2}
    assert len(trials) == 8
    # The search was not run again; its trials are as they were before the kill.
    assert {t.name: (t.started, [r["timestamp"] for r in t.epochs]) for t in by_tuner["bn"]} == before
    for arm in ("bn", "no_bn"):
        confirmed = by_tuner[f"confirm_{arm}"]
        assert sorted(t.config["seed"] for t in confirmed) == [1, 2]  # fresh: the search trained on seed 0
        assert all(t.status == "completed" and len(t.epochs) == 5 for t in confirmed)
        winner = best_trial(trials, arm, "val_acc")
        for t in confirmed:  # the winner's configuration, the seed aside
            assert {k: v for k, v in t.config.items() if k != "seed"} == \
                   {k: v for k, v in winner.config.items() if k != "seed"}
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-confirmed", sweep_dir)  # one run per trial

    # optuna.db: every search trial's parameters and value, after run and resume.
    for arm in ("bn", "no_bn"):
        search = optuna.load_study(study_name=arm, storage=storage_url(str(sweep_dir)))
        got = {t.user_attrs["ray_trial_id"]: t for t in search.trials}
        assert sorted(got) == sorted(t.trial_id for t in by_tuner[arm])
        for t in by_tuner[arm]:
            assert got[t.trial_id].params == {k: t.config[k] for k in ("lr", "batch_size", "dropout")}
            assert got[t.trial_id].value == pytest.approx(t.epochs[-1]["val_acc"])

    # The report compares the arms on the confirmation runs.
    results = load_experiment("bnsweep-confirmed", mlflow_server.uri)
    assert int(results.trials["confirm"].sum()) == 4
    assert set(results.trials.loc[results.trials["confirm"], "arm"]) == {"bn", "no_bn"}
    out_dir = tmp_path / "report"
    optuna_report.main(["--experiment", "bnsweep-confirmed", "--out", str(out_dir)], results=results)
    confirmation = pd.read_csv(out_dir / "optuna_confirmation.csv").set_index("arm")
    assert confirmation.loc["bn", "n"] == 2 and confirmation.loc["no_bn", "n"] == 2
    for arm in ("bn", "no_bn"):
        runs = [t.epochs[-1]["best_val_acc"] for t in by_tuner[f"confirm_{arm}"]]
        assert confirmation.loc[arm, "confirm_mean"] == pytest.approx(sum(runs) / 2)
    importance = pd.read_csv(out_dir / "optuna_importance.csv")
    assert sorted(set(importance["key"])) == ["batch_size", "dropout", "lr"]
    claim = evaluate_claims(results.trials, results.history)[0]
    assert "rerun on fresh seeds" in claim.evidence
    assert claim.numbers["bn_best_val_acc"] == pytest.approx(confirmation.loc["bn", "confirm_mean"])


@pytest.mark.slow  # starts moto's S3 server
def test_an_object_store_sweep_gets_optuna_db_uploaded_whole(tmp_path, monkeypatch, s3):  # noqa: F811
    from helpers import AWS, BUCKET

    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    scratch = tmp_path / "scratch"  # where the file is built before its upload
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    study = load_study(write_space(tmp_path / "tuned.py", SEARCH_FILE))
    d = s3.uri(f"{BUCKET}/optuna-db/sweep")
    cfg = {**study.fixed, "seed": 0, "bn": True, "lr": 0.01, "batch_size": 50, "dropout": 0.2}
    _record(d, "one", "bn", cfg, [0.3, 0.5], "completed")
    rebuild_optuna_study(d, study)
    local = tmp_path / "optuna.db"
    with s3.filesystem().open_input_stream(f"{BUCKET}/optuna-db/sweep/optuna.db") as f:
        local.write_bytes(f.read())
    (trial,) = optuna.load_study(study_name="bn", storage=f"sqlite:///{local}").trials
    assert trial.params == {"lr": 0.01, "batch_size": 50, "dropout": 0.2} and trial.value == 0.5
    assert not list(scratch.iterdir())
    with pytest.raises(OSError):  # a bucket that is not there: the upload fails, and leaves nothing behind
        rebuild_optuna_study(s3.uri("no-such-bucket/sweep"), study)
    assert not list(scratch.iterdir())


def test_a_failed_optuna_db_leaves_no_half_built_file_in_the_sweep(tmp_path):
    study = load_study(write_space(tmp_path / "tuned.py", SEARCH_FILE))
    d = tmp_path / "sweep"
    cfg = {**study.fixed, "seed": 0, "bn": True, "lr": 0.01, "batch_size": 50, "dropout": 0.2}
    _record(str(d), "one", "bn", cfg, [0.3, 0.5], "completed")
    (d / "optuna.db").mkdir()  # its place is taken: the rename into it fails
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(OSError):
        rebuild_optuna_study(str(d), study)
    assert sorted(p.name for p in d.iterdir()) == before
