"""MLflow's side of a sweep: where runs go, what they hold, each epoch once.

Who writes: the sweep driver, from bnsweep's ledger on storage (bnsweep/ledger.py,
the durable record; bnsweep/recorder.py reads it), not the trials. MLflow is the
view for people. So a trial never waits on, or fails because of, MLflow; on a
cluster only the head needs to reach the tracking server; a retried or resumed
trial's repeated epochs are recorded once (by epoch number, in the ledger); and
`bnsweep sync` rebuilds whatever MLflow missed from the same ledger.

Layout: one experiment per study (bnsweep-<study>), one parent run per sweep,
one child run per Tune trial (tag ray_trial_id), metrics with step = epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# A down or slow server must not stall Tune's event loop for minutes: MLflow's
# defaults are 120 s per request and 7 retries with backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import logging  # noqa: E402

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

from bnsweep.config import EPOCH_METRICS, EXECUTION_FACTS, REFERENCE  # noqa: E402
from bnsweep.errors import BnsweepError  # noqa: E402
from bnsweep.storage import split  # noqa: E402
from bnsweep.trials import display_name, mark_diverged  # noqa: E402

# MLflow's INFO lines ("Creating initial MLflow database tables...", a "View run" link per
# run) are about its own bookkeeping; bnsweep prints the links that open the runs.
logging.getLogger("mlflow").setLevel(logging.WARNING)

ROLE_TAG = "bnsweep.role"
FAILURE_TAG = "failure_reason"  # why a trial failed (its ledger end's reason)
TRIAL_TAG = "ray_trial_id"
# Keys the trainable adds to every epoch's record, for the run's tags.
INFO_KEYS = ("dataset_verified", "dataset_source", "dataset_fingerprint", "device_name", *EXECUTION_FACTS)


class TrackingError(BnsweepError):
    """MLflow cannot be used as asked; the message says what to do."""


@dataclasses.dataclass
class SweepRecord:
    """Where and how a sweep is recorded in MLflow; sweep.json keeps it (as "tracking")."""

    uri: str  # the tracking URI
    experiment: str  # the experiment's name
    experiment_id: str
    parent_run_id: str  # the sweep's run; a child run per trial hangs under it
    study: str  # the study file's stem
    code: dict[str, str]  # git commit and library versions, tags of every run
    varied: list[str]  # the keys the study varies, which name the children

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepRecord:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})

    def at(self, uri: str) -> SweepRecord:
        """The same record, read from another address of its store."""
        return dataclasses.replace(self, uri=uri)


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


# MLflow 3's UI opens an experiment on its GenAI pages (traces, empty here) unless the
# experiment is marked as model training; the UI reads this tag (MLflow 3.17's
# ExperimentKind.CUSTOM_MODEL_DEVELOPMENT). Set on every experiment bnsweep records into.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# Where `mlflow ui` serves a local store (its default host and port).
LOCAL_UI = "http://127.0.0.1:5000"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it (or restoring it from MLflow's trash) if need be,
    marked as a model-training experiment."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        exp_id = exp.experiment_id
    else:
        try:
            exp_id = client.create_experiment(name)
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp_id = client.get_experiment_by_name(name).experiment_id  # another sweep created it a moment ago
    client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    return exp_id


def ui_links(record: SweepRecord) -> dict[str, str]:
    """Links that open the sweep in MLflow's UI (for a local store, where `mlflow ui`
    serves it by default). "runs": the experiment's runs table, in its model-training
    view whatever the browser chose last; MLflow 3.17 shows there one row per sweep, its
    trials folded under it, and ignores a search filter given in the link. "trials":
    MLflow's comparison of the sweep's parent run (its summary metrics) and every trial,
    which lists them all (measured in headless Chromium, tests/test_mlflow_ui.py)."""
    uri = record.uri
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    exp = record.experiment_id
    runs = [record.parent_run_id, *(r.info.run_id for r in _children(MlflowClient(uri), record))]
    query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps([exp])},
                                   quote_via=urllib.parse.quote)
    return {"runs": f"{base}/#/experiments/{exp}?workflowType=machine_learning",
            "trials": f"{base}/#/compare-runs?{query}"}


def start_sweep(uri: str, experiment: str, study: str, search: str, sweep_dir: str, space_path: str,
                space_text: str, shared: Mapping[str, Any], varied: Sequence[str]) -> SweepRecord:
    """Create the experiment and the sweep's parent run (its params: the config all trials
    share); return its record (`varied` names the trials' runs)."""
    check_reachable(uri)
    client = MlflowClient(uri)
    exp_id = experiment_id(client, experiment)
    code = code_version()
    tags = {ROLE_TAG: "sweep", "study": study, "search": search, "sweep_dir": sweep_dir, **code}
    run = client.create_run(exp_id, run_name=split(sweep_dir)[1], tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in shared.items()])
    client.log_text(run.info.run_id, space_text, f"search_space/{Path(space_path).name}")
    return SweepRecord(uri=uri, experiment=experiment, experiment_id=exp_id, parent_run_id=run.info.run_id,
                       study=study, code=code, varied=list(varied))


