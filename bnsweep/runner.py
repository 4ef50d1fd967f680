"""`bnsweep run`, `resume` and `sync`: a validated study → Ray → Tuners → summary.

The order matters: everything that can be wrong with the request is checked
before Ray starts or anything is recorded (cli._study, the dataset, check_storage,
tracking.check_reachable); then Ray and whether a trial fits it; then the MLflow
parent run, then sweep.json, then the Tuners.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from bnsweep import ledger
from bnsweep.errors import UsageError
from bnsweep.space import Study, load_study
from bnsweep.storage import SWEEP_FILE, SweepSpec, filesystem, join, read_text
from bnsweep.trials import arm_name

DEFAULT_STORAGE = "bnsweep_results"
EXIT_INTERRUPTED = 130


def _storage(flag: str | None) -> str:
    storage = flag or os.environ.get("BNSWEEP_STORAGE") or DEFAULT_STORAGE
    return storage if "://" in storage else os.path.abspath(storage)


def run(study: Study, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """`bnsweep run`: `overrides` are the CLI's config flags, saved so that resume applies them too."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    storage = _storage(args.storage)
    check_storage(storage)
    if not address and study.fixed["dataset"] == "cifar10":
        # On this machine the trials read the driver's data: a missing dataset is one clear
        # error now (or a download), not a failed trial each. On a cluster the nodes have their own.
        from bnsweep.data import load_cifar10

        load_cifar10(study.fixed["data_dir"], download=study.fixed["download"])
    from bnsweep import sweep, tracking

    uri = None if args.no_tracking else tracking.resolve_tracking_uri(args.tracking_uri)
    if uri:
        tracking.check_reachable(uri, hint=f"{tracking.UNSET_URI_HINT}, or pass --no-tracking and replay later "
                                           "with `bnsweep sync SWEEP_DIR`")
    sweep.init_ray(address)
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
    experiment = study.experiment_name(args.experiment)  # kept in sweep.json for a later sync
    tracking_info = None
    if uri:
        tracking_info = tracking.start_sweep(uri, experiment, study.name, study.search, sweep_dir,
                                             str(study.path), study.text, study.shared(), study.varied())
    spec = SweepSpec(
        study_path=str(study.path), study_text=study.text, smoke=args.smoke, overrides=overrides,
        resources=study.resources, max_concurrent=study.max_concurrent, max_failures=study.max_failures,
        tracking=tracking_info, seeds=study.seeds, experiment=experiment, sweep_dir=sweep_dir)
    try:
        spec.write(sweep_dir)
    except BaseException:
        if tracking_info:  # no parent run left RUNNING for a sweep that never started
            tracking.end_sweep(tracking_info, "FAILED")
        raise
    _print_start(study, spec, sweep_dir)
    return _fit_and_summarize(study, spec, sweep_dir, resume=False, verbose=args.verbose)


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


