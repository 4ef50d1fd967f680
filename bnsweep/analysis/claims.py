"""The study's five claims (DESIGN.md §2), each judged from the tables
bnsweep/analysis/results.py loads: supported, refuted, suggestive (which way it leans) or
undecided (why).

The claim functions are pure: DataFrames in, a `Claim` out, so a test can feed
them runs arranged so that a claim holds, and so that it does not. Each claim
states what it compares as `Comparison`s (bnsweep/analysis/stats.py: n, a 95 % interval, the
test) and hands them to the one rule, `stats.verdict`; what a claim adds is which
numbers it compares. What a Claim holds, and whether the trials were long enough to
measure those numbers (`too_short`): bnsweep/analysis/evidence.py. How and why:
docs/design.md §6.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnsweep.analysis.evidence import STATEMENTS, Claim, arm_difference, level, too_short, undecided
from bnsweep.analysis.stats import REFUTED, Comparison, log_ratio, one_sample, paired, welch, welch_contrast
from bnsweep.analysis.tables import (
    CHANCE,
    TRAIN_MARGIN,
    arm_label,
    arms_present,
    averaged,
    best_config_per_arm,
    run_step_times,
    trains_at,
    tried_alike,
)
from bnsweep.config import EXECUTION_FACTS
from bnsweep.formats import count, number, value_range

MEDIUM_BATCH = (50, 100)  # the band of claim 4, images per step
REGULARISES_LIKE = 0.5  # claim 5: BN must narrow no BN's gap by at least this share of what dropout narrows it by


def _reach(history: pd.DataFrame, runs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run, the first epoch and wall time (s) at which val_acc >= target. A run that never
    gets there counts as its epochs + 1: a bound that understates how much slower it is."""
    rows = []
    for r in runs.itertuples():
        h = history[(history["run_id"] == r.run_id) & (history["val_acc"] >= target)].sort_values("epoch")
        rows.append({"pair_id": getattr(r, "pair_id", None), "epochs": float(h["epoch"].iloc[0]) if len(h) else
                     float(r.epochs) + 1, "seconds": float(h["time_total_s"].iloc[0]) if len(h) else math.nan,
                     "reached": bool(len(h))})
    return pd.DataFrame(rows, columns=["pair_id", "epochs", "seconds", "reached"])


def confirmations(trials: pd.DataFrame) -> pd.Series:
    """Which trials confirm an Optuna arm's best configuration on fresh seeds (results' `confirm`)."""
    if "confirm" not in trials:
        return pd.Series(False, index=trials.index)
    return trials["confirm"].fillna(False).astype(bool)


