"""MLflow → pandas: one experiment (one sweep, or all of them) as tidy tables,
and the study's five claims (DESIGN.md §2) judged from those tables.

`load_experiment` reads the layout bnsweep/tracking.py writes: a parent run per
sweep (tag bnsweep.role=sweep, study, search), a child run per trial with the
config as params (strings) and metrics per epoch (step = epoch). Trials that
diverged, failed or never finished stay in the tables; `outcome` says which.

The claim functions are pure: DataFrames in, a `Claim` out, so a test can
feed them real runs arranged so that a claim holds, and so that it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bnsweep.config import EPOCH_METRICS, REFERENCE
from bnsweep.errors import BnsweepError

ROLE_TAG = "bnsweep.role"  # the same tag bnsweep/tracking.py writes
PARENT_TAG = "mlflow.parentRunId"
CHANCE = 0.1  # accuracy of guessing among CIFAR-10's 10 balanced classes
# An arm "trains" at a setting when its best validation accuracy clears chance
# by this much (DESIGN.md §2 claim 3; 0.1 + 0.1 = 20 % accuracy).
TRAIN_MARGIN = 0.1
# Two accuracies closer than this (fraction of images) are not told apart from
# one seed; with repeated seeds the standard deviation over seeds is used when larger.
ACC_TOLERANCE = 0.01
# Step-time ratios within 1 ± this are timing noise, not a cost of BN.
TIME_TOLERANCE = 0.05
MEDIUM_BATCH = (50, 100)  # the band of claim 4, images per step

# Per-epoch metrics (the history's columns) and the single-valued ones.
HISTORY_METRICS = tuple(m for m in EPOCH_METRICS if m != "epoch")
# The trials table holds the config param `lr` (the initial learning rate); the
# last epoch's scheduled learning rate, logged under the same metric name, is `lr_last`.
LAST_LR = "lr_last"

ARM_ORDER = ("no_bn", "no_bn+dropout", "bn", "bn+dropout")
ARM_LABELS = {"bn": "BN", "no_bn": "no BN", "no_bn+dropout": "no BN + dropout", "bn+dropout": "BN + dropout"}
TRIAL_TAGS = ("arm", "pair_id", "ray_trial_id", "dataset_source", "dataset_fingerprint", "device_name",
              "git_commit", "git_dirty", "torch_version", "ray_version", "mlflow_version", "optuna_version")
_BOOL_TAGS = ("diverged", "dataset_verified")
_OUTCOME = {"FINISHED": "completed", "FAILED": "failed", "KILLED": "killed", "RUNNING": "running",
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


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    from bnsweep.tracking import check_reachable, resolve_tracking_uri

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
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = _experiment_names(client)
        listed = ", ".join(names) if names else "none"
        raise ResultsError(f"no MLflow experiment named {experiment!r} at {uri}; experiments there: {listed}")
    parents = _search_all(client, exp.experiment_id, f"tags.`{ROLE_TAG}` = 'sweep'",
                          order_by=["attributes.start_time DESC"])
    if not parents:
        n_runs = len(client.search_runs([exp.experiment_id], max_results=1))
        if not n_runs:
            raise ResultsError(f"MLflow experiment {experiment!r} at {uri} has no runs: run a sweep into it first "
                               f"(bnsweep run search_spaces/<study>.py)")
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
                   parents=parents_df, trials=trials, history=history, note=note)


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
        row["arm"] = ("bn" if row["bn"] else "no_bn") + ("+dropout" if row["dropout"] else "")
    row["bn_arm"] = None if row["bn"] is None else ("bn" if row["bn"] else "no_bn")
    row["seed"] = parse_param("seed", tags.get("seed")) if tags.get("seed") is not None else row["seed"]
    for key in _BOOL_TAGS:
        row[key] = tags.get(key, "").lower() == "true"
    for key in HISTORY_METRICS:  # the last epoch's value (NaN if that epoch lacks it)
        if key == "diverged":
            continue  # a flag, set from the tag and the whole history below
        col = LAST_LR if key == "lr" else key
        row[col] = float(history[key].iloc[-1]) if len(history) else metrics.get(key, math.nan)
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
    row["outcome"] = "diverged" if row["diverged"] else _OUTCOME.get(run.info.status, run.info.status.lower())
    return row


# --------------------------------------------------------------------------
# Aggregation shared by the analysis scripts
# --------------------------------------------------------------------------

def arm_label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def arms_present(trials: pd.DataFrame, by: str = "arm") -> list[str]:
    present = list(dict.fromkeys(trials[by].dropna()))
    return sorted(present, key=lambda a: (ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER), a))


# Config keys that say where the data is read from, or how a trial is run and
# evaluated, and not what is trained: never a setting to compare or group by.
NOT_SETTINGS = ("data_dir", "download", "device", "eval_batch_size")


def varied(trials: pd.DataFrame, exclude: Iterable[str] = ("seed", "bn", *NOT_SETTINGS)) -> list[str]:
    """Config keys that take more than one value among the trials."""
    keys = [k for k in REFERENCE if k in trials and k not in set(exclude)]
    return [k for k in keys if trials[k].astype(str).nunique() > 1]


def averaged(g: pd.DataFrame) -> pd.DataFrame:
    """The trials of a group whose values its averages take: the completed and diverged
    ones (failed and unfinished trials are counted, not averaged in); in a group with
    none of those, all of its trials, whose values are then partial."""
    done = g[g["outcome"].isin(["completed", "diverged"])]
    return done if len(done) else g


def seed_stats(trials: pd.DataFrame, keys: list[str], value: str = "best_val_acc") -> pd.DataFrame:
    """Mean, spread and counts of `value` over the trials (seeds) of each group."""
    def agg(g: pd.DataFrame) -> pd.Series:
        done = averaged(g)
        v = done[value].astype(float)
        return pd.Series({
            "n_trials": len(g),
            f"{value}_mean": v.mean(),
            f"{value}_std": v.std(ddof=1) if v.notna().sum() > 1 else 0.0 if v.notna().any() else math.nan,
            f"{value}_min": v.min(),
            f"{value}_max": v.max(),
            "n_diverged": int(g["diverged"].sum()),
            "n_failed": int((g["outcome"] == "failed").sum()),
            "n_unfinished": int(g["outcome"].isin(["killed", "running"]).sum()),
            "partial": not g["outcome"].isin(["completed", "diverged"]).any(),
            "seeds": ";".join(str(s) for s in g["seed"]),
            "run_ids": ";".join(g["run_id"]),
        })

    rows = [dict(zip(keys, k if isinstance(k, tuple) else (k,))) | agg(g).to_dict()
            for k, g in trials.groupby(keys, sort=True, dropna=False)]
    out = pd.DataFrame(rows)
    for c in ("n_trials", "n_diverged", "n_failed", "n_unfinished"):
        out[c] = out[c].astype(int)
    return out


def best_config_per_arm(trials: pd.DataFrame, by: str = "arm") -> dict[str, pd.DataFrame]:
    """Per arm, the trials (all seeds) of the configuration with the highest mean best_val_acc.

    by="arm": the arms as tagged (dropout is part of the arm); by="bn_arm": BN or
    no BN, the scientific axis, with dropout one more setting to pick the best of."""
    config_keys = [k for k in varied(trials) if k in trials]
    out = {}
    for arm in arms_present(trials, by):
        sub = trials[trials[by] == arm]
        if not config_keys:
            out[arm] = sub
            continue
        stats = seed_stats(sub, config_keys)
        best = stats.sort_values("best_val_acc_mean", ascending=False, na_position="last").iloc[0]
        mask = np.ones(len(sub), dtype=bool)
        for k in config_keys:
            mask &= (sub[k].astype(str) == str(best[k])).to_numpy()
        out[arm] = sub[mask]
    return out


def epoch_stats(history: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Per epoch, mean and std over runs of each metric (and of the wall clock, time_total_s)."""
    metrics = list(dict.fromkeys([*metrics, "time_total_s"]))
    g = history.groupby("epoch")[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).fillna(0.0).add_suffix("_std"))
    out["n_runs"] = history.groupby("epoch")["run_id"].nunique()
    return out.reset_index()


