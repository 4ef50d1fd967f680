"""What a claim is and when trials can speak to it: the `Claim` a claim function returns,
the study's five statements (DESIGN.md §2), whether trials were long enough to measure
what a claim compares (`too_short`), the one comparison of two arms (`arm_difference`),
and the table a report writes (claims.csv). The claims themselves, the numbers each
compares, are in bnsweep/analysis/claims.py. How and why: docs/design.md §6.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bnsweep.analysis.stats import LEVEL, REFUTED, RULE, SUPPORTED, Comparison, one_sample, paired, verdict, welch
from bnsweep.analysis.tables import steps_per_epoch
from bnsweep.asks import CLAIM_NUMBERS

# How long trials must be to measure what a claim needs (docs/design.md §6).
# Accuracy with BN: its running statistics (used in validation) keep momentum^steps of
# their starting values (Keras convention); above 5 % a validation accuracy is of a BN
# model evaluated with statistics that are still wrong (DESIGN.md §2 "small runs"):
# 299 steps at the reference's 0.99 (it takes 6,000).
BN_SETTLED = 0.05
MIN_EPOCHS_SPEED = 3  # epochs to a target (claim 1) take 1..E or never: with 2 they tell arms apart by one step
# Time per step (claim 2): epoch 1 holds the warm-up (CUDA-graph capture, Triton and cuDNN
# set-up, different in the BN arm), so a step time needs a second epoch; and a step time
# is an epoch's training pass over its steps, so fixed per-epoch costs weigh 1/steps: at
# 50 steps one step's worth is 2 %, against the 27 % BN costs in the study (42 vs 33 min).
MIN_EPOCHS_TIMING = 2
MIN_STEPS_TIMING = 50
SMOKE = "a --smoke sweep: its trials test the code, not the claims"

EVIDENCE_RULE = (f"{RULE} Too short: BN's running statistics keeping more than {BN_SETTLED:.0%} of their start "
                 f"(momentum^steps) for accuracy, fewer than {MIN_EPOCHS_SPEED} epochs for epochs to a target, "
                 f"fewer than {MIN_EPOCHS_TIMING} epochs or {MIN_STEPS_TIMING} steps per epoch for time per step.")


@dataclass
class Claim:
    number: int
    statement: str
    verdict: str  # "supported", "refuted", "suggestive, leans supported|refuted (why)" or "undecided (why)"
    evidence: str  # the numbers behind the verdict, for a person
    numbers: dict[str, Any] = field(default_factory=dict)  # the same numbers, for the CSV
    tests: list[Comparison] = field(default_factory=list)  # every comparison the claim made
    decisive: Comparison | None = None  # the one its verdict rests on (stats.verdict)

    @property
    def decided(self) -> bool:
        return self.verdict in (SUPPORTED, REFUTED)

    @property
    def lean(self) -> str | None:
        """SUPPORTED or REFUTED where the verdict is, or is suggestive of, one of them; else None."""
        for side in (SUPPORTED, REFUTED):
            if self.verdict == side or self.verdict.startswith(f"suggestive, leans {side} "):
                return side
        return None

    def judge(self, tests: list[Comparison], short: str | None) -> None:
        self.tests = tests
        self.verdict, self.decisive = verdict(tests, short)
        self.evidence += "".join(f"; {c.text()}" for c in tests)


STATEMENTS = {
    1: "BN raises validation accuracy and training speed",
    2: "BN lengthens the execution time per step",
    3: "BN allows both higher and smaller learning rates",
    4: "BN works best with medium batch sizes (50-100)",
    5: "BN regularises like dropout",
}

assert tuple(STATEMENTS) == CLAIM_NUMBERS  # the vocabulary a study file's CLAIMS draws on (bnsweep/asks.py)

def speaks_to(claims: list[Claim], declared: Iterable[int] | None) -> list[int]:
    """The claims a study speaks to: those it declares (its CLAIMS, in its order), else every
    claim its trials could compare (one that made a comparison; one whose trials lack what it
    compares, e.g. batch sizes inside and outside 50-100, made none)."""
    if declared is not None:
        return list(declared)
    return [c.number for c in claims if c.tests]


def undecided(why: str) -> str:
    return f"undecided ({why})"


def too_short(trials: pd.DataFrame, needs: Iterable[str], smoke: bool | None = False) -> str | None:
    """Why `trials` cannot measure what a claim needs ("accuracy", "speed", "step time"), or None."""
    needs, why = set(needs), []
    bn = trials[trials["bn"] == True]  # noqa: E712
    if "accuracy" in needs and len(bn):
        steps = (steps_per_epoch(bn) * bn["epochs"].astype(int)).to_numpy()
        stale = bn["bn_momentum"].astype(float).to_numpy() ** steps
        if stale.max() > BN_SETTLED:
            i = int(stale.argmax())
            why.append(f"BN's running statistics keep {stale[i]:.0%} of their start after {steps[i]} steps "
                       f"(momentum {bn['bn_momentum'].iloc[i]:g}); accuracy needs at most {BN_SETTLED:.0%}")
    epochs = int(trials["epochs"].min()) if len(trials) else 0
    if "speed" in needs and epochs < MIN_EPOCHS_SPEED:
        why.append(f"{epochs} epoch{'s' if epochs != 1 else ''} per trial; epochs to a target need {MIN_EPOCHS_SPEED}")
    if "step time" in needs and len(trials):
        if epochs < MIN_EPOCHS_TIMING:
            why.append(f"{epochs} epoch per trial, whose steps include the warm-up; a step time needs "
                       f"{MIN_EPOCHS_TIMING}")
        steps = int(steps_per_epoch(trials).min())
        if steps < MIN_STEPS_TIMING:
            why.append(f"{steps} steps per epoch; a step time needs {MIN_STEPS_TIMING}")
    if why:
        return "trials too short to measure it: " + "; ".join(why)
    return SMOKE if smoke else None


def arm_difference(a: pd.DataFrame, b: pd.DataFrame, column: str, what: str, expects: str = ">") -> Comparison:
    """a - b of `column` over runs: paired over the runs that share a pair_id (the BN and
    no-BN trials of one grid point and seed), Welch's t where none do (e.g. Optuna arms)."""
    if "pair_id" in a and "pair_id" in b:
        m = a.drop_duplicates("pair_id").merge(b.drop_duplicates("pair_id"), on="pair_id", suffixes=("_a", "_b"))
        m = m.dropna(subset=["pair_id"])
        if len(m):
            return paired(m[f"{column}_a"], m[f"{column}_b"], what, expects=expects, unit="seed")
    return welch(a[column], b[column], what, expects=expects)


