"""MLflow's record of a sweep, made from the ledger (bnsweep/ledger.py): live while it
runs, and replayed by `bnsweep sync`, by one function (record_ledger).

Live: a thread of the driver brings MLflow up to the ledger every POLL_S seconds.
A trial's run is created when its ledger record appears (started at the trial's start),
gets each epoch once, and ends with the trial. A server that is down or slow costs one
timeout per RETRY_AFTER_S; the trials never wait on MLflow, and what it missed is
on storage for `bnsweep sync`. Replay: the same function over the whole ledger, each
epoch once however often it runs.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Mapping
from typing import Any

from bnsweep import ledger
from bnsweep.progress import echo
from bnsweep.tracking import TrialRuns
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
        runs.run_id(t.trial_id, t.config, trial_tags(t.config), start_ms=int(t.started * 1000))
        new = sum(1 for r in t.epochs if int(r["epoch"]) > runs.last_step.get(t.trial_id, 0))
        if new:  # else the run would be reopened only to be closed again
            runs.log_results(t.trial_id, t.epochs)
            added += new
        if t.end is None and not close_open:
            continue
        last = t.epochs[-1] if t.epochs else None
        status = RUN_STATUS[t.status] if t.end else "KILLED"
        end_s = t.end["ended"] if t.end else (last["timestamp"] if last else t.started)
        runs.finish(t.trial_id, last, status, (t.end or {}).get("reason") if status == "FAILED" else None,
                    end_ms=int(end_s * 1000))
        finished[t.trial_id] = t.end
    return added


def sync_ledger(tracking: Mapping[str, Any], sweep_dir: str) -> int:
    """Replay a sweep's ledger into MLflow; return the number of epochs added. Reads only
    storage (a path or a URI): no Ray needed, so it runs anywhere the storage is readable."""
    return record_ledger(TrialRuns(tracking), ledger.read_trials(sweep_dir), {}, close_open=True)


class LiveRecord:
    """While the sweep runs: the ledger into MLflow on a thread of the driver.

    On leaving, one last pass; what MLflow still lacks then is reported with the `bnsweep
    sync` command that replays it. `tracking` None: MLflow is off and this does nothing.
    """

    def __init__(self, tracking: Mapping[str, Any] | None, sweep_dir: str):
        self.tracking, self.sweep_dir = tracking, sweep_dir
        self.reader = ledger.Reader(sweep_dir)
        self.finished: dict[str, Any] = {}
        self.runs: TrialRuns | None = None
        self.retry_at = 0.0
        self.warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bnsweep-mlflow", daemon=True)

    def __enter__(self) -> LiveRecord:
        if self.tracking is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.tracking is None:
            return
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
                self.runs = TrialRuns(self.tracking)
            record_ledger(self.runs, self.reader.trials(), self.finished)
            return True
        except Exception as e:  # noqa: BLE001 — MLflow trouble must never stop training
            self.retry_at = time.monotonic() + RETRY_AFTER_S
            self.runs = None
            if not self.warned:
                echo(f"bnsweep: MLflow at {self.tracking['uri']} failed ({type(e).__name__}: {str(e)[:200]}); "
                     "training goes on, results are kept and sent when it is back")
                self.warned = True
            return False
