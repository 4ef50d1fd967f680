"""MLflow's record of a sweep, made from the ledger (bnsweep/ledger.py): live while it
runs, and replayed by `bnsweep sync`, by one function (record_ledger); and the two
trackers `run` and `resume` drive, MLflow's and the null one of --no-tracking.

Live: a thread of the driver brings MLflow up to the ledger every POLL_S seconds.
A trial's run is created when its ledger record appears (started at the trial's start),
gets each epoch once, and ends with the trial. A server that is down or slow costs one
timeout per RETRY_AFTER_S; the trials never wait on MLflow, and what it missed is
on storage for `bnsweep sync`. Replay: the same function over the whole ledger, each
epoch once however often it runs.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bnsweep import ledger, tracking
from bnsweep.mlflow_store import refused_as_error, restore_run_command
from bnsweep.progress import echo
from bnsweep.tracking import SweepRecord, TrialRuns
from bnsweep.trials import trial_tags

if TYPE_CHECKING:
    from bnsweep.space import Study
    from bnsweep.storage import SweepSpec

# After a failed call, wait this long before talking to the server again, so an
# outage costs one timeout per interval, not one per result.
RETRY_AFTER_S = 10.0
# How often the live record reads the ledger: a local folder is cheap to list; an
# object store is listed once per trial per poll, so less often.
POLL_S = {"local": 2.0, "remote": 10.0}
# A ledger end as an MLflow run status: a diverged or early-stopped trial is a result
# (its name says it diverged); one that failed, beyond retrying or after its retries, is not.
RUN_STATUS = {"completed": "FINISHED", "diverged": "FINISHED", "stopped": "FINISHED",
              "failed": "FAILED", "errored": "FAILED"}


def record_ledger(runs: TrialRuns, trials: list[ledger.TrialRecord], finished: dict[str, Any],
                  close_open: bool = False) -> int:
    """Bring MLflow up to the ledger's `trials`; return the number of epochs added.

    finished: trial id -> the end already recorded, kept by the caller between calls so
    that an ended trial costs no call. close_open: a trial without an end is closed
    KILLED (a replay after the sweep stopped); else it stays RUNNING (live).
    """
    added = 0
    for t in trials:
        if finished.get(t.trial_id) == t.end and t.end is not None:
            continue
        if runs.find_or_create(t.trial_id, t.config, trial_tags(t.config, t.tuner),
                               start_ms=int(t.started * 1000)) is None:
            continue  # its run is in MLflow's trash: left there (runs.deleted)
        new = sum(1 for r in t.epochs if int(r["epoch"]) > runs.last_step.get(t.trial_id, 0))
        if new:  # else the run would be reopened only to be closed again
            runs.log_results(t.trial_id, t.epochs)
            added += new
        if t.end is None and not close_open:
            continue
        last = t.epochs[-1] if t.epochs else {"epoch": 0}  # ended before its first epoch: epochs_completed 0
        status = RUN_STATUS[t.status] if t.end else "KILLED"
        end_s = t.end["ended"] if t.end else (t.epochs[-1]["timestamp"] if t.epochs else t.started)
        runs.finish(t.trial_id, last, status, t.status or ledger.UNFINISHED,
                    (t.end or {}).get("reason") if status == "FAILED" else None, end_ms=int(end_s * 1000))
        finished[t.trial_id] = t.end
    return added


def deleted_lines(runs: TrialRuns, sweep_dir: str, already: set[str] = frozenset()) -> list[str]:
    """A line for each trial whose run the user deleted (not in `already`): left deleted,
    its new results not recorded, and how to bring it back."""
    return [f"bnsweep: trial {trial}'s MLflow run {run_id} is deleted; bnsweep leaves it so and records nothing "
            f"into it. To record it again: `{restore_run_command(runs.record.uri, run_id)}`, then "
            f"`{shlex.join(['bnsweep', 'sync', sweep_dir])}`"
            for trial, run_id in runs.deleted.items() if trial not in already]


def sync_ledger(record: SweepRecord, sweep_dir: str) -> tuple[int, list[str]]:
    """Replay a sweep's ledger into MLflow; return the number of epochs added and a line per
    trial whose run the user deleted. Reads only storage (a path or a URI): no Ray needed,
    so it runs anywhere the storage is readable."""
    runs = TrialRuns(record)
    added = record_ledger(runs, ledger.read_trials(sweep_dir), {}, close_open=True)
    return added, deleted_lines(runs, sweep_dir)


class LiveRecord:
    """While the sweep runs: the ledger into MLflow on a thread of the driver.

    On leaving, one last pass; what MLflow still lacks then is reported with the `bnsweep
    sync` command that replays it.
    """

    def __init__(self, record: SweepRecord, sweep_dir: str):
        self.record, self.sweep_dir = record, sweep_dir
        self.reader = ledger.Reader(sweep_dir)
        self.finished: dict[str, Any] = {}
        self.runs: TrialRuns | None = None
        self.retry_at = 0.0
        self.warned = False
        self.told_deleted: set[str] = set()  # trials whose deleted run was named on the terminal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bnsweep-mlflow", daemon=True)

    def __enter__(self) -> LiveRecord:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.retry_at = 0.0
        if not self.poll():
            sync = shlex.join(["bnsweep", "sync", self.sweep_dir])
            echo(f"bnsweep: MLflow is missing results of this sweep; they are safe on storage. "
                 f"When the server is back, run `{sync}`.")

    def _loop(self) -> None:
        interval = POLL_S["remote" if "://" in self.sweep_dir else "local"]
        while not self._stop.wait(interval):
            self.poll()

    def poll(self) -> bool:
        """One pass; False if MLflow (or storage) failed, which never stops the sweep."""
        if time.monotonic() < self.retry_at:
            return False
        try:
            if self.runs is None:
                self.runs = TrialRuns(self.record)
            record_ledger(self.runs, self.reader.trials(), self.finished)
            for line in deleted_lines(self.runs, self.sweep_dir, self.told_deleted):
                echo(line)
            self.told_deleted |= set(self.runs.deleted)
            return True
        except Exception as e:  # noqa: BLE001 — MLflow trouble must never stop training
            self.retry_at = time.monotonic() + RETRY_AFTER_S
            self.runs = None
            if not self.warned:
                echo(f"bnsweep: MLflow at {self.record.uri} failed ({type(e).__name__}: {str(e)[:200]}); "
                     "training goes on, results are kept and sent when it is back")
                self.warned = True
            return False


# --------------------------------------------------------------- trackers ---

# What `run` can do instead of recording into an experiment the user deleted.
RUN_ELSEWHERE = "record this sweep elsewhere: --experiment NAME, or --tracking-uri URI (another store)"


class MlflowTracker:
    """A sweep recorded in MLflow at `uri`: checked before Ray starts, its parent run opened
    with the sweep (or found again on resume) and closed with it, its trials' runs following
    the ledger live (LiveRecord)."""

    def __init__(self, uri: str, record: SweepRecord | None = None):
        self.uri, self.record = uri, record

    def check_can_start(self, experiment: str) -> None:
        """Before Ray: the store answers and takes our credentials; the experiment is not deleted."""
        tracking.check_can_start(self.uri, experiment, elsewhere=RUN_ELSEWHERE,
                                 hint=f"{tracking.UNSET_URI_HINT}, or pass --no-tracking and replay later "
                                      "with `bnsweep sync SWEEP_DIR`")

    def start(self, study: Study, sweep_dir: str, experiment: str) -> None:
        """The experiment (made if need be) and the sweep's parent run."""
        self.record = tracking.start_sweep(self.uri, experiment, study.name, study.search, sweep_dir,
                                           str(study.path), study.text, study.shared(), study.varied(),
                                           elsewhere=RUN_ELSEWHERE, asks=study.asks)

    def saved(self) -> dict[str, Any]:
        """What sweep.json keeps of it (as "tracking"), for resume and sync."""
        return self.record.to_dict()

    def live(self, sweep_dir: str) -> LiveRecord:
        return LiveRecord(self.record, sweep_dir)

    def check_recorded(self, sweep_dir: str) -> None:
        """Before a resume's Ray: the store answers, takes our credentials and holds the
        sweep's parent run, neither it nor its experiment deleted."""
        tracking.check_sweep_recorded(self.record, sweep_dir)

    def reopen(self) -> None:
        tracking.reopen_sweep(self.record)

    def end(self, status: str) -> None:
        """Close the parent run: FINISHED, KILLED (interrupted) or FAILED (the driver failed)."""
        if self.record is not None:  # None: the sweep never started
            tracking.end_sweep(self.record, status)

    def start_lines(self) -> list[str]:
        r = self.record
        return [f"MLflow: {r.uri}  experiment {r.experiment}, parent run {r.parent_run_id}",
                f"  runs: {tracking.ui_links(r)['runs']}   (this sweep's trials by arm, as they start)"]

    def next_lines(self, sweep_dir: str) -> list[str]:
        """Where to look at the runs, and the report command: each line pastes into a shell,
        each link opens the sweep's runs in MLflow's UI."""
        uri, experiment = self.record.uri, self.record.experiment
        lines = [f"MLflow: experiment {experiment} at {uri}"]
        if not uri.startswith(("http://", "https://")):
            lines.append(f"  view:    {shlex.join(['mlflow', 'ui', '--backend-store-uri', uri])}   "
                         "(then open a link below)")
        try:
            links = tracking.ui_links(self.record)
            lines.append(f"  trials:  {links['trials']}   (this sweep's trials side by side, its summary first)")
            lines.append(f"  runs:    {links['runs']}   (this sweep's trials by arm: settings, best val_acc)")
        except Exception as e:  # noqa: BLE001 — the links are a convenience; the runs are recorded
            lines.append(f"  (no links: MLflow at {uri} did not answer: {type(e).__name__})")
        report = ["bnsweep", "report", experiment]
        if uri != tracking.resolve_tracking_uri():  # where report looks by default
            report += ["--tracking-uri", uri]
        lines.append(f"next: {shlex.join(report)}   (figures, tables and the study's claims judged from these trials)")
        return lines