# --------------------------------------------------------------------------
# The study's claims (DESIGN.md §2), each a pure function of the tables
# --------------------------------------------------------------------------

SUPPORTED, REFUTED = "supported", "refuted"


@dataclass
class Claim:
    number: int
    statement: str
    verdict: str  # "supported", "refuted" or "undecided (why)"
    evidence: str  # the numbers behind the verdict, for a person
    numbers: dict[str, Any] = field(default_factory=dict)  # the same numbers, for the CSV

    @property
    def decided(self) -> bool:
        return self.verdict in (SUPPORTED, REFUTED)


STATEMENTS = {
    1: "BN raises validation accuracy and training speed",
    2: "BN lengthens the execution time per step",
    3: "BN allows both higher and smaller learning rates",
    4: "BN works best with medium batch sizes (50-100)",
    5: "BN regularises like dropout",
}

# The claims each study under search_spaces/ was designed to test (the question of
# its docstring), by the file's stem: its report names them first. Every claim is
# still judged from whatever the trials hold; a study not listed here declares none.
STUDY_CLAIMS = {
    "quick": (1,),
    "lr": (3, 1),
    "batch_size": (4, 2),
    "quick_batch_size": (4, 2),
    "dropout": (5,),
    "quick_dropout": (5,),
    "optuna": (1,),
}


