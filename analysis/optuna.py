"""Optuna study, per arm: the best trials, the search history (validation accuracy
in trial order, with the running best) and each tuned parameter against the
accuracy it gave (is BN still better once each arm's nuisance parameters are tuned?).

    python analysis/optuna.py --experiment bnsweep-optuna [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

import pandas as pd

from bnsweep.report import (arm_color, chance_line, finish, load, log_scale, new_figure, out_dir, require, run_script,
                            save_figure, save_table, script_parser)
from bnsweep.results import arm_label, arms_present, varied

PREFERRED = ["lr", "batch_size", "dropout"]  # panel order of the tuned parameters
TOP = 5  # best trials listed per arm
OUTCOME_STYLE = {"completed": dict(marker="o"), "diverged": dict(marker="X"),
                 "failed": dict(marker="o", facecolor="white"), "killed": dict(marker="o", facecolor="white"),
                 "running": dict(marker="o", facecolor="white")}


def search_table(results, tuned: list[str]) -> pd.DataFrame:
    t = results.trials.sort_values("trial_order")
    cols = ["bn_arm", "trial_order", "run_id", "run_name", *tuned, "best_val_acc", "best_epoch", "epochs_completed",
            "outcome"]
    table = t[cols].rename(columns={"bn_arm": "arm"})  # the searches are split by bn only
    table.insert(1, "trial_in_arm", table.groupby("arm").cumcount() + 1)
    table["running_best_val_acc"] = table.groupby("arm")["best_val_acc"].cummax()
    return table


def main(argv=None, results=None):
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    require(results.search == "optuna", results, "optuna.py", "an Optuna search (search tag 'optuna')")
    out = out_dir(args, results)
    tuned = sorted(varied(results.trials), key=lambda k: (k not in PREFERRED, PREFERRED.index(k) if k in PREFERRED else 0))
    table = search_table(results, tuned)
    arms = arms_present(results.trials, by="bn_arm")
    items = []

    best = (table.sort_values("best_val_acc", ascending=False).groupby("arm", sort=False).head(TOP)
            .sort_values(["arm", "best_val_acc"], ascending=[True, False]))
    best.insert(1, "rank", best.groupby("arm").cumcount() + 1)
    shown = best.drop(columns=["run_id", "trial_order", "running_best_val_acc"])
    items.append(save_table(out, "optuna_best_trials", best, f"Optuna: the {TOP} best trials of each arm",
                            "Each arm's best trials by best validation accuracy (fraction), with the tuned "
                            "parameters. Trials stopped early by the scheduler have fewer epochs_completed.",
                            shown))

    fig, axes = new_figure(1, len(arms), width=5.2, height=4.2)
    for ax, arm in zip(axes[0], arms):
        rows = table[table["arm"] == arm]
        for outcome, g in rows.groupby("outcome"):
            style = OUTCOME_STYLE.get(outcome, {})
            ax.scatter(g["trial_in_arm"], g["best_val_acc"], color=arm_color(arm), edgecolor="black",
                       marker=style.get("marker", "o"), label=f"trial ({outcome})", zorder=3,
                       **({"facecolor": style["facecolor"]} if "facecolor" in style else {}))
        ax.step(rows["trial_in_arm"], rows["running_best_val_acc"], where="post", color=arm_color(arm),
                label="best so far")
        chance_line(ax)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"trial number within the arm (start order, {len(rows)} trials)")
        ax.set_ylabel("best validation accuracy of the trial (fraction)")
        ax.set_title(f"{arm_label(arm)}: search history", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    title = "Optuna search history per arm"
    finish(fig, title, results)
    items.append(save_figure(fig, out, "optuna_history", table, title,
                             "Each point is one trial's best validation accuracy, in the order the trials started "
                             "within its arm (BN and no BN are separate searches with equal budgets); the line "
                             "is the best so far. X: diverged; hollow: failed or unfinished. Dashed: chance (0.1)."))

    fig, axes = new_figure(1, max(1, len(tuned)), width=4.6, height=4.2)
    for ax, key in zip(axes[0], tuned or ["lr"]):
        for arm in arms:
            rows = table[table["arm"] == arm]
            ax.scatter(rows[key].astype(float), rows["best_val_acc"], color=arm_color(arm), edgecolor="black",
                       label=arm_label(arm), zorder=3)
        if key == "lr" and (table[key].astype(float) > 0).all():
            log_scale(ax.xaxis)
        chance_line(ax)
        ax.set_ylim(0, 1)
        ax.set_xlabel({"lr": "initial learning rate (log scale)", "batch_size": "batch size (images per step)",
                       "dropout": "dropout probability"}.get(key, key))
        ax.set_ylabel("best validation accuracy (fraction)")
        ax.set_title(f"accuracy vs {key}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    title = "Optuna: each tuned parameter against the accuracy it gave"
    finish(fig, title, results)
    params = table[["arm", "run_id", "run_name", *tuned, "best_val_acc", "outcome"]]
    items.append(save_figure(fig, out, "optuna_params", params, title,
                             "One point per trial: the value Optuna chose for each tuned parameter (x) and the "
                             "trial's best validation accuracy (y), coloured by arm. A parameter whose points "
                             "rise or fall together matters; a flat cloud does not. Dashed: chance (0.1)."))
    return items


if __name__ == "__main__":
    run_script(main)
