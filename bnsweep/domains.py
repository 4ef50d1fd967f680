"""One entry of an Optuna search's SPACE, whatever vocabulary wrote it.

A search-space file may write a distribution three ways, all read into one
`Domain` that bnsweep checks before anything starts and that `sweep` hands to
Ray Tune (whose OptunaSearch turns it into Optuna's own):

    bnsweep tuples         Ray Tune                     Optuna
    ("uniform", lo, hi)    tune.uniform(lo, hi)         FloatDistribution(lo, hi)
    ("loguniform", lo, hi) tune.loguniform(lo, hi)      FloatDistribution(lo, hi, log=True)
                           tune.quniform(lo, hi, q)     FloatDistribution(lo, hi, step=q)
    ("intuniform", lo, hi) tune.randint(lo, hi + 1)     IntDistribution(lo, hi)
    ("intloguniform",...)  tune.lograndint(lo, hi + 1)  IntDistribution(lo, hi, log=True)
                           tune.qrandint(lo, hi, q)     IntDistribution(lo, hi, step=q)
    ("choice", [v, ...])   tune.choice([v, ...])        CategoricalDistribution([v, ...])

Bounds are inclusive in the tuples and in Optuna; Tune's randint and lograndint
exclude their upper bound, and its qrandint includes it, as Ray's OptunaSearch
converts them (ray/tune/search/optuna/optuna_search.py, Ray 2.60), so a Tune
form here means exactly what Tune would sample. What cannot be checked before
the sweep is refused with its reason: tune.sample_from (a function), tune.randn
(unbounded), quantised log scales (Optuna ignores the step there).

Nothing here imports Ray or Optuna: their objects are recognised by their
class's module and name, so a file that uses neither loads without them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bnsweep.formats import number

TUPLE_FORMS = {"uniform": 2, "loguniform": 2, "intuniform": 2, "intloguniform": 2, "choice": 1}
# All the whole numbers of an integer range are checked against the rules between keys
# (batch size against the training set) up to this many; wider ranges by their ends.
MAX_ENUMERATED = 2_000


class DomainError(ValueError):
    """An entry that is not a distribution bnsweep can check; the message says why."""


@dataclass(frozen=True)
class Domain:
    """A distribution: kind "float" or "int" (low..high, inclusive; log scale; a step)
    or "choice" (values)."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    values: tuple = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {list(self.values)!r}"
        scale = "log-uniform" if self.log else "uniform"
        step = f" in steps of {number(self.step)}" if self.step else ""
        what = "whole numbers" if self.kind == "int" else "real numbers"
        return f"{scale} {what} from {number(self.low)} to {number(self.high)}{step}"

    def ends(self) -> list:
        """The values every point of the domain lies between (a choice: all of them)."""
        return list(self.values) if self.kind == "choice" else [self.low, self.high]

    def candidates(self) -> list:
        """Values to check against the rules between keys: every value a choice or a
        narrow integer range can take, else the ends."""
        if self.kind == "int":
            step = int(self.step or 1)
            count = (int(self.high) - int(self.low)) // step + 1
            if count <= MAX_ENUMERATED:
                return list(range(int(self.low), int(self.high) + 1, step))
        return self.ends()


def parse(entry: Any) -> Domain:
    """Read a SPACE entry of an Optuna search. Raises DomainError with the reason."""
    if isinstance(entry, tuple) and entry and isinstance(entry[0], str):
        return _from_tuple(entry)
    cls = type(entry)
    module, name = cls.__module__, cls.__name__
    if module.startswith("ray.tune"):
        return _from_tune(entry, name)
    if module.startswith("optuna.distributions"):
        return _from_optuna(entry, name)
    if isinstance(entry, dict) and set(entry) == {"grid_search"}:
        raise DomainError("tune.grid_search is a grid axis, and SEARCH is 'optuna': sample it with tune.choice, "
                          "or make the file a grid (SEARCH = 'grid')")
    if isinstance(entry, list):
        raise DomainError("a list is a grid axis and cannot be mixed with an Optuna search; sample it with "
                          "('choice', [...]) or tune.choice([...])")
    raise DomainError(f"is not a distribution: write one of {', '.join(TUPLE_FORMS)} as a tuple, e.g. "
                      "('loguniform', 1e-4, 1.0), or a Ray Tune or Optuna distribution")


