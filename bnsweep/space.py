"""Loading and validating a search-space file (a plain Python file under search_spaces/).

A file defines module-level names the loader reads:

    SEARCH = "grid" | "optuna"
    SPACE  = {...}   grid: config key -> list of values (every list is an axis; tune.grid_search
                     too), or a list of dicts: explicit points (e.g. three arms, not a 2x2 grid)
                     optuna: config key -> a distribution, as a tuple, Ray Tune's or Optuna's
                     (bnsweep/domains.py lists the forms)
    FIXED  = {...}   config overrides shared by every trial (optional)
    SEEDS  = [0]     grid: repeats every grid point per seed; optuna: seed of every trial
    ARMS   = {"bn": [True, False]}   optuna: searched separately, equal NUM_SAMPLES each
    NUM_SAMPLES, SMOKE_NUM_SAMPLES, METRIC, SCHEDULER   optuna only
    CONFIRM_SEEDS = 3, SMOKE_CONFIRM_SEEDS   optuna only: each arm's best configuration run again on
                     this many fresh seeds (0: none); --smoke takes SMOKE_CONFIRM_SEEDS where given
    RESOURCES = {"cpu": 1, "gpu": 0}, MAX_CONCURRENT, MAX_FAILURES   (CLI may override)
    SMOKE  = {...}   overrides for `--smoke`, small enough that tests run every file in seconds
    EXPERIMENT = "..."   MLflow experiment (default bnsweep-<file stem>; --experiment overrides)
    CLAIMS, FIGURES, ORIGINAL   what the study asks of its report (bnsweep/asks.py; optional)

A key is set in one place only: SPACE, ARMS or FIXED (and SMOKE or a flag may not
change a key the study varies). Every value a study can produce is checked here (one
table or entry at a time by bnsweep/space_values.py): each grid point as a whole
config, each member of a choice, both ends of every range, and the combinations the
rules between keys read. So whatever loads here starts, and every trial's config is
valid.

Nothing here imports Ray: a bad file is rejected before any Ray process starts.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bnsweep import asks
from bnsweep.config import CONSISTENCY_KEYS, ConfigError, make_config
from bnsweep.space_values import (
    SpaceError,
    as_written,
    check_combinations,
    check_dict,
    check_domain,
    check_values,
    grid_values,
    plain,
    reject,
    varied_keys,
)

KNOWN_NAMES = {"SEARCH", "SPACE", "FIXED", "SEEDS", "ARMS", "NUM_SAMPLES", "METRIC", "SCHEDULER",
               "RESOURCES", "MAX_CONCURRENT", "MAX_FAILURES", "SMOKE", "SMOKE_NUM_SAMPLES", "EXPERIMENT",
               "CONFIRM_SEEDS", "SMOKE_CONFIRM_SEEDS",
               *asks.NAMES}
SCHEDULERS = ("asha", "fifo")
# MLflow's limits on names (mlflow/utils/validation.py and its SQL schema, MLflow 3.17): an
# experiment name of up to 500 characters passes its check, but its SQL stores keep 256
# (experiments.name is VARCHAR(256); PostgreSQL and MySQL refuse longer ones) and run
# names 250. A sweep's parent run is named <study>-<YYYYmmdd-HHMMSS>-<4 hex> (21 more).
MAX_EXPERIMENT_NAME = 256
MAX_STUDY_NAME = 250 - 21


@dataclass
class Study:
    path: Path
    name: str  # the file's stem, e.g. "lr"; default MLflow experiment name is bnsweep-<name>
    text: str
    question: str  # the file's docstring
    search: str
    fixed: dict[str, Any]  # validated config every trial starts from (FIXED + SMOKE + CLI overrides)
    space: dict[str, Any]  # grid: key -> list; optuna: key -> distribution tuple
    seeds: list[int]
    points: list[dict[str, Any]] = field(default_factory=list)  # grid: explicit points
    arms: dict[str, list] = field(default_factory=dict)
    num_samples: int = 1
    metric: str = "val_acc"
    scheduler: str = "fifo"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    gpu_declared: bool = False  # RESOURCES or --gpus-per-trial says (else default_gpus decides)
    max_concurrent: int | None = None
    max_failures: int = 2
    experiment: str | None = None
    asks: dict[str, Any] = field(default_factory=dict)  # CLAIMS, FIGURES, ORIGINAL as declared (bnsweep/asks.py)
    smoke: bool = False  # loaded with its SMOKE overrides (--smoke)
    # Optuna: each arm's best configuration trained again on this many seeds the search did not
    # use (sweep.confirm_seeds), so the arms are compared on unbiased scores (docs/design.md §6).
    confirm_seeds: int = 0

    def varied(self) -> list[str]:
        """The config keys whose value differs between trials, seed included when repeated."""
        varied = varied_keys(self.space, self.arms, self.points) | ({"seed"} if len(self.seeds) > 1 else set())
        return sorted(varied)

    def shared(self) -> dict[str, Any]:
        """The config every trial shares: `fixed` less the keys the study varies (its
        values there are the reference's, which no trial ran with)."""
        varied = set(self.varied())
        return {k: v for k, v in self.fixed.items() if k not in varied}

    def default_gpus(self, gpus_available: float) -> None:
        """Where neither the file nor the command line says: one GPU per trial if there are GPUs."""
        if gpus_available and not self.gpu_declared:
            self.resources["gpu"] = 1.0

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid trial's values beside `fixed` (its point, the space's keys, its seed), in
        the order trials run: seeds outermost, the file's last key fastest, so a pair (same
        point, other arm: bn or norm listed last) is adjacent."""
        keys = list(self.space)
        return [{**point, **dict(zip(keys, values)), "seed": seed}
                for seed in self.seeds for point in self.points or [{}]
                for values in itertools.product(*(self.space[k] for k in keys))]

    def grid_configs(self) -> list[dict[str, Any]]:
        """Every grid trial's full config, in grid_points' order."""
        return [make_config(point, base=self.fixed) for point in self.grid_points()]

    def arm_list(self) -> list[dict[str, Any]]:
        keys = list(self.arms)
        return [dict(zip(keys, v)) for v in itertools.product(*(self.arms[k] for k in keys))] or [{}]

    def experiment_name(self, flag: str | None = None) -> str:
        """The MLflow experiment: --experiment, else the file's EXPERIMENT, else bnsweep-<study>."""
        if flag is not None:
            return flag
        return self.experiment if self.experiment is not None else f"bnsweep-{self.name}"

    def n_trials(self) -> int:
        if self.search == "grid":
            return len(self.seeds) * max(1, len(self.points)) * math.prod(len(v) for v in self.space.values())
        return (self.num_samples + self.confirm_seeds) * len(self.arm_list())


