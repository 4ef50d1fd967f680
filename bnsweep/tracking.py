"""Everything MLflow: where runs go, what they hold, exactly once, and replay.

Who writes: the sweep driver, from Tune's results (a Tune callback), not the
trials. Tune's per-trial results on storage are the durable record; MLflow is
the view for people. So a trial never waits on, or fails because of, MLflow; on
a cluster only the head needs to reach the tracking server; a retried or
resumed trial's repeated epochs are skipped by step; and `bnsweep sync`
rebuilds whatever MLflow missed from the same results on storage.

Layout: one experiment per study (bnsweep-<study>), one parent run per sweep,
one child run per Tune trial (tag ray_trial_id), metrics with step = epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

# A down or slow server must not stall Tune's event loop for minutes: MLflow's
# defaults are 120 s per request and 7 retries with backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from bnsweep.config import EPOCH_METRICS, REFERENCE  # noqa: E402
from bnsweep.errors import BnsweepError  # noqa: E402
from bnsweep.storage import exists, failure_of, read_failures, read_text, saved_trials  # noqa: E402
from bnsweep.trials import trial_config, trial_dirname, trial_name, trial_tags  # noqa: E402

ROLE_TAG = "bnsweep.role"
FAILURE_TAG = "failure_reason"  # why a trial failed beyond retrying (storage.write_failure)
TRIAL_TAG = "ray_trial_id"
# Result keys the trainable adds to every result once, for the run's tags.
INFO_KEYS = ("dataset_verified", "dataset_source", "dataset_fingerprint", "device_name")
# After a failed call, wait this long before talking to the server again, so an
# outage costs one timeout per interval, not one per result.
RETRY_AFTER_S = 10.0


class TrackingError(BnsweepError):
    """MLflow cannot be used as asked; the message says what to do."""


def resolve_tracking_uri(flag: str | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's default store in the working directory."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Absolute, so that every process (Ray workers change directory) writes one file.
        uri = "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri


UNSET_URI_HINT = ", or unset MLFLOW_TRACKING_URI to use ./mlflow.db"


def check_reachable(uri: str, must_exist: bool = False, hint: str = UNSET_URI_HINT) -> None:
    """Fail with one line, before anything is started, if `uri` is not a store MLflow can use.

    must_exist: for readers (report, analysis), a sqlite file that is not there
    is a wrong path, not a store to create. `hint` ends the message of an
    unreachable server: what the caller can do instead.
    """
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
        except OSError as e:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({e}). Start it (e.g. `mlflow server --host 127.0.0.1 "
                f"--port 5000`){hint}") from None
        return
    if must_exist and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise TrackingError(f"no MLflow store at {uri} (no such file); pass --tracking-uri or set "
                            "MLFLOW_TRACKING_URI to the store your sweeps recorded into")
    try:
        with _store_creation_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 — an unknown scheme, a missing driver, a store that will not open
        first = (str(e).strip().splitlines() or [""])[0][:200]
        advice = "" if "://" in uri and uri.split("://")[0] in DATABASE_SCHEMES else \
            ". Use an http(s):// server or a database URI such as sqlite:///mlflow.db"
        raise TrackingError(f"cannot use MLflow tracking URI {uri}: {type(e).__name__}: {first}{advice}") from None


DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


@contextlib.contextmanager
def _store_creation_lock(uri: str):
    """For a sqlite store: one process at a time through MLflow's first use of it.

    A new store's first use creates its tables, and two sweeps started together
    in a folder without ./mlflow.db would both create them: one then fails with
    "table already exists". Later uses find the tables and change nothing. The
    lock is flock(2) on the database's folder, so it leaves no file behind and
    is released when the process dies.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    folder = Path(uri[len("sqlite:///"):]).parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the bnsweep checkout, and the stack's versions."""
    import optuna
    import ray
    import torch

    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    return {
        "git_commit": commit or "unknown",
        "git_dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower() if commit else "unknown",
        "torch_version": torch.__version__, "ray_version": ray.__version__,
        "mlflow_version": mlflow.__version__, "optuna_version": optuna.__version__,
    }


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it (or restoring it from MLflow's trash) if need be."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id  # another sweep created it a moment ago


def start_sweep(uri: str, experiment: str, study: str, search: str, sweep_dir: str,
                space_path: str, space_text: str, shared: Mapping[str, Any]) -> dict[str, Any]:
    """Create the experiment and the sweep's parent run (its params: the config all trials
    share); return the tracking settings for trials."""
    check_reachable(uri)
    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment)
    code = code_version()
    tags = {ROLE_TAG: "sweep", "study": study, "search": search, "sweep_dir": sweep_dir, **code}
    run = client.create_run(exp_id, run_name=Path(sweep_dir.rstrip("/")).name, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in shared.items()])
    client.log_text(run.info.run_id, space_text, f"search_space/{Path(space_path).name}")
    return {"uri": uri, "experiment_id": exp_id, "experiment": experiment, "parent_run_id": run.info.run_id,
            "study": study, "code": code}


