"""An Optuna study's searches as Optuna studies, in the sweep folder, and what they say.

    SWEEP_DIR/optuna.db    an Optuna RDB storage (SQLite) with one study per arm, named as
                           its search ("bn", "no_bn"): every trial of that search, with the
                           values it was given and its value (not the confirmation runs,
                           which the search did not choose)

Ray Tune's OptunaSearch keeps its optuna.Study in memory, inside Tune's saved searcher
state, which only Tune reads. This storage is rebuilt from bnsweep's ledger instead
(`rebuild_optuna_study`, at the end of every run, resume and sync), so it holds what
the ledger holds, complete after any of them, and opens with the usual tools:

    optuna.load_study(study_name="bn", storage="sqlite:///SWEEP_DIR/optuna.db")
    optuna-dashboard sqlite:///SWEEP_DIR/optuna.db

A trial's value is its METRIC at its last epoch, as Tune told its searcher (a trial
ASHA stopped early reports the epoch it stopped at); the epochs are its intermediate
values. Its ledger end is kept as a user attribute: completed, stopped and diverged
trials with a finite value are COMPLETE, failed ones FAIL, unfinished ones RUNNING.
An object-store sweep gets the file built locally and uploaded whole (object stores
cannot hold a database that is written in place).

Which setting mattered: `importances`, fANOVA (optuna.importance, on scikit-learn's
random forest: Hutter, Hoos & Leyton-Brown, ICML 2014): the share of the variance of
the value each tuned key explains, over its whole range.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnsweep import ledger
from bnsweep.domains import Domain
from bnsweep.storage import join, write_bytes
from bnsweep.trials import is_confirmation

if TYPE_CHECKING:
    import optuna

    from bnsweep.space import Study

STORAGE_FILE = "optuna.db"
# Enough trees that the importances of a few dozen trials do not depend on the draw;
# a fixed seed so a report is the same each time it is made (Optuna's default trees: 64).
FANOVA_TREES = 64
FANOVA_SEED = 0


def storage_url(sweep_dir: str) -> str:
    """The URL optuna.load_study and optuna-dashboard take for a local sweep folder."""
    return f"sqlite:///{os.path.abspath(join(sweep_dir, STORAGE_FILE))}"


def _final(t: ledger.TrialRecord, metric: str) -> float | None:
    value = t.epochs[-1].get(metric) if t.epochs else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def best_trial(trials: list[ledger.TrialRecord], tuner: str, metric: str) -> ledger.TrialRecord | None:
    """The search `tuner`'s best trial by its final `metric` (max, or min for a loss), among
    those that went furthest (the most epochs; ASHA judged the others at an earlier rung, and
    marks even those it let finish as stopped), completed, stopped or diverged; None if none
    has a finite value."""
    scored = [t for t in trials if t.tuner == tuner and t.status in ("completed", "stopped", "diverged")
              and _final(t, metric) is not None]
    if not scored:
        return None
    furthest = max(len(t.epochs) for t in scored)
    sign = -1.0 if metric.endswith("loss") else 1.0
    return max((t for t in scored if len(t.epochs) == furthest), key=lambda t: sign * _final(t, metric))


def distribution(domain: Domain):
    """A checked SPACE entry as Optuna's distribution (bnsweep/domains.py gives the table)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if domain.kind == "choice":
        return CategoricalDistribution(list(domain.values))
    if domain.kind == "float":
        return FloatDistribution(domain.low, domain.high, log=domain.log, step=domain.step)
    return IntDistribution(int(domain.low), int(domain.high), log=domain.log, step=int(domain.step or 1))


def frozen_trial(params: Mapping[str, Any], distributions: Mapping[str, Any], value: float | None,
                 status: str | None, user_attrs: Mapping[str, Any] | None = None,
                 intermediate: Mapping[int, float] | None = None) -> optuna.trial.FrozenTrial:
    """One trial in Optuna's words; status is the ledger's end (None: not ended)."""
    import optuna

    states = optuna.trial.TrialState
    if status is None:
        state = states.RUNNING
    elif status in ("completed", "stopped", "diverged") and value is not None and math.isfinite(value):
        state = states.COMPLETE
    else:
        state = states.FAIL
    return optuna.trial.create_trial(
        state=state, value=value if state == states.COMPLETE else None, params=dict(params),
        distributions=dict(distributions), user_attrs=dict(user_attrs or {}),
        intermediate_values={k: v for k, v in (intermediate or {}).items() if math.isfinite(v)})


