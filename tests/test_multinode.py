"""A real multi-node Ray cluster on this machine: a head and a worker, each its own `ray start`.

The nodes share nothing but the machine: each is a separate
`ray start --block` process group with its own raylet, object store and agents,
and SIGKILL to a node's group and to its Ray worker processes (which run the
trials, each in a group of its own) is a node failure as on a cluster. Tune's
storage is a local directory, which every node of this cluster can read (on a
real cluster, S3 or an NFS mount). The sweep driver is a `bnsweep run`
subprocess that joins the cluster through RAY_ADDRESS; MLflow is the session's
real `mlflow server`. Which node ran an epoch is the result's `node_id` (the
trainable reports it): on one machine every node has the same IP and hostname
(Ray replaces 127.0.0.1 by the machine's address, so `--node-ip-address` cannot
tell them apart either).

The cluster is module-scoped and independent of the session's `ray_address`
head, which may be running at the same time: every port of its own (nothing on
Ray's fixed defaults), and a temp dir of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    bnsweep_cmd,
    bnsweep_env,
    free_port,
    gcs_state,
    results_of,
    start_ray_node,
    stop_ray_node,
    sweep_dir_of,
    trial_dirs,
    write_space,
)
from helpers import TINY, assert_mlflow_equals_ledger, children, steps, wait_for
from mlflow import MlflowClient

# Node-failure detection in about 5 s, not Ray's default ~30 s (the GCS health-checks each raylet), with
# room for a raylet slowed by a busy 2-core machine (a live node declared dead would be killed).
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                          "health_check_timeout_ms": 2000, "health_check_failure_threshold": 5}

class Cluster:
    """A head (1 CPU) and worker nodes (1 CPU each) on this machine, every port its own."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        # No port may clash with another Ray on this machine (the session's heads, a local Ray
        # started with Ray's defaults: dashboard 8265, dashboard agent 52365, worker ports 10002-19999).
        self.head = start_ray_node(
            "--head", f"--port={port}", *self._node_args(),
            f"--dashboard-port={free_port()}", "--include-dashboard=false",
            f"--system-config={json.dumps(FAST_FAILURE_DETECTION)}")
        self.workers: dict[str, subprocess.Popen] = {}  # node id -> its `ray start` process
        self.head_id = self.wait_alive(1)[0]

    def _node_args(self) -> list[str]:
        return ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=100000000",
                f"--dashboard-agent-listen-port={free_port()}", "--min-worker-port=0", "--max-worker-port=0",
                f"--temp-dir={self.temp_dir}"]

    def state(self) -> dict:
        return gcs_state(self.address)

    def alive(self) -> list[str]:
        """Alive node ids, the head first."""
        nodes = [n for n in self.state()["nodes"] if n["alive"]]
        return [n["node_id"] for n in sorted(nodes, key=lambda n: not n["head"])]

    def wait_alive(self, n: int, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ids = self.alive()
            except AssertionError:  # the GCS is not up yet
                ids = []
            if len(ids) == n:
                return ids
            time.sleep(0.5)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {n} alive node(s)")

    def add_worker(self) -> str:
        before = set(self.alive())
        proc = start_ray_node(f"--address={self.address}", *self._node_args())
        (node_id,) = set(self.wait_alive(len(before) + 1)) - before
        self.workers[node_id] = proc
        return node_id

    def kill_worker(self, node_id: str) -> set[int]:
        """A node failure: SIGKILL to every process of the node at once; returns their pids."""
        return _kill_node(self.workers.pop(node_id))

    def ensure_one_worker(self) -> str:
        """Exactly the head and one live worker (an earlier test may have killed its worker)."""
        for node_id, proc in list(self.workers.items()):
            if proc.poll() is not None:
                del self.workers[node_id]
        if not self.workers:
            self.add_worker()
        (node_id,) = self.workers
        assert sorted(self.wait_alive(2)) == sorted([self.head_id, node_id])
        return node_id

    def shutdown(self) -> None:
        # SIGKILL, not SIGTERM: `ray start --block` outwaits SIGTERM (stop_ray_node would wait its 10 s,
        # then SIGKILL anyway). The temp dir goes with the fixture.
        for proc in self.workers.values():
            _kill_node(proc)
        _kill_node(self.head)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo.extend(kids)
    return found


def _kill_node(proc: subprocess.Popen) -> set[int]:
    """SIGKILL a `ray start` node: its process group (raylet, GCS, agents) and its descendants, which
    include the Ray worker processes running trials (each in a process group of its own)."""
    pids = _descendants(proc.pid)
    stop_ray_node(proc, signal.SIGKILL)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids | {proc.pid}


@pytest.fixture(scope="module")
def cluster():
    # A temp dir of its own (short: Ray's socket paths must fit in 107 bytes), removed afterwards.
    temp_dir = Path(f"/tmp/rbm-{os.getpid()}")
    c = Cluster(temp_dir)
    try:
        yield c
    finally:
        c.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _driver(space: Path, storage: Path, cluster: Cluster, uri: str, cwd: Path) -> subprocess.Popen:
    env = bnsweep_env(RAY_ADDRESS=cluster.address, MLFLOW_TRACKING_URI=uri)
    return subprocess.Popen(bnsweep_cmd("run", str(space), "--storage", str(storage)), env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# ------------------------------------------------------ a sweep on two nodes ---

@pytest.fixture(scope="module")
def smoke(cluster, mlflow_server, tmp_path_factory):
    """4 trials, 1 CPU each, 2 at a time on a head and a worker of 1 CPU each: both nodes must work."""
    worker = cluster.ensure_one_worker()
    work = tmp_path_factory.mktemp("multinode-smoke")
    space = write_space(work / "twonodes.py", f"""
        SPACE = {{"lr": [0.01, 0.02], "bn": [True, False]}}
        FIXED = {{**{TINY}, "epochs": 2}}
        MAX_CONCURRENT = 2
    """)
    driver = _driver(space, work / "results", cluster, mlflow_server.uri, work)
    try:
        out, _ = driver.communicate(timeout=500)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, out[-4000:]
    return {"out": out, "pid": driver.pid, "worker": worker, "sweep_dir": sweep_dir_of(work / "results"),
            "gcs": cluster.state()}


def test_smoke_sweep_runs_trials_on_both_nodes_and_records_them(smoke, cluster, mlflow_server):
    nodes = smoke["gcs"]["nodes"]
    assert len(nodes) == 2 and len({n["address"] for n in nodes}) == 1, nodes  # two nodes, one machine
    trials = trial_dirs(smoke["sweep_dir"])
    assert len(trials) == 4
    ran_on = {}
    for t in trials:
        rows = results_of(t)
        assert [r["epoch"] for r in rows] == [1, 2], t.name
        ran_on[t.name] = {r["node_id"] for r in rows}
        assert len(ran_on[t.name]) == 1, f"{t.name} moved between nodes without a failure: {ran_on}"
    assert set().union(*ran_on.values()) == {cluster.head_id, smoke["worker"]}, ran_on
    runs = children(mlflow_server.uri, "bnsweep-twonodes")
    assert len(runs) == 4 and len({r.data.tags["ray_trial_id"] for r in runs}) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-twonodes", smoke["sweep_dir"])
    parent = MlflowClient(mlflow_server.uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"


def test_driver_joins_the_cluster_named_by_ray_address(smoke, cluster):
    """The driver is a job of this cluster (its GCS recorded it), not of a Ray of its own."""
    assert "the Ray cluster has no GPU now" in smoke["out"]  # and how to ask for GPUs still to join
    jobs = [j for j in smoke["gcs"]["jobs"] if j["driver_pid"] == smoke["pid"]]
    assert len(jobs) == 1, smoke["gcs"]["jobs"]
    assert "bnsweep" in jobs[0]["entrypoint"] and " run " in jobs[0]["entrypoint"], jobs[0]
    assert jobs[0]["dead"], "the driver's job ends with the driver"
    # Its core worker logged into this cluster's session, the one session in the cluster's temp dir.
    (session,) = {n["session_dir"] for n in smoke["gcs"]["nodes"]}
    assert list(cluster.temp_dir.glob("session_2*")) == [Path(session)]
    assert list(Path(session, "logs").glob(f"python-core-driver-*_{smoke['pid']}.log")), "no driver log"
    # ... and its trials ran on this cluster's nodes, and only there.
    node_ids = {r["node_id"] for t in trial_dirs(smoke["sweep_dir"]) for r in results_of(t)}
    assert node_ids <= {n["node_id"] for n in smoke["gcs"]["nodes"]}


# ------------------------------------------------------- losing a worker node ---

def test_worker_node_killed_mid_sweep_its_trial_resumes_on_the_head(cluster, mlflow_server, tmp_path):
    epochs = 6
    worker = cluster.ensure_one_worker()
    space = write_space(tmp_path / "nodeloss.py", f"""
        SPACE = {{"lr": [0.01, 0.02]}}
        FIXED = {{**{TINY}, "epochs": {epochs}}}
        MAX_CONCURRENT = 2
        MAX_FAILURES = 2
    """)
    storage = tmp_path / "results"
    driver = _driver(space, storage, cluster, mlflow_server.uri, tmp_path)

    def victim_at_epoch_2():
        if not storage.exists() or not any(storage.iterdir()):
            return None
        for t in trial_dirs(sweep_dir_of(storage)):
            rows = results_of(t)
            if rows and rows[-1]["node_id"] == worker and rows[-1]["epoch"] >= 2:
                return t, rows[-1]
        return None

    try:
        victim, last = wait_for(victim_at_epoch_2, 300, "epoch 2 of a trial on the worker node")
        killed = cluster.kill_worker(worker)
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    epoch_at_kill = last["epoch"]
    assert epoch_at_kill < epochs, "the worker's trial had finished before its node was killed"
    assert last["pid"] in killed, "the trial's process was not one of the worker node's"
    assert driver.returncode == 0, out[-4000:]
    assert cluster.alive() == [cluster.head_id]

    sweep_dir = sweep_dir_of(storage)
    trials = trial_dirs(sweep_dir)
    assert victim in trials and len(trials) == 2
    for t in trials:
        rows = results_of(t)
        seen = [r["epoch"] for r in rows]
        assert seen[-1] == epochs, (t.name, seen)
        assert seen.count(1) == 1, f"{t.name} restarted from scratch: {seen}"
        assert seen == sorted(seen), (t.name, seen)  # continued, never went back to an earlier epoch ...
        assert len(seen) - len(set(seen)) <= 1, (t.name, seen)  # ... at most the epoch in flight ran twice
        assert sorted(set(seen)) == list(range(1, epochs + 1)), (t.name, seen)
    rows = results_of(victim)
    nodes = [r["node_id"] for r in rows]
    on_worker = [r["epoch"] for r in rows if r["node_id"] == worker]
    on_head = [r["epoch"] for r in rows if r["node_id"] == cluster.head_id]
    assert set(nodes) == {worker, cluster.head_id}, nodes
    assert nodes == sorted(nodes, key=lambda n: n != worker), f"went back to the dead node: {nodes}"
    assert on_worker[-1] >= epoch_at_kill and on_head[0] in (on_worker[-1], on_worker[-1] + 1), \
        f"did not resume from the last checkpoint: worker {on_worker}, head {on_head}"

    runs = children(mlflow_server.uri, "bnsweep-nodeloss")
    assert len(runs) == 2 and len({r.data.tags["ray_trial_id"] for r in runs}) == 2, "one MLflow run per trial"
    for run in runs:
        assert steps(mlflow_server.uri, run.info.run_id) == list(range(1, epochs + 1))
        assert run.info.status == "FINISHED"
        assert run.data.metrics["epochs_completed"] == epochs
    assert_mlflow_equals_ledger(mlflow_server.uri, "bnsweep-nodeloss", sweep_dir)
    parent = MlflowClient(mlflow_server.uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
