"""The original study's published results (its slides, DESIGN.md §2), and those of its
next question (Group Normalization's batch-size curve), to show beside ours, always
labelled as theirs.

They ran one seed of the reference experiment (30 epochs, batch 250 unless varied,
the full CIFAR-10) on a 2019 cloud GPU; their dropout study used a simpler model
and few images, neither published. Their numbers are best validation accuracy in %
and execution time in minutes; ours are fractions and seconds, so the tables here
put both in % and give time ratios (BN / no BN), which compare across machines.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bnsweep.analysis.results import Results
from bnsweep.analysis.scale import at_reference_scale
from bnsweep.analysis.tables import arm_label, arms_present
from bnsweep.asks import PUBLISHED

SOURCE = "original (slides)"
CALLED = "the original (slides)"
ABOUT = "one seed of the reference experiment on a 2019 cloud GPU."

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


@dataclass(frozen=True)
class PublishedSet:
    """Published numbers to show beside ours: a set bnsweep ships (SETS) or one a study file
    gives inline (bnsweep/asks.py check_original), always labelled as theirs."""

    figure: str  # the figure it is drawn on: lr, batch_size or dropout
    source: str  # how figures and tables label it
    about: str  # one sentence on what they ran
    table: pd.DataFrame | None  # the figure's x column, then per arm bn / no_bn (%) and, for batch_size, *_time_min
    reference: bool = False  # theirs is the reference experiment: at the reference scale the numbers compare directly
    called: str = ""  # how a title names them ("the original (slides)"); default: source
    # Where their x is not ours (images per GPU, not per step): the label of their own axis, on
    # a panel of its own beside our figure; empty: drawn on our axes, at the values we tried too.
    own_axis: str = ""

    @property
    def name(self) -> str:
        return self.called or self.source


# The study's next question: does another normalisation keep its accuracy at small batches?
# Wu & He 2018, "Group Normalization" (ECCV), Table 2 "sensitivity to batch sizes" (plotted in
# their Figure 5; the abstract's "10.6% lower error than BN at a batch size of 2" is 34.7 -
# 24.1): ResNet-50 on ImageNet, 8 GPUs, BN's statistics per GPU, top-1 validation error (%) per
# images per GPU. Here as accuracy (100 - error), so that it reads the way our figure does.
GN_ERROR = {"bn": (23.6, 23.7, 24.8, 27.3, 34.7), "gn": (24.1, 24.2, 24.0, 24.2, 24.1)}
GN_BATCH = pd.DataFrame({"batch_size": [32, 16, 8, 4, 2],
                         **{arm: [round(100 - e, 1) for e in errors] for arm, errors in GN_ERROR.items()}})
GN_SOURCE = "Wu & He 2018 (GN, Table 2)"
GN_ABOUT = ("ResNet-50 on ImageNet, top-1 validation accuracy (100 - error) per images per GPU: a different model "
            "and dataset")

SETS = {"lr": PublishedSet("lr", SOURCE, ABOUT, LR, reference=True, called=CALLED),
        "batch_size": PublishedSet("batch_size", SOURCE, ABOUT, BATCH, reference=True, called=CALLED),
        "dropout": PublishedSet("dropout", SOURCE, "its dropout study used a simpler model and few images, "
                                "neither published", None, called=CALLED),
        "group_norm": PublishedSet("batch_size", GN_SOURCE, GN_ABOUT, GN_BATCH, own_axis="images per GPU",
                                   called="Wu & He 2018 (Group Normalization)")}
assert tuple(SETS) == PUBLISHED


def published(asks: dict) -> PublishedSet | None:
    """The published set a study asks for (its ORIGINAL, as the sweep recorded it), or None."""
    theirs = asks.get("original")
    if isinstance(theirs, str):
        return SETS.get(theirs)
    if isinstance(theirs, dict):
        return PublishedSet(theirs["figure"], theirs["source"], theirs.get("about", ""),
                            pd.DataFrame(theirs["values"]).astype(float))
    return None


def shape_note(results: Results, theirs: PublishedSet | str) -> str:
    """How to read ours beside theirs: numbers where the sweep is the experiment they ran,
    shapes only where it is not (or where their setting was never published)."""
    theirs = SETS[theirs] if isinstance(theirs, str) else theirs
    about = f"{theirs.name[:1].upper()}{theirs.name[1:]}" + (f": {theirs.about.rstrip('.')}." if theirs.about else ".")
    if theirs.figure == "dropout":
        return (f"{about} So the comparison is of shape only (does each arm overfit; does BN narrow the gap as "
                "dropout does).")
    if not theirs.reference:
        return (f"{about} Theirs is not this study's reference experiment, so the comparison is of shape only: "
                "where each arm trains, which is higher, how the curve bends; not the values.")
    if at_reference_scale(results):
        return f"{about} This sweep is the reference experiment: the numbers compare directly, up to seed noise."
    return (f"{about} This sweep is not at the reference scale (see the header), so the comparison is of shape "
            "only: where each arm trains, which is higher, how the curve bends; not the values.")


def _pct(v) -> float:
    return round(float(v) * 100, 1)


def lr_comparison(ours: pd.DataFrame, theirs: PublishedSet = SETS["lr"]) -> pd.DataFrame:
    """Best validation accuracy (%) per lr, ours beside theirs, over the lrs either tried.

    ours: the lr figure's table (columns arm, lr, best_val_acc_mean as a fraction).
    Columns: lr, then per arm "<arm> ours (%)" and "<arm> <source> (%)"; blank where not tried."""
    return _accuracy_beside(ours, theirs, "lr", float, "")


def _accuracy_beside(ours: pd.DataFrame, theirs: PublishedSet, x: str, kind, word: str) -> pd.DataFrame:
    """Per value of x tried by either, each arm's best validation accuracy (%): ours, then theirs."""
    published = theirs.table.assign(**{x: theirs.table[x].astype(kind)}).set_index(x)
    xs = sorted(set(published.index) | set(ours[x].astype(kind)))
    table = pd.DataFrame({x: xs})
    for arm, label in (("bn", "BN"), ("no_bn", "no BN"), *((a, arm_label(a)) for a in _other_arms(ours, published))):
        if arm not in published and arm not in set(ours["arm"]):
            continue
        mine = ours[ours["arm"] == arm].set_index(x)["best_val_acc_mean"]
        table[f"{label} {word}ours (%)"] = [_pct(mine[v]) if v in mine.index else None for v in xs]
        if arm in published:
            table[f"{label} {word}{theirs.source} (%)"] = table[x].map(published[arm])
    return table


