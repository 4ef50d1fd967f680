"""The statistics behind a verdict (docs/design.md §6): every compared number with its n,
a 95 % confidence interval and the test that gave it, all from scipy.stats; and the one
rule, `verdict`, that turns a claim's comparisons into supported, refuted, suggestive
or undecided.

Paired where the design pairs (the BN and no-BN trials of a grid point share their seed,
so the same data order and augmentation draws: `pair_id`), Welch's unpaired t where it
does not (Optuna arms, different batch sizes), and a one-sample t on the log of paired
ratios for times (claim 2: ratios are what compare across machines, and their logs are
symmetric about no effect).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # two-sided; a verdict in one direction is then a one-sided test at 2.5 %
# Runs behind each compared number before a verdict (docs/design.md §6): a t interval from
# 2 runs rests on an sd with 1 degree of freedom, whose own 95 % interval runs from 0.45 to
# 32 times the estimate (chi-square); from 3 runs, 0.52 to 6.3 times, the least a verdict takes.
MIN_REPLICATES = 3

SUPPORTED, REFUTED = "supported", "refuted"

RULE = (f"A claim is supported or refuted only when the {LEVEL:.0%} confidence interval of each difference it "
        f"compares excludes no effect (0, or a ratio of 1) in one direction, with at least {MIN_REPLICATES} runs "
        "behind each number (seeds of a configuration; matched BN / no-BN pairs) and trials long enough to measure "
        "it (not a --smoke sweep). Arms are compared by a paired t test over the trials that share a seed and "
        "every setting but BN (pair_id), by Welch's t where nothing pairs them (Optuna arms, different batch "
        "sizes); time per step (claim 2) by a one-sample t on the log of the BN / no-BN ratio of matched pairs, "
        f"one device kind at a time. With fewer than {MIN_REPLICATES} runs a difference is 'suggestive' (the "
        "verdict says which way it leans); an interval that includes no effect, a premise that does not hold, or "
        "trials too short are 'undecided', with the reason.")


@dataclass(frozen=True)
class Comparison:
    """One compared number: its estimate, n, 95 % interval, and the test that gave them."""

    what: str  # for a person: "best val acc, BN - no BN"
    estimate: float
    low: float
    high: float
    n: int  # runs behind the weaker side: pairs, or the smaller group's runs
    test: str  # "paired t", "Welch t", "one-sample t on log ratios", ...
    p: float  # two-sided, against `null`
    null: float = 0.0  # no effect: 0 for a difference, 1 for a ratio, a threshold for a level
    expects: str = ">"  # the claim holds where the estimate is on this side of `null`
    unit: str = "seed"  # what one of the n is
    premise: str = ""  # set for a condition the claim needs, not the claim: why it is undecided without it

    def _above(self, x: float) -> bool:
        return x > self.null if self.expects == ">" else x < self.null

    @property
    def leans(self) -> bool | None:
        """Whether the estimate is on the claim's side of no effect (None: exactly at it, or unknown)."""
        if not math.isfinite(self.estimate) or self.estimate == self.null:
            return None
        return self._above(self.estimate)

    @property
    def side(self) -> str | None:
        """"holds" where the whole interval is on the claim's side, "fails" where on the other, else None."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        if self._above(self.low) and self._above(self.high):
            return "holds"
        if not (self._above(self.low) or self._above(self.high)) and self.null not in (self.low, self.high):
            return "fails"
        return None

    def text(self) -> str:
        ci = (f"{LEVEL:.0%} CI {_num(self.low, self.null)} to {_num(self.high, self.null)}"
              if math.isfinite(self.low) else "no interval from one run")
        p = f", p={self.p:.2g}" if math.isfinite(self.p) else ""
        return f"{self.what} {_num(self.estimate, self.null)} ({ci}; {self.test}, n={self.n}{p})"


def _num(x: float, null: float) -> str:
    """A difference signed (+0.120), a ratio or a level plain (1.06)."""
    return f"{x:+.3g}" if null == 0 else f"{x:.3g}"


def _quiet(test, *args, **kwargs):
    """A scipy test whose data may have no spread (identical runs): scipy returns the
    degenerate answer (an interval of zero width, p 0 or 1) and warns; the answer stands."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = test(*args, **kwargs)
        ci = result.confidence_interval(LEVEL)
    return float(ci.low), float(ci.high), float(result.pvalue)


def _values(x) -> np.ndarray:
    v = np.asarray(x, dtype=float)
    return v[np.isfinite(v)]


def one_sample(values, what: str, *, null: float = 0.0, expects: str = ">", unit: str = "seed",
               test: str = "one-sample t", premise: str = "") -> Comparison:
    """The mean of `values` against `null` (a level, or paired differences against 0)."""
    v = _values(values)
    if len(v) < 2:
        est = float(v[0]) if len(v) else math.nan
        return Comparison(what, est, math.nan, math.nan, len(v), test, math.nan, null, expects, unit, premise)
    low, high, p = _quiet(stats.ttest_1samp, v, null)
    return Comparison(what, float(v.mean()), low, high, len(v), test, p, null, expects, unit, premise)


