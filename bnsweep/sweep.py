"""A study on Ray Tune: the Tuner(s), resume (the trainable: bnsweep/trainable.py).

Layout on storage (a local directory or a URI such as s3://bucket/prefix):

    STORAGE/<sweep>/                      the sweep directory (`bnsweep resume` takes it);
                                          <sweep> = <study>-<date>-<time>-<random token>
        sweep.json                        what `run` was asked to do, for resume and sync
        ledger/<trial>/                   bnsweep's record of each trial (bnsweep/ledger.py)
        grid-<sweep>/ | bn-<sweep>/ ...   one Tune experiment per Tuner: a grid study has one;
                                          an Optuna study has one per arm, equal budgets, and
        confirm_bn-<sweep>/ ...           after each arm's search, its confirmation: the arm's
                                          best configuration on CONFIRM_SEEDS fresh seeds.
                                          Tune's own: only Tune (fit, restore) reads them
        optuna.db                         the searches as Optuna studies (bnsweep/optuna_study.py)
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from typing import Any

# Tune saves its experiment state every this many seconds; short so that a
# killed driver loses at most a few seconds of bookkeeping (default: adaptive, >= 10 s).
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
# bnsweep prints its own summary; Tune's "new output" table stays as the progress view.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
# A trial that fails beyond retrying returns without a result (trainable.run_trial), and Tune's
# check that every result holds the metric would count the end of such a trial as a
# result without it. Every epoch's result holds val_acc and the other metrics (train.py).
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Tune's automatic loggers write CSV, JSON and TensorBoard files into every trial's folder.
# bnsweep adds the CSV and JSON ones itself (_run_config: Tune's own tools read them) and leaves
# TensorBoard's out: MLflow is the sweep's viewer, and that logger imports tensorboardX and,
# with it, torch into the driver, which trains nothing (~3 CPU-s a driver; py-spy, 2026-12-07).
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402

from bnsweep import ledger, optuna_study, progress  # noqa: E402
from bnsweep.domains import Domain  # noqa: E402
from bnsweep.errors import BnsweepError  # noqa: E402
from bnsweep.space import Study  # noqa: E402
from bnsweep.storage import SweepSpec, folder_name, join, split  # noqa: E402
from bnsweep.trainable import run_trial  # noqa: E402
from bnsweep.trials import (  # noqa: E402
    ARM_KEYS,
    CONFIRM_PREFIX,
    GRID_TUNER,
    POINT_KEY,
    norm_arm,
    trial_config,
    trial_dirname,
)


class _Without(logging.Filter):
    """Drops log records that contain any of `fragments`."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


# Ray's advice that bnsweep's own replaces, on an interrupted sweep: its resume call
# (`bnsweep resume` is the one that keeps MLflow in step) and the list of trials that
# have no results yet (bnsweep's summary counts them as unfinished).
logging.getLogger("ray.tune.tune").addFilter(_Without("Resume experiment with:"))
logging.getLogger("ray.tune.analysis.experiment_analysis").addFilter(_Without("Failed to fetch metrics"))
# Said at every ray.init on a machine that holds a Ray token (~/.ray/auth_token), even for
# a Ray of the sweep's own; the cluster guide says when a token matters (docs/cluster.md).
logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    _Without("Token authentication is enabled"))

FORWARDED_ENV = ("BNSWEEP_DATA_DIR",)


def _trial_name_creator(trial) -> str:
    return trial_dirname(trial.config, trial.trial_id)


# --------------------------------------------------------------- tuners ----

def _param_space(study: Study, arm: dict[str, Any] | None) -> dict[str, Any]:
    if study.search == "grid":
        # Tune orders a grid by its keys' names (the first name varies fastest), not as the file
        # lists them: the batch-size study's trials came batch size by batch size, BN's far from
        # no BN's. So Tune gets one grid over whole points, in Study.grid_points' order.
        return {**study.fixed, POINT_KEY: tune.grid_search(study.grid_points())}
    space = {**study.fixed, **(arm or {}), "seed": study.seeds[0]}
    for key, domain in study.space.items():
        space[key] = tune_domain(domain)
    return space


