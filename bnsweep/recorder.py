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
from typing import Any

from bnsweep import ledger, tracking
from bnsweep.progress import echo
from bnsweep.tracking import SweepRecord, TrialRuns
from bnsweep.trials import trial_tags

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
        runs.find_or_create(t.trial_id, t.config, trial_tags(t.config, t.tuner), start_ms=int(t.started * 1000))
        new = sum(1 for r in t.epochs if int(r["epoch"]) > runs.last_step.get(t.trial_id, 0))
        if new:  # else the run would be reopened only to be closed again
            runs.log_results(t.trial_id, t.epochs)
            added += new
        if t.end is None and not close_open:
            continue
        last = t.epochs[-1] if t.epochs else {"epoch": 0}  # ended before its first epoch: epochs_completed 0
        status = RUN_STATUS[t.status] if t.end else "KILLED"
        end_s = t.end["ended"] if t.end else (t.epochs[-1]["timestamp"] if t.epochs else t.started)
        runs.finish(t.trial_id, last, status, (t.end or {}).get("reason") if status == "FAILED" else None,
                    end_ms=int(end_s * 1000))
        finished[t.trial_id] = t.end
    return added


def sync_ledger(record: SweepRecord, sweep_dir: str) -> int:
    """Replay a sweep's ledger into MLflow; return the number of epochs added. Reads only
    storage (a path or a URI): no Ray needed, so it runs anywhere the storage is readable."""
    return record_ledger(TrialRuns(record), ledger.read_trials(sweep_dir), {}, close_open=True)


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

class MlflowTracker:
    """A sweep recorded in MLflow: its parent run opens and closes with the sweep, its
    trials' runs follow the ledger live (LiveRecord)."""

    def __init__(self, record: SweepRecord):
        self.record = record

    def live(self, sweep_dir: str) -> LiveRecord:
        return LiveRecord(self.record, sweep_dir)

    def check_recorded(self, sweep_dir: str) -> None:
        tracking.check_sweep_recorded(self.record, sweep_dir)

    def reopen(self) -> None:
        tracking.reopen_sweep(self.record)

    def end(self, status: str) -> None:
        """Close the parent run: FINISHED, KILLED (interrupted) or FAILED (the driver failed)."""
        tracking.end_sweep(self.record, status)

    def start_lines(self) -> list[str]:
        r = self.record
        return [f"MLflow: {r.uri}  experiment {r.experiment}, parent run {r.parent_run_id}",
                f"  runs: {tracking.ui_links(r)['runs']}   (+ unfolds the sweep's trials as they start)"]

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
            lines.append(f"  runs:    {links['runs']}   (every sweep of the experiment; + unfolds a sweep's trials)")
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


def tracker_for(record: SweepRecord | dict[str, Any] | None) -> Tracker:
    """The tracker of a sweep recorded as `record` (sweep.json's "tracking"); None: the null one."""
    if record is None:
        return NullTracker()
    return MlflowTracker(record if isinstance(record, SweepRecord) else SweepRecord.from_dict(record))
