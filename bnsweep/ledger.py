"""bnsweep's own record of a sweep's trials, on the sweep's storage (docs/design.md §4).

    SWEEP_DIR/ledger/<trial>/       <trial>: trials.trial_dirname, readable and unique by trial id
        trial.json                  the Tuner it belongs to, its config, when it first started
        epoch-0001.json ...         one object per epoch (1-based, as train() numbers them):
                                    the metrics train() reported, where it ran, when
        end.json                    how it ended (ENDS), why if it failed, when

One object per fact, never appended to: object stores (S3, GCS) cannot append, and a
writer that dies leaves whole objects or none. Who writes what:

- the trainable (trainable.run_trial): trial.json at each attempt's start, each epoch, and
  the ends it knows (completed, diverged, failed for a reason no retry can fix);
- the driver (sweep.LedgerEnds, a Tune callback): the ends Tune decides and the trainable
  never learns (stopped early by the scheduler; errored after its last retry).

The one exactly-once rule (record_epoch): an epoch is recorded once, as first reported.
A trial retried from its checkpoint, or run again from its start after a driver was
killed before Tune saved its state, reports some epochs a second time; those keep their
first record, which is also the value MLflow received. `run`'s summary, the count of
unfinished trials, `resume`, `sync` and MLflow's live record all read this ledger; none
reads Ray Tune's own files, whose formats belong to Tune.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bnsweep.storage import delete, exists, join, list_names, read_text, short_of_space, write_text

LEDGER_DIR = "ledger"
TRIAL_FILE = "trial.json"
END_FILE = "end.json"
# How a trial ended. completed: all its epochs; diverged: stopped at a non-finite loss (a
# result); failed: a mistake no retry can fix (bad config, data missing on the node);
# stopped: the scheduler (ASHA) ended it early; errored: it failed its last retry, and
# `bnsweep resume` tries it again.
ENDS = ("completed", "diverged", "failed", "stopped", "errored")
RESULTS = ("completed", "diverged", "stopped")  # ends whose accuracy is a result (stopped: by ASHA, early)
UNFINISHED = "unfinished"  # no end yet: interrupted, or still running; `bnsweep resume` continues it


@dataclass
class TrialRecord:
    """One trial as the ledger holds it."""

    name: str  # its folder under ledger/
    trial_id: str  # Ray Tune's trial id
    tuner: str  # the Tuner it ran in: "grid", or an Optuna arm's label (sweep.tuner_names)
    config: dict[str, Any]  # the config keys it trained with (trials.trial_config)
    started: float  # Unix seconds, its first attempt's start
    epochs: list[dict[str, Any]] = field(default_factory=list)  # ascending by "epoch", each once
    end: dict[str, Any] | None = None  # {"status": one of ENDS, "reason": str | None, "ended": Unix s}

    @property
    def status(self) -> str | None:
        return self.end["status"] if self.end else None


def _trial_dir(sweep_dir: str, name: str) -> str:
    return join(sweep_dir, LEDGER_DIR, name)


def _epoch_file(epoch: int) -> str:
    return f"epoch-{epoch:04d}.json"


def start_trial(sweep_dir: str, name: str, trial_id: str, tuner: str, config: dict[str, Any],
                attempt: bool = True) -> None:
    """The trial's record is created if it has none (its first start is kept). attempt:
    an attempt starts, so an earlier end is withdrawn, since a trial running again has
    not ended (an errored trial resumed); False, the driver recording an end."""
    path = _trial_dir(sweep_dir, name)
    if not exists(join(path, TRIAL_FILE)):
        record = {"trial_id": trial_id, "tuner": tuner, "config": config, "started": time.time()}
        write_text(join(path, TRIAL_FILE), json.dumps(record, default=str))
    if attempt and exists(join(path, END_FILE)):
        delete(join(path, END_FILE))


def record_epoch(sweep_dir: str, name: str, result: dict[str, Any]) -> bool:
    """Record one epoch's result (it holds "epoch", 1-based), unless that epoch is already
    recorded: the first report of an epoch is the one kept. Returns whether it wrote."""
    path = join(_trial_dir(sweep_dir, name), _epoch_file(int(result["epoch"])))
    if exists(path):
        return False
    write_text(path, json.dumps({**result, "timestamp": time.time()}, default=str))
    return True


def end_trial(sweep_dir: str, name: str, status: str, reason: str | None = None, if_open: bool = False) -> None:
    """Record how the trial ended (one of ENDS). if_open: only if it has no end yet (the
    driver's view, which comes after the trainable's own)."""
    if status not in ENDS:
        raise ValueError(f"unknown end {status!r}; one of {ENDS}")
    path = join(_trial_dir(sweep_dir, name), END_FILE)
    if if_open and exists(path):
        return
    write_text(path, json.dumps({"status": status, "reason": reason, "ended": time.time()}))


def end_of(sweep_dir: str, name: str) -> dict[str, Any] | None:
    """The trial's recorded end, or None."""
    path = join(_trial_dir(sweep_dir, name), END_FILE)
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        return None


class Reader:
    """Reads a sweep's ledger, again and again if asked (MLflow's live record polls it),
    each immutable object once."""

    def __init__(self, sweep_dir: str):
        self.sweep_dir = sweep_dir
        self._read: dict[str, dict[str, Any]] = {}  # path -> parsed trial.json or epoch object

    def _load(self, path: str) -> dict[str, Any]:
        if path not in self._read:
            self._read[path] = json.loads(read_text(path))
        return self._read[path]

    def trials(self) -> list[TrialRecord]:
        """Every trial with a record, in the order they first started."""
        out = []
        for name in list_names(join(self.sweep_dir, LEDGER_DIR)):
            path = _trial_dir(self.sweep_dir, name)
            files = list_names(path)
            if TRIAL_FILE not in files:
                continue  # a trial whose first object is still being written
            head = self._load(join(path, TRIAL_FILE))
            epochs = [self._load(join(path, f)) for f in files if f.startswith("epoch-")]
            # Not cached: an end is withdrawn when the trial runs again (None if it was since the listing).
            end = end_of(self.sweep_dir, name) if END_FILE in files else None
            out.append(TrialRecord(name=name, trial_id=head["trial_id"], tuner=head["tuner"],
                                   config=head["config"], started=head["started"],
                                   epochs=sorted(epochs, key=lambda r: r["epoch"]), end=end))
        return sorted(out, key=lambda t: t.started)


def read_trials(sweep_dir: str) -> list[TrialRecord]:
    """Every trial of the sweep with a record (a trial not started yet has none)."""
    return Reader(sweep_dir).trials()


def shortage(sweep_dir: str, trials: list[TrialRecord] | None = None) -> str | None:
    """Why the sweep's local disk is too full to go on (storage.short_of_space, counting the
    largest checkpoint its epochs recorded), for a person; None while there is room."""
    trials = read_trials(sweep_dir) if trials is None else trials
    largest = max((int(r.get("checkpoint_bytes", 0)) for t in trials for r in t.epochs), default=0)
    return short_of_space(sweep_dir, largest)