def _import(path: Path):
    if not path.exists():
        raise SpaceError(f"search-space file {path} does not exist")
    if path.suffix != ".py":
        raise SpaceError(f"search-space file {path} is not a .py file")
    module_name = f"_bnsweep_space_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 — any error in user code is reported, not raised
        line = ""
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        if isinstance(e, SyntaxError):
            line = f" (line {e.lineno})"
        raise SpaceError(f"{path} does not import{line}: {type(e).__name__}: {e}") from None
    finally:
        sys.modules.pop(module_name, None)
    return module


def experiment_problem(name: Any) -> str | None:
    """What is wrong with an MLflow experiment name by MLflow's rules (MAX_* above), or None."""
    if not isinstance(name, str):
        return f"must be a string, got {as_written(name)} ({type(name).__name__})"
    if not name.strip() or len(name) > MAX_EXPERIMENT_NAME:
        shown = f"{name[:60]!r}{'...' if len(name) > 60 else ''}"
        return f"must be 1 to {MAX_EXPERIMENT_NAME} characters and not only spaces, got {len(name)}: {shown}"
    return None


def _check_names(path: Path, module) -> None:
    stem = path.stem
    if not stem or len(stem) > MAX_STUDY_NAME or not all((c.isascii() and c.isalnum()) or c in "._-" for c in stem):
        reject(path, f"the file's name {stem!r} names the sweep's folder and its MLflow runs: use up to "
                     f"{MAX_STUDY_NAME} letters, digits, '.', '_' or '-'")
    if hasattr(module, "EXPERIMENT"):
        problem = experiment_problem(module.EXPERIMENT)
        if problem:
            reject(path, f"EXPERIMENT (the MLflow experiment name) {problem}")


def _check_exclusive(path: Path, fixed: dict, smoke: dict, overrides: dict, arms: dict, space: dict,
                     points: list[dict]) -> None:
    """A key is set in one place: SPACE, ARMS or FIXED; SMOKE and flags may not change a varied key."""
    both = sorted(set(arms) & set(space))
    if both:
        reject(path, f"{both[0]} is in both ARMS and SPACE: an arm is compared, a SPACE key is tuned within "
                     "each arm; put it in one of them")
    varied = varied_keys(space, arms, points)
    for name, table in (("FIXED", fixed), ("SMOKE", smoke)):
        clash = sorted(varied & set(table))
        if clash:
            reject(path, f"{clash[0]} is varied by the study and also set in {name}; set it in one place only")
    for key in overrides:
        if key in varied:
            reject(path, f"{key} is varied by this file and cannot also be overridden; edit SPACE instead")