def undecided(why: str) -> str:
    return f"undecided ({why})"


def _tolerance(*stds: float) -> float:
    return max([ACC_TOLERANCE, *[s for s in stds if isinstance(s, float) and math.isfinite(s)]])


def _reach(history: pd.DataFrame, run_ids: Iterable[str], target: float) -> tuple[float, float]:
    """Mean over runs of the first epoch and the wall time (s) at which val_acc >= target (inf if never)."""
    epochs, times = [], []
    for rid in run_ids:
        h = history[(history["run_id"] == rid) & (history["val_acc"] >= target)]
        epochs.append(float(h["epoch"].min()) if len(h) else math.inf)
        times.append(float(h.sort_values("epoch")["time_total_s"].iloc[0]) if len(h) else math.inf)
    return float(np.mean(epochs)), float(np.mean(times))


def claim_accuracy_speed(trials: pd.DataFrame, history: pd.DataFrame) -> Claim:
    """Claim 1: each arm's best configuration (mean over seeds); then, to a target
    accuracy both arms reach (90 % of the weaker arm's best, at least chance + margin),
    the epochs and wall time each needs."""
    c = Claim(1, STATEMENTS[1], "", "")
    best = best_config_per_arm(trials, by="bn_arm")
    if "bn" not in best or "no_bn" not in best:
        c.verdict = undecided("needs trials of both BN and no BN")
        c.evidence = f"arms present: {', '.join(arms_present(trials)) or 'none'}"
        return c
    acc = {a: best[a]["best_val_acc"].astype(float) for a in ("bn", "no_bn")}
    mean = {a: float(acc[a].mean()) for a in acc}
    std = {a: float(acc[a].std(ddof=1)) if len(acc[a]) > 1 else 0.0 for a in acc}
    tol = _tolerance(std["bn"], std["no_bn"])
    weaker = min(mean.values())
    target = max(0.9 * weaker, CHANCE + TRAIN_MARGIN)
    reach = {a: _reach(history, best[a]["run_id"], target) for a in acc}
    c.numbers = {"bn_best_val_acc": mean["bn"], "no_bn_best_val_acc": mean["no_bn"],
                 "bn_std": std["bn"], "no_bn_std": std["no_bn"], "target_val_acc": target,
                 "bn_epochs_to_target": reach["bn"][0], "no_bn_epochs_to_target": reach["no_bn"][0],
                 "bn_seconds_to_target": reach["bn"][1], "no_bn_seconds_to_target": reach["no_bn"][1]}
    fmt = lambda e, s: "never" if math.isinf(e) else f"epoch {e:g}, {s:.1f} s"  # noqa: E731
    # One seed has no spread to show: "n=1", not a misleading "± 0.000".
    spread = {a: f"± {std[a]:.3f}" if len(acc[a]) > 1 else "(n=1)" for a in acc}
    c.evidence = (f"best val acc BN {mean['bn']:.3f} {spread['bn']} vs no BN {mean['no_bn']:.3f} "
                  f"{spread['no_bn']} (best configuration of each arm, mean ± sd over seeds); "
                  f"to reach val acc {target:.3f}: BN {fmt(*reach['bn'])}, no BN {fmt(*reach['no_bn'])}")
    diff = mean["bn"] - mean["no_bn"]
    faster = reach["bn"][0] < reach["no_bn"][0] or (reach["bn"][0] == reach["no_bn"][0] and
                                                    reach["bn"][1] < reach["no_bn"][1])
    slower = reach["bn"][0] > reach["no_bn"][0]
    if max(mean.values()) < CHANCE + TRAIN_MARGIN:
        c.verdict = undecided(f"neither arm gets above {CHANCE + TRAIN_MARGIN:.2f} val acc; too little training")
    elif diff < -tol:
        c.verdict = REFUTED
    elif diff > tol and faster:
        c.verdict = SUPPORTED
    elif diff > tol and slower:
        c.verdict = REFUTED
    elif diff > tol:
        c.verdict = undecided("BN is more accurate but reaches the target no sooner")
    else:
        c.verdict = undecided(f"accuracies differ by {abs(diff):.3f}, within noise ({tol:.3f})")
    return c


