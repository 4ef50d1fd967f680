"""The original study's published results (its slides, DESIGN.md §2), to show beside
ours, always labelled as theirs.

They ran one seed of the reference experiment (30 epochs, batch 250 unless varied,
the full CIFAR-10) on a 2019 cloud GPU; their dropout study used a simpler model
and few images, neither published. Their numbers are best validation accuracy in %
and execution time in minutes; ours are fractions and seconds, so the tables here
put both in % and give time ratios (BN / no BN), which compare across machines.
"""

from __future__ import annotations

import pandas as pd

from bnsweep.analysis.scale import at_reference_scale
from bnsweep.results import Results

SOURCE = "original (slides)"
ABOUT = "The original's numbers are from its slides: one seed of the reference experiment on a 2019 cloud GPU."

# Best validation accuracy (%) per initial learning rate, batch 250.
LR = pd.DataFrame({"lr": [1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0],
                   "bn": [31, 49, 71, 87, 92, 70, 10],
                   "no_bn": [10, 10, 10, 66, 10, 10, 10]})
# Best validation accuracy (%) and execution time of the whole run (minutes) per batch size, lr 0.01.
BATCH = pd.DataFrame({"batch_size": [5, 10, 50, 100, 250],
                      "bn": [92, 92, 91, 89, 87], "no_bn": [85, 87, 84, 78, 66],
                      "bn_time_min": [225, 170, 52, 45, 42], "no_bn_time_min": [123, 77, 43, 36, 33]})
# Their dropout study (no BN, no BN + dropout, BN): every arm's validation accuracy
# ended near 0.30-0.35, its training accuracy near 1 (fractions).
DROPOUT_VAL_ACC = (0.30, 0.35)
DROPOUT_TRAIN_ACC = 1.0

# Which of their studies each of ours answers (the quick studies: their full-size one's).
STUDY_ORIGINAL = {"lr": "lr", "batch_size": "batch_size", "quick_batch_size": "batch_size",
                  "dropout": "dropout", "quick_dropout": "dropout"}


def original_for(results: Results, kind: str) -> bool:
    """Whether this sweep's study is one whose original results (`kind`: lr, batch_size, dropout) exist."""
    return STUDY_ORIGINAL.get(results.study or "") == kind


def shape_note(results: Results, kind: str) -> str:
    """How to read ours beside theirs: numbers where the sweep is the reference experiment,
    shapes only where it is not (or where their setting was never published)."""
    if kind == "dropout":
        return ("The original's dropout study used a simpler model and few images, neither published: the "
                "comparison is of shape only (does each arm overfit; does BN narrow the gap as dropout does).")
    if at_reference_scale(results):
        return f"{ABOUT} This sweep is the reference experiment: the numbers compare directly, up to seed noise."
    return (f"{ABOUT} This sweep is not at the reference scale (see the header), so the comparison is of shape "
            "only: where each arm trains, which is higher, how the curve bends; not the values.")


def _pct(v) -> float:
    return round(float(v) * 100, 1)


def lr_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Best validation accuracy (%) per lr, ours beside theirs, over the lrs either tried.

    ours: the lr figure's table (columns arm, lr, best_val_acc_mean as a fraction).
    Columns: lr, then per arm "<arm> ours (%)" and "<arm> original (%)"; blank where not tried."""
    lrs = sorted(set(LR["lr"]) | set(ours["lr"].astype(float)))
    table = pd.DataFrame({"lr": lrs})
    for arm, label in (("bn", "BN"), ("no_bn", "no BN")):
        mine = ours[ours["arm"] == arm].set_index("lr")["best_val_acc_mean"]
        table[f"{label} ours (%)"] = [_pct(mine[x]) if x in mine.index else None for x in lrs]
        table[f"{label} {SOURCE} (%)"] = table["lr"].map(LR.set_index("lr")[arm])
    return table


def batch_comparison(ours: pd.DataFrame) -> pd.DataFrame:
    """Per batch size, ours beside theirs: best validation accuracy (%), execution time of the
    whole run (ours in s, theirs in min) and the BN / no-BN time ratio, which compares across
    machines and scales.

    ours: the batch-size figure's table (arm, batch_size, best_val_acc_mean, time_total_s_mean)."""
    sizes = sorted(set(BATCH["batch_size"]) | set(ours["batch_size"].astype(int)))
    theirs = BATCH.set_index("batch_size")
    mine = {arm: ours[ours["arm"] == arm].set_index("batch_size") for arm in ("bn", "no_bn")}
    table = pd.DataFrame({"batch_size": sizes})
    for arm, label in (("bn", "BN"), ("no_bn", "no BN")):
        table[f"{label} acc ours (%)"] = [_pct(mine[arm].at[b, "best_val_acc_mean"]) if b in mine[arm].index
                                          else None for b in sizes]
        table[f"{label} acc {SOURCE} (%)"] = table["batch_size"].map(theirs[arm])
    for arm, label in (("bn", "BN"), ("no_bn", "no BN")):
        table[f"{label} time ours (s)"] = [round(float(mine[arm].at[b, "time_total_s_mean"]), 1)
                                           if b in mine[arm].index else None for b in sizes]
        table[f"{label} time {SOURCE} (min)"] = table["batch_size"].map(theirs[f"{arm}_time_min"])
    table["BN/no BN time ours"] = (table["BN time ours (s)"] / table["no BN time ours (s)"]).round(2)
    table[f"BN/no BN time {SOURCE}"] = (table[f"BN time {SOURCE} (min)"]
                                        / table[f"no BN time {SOURCE} (min)"]).round(2)
    return table


def dropout_comparison(last: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's accuracies per arm (fractions), ours beside theirs.

    last: per arm (index), train_acc_mean and val_acc_mean at the last epoch."""
    lo, hi = DROPOUT_VAL_ACC
    return pd.DataFrame([{"arm": arm, "train acc ours": round(float(r["train_acc_mean"]), 3),
                          f"train acc {SOURCE}": f"about {DROPOUT_TRAIN_ACC:g}",
                          "val acc ours": round(float(r["val_acc_mean"]), 3),
                          f"val acc {SOURCE}": f"{lo:.2f}-{hi:.2f}"} for arm, r in last.iterrows()])