def find_sweep(tracking: Mapping[str, Any] | None, uri: str) -> dict[str, Any] | None:
    """The recorded tracking settings pointed at `uri`, if the sweep's parent run is there."""
    if not tracking:
        return None
    try:
        MlflowClient(uri).get_run(tracking["parent_run_id"])
    except mlflow.exceptions.MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise TrackingError(f"MLflow at {uri} failed to look up the sweep's parent run: "
                            f"{(str(e).strip().splitlines() or [''])[0][:200]}") from None
    return {**tracking, "uri": uri}


def check_sweep_recorded(tracking: Mapping[str, Any], sweep_dir: str) -> None:
    """Before a resume: the store the sweep recorded into still holds its parent run."""
    resume_offline = shlex.join(["bnsweep", "resume", sweep_dir, "--no-tracking"])
    sync = shlex.join(["bnsweep", "sync", sweep_dir])
    check_reachable(tracking["uri"], must_exist=True,
                    hint=f", or resume without MLflow (`{resume_offline}`) and replay it later with `{sync}`")
    if find_sweep(tracking, tracking["uri"]) is None:
        raise TrackingError(f"{tracking['uri']} has no record of this sweep (parent run "
                            f"{tracking['parent_run_id']}); run `{sync} --tracking-uri URI` "
                            "to record it into a store first, then resume")


def reopen_sweep(tracking: Mapping[str, Any]) -> None:
    MlflowClient(tracking["uri"]).update_run(tracking["parent_run_id"], status="RUNNING")


def end_sweep(tracking: Mapping[str, Any], status: str) -> None:
    """Close the parent and any child still RUNNING (its trial is not running any more)."""
    client = MlflowClient(tracking["uri"])
    for run in _children(client, tracking, "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status="KILLED")
    client.set_terminated(tracking["parent_run_id"], status=status)


def close_parent(tracking: Mapping[str, Any]) -> None:
    """After a sync: the parent is FINISHED when every child has ended (FINISHED, or FAILED
    after its retries, as `run` ends a sweep with failed trials), else KILLED."""
    client = MlflowClient(tracking["uri"])
    statuses = {run.info.status for run in _children(client, tracking)}
    client.set_terminated(tracking["parent_run_id"], status="FINISHED" if statuses <= {"FINISHED", "FAILED"} else "KILLED")


def _children(client: MlflowClient, tracking: Mapping[str, Any], extra: str = "") -> Iterable:
    filt = f"tags.`mlflow.parentRunId` = '{tracking['parent_run_id']}'" + (f" and {extra}" if extra else "")
    token = None
    while True:
        page = client.search_runs([tracking["experiment_id"]], filt, max_results=500, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _metric_batch(results: Iterable[Mapping[str, Any]], after_step: int) -> list[Metric]:
    """Metrics of the epochs after `after_step`, each epoch once, as first reported."""
    out, seen = [], set()
    for r in results:
        step = int(r["epoch"])
        if step <= after_step or step in seen:
            continue
        seen.add(step)
        ts = int(r.get("timestamp", time.time()) * 1000)
        for key in EPOCH_METRICS:
            if key in r and key != "epoch" and isinstance(r[key], (int, float)):
                out.append(Metric(key, float(r[key]), ts, step))
    return out


class TrialRuns:
    """The child runs of one sweep: find-or-create by trial id, log epochs after the last logged step."""

    def __init__(self, tracking: Mapping[str, Any]):
        self.tracking = dict(tracking)
        self.client = MlflowClient(tracking["uri"])
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}

    def run_id(self, trial_id: str, cfg: Mapping[str, Any], name: str, tags: Mapping[str, str]) -> str:
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        found = list(_children(self.client, self.tracking, f"tags.{TRIAL_TAG} = '{trial_id}'"))
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "val_acc")
            self.last_step[trial_id] = max((m.step for m in history), default=0)
        else:
            all_tags = {"mlflow.parentRunId": self.tracking["parent_run_id"], ROLE_TAG: "trial",
                        TRIAL_TAG: trial_id, "study": self.tracking["study"], **self.tracking["code"], **tags}
            run = self.client.create_run(self.tracking["experiment_id"], run_name=name, tags=all_tags)
            run_id = run.info.run_id
            params = [Param(k, str(cfg[k])) for k in REFERENCE if k in cfg]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
            self.last_step[trial_id] = 0
        self.run_ids[trial_id] = run_id
        return run_id

    def log_results(self, trial_id: str, results: list[Mapping[str, Any]]) -> None:
        run_id = self.run_ids[trial_id]
        metrics = _metric_batch(results, self.last_step.get(trial_id, 0))
        tags = [RunTag(k, str(results[-1][k]).lower() if isinstance(results[-1][k], bool) else str(results[-1][k]))
                for k in INFO_KEYS if k in results[-1]]
        tags.append(RunTag("diverged", str(bool(results[-1].get("diverged"))).lower()))
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        for i in range(0, len(metrics), 900):  # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=metrics[i:i + 900], tags=tags if i == 0 else [])
        if not metrics:
            self.client.log_batch(run_id, tags=tags)
        self.last_step[trial_id] = max(self.last_step.get(trial_id, 0), int(results[-1]["epoch"]))

    def finish(self, trial_id: str, last: Mapping[str, Any] | None, status: str, reason: str | None = None) -> None:
        """End the trial's run; `reason`: why it failed beyond retrying, kept as a tag."""
        run_id = self.run_ids[trial_id]
        epochs = float(last.get("epoch", 0)) if last else None
        run = self.client.get_run(run_id)
        if run.info.status == status and run.data.metrics.get("epochs_completed") == epochs:
            return  # recorded so already (a repeated sync): its end time and history stay as they are
        if last:
            self.client.log_batch(run_id, metrics=[Metric("epochs_completed", epochs, int(time.time() * 1000), 0)])
        if reason:
            self.client.set_tag(run_id, FAILURE_TAG, reason[:8000])  # MLflow's longest tag value
        self.client.set_terminated(run_id, status=status)


