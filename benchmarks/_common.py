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
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
            _restore(saved)


def _restore(saved: tuple[int, int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)


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


def run_args(storage: Path, tracking_uri: str | None = None) -> argparse.Namespace:
    """What `bnsweep run FILE --storage S [--no-tracking | --tracking-uri U]` hands runner.run."""
    return argparse.Namespace(no_tracking=tracking_uri is None, tracking_uri=tracking_uri, address=None,
                              gpus_per_trial=None, storage=str(storage), smoke=False, experiment=None)


def timed_sweep(study, storage: Path, log: Path, tracking_uri: str | None = None, verbose: bool = False) -> float:
    """Wall seconds of bnsweep.runner.run (sweep.json, Tuner, trials, summary) on a started Ray."""
    from bnsweep import runner

    t0 = time.perf_counter()
    with quiet(log, enabled=not verbose):
        code = runner.run(study, run_args(storage, tracking_uri))
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"the sweep ended with exit code {code}; see {log}")
    return wall


def trial_times(storage: Path) -> list[float]:
    """time_total_s (train()'s own wall time, all epochs) of every trial under storage."""
    import json

    out = []
    for path in sorted(storage.rglob("result.json")):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        if lines:
            out.append(float(json.loads(lines[-1])["time_total_s"]))
    return out
