"""Optuna study, per arm: the best trials, the search history (validation accuracy
in trial order, with the running best), each tuned parameter against the accuracy
it gave, and a parallel-coordinates view of whole configurations (is BN still
better once each arm's nuisance parameters are tuned?); each arm's best configuration
run again on fresh seeds beside the search's own best (the confirmation); and which
tuned setting mattered in each arm (fANOVA importances).

    python -m bnsweep.analysis.optuna --experiment bnsweep-optuna [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnsweep.analysis.claims import confirmations
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
from bnsweep.analysis.stats import mean_interval
from bnsweep.analysis.tables import arm_label, arms_present, averaged, varied
from bnsweep.formats import measured
from bnsweep.ledger import RESULTS

PREFERRED = ["lr", "batch_size", "dropout"]  # panel order of the tuned parameters
TOP = 5  # best trials listed per arm
OUTCOME_STYLE = {"completed": dict(marker="o"), "diverged": dict(marker="X"),
                 "stopped": dict(marker="v"), "failed": dict(marker="o", facecolor="white"),
                 "errored": dict(marker="o", facecolor="white"), "unfinished": dict(marker="o", facecolor="white"),
                 "running": dict(marker="o", facecolor="white")}


def search_table(results, tuned: list[str]) -> pd.DataFrame:
    """The searches' trials (not the confirmation runs), in start order within each arm."""
    t = results.trials[~confirmations(results.trials)].sort_values("trial_order")
    cols = ["bn_arm", "trial_order", "run_id", "run_name", *tuned, "best_val_acc", "best_epoch", "epochs_completed",
            "outcome"]
    table = t[cols].rename(columns={"bn_arm": "arm"})  # the searches are split by bn only
    table.insert(1, "trial_in_arm", table.groupby("arm").cumcount() + 1)
    table["running_best_val_acc"] = table.groupby("arm")["best_val_acc"].cummax()
    return table


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.optuna`: the command line around analyse()."""
    args = script_parser(__doc__).parse_args(argv)
    results = results or load(args)
    require(results.search == "optuna", results, "the optuna analysis", "an Optuna search (search tag 'optuna')")
    return analyse(results, out_dir(args, results))


def analyse(results, out, theirs=None) -> list:
    """The Optuna figures and tables of `results` into `out` (no published set has an
    Optuna counterpart: `theirs` is accepted, as every analysis takes it, and unused)."""
    tuned = sorted(varied(results.trials),
                   key=lambda k: (k not in PREFERRED, PREFERRED.index(k) if k in PREFERRED else 0))
    table = search_table(results, tuned)
    arms = arms_present(results.trials, by="bn_arm")
    confirm = confirmation_table(results.trials, table, tuned, arms)
    items = [best_trials(table, out), history_figure(results, table, confirm, arms, out)]
    if len(confirm):
        items.append(save_table(
            out, "optuna_confirmation", confirm, "Optuna: each arm's best configuration on fresh seeds",
            "Each arm's best configuration (the search's trial with the best final metric among those that ran "
            "furthest) trained again on seeds the search did not use: best validation accuracy (fraction), mean "
            "over those runs with its 95% t interval (from 2 runs) and n. The arms are compared on these (claim "
            "1). Beside them, the search's own best: the best of its single-seed trials, an optimistic number "
            "(the best of many noisy draws), and how far the confirmation fell below it.",
            confirm.rename(columns={"confirm_mean": "confirmed", "confirm_ci_low": "95% CI low",
                                    "confirm_ci_high": "95% CI high", "search_best": "search's best",
                                    "optimism": "search's best - confirmed"})))
    items.extend(importance_items(results, table, tuned, arms, out))
    items.append(params_figure(results, table, tuned, arms, out))
    items.append(parallel_coordinates(results, table, tuned, arms, out))
    return items


def best_trials(table: pd.DataFrame, out):
    best = (table.sort_values("best_val_acc", ascending=False).groupby("arm", sort=False).head(TOP)
            .sort_values(["arm", "best_val_acc"], ascending=[True, False]))
    best.insert(1, "rank", best.groupby("arm").cumcount() + 1)
    shown = best.drop(columns=["run_id", "trial_order", "running_best_val_acc"])
    return save_table(out, "optuna_best_trials", best, f"Optuna: the {TOP} best trials of each arm",
                      "Each arm's best trials by best validation accuracy (fraction), with the tuned "
                      "parameters. Trials stopped early by the scheduler have fewer epochs_completed.", shown)


def history_figure(results, table: pd.DataFrame, confirm: pd.DataFrame, arms: list[str], out):
    """Each arm's search in trial order with its running best, and its confirmation's mean and interval."""
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
        confirmed = confirm.loc[confirm["arm"] == arm]
        if len(confirmed) and confirmed["n"].iloc[0]:
            row = confirmed.iloc[0]
            ax.axhline(row["confirm_mean"], color=arm_color(arm), linestyle="--",
                       label=f"its best on {row['n']} fresh seeds (mean, 95% CI)")
            if math.isfinite(row["confirm_ci_low"]):
                ax.axhspan(row["confirm_ci_low"], row["confirm_ci_high"], color=arm_color(arm), alpha=0.15)
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
    return save_figure(fig, out, "optuna_history", table, title,
                       "Each point is one trial's best validation accuracy, in the order the trials started "
                       "within its arm (BN and no BN are separate searches with equal budgets); the line "
                       "is the best so far. X: diverged; hollow: failed or unfinished. Dashed, coloured: "
                       "the arm's best configuration run again on fresh seeds, mean and 95% t interval "
                       "(band; from 2 seeds or more). Dashed grey: chance (0.1).")


def params_figure(results, table: pd.DataFrame, tuned: list[str], arms: list[str], out):
    """Each tuned parameter against the accuracy it gave, a panel per parameter."""
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
    return save_figure(fig, out, "optuna_params", params, title,
                       "One point per trial: the value Optuna chose for each tuned parameter (x) and the "
                       "trial's best validation accuracy (y), coloured by arm. A parameter whose points "
                       "rise or fall together matters; a flat cloud does not. Dashed: chance (0.1).")


LOG_AXES = ("lr",)  # tuned on a log scale (search_spaces/optuna.py: loguniform)


def confirmation_table(trials: pd.DataFrame, table: pd.DataFrame, tuned: list[str], arms: list[str]) -> pd.DataFrame:
    """Per arm with confirmation runs: the configuration confirmed, their mean best_val_acc,
    95 % t interval and n, and the search's own best beside them."""
    confirm = trials[confirmations(trials)]
    rows = []
    for arm in arms:
        mine = confirm[confirm["bn_arm"] == arm]
        if mine.empty:
            continue
        runs = averaged(mine)["best_val_acc"].astype(float).dropna()
        low, high = mean_interval(runs)
        best = float(table.loc[table["arm"] == arm, "best_val_acc"].max())
        rows.append({"arm": arm, **{k: mine[k].iloc[0] for k in tuned}, "n": len(runs),
                     "confirm_mean": runs.mean(), "confirm_ci_low": low, "confirm_ci_high": high,
                     "search_best": best, "optimism": best - runs.mean(),
                     "seeds": ";".join(str(s) for s in mine["seed"])})
    return pd.DataFrame(rows, columns=["arm", *tuned, "n", "confirm_mean", "confirm_ci_low", "confirm_ci_high",
                                       "search_best", "optimism", "seeds"])


def _search_as_optuna(rows: pd.DataFrame, tuned: list[str], table: pd.DataFrame):
    """An arm's search as an in-memory Optuna study for optuna.importance: each trial's tuned
    values and its best validation accuracy (the report's measure of a trial), on the range
    the whole study tried (log scale for LOG_AXES); failed and unfinished trials left out."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from bnsweep.optuna_study import frozen_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for k in tuned:
        values = pd.to_numeric(table[k], errors="coerce")
        if values.notna().all():
            dists[k] = FloatDistribution(float(values.min()), float(values.max()),
                                         log=k in LOG_AXES and bool((values > 0).all()))
        else:
            dists[k] = CategoricalDistribution(sorted(table[k].astype(str).unique()))
    search = optuna.create_study(direction="maximize")
    done = rows[rows["outcome"].isin(RESULTS)].dropna(subset=["best_val_acc"])
    search.add_trials([frozen_trial({k: float(r[k]) if isinstance(dists[k], FloatDistribution) else str(r[k])
                                     for k in tuned}, dists, float(r["best_val_acc"]), "completed")
                       for _, r in done.iterrows()])
    return search


def importance_items(results, table: pd.DataFrame, tuned: list[str], arms: list[str], out) -> list:
    """Which tuned setting mattered in each arm: fANOVA importances (bnsweep/optuna_study.py),
    a table (every tuned key of every arm, with the reason where there are none) and a figure."""
    from bnsweep.optuna_study import importances

    rows = []
    for arm in arms:
        found, why = importances(_search_as_optuna(table[table["arm"] == arm], tuned, table)) if tuned else \
            ({}, "nothing tuned")
        for k in tuned:
            rows.append({"arm": arm, "key": k, "importance": found.get(k, math.nan), "note": why or ""})
    data = pd.DataFrame(rows, columns=["arm", "key", "importance", "note"])
    caption = ("Per arm, the share of the variance of its trials' best validation accuracy that each tuned "
               "setting explains over the range the study tried (fANOVA on a random forest, optuna.importance, "
               "64 trees, seed 0; the shares of an arm sum to 1). Finished and diverged trials of the search "
               "count; the confirmation runs do not. With few trials the forest, and so the shares, are rough; "
               "where there are none the note says why.")
    items = [save_table(out, "optuna_importance", data, "Optuna: which tuned setting mattered, per arm", caption)]
    fig, axes = new_figure(1, len(arms), width=4.4, height=0.5 * max(3, len(tuned)) + 1.6)
    for ax, arm in zip(axes[0], arms):
        mine = data[data["arm"] == arm]
        ax.barh(mine["key"], mine["importance"].fillna(0.0), color=arm_color(arm), edgecolor="black")
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("fANOVA importance (share of variance)")
        note = mine["note"].iloc[0] if len(mine) else ""
        ax.set_title(f"{arm_label(arm)}" + (f"\n({note[:60]})" if note else ""), fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    title = "Optuna: which tuned setting mattered"
    finish(fig, title, results)
    items.append(save_figure(fig, out, "optuna_importance_plot", data, title, caption))
    return items


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
            done = table.at[i, "outcome"] in RESULTS and not math.isnan(acc[i])
            ax.plot(x, ys, color=cmap(norm(acc[i])) if done else "grey", linestyle="-" if done else ":",
                    linewidth=1.6 if done else 1.0, alpha=0.9, zorder=3 if done else 2)
        for j, key in enumerate(axes_keys):
            ax.axvline(j, color="black", linewidth=0.8, zorder=1)
            _, lo, hi = scaled[key]
            for y, value in ((0, lo), (1, hi)):
                text = measured(10 ** value if is_log[key] else value, 3)
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