try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover - ray is a dependency; tracking stays importable without it
    _TuneCallback = object


class TuneCallback(_TuneCallback):
    """Logs Tune's results to MLflow from the driver; never raises into Tune.

    Results that could not be sent (server down or slow) stay pending and go
    with the next attempt; at the end, what is still pending is reported with
    the `bnsweep sync` command that replays it.

    Where it logs is not pickled with it. Tune pickles its callbacks into the
    experiment and `Tuner.restore` unpickles them (it takes no new RunConfig),
    but since `run` the sweep may have been pointed at another store by `sync`,
    or recorded by `sync` after running without tracking, and `resume
    --no-tracking` turns tracking off. So the callback keeps its sweep
    directory, and the driver names the settings of now with `use()` before
    each fit; None: tracking off.
    """

    _settings: dict[str, dict[str, Any] | None] = {}  # sweep directory -> settings, in this driver process

    @classmethod
    def use(cls, sweep_dir: str, tracking: Mapping[str, Any] | None) -> None:
        cls._settings[sweep_dir] = dict(tracking) if tracking else None

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir
        self._pickled: dict[str, Any] | None = None
        self._reset()

    @property
    def tracking(self) -> dict[str, Any] | None:
        if self.sweep_dir in self._settings:
            return self._settings[self.sweep_dir]
        if self.sweep_dir is not None and len(self._settings) == 1:
            # The one sweep this driver runs, its folder reached by another path (moved,
            # a symlink, another mount): the settings are still its.
            return next(iter(self._settings.values()))
        return self._pickled

    def _reset(self) -> None:
        self.runs: TrialRuns | None = None
        self.pending: dict[str, list[dict]] = {}
        self.final: dict[str, tuple[str, str | None]] = {}  # trial id -> (status, failure reason)
        self.retry_at = 0.0
        self.warned = False

    def __getstate__(self):
        return {"sweep_dir": self.sweep_dir}

    def __setstate__(self, state):
        self.sweep_dir = state.get("sweep_dir")
        self._pickled = state.get("tracking")  # pickled by bnsweep before `use()` existed
        self._reset()

    def _attempt(self, trial) -> None:
        if self.tracking is None or time.monotonic() < self.retry_at:
            return
        try:
            if self.runs is None:
                self.runs = TrialRuns(self.tracking)
            tid = trial.trial_id
            cfg = trial_config(trial.config)
            self.runs.run_id(tid, cfg, trial_name(cfg), trial_tags(cfg))
            if self.pending.get(tid):
                self.runs.log_results(tid, self.pending[tid])
                self.pending[tid] = []
            if tid in self.final:
                status, reason = self.final[tid]
                self.runs.finish(tid, trial.last_result, status, reason)
                del self.final[tid]
        except Exception as e:  # noqa: BLE001 — MLflow trouble must never stop training
            self.retry_at = time.monotonic() + RETRY_AFTER_S
            self.runs = None
            if not self.warned:
                print(f"bnsweep: MLflow at {self.tracking['uri']} failed ({type(e).__name__}: {str(e)[:200]}); "
                      "training goes on, results are kept and sent when it is back", flush=True)
                self.warned = True

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or self.tracking is None:
            return
        self.pending.setdefault(trial.trial_id, []).append(dict(result))
        self._attempt(trial)

    def _finish(self, trial, status: str, reason: str | None = None) -> None:
        if self.tracking is None:
            return
        self.final[trial.trial_id] = (status, reason)
        self._attempt(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # A trial that failed beyond retrying returns normally (sweep.run_trial): its reason is on storage.
        try:
            reason = failure_of(self.sweep_dir, trial_dirname(trial.config, trial.trial_id))
        except Exception:  # noqa: BLE001 — storage trouble must not stop the sweep; sync reads it again
            reason = None
        self._finish(trial, "FAILED" if reason else "FINISHED", reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        self.retry_at = 0.0
        for trial in trials:
            if self.pending.get(trial.trial_id) or trial.trial_id in self.final:
                self._attempt(trial)
        if self.missing:
            print(f"bnsweep: MLflow is missing {self.missing} results of this sweep; they are safe on storage. "
                  f"When the server is back, run `{shlex.join(['bnsweep', 'sync', self.sweep_dir or 'SWEEP_DIR'])}`.", flush=True)

    @property
    def missing(self) -> int:
        return sum(len(v) for v in self.pending.values()) + len(self.final)


# ----------------------------------------------------------------- sync ----

TUNE_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}


def sync_experiment(tracking: Mapping[str, Any], experiment: str) -> int:
    """Replay one Tune experiment's trials into MLflow; return the number of epochs added.

    Reads Tune's saved state and each trial's result.json straight from storage
    (a path or a URI): no Ray needed, so it runs anywhere the storage is readable.
    """
    runs = TrialRuns(tracking)
    added = 0
    failures = read_failures(experiment.rstrip("/").rsplit("/", 1)[0])  # the sweep's, beside its experiments
    for trial in saved_trials(experiment) or []:
        logdir = trial["relative_logdir"]  # None until Tune gave the trial a folder
        results = _read_results(f"{experiment.rstrip('/')}/{logdir}") if logdir else []
        reason = failures.get(trial_dirname(trial["config"], trial["trial_id"]))
        if not results and trial["status"] != "ERROR" and not reason:
            continue  # nothing reported and not failed: no run, as the live callback would not make one
        cfg = trial_config(trial["config"])
        tid = trial["trial_id"]
        runs.run_id(tid, cfg, trial_name(cfg), trial_tags(cfg))
        new = sum(1 for r in results if int(r["epoch"]) > runs.last_step.get(tid, 0))
        if new:  # else the run would be reopened only to be closed again
            runs.log_results(tid, results)
            added += new
        status = "FAILED" if reason else TUNE_STATUS.get(trial["status"], "KILLED")
        runs.finish(tid, results[-1] if results else None, status, reason)
    return added


def _read_results(trial_dir: str | Path) -> list[dict[str, Any]]:
    """Tune's result.json, one JSON object per reported epoch.

    An epoch reported again (re-run after an interruption, from the checkpoint
    before it) is read as first reported: that is the value the live callback
    logged, and the only one bnsweep logs per step (MLflow would keep both).
    """
    path = f"{str(trial_dir).rstrip('/')}/result.json"
    by_epoch: dict[int, dict] = {}
    if exists(path):
        for line in read_text(path).splitlines():
            if line.strip():
                r = json.loads(line)
                if "epoch" in r:
                    by_epoch.setdefault(int(r["epoch"]), r)
    return [by_epoch[e] for e in sorted(by_epoch)]
