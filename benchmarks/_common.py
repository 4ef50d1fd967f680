"""Helpers shared by the benchmark scripts (device line, quiet Ray runs, temp studies).

Not a benchmark itself. The scripts import it from their own folder, which Python
puts on sys.path when it runs `python benchmarks/NAME.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch


def run_main(main) -> None:
    """Run a benchmark's main(); an expected mistake (missing data, a bad value) is one
    line and the bnsweep CLI's exit code, not a traceback."""
    from bnsweep.errors import BnsweepError

    try:
        main()
    except BnsweepError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def device_line(device: str | torch.device = "cpu") -> str:
    """Which machine gave the numbers: CPU model and cores, GPU name if used, torch threads."""
    device = torch.device(device)
    text = f"CPU {cpu_model()} ({os.cpu_count()} logical cores visible)"
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return f"{text}; torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"


def resolve_device(name: str) -> str:
    """--device as train() resolves and checks it (auto: cuda where there is one), as text."""
    from bnsweep.train import resolve_device as resolve

    return str(resolve(name))


@contextlib.contextmanager
def quiet(log_path: Path, enabled: bool = True):
    """Send fd 1 and 2 (Python, Ray's C++ and its worker logs alike) to log_path.

    On an exception the log's tail is printed, so a failure is never silent.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            tail = log_path.read_text(errors="replace")[-4000:]
            print(f"--- last lines of {log_path} ---\n{tail}", file=sys.stderr)
            raise
        else:
            time.sleep(1.5)  # let Ray's log thread hand over the trials' last lines, into the log
            _restore(saved)


def _restore(saved: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


def write_study(folder: Path, name: str, n_trials: int, fixed: dict, resources: dict,
                max_concurrent: int) -> Path:
    """A grid search-space file of n_trials identical trials (BN arm), one per seed.

    RESOURCES is written out: a file that leaves "gpu" unsaid gets a whole GPU
    per trial on a GPU machine (runner.run), which would defeat MAX_CONCURRENT.
    """
    path = folder / f"{name}.py"
    path.write_text(
        f'"""Benchmark study: {n_trials} identical short trials (seeds differ), BN arm only."""\n'
        f'SEARCH = "grid"\nSPACE = {{"bn": [True]}}\nFIXED = {fixed!r}\n'
        f"SEEDS = {list(range(n_trials))!r}\nRESOURCES = {resources!r}\nMAX_CONCURRENT = {max_concurrent}\n")
    return path


def timed_sweep(study, storage: Path, log: Path, tracking_uri: str | None = None, verbose: bool = False) -> float:
    """Wall seconds of bnsweep.runner.run (sweep.json, Tuner, trials, summary) on a started Ray;
    tracking_uri None: --no-tracking."""
    from bnsweep import runner

    t0 = time.perf_counter()
    with quiet(log, enabled=not verbose):
        code = runner.run(study, {}, storage=str(storage), tracking_uri=tracking_uri, mlflow=tracking_uri is not None)
        wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"the sweep ended with exit code {code}; see {log}")
    return wall


def trial_times(storage: Path) -> list[float]:
    """time_total_s (train()'s own wall time, all epochs) of every trial under storage, from
    each sweep's ledger."""
    from bnsweep.ledger import read_trials

    return [float(t.epochs[-1]["time_total_s"]) for sweep in sorted(storage.iterdir()) if sweep.is_dir()
            for t in read_trials(str(sweep)) if t.epochs]


# About a minute per trial on one core of the 2-core dev machine, at the quick
# study's rate there (~110 training images/s at width 1/16, one thread); the
# scripts print the time they measured.
MINUTE_TRIAL = {"n_train": 3000, "n_val": 1000, "epochs": 2}


def add_trial_flags(p: argparse.ArgumentParser, trials: int, epochs: int, n_train: int) -> None:
    g = p.add_argument_group("the trials (all identical but for the seed)")
    g.add_argument("--trials", type=int, default=trials, help="trials per sweep")
    g.add_argument("--epochs", type=int, default=epochs)
    g.add_argument("--n-train", type=int, default=n_train, help="training images per epoch")
    g.add_argument("--n-val", type=int, default=200, help="validation images per epoch")
    g.add_argument("--batch-size", type=int, default=50)
    g.add_argument("--width", type=float, default=0.0625, help="channel multiplier (the quick study's 1/16)")
    g.add_argument("--minute-trials", action="store_true",
                   help=f"trials of about a minute on one CPU core: {MINUTE_TRIAL} (overrides those flags)")
    g.add_argument("--cpus-per-trial", type=int, default=1, help="also the torch threads of the plain loop")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda; on cuda each trial gets 1/concurrency GPU")
    g.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py/ (default $BNSWEEP_DATA_DIR)")
    g.add_argument("--verbose", action="store_true", help="show Ray's and Tune's output instead of logging it")


def trial_fixed(args: argparse.Namespace) -> dict:
    """FIXED of the benchmark study; data_dir absolute, since Ray workers run elsewhere."""
    from bnsweep.data import resolve_data_dir

    if args.minute_trials:
        for key, value in MINUTE_TRIAL.items():
            setattr(args, key, value)
    return {"width": args.width, "n_train": args.n_train, "n_val": args.n_val, "epochs": args.epochs,
            "batch_size": args.batch_size, "device": resolve_device(args.device),
            "data_dir": str(resolve_data_dir(args.data_dir).resolve())}


def resources(fixed: dict, cpus: int, concurrency: int) -> dict:
    return {"cpu": cpus, "gpu": round(1 / concurrency, 4) if fixed["device"].startswith("cuda") else 0}


def start_ray(log: Path, verbose: bool) -> tuple[float, float]:
    """(seconds to import bnsweep.sweep: ray, tune, mlflow; seconds of ray.init), as `bnsweep run` does them."""
    t0 = time.perf_counter()
    from bnsweep import sweep

    t1 = time.perf_counter()
    with quiet(log, enabled=not verbose):
        sweep.init_ray(None)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def stop_ray(log: Path, verbose: bool) -> None:
    import ray

    with quiet(log, enabled=not verbose):  # Ray hands over the workers' last log lines at shutdown
        ray.shutdown()
