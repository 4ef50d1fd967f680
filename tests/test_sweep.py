"""`bnsweep run | resume | plan` on a real Ray head (RAY_ADDRESS) with real MLflow."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    RAY_TEMP,
    bnsweep_env,
    gcs_state,
    ledger_trials,
    results_of,
    run_bnsweep,
    sweep_dir_of,
    trial_dirs,
    write_space,
)
from helpers import TINY, assert_mlflow_equals_ledger, children, start_driver, steps, trials_so_far, wait_for
from mlflow import MlflowClient
from recorded_sweeps import README_STUDY, smoke_name

from bnsweep.space import load_study

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted((REPO / "search_spaces").glob("*.py"))
# ------------------------------------------------------------ the files ---

def test_lr_study_is_14_trials_with_paired_seeds():
    study = load_study(REPO / "search_spaces" / "lr.py")
    configs = study.grid_configs()
    assert len(configs) == study.n_trials() == 14
    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    assert sorted((c["lr"], c["bn"]) for c in configs) == sorted(itertools.product(lrs, [False, True]))
    for c in configs:  # everything else is the reference
        assert (c["epochs"], c["batch_size"], c["model"], c["width"], c["dropout"]) == (30, 250, "inception", 1.0, 0.0)
    from bnsweep.trials import pair_id

    pairs = {}
    for c in configs:
        pairs.setdefault(pair_id(c), []).append(c)
    assert len(pairs) == 7
    for members in pairs.values():
        assert sorted(m["bn"] for m in members) == [False, True]
        assert len({m["seed"] for m in members}) == 1


@pytest.mark.parametrize("name", ["lr", "batch_size", "dropout", "norm_batch_size"])
def test_tune_runs_a_grid_in_the_files_order_the_arms_of_a_point_side_by_side(name):
    # Tune varies a grid's first key fastest; the trials must come as Study.grid_configs lists
    # them (the file's last key, its arm, fastest; seeds outermost), whatever the config
    # table's order of the keys (norm's trials once came batch size by batch size).
    from ray.tune.search.variant_generator import generate_variants

    from bnsweep import sweep
    from bnsweep.config import make_config
    from bnsweep.trials import trial_config

    study = load_study(REPO / "search_spaces" / f"{name}.py")
    study.seeds = [0, 1]
    tune_order = [make_config(trial_config(c)) for _, c in generate_variants(sweep._param_space(study, None))]
    assert tune_order == study.grid_configs()


def test_seeds_axis_repeats_every_point_and_keeps_pairs(tmp_path):
    f = write_space(tmp_path / "s.py", 'SPACE = {"lr": [0.1, 0.01], "bn": [True, False]}\nSEEDS = [0, 1, 2]\n')
    configs = load_study(f).grid_configs()
    assert len(configs) == 12
    assert sorted({c["seed"] for c in configs}) == [0, 1, 2]


def test_sweeps_started_in_the_same_second_share_no_folder(monkeypatch):
    # Ray stages a driver's files in <session>/artifacts/<start second>/<experiment name>
    # (StorageContext.experiment_driver_staging_path): drivers that join one Ray in the
    # same second must differ in their experiment names, or each uploads the other's
    # saved state as its own (an lr sweep then read a batch-size sweep's running trials).
    from bnsweep import sweep

    monkeypatch.setattr(sweep.time, "strftime", lambda fmt, *a: "20261125-120000")
    studies = [load_study(REPO / "search_spaces" / f"{n}.py") for n in ("lr", "batch_size", "lr", "optuna")]
    dirs = [sweep.sweep_dir_for("/results", s) for s in studies]
    assert len(set(dirs)) == len(dirs), "one folder per sweep, also for one study twice in a second"
    names = [sweep.tune_dir(d, label).rsplit("/", 1)[1]
             for d, s in zip(dirs, studies) for label, _ in sweep.tuner_names(s)]
    assert len(names) == len(set(names)) == 5, names  # 3 grids + the Optuna study's 2 searches
    assert all(sweep.tune_dir(d, "grid").startswith(d + "/") for d in dirs)


@pytest.mark.parametrize("space", SPACES, ids=[p.stem for p in SPACES])
def test_every_search_space_runs_end_to_end_in_smoke_mode(space, ray_address, cifar_dir, tmp_path, recorded_sweeps):
    if space.stem == README_STUDY:
        # quick.py also proves the README's defaults: no address -> a Ray of its own, even with
        # another Ray running on this machine (the session's head); no tracking URI -> ./mlflow.db.
        env = bnsweep_env(cifar_dir, RAY_TMPDIR=str(Path(RAY_TEMP).parent))
        r = run_bnsweep("run", str(space), "--smoke", "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
        rc, out, results, uri = r.returncode, r.stdout + r.stderr, tmp_path / "results", f"sqlite:///{tmp_path}/mlflow.db"
        assert not [j for j in gcs_state(ray_address)["jobs"] if str(tmp_path) in j["entrypoint"]]
    else:  # the session's smoke run of the file (tests/recorded_sweeps.py), which other tests also read
        run = recorded_sweeps(smoke_name(space.stem), data_dir=cifar_dir)
        rc, out, results, uri = run.proc.returncode, run.log(), run.work / "results", run.uri
    assert rc == 0, out[-6000:]
    assert "summary" in out
    study = load_study(space, smoke=True)
    from bnsweep.sweep import tuner_names
    from bnsweep.trials import arm_name

    summary = out.split("\nsummary\n")[1].split("\nresults on storage:")[0]
    printed = [line.split()[0] for line in summary.splitlines() if line.startswith("  ")]
    arms = ({arm_name(c) for c in study.grid_configs()} if study.search == "grid"
            else {name for name, _ in tuner_names(study)})  # Optuna: its searches, whatever dropout it tunes
    assert sorted(printed) == sorted(arms), out[-2000:]
    trials = ledger_trials(sweep_dir_of(results))
    assert len(trials) == study.n_trials()
    for t in trials:
        assert t.epochs and t.status in ("completed", "diverged", "stopped"), (t.name, t.end)
        if study.scheduler == "fifo":
            assert t.epochs[-1]["epoch"] == study.fixed["epochs"] or t.status == "diverged"
    runs = children(uri, f"bnsweep-{study.name}")
    assert len(runs) == study.n_trials()
    assert all(r.info.status == "FINISHED" for r in runs)
    # Tune's CSV and JSON logs in every trial's folder; no TensorBoard files (bnsweep/sweep.py).
    folders = trial_dirs(sweep_dir_of(results))
    assert len(folders) == study.n_trials() and all((t / "progress.csv").is_file() for t in folders), folders
    assert not list(sweep_dir_of(results).rglob("events.out.tfevents*"))
    if space.stem == "lr":  # the transcript fits a screen or two and gives every trial's val_acc
        transcript = out.splitlines()
        assert len(transcript) < 100, "\n".join(transcript)
        ends = [line for line in transcript
                if line.lstrip().startswith(("completed ", "diverged ")) and "val_acc" in line]
        assert len(ends) == 14, "\n".join(transcript)
        assert not [line for line in transcript if "Current best trial" in line or "tensorboard" in line.lower()]
        log = sorted(sweep_dir_of(results).glob("logs/driver-*.log"))
        assert log and f"Ray's and Tune's own output: {log[0]}" in out
    if space.stem == "lr":  # Tune ran exactly the grid, pairs sharing their seed
        params = [t.config for t in trials]
        assert sorted((p["lr"], p["bn"]) for p in params) == sorted(
            itertools.product([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], [False, True]))
        assert {p["seed"] for p in params} == {0}
        # The 14-trial smoke sweep's report decides no claim, and says why (evidence.too_short).
        import pandas as pd

        from bnsweep.analysis.report import build_report

        build_report("bnsweep-lr", tmp_path / "report", uri, log_to_mlflow=False)
        claims = pd.read_csv(tmp_path / "report" / "claims.csv").set_index("claim")
        # Each says why: the first reason the data gives (here no arm trained past chance), else its length or --smoke.
        assert claims["verdict"].str.fullmatch(r"undecided \(.{10,}\)").all(), claims["verdict"].to_dict()
        assert "too short to measure it" in claims.loc[2, "verdict"]  # 1 epoch, 10 steps: no step time


# ------------------------------------------------------------- failures ---

def test_driver_sigkill_then_resume_finishes_each_trial_once(ray_address, mlflow_server, tmp_path):
    space = write_space(tmp_path / "killme.py", f"""
        SPACE = {{"lr": [0.01, 0.02, 0.03], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 3}}
        MAX_CONCURRENT = 1
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    driver = start_driver(space, storage, env, tmp_path)

    def finished() -> list[Path]:
        return [t for t in trials_so_far(storage) if (results_of(t) or [{}])[-1].get("epoch") == 3]

    done = wait_for(lambda: len(finished()) >= 2 and finished(), 300, "two finished trials")
    time.sleep(1.0)  # let a third trial start, so one is cut mid-run
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done = finished()
    assert 2 <= len(done) < 6
    before = {t: (t / "result.json").read_bytes() for t in done}

    r = run_bnsweep("resume", str(sweep_dir_of(storage)), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    trials = ledger_trials(sweep_dir_of(storage))
    assert len(trials) == 6 and all(t.status == "completed" for t in trials)
    for trial, data in before.items():  # finished trials were not run again
        assert (trial / "result.json").read_bytes() == data
    runs = children(mlflow_server.uri, "bnsweep-killme")
    assert len(runs) == 6, "one MLflow run per trial, also after the resume"
    for run in runs:
        assert steps(mlflow_server.uri, run.info.run_id) == [1, 2, 3]
        assert run.info.status == "FINISHED"
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-killme", sweep_dir_of(storage))
    client = MlflowClient(mlflow_server.uri)
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"


def test_trial_folders_tunes_saved_state_missed_are_harmless(ray_address, tmp_path):
    # The race the test above hits at random, made certain: a driver killed between a
    # trial's start and Tune's next state snapshot leaves a trial folder the restored state
    # does not know, and Tune runs the trial again into a second folder. bnsweep reads
    # only its ledger, where the trial is one record by its trial id, each epoch once.
    space = write_space(tmp_path / "orphans.py", f"""
        SPACE = {{"lr": [0.01], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 1}}
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    r = run_bnsweep("run", str(space), "--storage", str(storage), "--no-tracking", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sweep = sweep_dir_of(storage)
    before = ledger_trials(sweep)
    known = trial_dirs(sweep)
    empty = known[0].with_name(known[0].name.replace("_00000", "_00007"))
    empty.mkdir()
    (empty / "params.json").write_text((known[0] / "params.json").read_text())
    (empty / "result.json").write_text("")
    shutil.copytree(known[0], known[0].with_name(known[0].name.replace("_00000", "_00008")))

    r = run_bnsweep("resume", str(sweep), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = r.stdout.split("\nsummary\n")[1]
    assert sorted(line.split()[:3] for line in summary.splitlines()[:2]) == [["bn", "1", "trial"],
                                                                            ["no_bn", "1", "trial"]]
    after = ledger_trials(sweep)
    assert [(t.trial_id, t.epochs, t.end) for t in after] == [(t.trial_id, t.epochs, t.end) for t in before]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = run_bnsweep("sync", str(sweep), "--tracking-uri", uri, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "2 epoch(s) added" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    runs = children(uri, "bnsweep-orphans")
    assert len(runs) == 2 and all(steps(uri, x.info.run_id) == [1] for x in runs)


def test_trial_killed_mid_run_continues_from_its_checkpoint(ray_address, mlflow_server, tmp_path):
    space = write_space(tmp_path / "killtrial.py", f"""
        SPACE = {{"bn": [True]}}
        FIXED = {{**{TINY}, "n_train": 400, "epochs": 6}}
        MAX_FAILURES = 1
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    driver = start_driver(space, storage, env, tmp_path)

    def row_at_epoch_2():
        trials = trials_so_far(storage)
        rows = results_of(trials[0]) if trials else []
        return next((r for r in rows if r["epoch"] >= 2), None)

    row = wait_for(row_at_epoch_2, 300, "epoch 2 of the trial")
    os.kill(row["pid"], signal.SIGKILL)  # the trial's worker process dies, as on a node failure
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-4000:]
    (trial,) = ledger_trials(sweep_dir_of(storage))
    assert [r["epoch"] for r in trial.epochs] == [1, 2, 3, 4, 5, 6] and trial.status == "completed"
    rows = results_of(trial_dirs(sweep_dir_of(storage))[0])
    epochs = [r["epoch"] for r in rows]
    assert epochs[-1] == 6
    assert epochs.count(1) == 1, f"the retry restarted from scratch: {epochs}"
    assert epochs == sorted(epochs), epochs  # continued, never went back to an earlier epoch ...
    assert len(epochs) - len(set(epochs)) <= 1  # ... at most the epoch in flight ran twice
    # time_total_s is bnsweep's, the sum of epoch times across the restore, not Tune's
    # wall time since the trial started (start-up and the restore included).
    totals = {0: [0.0]}
    for r in rows:
        totals.setdefault(r["epoch"], []).append(r["time_total_s"])
    for r in rows:
        assert any(abs(r["time_total_s"] - r["epoch_time_s"] - t) < 1e-6 for t in totals[r["epoch"] - 1]), r
    (run,) = children(mlflow_server.uri, "bnsweep-killtrial")
    assert steps(mlflow_server.uri, run.info.run_id) == [1, 2, 3, 4, 5, 6]
    assert run.info.status == "FINISHED"


def test_diverged_trial_is_a_result_and_the_sweep_completes(ray_address, mlflow_server, cifar_dir, tmp_path):
    # No BN at lr 10 on real CIFAR-10: NaN loss by the second epoch (measured), never retried.
    space = write_space(tmp_path / "diverge.py", """
        SPACE = {"lr": [0.01, 10.0], "bn": [False]}
        FIXED = {"width": 0.0625, "n_train": 500, "n_val": 200, "batch_size": 50, "epochs": 3, "augment": False}
        MAX_FAILURES = 2
    """)
    env = bnsweep_env(cifar_dir, RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=mlflow_server.uri)
    r = run_bnsweep("run", str(space), "--storage", str(tmp_path / "results"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "diverged 1" in r.stdout
    statuses = {t.config["lr"]: t.status for t in ledger_trials(sweep_dir_of(tmp_path / "results"))}
    assert statuses == {10.0: "diverged", 0.01: "completed"}
    from bnsweep.trials import trial_config  # Tune's config holds the grid's point (sweep._param_space)

    by_lr = {trial_config(json.loads((t / "params.json").read_text()))["lr"]: results_of(t)
             for t in trial_dirs(sweep_dir_of(tmp_path / "results"))}
    assert by_lr[10.0][-1]["diverged"] == 1.0
    assert [x["epoch"] for x in by_lr[10.0]] == list(range(1, len(by_lr[10.0]) + 1)), "no retry"
    assert by_lr[0.01][-1]["epoch"] == 3 and by_lr[0.01][-1]["diverged"] == 0.0
    runs = {float(run.data.params["lr"]): run for run in children(mlflow_server.uri, "bnsweep-diverge")}
    assert runs[10.0].data.tags["diverged"] == "true" and runs[10.0].info.status == "FINISHED"
    assert runs[0.01].data.tags["diverged"] == "false" and runs[0.01].info.status == "FINISHED"


# ------------------------------------------------------------ bad input ---

BAD_FILES = {
    "syntax": ("SPACE = {'lr': [0.1,\n", "does not import (line"),
    "raises": ("import nonexistent_module_xyz\nSPACE = {}\n", "does not import"),
    "exits": ("raise SystemExit(3)\n", "does not import (line 1): SystemExit: 3"),
    "nospace": ("SEARCH = 'grid'\n", "defines no SPACE"),
    "unknownkey": ("SPACE = {'lrr': [0.1]}\n", "SPACE key 'lrr' is not a config key (did you mean 'lr'?)"),
    "unknownname": ("SPACE = {'lr': [0.1]}\nSEEDZ = [1]\n", "unknown name SEEDZ"),
    "lrzero": ("SPACE = {'lr': [0.1, 0.0]}\n", "SPACE['lr'] value 0.0: lr must be > 0"),
    "emptygrid": ("SPACE = {'lr': []}\n", "SPACE['lr'] is an empty grid"),
    "batchzero": ("SPACE = {'batch_size': [0, 50]}\n", "SPACE['batch_size'] value 0: batch_size must be > 0"),
    "mixed": ("SEARCH = 'grid'\nSPACE = {'lr': ('loguniform', 1e-4, 1.0), 'bn': [True, False]}\n",
              "SPACE['lr'] = ('loguniform', 0.0001, 1.0) is a distribution to sample, but SEARCH is 'grid'"),
    "optunalist": ("SEARCH = 'optuna'\nSPACE = {'lr': [0.1, 0.01]}\n", "cannot be mixed with an Optuna search"),
    "badfixed": ("SPACE = {'lr': [0.1]}\nFIXED = {'epochs': -1}\n", "epochs must be > 0"),
    "epochsvaried": ("SPACE = {'epochs': [5, 10]}\n", "epochs is the budget of every trial, not a setting to vary"),
    "repeatedlr": ("SPACE = {'lr': [0.1, '0.1', 0.01]}\n", "SPACE['lr'] lists 0.1 more than once"),
    "repeatedseed": ("SPACE = {'lr': [0.1]}\nSEEDS = [0, 1, 0]\n", "SEEDS lists 0 more than once"),
}

_CHECK = ("import sys; from bnsweep.cli import main; rc = main(sys.argv[1:]); "
          "assert 'ray' not in sys.modules, 'Ray was imported'; sys.exit(rc)")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_search_space_is_one_clear_error_before_ray(name, tmp_path):
    text, needle = BAD_FILES[name]
    space = write_space(tmp_path / f"{name}.py", text)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, "-c", _CHECK, "run", str(space)], capture_output=True, text=True,
                       cwd=work, env=bnsweep_env(), timeout=120)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and str(space) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(work.iterdir()) == [], "nothing may be written"


def test_missing_file_and_bad_overrides(tmp_path):
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "sweep.json").write_text("{not json")
    for args, needle in [(["run", str(tmp_path / "nope.py")], "does not exist"),
                         (["run", str(REPO / "search_spaces/lr.py"), "--lr", "0.1"], "lr is varied by this file"),
                         (["run", str(REPO / "search_spaces/lr.py"), "--epochs", "0"], "epochs must be > 0"),
                         (["run", str(REPO / "search_spaces/lr.py"), "--gpus-per-trial", "1.5"], "whole number"),
                         (["resume", str(tmp_path)], "is not a bnsweep sweep directory"),
                         (["resume", str(garbled)], "cannot read"),
                         (["run", str(REPO / "search_spaces/lr.py"), "--storage", "/proc/bnsweep"],
                          "cannot write results to /proc/bnsweep")]:
        r = subprocess.run([sys.executable, "-c", _CHECK, *args], capture_output=True, text=True, cwd=tmp_path,
                           env=bnsweep_env(), timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


@pytest.mark.slow  # over 5 s on 2 cores
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="tests a machine without a GPU")
def test_trials_that_cannot_fit_the_local_machine_stop_before_anything_is_recorded(tmp_path):
    # On a Ray of its own there is no autoscaler: a GPU trial on a CPU machine would wait forever.
    space = write_space(tmp_path / "gpu.py", f'SPACE = {{"bn": [True]}}\nFIXED = {TINY}\n')
    r = run_bnsweep("run", str(space), "--gpus-per-trial", "0.5", "--storage", str(tmp_path / "results"),
                    env=bnsweep_env(), cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "each trial asks for 0.5 GPU but this machine has 0" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
    if (tmp_path / "mlflow.db").exists():  # the store may be created; no sweep is recorded in it
        assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("bnsweep-gpu") is None
    r = run_bnsweep("plan", str(space), "--gpus-per-trial", "0.5", "--no-probe", env=bnsweep_env(), cwd=tmp_path)
    assert r.returncode == 0 and "a trial does not fit here" in r.stdout, r.stdout


@pytest.mark.slow  # over 5 s on 2 cores
def test_plan_prints_the_cost_with_a_measured_estimate(tmp_path):
    import torch

    gpus = 1 if torch.cuda.device_count() else 0  # lr.py does not say: one GPU per trial where there are GPUs
    r = run_bnsweep("plan", str(REPO / "search_spaces/lr.py"), "--smoke", env=bnsweep_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for needle in ("trials          14", "epochs/trial    1", "trial-epochs    14",
                   f"per trial       1 CPU, {gpus} GPU", "at once", "estimate"):
        assert needle in r.stdout, r.stdout
    r = run_bnsweep("plan", str(REPO / "search_spaces/lr.py"), "--no-probe", "--gpus-per-trial", "0.5",
                    env=bnsweep_env(), cwd=tmp_path)
    assert r.returncode == 0 and "per trial       1 CPU, 0.5 GPU" in r.stdout, r.stdout + r.stderr


def test_gpus_per_trial_default_and_device_auto_follow_ray(tmp_path):
    from bnsweep.trainable import trial_device

    study = load_study(REPO / "search_spaces/lr.py")
    study.default_gpus(0)
    assert study.resources["gpu"] == 0
    study.default_gpus(8)
    assert study.resources["gpu"] == 1
    declared = load_study(write_space(tmp_path / "s.py", 'SPACE = {"lr": [0.1]}\nRESOURCES = {"gpu": 0.25}\n'))
    declared.default_gpus(8)
    assert declared.resources["gpu"] == 0.25
    # A trial Ray gave no GPU trains on the CPU under device=auto, not on the node's cuda:0.
    assert trial_device("auto", []) == "cpu"
    assert trial_device("auto", ["0"]) == "auto" and trial_device("cuda", []) == "cuda"


def test_local_run_without_the_dataset_stops_before_ray(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = bnsweep_env(tmp_path / "no-data-here")
    r = subprocess.run([sys.executable, "-c", _CHECK, "run", str(REPO / "search_spaces/quick.py"), "--smoke",
                        "--no-download"], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "CIFAR-10 files missing in" in r.stderr and str(tmp_path / "no-data-here") in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(work.iterdir()) == [], "nothing may be written"


def test_plans_wall_time_is_when_the_last_trial_ends():
    # Trials start in the study's order, each on the first free slot: a pair's longer trial
    # sets the wall time, not the mean (plan read 96 s for quick.py, whose trials took 69 and 56).
    from bnsweep.plan import _makespan

    assert _makespan([69.0, 56.0], 2) == 69.0
    assert _makespan([10.0, 10.0, 10.0], 2) == 20.0
    assert _makespan([30.0, 10.0, 10.0, 10.0], 2) == 30.0
    assert _makespan([5.0, 7.0], 1) == 12.0


def test_plans_probe_times_training_and_validation_as_train_runs_them(tmp_path, monkeypatch):
    # The probe is real: train()'s execution, a training step and train.evaluate, each timed
    # per image. Validation is costed by its own measurement, not as a share of a training step
    # (a third under bf16 on AVX512_BF16, 0.6 in fp32 on AVX2).
    from bnsweep import plan

    space = f"SPACE = {{'bn': [True]}}\nFIXED = {{**{TINY}, 'epochs': 2}}\n"
    study = load_study(write_space(tmp_path / "tiny.py", space))
    cfg = study.grid_configs()[0]
    train_s, val_s = plan.seconds_per_image(cfg, 1)
    assert 0 < val_s and 0 < train_s
    # 2 epochs x (200 images x 1 s + 100 validated x 0.5 s) = 500 s, one trial on a free core.
    monkeypatch.setattr(plan, "seconds_per_image", lambda cfg, threads: (1.0, 0.5))
    assert "8 min wall here (8 min of trial time)" in plan.describe(study)
