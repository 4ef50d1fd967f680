"""What a user writes in a search-space file: every mistake is one line and exit 2 from
`plan` and `run` alike, before Ray starts; every form of Ray Tune's and Optuna's
vocabulary means what it means there."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import bnsweep_env, write_space

from bnsweep.domains import Domain
from bnsweep.space import load_study

SYNTH = '{"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "epochs": 1, "augment": False}'

# name -> (file text, extra command-line words, what the one line must say)
BAD = {
    # Failures seen in issue 11, as written there.
    "int_key_loguniform": (f"""
        SEARCH = "optuna"
        ARMS = {{"bn": [True, False]}}
        SPACE = {{"batch_size": ("loguniform", 16, 128)}}
        FIXED = {SYNTH}
        """, [], "SPACE['batch_size'] = ('loguniform', 16, 128): batch_size takes whole numbers"),
    "int_key_uniform": ("""
        SEARCH = "optuna"
        ARMS = {"bn": [True, False]}
        SPACE = {"lr_drop_period": ("uniform", 1, 4)}
        """, [], "lr_drop_period takes whole numbers"),
    "choice_beyond_training_set": ("""
        SEARCH = "optuna"
        ARMS = {"bn": [True, False]}
        SPACE = {"batch_size": ("choice", [100, 400])}
        FIXED = {"dataset": "synthetic", "n_train": 200}
        """, [], "batch_size=400 is larger than the training set (200 images)"),
    "choice_leaves_batch_of_one": ("""
        SEARCH = "optuna"
        ARMS = {"bn": [True, False]}
        SPACE = {"batch_size": ("choice", [50, 100])}
        FIXED = {"model": "simple", "n_train": 201}
        """, [], "bn=True, batch_size=50): model=simple with bn needs 2 or more images in every batch"),
    "key_in_arms_and_space": ("""
        SEARCH = "optuna"
        ARMS = {"bn": [True, False]}
        SPACE = {"bn": ("choice", [True, False]), "lr": ("loguniform", 1e-3, 1.0)}
        """, [], "bn is in both ARMS and SPACE"),
    "experiment_not_a_string": ("EXPERIMENT = 2024\nSPACE = {'lr': [0.1]}\n", [],
                                "EXPERIMENT (the MLflow experiment name) must be a string, got 2024 (int)"),
    "experiment_too_long_flag": ("SPACE = {'lr': [0.1]}\n", ["--experiment", "x" * 600],
                                 "--experiment (the MLflow experiment name) must be 1 to 256 characters"),
    "experiment_too_long_file": (f"EXPERIMENT = {'x' * 600!r}\nSPACE = {{'lr': [0.1]}}\n", [],
                                 "must be 1 to 256 characters and not only spaces, got 600"),
    # The same kind of fault, in the other forms and places.
    "whole_int_range_checked": ("""
        from ray import tune
        SEARCH = "optuna"
        ARMS = {"bn": [True]}
        SPACE = {"batch_size": tune.lograndint(16, 1024)}
        FIXED = {"dataset": "synthetic", "n_train": 500}
        """, [], "batch_size=501 is larger than the training set (500 images)"),
    "sample_from": ("""
        from ray import tune
        SEARCH = "optuna"
        SPACE = {"lr": tune.sample_from(lambda spec: 0.1)}
        """, [], "tune.sample_from draws from a function"),
    "randn": ("""
        from ray import tune
        SEARCH = "optuna"
        SPACE = {"lr": tune.randn(0.1, 0.01)}
        """, [], "tune.randn is unbounded"),
    "grid_search_in_optuna": ("""
        from ray import tune
        SEARCH = "optuna"
        SPACE = {"lr": tune.grid_search([0.1, 0.01])}
        """, [], "tune.grid_search is a grid axis, and SEARCH is 'optuna'"),
    "distribution_in_grid": ("""
        from ray import tune
        SPACE = {"lr": tune.loguniform(1e-3, 1.0), "bn": [True, False]}
        """, [], "SPACE['lr'] = ray's Float is a distribution to sample, but SEARCH is 'grid'"),
    "range_on_a_bool": ("""
        import optuna
        SEARCH = "optuna"
        SPACE = {"bn": optuna.distributions.FloatDistribution(0, 1)}
        """, [], "bn takes true or false, not numbers"),
    "range_end_out_of_bounds": ("""
        SEARCH = "optuna"
        SPACE = {"dropout": ("uniform", 0.0, 1.0)}
        """, [], "SPACE['dropout'] value 1.0: dropout must be in [0, 1)"),
    "log_scale_from_zero": ("""
        SEARCH = "optuna"
        SPACE = {"batch_size": ("intloguniform", 0, 64)}
        """, [], "a log scale needs a lower bound above 0"),
    "quantised_log_scale": ("""
        from ray import tune
        SEARCH = "optuna"
        SPACE = {"lr": tune.qloguniform(1e-4, 1e-1, 1e-4)}
        """, [], "a log scale cannot have a step"),
    "fixed_and_space": ("SPACE = {'lr': [0.1, 0.01]}\nFIXED = {'lr': 0.5}\n", [],
                        "lr is varied by the study and also set in FIXED"),
    "smoke_changes_a_varied_key": ("SPACE = {'batch_size': [50, 100]}\nSMOKE = {'batch_size': 10}\n", ["--smoke"],
                                   "batch_size is varied by the study and also set in SMOKE"),
    "seed_in_fixed_and_seeds": ("SPACE = {'lr': [0.1]}\nFIXED = {'seed': 1}\nSEEDS = [0, 1]\n", [],
                                "seed is set in both FIXED and SEEDS"),
    "seeds_flag_repeats": ("SPACE = {'lr': [0.1]}\n", ["--seeds", "0,1,0"], "--seeds lists 0 more than once"),
}

# Runs `plan` and then `run` on every case's file, each in a working folder of its own,
# all in one process (a Python start per case would cost seconds each), and says whether
# Ray was started (a file may import Ray itself to write tune.* forms).
_BOTH = """
import contextlib, io, json, os, sys
from bnsweep.cli import main
cases = json.loads(sys.argv[1])
out = {}
for name, (path, flags, work) in cases.items():
    os.chdir(work)
    out[name] = {}
    for command in ("plan", "run"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            args = [command, path, *flags] + (["--no-probe"] if command == "plan" else [])
            out[name][command] = [main(args), err.getvalue()]
    out[name]["ray_started"] = "ray" in sys.modules and sys.modules["ray"].is_initialized()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """plan's and run's exit codes and stderr for every BAD case, and whether Ray started."""
    import json

    root = tmp_path_factory.mktemp("bad")
    cases = {}
    for name, (text, flags, _) in BAD.items():
        (root / name).mkdir()
        (root / name / "work").mkdir()
        cases[name] = [str(write_space(root / name / f"{name}.py", text)), flags, str(root / name / "work")]
    r = subprocess.run([sys.executable, "-c", _BOTH, json.dumps(cases)], capture_output=True, text=True,
                       env=bnsweep_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(BAD))
def test_plan_and_run_refuse_the_same_mistake_in_one_line_before_ray(name, verdicts):
    root, out = verdicts
    _, flags, needle = BAD[name]
    space = root / name / f"{name}.py"
    for command in ("plan", "run"):
        rc, err = out[name][command]
        assert rc == 2, (command, err)
        assert needle in err, (command, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, (command, err)
        assert str(space) in err or flags[:1] == ["--experiment"], (command, err)
    assert out[name]["plan"][1] == out[name]["run"][1], "plan and run must give the same verdict"
    assert not out[name]["ray_started"]
    assert list((root / name / "work").iterdir()) == [], "nothing may be written"


def test_bad_study_file_name_is_refused(tmp_path):
    space = write_space(tmp_path / "my study.py", "SPACE = {'lr': [0.1]}\n")
    r = subprocess.run([sys.executable, "-m", "bnsweep.cli", "plan", str(space), "--no-probe"],
                       capture_output=True, text=True, cwd=tmp_path, env=bnsweep_env(), timeout=120)
    assert r.returncode == 2 and "the file's name 'my study' names the sweep's folder" in r.stderr, r.stderr


# ------------------------------------------------------------- the forms ---

def _tune():
    from ray import tune

    return tune


def _optuna():
    import optuna

    return optuna.distributions


# (key, form in the file's words, the Domain bnsweep reads, the Optuna distribution Ray's
# OptunaSearch samples from once bnsweep hands the domain to Tune)
FORMS = [
    ("lr", "('loguniform', 1e-4, 1.0)", Domain("float", 1e-4, 1.0, log=True), "FloatDistribution(1e-4, 1.0, log=True)"),
    ("dropout", "('uniform', 0.0, 0.5)", Domain("float", 0.0, 0.5), "FloatDistribution(0.0, 0.5)"),
    ("batch_size", "('intuniform', 16, 64)", Domain("int", 16, 64), "IntDistribution(16, 64)"),
    ("batch_size", "('intloguniform', 16, 64)", Domain("int", 16, 64, log=True), "IntDistribution(16, 64, log=True)"),
    ("batch_size", "('choice', [25, 50])", Domain("choice", values=(25, 50)), "CategoricalDistribution((25, 50))"),
    ("lr", "tune.loguniform(1e-4, 1.0)", Domain("float", 1e-4, 1.0, log=True),
     "FloatDistribution(1e-4, 1.0, log=True)"),
    ("dropout", "tune.uniform(0.0, 0.5)", Domain("float", 0.0, 0.5), "FloatDistribution(0.0, 0.5)"),
    ("dropout", "tune.quniform(0.0, 0.5, 0.1)", Domain("float", 0.0, 0.5, step=0.1),
     "FloatDistribution(0.0, 0.5, step=0.1)"),
    # Tune's randint and lograndint exclude the upper bound; its qrandint includes it.
    ("batch_size", "tune.randint(16, 65)", Domain("int", 16, 64), "IntDistribution(16, 64)"),
    ("batch_size", "tune.lograndint(16, 65)", Domain("int", 16, 64, log=True), "IntDistribution(16, 64, log=True)"),
    ("batch_size", "tune.qrandint(16, 64, 16)", Domain("int", 16, 64, step=16), "IntDistribution(16, 64, step=16)"),
    ("batch_size", "tune.choice([25, 50])", Domain("choice", values=(25, 50)), "CategoricalDistribution((25, 50))"),
    ("lr", "optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)", Domain("float", 1e-4, 1.0, log=True),
     "FloatDistribution(1e-4, 1.0, log=True)"),
    ("batch_size", "optuna.distributions.IntDistribution(16, 64, step=16)", Domain("int", 16, 64, step=16),
     "IntDistribution(16, 64, step=16)"),
    ("batch_size", "optuna.distributions.IntDistribution(16, 64, log=True)", Domain("int", 16, 64, log=True),
     "IntDistribution(16, 64, log=True)"),
    ("bn", "optuna.distributions.CategoricalDistribution([True, False])", Domain("choice", values=(True, False)),
     "CategoricalDistribution((True, False))"),
]


@pytest.mark.parametrize("key,form,domain,sampled", FORMS, ids=[f[1].split("(")[0] + "-" + f[0] for f in FORMS])
def test_each_tune_and_optuna_form_means_what_it_means_there(key, form, domain, sampled, tmp_path):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from bnsweep.sweep import tune_domain

    space = write_space(tmp_path / "forms.py", f"""
        import optuna
        from ray import tune
        SEARCH = "optuna"
        SPACE = {{{key!r}: {form}}}
        NUM_SAMPLES = 3
        FIXED = {{"dataset": "synthetic", "n_train": 500}}
        """)
    study = load_study(space)
    assert study.space[key] == domain
    assert study.n_trials() == 3 + 3  # NUM_SAMPLES, then its best on CONFIRM_SEEDS (default 3) fresh seeds
    got = OptunaSearch.convert_search_space({key: tune_domain(study.space[key])})[key]
    assert got == eval(sampled, {**vars(optuna.distributions)}), (got, sampled)


def test_grid_search_and_plain_lists_are_the_same_grid(tmp_path):
    plain = load_study(write_space(tmp_path / "plain.py", "SPACE = {'lr': [0.1, 0.01], 'bn': [True, False]}\n"))
    tuned = load_study(write_space(tmp_path / "tuned.py", """
        from ray import tune
        SPACE = {"lr": tune.grid_search([0.1, 0.01]), "bn": tune.grid_search([True, False])}
        """))
    assert tuned.space == plain.space and tuned.n_trials() == plain.n_trials() == 4


def test_seeds_flag_replaces_the_files_seeds(tmp_path):
    from bnsweep.trials import pair_id

    space = write_space(tmp_path / "seeded.py", "SPACE = {'lr': [0.1], 'bn': [True, False]}\nSEEDS = [0]\n")
    study = load_study(space, seeds=["0", "1", "2"])
    assert study.seeds == [0, 1, 2] and study.n_trials() == 6
    configs = study.grid_configs()
    for seed in (0, 1, 2):  # each seed's BN and no-BN trials form a pair
        pair = [c for c in configs if c["seed"] == seed]
        assert {c["bn"] for c in pair} == {True, False} and len({pair_id(c) for c in pair}) == 1
