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

import dataclasses
import json
import logging
import math
import re
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from bnsweep import mlflow_ui
from bnsweep.asks import ASKS_TAG
from bnsweep.config import EPOCH_METRICS, REFERENCE, SWEEP_COUNT_METRICS, sweep_best_metric
from bnsweep.formats import count, number
from bnsweep.ledger import UNFINISHED
from bnsweep.mlflow_store import (  # noqa: F401 — TrackingError, resolve_tracking_uri: tracking's surface too
    UNSET_URI_HINT,
    TrackingError,
    check_experiment_active,
    check_reachable,
    check_run_active,
    refused_as_error,
    resolve_tracking_uri,
)
from bnsweep.storage import split
from bnsweep.trials import ARM_KEYS, RUN_INFO_KEYS, display_name, mark_diverged

# MLflow's INFO lines ("Creating initial MLflow database tables...", a "View run" link per
# run) are about its own bookkeeping; bnsweep prints the links that open the runs.
logging.getLogger("mlflow").setLevel(logging.WARNING)

ROLE_TAG = "bnsweep.role"
OUTCOME_TAG = "outcome"  # how the trial ended, in the ledger's words (ledger.ENDS), or ledger.UNFINISHED
FAILURE_TAG = "failure_reason"  # why a trial failed (its ledger end's reason)
TRIAL_TAG = "ray_trial_id"


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


