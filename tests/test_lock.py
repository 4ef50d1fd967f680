"""One writer per sweep (bnsweep/lock.py): two real processes on one sweep folder.

The fast tests race the lock itself and the commands' refusal, which comes before Ray
or MLflow is touched; the slow one races two real `resume`s and two real `sync`s of a
sweep that really ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import bnsweep_cmd, bnsweep_env, run_bnsweep, sweep_dir_of, write_space

from bnsweep.lock import LOCK_FILE, LockedError, SweepLock
from bnsweep.storage import SweepSpec

HOLD = textwrap.dedent("""
    import sys, time
    from bnsweep.lock import SweepLock
    with SweepLock(sys.argv[1], "bnsweep resume"):
        print("held", flush=True)
        time.sleep(600)
""")


def _holder(sweep_dir: Path) -> subprocess.Popen:
    """A second real process holding the lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _a_sweep(folder: Path) -> Path:
    """A sweep folder as `run` leaves it before its first trial: sweep.json only."""
    spec = SweepSpec(study_path=str(folder / "s.py"), study_text='SPACE = {"bn": [True, False]}\n', smoke=False,
                     overrides={}, resources={"cpu": 1.0, "gpu": 0.0}, max_concurrent=None, max_failures=0,
                     tracking=None, seeds=[0], experiment="bnsweep-s", sweep_dir=str(folder))
    spec.write(str(folder))
    return folder


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(LockedError, match=rf"being written by `bnsweep resume` \(pid {holder.pid} on "):
            SweepLock(str(tmp_path), "bnsweep sync").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: no clean release
        holder.wait()
    with SweepLock(str(tmp_path), "bnsweep sync"):
        assert f"took over the lock of {tmp_path} left by `bnsweep resume` (pid {holder.pid}" in capsys.readouterr().out
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    # A clean release names no holder: the next writer takes it without a word.
    with SweepLock(str(tmp_path), "bnsweep sync"):
        assert capsys.readouterr().out == ""


def test_resume_and_sync_stop_in_one_line_before_anything_starts_while_another_process_writes(tmp_path):
    sweep_dir = _a_sweep(tmp_path / "sweep")
    before = sorted(p.name for p in sweep_dir.iterdir())
    holder = _holder(sweep_dir)
    try:
        env = bnsweep_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9")  # a store that would fail if it were reached
        for command in (["resume", str(sweep_dir)], ["sync", str(sweep_dir)]):
            t = time.monotonic()
            r = run_bnsweep(*command, env=env, cwd=tmp_path, timeout=120)
            assert r.returncode == 2, r.stdout + r.stderr
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
            assert f"being written by `bnsweep resume` (pid {holder.pid}" in r.stderr, r.stderr
            assert "Ray" not in r.stdout + r.stderr and "unreachable" not in r.stderr
            assert time.monotonic() - t < 60  # not after a Ray start; the timing is not what is tested
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name != LOCK_FILE) == before  # nothing else written


def test_a_folder_that_is_not_a_sweep_gets_no_lock_file(tmp_path):
    r = run_bnsweep("resume", str(tmp_path), env=bnsweep_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "is not a bnsweep sweep directory" in r.stderr
    assert not (tmp_path / LOCK_FILE).exists()


def test_many_processes_racing_for_one_lock_let_exactly_one_in(tmp_path):
    race = textwrap.dedent("""
        import sys, time
        from bnsweep.lock import LockedError, SweepLock
        time.sleep(float(sys.argv[2]) - time.time())
        try:
            with SweepLock(sys.argv[1], "bnsweep sync"):
                print("won", flush=True)
                time.sleep(3)
        except LockedError:
            print("refused", flush=True)
    """)
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", race, str(tmp_path), str(start)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused", "refused", "refused", "won"]


TINY = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "batch_size": 50, "augment": False}


def _bnsweep_bg(*args: str, env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(bnsweep_cmd(*args), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_resumes_and_two_syncs_at_once_leave_one_record(ray_address, tmp_path):
    from mlflow import MlflowClient

    from bnsweep import ledger

    # The study reads a file beside it, as researchers' studies do: resume must import it as run did.
    (tmp_path / "arms.json").write_text('{"bn": [true, false]}')
    space = write_space(tmp_path / "twice.py", f"""
        import json
        from pathlib import Path
        SPACE = json.loads((Path(__file__).parent / "arms.json").read_text())
        FIXED = {{**{TINY!r}, "epochs": 3}}
        MAX_CONCURRENT = 1
    """)
    storage = tmp_path / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    driver = _bnsweep_bg("run", str(space), "--storage", str(storage), "--no-tracking", env=env, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list(storage.glob("*/ledger/*/epoch-0001.json")):
        assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()[0][-3000:]
        time.sleep(0.2)
    driver.send_signal(signal.SIGTERM)  # as Ctrl-C: an interrupted sweep
    assert driver.wait(timeout=300) == 130, driver.communicate()[0][-3000:]
    sweep_dir = sweep_dir_of(storage)
    # Two resumes at once: one trains, the other stops in one line, and no epoch is recorded twice.
    first = _bnsweep_bg("resume", str(sweep_dir), env=env, cwd=tmp_path)
    while not (sweep_dir / LOCK_FILE).exists() or not (sweep_dir / LOCK_FILE).read_text():
        assert time.monotonic() < deadline + 120 and first.poll() is None, first.communicate()[0][-3000:]
        time.sleep(0.1)
    second = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stdout + second.stderr
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    trials = ledger.read_trials(str(sweep_dir))
    assert len(trials) == 2 and all([e["epoch"] for e in t.epochs] == [1, 2, 3] for t in trials), trials
    # Two syncs at once into a store that has no record: one parent, one child per trial.
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    syncs = [_bnsweep_bg("sync", str(sweep_dir), "--tracking-uri", uri, env=env, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in syncs]
    assert sorted(p.returncode for p in syncs) in ([0, 0], [0, 2]), outs
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("bnsweep-twice").experiment_id])
    assert sorted(r.data.tags.get("bnsweep.role") for r in runs) == ["sweep", "trial", "trial"]