def resume(args: argparse.Namespace) -> int:
    sweep_dir = _sweep_dir(args.sweep_dir)
    spec = _read_spec(sweep_dir)
    _check_not_moved(spec, sweep_dir)
    study = _study_from_spec(spec)
    from bnsweep import sweep, tracking

    if spec.tracking and args.no_tracking:
        print(f"MLflow is off for this resume (sweep.json keeps its record); replay the new epochs later with "
              f"`{shlex.join(['bnsweep', 'sync', sweep_dir])}`", flush=True)
        spec.tracking = None  # in this process only
    if spec.tracking:
        tracking.check_sweep_recorded(spec.tracking, sweep_dir)
    sweep.init_ray(args.address)
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        sweep.check_fits_local(spec.resources, "resume it on a cluster that has them with --address")
    if spec.tracking:  # only now: nothing above may leave the parent run RUNNING
        tracking.reopen_sweep(spec.tracking)
    print(f"resuming {sweep_dir}", flush=True)
    return _fit_and_summarize(study, spec, sweep_dir, resume=True, verbose=args.verbose)


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
    """The study exactly as it was run: from the file's text saved in sweep.json."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(spec.study_path).name
        path.write_text(spec.study_text)
        study = load_study(path, smoke=spec.smoke, overrides=spec.overrides, seeds=spec.seeds)
    study.path = Path(spec.study_path)
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
    path = os.path.join(tempfile.mkdtemp(prefix="bnsweep-"), "driver.log") if remote else f"{sweep_dir}/{name}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    print(f"Ray's and Tune's own output: {join(sweep_dir, name)}  (--verbose shows it here)", flush=True)
    try:
        with progress.output_to_log(path):
            try:
                yield
            finally:
                sweep.shutdown_ray()
    finally:
        if remote:
            write_text(join(sweep_dir, name), Path(path).read_text(errors="replace"))


def _fit_and_summarize(study: Study, spec, sweep_dir: str, resume: bool, verbose: bool = False) -> int:
    from bnsweep import sweep, tracking

    try:
        with _driver_log(sweep_dir, verbose):
            sweep.run_tuners(study, spec, sweep_dir, resume=resume, verbose=verbose)
    except BaseException:
        if spec.tracking:  # no parent run left RUNNING; what the trials reported is on storage
            tracking.end_sweep(spec.tracking, "FAILED")
        raise
    unfinished = sweep.n_unfinished(study, sweep_dir)
    if spec.tracking:
        try:
            tracking.end_sweep(spec.tracking, "KILLED" if unfinished else "FINISHED")
        except Exception as e:  # noqa: BLE001 — the results are on storage; say how to replay them
            print(f"bnsweep: could not close the MLflow runs ({e}); run "
                  f"`{shlex.join(['bnsweep', 'sync', sweep_dir])}` later")
    failed, failed_for_good = _print_summary(study, spec, sweep_dir)
    if unfinished:
        print(f"\ninterrupted: {unfinished} trial(s) unfinished. Continue with:\n  "
              f"{shlex.join(['bnsweep', 'resume', sweep_dir])}")
        return EXIT_INTERRUPTED
    if failed_for_good:
        print(f"\n{sum(failed_for_good.values())} trial(s) failed for a reason another attempt cannot fix, "
              "so they were not retried:")
        for reason, n in failed_for_good.items():
            print(f"  {n} x {reason}")
    if failed:
        print(f"\n{failed} trial(s) failed after their retries; their errors are in Tune's trial folders "
              f"under {sweep_dir} (error.txt). `{shlex.join(['bnsweep', 'resume', sweep_dir])}` retries them.")
    return 1 if failed or failed_for_good else 0


def _print_start(study: Study, spec, sweep_dir: str) -> None:
    print(f"study {study.name}: {study.n_trials()} trials, {study.search} search, "
          f"{study.fixed['epochs']} epochs each; per trial {spec.resources['cpu']:g} CPU, "
          f"{spec.resources['gpu']:g} GPU", flush=True)
    print(f"results: {sweep_dir}", flush=True)
    if spec.tracking:
        from bnsweep.tracking import ui_links

        print(f"MLflow: {spec.tracking['uri']}  experiment {spec.tracking['experiment']}, "
              f"parent run {spec.tracking['parent_run_id']}", flush=True)
        print(f"  runs: {ui_links(spec.tracking)['runs']}   (+ unfolds the sweep's trials as they start)",
              flush=True)


def _print_summary(study: Study, spec, sweep_dir: str) -> tuple[int, dict[str, int]]:
    """Print each arm's trials, best val_acc, diverged and failed, from the ledger; return
    the number of trials that failed after their retries, and the reasons (with counts)
    of those that failed beyond retrying (sweep.run_trial)."""
    trials = ledger.read_trials(sweep_dir)
    # Arms: an Optuna study's searches (its ARMS; dropout there is a tuned nuisance
    # parameter, not an arm); a grid's BN / no BN / + dropout.
    arms: dict[str, list[ledger.TrialRecord]] = {}
    for t in trials:
        arms.setdefault(t.tuner if study.search == "optuna" else arm_name(t.config), []).append(t)
    print("\nsummary")
    for arm, mine in arms.items():
        done = [t for t in mine if t.status in ("completed", "diverged", "stopped") and t.epochs]
        best = max((t.epochs[-1]["best_val_acc"] for t in done if _finite(t.epochs[-1].get("best_val_acc"))),
                   default=None)
        best_text = f"best val_acc {best:.4f}" if best is not None else "no result"
        diverged = sum(t.status == "diverged" for t in mine)
        failed = sum(t.status in ("failed", "errored") for t in mine)
        print(f"  {arm:<14} {len(mine)} trials  {best_text}  diverged {diverged}  failed {failed}")
    print(f"results on storage: {sweep_dir}")
    if spec.tracking:
        _print_next(spec.tracking)
    else:
        print(f"next: {shlex.join(['bnsweep', 'sync', sweep_dir])}   (records the trials into MLflow), "
              "then bnsweep report")
    reasons = [t.end["reason"] for t in trials if t.status == "failed"]
    return sum(t.status == "errored" for t in trials), {r: reasons.count(r) for r in dict.fromkeys(reasons)}


def _print_next(tracking: dict[str, Any]) -> None:
    """Where to look at the runs, and the report command: each line pastes into a shell,
    each link opens the sweep's runs in MLflow's UI."""
    from bnsweep.tracking import resolve_tracking_uri, ui_links

    uri, experiment = tracking["uri"], tracking["experiment"]
    print(f"MLflow: experiment {experiment} at {uri}")
    if not uri.startswith(("http://", "https://")):
        print(f"  view:    {shlex.join(['mlflow', 'ui', '--backend-store-uri', uri])}   (then open a link below)")
    try:
        links = ui_links(tracking)
        print(f"  trials:  {links['trials']}   (this sweep's trials side by side, its summary first)")
        print(f"  runs:    {links['runs']}   (every sweep of the experiment; + unfolds a sweep's trials)")
    except Exception as e:  # noqa: BLE001 — the links are a convenience; the runs are recorded
        print(f"  (no links: MLflow at {uri} did not answer: {type(e).__name__})")
    report = ["bnsweep", "report", experiment]
    if uri != resolve_tracking_uri():  # where report looks by default
        report += ["--tracking-uri", uri]
    print(f"next: {shlex.join(report)}   (figures, tables and the study's claims judged from these trials)")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def sync(args: argparse.Namespace) -> int:
    """Replay into MLflow what a sweep's results hold that MLflow lacks.

    Into the store given (--tracking-uri), else the one the sweep recorded into,
    else the default. Where that store has no record of the sweep (it ran with
    --no-tracking, or the store was lost or is another one), the experiment and a
    parent run are created first and sweep.json points at them from then on.
    """
    sweep_dir = _sweep_dir(args.sweep_dir)
    spec = _read_spec(sweep_dir)
    from bnsweep import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri or (spec.tracking or {}).get("uri"))
    tracking.check_reachable(uri, hint=", or pass --tracking-uri URI to record the sweep into another store")
    info = tracking.find_sweep(spec.tracking, uri)
    if info is None:
        study = _study_from_spec(spec)
        experiment = (spec.tracking or {}).get("experiment") or spec.experiment or study.experiment_name()
        info = tracking.start_sweep(uri, experiment, study.name, study.search, sweep_dir, spec.study_path,
                                    spec.study_text, study.shared(), study.varied())
        spec.tracking = info
        spec.write(sweep_dir)
        print(f"{uri} had no record of this sweep: created parent run {info['parent_run_id']} in experiment "
              f"{experiment} (sweep.json now points at it)")
    from bnsweep.recorder import sync_ledger

    added = sync_ledger(info, sweep_dir)
    tracking.close_parent(info)
    print(f"synced {sweep_dir} into {uri}: {added} epoch(s) added")
    _print_next(info)
    return 0
