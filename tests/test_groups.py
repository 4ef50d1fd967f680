"""The suite on both cores (pytest -n 2, README): the tests that read the session's shared
sweeps run on one worker, so the sweeps run once, and a module's own fixture (a sweep, a
cluster, a server) is built on one worker. Checked by running this suite's conftest under
pytest-xdist on a generated test file and reading which worker ran each test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

GENERATED = textwrap.dedent('''
    import os
    from pathlib import Path

    import pytest

    OUT = Path(os.environ["GROUPS_OUT"])


    @pytest.fixture(scope="session")
    def recorded_sweeps():  # stands in for conftest's (no Ray here): the rule keys on the name
        return None


    @pytest.fixture(scope="module")
    def built_once():
        return None


    def _ran(name):
        (OUT / name).write_text(os.environ["PYTEST_XDIST_WORKER"])


    # Interleaved, so that plain load balancing (chunks of the collection order) would split each group.
    for i in range(6):
        globals()[f"test_reads_a_shared_sweep_{i}"] = lambda recorded_sweeps, i=i: _ran(f"shared-{i}")
        globals()[f"test_free_{i}"] = lambda i=i: _ran(f"free-{i}")
        globals()[f"test_uses_the_module_fixture_{i}"] = lambda built_once, i=i: _ran(f"module-{i}")
        globals()[f"test_free_too_{i}"] = lambda i=i: _ran(f"free-too-{i}")
''')


def test_shared_sweeps_and_module_fixtures_each_stay_on_one_worker(tmp_path):
    (tmp_path / "test_generated.py").write_text(GENERATED)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "GROUPS_OUT": str(out), "PYTHONPATH": str(TESTS)}
    # This suite's conftest as a plugin, its pyproject settings (--dist loadgroup) as the suite has them.
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "conftest", "-p", "no:cacheprovider",
                        "-c", str(TESTS.parent / "pyproject.toml"), "--rootdir", str(tmp_path), "-q",
                        str(tmp_path / "test_generated.py")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ran = {p.name: p.read_text() for p in out.iterdir()}
    assert len(ran) == 24
    assert len({w for name, w in ran.items() if name.startswith("shared-")}) == 1, ran
    assert len({w for name, w in ran.items() if name.startswith("module-")}) == 1, ran
    assert len(set(ran.values())) == 2, ran  # the rest spreads: both workers ran tests
