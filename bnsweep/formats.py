"""One formatter per kind of value, for every place a person reads one: run names, the
terminal, report tables and figure labels (docs/design.md §4, "one name per quantity").

A value printed here parses back to the value tried: `float(number(x)) == x`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

# Plain decimals between these, powers of ten outside: an lr grid reads 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10.
PLAIN_FROM, PLAIN_BELOW = 1e-2, 1e4


def _plain(x: Any) -> Any:
    """numpy's scalars (a pandas cell: numpy.float64, int64, bool_) as Python's."""
    return x.item() if type(x).__module__ == "numpy" and hasattr(x, "item") else x


def number(x: Any) -> str:
    """A setting's value in the fewest digits that read back as it: 0.01, 1000, 1e-5, 1e6, 2.5e-4; whole numbers
    as they are; anything else (a name, a bool) as str() writes it."""
    x = _plain(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x) or x == 0:
        return {math.inf: "inf", -math.inf: "-inf"}.get(x, "nan" if x != x else "0")
    exact = Decimal(repr(x)).normalize()  # repr: the shortest digits that read back as x
    if PLAIN_FROM <= abs(x) < PLAIN_BELOW:
        return format(exact, "f")
    return format(exact, "e").replace("e+", "e").replace("e-0", "e-")


def measured(x: Any, digits: int = 4) -> str:
    """A measured value (an accuracy, a time, a p) to `digits` significant digits, spelled as
    number() spells a setting: 0.8123, 1.235e-5, 2.5e4. A setting is never rounded: number()."""
    x = _plain(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or isinstance(x, int):
        return number(x)
    return number(float(f"{x:.{digits}g}")) if math.isfinite(x) else number(x)


# What a table shows where it has no value (the sd of one run, a setting one of two sources did not
# try): a dash, not a blank that reads as forgotten nor a 0 that reads as measured.
MISSING = "–"


def cell(x: Any, setting: bool = False) -> str:
    """A table cell: a setting's value as number() writes it, a measured one as measured(), yes/no
    for a flag, MISSING for none (None, NaN)."""
    x = _plain(x)
    if x is None or (isinstance(x, float) and x != x):
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    return number(x) if setting else measured(x)


def value_range(values: list[Any]) -> str:
    """The span of the values tried, in words no minus sign can be mixed into: 1e-5 to 10."""
    values = sorted(values)
    return "none" if not values else number(values[0]) if len(values) == 1 else \
        f"{number(values[0])} to {number(values[-1])}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """1 trial, 2 trials; 1 matched pair, 3 matched pairs."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def seconds(s: float) -> str:
    """A duration for people: 42s, 3m05s, 1h02m."""
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
