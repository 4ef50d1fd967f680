"""Batch-size study: best validation accuracy per batch size for BN and no BN, with
the total execution time and the time per step (claims 4 and 2).

Left: bars of the best validation accuracy (mean over seeds, error bars its 95 %
confidence interval), and on the
second axis the total execution time of those trials (train + validation, all
epochs). Right: median time per optimizer step, with the BN / no-BN ratio.

Where the study asks for published numbers on this figure (its ORIGINAL: the
original's slides, or a set of its own), their accuracies are drawn beside ours,
grey and dashed, and their accuracies and execution times tabled beside ours
(bnsweep/analysis/original.py). A set whose x is not ours (Wu & He's images per GPU,
group_norm) gets a third panel of its own, its axis labelled as theirs.

    python -m bnsweep.analysis.batch_size --experiment bnsweep-batch_size [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bnsweep.analysis import original
from bnsweep.analysis.claims import MEDIUM_BATCH
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
    ARM_MARKERS,
    DIVERGED_HATCH,
    INTERVAL_WORDS,
    arm_color,
    chance_line,
    interval_bars,
    log_scale,
    ours_first,
    plot_original,
)
from bnsweep.analysis.results import Results
from bnsweep.analysis.stats import mean_interval
from bnsweep.analysis.tables import arm_label, arms_present, averaged, run_step_times, trains_at
from bnsweep.formats import number

NAME = "batch_size"


def batch_table(results) -> pd.DataFrame:
    """Per arm and batch size: the best setting's accuracy over seeds, and the total time
    (s), time per step (ms) and epochs of the same trials."""
    t = results.trials
    step = run_step_times(results.history)
    t = t.assign(step_time_med=t["run_id"].map(step))
    frames = []
    for arm in arms_present(t):
        stats = trains_at(t, "batch_size", arm)
        # Times of the trials the accuracy bar averages: not of failed or unfinished ones.
        runs = [averaged(t[t["run_id"].isin(ids.split(";"))]) for ids in stats["run_ids"]]
        stats["time_total_s_mean"] = [r["time_total_s"].mean() for r in runs]
        stats["time_total_s_std"] = [r["time_total_s"].std(ddof=1) for r in runs]
        stats["step_time_ms_mean"] = [r["step_time_med"].mean() for r in runs]
        stats["step_time_ms_std"] = [r["step_time_med"].std(ddof=1) for r in runs]
        stats["step_time_ms_ci_low"], stats["step_time_ms_ci_high"] = (
            zip(*[mean_interval(r["step_time_med"]) for r in runs]) if runs else ((), ()))
        stats["epochs_completed_mean"] = [r["epochs_completed"].mean() for r in runs]
        stats.insert(0, "arm", arm)
        frames.append(stats)
    return pd.concat(frames, ignore_index=True)


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.batch_size`: the command line around analyse()."""
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    require(results.trials["batch_size"].nunique() > 1 or "batch_size" in results.asks.get("figures", ()), results,
            "the batch_size analysis", "trials at 2 or more batch sizes")
    return analyse(results, out_dir(args, results), original.published(results.asks))


