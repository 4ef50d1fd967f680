"""Helpers the test files share (issue 20: shared helpers live here or in conftest.py,
never in another test file): the tiny config of sweep tests, reading a sweep's runs
back from MLflow, driving `bnsweep run` in the background, the ledger and MLflow
agreeing, waiting for a server, and a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import bnsweep_cmd, free_port, ledger_trials, results_of, sweep_dir_of, trial_dirs
from mlflow import MlflowClient

from bnsweep.config import EPOCH_METRICS

# The smallest sweep trial that runs the real code paths: the quick studies' width on
# synthetic data, 4 steps of 50 images, no augmentation.
TINY = '{"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "batch_size": 50, "augment": False}'


def children(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("bnsweep.role") == "trial"]


def steps(uri: str, run_id: str, key: str = "val_acc") -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def start_driver(space: Path, storage: Path, env: dict, cwd: Path, *flags: str) -> subprocess.Popen:
    """`bnsweep run` in the background, for tests that interrupt it."""
    return subprocess.Popen(bnsweep_cmd("run", str(space), "--storage", str(storage), *flags), env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trials_so_far(storage: Path) -> list[Path]:
    if not storage.exists() or not any(storage.iterdir()):
        return []
    return trial_dirs(sweep_dir_of(storage))


def wait_for_first_result(storage: Path) -> None:
    wait_for(lambda: any(results_of(t) for t in trials_so_far(storage)), 300, "the first result")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metric_history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def assert_ledger_holds_every_epoch_once(sweep_dir) -> list:
    """Each trial's epochs in the ledger are 1..n, each once; Tune's own results (an
    independent witness) hold no epoch the ledger lacks, and end at the same n."""
    trials = ledger_trials(sweep_dir)
    tune_dirs = trial_dirs(sweep_dir)
    for t in trials:
        epochs = [r["epoch"] for r in t.epochs]
        assert epochs == list(range(1, len(epochs) + 1)), (t.name, epochs)
        seen = {r["epoch"] for d in tune_dirs if d.name.startswith(t.name) for r in results_of(d)}
        assert seen <= set(epochs) and max(seen, default=0) == len(epochs), (t.name, seen, epochs)
    return trials


def assert_mlflow_equals_ledger(uri: str, experiment: str, sweep_dir) -> None:
    runs = {r.data.tags["ray_trial_id"]: r for r in children(uri, experiment)}
    trials = assert_ledger_holds_every_epoch_once(sweep_dir)
    assert sorted(runs) == sorted(t.trial_id for t in trials)
    for t in trials:
        run = runs[t.trial_id]
        for key in EPOCH_METRICS:
            if key == "epoch":
                continue
            expected = [(r["epoch"], float(r[key])) for r in t.epochs]
            got = metric_history(uri, run.info.run_id, key)
            assert [s for s, _ in got] == [s for s, _ in expected], (t.name, key)
            for (_, a), (_, b) in zip(got, expected):
                assert a == b or (math.isnan(a) and math.isnan(b)), (t.name, key)


def wait_for_health(uri: str, proc: subprocess.Popen, log: Path) -> None:
    """Until the `mlflow server` at uri answers /health; its log's end if it dies or takes 2 minutes."""
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)


# ------------------------------------------------ a real S3-protocol server ---

BUCKET = "bnsweep-test"
# Dummy credentials: moto takes any. Real ones are never read (the env ones come first).
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """moto's S3 server, bound to 127.0.0.1 only, its state in memory."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                no_proxy.open(f"http://{self.endpoint}/moto-api/", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto's S3 server did not start; see {log}") from None
                time.sleep(0.3)

    def uri(self, path: str) -> str:
        """s3://path with pyarrow's options that reach this server."""
        return f"s3://{path}?endpoint_override={self.endpoint}&scheme=http"

    def filesystem(self):
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(access_key=AWS["AWS_ACCESS_KEY_ID"], secret_key=AWS["AWS_SECRET_ACCESS_KEY"],
                                 region=AWS["AWS_DEFAULT_REGION"], endpoint_override=self.endpoint, scheme="http")

    def files(self, path: str) -> dict[str, int]:
        """Object key -> size, of every object under path (bucket/prefix)."""
        from pyarrow import fs as pafs

        infos = self.filesystem().get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        return {i.path: i.size for i in infos if i.type == pafs.FileType.File}

    def read(self, key: str) -> str:
        with self.filesystem().open_input_stream(key) as f:
            return f.read().decode()

    def listening_addresses(self) -> set[str]:
        """The local addresses this server's port listens on, from /proc/net/tcp{,6}."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, port = local.rsplit(":", 1)
                if state == "0A" and int(port, 16) == self.port:  # 0A: LISTEN
                    found.add(address)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ------------------------------------------------- a sweep without Ray ---

def sweep_without_ray(space: Path, storage: Path) -> Path:
    """A grid study's sweep folder as `bnsweep run --no-tracking` leaves it, with no Ray:
    its trials trained one after another in this process by train(), and the ledger
    written as the trainable writes it (trainable.run_trial: the start, each epoch with the
    run's facts, then completed or diverged). For the fast tier's tests of what reads a
    ledger (recorder, tracking, sync, results, the report) without a Ray head."""
    from bnsweep.space import load_study
    from bnsweep.storage import SweepSpec
    from bnsweep.trials import trial_dirname

    study = load_study(space)
    sweep_dir = storage / f"{study.name}-no-ray"
    (sweep_dir / "logs").mkdir(parents=True)  # where a driver's log would be (runner._driver_log)
    SweepSpec(study_path=str(space), study_text=study.text, smoke=False, overrides={}, resources=study.resources,
              max_concurrent=study.max_concurrent, max_failures=study.max_failures, tracking=None,
              seeds=study.seeds, experiment=study.experiment_name(), sweep_dir=str(sweep_dir)).write(str(sweep_dir))
    for i, cfg in enumerate(study.grid_configs()):
        _train_into_ledger(str(sweep_dir), trial_dirname(cfg, f"{i:05d}"), f"{i:05d}", cfg)
    return sweep_dir


def _train_into_ledger(sweep_dir: str, name: str, trial_id: str, cfg: dict) -> None:
    from bnsweep import ledger
    from bnsweep.train import train
    from bnsweep.trials import GRID_TUNER, RUN_INFO_KEYS

    ledger.start_trial(sweep_dir, name, trial_id, GRID_TUNER, cfg)
    info: dict = {}

    def report(metrics: dict, state: dict) -> None:
        ledger.record_epoch(sweep_dir, name, {**metrics, **info, "checkpoint_bytes": 0})

    summary = train(cfg, report=report, on_start=lambda run_info: info.update({k: run_info[k] for k in RUN_INFO_KEYS}))
    ledger.end_trial(sweep_dir, name, "diverged" if summary["diverged"] else "completed")


# ------------------------------------------- a command run in this process ---

def bnsweep_here(monkeypatch, capsys, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`bnsweep ARGS` run by its main() in this process, with `env` as the whole environment and
    `cwd` as the working folder, both restored after: for the commands a test expects to stop
    before Ray starts, where a subprocess would spend its seconds importing torch, Ray and
    MLflow. Returns what a subprocess.run(..., capture_output=True) would."""
    from bnsweep.cli import main

    capsys.readouterr()  # what the test printed before is not this command's
    with monkeypatch.context() as m:
        m.chdir(cwd)
        for key in list(os.environ):
            m.delenv(key)
        for key, value in env.items():
            m.setenv(key, value)
        rc = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["bnsweep", *args], rc, out.out, out.err)