def run_step_times(history: pd.DataFrame) -> pd.Series:
    """Median step_time_ms over each run's epochs (epoch 1, with warm-up, only if it is the only one)."""
    h = history.dropna(subset=["step_time_ms"])
    later = h[h["epoch"] > 1]
    first_only = h[~h["run_id"].isin(later["run_id"])]
    return pd.concat([later, first_only]).groupby("run_id")["step_time_ms"].median()


def claim_step_time(trials: pd.DataFrame, history: pd.DataFrame) -> Claim:
    """Claim 2: BN/no-BN ratio of time per step between paired trials (same pair_id:
    everything but bn equal, same seed) that ran on the same kind of device."""
    c = Claim(2, STATEMENTS[2], "", "")
    step = run_step_times(history)
    t = trials.assign(step_time_ms=trials["run_id"].map(step)).dropna(subset=["step_time_ms"])
    bn = t[t["bn"] == True]  # noqa: E712
    no = t[t["bn"] == False]  # noqa: E712
    pairs = bn.merge(no, on=["pair_id", "device_name"], suffixes=("_bn", "_no_bn"))
    if pairs.empty:
        c.verdict = undecided("no BN / no-BN pair of trials with the same config, seed and device")
        c.evidence = f"{len(bn)} BN and {len(no)} no-BN trials with step times, none paired"
        return c
    ratios = pairs["step_time_ms_bn"] / pairs["step_time_ms_no_bn"]
    ratio = float(ratios.median())
    c.numbers = {"pairs": len(pairs), "ratio_median": ratio, "ratio_min": float(ratios.min()),
                 "ratio_max": float(ratios.max()),
                 "bn_step_time_ms_median": float(pairs["step_time_ms_bn"].median()),
                 "no_bn_step_time_ms_median": float(pairs["step_time_ms_no_bn"].median()),
                 "devices": ";".join(sorted(set(pairs["device_name"].astype(str))))}
    c.evidence = (f"time per step BN / no BN = {ratio:.2f} (median of {len(pairs)} matched pairs, range "
                  f"{ratios.min():.2f}-{ratios.max():.2f}); BN {c.numbers['bn_step_time_ms_median']:.1f} ms vs "
                  f"no BN {c.numbers['no_bn_step_time_ms_median']:.1f} ms per step on "
                  f"{c.numbers['devices']}")
    slower = float((ratios > 1).mean())  # share of pairs in which BN's steps took longer
    c.numbers["share_bn_slower"] = slower
    c.evidence += f"; BN slower in {int((ratios > 1).sum())} of {len(pairs)} pairs"
    if ratio > 1 + TIME_TOLERANCE and slower >= 0.75:
        c.verdict = SUPPORTED
    elif ratio < 1 - TIME_TOLERANCE and slower <= 0.25:
        c.verdict = REFUTED
    elif abs(ratio - 1) <= TIME_TOLERANCE:
        c.verdict = undecided(f"ratio within 1 ± {TIME_TOLERANCE} (timing noise)")
    else:
        c.verdict = undecided("the pairs disagree; time the arms alone on one device (benchmarks/)")
    return c