def find_sweep(record: SweepRecord | None, uri: str) -> SweepRecord | None:
    """The sweep's record read at `uri`, if its parent run is there."""
    if record is None:
        return None
    try:
        MlflowClient(uri).get_run(record.parent_run_id)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise TrackingError(f"MLflow at {uri} failed to look up the sweep's parent run: "
                            f"{(str(e).strip().splitlines() or [''])[0][:200]}") from None
    return record.at(uri)


def check_sweep_recorded(record: SweepRecord, sweep_dir: str) -> None:
    """Before a resume: the store the sweep recorded into still holds its parent run."""
    resume_offline = shlex.join(["bnsweep", "resume", sweep_dir, "--no-tracking"])
    sync = shlex.join(["bnsweep", "sync", sweep_dir])
    check_reachable(record.uri, must_exist=True,
                    hint=f", or resume without MLflow (`{resume_offline}`) and replay it later with `{sync}`")
    if find_sweep(record, record.uri) is None:
        raise TrackingError(f"{record.uri} has no record of this sweep (parent run "
                            f"{record.parent_run_id}); run `{sync} --tracking-uri URI` "
                            "to record it into a store first, then resume")


def reopen_sweep(record: SweepRecord) -> None:
    MlflowClient(record.uri).update_run(record.parent_run_id, status="RUNNING")


