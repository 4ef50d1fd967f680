"""Experiments side by side (`bnsweep report EXP_A EXP_B`): their studies' figures on
shared axes, each experiment's arms in the arm's colour and the experiment's own marker
and line style, and their verdicts in one table, claim by claim, labelled by experiment.

A BN study against a GN study, width 1 against 0.25: what differs between them is in each
experiment's scale box (bnsweep/analysis/render.py); the figures here show the same
quantities as the single-experiment ones (best validation accuracy per setting, 95 %
intervals of the mean over seeds; training curves of each arm's best configuration).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bnsweep.analysis.common import Item, new_figure, save_figure, save_table
from bnsweep.analysis.evidence import Claim, claims_table, speaks_to
from bnsweep.analysis.plots import (
    ARM_MARKERS,
    INTERVAL_WORDS,
    arm_color,
    chance_line,
    curves_table,
    interval_bars,
    plot_mean_band,
)
from bnsweep.analysis.results import Results
from bnsweep.analysis.scale import scale_tag
from bnsweep.analysis.tables import arm_label, arms_present, best_config_per_arm, trains_at
from bnsweep.formats import number

# Per experiment, in the order given: a line style and a marker (the arm keeps its colour).
STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
SETTINGS = {"lr": "initial learning rate", "batch_size": "batch size (images per step)"}
OVERLAID = ("lr", "batch_size", "curves")  # the figures drawn on shared axes; the others stay per experiment


def _style(i: int) -> dict:
    return {"linestyle": STYLES[i % len(STYLES)], "marker": MARKERS[i % len(MARKERS)]}


def _title(fig, title: str, runs: list[Results]) -> None:
    who = " vs ".join(f"{r.experiment} ({len(r.trials)} trials" + (f", {scale_tag(r)})" if scale_tag(r) else ")")
                      for r in runs)
    fig.suptitle(f"{title}\n{who}", fontsize=11)


def setting_figure(runs: list[Results], key: str, out: Path) -> Item:
    """Best validation accuracy per value of `key` (lr or batch_size), every experiment's arms on one axis."""
    tables = []
    for r in runs:
        for arm in arms_present(r.trials):
            stats = trains_at(r.trials, key, arm)
            stats.insert(0, "arm", arm)
            stats.insert(0, "experiment", r.experiment)
            tables.append(stats)
    table = pd.concat(tables, ignore_index=True)
    values = sorted(table[key].unique())
    slot = {v: i for i, v in enumerate(values)}  # one slot per value tried by either, in order
    fig, axes = new_figure(width=min(14.0, max(7.0, 0.9 * len(values) + 5)), height=4.8)
    ax = axes[0, 0]
    for i, r in enumerate(runs):
        for arm, rows in table[table["experiment"] == r.experiment].groupby("arm", sort=False):
            yerr = interval_bars(*(rows[f"best_val_acc_{k}"] for k in ("mean", "ci_low", "ci_high")))
            ax.errorbar([slot[v] for v in rows[key]], rows["best_val_acc_mean"], yerr=yerr, color=arm_color(arm),
                        capsize=2, markersize=6, markeredgecolor="black", label=f"{r.experiment}: {arm_label(arm)}",
                        **_style(i))
    chance_line(ax)
    ax.set_xticks(range(len(values)), [number(v) for v in values])
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{SETTINGS[key]} (each value tried, in order; not to scale)")
    ax.set_ylabel("best validation accuracy (fraction)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    title = f"Best validation accuracy per {SETTINGS[key].split(' (')[0]}, side by side"
    _title(fig, title, runs)
    caption = (f"Each experiment's arms on shared axes: colour is the arm, line style and marker the experiment. "
               f"Points: each arm's best validation accuracy at each {key} (its best setting there, mean over "
               f"seeds); error bars: {INTERVAL_WORDS}. Dashed grey: chance (0.1). How the experiments differ is "
               "in each one's scale box above.")
    return save_figure(fig, out, f"compare_{key}", table, title, caption)


def curves_figure(runs: list[Results], out: Path) -> Item:
    """Training and validation accuracy per epoch of each arm's best configuration, every experiment on one axis."""
    metrics = {"train_acc": "training accuracy (fraction)", "val_acc": "validation accuracy (fraction)"}
    tables = []
    for r in runs:
        t = curves_table(r, best_config_per_arm(r.trials), list(metrics))
        t.insert(0, "experiment", r.experiment)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)
    fig, axes = new_figure(1, 2, width=6.2, height=4.4)
    for ax, (metric, ylabel) in zip(axes[0], metrics.items()):
        for i, r in enumerate(runs):
            for arm, g in table[table["experiment"] == r.experiment].groupby("arm", sort=False):
                style = _style(i)
                plot_mean_band(ax, g["epoch"], g[f"{metric}_mean"], g[f"{metric}_ci_low"], g[f"{metric}_ci_high"],
                               color=arm_color(arm), label=f"{r.experiment}: {arm_label(arm)}",
                               linestyle=style["linestyle"], marker=style["marker"] or ARM_MARKERS.get(arm, "o"))
        chance_line(ax)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="best")
    title = "Training curves side by side (best configuration of each arm)"
    _title(fig, title, runs)
    caption = ("Training and validation accuracy per epoch of each arm's best configuration, every experiment on "
               f"the same axes: colour is the arm, line style and marker the experiment; bands: {INTERVAL_WORDS}. "
               "Dashed grey: chance (0.1). The configurations are in compare_curves.csv (column config).")
    return save_figure(fig, out, "compare_curves", table, title, caption)


def verdicts_table(runs: list[Results], claims: list[list[Claim]], out: Path) -> Item:
    """Every claim's verdict per experiment, claim by claim, in one table."""
    frames = []
    for i, (r, judged) in enumerate(zip(runs, claims)):
        t = claims_table(judged, speaks_to(judged, r.asks.get("claims")))
        t.insert(1, "experiment", r.experiment)
        t["order"] = i
        frames.append(t)
    table = pd.concat(frames, ignore_index=True).sort_values(["claim", "order"], kind="stable").drop(columns="order")
    shown = table[["claim", "experiment", "statement", "speaks_to", "verdict", "compared", "estimate", "ci_low",
                   "ci_high", "n", "test", "p"]].rename(columns={"speaks_to": "speaks to", "ci_low": "95% CI low",
                                                                 "ci_high": "95% CI high"})
    return save_table(out, "claims", table, "The study's claims, judged from each experiment",
                      "Each claim of the study, judged from each experiment on its own (the rule in the header), "
                      "one row per experiment: the comparison its verdict rests on, the estimate with its 95% "
                      "confidence interval, n, the test and its two-sided p. speaks to: the claims that "
                      "experiment's study declares (else those its trials could compare). Verdicts of different "
                      "experiments are not a test between them.", shown)


def comparison_items(runs: list[Results], claims: list[list[Claim]], wanted: list[list[str]],
                     out: Path) -> tuple[list[Item], list[str]]:
    """The verdicts, then the figures the experiments' studies ask for that overlay on shared axes;
    and a line for each figure left to the experiments' own reports."""
    items = [verdicts_table(runs, claims, out)]
    asked = list(dict.fromkeys(f for names in wanted for f in names))
    for name in asked:
        if name in SETTINGS and all(np.asarray(r.trials[name].notna()).any() for r in runs):
            items.append(setting_figure(runs, name, out))
        elif name == "curves" and all(len(r.history) for r in runs):
            items.append(curves_figure(runs, out))
    notes = [f"{name}: not overlaid; see each experiment's own report" for name in asked if name not in OVERLAID]
    return items, notes
