"""Optuna study, per arm: the best trials, the search history (validation accuracy
in trial order, with the running best), each tuned parameter against the accuracy
it gave, and a parallel-coordinates view of whole configurations (is BN still
better once each arm's nuisance parameters are tuned?).

    python -m bnsweep.analysis.optuna --experiment bnsweep-optuna [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnsweep.analysis.common import (
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
from bnsweep.analysis.plots import arm_color, chance_line, log_scale
from bnsweep.tables import arm_label, arms_present, varied

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
    require(results.search == "optuna", results, "the optuna analysis", "an Optuna search (search tag 'optuna')")
    out = out_dir(args, results)
    tuned = sorted(varied(results.trials),
                   key=lambda k: (k not in PREFERRED, PREFERRED.index(k) if k in PREFERRED else 0))
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
    items.append(parallel_coordinates(results, table, tuned, arms, out))
    return items


LOG_AXES = ("lr",)  # tuned on a log scale (search_spaces/optuna.py: loguniform)


def parallel_coordinates(results, table: pd.DataFrame, tuned: list[str], arms: list[str], out):
    """One polyline per trial through its tuned values and its accuracy, coloured by the
    accuracy, one panel per arm on shared scales: good regions show as bundles of bright lines."""
    import matplotlib as mpl

    axes_keys = [*tuned, "best_val_acc"]
    scaled = {}
    is_log = {}
    for key in axes_keys:  # each axis to [0, 1], the same scale in every arm's panel
        v = table[key].astype(float)
        is_log[key] = key in LOG_AXES and bool((v > 0).all())
        v = np.log10(v) if is_log[key] else v
        lo, hi = v.min(), v.max()
        scaled[key] = ((v - lo) / (hi - lo) if hi > lo else v * 0 + 0.5, lo, hi)
    acc = table["best_val_acc"].astype(float)
    norm = mpl.colors.Normalize(vmin=acc.min(), vmax=acc.max() if acc.max() > acc.min() else acc.min() + 1e-9)
    cmap = mpl.colormaps["viridis"]
    fig, axes = new_figure(1, len(arms), width=1.4 * len(axes_keys) + 2.2, height=4.4)
    x = np.arange(len(axes_keys))
    for ax, arm in zip(axes[0], arms):
        rows = table.index[table["arm"] == arm]
        for i in table.loc[rows].sort_values("best_val_acc", na_position="first").index:  # best drawn last
            ys = [scaled[k][0][i] for k in axes_keys]
            done = table.at[i, "outcome"] in ("completed", "diverged") and not math.isnan(acc[i])
            ax.plot(x, ys, color=cmap(norm(acc[i])) if done else "grey", linestyle="-" if done else ":",
                    linewidth=1.6 if done else 1.0, alpha=0.9, zorder=3 if done else 2)
        for j, key in enumerate(axes_keys):
            ax.axvline(j, color="black", linewidth=0.8, zorder=1)
            _, lo, hi = scaled[key]
            for y, value in ((0, lo), (1, hi)):
                text = f"{10 ** value:.3g}" if is_log[key] else f"{value:.3g}"
                ax.annotate(text, (j, y), xytext=(3, 0), textcoords="offset points", fontsize=7, va="center")
        ax.set_xticks(x, [{"batch_size": "batch size", "best_val_acc": "best val acc"}.get(k, k)
                          + (" (log)" if is_log[k] else "") for k in axes_keys])
        ax.set_yticks([])
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlim(-0.2, len(axes_keys) - 0.6)
        ax.set_title(f"{arm_label(arm)}: {len(rows)} trials", fontsize=10)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[0].tolist(),
                 label="best validation accuracy (fraction)", shrink=0.8)
    title = "Optuna: whole configurations, parallel coordinates"
    finish(fig, title, results)
    data = table[["arm", "run_id", "run_name", *tuned, "best_val_acc", "outcome"]].copy()
    for key in axes_keys:
        data[f"{key}_scaled"] = scaled[key][0]
    return save_figure(fig, out, "optuna_parallel", data, title,
                       "Each line is one trial: the values Optuna chose (one vertical axis per tuned parameter, "
                       "learning rate on a log scale) and the best validation accuracy it reached (last axis), "
                       "coloured by that accuracy. Every axis runs from the lowest value tried (bottom) to the "
                       "highest (top, numbers beside the axis), on the same scale in both arms. Dotted grey: "
                       "failed or unfinished trials.")


if __name__ == "__main__":
    run_script(main)