def trains_at(trials: pd.DataFrame, key: str, arm: str, by: str = "arm") -> pd.DataFrame:
    """Per value of `key`, the arm's best mean (over seeds) best_val_acc over the other
    settings, and whether it trains there (above chance + margin, no seed diverged)."""
    sub = trials[trials[by] == arm]
    if sub.empty:
        return pd.DataFrame(columns=[key, "best_val_acc_mean", "n_diverged", "trains"])
    others = [k for k in varied(trials) if k != key]
    stats = seed_stats(sub, [key, *others])
    stats = stats.sort_values("best_val_acc_mean", ascending=False).groupby(key, as_index=False).first()
    stats["trains"] = (stats["best_val_acc_mean"] > CHANCE + TRAIN_MARGIN) & (stats["n_diverged"] == 0)
    return stats.sort_values(key).reset_index(drop=True)


def tried_alike(trials: pd.DataFrame, key: str) -> bool:
    """Whether every value of `key` was tried under the same settings of the other
    varied keys: true of a grid; not of an Optuna search, which samples each trial's
    own settings and steers towards where it does well. Best accuracies are compared
    across the values of `key` only when this holds."""
    others = [k for k in varied(trials) if k != key]
    combos = trials[[key, *others]].astype(str).drop_duplicates()
    settings = {frozenset(map(tuple, g[others].values)) for _, g in combos.groupby(key)}
    return len(settings) <= 1


def claim_lr_range(trials: pd.DataFrame) -> Claim:
    """Claim 3: the learning rates at which each arm trains; BN must extend no BN's range
    at both ends. An end where both arms train at the grid's edge cannot be decided."""
    c = Claim(3, STATEMENTS[3], "", "")
    # Only learning rates both arms tried: an Optuna search samples each arm's own and
    # steers it away from where it fails, so its ranges are not comparable.
    tried = {arm: set(trials.loc[trials["bn_arm"] == arm, "lr"].dropna()) for arm in ("bn", "no_bn")}
    lrs = sorted(tried["bn"] & tried["no_bn"])
    trials = trials[trials["lr"].isin(lrs)]
    bn, no = trains_at(trials, "lr", "bn", by="bn_arm"), trains_at(trials, "lr", "no_bn", by="bn_arm")
    if len(lrs) < 2:
        c.verdict = undecided("needs BN and no-BN trials at 2 or more of the same learning rates")
        c.evidence = (f"learning rates tried by both arms: {', '.join(f'{x:g}' for x in lrs) or 'none'}; "
                      f"by one arm only: {len(tried['bn'] ^ tried['no_bn'])}")
        return c
    ok = {"bn": sorted(bn.loc[bn["trains"], "lr"]), "no_bn": sorted(no.loc[no["trains"], "lr"])}
    rng = lambda v: f"{v[0]:.3g}-{v[-1]:.3g}" if v else "none"  # noqa: E731
    c.numbers = {"lrs_tried": ";".join(f"{x:.3g}" for x in lrs), "bn_trains_at": ";".join(f"{x:.3g}" for x in ok["bn"]),
                 "no_bn_trains_at": ";".join(f"{x:.3g}" for x in ok["no_bn"]),
                 "threshold_val_acc": CHANCE + TRAIN_MARGIN}
    c.evidence = (f"trains (best val acc > {CHANCE + TRAIN_MARGIN:.2f}, not diverged) at lr: BN {rng(ok['bn'])} "
                  f"({len(ok['bn'])} of {len(bn)}), no BN {rng(ok['no_bn'])} ({len(ok['no_bn'])} of {len(no)}); "
                  f"lrs tried {lrs[0]:.3g}-{lrs[-1]:.3g}")
    if not ok["bn"] and not ok["no_bn"]:
        c.verdict = undecided("neither arm trains at any learning rate tried")
        return c
    if not ok["bn"]:
        c.verdict = REFUTED
        return c
    if not ok["no_bn"]:
        c.verdict = SUPPORTED if len(ok["bn"]) >= 2 else undecided("BN trains at one lr only, no BN at none")
        return c
    higher = "yes" if ok["bn"][-1] > ok["no_bn"][-1] else ("edge" if ok["no_bn"][-1] == lrs[-1] else "no")
    smaller = "yes" if ok["bn"][0] < ok["no_bn"][0] else ("edge" if ok["no_bn"][0] == lrs[0] else "no")
    if higher == smaller == "yes":
        c.verdict = SUPPORTED
    elif "no" in (higher, smaller):
        c.verdict = REFUTED
    else:
        c.verdict = undecided("no BN trains up to the edge of the lr grid; widen the grid")
    return c


