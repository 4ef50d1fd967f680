"""Summary: per study a table (accuracy over seeds, outcomes, time per step and
total time per arm and setting), and the study's five claims (DESIGN.md §2)
each judged from the data: supported, refuted, or undecided with the reason.

    python analysis/summary.py --experiment bnsweep-lr [--experiment bnsweep-dropout ...]
                               [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from bnsweep.report import load, out_dir, run_script, save_table, script_parser
from bnsweep.results import ACC_TOLERANCE, CHANCE, STUDY_CLAIMS, TIME_TOLERANCE, TRAIN_MARGIN, claims_table, \
    evaluate_claims, study_table

SHOWN = ["arm", "n_trials", "best_val_acc_mean", "best_val_acc_std", "n_diverged", "n_failed", "n_unfinished",
         "train_acc_last_mean", "val_acc_last_mean", "epochs_completed_mean", "step_time_ms_median",
         "time_total_s_mean"]


def main(argv=None, results=None):
    args = script_parser(__doc__, many=True).parse_args(argv)
    items = []
    for experiment in args.experiment:
        res = results if results is not None and results.experiment == experiment else load(args, experiment)
        out = out_dir(args, res)
        suffix = "" if len(args.experiment) == 1 else f"_{experiment}"
        table = study_table(res.trials, res.history)
        keys = [c for c in table.columns if c not in SHOWN and c not in ("seeds", "run_ids", "partial")
                and not c.startswith("best_val_acc_")]
        shown = table[["arm", *keys, *SHOWN[1:]]]
        items.append(save_table(out, f"summary{suffix}", table, f"Summary of study {res.study!r} ({experiment})",
                                "Per arm and setting: best validation accuracy over epochs (mean and sd over "
                                "seeds; failed and unfinished trials are counted, not averaged), diverged / "
                                "failed / unfinished trials, last-epoch train and validation accuracy, epochs "
                                "completed, median time per optimizer step (ms) and total time (s).", shown))
        claims = evaluate_claims(res.trials, res.history)
        ours = STUDY_CLAIMS.get(res.study, ())
        table = claims_table(claims, ours)
        items.append(save_table(
            out, f"claims{suffix}", table, f"The study's claims, judged from {experiment}",
            f"Each claim of the study checked against this experiment. Rules: an arm 'trains' at a setting when its "
            f"best validation accuracy exceeds chance + {TRAIN_MARGIN} = {CHANCE + TRAIN_MARGIN:.1f} without "
            f"diverging; accuracies closer than {ACC_TOLERANCE} (or the sd over seeds, if larger) are not told "
            f"apart; step-time ratios within 1 ± {TIME_TOLERANCE} are timing noise. speaks_to: the claims study "
            f"{res.study!r} was designed to test; the others are judged from what its trials happen to hold, and "
            "are undecided, with the reason, where that is too little.",
            table[["claim", "statement", "speaks_to", "verdict", "evidence"]]))
        for c in claims:
            mark = "*" if c.number in ours else " "  # the claims this study speaks to
            print(f"{mark} claim {c.number} ({c.statement}): {c.verdict} — {c.evidence}")
    return items


if __name__ == "__main__":
    run_script(main)