def tune_domain(domain: Domain):
    """A checked distribution as Ray Tune's, which OptunaSearch samples exactly as
    bnsweep checked it (inclusive bounds; bnsweep/domains.py)."""
    if domain.kind == "choice":
        return tune.choice(list(domain.values))
    if domain.kind == "float":
        if domain.log:
            return tune.loguniform(domain.low, domain.high)
        return tune.quniform(domain.low, domain.high, domain.step) if domain.step else \
            tune.uniform(domain.low, domain.high)
    if domain.log:  # Tune's lograndint and randint exclude the upper bound, its qrandint does not
        return tune.lograndint(domain.low, domain.high + 1)
    return tune.qrandint(domain.low, domain.high, domain.step) if domain.step else \
        tune.randint(domain.low, domain.high + 1)


def tuner_names(study: Study) -> list[tuple[str, dict[str, Any] | None]]:
    """(label, arm) of each Tuner: "grid", or an Optuna study's searches ("bn", "no_bn")."""
    if study.search == "grid":
        return [(GRID_TUNER, None)]
    # Named as a grid names its arms (trials.norm_arm): bn, no_bn, gn, ... whichever of bn or norm varies.
    return [("_".join(norm_arm({"bn": True, k: v}) if k in ARM_KEYS else f"{k}={v}" for k, v in a.items()) or "all", a)
            for a in study.arm_list()]


def _tune_config(study: Study, spec: SweepSpec, confirm: bool = False) -> tune.TuneConfig:
    kwargs: dict[str, Any] = dict(
        metric=study.metric, mode="min" if study.metric.endswith("loss") else "max",
        max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
        trial_name_creator=_trial_name_creator, trial_dirname_creator=_trial_name_creator)
    if confirm:  # a grid over seeds, each run its whole budget: no search, no early stopping
        return tune.TuneConfig(**kwargs)
    if study.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        kwargs.update(num_samples=study.num_samples, search_alg=OptunaSearch(seed=study.seeds[0]))
    if study.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # Rungs at 1/4, 1/2 of the epochs; a trial is stopped only after it has
        # had at least a quarter of its budget (BN's running statistics need
        # steps before validation means anything, docs/design.md §2).
        epochs = study.fixed["epochs"]
        kwargs.update(scheduler=ASHAScheduler(time_attr="epoch", max_t=epochs,
                                              grace_period=max(1, epochs // 4), reduction_factor=2))
    return tune.TuneConfig(**kwargs)


def _trainable(spec: SweepSpec, sweep_dir: str, tuner: str):
    resources = {"CPU": spec.resources["cpu"], "GPU": spec.resources["gpu"]}
    sweep = {"sweep_dir": sweep_dir, "tuner": tuner, "resources": spec.resources}
    return tune.with_resources(tune.with_parameters(run_trial, sweep=sweep), resources)


class LedgerEnds(tune.Callback):
    """The ends of trials that Tune decides on the driver and the trainable never learns:
    a scheduler stopped it early, or it failed its last retry. Written only where the
    trainable wrote no end of its own (it returned: completed, diverged, failed).

    Tune pickles its callbacks with the experiment and a restore brings this one back
    with the sweep folder it was made for; `resume` therefore runs a sweep only where it
    was started (runner.resume checks).
    """

    def __init__(self, sweep_dir: str, tuner: str):
        self.sweep_dir, self.tuner = sweep_dir, tuner

    def _end(self, trial, status: str, reason: str | None = None) -> None:
        name = trial_dirname(trial.config, trial.trial_id)
        # A trial that errored before its trainable ran has no record yet; it gets one.
        ledger.start_trial(self.sweep_dir, name, trial.trial_id, self.tuner, trial_config(trial.config),
                           attempt=False)
        ledger.end_trial(self.sweep_dir, name, status, reason, if_open=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "stopped")  # if_open: a trial that returned has its own end already

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "errored", f"failed after {trial.num_failures} attempt(s); Tune's error file: "
                                    f"{trial.path}/error.txt")


class _SpaceWatch:
    """While the Tuners run: a local results disk running short of space stops the sweep
    as Ctrl-C does (Tune saves its state, `bnsweep resume` continues), while there is
    still room for that state and the trials' next checkpoints (ledger.shortage). A
    thread of the driver, checking every CHECK_EVERY_S; object stores do not fill up."""

    CHECK_EVERY_S = 2.0

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bnsweep-space", daemon=True)

    def __enter__(self) -> _SpaceWatch:
        if "://" not in self.sweep_dir:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        reader = ledger.Reader(self.sweep_dir)
        while not self._stop.wait(self.CHECK_EVERY_S):
            if ledger.shortage(self.sweep_dir, reader.trials()):
                os.kill(os.getpid(), signal.SIGINT)  # Tune's own handler: save the state, stop the trials
                return


def _run_config(tune_dir: str, spec: SweepSpec, callbacks: list, verbose: bool) -> tune.RunConfig:
    storage, name = split(tune_dir)
    return tune.RunConfig(
        name=name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        # A list of its own: Tune appends its progress reporter to it.
        callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()],
        verbose=1 if verbose else 0,  # bnsweep's Progress shows the trials; --verbose, Tune's own output
    )


class _TermToInterrupt:
    """SIGTERM stops the sweep the way Ctrl-C does: Tune saves its state and returns."""

    def __enter__(self):
        self._old = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self._old)


