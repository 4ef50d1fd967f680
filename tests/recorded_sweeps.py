"""The session's tiny real sweeps that tests only read (test_analysis, test_report,
test_browser): each study's search space run once by `bnsweep run` on the session's Ray
head into its own sqlite store, side by side, then read by as many tests as ask for it.

The sweeps are real: `bnsweep run` of small search-space files (the small model on
synthetic data, 2-3 epochs), recorded by the driver into an sqlite store, exactly as a
user's sweep is.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Small enough for seconds per trial on a CPU, large enough that BN learns the
# synthetic data in 3 epochs (30 steps). bn_momentum 0.5 (Keras convention) lets
# BN's running statistics catch up within those steps (DESIGN.md §2 "small runs").
TINY = {"model": "simple", "dataset": "synthetic", "width": 0.125, "epochs": 3, "batch_size": 50,
        "augment": False, "bn_momentum": 0.5, "lr": 0.05, "device": "cpu", "eval_batch_size": 200}
DIVERGING_LR = 1e6  # no-BN loss becomes NaN in the first epoch (the simple net survives 1e3 with dead ReLUs)

# study -> its search-space file, run for real by `bnsweep run` (local Ray head, sqlite store).
FAILING = {"dataset": "cifar10", "data_dir": "/nonexistent/bnsweep-test", "download": False}  # DataError in the trial


def _fixed(*varied: str, **more) -> dict:
    """TINY without the keys a study varies (a key is set in one place: bnsweep/space.py), plus `more`."""
    return {**{k: v for k, v in TINY.items() if k not in varied}, **more}


SPACE_FILES = {
    # Two seeds everywhere: single values and mean ± sd; the diverging lr and a failing point stay in the data.
    "lr": f"""
SPACE = [{{"lr": lr, "bn": bn, "dataset": "synthetic"}}
         for lr in (0.01, 0.05, {DIVERGING_LR}) for bn in (True, False)]
SPACE += [{{"lr": 0.05, "bn": True, **{FAILING}}}]
SEEDS = [0, 1]
FIXED = {_fixed("lr", "dataset")}
MAX_FAILURES = 0
CLAIMS = [3, 1]  # as search_spaces/lr.py declares: the report learns them from the sweep, not the name
FIGURES = ["lr", "curves"]
ORIGINAL = "lr"
""",
    "batch_size": f"""
SPACE = {{"batch_size": [25, 100], "bn": [True, False]}}
FIXED = {_fixed("batch_size", epochs=2)}
""",
    "dropout": f"""
SPACE = [{{"bn": False}}, {{"bn": False, "dropout": 0.5}}, {{"bn": True}}]
FIXED = {_fixed(epochs=2)}
""",
    "optuna": f"""
