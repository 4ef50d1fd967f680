"""`bnsweep run`, `resume` and `sync`: a validated study → Ray → Tuners → summary.

The order matters: everything that can be wrong with the request is checked
before Ray starts or anything is recorded (cli._study, the dataset, check_storage,
the tracker's check of its store); then Ray and whether a trial fits it; then the
MLflow parent run, then sweep.json, then the Tuners. MLflow is the tracker's business
(bnsweep/recorder.py): the same steps run with it on or off.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnsweep import ledger
from bnsweep.errors import UsageError
from bnsweep.formats import count
from bnsweep.lock import SweepLock
from bnsweep.space import SpaceError, Study, load_study
from bnsweep.storage import DEFAULT_STORAGE, SWEEP_FILE, SweepSpec, filesystem, join, read_text, short_of_space
from bnsweep.trials import arm_of

if TYPE_CHECKING:
    from bnsweep.recorder import Tracker

EXIT_INTERRUPTED = 130


def _storage(flag: str | None) -> str:
    storage = flag or os.environ.get("BNSWEEP_STORAGE") or DEFAULT_STORAGE
    return storage if "://" in storage else os.path.abspath(storage)


def run(study: Study, overrides: dict[str, Any], *, storage: str | None = None, address: str | None = None,
        tracking_uri: str | None = None, mlflow: bool = True, experiment: str | None = None,
        verbose: bool = False) -> int:
    """`bnsweep run`: start a sweep of a checked study; return the exit code (0, 1: trials
    failed, 130: interrupted). `overrides`: the CLI's config flags, saved so that resume
    applies them too; storage: a folder or URI (default $BNSWEEP_STORAGE or ./bnsweep_results);
    address: a Ray cluster (default $RAY_ADDRESS, else a local Ray); mlflow False: no
    tracking (`sync` records the sweep later); experiment: the MLflow experiment's name.
    Raises BnsweepError for a request that cannot start, before anything is recorded."""
    address = address or os.environ.get("RAY_ADDRESS")
    storage = _storage(storage)
    check_storage(storage)
    if short := short_of_space(storage):
        raise UsageError(f"cannot start: {short}; free some space or pass --storage DIR_OR_URI")
    if not address and study.fixed["dataset"] == "cifar10":
        # On this machine the trials read the driver's data: a missing dataset is one clear
        # error now (or a download), not a failed trial each. On a cluster the nodes have their own.
        from bnsweep.data import load_cifar10

        load_cifar10(study.fixed["data_dir"], download=study.fixed["download"])
    from bnsweep import recorder, sweep

    experiment = study.experiment_name(experiment)  # kept in sweep.json for a later sync
    tracker = recorder.tracker_for_run(tracking_uri, on=mlflow)
    tracker.check_can_start(experiment)  # the store answers, takes our credentials; the experiment not deleted
    _start_ray(address)
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if address and not gpus and not study.gpu_declared:
        print("note: the Ray cluster has no GPU now, so each trial takes 0 GPUs and trains on CPUs. Where GPU "
              "workers are still to join (an autoscaling cluster), pass --gpus-per-trial 1", flush=True)
    study.default_gpus(gpus)
    if not address:
        sweep.check_fits_local(study.resources, "lower --cpus-per-trial / --gpus-per-trial (or RESOURCES in "
                                                "the file), or join a cluster that has them with --address")
    sweep_dir = sweep.sweep_dir_for(storage, study)
    tracker.start(study, sweep_dir, experiment)
    spec = SweepSpec(
        study_path=str(study.path), study_text=study.text, smoke=study.smoke, overrides=overrides,
        resources=study.resources, max_concurrent=study.max_concurrent, max_failures=study.max_failures,
        tracking=tracker.saved(), seeds=study.seeds, experiment=experiment,
        sweep_dir=sweep_dir, confirm_seeds=study.confirm_seeds if study.search == "optuna" else None)
    lock = SweepLock(sweep_dir, "bnsweep run")
    try:
        spec.write(sweep_dir)
        lock.acquire()  # a new folder, whose name nobody else has seen yet
    except BaseException:
        tracker.end("FAILED")  # no parent run left RUNNING for a sweep that never started
        raise
    with lock:
        _print_start(study, spec, sweep_dir, tracker)
        return _fit_and_summarize(study, spec, sweep_dir, tracker, resume=False, verbose=verbose)


def _start_ray(address: str | None) -> None:
    """Ray, with a line first: starting it takes seconds in which nothing else would show."""
    from bnsweep import sweep

    where = address or os.environ.get("RAY_ADDRESS")
    print(f"starting Ray ({'joining ' + where if where else 'a local instance'}) ...", flush=True)
    sweep.init_ray(address)


def check_storage(storage: str) -> None:
    """The results location must take a write before Ray starts or a run is recorded.
    The probe leaves nothing behind: its file, and the local folders it had to create."""
    from bnsweep.storage import write_text

    # Local folders the probe creates, innermost first; removed again only while empty,
    # so a sweep starting beside this one on the same fresh path keeps its files.
    created = [] if "://" in storage else [p for p in (Path(storage), *Path(storage).parents) if not p.exists()]
    probe = join(storage, ".bnsweep-write-test")
    try:
        write_text(probe, "")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except Exception as e:  # noqa: BLE001 — OSError locally, ArrowInvalid / credentials errors for URIs
        raise UsageError(f"cannot write results to {storage} ({type(e).__name__}: "
                         f"{(str(e).strip().splitlines() or [''])[0][:200]}); pass --storage DIR_OR_URI "
                         "or set BNSWEEP_STORAGE") from None
    finally:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break


def _sweep_dir(arg: str) -> str:
    arg = arg.rstrip("/")
    return arg if "://" in arg else os.path.abspath(arg)


def resume(sweep_dir: str, *, address: str | None = None, mlflow: bool = True, verbose: bool = False) -> int:
    """`bnsweep resume`: run what an interrupted sweep has left (unfinished trials, and
    errored ones again), recording into the MLflow store it recorded into (mlflow False:
    none this time). Returns the exit code as `run` does."""
    sweep_dir = _sweep_dir(sweep_dir)
    spec = _read_spec(sweep_dir)
    _check_not_moved(spec, sweep_dir)
    with SweepLock(sweep_dir, "bnsweep resume"):
        return _resume(sweep_dir, spec, address=address, mlflow=mlflow, verbose=verbose)


def _resume(sweep_dir: str, spec: SweepSpec, *, address: str | None, mlflow: bool, verbose: bool) -> int:
    if short := ledger.shortage(sweep_dir):
        raise UsageError(f"cannot resume: {short}; free some space first")
    study = _study_from_spec(spec)
    from bnsweep import recorder, sweep

    tracker = recorder.tracker_for_resume(spec.tracking, sweep_dir, on=mlflow)
    tracker.check_recorded(sweep_dir)  # the store, our credentials, the parent run and experiment not deleted
    _start_ray(address)
    if not (address or os.environ.get("RAY_ADDRESS")):
        sweep.check_fits_local(spec.resources, "resume it on a cluster that has them with --address")
    tracker.reopen()  # only now: nothing above may leave the parent run RUNNING
    print(f"resuming {sweep_dir}", flush=True)
    return _fit_and_summarize(study, spec, sweep_dir, tracker, resume=True, verbose=verbose)


def _check_not_moved(spec: SweepSpec, sweep_dir: str) -> None:
    """A sweep resumes where `run` started it: Tune restores its callbacks as it pickled
    them, and the one that records how trials end (sweep.LedgerEnds) writes to that
    folder. The same folder by another path (a symlink, another mount) is fine."""
    was = spec.sweep_dir
    if not was or was == sweep_dir:
        return
    try:
        same = read_text(join(was, SWEEP_FILE)) == read_text(join(sweep_dir, SWEEP_FILE))
    except Exception:  # noqa: BLE001 — gone, or unreadable from here: not the same place
        same = False
    if not same:
        raise UsageError(f"this sweep was started at {was} and resumes only there (Tune's saved experiments "
                         "record trial ends there); move it back to resume it. `bnsweep sync` and "
                         "`bnsweep report` read it where it is now")


def _read_spec(sweep_dir: str) -> SweepSpec:
    try:
        return SweepSpec.read(sweep_dir)
    except FileNotFoundError:
        raise UsageError(f"{sweep_dir} is not a bnsweep sweep directory (no {SWEEP_FILE}); "
                         "pass the directory that `bnsweep run` printed") from None
    except OSError as e:  # permissions, credentials of a remote store
        raise UsageError(f"cannot read {sweep_dir}/{SWEEP_FILE}: "
                         f"{(str(e).strip().splitlines() or [type(e).__name__])[0][:200]}") from None
    except (ValueError, TypeError) as e:  # not JSON, other keys, or a URI pyarrow cannot open
        raise UsageError(f"cannot read {sweep_dir}/{SWEEP_FILE} as a bnsweep sweep record "
                         f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:150]})") from None


def _study_from_spec(spec) -> Study:
    """The study exactly as it was run. Its file itself where it is unchanged, imported as
    `run` imported it (its folder, its __file__, the files it reads beside it); else the
    text sweep.json saved, with one line saying so (a file that reads files beside it
    then fails in one line naming them)."""
    path = Path(spec.study_path)
    try:
        unchanged = path.is_file() and path.read_text() == spec.study_text
    except OSError:
        unchanged = False
    if unchanged:
        study = load_study(path, smoke=spec.smoke, overrides=spec.overrides, seeds=spec.seeds,
                           confirm_seeds=spec.confirm_seeds)
    else:
        print(f"note: {path} {'has changed' if path.is_file() else 'is gone'} since the sweep started; "
              "using the text sweep.json recorded", flush=True)
        with tempfile.TemporaryDirectory() as d:
            copy = Path(d) / path.name
            copy.write_text(spec.study_text)
            try:
                study = load_study(copy, smoke=spec.smoke, overrides=spec.overrides, seeds=spec.seeds,
                                   confirm_seeds=spec.confirm_seeds)
            except SpaceError as e:  # named by the file the user knows, not the folder they never saw
                raise SpaceError(f"{str(e).replace(str(copy), str(path)).replace(d, '<recorded text>')} (the "
                                 f"text sweep.json recorded; restore {path} as it was to run the file "
                                 "itself)") from None
    study.path = path
    study.resources, study.max_concurrent, study.max_failures = spec.resources, spec.max_concurrent, spec.max_failures
    return study


@contextlib.contextmanager
def _driver_log(sweep_dir: str, verbose: bool):
    """Ray's and Tune's own output into SWEEP_DIR/logs/driver-<time>.log while the sweep
    runs (bnsweep/progress.py shows the trials), Ray stopped before the summary so that
    its workers' shutdown messages go there too. A remote sweep folder takes the log
    when the fit ends (object stores cannot append). --verbose: all of it on the terminal."""
    from bnsweep import progress, sweep
    from bnsweep.storage import write_text

    if verbose:
        yield
        return
    name = f"logs/driver-{time.strftime('%Y%m%d-%H%M%S')}.log"
    remote = "://" in sweep_dir
    print(f"Ray's and Tune's own output: {join(sweep_dir, name)}  (--verbose shows it here)", flush=True)
    # A remote log is written in a local folder of its own, which goes once it is uploaded.
    with tempfile.TemporaryDirectory(prefix="bnsweep-") if remote else contextlib.nullcontext() as local:
        path = os.path.join(local, "driver.log") if remote else f"{sweep_dir}/{name}"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with progress.output_to_log(path):
                try:
                    yield
                finally:
                    sweep.shutdown_ray()
        finally:
            if remote:
                write_text(join(sweep_dir, name), Path(path).read_text(errors="replace"))


def _fit_and_summarize(study: Study, spec: SweepSpec, sweep_dir: str, tracker: Tracker, resume: bool,
                       verbose: bool = False) -> int:
    from bnsweep import sweep

    try:
        with _driver_log(sweep_dir, verbose), tracker.live(sweep_dir):
            sweep.run_tuners(study, spec, sweep_dir, resume=resume, verbose=verbose)
    except BaseException:
        tracker.end("FAILED")  # no parent run left RUNNING; what the trials reported is in the ledger
        raise
    unfinished = sweep.n_unfinished(study, sweep_dir)
    try:
        tracker.end("KILLED" if unfinished else "FINISHED")
    except Exception as e:  # noqa: BLE001 — the results are on storage; say how to replay them
        print(f"bnsweep: could not close the MLflow runs ({e}); run "
              f"`{shlex.join(['bnsweep', 'sync', sweep_dir])}` later")
    failed, failed_for_good = _print_summary(study, sweep_dir, tracker)
    if unfinished:
        short = ledger.shortage(sweep_dir)
        why = f"stopped: {short}; free some space. " if short else "interrupted: "
        print(f"\n{why}{count(unfinished, 'trial')} unfinished. Continue with:\n  "
              f"{shlex.join(['bnsweep', 'resume', sweep_dir])}")
        return EXIT_INTERRUPTED
    if failed_for_good:
        print(f"\n{count(sum(failed_for_good.values()), 'trial')} failed for a reason another attempt cannot fix, "
              "so they were not retried:")
        for reason, n in failed_for_good.items():
            print(f"  {n} x {reason}")
    if failed:
        print(f"\n{count(failed, 'trial')} failed after their retries; their errors are in Tune's trial folders "
              f"under {sweep_dir} (error.txt). `{shlex.join(['bnsweep', 'resume', sweep_dir])}` retries them.")
    return 1 if failed or failed_for_good else 0


def _print_start(study: Study, spec: SweepSpec, sweep_dir: str, tracker: Tracker) -> None:
    print(f"study {study.name}: {count(study.n_trials(), 'trial')}, {study.search} search, "
          f"{count(study.fixed['epochs'], 'epoch')} each; per trial {spec.resources['cpu']:g} CPU, "
          f"{spec.resources['gpu']:g} GPU", flush=True)
    print(f"results: {sweep_dir}", flush=True)
    for line in tracker.start_lines():
        print(line, flush=True)


def _print_summary(study: Study, sweep_dir: str, tracker: Tracker) -> tuple[int, dict[str, int]]:
    """Print each arm's trials, best val_acc, diverged and failed, from the ledger; return
    the number of trials that failed after their retries, and the reasons (with counts)
    of those that failed beyond retrying (trainable.run_trial)."""
    trials = ledger.read_trials(sweep_dir)
    # Arms: an Optuna study's searches (its ARMS; dropout there is a tuned nuisance
    # parameter, not an arm); a grid's BN / no BN / + dropout.
    arms: dict[str, list[ledger.TrialRecord]] = {}
    for t in trials:
        arms.setdefault(arm_of(t.config, t.tuner), []).append(t)
    print("\nsummary")
    for arm, mine in arms.items():
        # Best so far over every trial that trained and did not fail (an interrupted one counts).
        ran = [t for t in mine if t.status not in ("failed", "errored") and t.epochs]
        best = max((t.epochs[-1]["best_val_acc"] for t in ran if _finite(t.epochs[-1].get("best_val_acc"))),
                   default=None)
        best_text = f"best val_acc {best:.4f}" if best is not None else "no result"
        diverged = sum(t.status == "diverged" for t in mine)
        failed = sum(t.status in ("failed", "errored") for t in mine)
        print(f"  {arm:<14} {count(len(mine), 'trial'):<10}  {best_text}  diverged {diverged}  failed {failed}")
    print(f"results on storage: {sweep_dir}")
    print("\n".join(tracker.next_lines(sweep_dir)))
    reasons = [t.end["reason"] for t in trials if t.status == "failed"]
    return sum(t.status == "errored" for t in trials), {r: reasons.count(r) for r in dict.fromkeys(reasons)}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def sync(sweep_dir: str, *, tracking_uri: str | None = None) -> int:
    """Replay into MLflow what a sweep's ledger holds that MLflow lacks; return 0.

    Into the store given (tracking_uri), else the one the sweep recorded into, else the
    default (recorder.sync says how).
    """
    sweep_dir = _sweep_dir(sweep_dir)
    spec = _read_spec(sweep_dir)
    with SweepLock(sweep_dir, "bnsweep sync"):  # a live sweep's own process records it; sync after it ends
        return _sync(sweep_dir, spec, tracking_uri)


def _sync(sweep_dir: str, spec: SweepSpec, tracking_uri: str | None) -> int:
    import functools

    from bnsweep import optuna_study, recorder

    study = functools.cache(lambda: _study_from_spec(spec))  # loaded once, and only if needed
    print("\n".join(recorder.sync(spec, sweep_dir, tracking_uri, study)))
    optuna_study.rebuild_or_warn(sweep_dir, study)  # an Optuna study's searches, complete again
    return 0
