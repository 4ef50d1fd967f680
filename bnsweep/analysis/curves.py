"""Training curves: training and validation accuracy against epoch and against
wall-clock time, BN vs no BN (claim 1: accuracy and training speed).

For each arm the curves of its best configuration (highest best validation
accuracy, mean over seeds, among the settings none of whose trials diverged or
failed: tables.best_config_per_arm); with several seeds, the line is the mean and
the band its 95 % confidence interval.

    python -m bnsweep.analysis.curves --experiment bnsweep-lr [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

from bnsweep.analysis.common import (
    Item,
    finish,
    load,
    new_figure,
    out_dir,
    run_script,
    save_figure,
    script_parser,
)
from bnsweep.analysis.plots import INTERVAL_WORDS, chance_line, curves_table, plot_curve_panel
from bnsweep.analysis.results import Results
from bnsweep.analysis.tables import arm_label, arms_present, best_config_per_arm

NAME = "curves"
METRICS = {"train_acc": "training accuracy (fraction)", "val_acc": "validation accuracy (fraction)"}


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.curves`: the command line around analyse()."""
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    return analyse(results, out_dir(args, results))


def analyse(results: Results, out: Path) -> list[Item]:
    """The training curves of each arm's best configuration into `out`."""
    table = curves_table(results, best_config_per_arm(results.trials), list(METRICS))
    fig, axes = new_figure(2, 2, width=6.2, height=4.0)
    for row, x in enumerate(("epoch", "time")):
        for col, (metric, ylabel) in enumerate(METRICS.items()):
            ax = axes[row, col]
            plot_curve_panel(ax, table, metric, x)
            chance_line(ax)
            ax.set_ylim(0, 1)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.set_title(f"{ylabel.split(' (')[0]} vs {'epoch' if x == 'epoch' else 'wall-clock time'}", fontsize=10)
    axes[0, 0].legend(fontsize=8, loc="best")
    # The study's arms as it names them; another normalisation's (GN, ...) named beside them.
    others = [arm_label(a) for a in arms_present(table) if a.removesuffix("+dropout") not in ("bn", "no_bn")]
    title = f"Training curves, BN vs no BN{''.join(f' vs {o}' for o in others)} (best configuration of each arm)"
    finish(fig, title, results)
    caption = ("Training accuracy (on the augmented training batches, in training mode, averaged over the epoch) "
               "and validation accuracy (after each epoch), against the epoch and against the cumulative "
               "wall-clock time of training plus validation. Each arm shows its best configuration (legend), chosen "
               "among the settings that neither diverged nor failed wherever the arm has one; "
               f"lines are means over seeds, bands {INTERVAL_WORDS}. Dashed: chance (0.1).")
    return [save_figure(fig, out, NAME, table, title, caption)]


if __name__ == "__main__":
    run_script(main)