def _other_arms(ours: pd.DataFrame, published: pd.DataFrame) -> list[str]:
    """Arms beside BN and no BN (gn, ...), ours or theirs, in the tables' order."""
    columns = [c for c in published.columns if not c.endswith("_time_min")]
    return [a for a in arms_present(pd.DataFrame({"arm": [*ours["arm"], *columns]}))
            if a not in ("bn", "no_bn") and (a in published or a in set(ours["arm"]))]


def own_axis_table(theirs: PublishedSet) -> pd.DataFrame:
    """A set drawn on its own axis (own_axis), as published: its x and each arm's accuracy (%)."""
    table = theirs.table.rename(columns={"batch_size": theirs.own_axis})
    return table.rename(columns={a: f"{arm_label(a)} {theirs.source} (%)" for a in table.columns[1:]})


def batch_comparison(ours: pd.DataFrame, theirs: PublishedSet = SETS["batch_size"]) -> pd.DataFrame:
    """Per batch size, ours beside theirs: best validation accuracy (%), execution time of the
    whole run (ours in s, theirs in min) and the BN / no-BN time ratio, which compares across
    machines and scales (where theirs has times).

    ours: the batch-size figure's table (arm, batch_size, best_val_acc_mean, time_total_s_mean)."""
    table = _accuracy_beside(ours, theirs, "batch_size", int, "acc ")
    published = theirs.table.assign(batch_size=theirs.table["batch_size"].astype(int)).set_index("batch_size")
    if not {"bn_time_min", "no_bn_time_min"} <= set(published) or not {"bn", "no_bn"} <= set(ours["arm"]):
        return table
    sizes = list(table["batch_size"])
    mine = {arm: ours[ours["arm"] == arm].set_index("batch_size") for arm in ("bn", "no_bn")}
    for arm, label in (("bn", "BN"), ("no_bn", "no BN")):
        table[f"{label} time ours (s)"] = [round(float(mine[arm].at[b, "time_total_s_mean"]), 1)
                                           if b in mine[arm].index else None for b in sizes]
        table[f"{label} time {theirs.source} (min)"] = table["batch_size"].map(published[f"{arm}_time_min"])
    table["BN/no BN time ours"] = (table["BN time ours (s)"] / table["no BN time ours (s)"]).round(2)
    table[f"BN/no BN time {theirs.source}"] = (table[f"BN time {theirs.source} (min)"]
                                               / table[f"no BN time {theirs.source} (min)"]).round(2)
    return table


def dropout_comparison(last: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's accuracies per arm (fractions), ours beside theirs.

    last: per arm (index), train_acc_mean and val_acc_mean at the last epoch."""
    lo, hi = DROPOUT_VAL_ACC
    return pd.DataFrame([{"arm": arm, "train acc ours": round(float(r["train_acc_mean"]), 3),
                          f"train acc {SOURCE}": f"about {DROPOUT_TRAIN_ACC:g}",
                          "val acc ours": round(float(r["val_acc_mean"]), 3),
                          f"val acc {SOURCE}": f"{lo:.2f}-{hi:.2f}"} for arm, r in last.iterrows()])