def claim_batch_size(trials: pd.DataFrame) -> Claim:
    """Claim 4: BN's best accuracy inside the 50-100 band against its best outside it."""
    c = Claim(4, STATEMENTS[4], "", "")
    bn = trains_at(trials, "batch_size", "bn", by="bn_arm")
    lo, hi = MEDIUM_BATCH
    inside = bn[(bn["batch_size"] >= lo) & (bn["batch_size"] <= hi)]
    outside = bn[(bn["batch_size"] < lo) | (bn["batch_size"] > hi)]
    if inside.empty or outside.empty:
        c.verdict = undecided(f"needs BN trials at batch sizes inside and outside {lo}-{hi}")
        c.evidence = f"BN batch sizes tried: {', '.join(str(b) for b in bn['batch_size']) or 'none'}"
        return c
    if not tried_alike(trials[trials["bn_arm"] == "bn"], "batch_size"):
        c.verdict = undecided("BN's batch sizes were not tried under the same other settings (an Optuna "
                              "search samples each trial's own); judge it on a grid")
        c.evidence = f"BN batch sizes tried: {', '.join(str(b) for b in bn['batch_size'])}"
        return c
    bi = inside.loc[inside["best_val_acc_mean"].idxmax()]
    bo = outside.loc[outside["best_val_acc_mean"].idxmax()]
    tol = _tolerance(float(bi["best_val_acc_std"]), float(bo["best_val_acc_std"]))
    c.numbers = {"best_inside_batch": int(bi["batch_size"]), "best_inside_val_acc": float(bi["best_val_acc_mean"]),
                 "best_outside_batch": int(bo["batch_size"]), "best_outside_val_acc": float(bo["best_val_acc_mean"]),
                 "per_batch": ";".join(f"{int(b)}:{a:.3f}" for b, a in zip(bn["batch_size"], bn["best_val_acc_mean"]))}
    c.evidence = (f"BN best val acc per batch size: {', '.join(f'{int(b)}: {a:.3f}' for b, a in zip(bn['batch_size'], bn['best_val_acc_mean']))}; "
                  f"best in {lo}-{hi}: {bi['best_val_acc_mean']:.3f} (batch {int(bi['batch_size'])}), "
                  f"best outside: {bo['best_val_acc_mean']:.3f} (batch {int(bo['batch_size'])})")
    diff = float(bi["best_val_acc_mean"] - bo["best_val_acc_mean"])
    if diff > tol:
        c.verdict = SUPPORTED
    elif diff < -tol:
        c.verdict = REFUTED
    else:
        c.verdict = undecided(f"inside and outside the band differ by {abs(diff):.3f}, within noise ({tol:.3f})")
    return c


def generalisation_gap(trials: pd.DataFrame, arm: str) -> dict[str, float]:
    """train_acc - val_acc at the last epoch of the arm's best configuration (mean, sd over seeds)."""
    runs = best_config_per_arm(trials[trials["arm"] == arm]).get(arm)
    if runs is None or runs.empty:
        return {}
    gaps = (runs["train_acc"] - runs["val_acc"]).astype(float)
    return {"gap": float(gaps.mean()), "gap_std": float(gaps.std(ddof=1)) if len(gaps) > 1 else 0.0,
            "train_acc": float(runs["train_acc"].mean()), "val_acc": float(runs["val_acc"].mean())}


