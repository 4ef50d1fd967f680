"""`bnsweep run`, `resume` and `sync`: a validated study → Ray → Tuners → summary.

The order matters: everything that can be wrong with the request is checked
before Ray starts or anything is written (cli._study, tracking.check_reachable);
then Ray, then the MLflow parent run, then sweep.json, then the Tuners.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from bnsweep.errors import UsageError
from bnsweep.space import Study, load_study
from bnsweep.storage import SWEEP_FILE, SweepSpec
from bnsweep.trials import arm_name, trial_config

DEFAULT_STORAGE = "bnsweep_results"
EXIT_INTERRUPTED = 130


def _storage(flag: str | None) -> str:
    storage = flag or os.environ.get("BNSWEEP_STORAGE") or DEFAULT_STORAGE
    return storage if "://" in storage else os.path.abspath(storage)


def run(study: Study, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """`bnsweep run`: `overrides` are the CLI's config flags, saved so that resume applies them too."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address and study.fixed["dataset"] == "cifar10":
        # On this machine the trials read the driver's data: a missing dataset is one clear
        # error now (or a download), not a failed trial each. On a cluster the nodes have their own.
        from bnsweep.data import load_cifar10

        load_cifar10(study.fixed["data_dir"], download=study.fixed["download"])
    from bnsweep import sweep, tracking

    uri = None if args.no_tracking else tracking.resolve_tracking_uri(args.tracking_uri)
    if uri:
        tracking.check_reachable(uri)
    sweep.init_ray(address)
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and args.gpus_per_trial is None and not study.gpu_declared:
        study.resources["gpu"] = 1.0  # a GPU cluster and a file that does not say: one GPU per trial
    sweep_dir = sweep.sweep_dir_for(_storage(args.storage), study)
    tracking_info = None
    if uri:
        experiment = args.experiment or study.experiment or f"bnsweep-{study.name}"
        tracking_info = tracking.start_sweep(uri, experiment, study.name, study.search, sweep_dir,
                                             str(study.path), study.text, study.fixed)
    spec = SweepSpec(
        study_path=str(study.path), study_text=study.text, smoke=args.smoke, overrides=overrides,
        resources=study.resources, max_concurrent=study.max_concurrent, max_failures=study.max_failures,
        tracking=tracking_info)
    spec.write(sweep_dir)
    _print_start(study, spec, sweep_dir)
    return _fit_and_summarize(study, spec, sweep_dir, resume=False)


def _sweep_dir(arg: str) -> str:
    arg = arg.rstrip("/")
    return arg if "://" in arg else os.path.abspath(arg)


def resume(args: argparse.Namespace) -> int:
    sweep_dir = _sweep_dir(args.sweep_dir)
    spec = _read_spec(sweep_dir)
    study = _study_from_spec(spec)
    from bnsweep import sweep, tracking

    if spec.tracking:
        tracking.reopen_sweep(spec.tracking)
    sweep.init_ray(args.address)
    print(f"resuming {sweep_dir}", flush=True)
    return _fit_and_summarize(study, spec, sweep_dir, resume=True)


def _read_spec(sweep_dir: str) -> SweepSpec:
    try:
        return SweepSpec.read(sweep_dir)
    except OSError:
        raise UsageError(f"{sweep_dir} is not a bnsweep sweep directory (no {SWEEP_FILE}); "
                         "pass the directory that `bnsweep run` printed") from None


