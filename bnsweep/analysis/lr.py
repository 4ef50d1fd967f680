"""Learning-rate study: best validation accuracy per initial learning rate, BN and
no BN side by side, one group of bars per lr tried (the study's lr figure; claims 1 and 3).

Each bar is an arm's best configuration at that lr (mean over seeds; the dots are
the seeds, the error bar the 95 % confidence interval of the mean). Diverged trials stay at the accuracy they
reached, hatched and labelled; failed or unfinished trials are drawn hollow, not
averaged into the bar (their count is in the legend).
Trials of other settings at the same lr (not the best) are counted in the legend.

Where the study asks for published numbers on this figure (its ORIGINAL: the
original's slides, or a set of its own), they are drawn beside ours, grey and
dashed, and tabled beside ours (bnsweep/analysis/original.py).

    python -m bnsweep.analysis.lr --experiment bnsweep-lr [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bnsweep.analysis import original
from bnsweep.analysis.common import (
    Item,
    finish,
    load,
    new_figure,
    out_dir,
    require,
    run_script,
    save_figure,
    save_table,
    script_parser,
)
from bnsweep.analysis.plots import (
    DIVERGED_HATCH,
    INTERVAL_WORDS,
    arm_color,
    chance_line,
    interval_bars,
    ours_first,
    plot_original,
)
from bnsweep.analysis.results import Results
from bnsweep.analysis.tables import CHANCE, TRAIN_MARGIN, arm_label, arms_present, trains_at
from bnsweep.formats import number
from bnsweep.ledger import RESULTS

NAME = "lr_accuracy"


def lr_table(trials):
    """Per arm and lr: the best setting's accuracy over seeds (tables.trains_at), and whether it diverged."""
    import pandas as pd

    frames = []
    for arm in arms_present(trials):
        stats = trains_at(trials, "lr", arm)
        stats.insert(0, "arm", arm)
        frames.append(stats)
    table = pd.concat(frames, ignore_index=True)
    table["diverged"] = table["n_diverged"] > 0
    return table


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.lr`: the command line around analyse()."""
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    require(results.trials["lr"].nunique() > 1 or "lr" in results.asks.get("figures", ()), results,
            "the lr analysis", "trials at 2 or more learning rates")
    return analyse(results, out_dir(args, results), original.published(results.asks))


def analyse(results: Results, out: Path, theirs: original.PublishedSet | None = None) -> list[Item]:
    """The lr figure (and, with published numbers drawn on it, theirs tabled beside ours) into `out`."""
    theirs = theirs if theirs is not None and theirs.figure == "lr" else None
    t = results.trials
    table = lr_table(t)
    arms = list(dict.fromkeys(table["arm"]))
    lrs = np.sort(table["lr"].unique())
    # One slot per lr tried, in order: grids are often irregular (0.01, 0.05, 1e6), and
    # a true log axis would leave most of the figure empty.
    slot = {lr: i for i, lr in enumerate(lrs)}
    bar = 0.8 / len(arms)

    fig, axes = new_figure(width=min(16.0, max(8.0, 0.5 * len(lrs) * len(arms) + 6)), height=4.8)
    ax = axes[0, 0]
    for i, arm in enumerate(arms):
        rows = table[table["arm"] == arm]
        centre = np.array([slot[lr] for lr in rows["lr"]]) + (i - (len(arms) - 1) / 2) * bar
        left, right = centre - bar / 2, centre + bar / 2
        ax.bar(left, rows["best_val_acc_mean"], width=right - left, align="edge", color=arm_color(arm),
               edgecolor="black", linewidth=0.6, label=arm_label(arm), zorder=2)
        for (idx, r), c, lo, hi in zip(rows.iterrows(), centre, left, right):
            if r["diverged"]:  # redraw hatched: the diverged marking
                ax.bar(lo, r["best_val_acc_mean"], width=hi - lo, align="edge", color="none",
                       edgecolor="black", hatch=DIVERGED_HATCH, linewidth=0.6, zorder=3)
                ax.annotate(f"diverged ({int(r['n_diverged'])}/{int(r['n_trials'])})", (c, r["best_val_acc_mean"]),
                            xytext=(0, 4), textcoords="offset points", rotation=90, ha="center", va="bottom",
                            fontsize=7, color="darkred")
            yerr = interval_bars(*(rows.loc[[idx], f"best_val_acc_{k}"] for k in ("mean", "ci_low", "ci_high")))
            if yerr is not None:
                ax.errorbar(c, r["best_val_acc_mean"], yerr=yerr, color="black", capsize=2, linewidth=0.8, zorder=4)
            seeds = t[t["run_id"].isin(r["run_ids"].split(";"))]
            done = seeds["outcome"].isin(RESULTS)
            ax.scatter(np.full(done.sum(), c), seeds.loc[done, "best_val_acc"], s=10, color="black", zorder=5)
            if (~done).any():  # failed / unfinished seeds: hollow, not in the mean
                ax.scatter(np.full((~done).sum(), c), seeds.loc[~done, "best_val_acc"], s=16, facecolor="white",
                           edgecolor="black", zorder=5)
                counts = seeds.loc[~done, "outcome"].value_counts()
                ax.annotate(", ".join(f"{n} {o}" for o, n in counts.items()), (c, 0.01), rotation=90,
                            ha="center", va="bottom", fontsize=7, color="black", zorder=6)
    if theirs:
        draw_original(ax, theirs, arms, slot, bar)
    chance_line(ax)
    ax.axhline(CHANCE + TRAIN_MARGIN, color="grey", linestyle=":", linewidth=1,
               label=f"'trains' threshold ({CHANCE + TRAIN_MARGIN:.1f})", zorder=1)
    ax.set_xticks(range(len(lrs)), [number(x) for x in lrs])
    ax.set_xlim(-0.6, len(lrs) - 0.4)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("initial learning rate (each value tried, in increasing order; not to scale)")
    ax.set_ylabel("best validation accuracy (fraction)")
    handles, labels = ours_first(*ax.get_legend_handles_labels(), theirs.source if theirs else "original")
    drawn_seeds = t[t["run_id"].isin({rid for ids in table["run_ids"] for rid in ids.split(";")})]
    for handle, label in marking_keys(table, drawn_seeds):
        handles.append(handle)
        labels.append(label)
    others = t.loc[~t["run_id"].isin(drawn_seeds["run_id"]), "outcome"].value_counts()
    if len(others):  # the bars show each lr's best setting; say what else the sweep holds
        handles.append(Line2D([], [], linestyle=""))
        labels.append("not in a bar (other settings at the same lr):\n"
                      + ", ".join(f"{n} {o}" for o, n in others.items()))
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    title = "Best validation accuracy per learning rate, BN vs no BN"
    finish(fig, title, results, f"batch {'/'.join(map(str, sorted(t['batch_size'].unique())))}")
    caption = ("Bars: each arm's best validation accuracy over the epochs, at each initial learning rate "
               f"(mean over seeds; dots are single seeds; error bars: {INTERVAL_WORDS}). Hatched bars diverged "
               "(training loss became NaN/inf) and show the accuracy reached before. Dashed: chance (0.1); dotted: the "
               f"threshold above which an arm counts as training ({CHANCE + TRAIN_MARGIN:.1f}, claim 3). "
               "Where other settings vary too, each bar is the best of them; the legend counts the trials of the "
               "others. The lr axis lists the values tried in order, equally spaced whatever their ratio.")
    if theirs:
        caption += (f" Dark grey dashed lines with hollow markers (circles BN, squares no BN): {theirs.source}, best "
                    "validation accuracy at the same learning rates. " + original.shape_note(results, theirs))
    items = [save_figure(fig, out, NAME, table, title, caption)]
    if theirs:
        items.append(save_table(out, "lr_original", original.lr_comparison(table, theirs),
                                f"Learning rate: ours beside {theirs.name}",
                                f"Best validation accuracy (%) per initial learning rate: ours (best setting of each "
                                f"arm, mean over seeds) beside {theirs.name}; a dash where one of the two did not "
                                "try that lr. " + original.shape_note(results, theirs), beside=True))
    return items


def marking_keys(table, drawn_seeds) -> list[tuple]:
    """The legend's keys to the bars' markings, (handle, label), each only where the figure has
    one: a key to a marking nothing carries ("diverged" with none diverged) reads as a finding."""
    keys = [(table["diverged"].any(), Patch(facecolor="white", edgecolor="black", hatch=DIVERGED_HATCH),
             "diverged (loss NaN/inf): accuracy it reached"),
            (drawn_seeds["outcome"].isin(RESULTS).any(),
             Line2D([], [], marker="o", color="black", linestyle="", markersize=4), "one seed"),
            ((~drawn_seeds["outcome"].isin(RESULTS)).any(),
             Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black", linestyle=""),
             "failed or unfinished seed (not in the bar)")]
    return [(handle, label) for shown, handle, label in keys if shown]


def draw_original(ax, theirs: original.PublishedSet, arms: list[str], slot: dict[float, int], bar: float) -> None:
    """The published accuracy per arm at the learning rates we tried too, over our bars."""
    shown = theirs.table[theirs.table["lr"].isin(list(slot))]
    for i, arm in enumerate(arms):
        if arm not in shown or shown.empty:
            continue
        x = np.array([slot[lr] for lr in shown["lr"]]) + (i - (len(arms) - 1) / 2) * bar
        plot_original(ax, x, shown[arm] / 100, arm, theirs.source)


if __name__ == "__main__":
    run_script(main)