def load_study(path: str | Path, smoke: bool = False, overrides: Mapping[str, Any] | None = None,
               seeds: list | None = None, confirm_seeds: int | None = None) -> Study:
    """Import and validate a search-space file; raise SpaceError naming file and key.

    `overrides`: config keys the command line sets; `seeds`: replaces the file's SEEDS
    (`--seeds`), so that a shipped file runs more seeds without an edit; `confirm_seeds`:
    replaces CONFIRM_SEEDS (`--confirm-seeds`).
    """
    path = Path(path).resolve() if Path(path).exists() else Path(path)
    module = _import(path)
    names = {n for n in vars(module) if n.isupper() and not n.startswith("_")}
    module = SimpleNamespace(__doc__=module.__doc__, **{n: plain(getattr(module, n)) for n in names})
    for unknown in sorted(names - KNOWN_NAMES):
        reject(path, f"unknown name {unknown} (a search-space file may define {', '.join(sorted(KNOWN_NAMES))})")
    if "SPACE" not in names:
        reject(path, "defines no SPACE (the dict of config keys to vary)")
    search = getattr(module, "SEARCH", "grid")
    if search not in ("grid", "optuna"):
        reject(path, f"SEARCH must be 'grid' or 'optuna', got {search!r}")
    _check_names(path, module)

    fixed = check_dict(path, "FIXED", getattr(module, "FIXED", {}))
    smoke_over = check_dict(path, "SMOKE", getattr(module, "SMOKE", {}))
    points = _points(path, module.SPACE) if isinstance(module.SPACE, list) else []
    space = {} if points else check_dict(path, "SPACE", module.SPACE)
    arms = check_dict(path, "ARMS", getattr(module, "ARMS", {}))
    if not space and not points:
        reject(path, "SPACE is empty")
    if points and search != "grid":
        reject(path, "SPACE as a list of points is a grid; an Optuna search needs a dict of distributions")
    if arms and search != "optuna":
        reject(path, "ARMS is for Optuna searches; in a grid put the arms in SPACE")
    if "seed" in space or "seed" in arms:
        reject(path, "vary seeds with SEEDS, not SPACE['seed'] or ARMS['seed']")
    if "seed" in fixed and hasattr(module, "SEEDS"):
        reject(path, "seed is set in both FIXED and SEEDS; list the seeds in SEEDS only")
    varied = varied_keys(space, arms, points)
    if "epochs" in varied:
        # Every trial's budget (ASHA's max_t, the plan's cost), not a setting: a run's first
        # k epochs are those of a k-epoch run (lr and data order depend on the epoch only).
        reject(path, "epochs is the budget of every trial, not a setting to vary: set it in FIXED or with "
                     "--epochs (a run's first k epochs are those of a k-epoch run; its curves show them)")
    overrides = dict(overrides or {})
    _check_exclusive(path, fixed, smoke_over, overrides, arms, space, points)
    layered = {**fixed, **(smoke_over if smoke else {}), **overrides}
    if ("bn" in varied or "bn" in layered) and ("norm" in varied or layered.get("norm") is not None):
        # A set norm decides and bn follows it (config.make_config): a bn beside it would change nothing.
        reject(path, "bn and norm both choose the normalisation; set or vary norm (bn, gn, none, ...) and leave "
                     "bn out")
    try:
        # Varied keys are not in `layered`; the rules between keys wait for their values.
        base = make_config({k: v for k, v in layered.items() if k != "seed"},
                           consistent=not varied & CONSISTENCY_KEYS)
    except ConfigError as e:
        reject(path, f"FIXED/SMOKE/overrides: {e}")

    if seeds is not None:
        if "seed" in overrides:
            reject(path, "--seed and --seeds both given; --seeds 0,1,2 runs every point once per seed")
        seeds = check_values(path, "--seeds", "seed", list(seeds), base)
    else:
        seeds = [overrides["seed"]] if "seed" in overrides else getattr(module, "SEEDS", [layered.get("seed", 0)])
        if not isinstance(seeds, (list, tuple)) or not seeds:
            reject(path, "SEEDS must be a non-empty list of integers")
        seeds = check_values(path, "SEEDS", "seed", list(seeds), base)

    checked_space: dict[str, Any] = {}
    for key, entry in space.items():
        if search == "grid":
            checked_space[key] = check_values(path, "SPACE", key, grid_values(path, "SPACE", key, entry), base)
        else:
            checked_space[key] = check_domain(path, key, entry, base)
    for key, entry in arms.items():
        arms[key] = check_values(path, "ARMS", key, grid_values(path, "ARMS", key, entry), base)
    for i, point in enumerate(points):
        for key, value in point.items():
            check_values(path, f"SPACE[{i}]", key, [value], base)

    num_samples = _int(path, module, "NUM_SAMPLES", 1, minimum=1)
    if smoke:
        num_samples = _int(path, module, "SMOKE_NUM_SAMPLES", num_samples, minimum=1)
    confirm = _confirm_seeds(path, module, search, smoke, confirm_seeds)
    study = Study(
        path=path, name=path.stem, text=path.read_text(), question=(module.__doc__ or "").strip(),
        search=search, fixed=base, space=checked_space, seeds=seeds, arms=arms, points=points,
        num_samples=num_samples,
        metric=getattr(module, "METRIC", "val_acc"),
        scheduler=getattr(module, "SCHEDULER", "asha" if search == "optuna" else "fifo"),
        resources=_resources(path, getattr(module, "RESOURCES", {})),
        gpu_declared="gpu" in getattr(module, "RESOURCES", {}),
        max_concurrent=_int(path, module, "MAX_CONCURRENT", None, minimum=1),
        max_failures=_int(path, module, "MAX_FAILURES", 2, minimum=0),
        experiment=getattr(module, "EXPERIMENT", None),
        smoke=smoke, confirm_seeds=confirm,
        asks=_asks(path, module),
    )
    if study.metric not in ("val_acc", "val_loss", "train_acc", "train_loss"):
        reject(path, f"METRIC must be val_acc, val_loss, train_acc or train_loss, got {study.metric!r}")
    if study.scheduler not in SCHEDULERS:
        reject(path, f"SCHEDULER must be one of {', '.join(SCHEDULERS)}, got {study.scheduler!r}")
    if search == "grid":
        try:
            study.grid_configs()  # every combination must be a valid config (e.g. batch_size vs n_train)
        except ConfigError as e:
            reject(path, f"a grid point is not a valid config: {e}")
    else:
        check_combinations(path, arms, checked_space, base)
    return study


