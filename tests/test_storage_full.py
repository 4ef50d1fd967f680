"""A results disk that fills up mid-sweep: the sweep stops in one line, loses no recorded
epoch, and `bnsweep resume` finishes it once there is space (a real tmpfs, real Ray)."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import bnsweep_env, ledger_trials, run_bnsweep, sweep_dir_of, write_space
from helpers import TINY, start_driver, wait_for

from bnsweep.storage import RESERVE_BYTES

DISK_MB = 96


@pytest.fixture
def small_disk(tmp_path):
    """A 96 MB tmpfs of its own, unmounted afterwards; skips where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): it needs root with "
                    "CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill_to(disk, free_bytes: int) -> None:
    """Grow a ballast file until the disk has about `free_bytes` free: another program filling it."""
    ballast = disk / "ballast"
    st = os.statvfs(disk)
    grow = st.f_bavail * st.f_frsize - free_bytes
    with open(ballast, "ab") as f:
        f.write(b"\0" * max(0, grow))


def _epochs(sweep_dir) -> dict[str, list[tuple[int, float]]]:
    return {t.name: [(r["epoch"], r["val_acc"]) for r in t.epochs] for t in ledger_trials(sweep_dir)}


@pytest.mark.slow
def test_a_disk_filling_up_stops_the_sweep_and_resume_finishes_it(ray_address, small_disk, tmp_path):
    space = write_space(tmp_path / "full.py", f"""
        SPACE = {{"lr": [0.01, 0.02, 0.03]}}
        FIXED = {{**{TINY}, "epochs": 4}}
        MAX_CONCURRENT = 1
    """)
    storage = small_disk / "results"
    env = bnsweep_env(RAY_ADDRESS=ray_address)
    driver = start_driver(space, storage, env, tmp_path, "--no-tracking")
    try:
        wait_for(lambda: storage.exists() and any(t.epochs for t in ledger_trials(sweep_dir_of(storage))),
                  300, "the first recorded epoch")
        _fill_to(small_disk, RESERVE_BYTES // 2)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out[-4000:]
    stopped = [line for line in out.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "MB free" in stopped[0] and "Traceback" not in out, out[-4000:]
    sweep_dir = sweep_dir_of(storage)
    resume = f"bnsweep resume {sweep_dir}"
    assert resume in out, out[-2000:]
    recorded = _epochs(sweep_dir)
    assert recorded and sum(len(v) for v in recorded.values()) < 3 * 4, recorded

    # Still full: resume refuses in one line, before Ray starts.
    r = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
    assert r.returncode == 2 and "cannot resume" in r.stderr and "free some space" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr

    (small_disk / "ballast").unlink()
    r = run_bnsweep("resume", str(sweep_dir), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = _epochs(sweep_dir)
    assert len(after) == 3 and all([e for e, _ in rows] == [1, 2, 3, 4] for rows in after.values()), after
    for name, rows in recorded.items():  # nothing recorded before the stop was lost or replaced
        assert after[name][:len(rows)] == rows
