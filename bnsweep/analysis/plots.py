"""Drawing shared by the study modules: one colour and marker per arm, the chance
line, log axes labelled in plain numbers, training curves (mean over seeds with its 95 %
interval), and error bars of 95 % intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bnsweep.analysis.common import config_label
from bnsweep.analysis.results import Results, ResultsError
from bnsweep.analysis.tables import CHANCE, arm_label, epoch_stats
from bnsweep.formats import count, measured
from bnsweep.ledger import RESULTS

ARM_COLORS = {"bn": "#1f77b4", "no_bn": "#ff7f0e", "no_bn+dropout": "#2ca02c", "bn+dropout": "#9467bd",
              "gn": "#d62728", "ln": "#8c564b", "bn_scale": "#17becf"}
ARM_MARKERS = {"bn": "o", "no_bn": "s", "no_bn+dropout": "^", "bn+dropout": "D", "gn": "v", "ln": "P",
               "bn_scale": "X"}
DIVERGED_HATCH = "///"
# The original study's numbers (bnsweep/analysis/original.py): dark grey, dashed, with
# the arm's marker hollow, in every figure, so they never read as one of our arms nor as
# the chance and threshold lines (grey, no markers).
ORIGINAL_COLOR = "#444444"


def arm_color(arm: str) -> str:
    return ARM_COLORS.get(arm, "#7f7f7f")


def chance_line(ax) -> None:
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance (10 classes)", zorder=1)


def log_scale(axis) -> None:
    """A log axis labelled in plain numbers at 1, 2 and 5 of each decade, minor ticks
    unlabelled: matplotlib's default labels either only the decades (10^-2) or every
    minor tick, which crowds the axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: measured(v, 6)))  # a tick: 6 digits, as values are spelled
    axis.set_minor_formatter(NullFormatter())


def plot_original(ax, x: Sequence[float], y: Sequence[float], arm: str, source: str) -> None:
    """Published values of one arm (fractions) at positions x: grey, dashed, hollow, labelled by their source."""
    ax.plot(x, y, color=ORIGINAL_COLOR, linestyle="--", linewidth=1.4, marker=ARM_MARKERS.get(arm, "o"),
            markersize=6, markerfacecolor="white", markeredgewidth=1.4, zorder=6,
            label=f"{source}: {arm_label(arm)}")


def ours_first(handles: list, labels: list[str], source: str = "original") -> tuple[list, list[str]]:
    """A legend's entries with the published ones (labelled `source`) moved after ours."""
    theirs = [lab.startswith(source) for lab in labels]
    order = [i for i, t in enumerate(theirs) if not t] + [i for i, t in enumerate(theirs) if t]
    return [handles[i] for i in order], [labels[i] for i in order]


# What the bands and error bars of every figure are, for its caption (bnsweep/analysis/stats.py).
INTERVAL_WORDS = ("the 95% confidence interval of the mean over seeds (t; none from one seed, and wide from two: "
                  "12.7 standard errors either side)")


def plot_mean_band(ax, x: pd.Series, mean: pd.Series, low: pd.Series, high: pd.Series, *, color: str,
                   label: str, linestyle: str = "-", marker: str | None = "o") -> None:
    """A mean line with its 95 % interval as a band where two or more runs contribute."""
    ax.plot(x, mean, color=color, linestyle=linestyle, marker=marker, markersize=4, label=label)
    if low.notna().any():
        ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)


def interval_bars(mean: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray | None:
    """matplotlib's yerr (below, above the mean) for 95 % intervals; None where no point has one."""
    if not low.notna().any():
        return None
    return np.vstack([(mean - low).fillna(0).clip(lower=0).to_numpy(),
                      (high - mean).fillna(0).clip(lower=0).to_numpy()])


def curves_table(results: Results, runs_by_arm: dict[str, pd.DataFrame], metrics: Sequence[str]) -> pd.DataFrame:
    """Per arm and epoch: mean, sd and 95 % interval over seeds of `metrics` and of the cumulative wall time.

    Averages the completed and diverged runs of each arm (failed or unfinished ones only
    where there is nothing else); `config` names the setting, and says so where it diverged.
    Raises ResultsError when no trial has logged an epoch."""
    frames = []
    for arm, runs in runs_by_arm.items():
        done = runs[runs["outcome"].isin(RESULTS)]
        runs = done if len(done) else runs  # failed / unfinished trials only where there is nothing else
        h = results.history[results.history["run_id"].isin(runs["run_id"])]
        if h.empty:
            continue
        stats = epoch_stats(h, metrics)
        stats.insert(0, "arm", arm)
        label = config_label(runs, results)
        if runs["diverged"].any():  # only where the arm has no setting that trained to the end
            label += f", {int(runs['diverged'].sum())} diverged"
        stats.insert(1, "config", label)
        stats["run_ids"] = ";".join(runs["run_id"])
        frames.append(stats)
    if not frames:
        raise ResultsError(f"experiment {results.experiment!r}: {nothing_to_draw(results.trials)}")
    return pd.concat(frames, ignore_index=True)


def plot_curve_panel(ax, table: pd.DataFrame, metric: str, x: str, linestyle: str = "-",
                     label_suffix: str = "") -> None:
    """One panel of `metric` per arm against the epoch (x="epoch") or the cumulative wall time."""
    for arm, g in table.groupby("arm", sort=False):
        xs = g["epoch"] if x == "epoch" else g["time_total_s_mean"]
        plot_mean_band(ax, xs, g[f"{metric}_mean"], g[f"{metric}_ci_low"], g[f"{metric}_ci_high"], color=arm_color(arm),
                       label=f"{arm_label(arm)}{label_suffix} ({g['config'].iloc[0]})", linestyle=linestyle,
                       marker=ARM_MARKERS.get(arm, "o"))
    from matplotlib.ticker import MaxNLocator

    if x == "epoch":
        # Whole epochs, half an epoch of room either side: a 1-epoch run is one point at 1, not a
        # dot on an axis ticked 0.96-1.04, and no marker at either end is cut in half.
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, table["epoch"].max() + 0.5)
    else:
        # Time starts at 0 (how soon each arm gets there), with 5 % of room after the last point:
        # autoscaling pads the data's own span, which for 1-epoch runs is a few seconds at most.
        ax.set_xlabel("wall-clock time (s, cumulative training + validation)")
        ax.set_xlim(0, 1.05 * table["time_total_s_mean"].max())


def nothing_to_draw(trials: pd.DataFrame) -> str:
    """Why no trial has an epoch to draw, in the ledger's words: "all 2 trials failed (2 x DataError: ...)"."""
    ended = trials["outcome"].value_counts()
    if len(trials) and set(ended.index) <= {"failed", "errored"}:
        reasons = trials.get("failure_reason", pd.Series(dtype=object)).dropna().value_counts()
        why = "; ".join(f"{n} x {r[:160]}" for r, n in reasons.items())
        return f"all {count(len(trials), 'trial')} failed before their first epoch" + (f" ({why})" if why else "")
    return "no trial has logged an epoch yet (" + ", ".join(f"{n} {o}" for o, n in ended.items()) + ")"
