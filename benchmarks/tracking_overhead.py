"""MLflow tracking's overhead on a bnsweep sweep (issue 4).

Two measurements:
1. In-process, without Ray or training: --micro-trials fake trials x --micro-epochs
   synthetic epochs written to a ledger (bnsweep/ledger.py) as the trainable writes
   them, each write timed (the cost inside a trial), and after each one a pass of
   the driver's live record (recorder.record_ledger, what LiveRecord runs every few
   seconds) timed: the MLflow work the driver does, free of the noise of whole
   sweeps. A trial's first epoch also creates its run and logs its params, so it is
   shown apart from the later ones.
2. Whole sweeps: the same short sweep (N identical trials, bnsweep.runner.run,
   MAX_CONCURRENT --concurrency) with tracking off (--no-tracking) and on,
   alternating --repeats times, on one Ray instance.

Both use a temporary sqlite store (the default kind, `./mlflow.db`), created
before timing (its one-time schema creation is printed apart), or --tracking-uri
(e.g. http://127.0.0.1:5000 for a server).

How to read it: the target is tracking under 1 % of an epoch. The ledger write
is in the trial's own time; the MLflow work runs on a thread of the driver, not
in the trials, so it reaches training only as CPU taken from them; (1) bounds
both per epoch, (2) shows it end to end, within the noise of two sweeps (rerun,
or use --repeats, before trusting a difference of a few percent).
Figures are from one run on a machine that may be busy.

    .venv/bin/python benchmarks/tracking_overhead.py                    # est. 2-3 min on 2 idle CPU cores
    .venv/bin/python benchmarks/tracking_overhead.py --minute-trials --repeats 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from _common import (
    add_trial_flags,
    device_line,
    quiet,
    resources,
    run_main,
    start_ray,
    stop_ray,
    timed_sweep,
    trial_fixed,
    trial_times,
    write_study,
)

from bnsweep import data as data_mod
from bnsweep.config import make_config
from bnsweep.space import load_study


def synthetic_result(epoch: int) -> dict:
    from bnsweep.config import EPOCH_METRICS
    from bnsweep.trials import RUN_INFO_KEYS

    result = {key: 0.5 + 0.01 * epoch for key in EPOCH_METRICS}
    result.update(epoch=epoch, diverged=0.0)
    result.update({key: "bench" for key in RUN_INFO_KEYS})
    return result


def micro(uri: str, n_trials: int, n_epochs: int, fixed: dict, log: Path, folder: Path) -> dict:
    """Seconds of each ledger write (in a trial) and MLflow pass (on the driver), against `uri`."""
    from mlflow import MlflowClient

    from bnsweep import ledger, tracking
    from bnsweep.recorder import record_ledger

    tracking.check_reachable(uri)  # a server that is down: one line now, not minutes of retries
    with quiet(log):  # MLflow logs its schema creation
        t0 = time.perf_counter()
        MlflowClient(uri).search_experiments(max_results=1)  # sqlite: creates the schema (once per store)
        store_s = time.perf_counter() - t0
    sweep_dir = str(folder / "bench-sweep")
    t0 = time.perf_counter()
    record = tracking.start_sweep(uri, "bnsweep-benchmark-tracking", "benchmark", "grid", sweep_dir,
                                  "bench.py", '"""benchmark"""\n', fixed, ["seed"],
                                  elsewhere="delete the benchmark's store and run again")
    start_s = time.perf_counter() - t0
    runs, reader, finished = tracking.TrialRuns(record), ledger.Reader(sweep_dir), {}
    write, first, later, complete = [], [], [], []
    for i in range(n_trials):
        name = f"bench_{i:05d}"
        ledger.start_trial(sweep_dir, name, name, "grid", make_config({**fixed, "seed": i}))
        for epoch in range(1, n_epochs + 1):
            t0 = time.perf_counter()
            ledger.record_epoch(sweep_dir, name, synthetic_result(epoch))
            write.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            record_ledger(runs, reader.trials(), finished)
            (first if epoch == 1 else later).append(time.perf_counter() - t0)
        ledger.end_trial(sweep_dir, name, "completed")
        t0 = time.perf_counter()
        record_ledger(runs, reader.trials(), finished)
        complete.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    tracking.end_sweep(record, "FINISHED")
    end_s = time.perf_counter() - t0
    return {"store_s": store_s, "start_s": start_s, "end_s": end_s, "write_s": statistics.mean(write),
            "first_s": statistics.mean(first), "later_s": statistics.mean(later) if later else 0.0,
            "complete_s": statistics.mean(complete)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trial_flags(p, trials=4, epochs=3, n_train=400)
    p.add_argument("--concurrency", type=int, default=2, help="MAX_CONCURRENT of the sweeps")
    p.add_argument("--repeats", type=int, default=1, help="off/on sweep pairs, alternating")
    p.add_argument("--tracking-uri", default=None, help="MLflow server or store (default: a temp sqlite store)")
    p.add_argument("--micro-trials", type=int, default=10)
    p.add_argument("--micro-epochs", type=int, default=30, help="synthetic epochs per fake trial (reference: 30)")
    p.add_argument("--no-sweeps", action="store_true", help="only the in-process measurement")
    args = p.parse_args()
    fixed = trial_fixed(args)
    warnings.filterwarnings("ignore", category=data_mod.UnverifiedDataWarning)
    tmp = Path(tempfile.mkdtemp(prefix="bnsweep-tracking-overhead-"))
    log = tmp / "ray.log"
    if not args.verbose:
        print(f"Ray's, Tune's and MLflow's output: {log} (removed at the end unless something fails)")
    uri = args.tracking_uri or f"sqlite:///{tmp / 'mlflow.db'}"

    print("tracking_overhead: MLflow tracking on vs off, bnsweep sweeps on Ray Tune")
    print(f"device: {device_line(fixed['device'])}")
    print(f"settings: tracking store {uri}; micro {args.micro_trials} fake trials x {args.micro_epochs} epochs; "
          f"sweeps {args.trials} trials x {args.epochs} epochs, {args.n_train} train / {args.n_val} val images, "
          f"batch {args.batch_size}, width {args.width}, device {fixed['device']}, concurrency {args.concurrency}, "
          f"{args.cpus_per_trial} CPU per trial, {args.repeats} repeat(s)", flush=True)

    m = micro(uri, args.micro_trials, args.micro_epochs, fixed, log, tmp)
    per_trial = m["first_s"] + (args.micro_epochs - 1) * m["later_s"] + m["complete_s"]
    print("in-process: the ledger write in a trial, the MLflow work on the driver")
    print(f"  ledger: one epoch's record (in the trial)  {1000 * m['write_s']:8.1f} ms")
    print(f"  store creation (one-time, excluded below) {1000 * m['store_s']:8.1f} ms")
    print(f"  start_sweep (experiment, parent run)     {1000 * m['start_s']:8.1f} ms per sweep")
    print(f"  first epoch of a trial (run + params)    {1000 * m['first_s']:8.1f} ms")
    print(f"  later epoch                               {1000 * m['later_s']:8.1f} ms")
    print(f"  trial end                                 {1000 * m['complete_s']:8.1f} ms")
    print(f"  end_sweep (summary, parent closed)       {1000 * m['end_s']:8.1f} ms per sweep")
    print(f"  a trial of {args.micro_epochs} epochs, all its calls       {1000 * per_trial:8.1f} ms", flush=True)

    if args.no_sweeps:
        for epoch_s in (10, 60):
            print(f"  a {epoch_s}-s epoch: ledger write {m['write_s'] / epoch_s:.3%} of the trial's time, "
                  f"MLflow pass {m['later_s'] / epoch_s:.2%} of a driver core")
        shutil.rmtree(tmp, ignore_errors=True)
        return

    res = resources(fixed, args.cpus_per_trial, args.concurrency)
    study_path = write_study(tmp, "bench_tracking", args.trials, fixed, res, args.concurrency)
    _, init_s = start_ray(log, args.verbose)  # ray is already imported by bnsweep.tracking
    print(f"sweeps (Ray start: ray.init {init_s:.1f} s, not counted)", flush=True)
    walls: dict[str, list[float]] = {"off": [], "on": []}
    epoch_times: list[float] = []
    for r in range(args.repeats):
        for mode in ("off", "on"):
            storage = tmp / f"{mode}{r}"
            wall = timed_sweep(load_study(study_path), storage, log, uri if mode == "on" else None, args.verbose)
            walls[mode].append(wall)
            in_train = trial_times(storage)
            epoch_times += [t / args.epochs for t in in_train]
            print(f"  tracking {mode:<3}  {wall:8.1f} s wall   in train() {sum(in_train):7.1f} s "
                  f"({len(in_train)} trials)", flush=True)
    stop_ray(log, args.verbose)
    off, on = statistics.mean(walls["off"]), statistics.mean(walls["on"])
    epoch_s = statistics.mean(epoch_times)
    print("ratios")
    print(f"  sweep wall, tracking on / off:                  {on / off:.3f}  ({(on - off) / off:+.1%})")
    print(f"  in-process: one ledger write / one epoch ({epoch_s:.1f} s):  {m['write_s'] / epoch_s:.3%}")
    print(f"  in-process: one MLflow pass / one epoch ({epoch_s:.1f} s):   {m['later_s'] / epoch_s:.2%}")
    sweep_work = m["start_s"] + m["end_s"] + args.trials * (
        m["first_s"] + (args.epochs - 1) * m["later_s"] + m["complete_s"])
    print(f"  in-process: this sweep's MLflow work / off wall: {sweep_work / off:.2%} ({sweep_work:.2f} s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)