def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the bnsweep checkout, and the stack's versions: read from
    the installed packages' metadata, since importing torch and optuna only to ask costs the
    driver ~2 CPU-seconds (py-spy, 2026-12-07) and it trains nothing."""
    from importlib.metadata import version

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
        "torch_version": _torch_version(), "ray_version": version("ray"),
        "mlflow_version": version("mlflow"), "optuna_version": version("optuna"),
    }




def _torch_version() -> str:
    """torch.__version__ without importing torch: the package's metadata says only the release
    ("2.14.1"); torch/version.py also names the build ("2.14.1+cu130", "2.14.1+cpu")."""
    from importlib.metadata import distribution

    torch = distribution("torch")
    try:
        text = Path(torch.locate_file("torch/version.py")).read_text()
    except OSError:
        return torch.version
    found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.M)
    return found.group(1) if found else torch.version


def experiment_id(client: MlflowClient, uri: str, name: str, elsewhere: str) -> str:
    """The experiment's id, created if need be, tagged as a model-training experiment. One the
    user deleted stays deleted: bnsweep stops with one line (restore it, or `elsewhere`)."""
    exp_id = check_experiment_active(client, uri, name, elsewhere)
    if exp_id is None:
        try:
            exp_id = client.create_experiment(name)
        except mlflow.exceptions.MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # Another sweep created it a moment ago (or the user deleted it meanwhile: said so).
            exp_id = check_experiment_active(client, uri, name, elsewhere)
    client.set_experiment_tag(exp_id, *mlflow_ui.EXPERIMENT_KIND)
    return exp_id


def check_can_start(uri: str, experiment: str, hint: str, elsewhere: str) -> None:
    """Before Ray starts: the store answers and takes this process's credentials, and the
    experiment, if it exists, is not one the user deleted."""
    check_reachable(uri, hint=hint)
    with refused_as_error(uri):
        check_experiment_active(MlflowClient(uri), uri, experiment, elsewhere)


def ui_links(record: SweepRecord) -> dict[str, str]:
    """Links that open the sweep in MLflow's UI (for a local store, where `mlflow ui` serves
    it by default), model training's pages in any browser (bnsweep/mlflow_ui.py says what
    MLflow decides). "runs": the sweep's trials in the runs table, grouped by arm, with the
    arm, the settings the study varies and best val_acc as columns (a view saved here as an
    experiment tag). "trials": MLflow's comparison of the sweep's parent run (its summary
    metrics) and every trial. Both seen in headless Chromium (tests/test_mlflow_ui.py)."""
    client = MlflowClient(record.uri)
    client.set_experiment_tag(record.experiment_id, *mlflow_ui.view_tag(record.parent_run_id, record.varied,
                                                                       ARM_KEYS))
    runs = [record.parent_run_id, *(r.info.run_id for r in _children(client, record))]
    return {"runs": mlflow_ui.runs_link(record.uri, record.experiment_id, record.parent_run_id),
            "trials": mlflow_ui.compare_link(record.uri, record.experiment_id, runs)}


def start_sweep(uri: str, experiment: str, study: str, search: str, sweep_dir: str, space_path: str,
                space_text: str, shared: Mapping[str, Any], varied: Sequence[str], elsewhere: str,
                asks: Mapping[str, Any] | None = None) -> SweepRecord:
    """Create the experiment and the sweep's parent run (its params: the config all trials
    share); return its record (`varied` names the trials' runs). `elsewhere`: what to do
    instead should the experiment be one the user deleted. `asks`: what the study asks of its
    report (bnsweep/asks.py), kept as a tag so that a report learns it from MLflow alone."""
    check_reachable(uri)
    client = MlflowClient(uri)
    with refused_as_error(uri):
        exp_id = experiment_id(client, uri, experiment, elsewhere)
        code = code_version()
        tags = {ROLE_TAG: "sweep", "study": study, "search": search, "sweep_dir": sweep_dir, **code,
                **({ASKS_TAG: json.dumps(dict(asks))} if asks else {})}
        run = client.create_run(exp_id, run_name=split(sweep_dir)[1], tags=tags)
        client.log_batch(run.info.run_id, params=[Param(k, number(v)) for k, v in shared.items()])
        client.log_text(run.info.run_id, space_text, f"search_space/{Path(space_path).name}")
    return SweepRecord(uri=uri, experiment=experiment, experiment_id=exp_id, parent_run_id=run.info.run_id,
                       study=study, code=code, varied=list(varied))


def find_sweep(record: SweepRecord | None, uri: str, elsewhere: str) -> SweepRecord | None:
    """The sweep's record read at `uri`, if its parent run is there. Its parent run or
    experiment deleted by the user stops bnsweep with one line (restore it, or `elsewhere`)."""
    if record is None:
        return None
    with refused_as_error(uri):
        found = check_run_active(MlflowClient(uri), uri, record.parent_run_id, record.experiment, elsewhere)
    return record.at(uri) if found else None


def check_sweep_recorded(record: SweepRecord, sweep_dir: str) -> None:
    """Before a resume: the store the sweep recorded into answers, takes this process's
    credentials, and still holds its parent run, neither it nor its experiment deleted."""
    resume_offline = shlex.join(["bnsweep", "resume", sweep_dir, "--no-tracking"])
    sync = shlex.join(["bnsweep", "sync", sweep_dir])
    check_reachable(record.uri, must_exist=True,
                    hint=f", or resume without MLflow (`{resume_offline}`) and replay it later with `{sync}`")
    elsewhere = (f"resume without MLflow (`{resume_offline}`) and record the sweep into another store "
                 f"later (`{sync} --tracking-uri URI`)")
    if find_sweep(record, record.uri, elsewhere) is None:
        raise TrackingError(f"{record.uri} has no record of this sweep (parent run "
                            f"{record.parent_run_id}); run `{sync} --tracking-uri URI` "
                            "to record it into a store first, then resume")


def reopen_sweep(record: SweepRecord) -> None:
    MlflowClient(record.uri).update_run(record.parent_run_id, status="RUNNING")


def end_sweep(record: SweepRecord, status: str) -> None:
    """Close the parent and any child still RUNNING (its trial is not running any more)."""
    client = MlflowClient(record.uri)
    for run in _children(client, record, "attributes.status = 'RUNNING'"):
        client.set_tag(run.info.run_id, OUTCOME_TAG, UNFINISHED)  # the ledger has no end for it: resume continues it
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
    metrics = [Metric(name, float(sum(r[k] for r in rows.values())), now, 0) for k, name in SWEEP_COUNT_METRICS.items()]
    metrics += [Metric(sweep_best_metric(arm), r["best"], now, 0) for arm, r in rows.items() if r["best"] == r["best"]]
    lines = ["| arm | trials | done | best val_acc | diverged | failed |", "|---|---|---|---|---|---|"]
    lines += [f"| {arm} | {r['trials']} | {r['done']} | {r['best']:.4f} | {r['diverged']} | {r['failed']} |"
              for arm, r in rows.items()]
    bests = ", ".join(f"`{sweep_best_metric(arm)}`" for arm in rows)
    counts = ", ".join(f"`{name}`" for name in SWEEP_COUNT_METRICS.values())
    note = (f"Sweep of study **{record.study}**: {count(sum(r['trials'] for r in rows.values()), 'trial')}, "
            "one child run each (expand this row to list them).\n\n" + "\n".join(lines)
            + f"\n\nIts metrics: {bests}: each arm's best val_acc; {counts}: its trials that ended so.")
    client.log_batch(record.parent_run_id, metrics=metrics, tags=[RunTag("mlflow.note.content", note)])


def _children(client: MlflowClient, record: SweepRecord, extra: str = "",
              view: int = ViewType.ACTIVE_ONLY) -> Iterable:
    filt = f"tags.`mlflow.parentRunId` = '{record.parent_run_id}'" + (f" and {extra}" if extra else "")
    token = None
    while True:
        page = client.search_runs([record.experiment_id], filt, run_view_type=view, max_results=500,
                                  page_token=token)
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


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def divergence_note(epochs: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """(the epoch it diverged at, a markdown description of a diverged trial's run) from its
    epochs' results in order, one of them diverged: which loss became NaN or inf, the last finite
    training loss and its epoch, and the best val_acc reached and its epoch."""
    last = next(r for r in epochs if r.get("diverged"))  # train() stops there: the last epoch
    epoch = int(last["epoch"])
    bad = {k: last[k] for k in ("train_loss", "val_loss") if k in last and not _finite(last[k])}
    words = {"train_loss": "training loss", "val_loss": "validation loss"}
    how = " and ".join(f"its {words[k]} became {'NaN' if v != v else number(v)}" for k, v in bad.items()) \
        or "its loss became NaN or inf"
    if list(bad) == ["val_loss"]:  # train() evaluates with BN's running statistics, which overflowed
        how += f" (its training loss was still finite, {last['train_loss']:.4f})"
    finite = [r for r in epochs if _finite(r.get("train_loss"))]
    loss = (f"{finite[-1]['train_loss']:.4f}, at epoch {int(finite[-1]['epoch'])}" if finite
            else "none: it diverged in its first epoch")
    scored = [r for r in epochs if _finite(r.get("val_acc"))]
    best = max(scored, key=lambda r: r["val_acc"]) if scored else None
    acc = f"{best['val_acc']:.4f}, at epoch {int(best['epoch'])}" if best else "none (no finite val_acc)"
    # The facts first: the run page shows a description's first lines until "Show more".
    note = (f"**Diverged at epoch {epoch}**: {how}.\n\n"
            f"- last finite training loss: {loss}\n- best val_acc reached: {acc}\n\n"
            "MLflow lists only finite metric values, so its NaN/inf losses are not among its metrics; "
            "`diverged_epoch` is. A diverged trial is a result: its accuracy stays in the study "
            "(bnsweep report draws it hatched).")
    return epoch, note


class TrialRuns:
    """The child runs of one sweep: find-or-create by trial id, log epochs after the last logged step."""

    def __init__(self, record: SweepRecord):
        self.record = record
        self.client = MlflowClient(record.uri)
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.deleted: dict[str, str] = {}  # trial id -> its run, which the user deleted

    def find_or_create(self, trial_id: str, cfg: Mapping[str, Any], tags: Mapping[str, str],
                       start_ms: int | None = None) -> str | None:
        """The trial's run, found by its trial id whatever its lifecycle, or created (started
        at `start_ms`, else now). None: the user deleted it; it stays deleted and unrecorded
        (`deleted` names it) until restored, and no second run stands in for it."""
        if trial_id in self.run_ids:
            return self.run_ids[trial_id]
        found = sorted(_children(self.client, self.record, f"tags.{TRIAL_TAG} = '{trial_id}'", ViewType.ALL),
                       key=lambda run: run.info.lifecycle_stage == "deleted")  # an active one first
        if found and found[0].info.lifecycle_stage == "deleted":
            self.deleted[trial_id] = found[0].info.run_id
            return None
        self.deleted.pop(trial_id, None)
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
            params = [Param(k, number(cfg[k])) for k in REFERENCE if k in cfg]
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
                for k in RUN_INFO_KEYS if k in results[-1]]
        tags.append(RunTag("diverged", str(bool(results[-1].get("diverged"))).lower()))
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        for i in range(0, len(metrics), 900):  # MLflow accepts at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=metrics[i:i + 900], tags=tags if i == 0 else [])
        if not metrics:
            self.client.log_batch(run_id, tags=tags)
        self.last_step[trial_id] = max(self.last_step.get(trial_id, 0), int(results[-1]["epoch"]))
        if results[-1].get("diverged"):
            self._mark_diverged(trial_id, run_id, results)

    def _mark_diverged(self, trial_id: str, run_id: str, results: list[Mapping[str, Any]]) -> None:
        """A diverged trial ends FINISHED (its accuracy is a result), so MLflow shows it with a
        green tick: its name says it diverged (the runs table's default columns show no tag), and
        its page says when and how (a description, and `diverged_epoch` among its metrics, which
        list only finite values: its NaN losses are not there)."""
        epochs = sorted({int(r["epoch"]): r for r in reversed(results)}.items())  # each epoch as first reported
        epoch, note = divergence_note([r for _, r in epochs])
        self.client.log_batch(run_id, metrics=[Metric("diverged_epoch", float(epoch), int(time.time() * 1000), 0)],
                              tags=[RunTag("mlflow.note.content", note)])
        name = self.names.get(trial_id, "")
        if mark_diverged(name) != name:
            self.client.update_run(run_id, name=mark_diverged(name))
            self.names[trial_id] = mark_diverged(name)

    def finish(self, trial_id: str, last: Mapping[str, Any] | None, status: str, outcome: str,
               reason: str | None = None, end_ms: int | None = None) -> None:
        """End the trial's run (at `end_ms`, else now) with MLflow's `status` and, as the tag
        `outcome`, the ledger's word for how it ended (ledger.ENDS, or "unfinished");
        `reason`: why it failed beyond retrying, as a tag."""
        run_id = self.run_ids[trial_id]
        epochs = float(last.get("epoch", 0)) if last else None
        run = self.client.get_run(run_id)
        if run.info.status == status and run.data.metrics.get("epochs_completed") == epochs and \
                run.data.tags.get(OUTCOME_TAG) == outcome:
            return  # recorded so already (a repeated sync): its end time and history stay as they are
        if last:
            self.client.log_batch(run_id, metrics=[Metric("epochs_completed", epochs, int(time.time() * 1000), 0)])
        self.client.set_tag(run_id, OUTCOME_TAG, outcome)
        if reason:
            self.client.set_tag(run_id, FAILURE_TAG, reason[:8000])  # MLflow's longest tag value
        self.client.set_terminated(run_id, status=status, end_time=end_ms)