def paired(a, b, what: str, *, expects: str = ">", unit: str = "matched pair", premise: str = "") -> Comparison:
    """Mean of a - b over matched pairs (equal-length, aligned): scipy's paired t (ttest_rel)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    return one_sample(a[keep] - b[keep], what, expects=expects, unit=unit, test="paired t", premise=premise)


def welch(a, b, what: str, *, expects: str = ">", unit: str = "seed", premise: str = "") -> Comparison:
    """mean(a) - mean(b) of two unpaired groups: Welch's t (unequal variances); n is the smaller group."""
    a, b = _values(a), _values(b)
    n = min(len(a), len(b))
    est = float(a.mean() - b.mean()) if n else math.nan
    if n < 2:
        return Comparison(what, est, math.nan, math.nan, n, "Welch t", math.nan, 0.0, expects, unit, premise)
    low, high, p = _quiet(stats.ttest_ind, a, b, equal_var=False)
    return Comparison(what, est, low, high, n, "Welch t", p, 0.0, expects, unit, premise)


def log_ratio(a, b, what: str, *, expects: str = ">", unit: str = "matched pair") -> Comparison:
    """The geometric mean of a / b over matched pairs, with its interval: a one-sample t
    on log(a / b), transformed back (no effect: a ratio of 1)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    logs = one_sample(np.log(a[keep] / b[keep]), what, expects=expects, unit=unit,
                      test="one-sample t on log ratios")
    e = lambda x: math.exp(x) if math.isfinite(x) else math.nan  # noqa: E731
    return Comparison(what, e(logs.estimate), e(logs.low), e(logs.high), logs.n, logs.test, logs.p, 1.0,
                      expects, unit)


def welch_contrast(groups: Sequence, weights: Sequence[float], what: str, *, expects: str = ">",
                   unit: str = "seed") -> Comparison:
    """sum(w_i * mean_i) of independent groups, with a Welch-Satterthwaite t interval (the
    two-group case is Welch's t): for three unpaired arms, as claim 5's contrast."""
    groups = [_values(g) for g in groups]
    n = min(len(g) for g in groups)
    est = float(sum(w * g.mean() for w, g in zip(weights, groups))) if n else math.nan
    if n < 2:
        return Comparison(what, est, math.nan, math.nan, n, "Welch t (contrast)", math.nan, 0.0, expects, unit)
    parts = [w * w * g.var(ddof=1) / len(g) for w, g in zip(weights, groups)]
    se = math.sqrt(sum(parts))
    if se == 0:  # identical runs: the interval has no width, as scipy's tests give it
        return Comparison(what, est, est, est, n, "Welch t (contrast)", 0.0 if est else 1.0, 0.0, expects, unit)
    df = se ** 4 / sum(q * q / (len(g) - 1) for q, g in zip(parts, groups))
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return Comparison(what, est, est - half, est + half, n, "Welch t (contrast)", p, 0.0, expects, unit)


def verdict(comparisons: Sequence[Comparison], short: str | None = None) -> tuple[str, Comparison | None]:
    """The one rule (RULE, docs/design.md §6): the verdict of a claim from its comparisons
    (all must hold for "supported"; any that fails refutes it), and the comparison the
    verdict rests on, for the claims table. `short`: why these trials cannot measure it."""
    if short:
        return f"undecided ({short})", (comparisons[0] if comparisons else None)
    premises = [c for c in comparisons if c.premise]
    claims = [c for c in comparisons if not c.premise]
    for c in premises:
        if c.leans is not True:
            return f"undecided ({c.premise}: {c.text()})", c
    weakest = min(comparisons, key=lambda c: c.n)
    if weakest.n < MIN_REPLICATES:
        leans = [c.leans for c in claims]
        if False in leans:
            lean = REFUTED
        elif all(leans):
            lean = SUPPORTED
        else:
            c = claims[leans.index(None)]
            return f"undecided ({c.what} shows no difference: {c.text()})", c
        unit = weakest.unit + ("s" if weakest.n != 1 else "")
        return f"suggestive, leans {lean} ({weakest.n} {unit}; a verdict needs {MIN_REPLICATES})", weakest
    for c in premises:
        if c.side != "holds":
            return f"undecided ({c.premise}: {c.text()})", c
    failed = [c for c in claims if c.side == "fails"]
    if failed:
        return REFUTED, failed[0]
    unsure = [c for c in claims if c.side != "holds"]
    if unsure:
        c = unsure[0]
        return f"undecided (the interval includes no effect: {c.text()})", c
    return SUPPORTED, max(claims, key=lambda c: c.p if math.isfinite(c.p) else 1.0)


def mean_interval(values) -> tuple[float, float]:
    """The 95 % t interval of a mean (NaN, NaN from fewer than 2 values): the bands and error bars of figures."""
    v = _values(values)
    if len(v) < 2:
        return math.nan, math.nan
    low, high, _ = _quiet(stats.ttest_1samp, v, 0.0)
    return low, high