def init_ray(address: str | None) -> None:
    """Join the cluster at `address` / $RAY_ADDRESS, else start a local Ray for this sweep.

    "local", not Ray's default of None: None would quietly join any Ray already
    running on this machine (found by process scan). Joining one is asked for by
    name: --address auto.
    """
    global _started_here
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if ray.is_initialized():
        return
    # The driver's data location travels with the trials: Ray workers inherit the
    # environment of the node's raylet, not of the driver.
    env_vars = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    try:
        ray.init(address=address, include_dashboard=False if address == "local" else None,
                 logging_level="WARNING", log_to_driver=True, runtime_env={"env_vars": env_vars})
        _started_here = True
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        cause = e.__cause__ or e
        hint = ("; the cluster uses token authentication: set RAY_AUTH_MODE=token and make its token "
                "available (~/.ray/auth_token or RAY_AUTH_TOKEN)") if "token" in str(cause).lower() else ""
        raise BnsweepError(f"cannot connect to the Ray cluster at {address}: "
                           f"{str(cause).splitlines()[0][:300]}{hint}") from None


_started_here = False  # whether init_ray started (or joined) Ray in this process


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined (not one a caller had started), so that
    its workers' last messages arrive while the driver's log is open."""
    global _started_here
    if _started_here:
        ray.shutdown()
        _started_here = False


def check_fits_local(resources: dict[str, float], what_to_do: str) -> None:
    """On the Ray this sweep started (no autoscaler), a trial asking for more than the
    machine has would wait forever; say so instead. A cluster may add nodes: not checked."""
    have = ray.cluster_resources()
    for key, name in (("cpu", "CPU"), ("gpu", "GPU")):
        if resources[key] > have.get(name, 0):
            raise BnsweepError(f"each trial asks for {resources[key]:g} {name} but this machine has "
                               f"{have.get(name, 0):g}; {what_to_do}")


def run_tuners(study: Study, spec: SweepSpec, sweep_dir: str, resume: bool, verbose: bool = False) -> None:
    """Fit (or restore and fit) each Tuner of the study that the ledger says has work left,
    in order: a grid's one; each Optuna arm's search, then its confirmation. Tune's
    ResultGrids are not needed: `run`'s summary reads the ledger. Then the Optuna studies
    in the sweep folder are rebuilt from the ledger (bnsweep/optuna_study.py)."""
    with _TermToInterrupt(), _SpaceWatch(sweep_dir):
        for label, arm, searched in _tuners(study):
            if resume and not _left_in(study, sweep_dir, label, retry_errored=True):
                continue
            path = tune_dir(sweep_dir, label)
            restore = resume and tune.Tuner.can_restore(path)
            if searched is None:
                space = _param_space(study, arm)
            else:
                space = _confirm_space(study, sweep_dir, label, searched, restore)
                if space is None:
                    print(f"bnsweep: nothing to confirm in arm {searched}: none of its trials gave a "
                          f"{study.metric}", flush=True)
                    continue
            trainable = _trainable(spec, sweep_dir, label)
            if restore:
                # Tune decides which trials it resumes (unfinished and errored); the RunConfig,
                # callbacks included, comes back from the experiment as it was saved.
                tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                           param_space=space)
            else:
                callbacks: list = [LedgerEnds(sweep_dir, label)]
                if not verbose:
                    shown = study.varied() if searched is None else sorted({*study.varied(), "seed"})
                    callbacks.append(progress.Progress(shown, study.fixed["epochs"]))
                tuner = tune.Tuner(trainable, param_space=space,
                                   tune_config=_tune_config(study, spec, confirm=searched is not None),
                                   run_config=_run_config(path, spec, callbacks, verbose))
            tuner.fit()
            if _left_in(study, sweep_dir, label):  # interrupted: the next Tuner waits for `bnsweep resume`
                break
    optuna_study.rebuild_or_warn(sweep_dir, study)


def _tuners(study: Study) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """(label, arm, the search it confirms or None) of every Tuner, in the order they run:
    each Optuna arm's search, then its confirmation (where CONFIRM_SEEDS > 0)."""
    out = []
    for label, arm in tuner_names(study):
        out.append((label, arm, None))
        if study.search == "optuna" and study.confirm_seeds:
            out.append((CONFIRM_PREFIX + label, arm, label))
    return out


