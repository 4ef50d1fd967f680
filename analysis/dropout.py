"""Dropout comparison: training and validation accuracy and loss per epoch for
no BN, no BN + dropout and BN (claim 5: BN regularises like dropout).

Training curves are dashed, validation curves solid; the space between an arm's
two lines is its train-validation gap. Each arm shows its best configuration;
with several seeds, lines are means and bands ±1 sd.

    python analysis/dropout.py --experiment bnsweep-dropout [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from matplotlib.lines import Line2D

from bnsweep.report import (chance_line, curves_table, finish, load, new_figure, out_dir, plot_curve_panel,
                            require, run_script, save_figure, script_parser)
from bnsweep.results import arm_label, best_config_per_arm

NAME = "dropout_curves"
PANELS = (("acc", "accuracy (fraction)"), ("loss", "cross-entropy loss (nats)"))


def main(argv=None, results=None):
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    t = results.trials
    require((t["dropout"].fillna(0) > 0).any(), results, "dropout.py", "trials with dropout")
    out = out_dir(args, results)
    runs = best_config_per_arm(t)
    table = curves_table(results, runs, ["train_acc", "val_acc", "train_loss", "val_loss"])
    last = table.sort_values("epoch").groupby("arm").last()
    fig, axes = new_figure(1, 2, width=6.6, height=4.8)
    for ax, (kind, ylabel) in zip(axes[0], PANELS):
        plot_curve_panel(ax, table, f"train_{kind}", "epoch", linestyle="--", label_suffix=" train")
        plot_curve_panel(ax, table, f"val_{kind}", "epoch", linestyle="-", label_suffix=" val")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if kind == "acc":
            chance_line(ax)
            ax.set_ylim(0, 1)
            ax.set_title("accuracy: train (dashed) vs validation (solid)", fontsize=10)
        else:
            ax.set_ylim(bottom=0)
            ax.set_title("loss: train (dashed) vs validation (solid)", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    gaps = [f"{arm_label(a)}: {last.loc[a, 'train_acc_mean'] - last.loc[a, 'val_acc_mean']:+.3f}"
            for a in dict.fromkeys(table["arm"])]
    handles.append(Line2D([], [], linestyle=""))
    labels.append("last-epoch train - val gap, " + "; ".join(gaps))
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    title = "Dropout comparison: no BN, no BN + dropout, BN"
    finish(fig, title, results)
    caption = ("Per epoch, training (dashed; augmented batches, training mode, dropout active) and validation "
               "(solid) accuracy and cross-entropy loss of each arm's best configuration; bands ±1 sd over "
               "seeds. An arm that overfits has a widening gap between its dashed and solid lines; a "
               "regulariser narrows it. Dashed grey: chance accuracy (0.1). Diverged epochs have no loss value.")
    return [save_figure(fig, out, NAME, table, title, caption)]


if __name__ == "__main__":
    run_script(main)