def _trials_of(study: Study, trials: list[ledger.TrialRecord], tuner: str, distributions: dict) -> list:
    out = []
    for t in trials:
        if t.tuner != tuner:
            continue
        curve = {int(r["epoch"]): float(r[study.metric]) for r in t.epochs
                 if isinstance(r.get(study.metric), (int, float))}
        attrs = {"trial": t.name, "ray_trial_id": t.trial_id, "ledger_status": t.status or "unfinished",
                 "epochs": len(t.epochs), "seed": t.config.get("seed")}
        if t.epochs and t.epochs[-1].get("best_val_acc") is not None:
            attrs["best_val_acc"] = float(t.epochs[-1]["best_val_acc"])
        out.append(frozen_trial({k: t.config[k] for k in distributions}, distributions, _final(t, study.metric),
                                t.status, attrs, curve))
    return out


def _write_searches(url: str, sweep_dir: str, study: Study) -> None:
    """One Optuna study per arm's search, from the ledger, into the storage at URL."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        trials = ledger.read_trials(sweep_dir)
        distributions = {k: distribution(d) for k, d in study.space.items()}
        direction = "minimize" if study.metric.endswith("loss") else "maximize"
        # The arms' searches, as the ledger names them (sweep.tuner_names); not their confirmations.
        for label in dict.fromkeys(t.tuner for t in trials if not is_confirmation(t.tuner)):
            search = optuna.create_study(storage=storage, study_name=label, direction=direction)
            for key, value in {"metric": study.metric, "sweep_dir": sweep_dir, "seed": study.seeds[0]}.items():
                search.set_user_attr(key, value)
            search.add_trials(_trials_of(study, trials, label, distributions))
    finally:
        storage.remove_session()
        storage.engine.dispose()


def rebuild_optuna_study(sweep_dir: str, study: Study) -> str | None:
    """Write SWEEP_DIR/optuna.db afresh from the ledger: one Optuna study per arm's search.
    Returns where it is, or None for a grid study (it has no search). The file is built
    in a local temporary folder and written whole, so a reader (the dashboard) never sees
    half of it."""
    if study.search != "optuna":
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created ..." per arm
    target = join(sweep_dir, STORAGE_FILE)
    # Built in a local folder of its own (SQLite needs a local file, and a sweep may be on
    # object storage), then written whole: storage.write_bytes puts it or renames it into place.
    with tempfile.TemporaryDirectory(prefix="bnsweep-optuna-") as folder:
        path = os.path.join(folder, STORAGE_FILE)
        _write_searches(f"sqlite:///{path}", sweep_dir, study)
        write_bytes(target, Path(path).read_bytes())
    return target


def rebuild_or_warn(sweep_dir: str, study: Study | Callable[[], Study]) -> None:
    """rebuild_optuna_study, where a failure costs one line and nothing else: the ledger is
    the record, and the next run, resume or sync rebuilds the file."""
    try:
        rebuild_optuna_study(sweep_dir, study() if callable(study) else study)
    except Exception as e:  # noqa: BLE001 — a derived file; the sweep's record is the ledger
        print(f"bnsweep: could not write {join(sweep_dir, STORAGE_FILE)} ({type(e).__name__}: "
              f"{(str(e).strip().splitlines() or [''])[0][:200]}); `bnsweep sync` writes it again", flush=True)


def importances(search: optuna.Study) -> tuple[dict[str, float], str | None]:
    """Each tuned key's fANOVA importance in the search (shares that sum to 1), and why there
    are none where Optuna cannot give them (fewer than two finished trials, no variance)."""
    import optuna

    done = search.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, f"{len(done)} finished trial{'s' if len(done) != 1 else ''}; importances need 2"
    try:
        found = optuna.importance.get_param_importances(
            search, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=FANOVA_SEED))
    except (ValueError, RuntimeError) as e:
        return {}, str(e).strip().splitlines()[0][:200]
    found = {k: float(v) for k, v in found.items()}
    if not found or not all(math.isfinite(v) for v in found.values()):
        return {}, "the trials' values do not vary: nothing to explain"
    return found, None