class NullTracker:
    """MLflow off (--no-tracking): the sweep runs the same; its ledger waits for `bnsweep sync`."""

    record = None

    def check_can_start(self, experiment: str) -> None:
        pass

    def start(self, study: Study, sweep_dir: str, experiment: str) -> None:
        pass

    def saved(self) -> None:
        return None

    def live(self, sweep_dir: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def check_recorded(self, sweep_dir: str) -> None:
        pass

    def reopen(self) -> None:
        pass

    def end(self, status: str) -> None:
        pass

    def start_lines(self) -> list[str]:
        return []

    def next_lines(self, sweep_dir: str) -> list[str]:
        return [f"next: {shlex.join(['bnsweep', 'sync', sweep_dir])}   (records the trials into MLflow), "
                "then bnsweep report"]


Tracker = MlflowTracker | NullTracker


def tracker_for_run(tracking_uri: str | None, on: bool) -> Tracker:
    """`run`'s tracker: MLflow at --tracking-uri / $MLFLOW_TRACKING_URI / ./mlflow.db, or
    none (on False: --no-tracking)."""
    return MlflowTracker(tracking.resolve_tracking_uri(tracking_uri)) if on else NullTracker()


def tracker_for_resume(saved: dict[str, Any] | None, sweep_dir: str, on: bool) -> Tracker:
    """`resume`'s tracker: the store and parent run sweep.json keeps (`saved`), or none
    (the sweep ran without, or on False: --no-tracking this time, said in one line)."""
    if saved and not on:
        echo(f"MLflow is off for this resume (sweep.json keeps its record); replay the new epochs later with "
             f"`{shlex.join(['bnsweep', 'sync', sweep_dir])}`")
    if not (saved and on):
        return NullTracker()
    record = SweepRecord.from_dict(saved)
    return MlflowTracker(record.uri, record)


def sync(spec: SweepSpec, sweep_dir: str, tracking_uri: str | None, load_study: Callable[[], Study]) -> list[str]:
    """`bnsweep sync`: replay into MLflow what the sweep's ledger holds that MLflow lacks;
    return the lines to print.

    Into the store given (tracking_uri), else the one the sweep recorded into, else the
    default. Where that store has no record of the sweep (it ran with --no-tracking, or the
    store was lost or is another one), the experiment and a parent run are created first
    (the study from `load_study`) and sweep.json points at them from then on. An experiment
    or parent run the user deleted stops it with one line, before anything is written.
    """
    was = SweepRecord.from_dict(spec.tracking) if spec.tracking else None
    uri = tracking.resolve_tracking_uri(tracking_uri or (was.uri if was else None))
    command = shlex.join(["bnsweep", "sync", sweep_dir])
    elsewhere = f"record the sweep into another store: `{command} --tracking-uri URI`"
    tracking.check_reachable(uri, hint=", or pass --tracking-uri URI to record the sweep into another store")
    lines = []
    with refused_as_error(uri):  # an account that may read this store but not write to it: one line
        record = tracking.find_sweep(was, uri, elsewhere)
        if record is None:
            study = load_study()
            experiment = (was.experiment if was else None) or spec.experiment or study.experiment_name()
            record = tracking.start_sweep(uri, experiment, study.name, study.search, sweep_dir, spec.study_path,
                                          spec.study_text, study.shared(), study.varied(), elsewhere=elsewhere,
                                          asks=study.asks)
            spec.tracking = record.to_dict()
            spec.write(sweep_dir)
            lines.append(f"{uri} had no record of this sweep: created parent run {record.parent_run_id} in "
                         f"experiment {experiment} (sweep.json now points at it)")
        added, deleted = sync_ledger(record, sweep_dir)
        tracking.close_parent(record)
    return [*lines, *deleted, f"synced {sweep_dir} into {uri}: {added} epoch(s) added",
            *MlflowTracker(uri, record).next_lines(sweep_dir)]
