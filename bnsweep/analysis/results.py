"""MLflow → pandas: one experiment (one sweep, or all of them) as tidy tables.

`load_experiment` reads the layout bnsweep/tracking.py writes: a parent run per
sweep (tag bnsweep.role=sweep, study, search), a child run per trial with the
config as params (strings) and metrics per epoch (step = epoch). Trials that
diverged, failed or never finished stay in the tables; `outcome` says which.
Aggregation over those tables is bnsweep/analysis/tables.py; the study's claims judged
from them, bnsweep/analysis/claims.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bnsweep.asks import ASKS_TAG, from_tag
from bnsweep.config import EPOCH_METRICS, EXECUTION_FACTS, REFERENCE
from bnsweep.errors import BnsweepError
from bnsweep.trials import arm_name, is_confirmation, norm_arm

ROLE_TAG = "bnsweep.role"  # the same tag bnsweep/tracking.py writes
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "ray_trial_id"  # a trial's id on its run, as bnsweep/tracking.py writes it
# Per-epoch metrics (the history's columns) and the single-valued ones.
HISTORY_METRICS = tuple(m for m in EPOCH_METRICS if m != "epoch")

TRIAL_TAGS = ("arm", "tuner", "pair_id", "ray_trial_id", "failure_reason", "dataset_source", "dataset_fingerprint",
              "device_name",
              "git_commit", "git_dirty", "torch_version", "ray_version", "mlflow_version", "optuna_version",
              *EXECUTION_FACTS)
_BOOL_TAGS = ("diverged", "dataset_verified")
OUTCOME_TAG = "outcome"  # the same tag bnsweep/tracking.py writes: the ledger's word for how a trial ended
_OUTCOME = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "unfinished", "RUNNING": "running",
            "SCHEDULED": "running"}


class ResultsError(BnsweepError):
    """The experiment cannot be analysed as asked; the message says what exists."""


@dataclass
class Results:
    experiment: str
    tracking_uri: str
    study: str | None  # the parent runs' `study` tag; None if they disagree
    search: str | None  # "grid" or "optuna"
    parents: pd.DataFrame  # one row per sweep included: run_id, run_name, study, search, sweep_dir, status, start_time
    trials: pd.DataFrame  # one row per trial (see _trial_row)
    history: pd.DataFrame  # one row per (run_id, epoch), HISTORY_METRICS as columns
    note: str = ""  # which sweep(s) were read, for a person
    asks: dict[str, Any] = field(default_factory=dict)  # what the (latest) sweep's study asks: bnsweep/asks.py


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    from bnsweep.mlflow_store import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri, must_exist=True)
    return MlflowClient(uri), uri


def _search_all(client, experiment_id: str, filter_string: str, order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, order_by=order_by,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_names(client) -> list[str]:
    names, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        names.extend(e.name for e in page)
        token = page.token
        if not token:
            return sorted(names)


def load_experiment(experiment: str, tracking_uri: str | None = None, parent_run_id: str | None = None, *,
                    all_sweeps: bool = False, study: str | None = None) -> Results:
    """Read one MLflow experiment into DataFrames.

    By default only the latest sweep (parent run) of the experiment; `parent_run_id`
    picks another, `all_sweeps=True` reads all of them. `study`, when given, must
    equal the sweep's `study` tag. Raises ResultsError naming what exists.
    """
    client, uri = _client(tracking_uri)
    from bnsweep.mlflow_store import check_experiment_active

    # A deleted experiment: one line with the command that restores it, not "no experiment named".
    check_experiment_active(client, uri, experiment, "report another experiment")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = _experiment_names(client)
        listed = ", ".join(names) if names else "none"
        raise ResultsError(f"no MLflow experiment named {experiment!r} at {uri}; experiments there: {listed}")
    parents = _search_all(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'",
                          order_by=["attributes.start_time DESC"])
    if not parents:
        n_runs = len(client.search_runs([exp.experiment_id], max_results=1))
        if not n_runs:
            raise ResultsError(f"MLflow experiment {experiment!r} at {uri} has no runs: run a sweep into it first "
                               f"(bnsweep run <study>)")
        raise ResultsError(f"MLflow experiment {experiment!r} at {uri} holds no bnsweep sweep (no run tagged "
                           f"{ROLE_TAG}=sweep); was it written by `bnsweep run`?")
    available = len(parents)
    if study is not None:
        matching = [p for p in parents if p.data.tags.get("study") == study]
        if not matching:
            held = sorted({p.data.tags.get("study", "?") for p in parents})
            raise ResultsError(f"MLflow experiment {experiment!r} holds study {', '.join(map(repr, held))}, "
                               f"not {study!r}")
        parents = matching
    if parent_run_id is not None:
        chosen = [p for p in parents if p.info.run_id == parent_run_id]
        if not chosen:
            listed = "; ".join(f"{p.info.run_id} ({p.info.run_name})" for p in parents)
            raise ResultsError(f"no sweep with parent run id {parent_run_id!r} in {experiment!r}; sweeps: {listed}")
        note = f"sweep {chosen[0].info.run_name} (chosen by id)"
    elif all_sweeps:
        chosen = parents
        note = f"all {len(chosen)} sweeps of the experiment ({', '.join(p.info.run_name for p in chosen)})"
    else:
        chosen = parents[:1]
        note = (f"the latest sweep, {chosen[0].info.run_name}" +
                (f", of {available} in the experiment (pass all_sweeps / --all-sweeps for all)"
                 if available > 1 else ""))
    children = []
    for parent in chosen:
        children.extend(_search_all(client, exp.experiment_id, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
                                    order_by=["attributes.start_time ASC"]))
    children.sort(key=lambda run: run.info.start_time)  # across sweeps too: trial_order is start order
    if not children:
        raise ResultsError(f"MLflow experiment {experiment!r}: {note} has no trial runs yet")

    parents_df = pd.DataFrame([{
        "run_id": p.info.run_id, "run_name": p.info.run_name, "study": p.data.tags.get("study"),
        "search": p.data.tags.get("search"), "sweep_dir": p.data.tags.get("sweep_dir"), "status": p.info.status,
        "start_time": pd.to_datetime(p.info.start_time, unit="ms"),
    } for p in chosen])
    sweep_names = dict(zip(parents_df["run_id"], parents_df["run_name"]))
    histories = [_history(client, run) for run in children]
    children, histories, repeats = _one_run_per_trial(children, histories)
    if repeats:
        note += (f"; {repeats} more run{'s' * (repeats != 1)} of a trial already counted left out "
                 "(the one with the most epochs kept)")
    # Trials that never reported (failed at start) have no rows; leaving their empty
    # frames out of the concat keeps the metric columns float, not object.
    logged = [h for h in histories if len(h)]
    history = (pd.concat(logged, ignore_index=True) if logged else _empty_history()).astype(_HISTORY_DTYPES)
    trials = pd.DataFrame([_trial_row(run, h, sweep_names) for run, h in zip(children, histories)])
    trials["trial_order"] = np.arange(1, len(trials) + 1)  # by start time, for search histories
    studies = set(parents_df["study"].dropna())
    searches = set(parents_df["search"].dropna())
    return Results(experiment=experiment, tracking_uri=uri,
                   study=studies.pop() if len(studies) == 1 else None,
                   search=searches.pop() if len(searches) == 1 else None,
                   parents=parents_df, trials=trials, history=history, note=note,
                   asks=from_tag(chosen[0].data.tags.get(ASKS_TAG)))


def _one_run_per_trial(children: list, histories: list[pd.DataFrame]) -> tuple[list, list[pd.DataFrame], int]:
    """One run per trial of a sweep (tag ray_trial_id under one parent), in start order; and
    how many were left out. bnsweep finds a trial's run whatever its lifecycle, but a store
    written by an older bnsweep may hold a second run of a trial whose first was deleted and
    later restored: the one with the most epochs is kept (ties: the first started)."""
    best: dict[tuple, int] = {}
    for i, run in enumerate(children):
        trial = run.data.tags.get(TRIAL_TAG)
        key = (run.data.tags.get(PARENT_TAG), trial) if trial else (run.info.run_id,)
        if key not in best or len(histories[i]) > len(histories[best[key]]):
            best[key] = i
    keep = sorted(best.values())
    return [children[i] for i in keep], [histories[i] for i in keep], len(children) - len(keep)


_HISTORY_DTYPES = {"epoch": int, **{m: float for m in HISTORY_METRICS}}


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"run_id": pd.Series(dtype=str), **{k: pd.Series(dtype=t) for k, t in _HISTORY_DTYPES.items()}})


def _history(client, run) -> pd.DataFrame:
    by_key = {}
    for key in HISTORY_METRICS:
        if key not in run.data.metrics:
            continue
        # bnsweep logs each epoch once, as first reported (tracking.py); should a step still
        # hold two values (MLflow keeps both), the first logged is the one, as there.
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        first = {}
        for m in points:
            first.setdefault(m.step, m.value)
        by_key[key] = pd.Series(first, dtype=float)
    if not by_key:
        return _empty_history()
    df = pd.DataFrame(by_key).reindex(columns=list(HISTORY_METRICS))
    df = df[df.index >= 1]  # epochs are 1-based; step 0 holds nothing per-epoch
    df.index.name = "epoch"
    df = df.reset_index()
    df.insert(0, "run_id", run.info.run_id)
    df["epoch"] = df["epoch"].astype(int)
    return df


def parse_param(key: str, text: str | None) -> Any:
    """A param string back to the config's type (bool, int, float, None or str)."""
    if text is None or text == "None":
        return None
    default = REFERENCE.get(key, "")
    try:
        if isinstance(default, bool):
            return text.strip().lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(float(text))
        if isinstance(default, float):
            return float(text)
        if default is None and key != "data_dir":  # n_train, n_val: whole numbers when set
            return int(float(text))
    except ValueError:
        return text
    return text