SEARCH = "optuna"
ARMS = {{"bn": [True, False]}}
SPACE = {{"lr": ("loguniform", 0.01, 0.2), "batch_size": ("choice", [25, 50, 100]), "dropout": ("uniform", 0.0, 0.5)}}
NUM_SAMPLES = 2
SCHEDULER = "fifo"
FIXED = {_fixed("lr", "batch_size", epochs=2)}
""",
}
# name -> (shipped study, the copy's file name): search_spaces/<study>.py copied elsewhere, run in smoke mode.
COPIES = {"lr_copy": ("lr", "my_rates")}
README_STUDY = "quick"  # run by test_sweep on a Ray of its own (the README's defaults), never shared


def smoke_name(stem: str) -> str:
    """The session's name for search_spaces/<stem>.py run as it is, in smoke mode: its stem,
    unless a tiny space of SPACE_FILES has that name ("lr" -> "lr_smoke")."""
    return f"{stem}_smoke" if stem in SPACE_FILES else stem


# A session's name for each shipped file run as it is (in smoke mode) -> the file's stem.
SHIPPED = {smoke_name(p.stem): p.stem for p in sorted((ROOT / "search_spaces").glob("*.py")) if p.stem != README_STUDY}
N_TRIALS = {"lr": 14, "batch_size": 4, "dropout": 3, "optuna": 4}


class RecordedSweep:
    """One study's tiny search space run by `bnsweep run` in the background, into its own
    sqlite store (drivers side by side never share one); result() waits for it. A study
    not in SPACE_FILES is the repository's own file, search_spaces/<study>.py, in its
    smoke mode, on the CIFAR-10 files in data_dir."""

    def __init__(self, study: str, ray_address: str, work: Path, store: Path, data_dir: Path | None = None):
        from conftest import bnsweep_cmd, bnsweep_env

        self.study, self.work = study, work
        self.uri = f"sqlite:///{store}/{study}.db"
        self.experiment = f"bnsweep-{study}"
        if study in SPACE_FILES:
            space, flags = work / f"{study}.py", []
            space.write_text(f'"""{study}: analysis test sweep."""\n' + SPACE_FILES[study])
        elif study in COPIES:  # a shipped file copied under another name, into a folder of its own
            shipped, name = COPIES[study]
            (work / "elsewhere").mkdir()
            space, flags = work / "elsewhere" / f"{name}.py", ["--smoke"]
            space.write_text((ROOT / "search_spaces" / f"{shipped}.py").read_text())
            self.experiment = f"bnsweep-{name}"
        else:
            space, flags = ROOT / "search_spaces" / f"{SHIPPED.get(study, study)}.py", ["--smoke"]
            self.experiment = f"bnsweep-{space.stem}"
        env = bnsweep_env(data_dir, RAY_ADDRESS=ray_address, MLFLOW_TRACKING_URI=self.uri)
        with open(work / "run.log", "wb") as log:  # a file, not a pipe: nobody reads it while it runs
            self.proc = subprocess.Popen(bnsweep_cmd("run", str(space), *flags, "--storage", str(work / "results")),
                                         env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)

    def result(self) -> tuple[str, str]:
        """(tracking_uri, experiment) once the sweep is done."""
        rc = self.proc.wait(timeout=900)
        # 1: the tiny lr study's failing trials (a point with no data), which it keeps on purpose
        assert rc in (0, 1), f"bnsweep run {self.study}: exit {rc}\n{self.log()[-6000:]}"
        return self.uri, self.experiment

    def log(self) -> str:
        """What `bnsweep run` printed (stdout and stderr, as a terminal shows them)."""
        return (self.work / "run.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_STORE: dict = {}
SWEEP_FIXTURES = {"lr_sweep": "lr", "batch_sweep": "batch_size", "dropout_sweep": "dropout"}


def _fast_dir(tmp_path_factory) -> Path:
    """A folder for the MLflow stores: in memory (/dev/shm) where there is one, since
    SQLite's commits to disk cost seconds over a sweep; else pytest's tmp folder."""
    import atexit
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="bnsweep-test-mlflow-", dir=shm))
        atexit.register(shutil.rmtree, path, True)
        return path
    return tmp_path_factory.mktemp("mlflow")


def studies_used(session) -> list[str]:
    """The studies whose sweeps the session's collected tests ask for."""
    used = set()
    for item in session.items:
        used |= {SWEEP_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SWEEP_FIXTURES}
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("study") in SPACE_FILES:
            used.add(params["study"])
        if isinstance(params.get("space"), Path) and smoke_name(params["space"].stem) in SHIPPED:
            used.add(smoke_name(params["space"].stem))  # test_sweep's smoke run of every shipped file
    return [s for s in [*SPACE_FILES, *SHIPPED] if s in used]


def _claim_for_this_worker(config, tmp_path_factory) -> None:
    """Under pytest-xdist, the shared sweeps belong to the one worker that runs the
    recorded_sweeps group (conftest.py): a second worker reaching them means a test reads
    them without naming that fixture (e.g. through request.getfixturevalue), and would
    train every one of them again. Said at once, not found as a slower suite."""
    me = getattr(config, "workerinput", {}).get("workerid")
    if me is None:  # one process: nothing to share
        return
    claim = tmp_path_factory.getbasetemp().parent / "recorded-sweeps-worker"  # the run's folder, above each worker's
    try:
        with open(claim, "x") as f:
            f.write(me)
    except FileExistsError:
        owner = claim.read_text()
        assert owner == me, (f"the shared sweeps already run on xdist worker {owner}: this test reaches them "
                             "without the recorded_sweeps fixture in its signature (tests/conftest.py)")


def recorded(tmp_path_factory, ray_address: str, study: str, session=None, data_dir: Path | None = None,
             together: tuple[str, ...] = ()) -> RecordedSweep:
    """The study's tiny sweep, made once per test session, once its driver has exited.

    Given the pytest session, the first call also starts the sweeps of every other
    study the session's tests use, and of the studies in `together`: side by side on
    the Ray head, since a driver's start-up (imports, Tune, the first trial process)
    costs more than its trials. data_dir: the CIFAR-10 files, for the smoke runs of
    search_spaces/ files (see RecordedSweep); found as the cifar_dir fixture finds them
    where not given. A shipped file's smoke run starts only where there are files to train on."""
    from conftest import find_cifar

    if "dir" not in _STORE:
        if session is not None:
            _claim_for_this_worker(session.config, tmp_path_factory)
        _STORE["dir"] = _fast_dir(tmp_path_factory)
    if data_dir is None and session is not None:
        data_dir = find_cifar(session.config)[0]
    for name in dict.fromkeys([study, *together, *(studies_used(session) if session is not None else [])]):
        if name not in _STORE and (name == study or name not in SHIPPED or data_dir is not None):
            _STORE[name] = RecordedSweep(name, ray_address, tmp_path_factory.mktemp(name), _STORE["dir"], data_dir)
            if session is not None:  # before the Ray head stops: no driver outlives the session
                session.addfinalizer(_STORE[name].stop)
    _STORE[study].proc.wait(timeout=900)
    return _STORE[study]
