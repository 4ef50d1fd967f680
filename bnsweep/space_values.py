"""The checks of a search-space file's values, one table or one entry at a time: a table's
keys, a grid axis, an Optuna distribution (its type and both ends), the combinations the
rules between keys read. bnsweep/space.py calls them as it loads a file; each raises
SpaceError naming the file and the key. Values are read as the plain Python they stand for
(numpy's, ranges, Fractions), then validated by bnsweep/config.py as a trial would be.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bnsweep import domains
from bnsweep.config import CONSISTENCY_KEYS, REFERENCE, ConfigError, make_config, value_kind
from bnsweep.domains import Domain, DomainError
from bnsweep.errors import UsageError

# Points of the rules between keys checked per Optuna study; a larger product of
# candidates is checked at the ends of its integer ranges only.
MAX_COMBINATIONS = 100_000


class SpaceError(UsageError, ValueError):
    """A bad search-space file; the message names the file and the key."""


def reject(path: Path, message: str):
    raise SpaceError(f"{path}: {message}")


def plain(value: Any) -> Any:
    """A value as the plain Python it stands for, whatever a user's own code made it with:
    numpy scalars and arrays (np.logspace, np.float32(0.1), np.True_), ranges, Fractions
    and Decimals become the bool, int, float, str or list they hold; dicts, lists and
    tuples are read through; anything else (a Tune or Optuna distribution) stays as it is
    for the checks below to read or refuse."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # a numpy scalar: its Python scalar; an array: nested lists
    if isinstance(value, range):
        return list(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if type(value) in (list, tuple) else value
    return value


def check_dict(path: Path, name: str, value: Any) -> dict:
    if not isinstance(value, Mapping):
        reject(path, f"{name} must be a dict, got {type(value).__name__}")
    for key in value:
        if key not in REFERENCE:
            reject(path, f"{name} key {key!r} is not a config key" + _hint(key))
    return dict(value)


def _hint(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), REFERENCE, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def varied_keys(space: Mapping[str, Any], arms: Mapping[str, Any], points: list[dict[str, Any]]) -> set[str]:
    """The config keys a study varies: grid axes or distributions, Optuna arms, explicit points."""
    return set(space) | set(arms) | {k for point in points for k in point}


def check_values(path: Path, name: str, key: str, values: list, base: dict, distinct: bool = True) -> list:
    where = name if name in ("SEEDS", "--seeds") else f"{name}[{key!r}]"  # seeds are their own list
    out = []
    for v in map(plain, values):
        try:
            out.append(make_config({key: v}, base=base, consistent=False)[key])
        except ConfigError as e:
            reject(path, f"{where} value {v!r}: {e}")
    repeated = list(dict.fromkeys(v for v in out if out.count(v) > 1))
    if distinct and repeated:
        # Checked after validation, which makes "0.1" and 0.1 one value: a repeat would
        # run the same trial twice and count as two seeds or grid points in the analysis.
        reject(path, f"{where} lists {', '.join(map(repr, repeated))} more than once")
    return out


def as_written(entry: Any) -> str:
    """An entry as the file wrote it: a tuple's repr, or what a Tune or Optuna object is."""
    if isinstance(entry, (tuple, list, dict, str, int, float, bool)) or entry is None:
        return repr(entry)
    return f"{type(entry).__module__.split('.')[0]}'s {type(entry).__name__}"


def _is_distribution(entry: Any) -> bool:
    if isinstance(entry, tuple) and entry and entry[0] in domains.TUPLE_FORMS:
        return True
    return type(entry).__module__.startswith(("ray.tune", "optuna.distributions"))


def grid_values(path: Path, name: str, key: str, entry: Any) -> list:
    """A grid axis: a list (or tuple) of values, or tune.grid_search([...])."""
    if isinstance(entry, Mapping) and set(entry) == {"grid_search"}:
        entry = entry["grid_search"]
    if _is_distribution(entry):
        where = "SEARCH is 'grid', which runs the values it lists" if name == "SPACE" else \
            "ARMS lists the arms' values"
        reject(path, f"{name}[{key!r}] = {as_written(entry)} is a distribution to sample, but {where}: list them "
                     "(e.g. [0.01, 0.1])" + (", or set SEARCH = 'optuna' to sample it" if name == "SPACE" else ""))
    if not isinstance(entry, (list, tuple)):
        reject(path, f"{name}[{key!r}] must be a list of grid values, got {as_written(entry)}")
    if not entry:
        reject(path, f"{name}[{key!r}] is an empty grid")
    return list(entry)


def check_domain(path: Path, key: str, entry: Any, base: dict) -> Domain:
    """An Optuna search's entry, read in any vocabulary, its type and both ends checked."""
    try:
        domain = domains.parse(entry)
    except DomainError as e:
        reject(path, f"SPACE[{key!r}] = {as_written(entry)}: {e}")
    # A Tune or Optuna object keeps the values it was given (numpy's, say): read them as plain ones.
    domain = dataclasses.replace(domain, low=plain(domain.low), high=plain(domain.high), log=bool(domain.log),
                                 step=plain(domain.step), values=tuple(plain(list(domain.values))))
    kind = value_kind(key)
    if domain.kind != "choice" and kind in ("bool", "choice", "str"):
        takes = "true or false" if kind == "bool" else "a name"
        reject(path, f"SPACE[{key!r}] = {as_written(entry)}: {key} takes {takes}, "
                     f"not numbers; sample it with ('choice', [...]) or tune.choice([...])")
    if domain.kind == "float" and kind == "int":
        reject(path, f"SPACE[{key!r}] = {as_written(entry)}: {key} takes whole numbers, but this draws "
                     f"{domain.describe()}; use an integer distribution: ('intuniform', lo, hi), "
                     "('intloguniform', lo, hi), tune.randint, tune.lograndint, tune.qrandint or Optuna's "
                     "IntDistribution")
    values = check_values(path, "SPACE", key, domain.ends(), base, distinct=domain.kind == "choice")
    if domain.kind == "choice":  # validated values: "0.1" is 0.1, "true" is True
        return Domain("choice", values=tuple(values))
    return domain


def check_combinations(path: Path, arms: dict[str, list], space: dict[str, Domain], base: dict) -> None:
    """Every combination an Optuna study can sample of the keys the rules between keys
    read (batch size against the training set, the simple model's last batch)."""
    axes = {**arms, **{k: d.candidates() for k, d in space.items()}}
    axes = {k: v for k, v in axes.items() if k in CONSISTENCY_KEYS}
    if math.prod(len(v) for v in axes.values()) > MAX_COMBINATIONS:
        axes = {k: (space[k].ends() if k in space else v) for k, v in axes.items()}
    keys = list(axes)
    for values in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, values))
        try:
            make_config(point, base=base)
        except ConfigError as e:
            where = ", ".join(f"{k}={v!r}" for k, v in point.items())
            reject(path, f"SPACE/ARMS can sample a trial that is not a valid config ({where}): {e}")
