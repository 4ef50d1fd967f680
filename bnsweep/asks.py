"""What a study file may ask of its report (DESIGN.md §3: "a study file says what it
asks"), in three module-level names beside SPACE, and the vocabulary they draw on:

    CLAIMS   = [3, 1]            the study's claims it was designed to test (1-5, DESIGN.md §2)
    FIGURES  = ["lr", "curves"]  the analysis figures it wants, in order (bnsweep.analysis.<name>)
    ORIGINAL = "lr"              published results to show beside ours: a set bnsweep ships
                                 (PUBLISHED), or an inline dict (see check_original)

bnsweep/space.py checks them when it loads a file; the sweep's parent run records them
(tag ASKS_TAG, JSON), so a report learns them from MLflow alone, as they were when the
sweep ran. The library never keys any of this on a study's file name.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bnsweep.formats import number

ASKS_TAG = "bnsweep.asks"
NAMES = {"CLAIMS": "claims", "FIGURES": "figures", "ORIGINAL": "original"}  # module name -> key in the record
CLAIM_NUMBERS = (1, 2, 3, 4, 5)  # bnsweep/analysis/evidence.py STATEMENTS
FIGURES = ("lr", "batch_size", "curves", "dropout", "optuna")  # bnsweep/analysis/<name>.py
# The sets bnsweep ships (bnsweep/analysis/original.py SETS): the original's slides per figure, and
# group_norm, Wu & He 2018's batch-size curve of BN and GN (ResNet-50, ImageNet), for the batch_size figure.
PUBLISHED = ("lr", "batch_size", "dropout", "group_norm")
INLINE_FIGURES = ("lr", "batch_size")  # the figures an inline set is drawn on: its x axis
ARMS = ("bn", "no_bn")
INLINE_KEYS = {"figure", "source", "about", "values"}
# The record is one MLflow tag, whose values hold at most 8,000 characters
# (mlflow.utils.validation.MAX_TAG_VAL_LENGTH, MLflow 3); half of that leaves room.
MAX_RECORDED = 4000


class AsksError(ValueError):
    """A declaration that is not in the vocabulary; the message names the key."""


def _numbers(key: str, values: Any, lo: float, hi: float, none_ok: bool = False) -> list:
    if not isinstance(values, (list, tuple)) or not values:
        raise AsksError(f"ORIGINAL['values'][{key!r}] must be a non-empty list of numbers, got {values!r}")
    for v in values:
        if v is None and none_ok:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise AsksError(f"ORIGINAL['values'][{key!r}] holds {v!r}; each must be a number in "
                            f"[{number(lo)}, {number(hi)}]" + (" or None" if none_ok else ""))
    return list(values)


def check_original(value: Any) -> str | dict:
    """A shipped set's name, or an inline set of published numbers, e.g.

        {"figure": "lr", "source": "Smith et al. 2020, table 2", "about": "ResNet-20, CIFAR-10, one seed",
         "values": {"lr": [0.01, 0.1, 1.0], "bn": [88, 91, 10], "no_bn": [80, 10, 10]}}

    figure: the figure it is drawn on (its x axis: lr or batch_size); source: how the report
    labels it; about (optional): one sentence on what they ran; values: the x values and, per
    arm (bn, no_bn), best validation accuracy in % (None where not reported); for batch_size
    also bn_time_min / no_bn_time_min, a whole run's minutes. Always read as shapes only."""
    if isinstance(value, str):
        if value not in PUBLISHED:
            raise AsksError(f"ORIGINAL {value!r} is not a published set bnsweep ships ({', '.join(PUBLISHED)}); "
                            "or give the numbers inline as a dict (see the README)")
        return value
    if not isinstance(value, dict):
        raise AsksError(f"ORIGINAL must be the name of a shipped set ({', '.join(PUBLISHED)}) or a dict, "
                        f"got {type(value).__name__}")
    unknown = sorted(set(value) - INLINE_KEYS)
    if unknown:
        raise AsksError(f"ORIGINAL has unknown key {unknown[0]!r} (it may have {', '.join(sorted(INLINE_KEYS))})")
    figure = value.get("figure")
    if figure not in INLINE_FIGURES:
        raise AsksError(f"ORIGINAL['figure'] must be one of {', '.join(INLINE_FIGURES)} (the figure it is drawn on), "
                        f"got {figure!r}")
    for key in ("source", "about"):
        if (key in value or key == "source") and (not isinstance(value.get(key), str) or not value[key].strip()):
            raise AsksError(f"ORIGINAL[{key!r}] must be a non-empty string (how the report names their numbers)")
    values = value.get("values")
    if not isinstance(values, dict):
        raise AsksError(f"ORIGINAL['values'] must be a dict of lists ({figure!r} and one or both of bn, no_bn)")
    allowed = {figure, *ARMS, *({f"{a}_time_min" for a in ARMS} if figure == "batch_size" else ())}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise AsksError(f"ORIGINAL['values'] has unknown key {unknown[0]!r} (it may have {', '.join(sorted(allowed))})")
    if figure not in values or not set(ARMS) & set(values):
        raise AsksError(f"ORIGINAL['values'] needs {figure!r} and at least one arm (bn, no_bn)")
    xs = _numbers(figure, values[figure], 1e-12 if figure == "lr" else 1, math.inf)
    if len(set(xs)) != len(xs):
        raise AsksError(f"ORIGINAL['values'][{figure!r}] repeats a value")
    for key, column in values.items():
        if key != figure:
            _numbers(key, column, 0, 100 if key in ARMS else math.inf, none_ok=True)
            if len(column) != len(xs):
                raise AsksError(f"ORIGINAL['values'][{key!r}] has {len(column)} values, {figure!r} has {len(xs)}")
    return {k: value[k] for k in ("figure", "source", "about", "values") if k in value}


def check_asks(declared: dict[str, Any]) -> dict[str, Any]:
    """The study's declarations (module names CLAIMS, FIGURES, ORIGINAL to their values) as
    the record keeps them ({"claims": [...], ...}, only those declared); AsksError names the key."""
    asks: dict[str, Any] = {}
    if "CLAIMS" in declared:
        claims = declared["CLAIMS"]
        if not isinstance(claims, (list, tuple)) or any(c not in CLAIM_NUMBERS or isinstance(c, bool) for c in claims):
            raise AsksError(f"CLAIMS must be a list of the study's claim numbers "
                            f"({', '.join(map(str, CLAIM_NUMBERS))}), got {claims!r}")
        asks["claims"] = list(dict.fromkeys(int(c) for c in claims))
    if "FIGURES" in declared:
        figures = declared["FIGURES"]
        if not isinstance(figures, (list, tuple)) or any(f not in FIGURES for f in figures):
            bad = figures if not isinstance(figures, (list, tuple)) else next(f for f in figures if f not in FIGURES)
            raise AsksError(f"FIGURES must be a list of figure names ({', '.join(FIGURES)}), got {bad!r}")
        asks["figures"] = list(dict.fromkeys(figures))
    if "ORIGINAL" in declared:
        asks["original"] = check_original(declared["ORIGINAL"])
    text = json.dumps(asks)
    if len(text) > MAX_RECORDED:
        raise AsksError(f"CLAIMS, FIGURES and ORIGINAL take {len(text)} characters as JSON; the sweep's record "
                        f"keeps at most {MAX_RECORDED}: shorten ORIGINAL")
    return asks


def from_tag(text: str | None) -> dict[str, Any]:
    """The record's declarations back (a sweep recorded without any: {})."""
    if not text:
        return {}
    try:
        asks = json.loads(text)
    except ValueError:
        return {}
    return asks if isinstance(asks, dict) else {}