def _asks(path: Path, module) -> dict[str, Any]:
    try:
        return asks.check_asks({n: getattr(module, n) for n in asks.NAMES if hasattr(module, n)})
    except asks.AsksError as e:
        reject(path, str(e))


def _points(path: Path, value: list) -> list[dict[str, Any]]:
    if not value:
        reject(path, "SPACE is an empty list of points")
    for i, point in enumerate(value):
        check_dict(path, f"SPACE[{i}]", point)
        if "seed" in point:
            reject(path, f"SPACE[{i}]: vary seeds with SEEDS, not in a point")
    return [dict(p) for p in value]


CONFIRM_SEEDS = 3  # the default: the fewest runs a verdict rests on (stats.MIN_REPLICATES, docs/design.md §6)


def _confirm_seeds(path: Path, module, search: str, smoke: bool, flag: int | None) -> int:
    """How many fresh seeds each Optuna arm's best configuration is confirmed on: --confirm-seeds,
    else (with --smoke) SMOKE_CONFIRM_SEEDS, else CONFIRM_SEEDS, else 3. A grid has none:
    its SEEDS repeat every point already."""
    given = [n for n in ("CONFIRM_SEEDS", "SMOKE_CONFIRM_SEEDS") if hasattr(module, n)]
    if search != "optuna":
        if given or flag is not None:
            reject(path, f"{(given or ['--confirm-seeds'])[0]} is for Optuna searches; a grid repeats its points "
                         "with SEEDS (or --seeds)")
        return 0
    n = _int(path, module, "CONFIRM_SEEDS", CONFIRM_SEEDS, minimum=0)
    if smoke:
        n = _int(path, module, "SMOKE_CONFIRM_SEEDS", n, minimum=0)
    if flag is not None:
        if isinstance(flag, bool) or not isinstance(flag, int) or flag < 0:
            reject(path, f"--confirm-seeds must be a whole number >= 0, got {flag!r}")
        n = flag
    return n


def _int(path: Path, module, name: str, default, minimum: int):
    value = getattr(module, name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        reject(path, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _resources(path: Path, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        reject(path, f"RESOURCES must be a dict like {{'cpu': 1, 'gpu': 0.25}}, got {value!r}")
    out = {"cpu": 1.0, "gpu": 0.0}
    for key, v in value.items():
        if key not in out:
            reject(path, f"RESOURCES key {key!r} is not 'cpu' or 'gpu'")
        out[key] = check_resource(key, v, lambda m: reject(path, m))
    return out


def check_resource(key: str, value: Any, fail) -> float:
    """CPUs and GPUs per trial: > 0 (GPU may be 0); a fraction above 1 must be whole (Ray's rule)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        fail(f"{key} per trial must be a number, got {value!r}")
    if not math.isfinite(v) or v < 0 or (key == "cpu" and v == 0):
        fail(f"{key} per trial must be {'> 0' if key == 'cpu' else '>= 0'}, got {value!r}")
    if v > 1 and v != int(v):
        fail(f"{key} per trial above 1 must be a whole number, got {value!r}")
    return v