def _from_tuple(entry: tuple) -> Domain:
    kind, args = entry[0], entry[1:]
    if kind not in TUPLE_FORMS:
        raise DomainError(f"{kind!r} is not a distribution bnsweep knows; use one of {', '.join(TUPLE_FORMS)}")
    if len(args) != TUPLE_FORMS[kind]:
        raise DomainError(f"{kind} takes {TUPLE_FORMS[kind]} argument(s), got {len(args)}")
    if kind == "choice":
        return _choice(args[0])
    return _range("int" if kind.startswith("int") else "float", args[0], args[1], log="log" in kind)


def _from_tune(entry: Any, name: str) -> Domain:
    if name == "Categorical":
        return _choice(entry.categories)
    if name == "Function":
        raise DomainError("tune.sample_from draws from a function, whose values cannot be checked before the "
                          "sweep starts; list them with tune.choice or give a range")
    if name not in ("Float", "Integer"):
        raise DomainError(f"Ray Tune's {name} has no meaning in a bnsweep search space")
    sampler = entry.get_sampler()
    step = None
    if _is(sampler, "Quantized"):
        step, sampler = sampler.q, sampler.sampler
    if _is(sampler, "Normal"):
        raise DomainError("tune.randn is unbounded, so its values cannot be checked against the key's range; "
                          "use tune.uniform or tune.loguniform")
    if not _is(sampler, "Uniform") and not _is(sampler, "LogUniform"):
        raise DomainError(f"Ray Tune's {type(sampler).__name__} sampler has no meaning in a bnsweep search space")
    log = _is(sampler, "LogUniform")
    if name == "Float":
        return _range("float", entry.lower, entry.upper, log=log, step=step)
    # Integer: Tune's upper bound is exclusive, except with a step (OptunaSearch's conversion).
    return _range("int", entry.lower, entry.upper if step else entry.upper - 1, log=log, step=step)


def _is(obj: Any, class_name: str) -> bool:
    """Whether obj is of a class named so, or of a subclass (Tune's samplers are nested subclasses)."""
    return any(c.__name__ == class_name for c in type(obj).__mro__)


def _from_optuna(entry: Any, name: str) -> Domain:
    if name == "CategoricalDistribution":
        return _choice(entry.choices)
    if name in ("FloatDistribution", "IntDistribution"):
        return _range("int" if name == "IntDistribution" else "float", entry.low, entry.high, log=entry.log,
                      step=entry.step)
    raise DomainError(f"Optuna's {name} is not supported; use FloatDistribution, IntDistribution or "
                      "CategoricalDistribution")


def _choice(values: Any) -> Domain:
    if not isinstance(values, (list, tuple)) or not values:
        raise DomainError("a choice needs a non-empty list of values")
    return Domain("choice", values=tuple(values))


def _range(kind: str, low: Any, high: Any, log: bool = False, step: Any = None) -> Domain:
    if kind == "int" and step == 1:  # every whole number: no step
        step = None
    for bound in (low, high, *([step] if step is not None else [])):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise DomainError(f"bounds and steps must be finite numbers, got {bound!r}")
    if kind == "int" and not all(float(b).is_integer() for b in (low, high, *([step] if step else []))):
        raise DomainError(f"an integer distribution needs whole-number bounds and step, got {low!r}, {high!r}"
                          + (f", step {step!r}" if step else ""))
    if not low < high:
        raise DomainError(f"the lower bound {low!r} must be below the upper bound {high!r}")
    if log and low <= 0:
        raise DomainError(f"a log scale needs a lower bound above 0, got {low!r}")
    if step is not None:
        if step <= 0:
            raise DomainError(f"the step must be > 0, got {step!r}")
        if log:
            raise DomainError("a log scale cannot have a step (Optuna ignores it there); drop the step")
        n = (high - low) / step
        if not math.isclose(n, round(n), rel_tol=1e-9):
            # Optuna would silently lower the upper bound to the last whole step.
            raise DomainError(f"the range {low!r}..{high!r} is not a whole number of steps of {step!r}")
    if kind == "int":
        low, high, step = int(low), int(high), int(step) if step else None
    return Domain(kind, low=low, high=high, log=log, step=step)