def _trial_row(run, history: pd.DataFrame, sweep_names: dict[str, str]) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "parent_run_id": tags.get(PARENT_TAG),
        "sweep": sweep_names.get(tags.get(PARENT_TAG)),
        "study": tags.get("study"),
        "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
        "end_time": pd.to_datetime(run.info.end_time, unit="ms") if run.info.end_time else pd.NaT,
    }
    for key in TRIAL_TAGS:
        row[key] = tags.get(key)
    for key in REFERENCE:
        row[key] = parse_param(key, run.data.params.get(key))
    if row["arm"] is None and row["bn"] is not None:  # runs logged without the tag
        row["arm"] = arm_name(row)
    # The arm of its normalisation alone, dropout aside (bn, no_bn, gn, ...); runs recorded
    # before `norm` existed have no norm param and read by `bn`, as they always did.
    row["bn_arm"] = None if row["bn"] is None else norm_arm(row)
    # An Optuna arm's best configuration run again on fresh seeds (sweep.confirm_seeds), not a search trial.
    row["confirm"] = is_confirmation(row["tuner"])
    row["seed"] = parse_param("seed", tags.get("seed")) if tags.get("seed") is not None else row["seed"]
    for key in _BOOL_TAGS:
        row[key] = tags.get(key, "").lower() == "true"
    for key in HISTORY_METRICS:  # the last epoch's value (NaN if that epoch lacks it)
        if key == "diverged":
            continue  # a flag, set from the tag and the whole history below
        row[key] = float(history[key].iloc[-1]) if len(history) else metrics.get(key, math.nan)
    for key in ("best_val_acc", "best_epoch"):  # the run's own running best, as last logged
        values = history[key].dropna()
        if len(values):
            row[key] = float(values.iloc[-1])
    # Whatever the tags say, a NaN/inf loss or the diverged metric marks the run.
    row["diverged"] = bool(row["diverged"] or (len(history) and history["diverged"].fillna(0).max() > 0))
    if "epochs_completed" in metrics:
        row["epochs_completed"] = int(metrics["epochs_completed"])
    else:
        row["epochs_completed"] = int(history["epoch"].max()) if len(history) else 0
    if math.isnan(row.get("best_val_acc", math.nan)) and len(history):
        acc = history["val_acc"].dropna()
        row["best_val_acc"] = float(acc.max()) if len(acc) else math.nan
    # How it ended in the ledger's words (the tag the recorder writes); runs recorded before that tag
    # existed, or still open, by their MLflow status.
    row["outcome"] = tags.get(OUTCOME_TAG) or (
        "diverged" if row["diverged"] else _OUTCOME.get(run.info.status, run.info.status.lower()))
    return row