def _study_from_spec(spec) -> Study:
    """The study exactly as it was run: from the file's text saved in sweep.json."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / Path(spec.study_path).name
        path.write_text(spec.study_text)
        study = load_study(path, smoke=spec.smoke, overrides=spec.overrides)
    study.path = Path(spec.study_path)
    study.resources, study.max_concurrent, study.max_failures = spec.resources, spec.max_concurrent, spec.max_failures
    return study


def _fit_and_summarize(study: Study, spec, sweep_dir: str, resume: bool) -> int:
    from bnsweep import sweep, tracking

    try:
        grids = sweep.run_tuners(study, spec, sweep_dir, resume=resume)
    except BaseException:
        if spec.tracking:  # no parent run left RUNNING; what the trials reported is on storage
            tracking.end_sweep(spec.tracking, "FAILED")
        raise
    unfinished = sweep.n_unfinished(study, sweep_dir)
    if spec.tracking:
        try:
            tracking.end_sweep(spec.tracking, "KILLED" if unfinished else "FINISHED")
        except Exception as e:  # noqa: BLE001 — the results are on storage; say how to replay them
            print(f"bnsweep: could not close the MLflow runs ({e}); run `bnsweep sync {sweep_dir}` later")
    _print_summary(grids, spec, sweep_dir)
    if unfinished:
        print(f"\ninterrupted: {unfinished} trial(s) unfinished. Continue with:\n  bnsweep resume {sweep_dir}")
        return EXIT_INTERRUPTED
    failed = sum(g.num_errors for g in grids)
    if failed:
        print(f"\n{failed} trial(s) failed after their retries; their errors are in the trial directories "
              f"under {sweep_dir}. `bnsweep resume {sweep_dir}` retries them.")
        return 1
    return 0


def _print_start(study: Study, spec, sweep_dir: str) -> None:
    print(f"study {study.name}: {study.n_trials()} trials, {study.search} search, "
          f"{study.fixed['epochs']} epochs each; per trial {spec.resources['cpu']:g} CPU, "
          f"{spec.resources['gpu']:g} GPU", flush=True)
    print(f"results: {sweep_dir}", flush=True)
    if spec.tracking:
        print(f"MLflow: {spec.tracking['uri']}  experiment {spec.tracking['experiment']}, "
              f"parent run {spec.tracking['parent_run_id']}", flush=True)


def _print_summary(grids, spec, sweep_dir: str) -> None:
    rows = []
    for grid in grids:
        for result in grid:
            cfg = trial_config(result.config or {})
            if "bn" in cfg:  # a trial that never started has no config to place it in an arm
                rows.append((cfg["bn"], cfg.get("dropout", 0.0), result.metrics or {}, result.error))
    print("\nsummary")
    arms = sorted({(bn, dropout) for bn, dropout, _, _ in rows}, key=str)
    for bn, dropout in arms:
        mine = [(m, err) for b, d, m, err in rows if (b, d) == (bn, dropout)]
        done = [m for m, err in mine if m and not err]
        diverged = sum(1 for m in done if m.get("diverged"))
        failed = sum(1 for _, err in mine if err)
        best = max((m.get("best_val_acc", -1) for m in done if _finite(m.get("best_val_acc"))), default=None)
        arm = arm_name({"bn": bn, "dropout": dropout})
        best_text = f"best val_acc {best:.4f}" if best is not None else "no result"
        print(f"  {arm:<14} {len(mine)} trials  {best_text}  diverged {diverged}  failed {failed}")
    print(f"results on storage: {sweep_dir}")
    if spec.tracking:
        uri = spec.tracking["uri"]
        ui = f"mlflow ui --backend-store-uri {uri}" if not uri.startswith("http") else f"open {uri}"
        print(f"MLflow: experiment {spec.tracking['experiment']} at {uri}  (view: {ui})")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def sync(args: argparse.Namespace) -> int:
    sweep_dir = _sweep_dir(args.sweep_dir)
    spec = _read_spec(sweep_dir)
    if not spec.tracking:
        raise UsageError(f"{sweep_dir} was run with --no-tracking; nothing records where to sync to. "
                         "Run it with a tracking URI next time")
    from bnsweep import tracking

    info = dict(spec.tracking)
    if args.tracking_uri:
        info["uri"] = tracking.resolve_tracking_uri(args.tracking_uri)
    tracking.check_reachable(info["uri"])
    added = 0
    for exp in sorted(p for p in Path(sweep_dir).iterdir() if (p / "tuner.pkl").exists()):
        added += tracking.sync_experiment(info, exp)
    tracking.close_parent(info)
    print(f"synced {sweep_dir} into {info['uri']}: {added} epoch(s) added")
    return 0