def analyse(results: Results, out: Path, theirs: original.PublishedSet | None = None) -> list[Item]:
    """The batch-size figure (and, with published numbers drawn on it, theirs tabled beside ours) into `out`."""
    theirs = theirs if theirs is not None and theirs.figure == "batch_size" else None
    t = results.trials
    table = batch_table(results)
    arms = list(dict.fromkeys(table["arm"]))
    sizes = sorted(table["batch_size"].unique())
    pos = {b: i for i, b in enumerate(sizes)}
    width = 0.8 / len(arms)

    fig, axes = new_figure(1, 3 if theirs and theirs.own_axis else 2, width=6.6, height=5.4)
    ax, ax_step = axes[0][:2]
    ax_time = ax.twinx()
    lo, hi = MEDIUM_BATCH
    band = [pos[b] for b in sizes if lo <= b <= hi]
    if band:
        ax.axvspan(min(band) - 0.5, max(band) + 0.5, color="gold", alpha=0.15, zorder=0,
                   label=f"medium batch sizes ({lo}-{hi}, claim 4)")
    for i, arm in enumerate(arms):
        rows = table[table["arm"] == arm]
        x = np.array([pos[b] for b in rows["batch_size"]]) + (i - (len(arms) - 1) / 2) * width
        ax.bar(x, rows["best_val_acc_mean"], width, color=arm_color(arm), edgecolor="black", linewidth=0.6,
               label=f"{arm_label(arm)}: best val acc", zorder=2,
               yerr=interval_bars(*(rows[f"best_val_acc_{k}"] for k in ("mean", "ci_low", "ci_high"))), capsize=2)
        for xi, (_, r) in zip(x, rows.iterrows()):
            if r["n_diverged"]:
                ax.bar(xi, r["best_val_acc_mean"], width, color="none", edgecolor="black", hatch=DIVERGED_HATCH,
                       zorder=3)
                ax.annotate("diverged", (xi, r["best_val_acc_mean"]), xytext=(0, 3), textcoords="offset points",
                            rotation=90, ha="center", va="bottom", fontsize=7, color="darkred")
        ax_time.plot(x, rows["time_total_s_mean"], color=arm_color(arm), marker="D", markeredgecolor="black",
                     linestyle=":", label=f"{arm_label(arm)}: total execution time")
        ax_step.errorbar([pos[b] for b in rows["batch_size"]], rows["step_time_ms_mean"],
                         yerr=interval_bars(*(rows[f"step_time_ms_{k}"] for k in ("mean", "ci_low", "ci_high"))),
                         color=arm_color(arm),
                         marker=ARM_MARKERS.get(arm, "o"), capsize=2, label=arm_label(arm))
    if theirs and theirs.own_axis:
        draw_own_axis(axes[0][2], theirs)
    elif theirs:
        draw_original(ax, theirs, arms, pos, width)
    chance_line(ax)
    ax.set_xticks(range(len(sizes)), [str(b) for b in sizes])
    ax.set_xlabel("batch size (images per step)")
    ax.set_ylabel("best validation accuracy (fraction)")
    ax.set_ylim(0, 1)
    ax_time.set_ylabel("total execution time (s)")
    ax_time.set_ylim(bottom=0)
    ax.set_title("accuracy (bars, left axis) and total time (diamonds, right axis)", fontsize=10)
    h1, l1 = ours_first(*ax.get_legend_handles_labels(), theirs.source if theirs else "original")
    h2, l2 = ax_time.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)

    ratios = table.pivot_table(index="batch_size", columns="arm", values="step_time_ms_mean")
    if {"bn", "no_bn"} <= set(ratios.columns):
        for b, r in (ratios["bn"] / ratios["no_bn"]).dropna().items():
            ax_step.annotate(f"BN/no BN\n×{r:.2f}", (pos[b], ratios.loc[b].max()), xytext=(0, 8),
                             textcoords="offset points", ha="center", fontsize=7)
    log_scale(ax_step.yaxis)
    ax_step.set_xticks(range(len(sizes)), [str(b) for b in sizes])
    ax_step.set_xlim(-0.5, len(sizes) - 0.5)
    ax_step.set_xlabel("batch size (images per step)")
    ax_step.set_ylabel("time per optimizer step (ms, log scale)")
    ax_step.margins(y=0.25)
    ax_step.set_title("time per step", fontsize=10)
    ax_step.grid(alpha=0.3, which="both")
    ax_step.legend(fontsize=8)
    title = "Batch size: best validation accuracy, execution time and time per step"
    devices = ", ".join(sorted(set(t["device_name"].dropna().astype(str))))
    finish(fig, title, results, f"device {devices}")
    caption = ("Left: each arm's best validation accuracy per batch size (mean over seeds; hatched: diverged) "
               "with, on the right-hand axis, the total execution time of the same trials "
               "(training + validation over the epochs each ran; a diverged trial stops early). Right: time per "
               "optimizer step (median over epochs after the first, mean over seeds) with the BN/no-BN ratio. "
               f"Error bars: {INTERVAL_WORDS}. "
               "Times are only comparable between trials that ran alone on the same kind of device. Dashed: "
               "chance (0.1).")
    if theirs and theirs.own_axis:
        caption += (f" Third panel, theirs, not ours, grey and dashed, on an x axis of their own ({theirs.own_axis}, "
                    "not our batch size). " + original.shape_note(results, theirs))
    elif theirs:
        caption += (f" Dark grey dashed lines with hollow markers (circles BN, squares no BN): {theirs.source}, best "
                    "validation accuracy at the same batch sizes. " + original.shape_note(results, theirs))
    items = [save_figure(fig, out, NAME, table, title, caption)]
    if theirs and theirs.own_axis:
        items.append(save_table(
            out, "batch_size_original", original.own_axis_table(theirs), f"Batch size: {theirs.name}",
            f"As published, beside ours in the figure on an axis of its own ({theirs.own_axis}). "
            + original.shape_note(results, theirs), beside=True))
    elif theirs:
        items.append(save_table(
            out, "batch_size_original", original.batch_comparison(table, theirs),
            f"Batch size: ours beside {theirs.name}",
            f"Per batch size, ours (best setting of each arm, mean over seeds) beside {theirs.name}: best validation "
            "accuracy (%) and, where they published it, the execution time of the whole run (ours in seconds, "
            "theirs in minutes) with the BN / no-BN time ratio, the one time figure that compares across machines. "
            "Blank where one of the two did not try that batch size. " + original.shape_note(results, theirs),
            beside=True))
    return items


def draw_own_axis(ax, theirs: original.PublishedSet) -> None:
    """A published curve whose x is not ours, on a panel of its own, titled as theirs."""
    table = theirs.table.sort_values("batch_size")
    for arm in table.columns[1:]:
        if not arm.endswith("_time_min"):
            plot_original(ax, table["batch_size"], table[arm] / 100, arm, theirs.source)
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)  # their sizes halve: 32, 16, ..., 2
    ax.set_xticks(list(table["batch_size"]), [number(b) for b in table["batch_size"]])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{theirs.own_axis} (theirs, log scale)")
    ax.set_ylabel("their validation accuracy (fraction)")
    ax.set_title(f"theirs: {theirs.name}\n{theirs.about} (shape only)", fontsize=8, wrap=True)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def draw_original(ax, theirs: original.PublishedSet, arms: list[str], pos: dict[int, int], width: float) -> None:
    """The published accuracy per arm at the batch sizes we tried too, over our bars."""
    shown = theirs.table[theirs.table["batch_size"].isin(list(pos))]
    for i, arm in enumerate(arms):
        if arm not in shown or shown.empty:
            continue
        x = np.array([pos[int(b)] for b in shown["batch_size"]]) + (i - (len(arms) - 1) / 2) * width
        plot_original(ax, x, shown[arm] / 100, arm, theirs.source)


if __name__ == "__main__":
    run_script(main)
