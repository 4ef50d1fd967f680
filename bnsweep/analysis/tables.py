"""Aggregation over the tables bnsweep/analysis/results.py loads: arms, the settings a sweep
varies, statistics over seeds, each arm's best configuration, per-epoch means,
time per step, and the per-study summary. Pure functions of DataFrames: the
claims (bnsweep/analysis/claims.py) and the figures (bnsweep/analysis/) share them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from bnsweep.analysis.stats import mean_interval
from bnsweep.config import EXECUTION_KEYS, REFERENCE, n_train_available
from bnsweep.ledger import RESULTS, UNFINISHED

CHANCE = 0.1  # accuracy of guessing among CIFAR-10's 10 balanced classes
# An arm "trains" at a setting when its best validation accuracy clears chance
# by this much (DESIGN.md §2 claim 3; 0.1 + 0.1 = 20 % accuracy).
TRAIN_MARGIN = 0.1

# The arms by normalisation (trials.arm_name): the study's two, then the other norms beside them.
ARM_ORDER = ("no_bn", "no_bn+dropout", "bn", "bn+dropout", "bn_scale", "gn", "ln")
ARM_LABELS = {"bn": "BN", "no_bn": "no BN", "no_bn+dropout": "no BN + dropout", "bn+dropout": "BN + dropout",
              "bn_scale": "BN (learned scale)", "gn": "GN", "ln": "LN"}


def arm_label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def arms_present(trials: pd.DataFrame, by: str = "arm") -> list[str]:
    present = list(dict.fromkeys(trials[by].dropna()))
    return sorted(present, key=lambda a: (ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER), a))


# Keys that say where and how a trial runs, not what it trains (config.py's kind
# "execution"): never a setting to compare or group by.
NOT_SETTINGS = EXECUTION_KEYS


def varied(trials: pd.DataFrame, exclude: Iterable[str] = ("seed", "bn", "norm", *NOT_SETTINGS)) -> list[str]:
    """Config keys that take more than one value among the trials."""
    keys = [k for k in REFERENCE if k in trials and k not in set(exclude)]
    return [k for k in keys if trials[k].astype(str).nunique() > 1]


def averaged(g: pd.DataFrame) -> pd.DataFrame:
    """The trials of a group whose values its averages take: the completed and diverged
    ones (failed and unfinished trials are counted, not averaged in); in a group with
    none of those, all of its trials, whose values are then partial."""
    done = g[g["outcome"].isin(RESULTS)]
    return done if len(done) else g


def seed_stats(trials: pd.DataFrame, keys: list[str], value: str = "best_val_acc") -> pd.DataFrame:
    """Mean, spread, 95 % interval of the mean (t; from 2 or more runs) and counts of
    `value` over the trials (seeds) of each group; `{value}_n` runs are averaged."""
    def agg(g: pd.DataFrame) -> pd.Series:
        done = averaged(g)
        v = done[value].astype(float)
        low, high = mean_interval(v)
        return pd.Series({
            "n_trials": len(g),
            f"{value}_mean": v.mean(),
            f"{value}_std": v.std(ddof=1),  # NaN from one run: no spread measured, not a spread of 0
            f"{value}_n": int(v.notna().sum()),
            f"{value}_ci_low": low,
            f"{value}_ci_high": high,
            f"{value}_min": v.min(),
            f"{value}_max": v.max(),
            "n_diverged": int(g["diverged"].sum()),
            "n_failed": int(g["outcome"].isin(["failed", "errored"]).sum()),
            "n_unfinished": int(g["outcome"].isin([UNFINISHED, "running"]).sum()),
            "partial": not g["outcome"].isin(RESULTS).any(),
            "seeds": ";".join(str(s) for s in g["seed"]),
            "run_ids": ";".join(g["run_id"]),
        })

    rows = [dict(zip(keys, k if isinstance(k, tuple) else (k,))) | agg(g).to_dict()
            for k, g in trials.groupby(keys, sort=True, dropna=False)]
    out = pd.DataFrame(rows)
    for c in ("n_trials", f"{value}_n", "n_diverged", "n_failed", "n_unfinished"):
        out[c] = out[c].astype(int)
    return out


def best_config_per_arm(trials: pd.DataFrame, by: str = "arm") -> dict[str, pd.DataFrame]:
    """Per arm, the trials (all seeds) of its best configuration: the highest mean
    best_val_acc among the configurations none of whose seeds diverged or failed and
    at least one completed. Only where an arm has no such configuration, the highest
    of all of them: a run that reached 0.3 before its loss became NaN is not the arm's
    best setting, whatever its peak (a failed trial's peak is from before it failed).

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
        stats["clean"] = (stats["n_diverged"] == 0) & (stats["n_failed"] == 0) & ~stats["partial"].astype(bool)
        best = stats.sort_values(["clean", "best_val_acc_mean"], ascending=[False, False],
                                 na_position="last").iloc[0]
        mask = np.ones(len(sub), dtype=bool)
        for k in config_keys:
            mask &= (sub[k].astype(str) == str(best[k])).to_numpy()
        out[arm] = sub[mask]
    return out


def sort_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials in reading order: by arm (ARM_ORDER), then each varied setting by its
    value (numbers as numbers: 1e-05, 0.1, 1, 10, never as text), then seed."""
    keys = [k for k in varied(trials) if k in trials] + (["seed"] if "seed" in trials else [])
    order = trials["arm"].map(lambda a: ARM_ORDER.index(a) if a in ARM_ORDER else len(ARM_ORDER))
    frame = pd.DataFrame({"_arm": order, "_name": trials["arm"].astype(str)}, index=trials.index)
    for i, k in enumerate(keys):
        numeric = pd.to_numeric(trials[k], errors="coerce")
        # Numbers first, in value order; anything else (None, text) after them, as text.
        frame[f"_{i}n"] = numeric
        frame[f"_{i}t"] = trials[k].astype(str).where(numeric.isna(), "")
    return trials.loc[frame.sort_values(list(frame.columns), na_position="last", kind="stable").index]


def epoch_stats(history: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Per epoch, mean, std and the 95 % interval of the mean (t) over runs of each metric
    (and of the wall clock, time_total_s)."""
    metrics = list(dict.fromkeys([*metrics, "time_total_s"]))
    g = history.groupby("epoch")[metrics]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std"))  # NaN from one run
    for m in metrics:
        ci = history.groupby("epoch")[m].apply(lambda v: pd.Series(mean_interval(v), index=["low", "high"])).unstack()
        out[f"{m}_ci_low"], out[f"{m}_ci_high"] = ci["low"], ci["high"]
    out["n_runs"] = history.groupby("epoch")["run_id"].nunique()
    return out.reset_index()


def steps_per_epoch(trials: pd.DataFrame) -> pd.Series:
    """Optimizer steps in one epoch of each trial, as train() takes them: ceil(training images / batch size)."""
    def steps(row: pd.Series) -> int:
        cfg = {k: (None if not isinstance(row[k], str) and pd.isna(row[k]) else row[k]) for k in REFERENCE if k in row}
        cfg = {**REFERENCE, **{k: v for k, v in cfg.items() if v is not None}}
        return math.ceil((int(cfg["n_train"]) if cfg["n_train"] else n_train_available(cfg)) / int(cfg["batch_size"]))

    return trials.apply(steps, axis=1) if len(trials) else pd.Series(dtype=int)


def run_step_times(history: pd.DataFrame) -> pd.Series:
    """Median step_time_ms over each run's epochs (epoch 1, with warm-up, only if it is the only one)."""
    h = history.dropna(subset=["step_time_ms"])
    later = h[h["epoch"] > 1]
    first_only = h[~h["run_id"].isin(later["run_id"])]
    return pd.concat([later, first_only]).groupby("run_id")["step_time_ms"].median()


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
