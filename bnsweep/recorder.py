"""Recording a sweep's results into MLflow: live from Tune, and replayed from storage.

Live: a Tune callback on the driver creates a trial's run when the trial starts and
logs each result as it arrives; a server that is down or slow costs one timeout
per RETRY_AFTER_S, and the results wait in memory and on storage. Replay (`bnsweep
sync`): the same runs and epochs rebuilt from what the sweep left on storage, each
epoch once, however often it runs.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnsweep.progress import echo
from bnsweep.storage import exists, failure_of, join, read_failures, read_text, saved_trials, split
from bnsweep.tracking import TrialRuns
from bnsweep.trials import trial_config, trial_dirname, trial_tags

# After a failed call, wait this long before talking to the server again, so an
# outage costs one timeout per interval, not one per result.
RETRY_AFTER_S = 10.0

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
            self.runs.run_id(tid, cfg, trial_tags(cfg))
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
                echo(f"bnsweep: MLflow at {self.tracking['uri']} failed ({type(e).__name__}: {str(e)[:200]}); "
                     "training goes on, results are kept and sent when it is back")
                self.warned = True

    def on_trial_start(self, iteration, trials, trial, **info):
        self._attempt(trial)  # the run starts with the trial, so its duration is the trial's

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
            sync = shlex.join(["bnsweep", "sync", self.sweep_dir or "SWEEP_DIR"])
            echo(f"bnsweep: MLflow is missing {self.missing} results of this sweep; they are safe on storage. "
                 f"When the server is back, run `{sync}`.")

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
    failures = read_failures(split(experiment)[0])  # the sweep's, beside its experiments
    for trial in saved_trials(experiment) or []:
        logdir = trial["relative_logdir"]  # None until Tune gave the trial a folder
        results = _read_results(join(experiment, logdir)) if logdir else []
        reason = failures.get(trial_dirname(trial["config"], trial["trial_id"]))
        if not results and trial["status"] != "ERROR" and not reason:
            continue  # nothing reported and not failed: no run, as the live callback would not make one
        cfg = trial_config(trial["config"])
        tid = trial["trial_id"]
        # The run spans the trial: from its first epoch's start to its last result.
        start_ms = int((results[0]["timestamp"] - results[0].get("epoch_time_s", 0)) * 1000) if results else None
        runs.run_id(tid, cfg, trial_tags(cfg), start_ms=start_ms)
        new = sum(1 for r in results if int(r["epoch"]) > runs.last_step.get(tid, 0))
        if new:  # else the run would be reopened only to be closed again
            runs.log_results(tid, results)
            added += new
        status = "FAILED" if reason else TUNE_STATUS.get(trial["status"], "KILLED")
        runs.finish(tid, results[-1] if results else None, status, reason,
                    end_ms=int(results[-1]["timestamp"] * 1000) if results else None)
    return added


def _read_results(trial_dir: str | Path) -> list[dict[str, Any]]:
    """Tune's result.json, one JSON object per reported epoch.

    An epoch reported again (re-run after an interruption, from the checkpoint
    before it) is read as first reported: that is the value the live callback
    logged, and the only one bnsweep logs per step (MLflow would keep both).
    """
    path = join(str(trial_dir), "result.json")
    by_epoch: dict[int, dict] = {}
    if exists(path):
        for line in read_text(path).splitlines():
            if line.strip():
                r = json.loads(line)
                if "epoch" in r:
                    by_epoch.setdefault(int(r["epoch"]), r)
    return [by_epoch[e] for e in sorted(by_epoch)]