def best_runs_per_arm(trials: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Per BN arm, the runs of its best configuration that the arms are compared on, and (an
    Optuna study with confirmations) the search's own best score beside them. Where an arm's
    best configuration was run again on fresh seeds, those runs: the search's best is the
    best of its single-seed draws, biased upwards (docs/design.md §6). Else the best
    configuration's trials over seeds (tables.best_config_per_arm)."""
    confirm = confirmations(trials)
    best = best_config_per_arm(trials[~confirm], by="bn_arm")
    searched = {}
    for arm in best:
        again = trials[confirm & (trials["bn_arm"] == arm)]
        if len(again):
            searched[arm] = float(trials[~confirm & (trials["bn_arm"] == arm)]["best_val_acc"].max())
            best[arm] = again
    return best, searched


def claim_accuracy_speed(trials: pd.DataFrame, history: pd.DataFrame, smoke: bool | None = False) -> Claim:
    """Claim 1: each arm's best configuration, BN against no BN: best validation accuracy,
    and the epochs to a target both arms can reach (90 % of the weaker arm's best, at least
    chance + margin). Both must favour BN. An Optuna study compares its confirmation runs
    (best_runs_per_arm), the search's best shown beside them."""
    c = Claim(1, STATEMENTS[1], "", "")
    best, searched = best_runs_per_arm(trials)
    if "bn" not in best or "no_bn" not in best:
        c.verdict = undecided("needs trials of both BN and no BN")
        c.evidence = f"arms present: {', '.join(arms_present(trials)) or 'none'}"
        return c
    runs = {a: averaged(best[a]).dropna(subset=["best_val_acc"]) for a in ("bn", "no_bn")}
    mean = {a: float(runs[a]["best_val_acc"].mean()) for a in runs}
    target = max(0.9 * min(mean.values()), CHANCE + TRAIN_MARGIN)
    reach = {a: _reach(history, runs[a], target) for a in runs}
    c.numbers = {"bn_best_val_acc": mean["bn"], "no_bn_best_val_acc": mean["no_bn"],
                 "bn_std": float(runs["bn"]["best_val_acc"].std(ddof=1)),
                 "no_bn_std": float(runs["no_bn"]["best_val_acc"].std(ddof=1)),
                 "seeds_min": min(len(r) for r in runs.values()), "target_val_acc": target,
                 **{f"{a}_epochs_to_target": float(reach[a]["epochs"].mean()) for a in runs},
                 **{f"{a}_seconds_to_target": float(reach[a]["seconds"].mean()) for a in runs}}
    optimistic = ", ".join(f"{arm_label(a)} {v:.3f}" for a, v in searched.items())
    where = ("best configuration of each arm, over seeds" if not searched else
             "each arm's best configuration rerun on fresh seeds; the search's own best, the best of its "
             f"single-seed trials and biased upwards: {optimistic}")
    c.numbers.update({f"{a}_search_best_val_acc": v for a, v in searched.items()})
    c.evidence = (f"best val acc BN {level(runs['bn']['best_val_acc'])} vs no BN "
                  f"{level(runs['no_bn']['best_val_acc'])} ({where}); epochs "
                  f"to val acc {target:.3f}: BN {level(reach['bn']['epochs'])}, no BN {level(reach['no_bn']['epochs'])}"
                  f" (never: epochs + 1; reached by {int(reach['bn']['reached'].sum())} and "
                  f"{count(int(reach['no_bn']['reached'].sum()), 'run')})")
    if max(mean.values()) < CHANCE + TRAIN_MARGIN:
        c.verdict = undecided(f"neither arm gets above {CHANCE + TRAIN_MARGIN:.2f} val acc; too little training")
        return c
    for a in runs:
        runs[a] = runs[a].assign(epochs_to_target=reach[a]["epochs"].to_numpy())
    c.judge([arm_difference(runs["bn"], runs["no_bn"], "best_val_acc", "best val acc, BN - no BN"),
             arm_difference(runs["bn"], runs["no_bn"], "epochs_to_target",
                            f"epochs to val acc {target:.3f}, BN - no BN", expects="<")],
            too_short(trials, ("accuracy", "speed"), smoke))
    return c


def claim_step_time(trials: pd.DataFrame, history: pd.DataFrame, smoke: bool | None = False) -> Claim:
    """Claim 2: BN / no-BN ratio of time per step between paired trials (same pair_id:
    everything but bn equal, same seed) that ran on the same kind of device and executed
    alike (the exec.* tags; the BN kernel differs between the arms by design): the
    geometric mean ratio per device kind, from a one-sample t on the log ratios."""
    c = Claim(2, STATEMENTS[2], "", "")
    step = run_step_times(history)
    t = trials.assign(step_time_ms=trials["run_id"].map(step)).dropna(subset=["step_time_ms"])
    # By arm, not by `bn`: in a study of more norms, GN's trials have bn false and are not no BN.
    bn = t[t["bn_arm"] == "bn"]
    no = t[t["bn_arm"] == "no_bn"]
    alike = ["pair_id", "device_name", *(k for k in EXECUTION_FACTS if k != "exec.bn_kernel" and k in t)]
    pairs = bn.merge(no, on=alike, suffixes=("_bn", "_no_bn"))
    if pairs.empty:
        c.verdict = undecided("no BN / no-BN pair of trials with the same config, seed and device")
        c.evidence = f"{len(bn)} BN and {len(no)} no-BN trials with step times, none paired"
        return c
    ratios = pairs["step_time_ms_bn"] / pairs["step_time_ms_no_bn"]
    c.numbers = {"pairs": len(pairs), "ratio_median": float(ratios.median()), "ratio_min": float(ratios.min()),
                 "ratio_max": float(ratios.max()), "share_bn_slower": float((ratios > 1).mean()),
                 "bn_step_time_ms_median": float(pairs["step_time_ms_bn"].median()),
                 "no_bn_step_time_ms_median": float(pairs["step_time_ms_no_bn"].median()),
                 "devices": ";".join(sorted(set(pairs["device_name"].astype(str))))}
    c.evidence = (f"BN {c.numbers['bn_step_time_ms_median']:.1f} ms vs no BN "
                  f"{c.numbers['no_bn_step_time_ms_median']:.1f} ms per step (medians); BN slower in "
                  f"{int((ratios > 1).sum())} of {count(len(pairs), 'matched pair')}, ratios "
                  f"{ratios.min():.2f} to {ratios.max():.2f}")
    by_device = sorted(pairs.groupby("device_name"), key=lambda kv: -len(kv[1]))  # the most pairs first
    tests = [log_ratio(g["step_time_ms_bn"], g["step_time_ms_no_bn"], f"time per step BN / no BN on {d}")
             for d, g in by_device]
    paired_trials = t[t["run_id"].isin(pd.concat([pairs["run_id_bn"], pairs["run_id_no_bn"]]))]
    c.judge(tests, too_short(paired_trials, ("step time",), smoke))
    return c


def _accuracy_at(trials: pd.DataFrame, table: pd.DataFrame, arm: str, lr: float, expects: str) -> Comparison:
    """An arm's best val acc at one lr (its best setting there, over seeds) against the 'trains'
    threshold. A diverged run counts at chance, as the lr figure shows it, whatever it reached."""
    ids = table.loc[table["lr"] == lr, "run_ids"]
    runs = averaged(trials[trials["run_id"].isin(ids.iloc[0].split(";"))]) if len(ids) else trials.iloc[:0]
    values = runs["best_val_acc"].where(~runs["diverged"].astype(bool), CHANCE)
    return one_sample(values, f"{arm_label(arm)}'s best val acc at lr {number(lr)}", null=CHANCE + TRAIN_MARGIN,
                      expects=expects)


def claim_lr_range(trials: pd.DataFrame, smoke: bool | None = False) -> Claim:
    """Claim 3: the learning rates at which each arm trains; BN must extend no BN's range
    at both ends. At each end, the lr just beyond no BN's range (BN's own last one, where it
    goes further): BN must train there and no BN not, each judged against the threshold.
    An end where no BN trains at the grid's edge cannot be decided."""
    c = Claim(3, STATEMENTS[3], "", "")
    # Only learning rates both arms tried: an Optuna search samples each arm's own and
    # steers it away from where it fails, so its ranges are not comparable.
    tried = {arm: set(trials.loc[trials["bn_arm"] == arm, "lr"].dropna()) for arm in ("bn", "no_bn")}
    lrs = sorted(tried["bn"] & tried["no_bn"])
    trials = trials[trials["lr"].isin(lrs)]
    table = {a: trains_at(trials, "lr", a, by="bn_arm") for a in ("bn", "no_bn")}
    if len(lrs) < 2:
        c.verdict = undecided("needs BN and no-BN trials at 2 or more of the same learning rates")
        c.evidence = (f"learning rates tried by both arms: {', '.join(map(number, lrs)) or 'none'}; "
                      f"by one arm only: {len(tried['bn'] ^ tried['no_bn'])}")
        return c
    ok = {a: sorted(table[a].loc[table[a]["trains"], "lr"]) for a in table}
    seeds = min(int(r["best_val_acc_n"]) for t in table.values() for _, r in t.iterrows())
    c.numbers = {"lrs_tried": ";".join(map(number, lrs)), "bn_trains_at": ";".join(map(number, ok["bn"])),
                 "no_bn_trains_at": ";".join(map(number, ok["no_bn"])),
                 "threshold_val_acc": CHANCE + TRAIN_MARGIN, "seeds_min": seeds}
    c.evidence = (f"trains (best val acc > {CHANCE + TRAIN_MARGIN:.2f}, not diverged) at lr: "
                  f"BN {value_range(ok['bn'])} ({len(ok['bn'])} of {len(table['bn'])}), "
                  f"no BN {value_range(ok['no_bn'])} ({len(ok['no_bn'])} of {len(table['no_bn'])}); "
                  f"lrs tried {value_range(lrs)}; fewest seeds at one lr: {seeds}")
    if not ok["bn"] and not ok["no_bn"]:
        c.verdict = undecided("neither arm trains at any learning rate tried")
        return c
    if not ok["no_bn"] and len(ok["bn"]) == 1:
        c.verdict = undecided("BN trains at one lr only, no BN at none")
        return c
    tests, edge = [], False
    for pick, step, grid_end in ((max, 1, lrs[-1]), (min, -1, lrs[0])):  # the higher end, then the smaller
        if ok["no_bn"] and pick(ok["no_bn"]) == grid_end:
            edge = True
            continue
        beyond = lrs[lrs.index(pick(ok["no_bn"])) + step] if ok["no_bn"] else None
        bn_end = pick(ok["bn"]) if ok["bn"] else None
        lr = bn_end if bn_end is not None and (beyond is None or pick(bn_end, beyond) == bn_end) else beyond
        tests += [_accuracy_at(trials, table[a], a, lr, side) for a, side in (("bn", ">"), ("no_bn", "<"))]
    if tests:
        c.judge(tests, too_short(trials, ("accuracy",), smoke))
    if edge and c.lean != REFUTED:
        c.verdict = undecided("no BN trains up to the edge of the lr grid; widen the grid")
    return c


def claim_batch_size(trials: pd.DataFrame, smoke: bool | None = False) -> Claim:
    """Claim 4: BN's best accuracy inside the 50-100 band against its best outside it
    (Welch's t: different batch sizes see different batches, whatever their seed)."""
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
    runs = {k: averaged(trials[trials["run_id"].isin(r["run_ids"].split(";"))]) for k, r in (("in", bi), ("out", bo))}
    per_batch = ", ".join(f"{int(b)}: {a:.3f}" for b, a in zip(bn["batch_size"], bn["best_val_acc_mean"]))
    c.numbers = {"best_inside_batch": int(bi["batch_size"]), "best_inside_val_acc": float(bi["best_val_acc_mean"]),
                 "best_outside_batch": int(bo["batch_size"]), "best_outside_val_acc": float(bo["best_val_acc_mean"]),
                 "per_batch": ";".join(f"{int(b)}:{a:.3f}" for b, a in zip(bn["batch_size"], bn["best_val_acc_mean"])),
                 "seeds_min": min(len(r) for r in runs.values())}
    c.evidence = (f"BN best val acc per batch size: {per_batch}; best in {lo}-{hi}: batch {int(bi['batch_size'])}, "
                  f"{level(runs['in']['best_val_acc'])}; best outside: batch {int(bo['batch_size'])}, "
                  f"{level(runs['out']['best_val_acc'])}")
    test = welch(runs["in"]["best_val_acc"], runs["out"]["best_val_acc"],
                 f"BN's best val acc, batch {int(bi['batch_size'])} - batch {int(bo['batch_size'])}")
    c.judge([test], too_short(trials[trials["bn_arm"] == "bn"], ("accuracy",), smoke))
    return c


def gap_runs(trials: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The runs of the arm's best configuration (averaged ones) with their last epoch's
    train_acc - val_acc as `gap`; empty where the arm has none."""
    runs = best_config_per_arm(trials[trials["arm"] == arm]).get(arm)
    if runs is None or runs.empty:
        return pd.DataFrame(columns=["seed", "gap", "train_acc", "val_acc"])
    runs = averaged(runs)
    return runs.assign(gap=(runs["train_acc"] - runs["val_acc"]).astype(float)).dropna(subset=["gap"])


def generalisation_gap(trials: pd.DataFrame, arm: str) -> dict[str, float]:
    """train_acc - val_acc at the last epoch of the arm's best configuration (mean, sd over
    seeds; n: the seeds averaged)."""
    runs = gap_runs(trials, arm)
    if runs.empty:
        return {}
    gaps = runs["gap"]
    return {"gap": float(gaps.mean()), "gap_std": float(gaps.std(ddof=1)) if len(gaps) > 1 else 0.0,
            "train_acc": float(runs["train_acc"].mean()), "val_acc": float(runs["val_acc"].mean()), "n": len(gaps)}


def _seed_paired(runs: dict[str, pd.DataFrame], arms: list[str]) -> pd.DataFrame | None:
    """Per seed, each arm's gap, where the arms ran the same seeds (the same data order and
    draws: a paired design); None where they did not."""
    by_seed = [runs[a].drop_duplicates("seed").set_index("seed")["gap"].rename(a) for a in arms]
    table = pd.concat(by_seed, axis=1, join="inner")
    return table if len(table) == min(len(s) for s in by_seed) and len(table) else None


def claim_regularisation(trials: pd.DataFrame, history: pd.DataFrame, smoke: bool | None = False) -> Claim:
    """Claim 5: the last epoch's train-validation accuracy gap of no BN, no BN + dropout and BN.
    BN regularises like dropout when it narrows no BN's gap by at least REGULARISES_LIKE of
    what dropout narrows it by: 0.5 gap(no BN) + 0.5 gap(dropout) - gap(BN) > 0. It cannot be
    judged unless no BN overfits (its gap > 0) and dropout narrows that gap (premises)."""
    c = Claim(5, STATEMENTS[5], "", "")
    arms = ["no_bn", "no_bn+dropout", "bn"]
    gaps = {a: generalisation_gap(trials, a) for a in arms}
    missing = [arm_label(a) for a, g in gaps.items() if not g]
    if missing:
        c.verdict = undecided(f"needs trials of no BN, no BN + dropout and BN; missing {', '.join(missing)}")
        c.evidence = f"arms present: {', '.join(arm_label(a) for a in arms_present(trials)) or 'none'}"
        return c
    c.numbers = {f"{a}_{k}": v for a, g in gaps.items() for k, v in g.items()}
    c.evidence = "train - val accuracy gap at the last epoch: " + ", ".join(
        f"{arm_label(a)} {g['gap']:+.3f} (train {g['train_acc']:.3f}, val {g['val_acc']:.3f}, n={g['n']})"
        for a, g in gaps.items())
    runs = {a: gap_runs(trials, a) for a in arms}
    w = (1 - REGULARISES_LIKE, REGULARISES_LIKE, -1.0)  # (1-k) gap(no BN) + k gap(dropout) - gap(BN)
    what = f"gap(no BN) - gap(BN) - {REGULARISES_LIKE:g} x (gap(no BN) - gap(dropout))"
    overfits = one_sample(runs["no_bn"]["gap"], "no BN's gap", premise="no BN does not overfit here: nothing to "
                                                                       "regularise")
    narrows = "dropout does not narrow no BN's gap here: no overfitting to regularise"
    table = _seed_paired(runs, arms)
    if table is not None:
        tests = [overfits, paired(table["no_bn"], table["no_bn+dropout"], "gap(no BN) - gap(dropout)", premise=narrows),
                 one_sample(table[arms].to_numpy() @ np.array(w), what, test="paired t over seeds (contrast)")]
    else:
        tests = [overfits, welch(runs["no_bn"]["gap"], runs["no_bn+dropout"]["gap"], "gap(no BN) - gap(dropout)",
                                 premise=narrows), welch_contrast([runs[a]["gap"] for a in arms], w, what)]
    c.judge(tests, too_short(trials[trials["arm"].isin(arms)], ("accuracy",), smoke))
    return c


def evaluate_claims(trials: pd.DataFrame, history: pd.DataFrame, smoke: bool | None = False) -> list[Claim]:
    """Every claim from the trials; smoke: the sweep ran with --smoke (decides none)."""
    return [claim_accuracy_speed(trials, history, smoke), claim_step_time(trials, history, smoke),
            claim_lr_range(trials, smoke), claim_batch_size(trials, smoke),
            claim_regularisation(trials, history, smoke)]
