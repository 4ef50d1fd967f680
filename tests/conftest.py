"""Shared pytest fixtures: the CIFAR-10 files the data tests read, a real Ray head
and MLflow server, and a headless Chromium for the pages bnsweep writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
               "data_batch_5", "test_batch", "batches.meta")

# How to give the real-data tests their files, said wherever they skip.
SUPPLY_CIFAR = ("supply it with BNSWEEP_DATA_DIR=DIR, DIR holding cifar-10-batches-py/ (the official python "
                "files or a copy), or run once with network access so bnsweep downloads it into {cache}")


def _has_cifar(root: Path) -> bool:
    return all((root / "cifar-10-batches-py" / name).is_file() for name in CIFAR_FILES)


def _bnsweep_cache_dir() -> Path:
    """bnsweep's own default data folder (bnsweep.data.resolve_data_dir without
    --data-dir or $BNSWEEP_DATA_DIR): $XDG_CACHE_HOME/bnsweep, ~/.cache/bnsweep."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bnsweep"


def _download_cifar(cache: Path) -> Path:
    """bnsweep's own download (bnsweep.data.load_cifar10, download=True) into the
    cache. It goes to a private folder first, renamed into place, so a parallel
    session never sees half-written files. Raises bnsweep's DataError, within seconds
    where there is no network (bnsweep probes the host before downloading)."""
    from bnsweep import data

    tmp = cache / f"tmp-{os.getpid()}"
    try:
        with warnings.catch_warnings():  # an unofficial archive: the data tests say so themselves
            warnings.simplefilter("ignore", data.UnverifiedDataWarning)
            data.load_cifar10(tmp, download=True)  # downloads, extracts and reads (checks) the files
        data.clear_cache()
        try:
            os.rename(tmp / data.BASE_FOLDER, cache / data.BASE_FOLDER)
        except OSError:
            if not _has_cifar(cache):  # not a lost race with another session: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def find_cifar(config: pytest.Config, download: bool = True) -> tuple[Path | None, str]:
    """(folder holding cifar-10-batches-py/, "") or (None, why not), decided once per
    session: $BNSWEEP_DATA_DIR when it has the files, else bnsweep's cache folder when
    it has them, else bnsweep's own download into that cache."""
    found = config.stash.get(_CIFAR_KEY, None)
    if found is not None:
        return found
    env = os.environ.get("BNSWEEP_DATA_DIR")
    cache = _bnsweep_cache_dir()
    if env and _has_cifar(Path(env).expanduser()):
        found = (Path(env).expanduser(), "")
    elif _has_cifar(cache):
        found = (cache, "")
    elif not download:
        return None, "not downloaded"  # not remembered: a later call may still download
    else:
        try:
            found = (_download_cifar(cache), "")
        except Exception as e:  # no network, a full disk, a bad archive: the tests skip, saying why
            first = str(e).split(". ")[0]  # bnsweep's message, less its advice (said here too)
            for tmp in {cache / f"tmp-{os.getpid()}", cache.resolve() / f"tmp-{os.getpid()}"}:
                first = first.replace(str(tmp), str(cache))
            found = (None, f"{type(e).__name__}: {first}")
    config.stash[_CIFAR_KEY] = found
    return found


_CIFAR_KEY = pytest.StashKey[tuple]()