def level(values: pd.Series) -> str:
    """A mean with its interval and n, for a person: "0.812 (95 % CI 0.79 to 0.83, n=3)"."""
    c = one_sample(values, "")
    ci = f"{LEVEL:.0%} CI {c.low:.3g} to {c.high:.3g}, " if math.isfinite(c.low) else ""
    return f"{c.estimate:.3g} ({ci}n={c.n})"


def claims_table(claims: list[Claim], speaks_to: Iterable[int] = ()) -> pd.DataFrame:
    """One row per claim: its verdict and the comparison that verdict rests on (n, estimate,
    95 % interval, test, two-sided p); speaks_to marks those the study was designed to test
    (its CLAIMS, or speaks_to); the n: columns hold each claim's own numbers."""
    ours = set(speaks_to)
    rows = []
    for c in claims:
        d = c.decisive
        rows.append({"claim": c.number, "statement": c.statement, "speaks_to": c.number in ours, "verdict": c.verdict,
                     "compared": d.what if d else "", "n": d.n if d else 0,
                     "estimate": d.estimate if d else math.nan, "ci_low": d.low if d else math.nan,
                     "ci_high": d.high if d else math.nan, "test": d.test if d else "", "p": d.p if d else math.nan,
                     "evidence": c.evidence, **{f"n:{k}": v for k, v in c.numbers.items()}})
    return pd.DataFrame(rows)