def claim_regularisation(trials: pd.DataFrame, history: pd.DataFrame) -> Claim:
    """Claim 5: the last epoch's train-validation accuracy gap of no BN, no BN + dropout and BN.
    BN regularises like dropout when both narrow no BN's gap; if no BN has no gap,
    or dropout does not narrow it, the run shows no overfitting to regularise and
    the claim cannot be judged."""
    c = Claim(5, STATEMENTS[5], "", "")
    gaps = {a: generalisation_gap(trials, a) for a in ("no_bn", "no_bn+dropout", "bn")}
    missing = [arm_label(a) for a, g in gaps.items() if not g]
    if missing:
        c.verdict = undecided(f"needs trials of no BN, no BN + dropout and BN; missing {', '.join(missing)}")
        c.evidence = f"arms present: {', '.join(arm_label(a) for a in arms_present(trials)) or 'none'}"
        return c
    c.numbers = {f"{a}_{k}": v for a, g in gaps.items() for k, v in g.items()}
    c.evidence = "train - val accuracy gap at the last epoch: " + ", ".join(
        f"{arm_label(a)} {g['gap']:+.3f} (train {g['train_acc']:.3f}, val {g['val_acc']:.3f})" for a, g in gaps.items())
    tol = _tolerance(*(g["gap_std"] for g in gaps.values()))
    base = gaps["no_bn"]["gap"]
    if base <= tol:  # e.g. no BN still at chance: a gap that is not there cannot be narrowed
        c.verdict = undecided(f"no BN does not overfit here (gap {base:+.3f}): nothing to regularise")
    elif base - gaps["no_bn+dropout"]["gap"] <= tol:
        c.verdict = undecided("dropout does not narrow no BN's gap here: no overfitting to regularise")
    elif base - gaps["bn"]["gap"] > tol:
        c.verdict = SUPPORTED
    else:
        c.verdict = REFUTED
    return c


def evaluate_claims(trials: pd.DataFrame, history: pd.DataFrame) -> list[Claim]:
    return [claim_accuracy_speed(trials, history), claim_step_time(trials, history), claim_lr_range(trials),
            claim_batch_size(trials), claim_regularisation(trials, history)]


def claims_table(claims: list[Claim], speaks_to: Iterable[int] = ()) -> pd.DataFrame:
    """One row per claim; speaks_to marks those the study was designed to test (STUDY_CLAIMS)."""
    ours = set(speaks_to)
    return pd.DataFrame([{"claim": c.number, "statement": c.statement, "speaks_to": c.number in ours,
                          "verdict": c.verdict, "evidence": c.evidence,
                          **{f"n:{k}": v for k, v in c.numbers.items()}} for c in claims])


def study_table(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The per-study summary: per arm and varied setting, accuracy over seeds, outcomes and costs."""
    keys = ["arm", *varied(trials)]
    stats = seed_stats(trials, keys)
    step = run_step_times(history)
    t = trials.assign(step_time_med=trials["run_id"].map(step))
    t = pd.concat([averaged(g) for _, g in t.groupby(keys, sort=False, dropna=False)])  # as seed_stats
    extra = t.groupby(keys, dropna=False).agg(
        val_acc_last_mean=("val_acc", "mean"), train_acc_last_mean=("train_acc", "mean"),
        epochs_completed_mean=("epochs_completed", "mean"), step_time_ms_median=("step_time_med", "median"),
        time_total_s_mean=("time_total_s", "mean")).reset_index()
    for k in keys:  # merge on the text form: params may be None / mixed types
        stats[k + "__key"] = stats[k].astype(str)
        extra[k + "__key"] = extra[k].astype(str)
    merged = stats.merge(extra.drop(columns=keys), on=[k + "__key" for k in keys])
    merged = merged.drop(columns=[k + "__key" for k in keys])
    merged["arm_order"] = merged["arm"].map(lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else 99)
    return merged.sort_values(["arm_order", *keys[1:]]).drop(columns="arm_order").reset_index(drop=True)
