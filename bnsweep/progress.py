"""What a person sees while a sweep runs: one compact view of the trials, the rest in a log.

Ray and Tune print a great deal (a configuration box per trial, the "current best"
with every key, hints, worker warnings, shutdown traces). While a sweep runs, the
driver's stdout and stderr (file descriptors 1 and 2, so that what Ray's C++ core and
its log forwarding write goes too) point at a log file, and only this module writes
to the terminal: on a terminal a table of the trials redrawn in place (rich); into a
file or a pipe one line per trial as it ends, and a status line every STATUS_EVERY_S.
`--verbose` leaves Ray's output where it was.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ray.tune import Callback

from bnsweep.formats import seconds
from bnsweep.ledger import ENDS
from bnsweep.trials import display_name, trial_config

STATUS_EVERY_S = 30.0  # seconds between the first status lines when the output is not a terminal
MAX_ROWS = 40  # trials shown in the live table; the rest are counted

_terminal: TextIO | None = None  # the terminal, while fds 1 and 2 go to the log file


def echo(text: str) -> None:
    """A line for the person running the sweep, wherever Ray's output goes."""
    stream = _terminal or sys.stdout
    stream.write(text + "\n")
    stream.flush()


@contextlib.contextmanager
def output_to_log(log_path: str | None) -> Iterator[None]:
    """Within the block, fds 1 and 2 append to `log_path`; echo() and Progress write to the
    terminal. None: nothing is redirected (--verbose)."""
    global _terminal
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _terminal.close()
        _terminal = None


def _row(trial, varied: list[str], epochs: int) -> dict[str, Any]:
    cfg = trial_config(trial.config or {})
    last = trial.last_result or {}
    if trial.status == "TERMINATED":
        # Every trial that trained reports epochs; one that ended without any failed for a
        # reason no retry could fix (trainable.run_trial), and the summary gives the reason. One
        # that ended before its last epoch was stopped: by the scheduler (ASHA), or the
        # sweep was interrupted (Ctrl-C, a full disk) and `bnsweep resume` continues it.
        if "epoch" not in last:
            status = "failed"
        elif last.get("diverged"):
            status = "diverged"
        else:
            status = "completed" if last["epoch"] >= epochs else "stopped"
    else:  # the ledger's word for an end (errored: its retries spent); Tune's for a trial under way
        status = {"ERROR": "errored", "RUNNING": "running", "PENDING": "pending", "PAUSED": "paused"}.get(
            trial.status, trial.status.lower())
    name = display_name(cfg, varied) if "bn" in cfg else trial.trial_id
    arm, _, settings = name.partition(" ")
    return {"arm": arm, "settings": settings, "epoch": int(last.get("epoch", 0)), "epochs": epochs,
            "val_acc": last.get("val_acc"), "best": last.get("best_val_acc"), "status": status}


def _acc(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


class Progress(Callback):
    """Tune callback on the driver that shows the trials (see the module's docstring).

    Tune pickles its callbacks with the experiment; what it keeps is only what the
    rows need. The rows come from Tune's trials at each step, so a restored sweep
    shows its finished trials too.
    """

    def __init__(self, varied: list[str], epochs: int):
        self.varied, self.epochs = list(varied), epochs
        self._reset()

    def _reset(self) -> None:
        self.live = None
        self.reported: set[str] = set()
        self.last_status = time.monotonic()
        self.started = time.monotonic()

    def __getstate__(self):
        return {"varied": self.varied, "epochs": self.epochs}

    def __setstate__(self, state):
        self.varied, self.epochs = state["varied"], state["epochs"]
        self._reset()

    def _tty(self) -> bool:
        stream = _terminal or sys.stdout
        return stream.isatty()

    def _counts(self, trials) -> str:
        """The clock and how many trials are in each state: `[1m05s] 2 completed, 1 running`."""
        counts: dict[str, int] = {}
        for trial in trials:
            status = _row(trial, self.varied, self.epochs)["status"]
            counts[status] = counts.get(status, 0) + 1
        return f"[{seconds(time.monotonic() - self.started)}] " + ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items()))

    def _table(self, trials):
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold", caption=self._counts(trials),
                      caption_justify="left")
        for column in ("arm", "settings", "epoch", "val_acc", "best val_acc", "status"):
            table.add_column(column, justify="right" if column in ("epoch", "val_acc", "best val_acc") else "left")
        rows = [_row(t, self.varied, self.epochs) for t in trials]
        for r in rows[:MAX_ROWS]:
            table.add_row(r["arm"], r["settings"], f"{r['epoch']}/{r['epochs']}", _acc(r["val_acc"]),
                          _acc(r["best"]), r["status"])
        if len(rows) > MAX_ROWS:
            table.add_row("", f"... {len(rows) - MAX_ROWS} more", "", "", "", "")
        return table

    def on_step_end(self, iteration, trials, **info):
        if self._tty():
            if self.live is None:
                from rich.console import Console
                from rich.live import Live

                # Not rich's default of taking over sys.stdout and sys.stderr: what Ray writes
                # there goes to the log, not above the table.
                self.live = Live(console=Console(file=_terminal or sys.stdout), auto_refresh=False,
                                 redirect_stdout=False, redirect_stderr=False)
                self.live.start()
            self.live.update(self._table(trials), refresh=True)
            return
        for trial in trials:  # a line per trial as it ends
            r = _row(trial, self.varied, self.epochs)
            ended = r["status"] in ENDS
            if ended and trial.trial_id not in self.reported:
                self.reported.add(trial.trial_id)
                echo(f"  {r['status']:<9} {r['arm']:<6} {r['settings']:<28} epoch {r['epoch']}/{r['epochs']}  "
                     f"val_acc {_acc(r['val_acc'])}  best {_acc(r['best'])}")
        # Every STATUS_EVERY_S at first, then every tenth of the time so far: a few dozen
        # lines for a sweep of hours.
        elapsed = time.monotonic() - self.started
        if time.monotonic() - self.last_status >= max(STATUS_EVERY_S, elapsed / 10):
            self.last_status = time.monotonic()
            echo(f"  {self._counts(trials)}")

    def on_experiment_end(self, trials, **info):
        self.on_step_end(0, trials)
        if self.live is not None:
            self.live.stop()
            self.live = None
