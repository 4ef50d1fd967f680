"""Summary: per study a table (accuracy over seeds, outcomes, time per step and
total time per arm and setting), and the study's five claims (DESIGN.md §2)
each judged from the data: supported or refuted where the evidence suffices
(evidence.EVIDENCE_RULE: a 95 % interval, its test and n, docs/design.md §6), else
suggestive or undecided with the reason. Every table also as LaTeX (booktabs).

    python -m bnsweep.analysis.summary --experiment bnsweep-lr [--experiment bnsweep-dropout ...]
                                       [--tracking-uri URI] [--out DIR]
"""

from __future__ import annotations

from pathlib import Path

from bnsweep.analysis.claims import evaluate_claims
from bnsweep.analysis.common import Item, load, out_dir, run_script, save_table, script_parser
from bnsweep.analysis.evidence import EVIDENCE_RULE, Claim, claims_table, speaks_to
from bnsweep.analysis.results import Results
from bnsweep.analysis.scale import smoke_mode
from bnsweep.analysis.tables import CHANCE, TRAIN_MARGIN, study_table

# The summary's columns as the report shows them: short headers, each with its unit
# (the CSV keeps the analysis names).
SHOWN = {"arm": "arm", "n_trials": "trials", "best_val_acc_mean": "best val acc", "best_val_acc_std": "sd",
         "best_val_acc_n": "n", "best_val_acc_ci_low": "95% CI low", "best_val_acc_ci_high": "95% CI high",
         "n_diverged": "diverged", "n_failed": "failed", "n_unfinished": "unfinished",
         "train_acc_last_mean": "last train acc", "val_acc_last_mean": "last val acc",
         "epochs_completed_mean": "epochs run", "step_time_ms_median": "step (ms)", "time_total_s_mean": "total (s)"}


# The claims table as shown (and in LaTeX): the comparison each verdict rests on.
CLAIM_COLUMNS = {"claim": "claim", "statement": "statement", "speaks_to": "speaks to", "verdict": "verdict",
                 "compared": "compared", "estimate": "estimate", "ci_low": "95% CI low", "ci_high": "95% CI high",
                 "n": "n", "test": "test", "p": "p", "evidence": "evidence"}


def main(argv=None, results=None):
    """`python -m bnsweep.analysis.summary`: the command line around analyse(), per experiment."""
    args = script_parser(__doc__, many=True).parse_args(argv)
    items = []
    for experiment in args.experiment:
        res = results if results is not None and results.experiment == experiment else load(args, experiment)
        claims = evaluate_claims(res.trials, res.history, smoke_mode(res))
        suffix = "" if len(args.experiment) == 1 else f"_{experiment}"
        items += analyse(res, out_dir(args, res), claims, suffix)
        ours = speaks_to(claims, res.asks.get("claims"))
        for c in claims:
            mark = "*" if c.number in ours else " "  # the claims this study speaks to
            print(f"{mark} claim {c.number} ({c.statement}): {c.verdict} — {c.evidence}")
    return items


def analyse(results: Results, out: Path, claims: list[Claim], suffix: str = "") -> list[Item]:
    """The summary table and the claims table (the claims as judged once, by the caller) into `out`."""
    table = study_table(results.trials, results.history)
    keys = [c for c in table.columns if c not in SHOWN and c not in ("seeds", "run_ids", "partial")
            and not c.startswith("best_val_acc_")]
    shown = table[["arm", *keys, *list(SHOWN)[1:]]].rename(columns=SHOWN)
    name = results.experiment
    items = [save_table(out, f"summary{suffix}", table, f"Summary of study {results.study!r} ({name})",
                        "Per arm and setting: trials; best validation accuracy over epochs (fraction, mean, "
                        "sd, the n runs averaged and the 95% t interval of the mean, from 2 or more; failed "
                        "and unfinished trials are counted, not averaged); "
                        "diverged / failed / unfinished trials; last-epoch train and validation accuracy; "
                        "epochs completed; median time per optimizer step (ms) and total time (s).", shown)]
    ours = speaks_to(claims, results.asks.get("claims"))
    table = claims_table(claims, ours)
    declared = ("declares (its CLAIMS)" if "claims" in results.asks
                else "does not declare (no CLAIMS): those its trials could compare")
    items.append(save_table(
        out, f"claims{suffix}", table, f"The study's claims, judged from {name}",
        f"Each claim of the study checked against this experiment. {EVIDENCE_RULE} Per claim: the "
        "comparison its verdict rests on (the first that fails or is open, else the weakest), its estimate "
        "(a difference, or a ratio for time per step), the 95% confidence interval, n (seeds, or matched "
        "pairs), the test and its two-sided p; the evidence lists every comparison. An arm 'trains' at a "
        f"setting when its best validation accuracy exceeds chance + {TRAIN_MARGIN} = "
        f"{CHANCE + TRAIN_MARGIN:.1f} without diverging. speaks to: the claims study {results.study!r} "
        f"{declared}; the others are judged from what its trials happen to hold.",
        table[list(CLAIM_COLUMNS)].rename(columns=CLAIM_COLUMNS)))
    return items


if __name__ == "__main__":
    run_script(main)