def confirm_seeds(study: Study) -> list[int]:
    """The seeds each arm's best configuration is confirmed on: the first CONFIRM_SEEDS
    whole numbers the search did not train with (it trains every trial on SEEDS[0])."""
    return [s for s in range(study.confirm_seeds + len(study.seeds)) if s not in study.seeds][:study.confirm_seeds]


def _confirm_space(study: Study, sweep_dir: str, label: str, searched: str, restore: bool) -> dict[str, Any] | None:
    """The confirmation Tuner's param space: the arm's best configuration, from the ledger,
    as a grid over fresh seeds; None where the search gave none. Where the confirmation
    has started, the configuration its trials ran (the search cannot have changed it
    since, but the ledger says so without asking). A Tuner restored from Tune's saved state
    gets the space it was made with; a new one only the seeds not yet done (a driver
    killed before Tune first saved this Tuner)."""
    trials = ledger.read_trials(sweep_dir)
    begun = [t for t in trials if t.tuner == label]
    best = begun[0] if begun else optuna_study.best_trial(trials, searched, study.metric)
    if best is None:
        return None
    seeds = confirm_seeds(study)
    if not restore:
        done = {t.config["seed"] for t in begun if t.status and t.status != "errored"}
        seeds = [s for s in seeds if s not in done] or seeds
    return {**best.config, "seed": tune.grid_search(seeds)}


def n_unfinished(study: Study, sweep_dir: str) -> int:
    """Trials without an end in the ledger, counting those not started yet and those of
    Tuners not reached: what `bnsweep resume` would run (besides errored trials, which it
    retries)."""
    return sum(_left_in(study, sweep_dir, label) for label, _, _ in _tuners(study))


def _left_in(study: Study, sweep_dir: str, tuner: str, retry_errored: bool = False) -> int:
    """A Tuner's trials still to run, from the ledger: its share of the study's trials less
    those that ended (less those that ended other than errored, if retry_errored). A
    confirmation has CONFIRM_SEEDS trials, none where its search ended without a result."""
    trials = ledger.read_trials(sweep_dir)
    ends = [t.status for t in trials if t.tuner == tuner and t.status]
    done = sum(1 for s in ends if not (retry_errored and s == "errored"))
    if study.search == "grid":
        expected = study.n_trials()
    elif not tuner.startswith(CONFIRM_PREFIX):
        expected = study.num_samples
    else:
        searched = tuner.removeprefix(CONFIRM_PREFIX)
        nothing = not _left_in(study, sweep_dir, searched) and not any(t.tuner == tuner for t in trials) and \
            optuna_study.best_trial(trials, searched, study.metric) is None
        expected = 0 if nothing else study.confirm_seeds
    return max(0, expected - done)


def sweep_dir_for(storage: str, study: Study) -> str:
    # The time for people; the token so that two sweeps of one study started in
    # the same second (scripts, several users) never share a directory.
    return join(storage, f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")


def tune_dir(sweep_dir: str, label: str) -> str:
    """The folder of one Tuner's experiment (Tune's word; not an MLflow experiment):
    <sweep_dir>/<label>-<sweep>.

    The sweep's own (unique) name is part of it because Ray stages each driver's
    files in <Ray session>/artifacts/<start second>/<experiment name>: two sweeps
    joining one Ray in the same second under one name (say "grid") would share
    that folder and each upload the other's trials and saved state
    (experiment_state-<second>.json, the same file name) to its own storage.
    """
    # An arm's label holds the values of ARMS ("data_dir=/mnt/x" could be one): made one folder.
    return join(sweep_dir, folder_name(f"{label}-{split(sweep_dir)[1]}"))
