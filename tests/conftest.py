"""Shared pytest fixtures: the CIFAR-10 files the data tests read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
               "data_batch_5", "test_batch", "batches.meta")

# The repository is cloned with the project's shared/ folder beside it (locally
# /work/main and /work/shared; in CI the same layout), so shared/ is ../shared
# from the repo root.
SHARED = Path(__file__).resolve().parents[2] / "shared"
PREPARE = SHARED / "datasets" / "prepare_cifar10.py"


def _has_cifar(root: Path) -> bool:
    return all((root / "cifar-10-batches-py" / name).is_file() for name in CIFAR_FILES)


def _test_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bnsweep-test"


def prepare_test_cifar(root: Path) -> Path:
    """Write the JPEG-derived copy under root (once; later calls find it there).

    The script writes into a private temporary folder that is then renamed into
    place, so parallel test sessions never see half-written files.
    """
    if _has_cifar(root):
        return root
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"tmp-{os.getpid()}"
    try:
        subprocess.run([sys.executable, str(PREPARE), str(tmp)], check=True,
                       stdout=subprocess.DEVNULL, timeout=600)
        try:
            os.rename(tmp / "cifar-10-batches-py", root / "cifar-10-batches-py")
        except OSError:
            if not _has_cifar(root):  # not a lost race with another session: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """A folder holding cifar-10-batches-py/: $BNSWEEP_DATA_DIR when it has the
    files (official or not), else the JPEG-derived copy from shared/datasets,
    prepared once into ~/.cache/bnsweep-test (about 186 MB)."""
    env = os.environ.get("BNSWEEP_DATA_DIR")
    if env and _has_cifar(Path(env).expanduser()):
        return Path(env).expanduser()
    if not PREPARE.is_file():
        pytest.skip(f"no CIFAR-10: $BNSWEEP_DATA_DIR has no cifar-10-batches-py/ and {PREPARE} is missing")
    try:
        import numpy  # noqa: F401  (prepare_cifar10.py needs numpy and Pillow)
        import PIL  # noqa: F401
    except ImportError as e:
        pytest.skip(f"cannot prepare CIFAR-10 from {PREPARE}: {e} (install the test extras)")
    return prepare_test_cifar(_test_cache_dir())
