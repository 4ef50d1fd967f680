"""The study's five claims (DESIGN.md §2), each judged from the tables
bnsweep/results.py loads: supported, refuted, suggestive (which way it leans) or
undecided (why).

The claim functions are pure: DataFrames in, a `Claim` out, so a test can feed
them real runs arranged so that a claim holds, and so that it does not.

How much evidence a verdict needs (EVIDENCE_RULE, stated in every report): a
claim is "supported" or "refuted" only when each number it compares rests on at
least MIN_REPLICATES runs (seeds of a configuration, or matched BN / no-BN pairs
for time per step) and the difference is beyond their spread. A standard
deviation from 2 runs has 1 degree of freedom: its 95 % interval runs from 0.45
to 32 times the estimate (chi-square), so it cannot say whether a difference is
beyond the noise; from 3 runs, 0.52 to 6.3 times, the least a verdict takes. With fewer runs a difference
in the claim's direction, or against it, is only "suggestive".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bnsweep.config import EXECUTION_FACTS
from bnsweep.tables import (
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

# Two accuracies closer than this (fraction of images) are not told apart; with
# repeated seeds the standard deviation over seeds is used when larger.
ACC_TOLERANCE = 0.01
# Step-time ratios within 1 ± this are timing noise, not a cost of BN.
TIME_TOLERANCE = 0.05
# Share of matched pairs that must agree on which arm steps slower (claim 2).
PAIR_AGREEMENT = 0.75
MEDIUM_BATCH = (50, 100)  # the band of claim 4, images per step
MIN_REPLICATES = 3  # runs behind each compared number before a verdict (module docstring)

EVIDENCE_RULE = (
    f"A claim is supported or refuted only when each number it compares rests on at least {MIN_REPLICATES} runs "
    f"(seeds of a configuration; matched BN / no-BN pairs for time per step) and the difference is beyond their "
    f"spread: accuracies must differ by more than {ACC_TOLERANCE} or the sd over seeds, whichever is larger; "
    f"BN / no-BN step-time ratios must lie outside 1 ± {TIME_TOLERANCE} with {PAIR_AGREEMENT:.0%} of the pairs "
    f"agreeing. With fewer runs, a difference is 'suggestive' (the verdict says which way it leans); no "
    f"difference, or too little training, is 'undecided' with the reason.")

SUPPORTED, REFUTED = "supported", "refuted"


@dataclass
class Claim:
    number: int
    statement: str
    verdict: str  # "supported", "refuted", "suggestive, leans supported|refuted (why)" or "undecided (why)"
    evidence: str  # the numbers behind the verdict, for a person
    numbers: dict[str, Any] = field(default_factory=dict)  # the same numbers, for the CSV

    @property
    def decided(self) -> bool:
        return self.verdict in (SUPPORTED, REFUTED)

    @property
    def lean(self) -> str | None:
        """SUPPORTED or REFUTED where the verdict is, or is suggestive of, one of them; else None."""
        for side in (SUPPORTED, REFUTED):
            if self.verdict == side or self.verdict.startswith(f"suggestive, leans {side} "):
                return side
        return None


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


def judged(lean: str, n: int, unit: str) -> str:
    """The verdict for a difference that points to `lean` (SUPPORTED or REFUTED), from
    `n` runs behind the weakest compared number (`unit` names one: "seed", "matched pair")."""
    if n >= MIN_REPLICATES:
        return lean
    return f"suggestive, leans {lean} ({n} {unit}{'s' if n != 1 else ''}; a verdict needs {MIN_REPLICATES})"


def _tolerance(*stds: float) -> float:
    return max([ACC_TOLERANCE, *[s for s in stds if isinstance(s, float) and math.isfinite(s)]])


def _runs(stats_row: pd.Series) -> int:
    """Runs averaged into a seed_stats row: its trials less the failed and unfinished ones."""
    return int(stats_row["n_trials"] - stats_row["n_failed"] - stats_row["n_unfinished"])


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
    runs = {a: averaged(best[a]) for a in ("bn", "no_bn")}
    acc = {a: runs[a]["best_val_acc"].astype(float).dropna() for a in runs}
    n = min(len(v) for v in acc.values())
    mean = {a: float(acc[a].mean()) for a in acc}
    std = {a: float(acc[a].std(ddof=1)) if len(acc[a]) > 1 else 0.0 for a in acc}
    tol = _tolerance(std["bn"], std["no_bn"])
    weaker = min(mean.values())
    target = max(0.9 * weaker, CHANCE + TRAIN_MARGIN)
    reach = {a: _reach(history, runs[a]["run_id"], target) for a in acc}
    c.numbers = {"bn_best_val_acc": mean["bn"], "no_bn_best_val_acc": mean["no_bn"],
                 "bn_std": std["bn"], "no_bn_std": std["no_bn"], "seeds_min": n, "target_val_acc": target,
                 "bn_epochs_to_target": reach["bn"][0], "no_bn_epochs_to_target": reach["no_bn"][0],
                 "bn_seconds_to_target": reach["bn"][1], "no_bn_seconds_to_target": reach["no_bn"][1]}
    fmt = lambda e, s: "never" if math.isinf(e) else f"epoch {e:g}, {s:.1f} s"  # noqa: E731
    # One seed has no spread to show: "n=1", not a misleading "± 0.000".
    spread = {a: f"± {std[a]:.3f} (n={len(acc[a])})" if len(acc[a]) > 1 else "(n=1)" for a in acc}
    c.evidence = (f"best val acc BN {mean['bn']:.3f} {spread['bn']} vs no BN {mean['no_bn']:.3f} "
                  f"{spread['no_bn']} (best configuration of each arm, mean ± sd over seeds); "
                  f"to reach val acc {target:.3f}: BN {fmt(*reach['bn'])}, no BN {fmt(*reach['no_bn'])}")
    diff = mean["bn"] - mean["no_bn"]
    faster = reach["bn"][0] < reach["no_bn"][0] or (reach["bn"][0] == reach["no_bn"][0] and
                                                    reach["bn"][1] < reach["no_bn"][1])
    slower = reach["bn"][0] > reach["no_bn"][0]
    if max(mean.values()) < CHANCE + TRAIN_MARGIN:
        c.verdict = undecided(f"neither arm gets above {CHANCE + TRAIN_MARGIN:.2f} val acc; too little training")
    elif diff < -tol or (diff > tol and slower):
        c.verdict = judged(REFUTED, n, "seed")
    elif diff > tol and faster:
        c.verdict = judged(SUPPORTED, n, "seed")
    elif diff > tol:
        c.verdict = undecided("BN is more accurate but reaches the target no sooner")
    else:
        c.verdict = undecided(f"accuracies differ by {abs(diff):.3f}, within noise ({tol:.3f})")
    return c


def claim_step_time(trials: pd.DataFrame, history: pd.DataFrame) -> Claim:
    """Claim 2: BN/no-BN ratio of time per step between paired trials (same pair_id:
    everything but bn equal, same seed) that ran on the same kind of device and executed
    alike (the exec.* tags; the BN kernel differs between the arms by design)."""
    c = Claim(2, STATEMENTS[2], "", "")
    step = run_step_times(history)
    t = trials.assign(step_time_ms=trials["run_id"].map(step)).dropna(subset=["step_time_ms"])
    bn = t[t["bn"] == True]  # noqa: E712
    no = t[t["bn"] == False]  # noqa: E712
    alike = ["pair_id", "device_name", *(k for k in EXECUTION_FACTS if k != "exec.bn_kernel" and k in t)]
    pairs = bn.merge(no, on=alike, suffixes=("_bn", "_no_bn"))
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
    if ratio > 1 + TIME_TOLERANCE and slower >= PAIR_AGREEMENT:
        c.verdict = judged(SUPPORTED, len(pairs), "matched pair")
    elif ratio < 1 - TIME_TOLERANCE and slower <= 1 - PAIR_AGREEMENT:
        c.verdict = judged(REFUTED, len(pairs), "matched pair")
    elif abs(ratio - 1) <= TIME_TOLERANCE:
        c.verdict = undecided(f"ratio within 1 ± {TIME_TOLERANCE} (timing noise)")
    else:
        c.verdict = undecided("the pairs disagree; time the arms alone on one device (benchmarks/)")
    return c


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
    # Every lr's "trains or not" decides the ranges: the fewest seeds behind any of them.
    n = min(_runs(r) for _, r in pd.concat([bn, no]).iterrows())
    ok = {"bn": sorted(bn.loc[bn["trains"], "lr"]), "no_bn": sorted(no.loc[no["trains"], "lr"])}
    rng = lambda v: f"{v[0]:.3g}-{v[-1]:.3g}" if v else "none"  # noqa: E731
    c.numbers = {"lrs_tried": ";".join(f"{x:.3g}" for x in lrs), "bn_trains_at": ";".join(f"{x:.3g}" for x in ok["bn"]),
                 "no_bn_trains_at": ";".join(f"{x:.3g}" for x in ok["no_bn"]),
                 "threshold_val_acc": CHANCE + TRAIN_MARGIN, "seeds_min": n}
    c.evidence = (f"trains (best val acc > {CHANCE + TRAIN_MARGIN:.2f}, not diverged) at lr: BN {rng(ok['bn'])} "
                  f"({len(ok['bn'])} of {len(bn)}), no BN {rng(ok['no_bn'])} ({len(ok['no_bn'])} of {len(no)}); "
                  f"lrs tried {lrs[0]:.3g}-{lrs[-1]:.3g}; fewest seeds at one lr: {n}")
    if not ok["bn"] and not ok["no_bn"]:
        c.verdict = undecided("neither arm trains at any learning rate tried")
        return c
    if not ok["bn"]:
        c.verdict = judged(REFUTED, n, "seed")
        return c
    if not ok["no_bn"]:
        c.verdict = judged(SUPPORTED, n, "seed") if len(ok["bn"]) >= 2 else undecided(
            "BN trains at one lr only, no BN at none")
        return c
    higher = "yes" if ok["bn"][-1] > ok["no_bn"][-1] else ("edge" if ok["no_bn"][-1] == lrs[-1] else "no")
    smaller = "yes" if ok["bn"][0] < ok["no_bn"][0] else ("edge" if ok["no_bn"][0] == lrs[0] else "no")
    if higher == smaller == "yes":
        c.verdict = judged(SUPPORTED, n, "seed")
    elif "no" in (higher, smaller):
        c.verdict = judged(REFUTED, n, "seed")
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
    n = min(_runs(bi), _runs(bo))
    tol = _tolerance(float(bi["best_val_acc_std"]), float(bo["best_val_acc_std"]))
    per_batch = ", ".join(f"{int(b)}: {a:.3f}" for b, a in zip(bn["batch_size"], bn["best_val_acc_mean"]))
    c.numbers = {"best_inside_batch": int(bi["batch_size"]), "best_inside_val_acc": float(bi["best_val_acc_mean"]),
                 "best_outside_batch": int(bo["batch_size"]), "best_outside_val_acc": float(bo["best_val_acc_mean"]),
                 "per_batch": ";".join(f"{int(b)}:{a:.3f}" for b, a in zip(bn["batch_size"], bn["best_val_acc_mean"])),
                 "seeds_min": n}
    c.evidence = (f"BN best val acc per batch size: {per_batch}; "
                  f"best in {lo}-{hi}: {bi['best_val_acc_mean']:.3f} (batch {int(bi['batch_size'])}), "
                  f"best outside: {bo['best_val_acc_mean']:.3f} (batch {int(bo['batch_size'])}); "
                  f"seeds behind each: {_runs(bi)} and {_runs(bo)}")
    diff = float(bi["best_val_acc_mean"] - bo["best_val_acc_mean"])
    if diff > tol:
        c.verdict = judged(SUPPORTED, n, "seed")
    elif diff < -tol:
        c.verdict = judged(REFUTED, n, "seed")
    else:
        c.verdict = undecided(f"inside and outside the band differ by {abs(diff):.3f}, within noise ({tol:.3f})")
    return c


def generalisation_gap(trials: pd.DataFrame, arm: str) -> dict[str, float]:
    """train_acc - val_acc at the last epoch of the arm's best configuration (mean, sd over
    seeds; n: the seeds averaged)."""
    runs = best_config_per_arm(trials[trials["arm"] == arm]).get(arm)
    if runs is None or runs.empty:
        return {}
    runs = averaged(runs)
    gaps = (runs["train_acc"] - runs["val_acc"]).astype(float).dropna()
    return {"gap": float(gaps.mean()), "gap_std": float(gaps.std(ddof=1)) if len(gaps) > 1 else 0.0,
            "train_acc": float(runs["train_acc"].mean()), "val_acc": float(runs["val_acc"].mean()),
            "n": len(gaps)}


# "Like dropout": BN's narrowing of the gap at least half of dropout's (claim 5).
REGULARISES_LIKE = 0.5


def claim_regularisation(trials: pd.DataFrame, history: pd.DataFrame) -> Claim:
    """Claim 5: the last epoch's train-validation accuracy gap of no BN, no BN + dropout and BN.
    BN regularises like dropout when it narrows no BN's gap by at least REGULARISES_LIKE
    of what dropout narrows it by (and by more than the tolerance): a BN arm that only
    trims a gap dropout closes does not regularise like dropout, whatever its accuracy.
    If no BN has no gap, or dropout does not narrow it, the run shows no overfitting to
    regularise and the claim cannot be judged."""
    c = Claim(5, STATEMENTS[5], "", "")
    gaps = {a: generalisation_gap(trials, a) for a in ("no_bn", "no_bn+dropout", "bn")}
    missing = [arm_label(a) for a, g in gaps.items() if not g]
    if missing:
        c.verdict = undecided(f"needs trials of no BN, no BN + dropout and BN; missing {', '.join(missing)}")
        c.evidence = f"arms present: {', '.join(arm_label(a) for a in arms_present(trials)) or 'none'}"
        return c
    n = min(g["n"] for g in gaps.values())
    c.numbers = {f"{a}_{k}": v for a, g in gaps.items() for k, v in g.items()}
    c.evidence = "train - val accuracy gap at the last epoch: " + ", ".join(
        f"{arm_label(a)} {g['gap']:+.3f} (train {g['train_acc']:.3f}, val {g['val_acc']:.3f}, n={g['n']})"
        for a, g in gaps.items())
    tol = _tolerance(*(g["gap_std"] for g in gaps.values()))
    base = gaps["no_bn"]["gap"]
    if base <= tol:  # e.g. no BN still at chance: a gap that is not there cannot be narrowed
        c.verdict = undecided(f"no BN does not overfit here (gap {base:+.3f}): nothing to regularise")
    elif base - gaps["no_bn+dropout"]["gap"] <= tol:
        c.verdict = undecided("dropout does not narrow no BN's gap here: no overfitting to regularise")
    elif base - gaps["bn"]["gap"] > max(tol, REGULARISES_LIKE * (base - gaps["no_bn+dropout"]["gap"])):
        c.verdict = judged(SUPPORTED, n, "seed")
    else:
        c.verdict = judged(REFUTED, n, "seed")
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