def pytest_configure(config):
    """One compute thread per process, this one and those it starts (`bnsweep train`, Ray's
    nodes and trials), as each Ray trial already has (sweep.py: its cpu resource). The suite
    trains in this process while the session's sweeps train beside it on the same cores;
    with a thread per core each, PyTorch's threads spin against each other: a 4-step training
    took 55 s instead of 3 s on this project's 2-core machine under the suite's load.

    And no job runner beside each `mlflow server` the tests start: MLflow 3's server spawns
    Huey consumers for its GenAI jobs (scorers, trace roll-ups), which bnsweep never asks for;
    idle, they took 125 CPU-s of a 1,630 CPU-s suite (about 8 processes per server)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    torch.set_num_threads(1)


# The fast tier (`pytest -m "not slow"`, the edit-test loop): a test that needs a Ray
# head, an MLflow server or a browser is slow, whatever its file, and is marked so here;
# a test that is slow for another reason carries @pytest.mark.slow itself.
SLOW_FIXTURES = {"ray_address", "mlflow_server", "browser"}


def _uses_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the item's fixtures
    return info is not None and any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        # Under pytest-xdist (-n, with pyproject's --dist loadgroup) a group runs on one worker:
        # the session's shared sweeps run once, not once per worker; a module's own fixture (a
        # sweep, a cluster, a server) is built once, not on every worker its tests reach.
        if "recorded_sweeps" in fixtures:
            item.add_marker(pytest.mark.xdist_group("recorded_sweeps"))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def _needs_cifar(items) -> list:
    return [item for item in items if "cifar_dir" in getattr(item, "fixturenames", ())]


def pytest_report_collectionfinish(config, start_path, items):
    """One line at the top of the run, after collection: where the real-data tests'
    CIFAR-10 comes from, or how many of them will skip and how to supply it."""
    n = len(_needs_cifar(items))
    if not n:
        return []
    tests = f"{n} real-data test" + "s" * (n != 1)
    root, why = find_cifar(config, download=not config.getoption("collectonly"))
    if root is not None:
        return [f"CIFAR-10 for {tests}: {root / 'cifar-10-batches-py'}"]
    cache = _bnsweep_cache_dir()
    if why == "not downloaded":  # --collect-only: nothing runs, so nothing is downloaded
        return [f"CIFAR-10 not found: {tests} would try bnsweep's download into {cache}, else skip"]
    return [f"NO CIFAR-10: {tests} will be SKIPPED ({why}); " + SUPPLY_CIFAR.format(cache=cache)]


@pytest.fixture(scope="session")
def cifar_dir(request) -> Path:
    """A folder holding cifar-10-batches-py/ (official or a copy such as the
    JPEG-derived one): see find_cifar. Skips, saying how to supply the data,
    where there is none and it cannot be downloaded."""
    root, why = find_cifar(request.config)
    if root is None:
        pytest.skip(f"no CIFAR-10 ({why}); " + SUPPLY_CIFAR.format(cache=_bnsweep_cache_dir()))
    return root


# --------------------------------------------------------------------------
# A real browser: headless Chromium (the system's, e.g. Debian's `chromium`
# package) driven by Playwright's Python API, for the pages bnsweep writes.
# --------------------------------------------------------------------------

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def find_chromium() -> str | None:
    """The installed Chromium: /usr/bin/chromium (Debian's package), else the first
    Chromium-like program on PATH."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Playwright's sync API), one per session. Skips only where
    playwright or Chromium is not installed (Playwright's own browsers are not used:
    `apt-get install chromium`, as .ci/run does)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium: install one (Debian: apt-get install chromium; .ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# --------------------------------------------------------------------------
# Real services for the sweep and tracking tests: a Ray head started with
# `ray start` (trials reach it through RAY_ADDRESS, as on a cluster) and an
# `mlflow server` on loopback. Both are started once per session.
# --------------------------------------------------------------------------

import json  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# Short: Ray's socket paths must fit in 107 bytes. Named <dir>/ray, Ray's default layout, so
# that RAY_TMPDIR=<dir> makes this head the one `ray.init()` would find on its own. One per
# pytest-xdist worker ("gw0", ...), each with a Ray head of its own: two heads never share a
# session folder.
RAY_TEMP = f"/tmp/rbt/{os.environ.get('PYTEST_XDIST_WORKER', 'main')}/ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray 2.60 protects a cluster started with `ray start` by a token (~/.ray/auth_token);
# every process that joins it, drivers included, runs in token mode.
RAY_AUTH = {"RAY_AUTH_MODE": "token"}


def _ray(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ray"), *args], capture_output=True, text=True, timeout=180, check=check,
                          env={**os.environ, **RAY_AUTH})


def start_ray_node(*args: str) -> subprocess.Popen:
    """`ray start --block ...` in a process group of its own: stopping it stops only this node,
    never another Ray on the machine (`ray stop` would stop them all)."""
    return subprocess.Popen([str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                            env={**os.environ, **RAY_AUTH}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_ray_node(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_nodes(address: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([str(VENV_BIN / "ray"), "status", f"--address={address}"], capture_output=True,
                           text=True, env={**os.environ, **RAY_AUTH}, timeout=60)
        if r.returncode == 0 and r.stdout.count("node_") >= n:
            return
        time.sleep(1)
    raise RuntimeError(f"Ray at {address} did not show {n} node(s)")


# Asks a cluster's GCS (no driver, so no job of its own) for its nodes and jobs.
_GCS_QUERY = """
import json, sys
from ray._raylet import GcsClient
from ray.core.generated.gcs_pb2 import GcsNodeInfo
gcs = GcsClient(address=sys.argv[1])
nodes = [{"node_id": n.node_id.hex(), "alive": n.state == GcsNodeInfo.GcsNodeState.ALIVE,
          "head": n.is_head_node, "address": n.node_manager_address,
          "session_dir": getattr(n, "session_dir", None)}  # not in Ray 2.50's GcsNodeInfo
         for n in gcs.get_all_node_info(timeout=30).values()]
jobs = [{"driver_pid": j.driver_pid, "dead": j.is_dead, "entrypoint": j.entrypoint}
        for j in gcs.get_all_job_info(skip_submission_job_info_field=True, skip_is_running_tasks_field=True,
                                      timeout=30).values()]
print(json.dumps({"nodes": nodes, "jobs": jobs}))
"""


def gcs_state(address: str) -> dict:
    """{"nodes": [...], "jobs": [...]} of the Ray cluster at address."""
    r = subprocess.run([str(VENV_BIN / "python"), "-c", _GCS_QUERY, address], capture_output=True,
                       text=True, timeout=60, env={**os.environ, **RAY_AUTH})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _ensure_ray_auth_token() -> None:
    """~/.ray/auth_token, made once: under a lock, since two xdist workers may start their
    heads at the same moment, and a token rewritten under a running head locks its drivers out."""
    import fcntl

    folder = Path.home() / ".ray"
    folder.mkdir(exist_ok=True)
    with open(folder / ".bnsweep-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "auth_token").exists():
            _ray("get-auth-token", "--generate")


@pytest.fixture(scope="session")
def ray_address() -> str:
    _ensure_ray_auth_token()
    port = free_port()
    # Every port its own (free ones, not Ray's defaults): under pytest-xdist each worker has a
    # head, and a README-style run starts a local Ray beside them with Ray's defaults.
    head = start_ray_node("--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                          f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                          "--min-worker-port=0", "--max-worker-port=0",
                          f"--temp-dir={RAY_TEMP}")
    address = f"127.0.0.1:{port}"
    wait_for_nodes(address, 1)
    yield address
    stop_ray_node(head)


class MlflowServer:
    """A real `mlflow server` on loopback that a test may stop and start again (same port, same store)."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            stdout=open(self.root / "server.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start; see {self.root / 'server.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a crash, not a clean shutdown
            self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> MlflowServer:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


def bnsweep_env(data_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "BNSWEEP_STORAGE")}
    if data_dir is not None:
        env["BNSWEEP_DATA_DIR"] = str(data_dir)
    env.update(extra)
    if "RAY_ADDRESS" in extra:
        env.update(RAY_AUTH)
    return env


def bnsweep_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "bnsweep"), *args]


def run_bnsweep(*args: str, env: dict, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(bnsweep_cmd(*args), capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def write_space(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def sweep_dir_of(storage: Path) -> Path:
    dirs = [p for p in storage.iterdir() if (p / "sweep.json").exists()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def trial_dirs(sweep_dir: Path) -> list[Path]:
    """Tune's own trial folders (a witness the tests read beside bnsweep's ledger)."""
    return sorted(p.parent for p in sweep_dir.glob("*/*/params.json"))


def ledger_trials(sweep_dir: Path) -> list:
    """bnsweep's record of the sweep's trials (bnsweep/ledger.py), as `run` and `sync` read it."""
    from bnsweep.ledger import read_trials

    return read_trials(str(sweep_dir))


def results_of(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------- Triton kernels, compiled ---

def compile_for_hopper(kernel, constants: dict, types: dict) -> None:
    """Compile a Triton kernel through Triton's whole pipeline to GPU machine code (its
    bundled ptxas) for sm_90 (H100, H200), with no GPU: what Triton's interpreter, which
    runs the kernels in the other tests, never does. `types`: Triton types by argument
    name ("*bf16", "i32", "fp32"); arguments not named are int32; `constants`: constexprs."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    signature = {n: "constexpr" if n in constants else types.get(n, "i32") for n in names}
    constexprs = {(names.index(n),): v for n, v in constants.items()}
    triton.compile(ASTSource(kernel, signature, constexprs=constexprs, attrs={}), target=GPUTarget("cuda", 90, 32))


def on_terminal(args: list[str], env: dict, cwd: Path, timeout: int = 600) -> tuple[int, str]:
    """(exit code, everything shown) of a bnsweep command run on a real pseudo-terminal,
    24 x 120 (a new one is 0 x 0, where tqdm and rich draw nothing)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(bnsweep_cmd(*args), stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    return proc.wait(timeout=timeout), screen.decode(errors="replace")


# ------------------------------------------ the session's shared sweeps ---
# Run once per session (tests/recorded_sweeps.py), read by every test that asks. Every
# reader reaches them through `recorded_sweeps`: under pytest-xdist those tests form one
# group (pytest_collection_modifyitems), so one worker runs the sweeps, not every worker.

@pytest.fixture(scope="session")
def recorded_sweeps(request, tmp_path_factory, ray_address):
    """recorded_sweeps(study, data_dir=None, together=()) -> the study's RecordedSweep, its
    driver exited; the first call starts every sweep the session's tests use."""
    import functools

    from recorded_sweeps import recorded

    return functools.partial(recorded, tmp_path_factory, ray_address, session=request.session)


@pytest.fixture(scope="session")
def lr_sweep(recorded_sweeps):
    """The lr study's tiny sweep (14 trials, 2 seeds, a diverging lr and a failing point)."""
    return recorded_sweeps("lr").result()


@pytest.fixture(scope="session")
def batch_sweep(recorded_sweeps):
    return recorded_sweeps("batch_size").result()


@pytest.fixture(scope="session")
def dropout_sweep(recorded_sweeps):
    """The dropout study's tiny sweep (3 trials): a report with a figure and the original's numbers."""
    return recorded_sweeps("dropout").result()


# ------------------------------------------- a real S3 server (moto) ---

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a fresh moto S3 server; the server stops after the module's tests (tests/helpers.py)."""
    from helpers import AWS, BUCKET, S3Server

    try:
        import boto3
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto's server is not installed: pip install -e '.[test]' (moto[server])")
    server = S3Server(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        assert server.listening_addresses() in (set(), {"0100007F"}), "moto must listen on 127.0.0.1 only"
        boto3.client("s3", endpoint_url=f"http://{server.endpoint}", aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
                     region_name=AWS["AWS_DEFAULT_REGION"]).create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()
    assert server.proc.poll() is not None


