"""Dropout comparison: training and validation accuracy and loss per epoch for
no BN, no BN + dropout and BN (claim 5: BN regularises like dropout).

Training curves are dashed, validation curves solid; the space between an arm's
two lines is its train-validation gap. Each arm shows its best configuration;
with several seeds, lines are means and bands their 95 % confidence intervals.

Where the study asks for the original's dropout result (ORIGINAL = "dropout": all
three arms near 0.30-0.35 validation accuracy, training accuracy near 1) is drawn
as a grey band and tabled beside ours (bnsweep/analysis/original.py).

    python -m bnsweep.analysis.dropout --experiment bnsweep-dropout [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.lines import Line2D

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
    INTERVAL_WORDS,
    ORIGINAL_COLOR,
    chance_line,
    curves_table,
    ours_first,
    plot_curve_panel,
)
from bnsweep.analysis.results import Results
from bnsweep.analysis.tables import arm_label, best_config_per_arm

NAME = "dropout_curves"
PANELS = (("acc", "accuracy (fraction)"), ("loss", "cross-entropy loss (nats)"))


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.dropout`: the command line around analyse()."""
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    require((results.trials["dropout"].fillna(0) > 0).any(), results, "the dropout analysis", "trials with dropout")
    return analyse(results, out_dir(args, results), original.published(results.asks))


def analyse(results: Results, out: Path, theirs: original.PublishedSet | None = None) -> list[Item]:
    """The dropout figure (and, asked for, the original's result beside ours) into `out`."""
    theirs = theirs if theirs is not None and theirs.figure == "dropout" else None
    t = results.trials
    runs = best_config_per_arm(t)
    table = curves_table(results, runs, ["train_acc", "val_acc", "train_loss", "val_loss"])
    last = table.sort_values("epoch").groupby("arm").last().loc[list(dict.fromkeys(table["arm"]))]  # arm order
    fig, axes = new_figure(1, 2, width=6.6, height=4.8)
    for ax, (kind, ylabel) in zip(axes[0], PANELS):
        plot_curve_panel(ax, table, f"train_{kind}", "epoch", linestyle="--", label_suffix=" train")
        plot_curve_panel(ax, table, f"val_{kind}", "epoch", linestyle="-", label_suffix=" val")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if kind == "acc":
            if theirs:  # their three arms' final validation accuracy, a range, not a curve
                ax.axhspan(*original.DROPOUT_VAL_ACC, facecolor=ORIGINAL_COLOR, alpha=0.18, linewidth=0, zorder=1,
                           label="original (slides): final val acc, all three arms")
            chance_line(ax)
            ax.set_ylim(0, 1)
            ax.set_title("accuracy: train (dashed) vs validation (solid)", fontsize=10)
        else:
            ax.set_ylim(bottom=0)
            ax.set_title("loss: train (dashed) vs validation (solid)", fontsize=10)
    handles, labels = ours_first(*axes[0, 0].get_legend_handles_labels())
    gaps = [f"{arm_label(a)}: {last.loc[a, 'train_acc_mean'] - last.loc[a, 'val_acc_mean']:+.3f}"
            for a in dict.fromkeys(table["arm"])]
    handles.append(Line2D([], [], linestyle=""))
    labels.append("last-epoch train - val gap, " + "; ".join(gaps))
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    title = "Dropout comparison: no BN, no BN + dropout, BN"
    finish(fig, title, results)
    caption = ("Per epoch, training (dashed; augmented batches, training mode, dropout active) and validation "
               f"(solid) accuracy and cross-entropy loss of each arm's best configuration; bands: {INTERVAL_WORDS}. "
               "An arm that overfits has a widening gap between its dashed and solid lines; a "
               "regulariser narrows it. Dashed grey: chance accuracy (0.1). Diverged epochs have no loss value.")
    if theirs:
        caption += (" Grey band: the original study's final validation accuracy, 0.30-0.35 in all three "
                    "arms (its slides; training accuracy near 1). " + original.shape_note(results, theirs))
    items = [save_figure(fig, out, NAME, table, title, caption)]
    if theirs:
        items.append(save_table(out, "dropout_original", original.dropout_comparison(last),
                                "Dropout: ours beside the original (slides)",
                                "The last epoch's training and validation accuracy (fractions) of each arm's best "
                                "configuration, mean over seeds, beside the original study's (its slides, in "
                                "words: all three arms near 0.30-0.35 validation accuracy, training accuracy near "
                                "1). " + original.shape_note(results, theirs), beside=True))
    return items


if __name__ == "__main__":
    run_script(main)