def end_sweep(record: SweepRecord, status: str) -> None:
    """Close the parent and any child still RUNNING (its trial is not running any more)."""
    client = MlflowClient(record.uri)
    for run in _children(client, record, "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status="KILLED")
    summarize(client, record)
    client.set_terminated(record.parent_run_id, status=status)


def close_parent(record: SweepRecord) -> None:
    """After a sync: the parent is FINISHED when every child has ended (FINISHED, or FAILED
    after its retries, as `run` ends a sweep with failed trials), else KILLED."""
    client = MlflowClient(record.uri)
    statuses = {run.info.status for run in _children(client, record)}
    summarize(client, record)
    ended = statuses <= {"FINISHED", "FAILED"}
    client.set_terminated(record.parent_run_id, status="FINISHED" if ended else "KILLED")


def summarize(client: MlflowClient, record: SweepRecord) -> None:
    """The sweep's summary on its parent run, which is the row MLflow's runs table shows
    first: best val_acc per arm and the trials done / diverged / failed as metrics (so the
    chart view has something to draw), and the same as a table in its description."""
    rows: dict[str, dict[str, float]] = {}
    for run in _children(client, record):
        arm = run.data.tags.get("arm", "?")
        row = rows.setdefault(arm, {"trials": 0, "done": 0, "diverged": 0, "failed": 0, "best": float("nan")})
        row["trials"] += 1
        row["failed"] += run.info.status == "FAILED"
        if run.info.status == "FINISHED":
            row["done"] += 1
            row["diverged"] += run.data.tags.get("diverged") == "true"
        best = run.data.metrics.get("best_val_acc")
        if run.info.status != "FAILED" and best is not None and not best <= row["best"]:
            row["best"] = best
    now = int(time.time() * 1000)
    metrics = [Metric(f"trials/{k}", float(sum(r[k] for r in rows.values())), now, 0)
               for k in ("done", "diverged", "failed")]
    # MLflow metric names take letters, digits and _-./: and spaces, so bn+dropout is bn_dropout.
    metrics += [Metric(f"best_val_acc/{arm.replace('+', '_')}", r["best"], now, 0)
                for arm, r in rows.items() if r["best"] == r["best"]]
    lines = ["| arm | trials | done | best val_acc | diverged | failed |", "|---|---|---|---|---|---|"]
    lines += [f"| {arm} | {r['trials']} | {r['done']} | {r['best']:.4f} | {r['diverged']} | {r['failed']} |"
              for arm, r in rows.items()]
    note = (f"Sweep of study **{record.study}**: {sum(r['trials'] for r in rows.values())} trials, "
            "one child run each (expand this row to list them).\n\n" + "\n".join(lines))
    client.log_batch(record.parent_run_id, metrics=metrics, tags=[RunTag("mlflow.note.content", note)])


def _children(client: MlflowClient, record: SweepRecord, extra: str = "") -> Iterable:
    filt = f"tags.`mlflow.parentRunId` = '{record.parent_run_id}'" + (f" and {extra}" if extra else "")
    token = None
    while True:
        page = client.search_runs([record.experiment_id], filt, max_results=500, page_token=token)
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

    def __init__(self, record: SweepRecord):
        self.record = record
        self.client = MlflowClient(record.uri)
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.names: dict[str, str] = {}

    def find_or_create(self, trial_id: str, cfg: Mapping[str, Any], tags: Mapping[str, str],
               start_ms: int | None = None) -> str:
        """The trial's run, found by its trial id or created (started at `start_ms`, else now)."""
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        found = list(_children(self.client, self.record, f"tags.{TRIAL_TAG} = '{trial_id}'"))
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "val_acc")
            self.last_step[trial_id] = max((m.step for m in history), default=0)
            self.names[trial_id] = found[0].info.run_name
        else:
            all_tags = {"mlflow.parentRunId": self.record.parent_run_id, ROLE_TAG: "trial",
                        TRIAL_TAG: trial_id, "study": self.record.study, **self.record.code, **tags}
            name = display_name(cfg, self.record.varied)
            run = self.client.create_run(self.record.experiment_id, run_name=name, tags=all_tags,
                                         start_time=start_ms)
            run_id = run.info.run_id
            params = [Param(k, str(cfg[k])) for k in REFERENCE if k in cfg]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i:i + 100])
            self.last_step[trial_id] = 0
            self.names[trial_id] = name
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
        name = self.names.get(trial_id, "")
        if results[-1].get("diverged") and mark_diverged(name) != name:
            # A diverged trial ends FINISHED (its accuracy is a result), and the runs table's
            # default columns show no tag: the name is where it shows.
            self.client.update_run(run_id, name=mark_diverged(name))
            self.names[trial_id] = mark_diverged(name)

    def finish(self, trial_id: str, last: Mapping[str, Any] | None, status: str, reason: str | None = None,
               end_ms: int | None = None) -> None:
        """End the trial's run (at `end_ms`, else now); `reason`: why it failed beyond retrying, as a tag."""
        run_id = self.run_ids[trial_id]
        epochs = float(last.get("epoch", 0)) if last else None
        run = self.client.get_run(run_id)
        if run.info.status == status and run.data.metrics.get("epochs_completed") == epochs:
            return  # recorded so already (a repeated sync): its end time and history stay as they are
        if last:
            self.client.log_batch(run_id, metrics=[Metric("epochs_completed", epochs, int(time.time() * 1000), 0)])
        if reason:
            self.client.set_tag(run_id, FAILURE_TAG, reason[:8000])  # MLflow's longest tag value
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
