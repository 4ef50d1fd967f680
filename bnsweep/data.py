"""CIFAR-10: finding and checking the files, subsets and batches, on whatever device
the tensors live on (the study's augmentation is bnsweep/augment.py).

Images stay uint8 NCHW until a batch is drawn; `to_unit_float` gives the
reference's inputs (pixels / 255, no mean subtraction, docs/design.md §2).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import socket
import threading
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnsweep.config import DATASET_SIZES, N_HOLDOUT_DEFAULT, ConfigError
from bnsweep.errors import BnsweepError

# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CIFAR_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)  # also the order the fingerprint hashes them in

# md5 of each file of the official release, as torchvision 0.29's
# torchvision/datasets/cifar.py (class CIFAR10) lists them. Module-level so a
# test can substitute its own table.
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

# The official archive (same values as torchvision's CIFAR10.url / tgz_md5).
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# Seconds to wait for a TCP connection to the download host before deciding
# there is no network: offline machines must fail fast, not hang.
DOWNLOAD_PROBE_TIMEOUT_S = 3.0
# Seconds a stalled read of the archive may block once the download has begun.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0

IMAGES_PER_FILE = 10_000
IMAGE_SHAPE = (3, 32, 32)  # channels (R, G, B planes), rows, columns
N_CLASSES = 10
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(BnsweepError):
    """The data cannot be found or read; the message says which file and what to do."""


class UnverifiedDataWarning(UserWarning):
    """The files are readable CIFAR-10 but not byte-identical with the official release."""


@dataclass(frozen=True)
class Cifar10:
    """The whole dataset as CPU tensors. Shared through the in-process cache:
    treat the tensors as read-only."""

    train_x: torch.Tensor  # uint8 [50000, 3, 32, 32]
    train_y: torch.Tensor  # int64 [50000], class index 0..9
    test_x: torch.Tensor  # uint8 [10000, 3, 32, 32]
    test_y: torch.Tensor  # int64 [10000]
    # dataset_verified (bool), dataset_fingerprint (str), dataset_source (str):
    # recorded with every result so an unverified copy is never mistaken for the official data.
    identity: dict[str, Any]
    classes: tuple[str, ...] = CLASSES


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) cifar-10-batches-py/: the flag's value,
    else $BNSWEEP_DATA_DIR, else $XDG_CACHE_HOME/bnsweep (~/.cache/bnsweep)."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("BNSWEEP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "bnsweep"


def how_to_get_data(root: Path) -> str:
    return (
        f"To get CIFAR-10 into {root}: let bnsweep download the official archive (needs internet; "
        f"download=True, the default), or place the contents of the official {ARCHIVE_NAME} "
        f"({DOWNLOAD_URL}) there, so that {root / BASE_FOLDER / 'data_batch_1'} exists. Or choose "
        f"a folder that holds {BASE_FOLDER}/ with --data-dir or $BNSWEEP_DATA_DIR."
    )


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = True) -> Cifar10:
    """CIFAR-10 from `data_dir` (see resolve_data_dir), downloading the official
    archive when files are missing and `download` is set.

    Raises DataError when files are missing and cannot be downloaded, or are
    truncated or malformed. Readable files whose md5 differs from the official
    release load with one UnverifiedDataWarning and identity["dataset_verified"] False.
    """
    root = resolve_data_dir(data_dir).resolve()
    try:
        missing = [name for name in CIFAR_FILES if not (root / BASE_FOLDER / name).is_file()]
    except OSError as e:  # a name too long, a folder we may not read: the path is the mistake
        raise DataError(f"cannot read the data folder {root / BASE_FOLDER}: {e.strerror}. "
                        + how_to_get_data(root)) from None
    if missing:
        if not download:
            raise DataError(f"CIFAR-10 files missing in {root / BASE_FOLDER}: {', '.join(missing)}. "
                            + how_to_get_data(root))
        _download_official(root)
    return _read_dir(root)


def clear_cache() -> None:
    """Forget datasets read earlier in this process (they are cached per folder)."""
    _read_dir.cache_clear()


def _download_official(root: Path) -> None:
    host = urllib.parse.urlparse(DOWNLOAD_URL).hostname
    if not _can_connect(host, 443, DOWNLOAD_PROBE_TIMEOUT_S):
        raise DataError(f"CIFAR-10 is not in {root / BASE_FOLDER} and {host} cannot be reached "
                        f"(no network?), so it cannot be downloaded. " + how_to_get_data(root))
    from torchvision.datasets.utils import download_and_extract_archive

    # urllib (used by torchvision) waits forever on a stalled socket unless a
    # default timeout is set; restore the caller's setting afterwards.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        download_and_extract_archive(DOWNLOAD_URL, str(root), filename=ARCHIVE_NAME, md5=ARCHIVE_MD5)
    except Exception as e:  # network, disk, bad archive: all end the same way for the user
        raise DataError(f"downloading CIFAR-10 from {DOWNLOAD_URL} into {root} failed: {e}. "
                        + how_to_get_data(root)) from e
    finally:
        socket.setdefaulttimeout(previous)
    still_missing = [n for n in CIFAR_FILES if not (root / BASE_FOLDER / n).is_file()]
    if still_missing:
        raise DataError(f"the downloaded archive did not provide {', '.join(still_missing)} in "
                        f"{root / BASE_FOLDER}. " + how_to_get_data(root))


def _can_connect(host: str | None, port: int, timeout_s: float) -> bool:
    # The probe runs in a daemon thread because name resolution has no timeout
    # of its own; joining with one bounds the whole check.
    reached = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    return bool(reached)


_WARNED_FINGERPRINTS: set[str] = set()


@functools.lru_cache(maxsize=2)
def _read_dir(root: Path) -> Cifar10:
    # Cached per folder so the trials of one process (one Ray worker) read the
    # 180 MB once; files changed on disk afterwards are not noticed.
    folder = root / BASE_FOLDER
    digest = hashlib.sha256()
    parsed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    classes = CLASSES
    unverified = []
    for name in CIFAR_FILES:  # each file checked as soon as it is read: a bad one fails fast
        path = folder / name
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}. " + how_to_get_data(root)) from e
        digest.update(raw)
        if hashlib.md5(raw).hexdigest() != OFFICIAL_MD5[name]:
            unverified.append(name)
        record = _unpickle(path, raw, root)
        if name == META_FILE:
            classes = _check_meta(path, record, root)
        else:
            parsed[name] = _check_batch(path, record, root)

    fingerprint = digest.hexdigest()[:16]
    verified = not unverified
    if not verified and fingerprint not in _WARNED_FINGERPRINTS:
        _WARNED_FINGERPRINTS.add(fingerprint)
        warnings.warn(
            f"CIFAR-10 in {folder} is an unverified copy: the md5 of {', '.join(unverified)} differs "
            f"from the official release (for example the JPEG-derived copy). It is used, and results "
            f"are recorded with dataset_verified=False, dataset_fingerprint={fingerprint}.",
            UnverifiedDataWarning, stacklevel=3)
    return Cifar10(
        train_x=torch.cat([parsed[n][0] for n in TRAIN_FILES]),
        train_y=torch.cat([parsed[n][1] for n in TRAIN_FILES]),
        test_x=parsed[TEST_FILE][0],
        test_y=parsed[TEST_FILE][1],
        identity={
            "dataset_verified": verified,
            # sha256 over the 7 files' bytes in CIFAR_FILES order; 16 hex digits
            # tell copies apart without the length of a full digest.
            "dataset_fingerprint": fingerprint,
            "dataset_source": "official" if verified else "unverified copy",
        },
        classes=classes,
    )


def _unpickle(path: Path, raw: bytes, root: Path) -> dict:
    # The official files are Python 2 pickles; latin1 maps their byte strings
    # one-to-one onto str (the numpy data decode correctly this way).
    try:
        record = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # truncated or corrupt pickles raise many types
        raise DataError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}); "
                        f"delete it and get the data again. " + how_to_get_data(root)) from e
    if not isinstance(record, dict):
        raise DataError(f"{path} does not hold a CIFAR-10 record (got {type(record).__name__}). "
                        + how_to_get_data(root))
    return record


def _field(record: dict, key: str) -> Any:
    # Keys are str when read with encoding="latin1"; accept bytes keys too.
    return record[key] if key in record else record.get(key.encode())


def _check_batch(path: Path, record: dict, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    def bad(what: str) -> DataError:
        return DataError(f"{path} is not a CIFAR-10 batch: {what}. " + how_to_get_data(root))

    data, labels = _field(record, "data"), _field(record, "labels")
    n_values = math.prod(IMAGE_SHAPE)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise bad(f"'data' should be a uint8 array, got {getattr(data, 'dtype', type(data).__name__)}")
    if data.shape != (IMAGES_PER_FILE, n_values):
        raise bad(f"'data' has shape {data.shape}, expected {(IMAGES_PER_FILE, n_values)}")
    if labels is None:
        raise bad("no 'labels'")
    labels = np.asarray(labels)
    if labels.shape != (IMAGES_PER_FILE,) or not np.issubdtype(labels.dtype, np.integer):
        raise bad(f"'labels' should be {IMAGES_PER_FILE} integers, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise bad(f"labels range {labels.min()}..{labels.max()}, expected 0..{N_CLASSES - 1}")
    # Each row is the R plane, then G, then B, each 32x32 row-major: exactly NCHW.
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *IMAGE_SHAPE))
    return x, torch.from_numpy(labels.astype(np.int64))


def _check_meta(path: Path, record: dict, root: Path) -> tuple[str, ...]:
    names = _field(record, "label_names")
    if not isinstance(names, list) or len(names) != N_CLASSES:
        raise DataError(f"{path} is not CIFAR-10's batches.meta: 'label_names' should list "
                        f"{N_CLASSES} classes. " + how_to_get_data(root))
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def synthetic_cifar10(n_train: int = DATASET_SIZES["synthetic"][0], n_test: int = DATASET_SIZES["synthetic"][1],
                      seed: int = 0) -> Cifar10:
    """Random CIFAR-shaped data for tests: each class has its own mean colour
    with per-pixel noise, so a model can learn it (and a test can see learning)."""
    g = torch.Generator().manual_seed(seed)
    # Class colours in [48, 208] per channel; noise sd 50 (pixel units, 0..255)
    # keeps single pixels ambiguous while the image average is not.
    colours = torch.rand(N_CLASSES, 3, generator=g) * 160 + 48

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % N_CLASSES)[torch.randperm(n, generator=g)]
        noise = torch.randn(n, *IMAGE_SHAPE, generator=g) * 50
        x = (colours[y][:, :, None, None] + noise).round().clamp(0, 255).to(torch.uint8)
        return x, y.to(torch.int64)

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    identity = {"dataset_verified": False, "dataset_fingerprint": "synthetic", "dataset_source": "synthetic"}
    return Cifar10(train_x, train_y, test_x, test_y, identity)


def load_dataset(cfg: Mapping[str, Any]) -> Cifar10:
    """The dataset a config names (cfg keys dataset, data_dir, download)."""
    if cfg["dataset"] == "synthetic":
        return synthetic_cifar10(seed=0)  # fixed: the data must not change with the trial's seed
    return load_cifar10(cfg["data_dir"], download=cfg["download"])


# --------------------------------------------------------------------------
# Subsets
# --------------------------------------------------------------------------

# Subsets are drawn with fixed seeds, never with cfg["seed"]: every trial, of
# every seed and both arms, trains and validates on the same images, so seeds
# vary only initialisation, data order and augmentation draws.
HOLDOUT_SEED = 1  # which training images form the holdout validation set
SUBSET_SEED = 0  # which images form an n_train / n_val subset


def balanced_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset of n items: n // k per class, the
    remainder one each to the lowest-numbered classes.

    Deterministic per seed; each class's picks are a prefix of one fixed
    permutation, so a smaller subset is contained in a larger one.
    """
    labels = torch.as_tensor(labels).cpu()
    classes = torch.unique(labels)  # sorted
    k = len(classes)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for i, cls in enumerate(classes.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        want = n // k + (1 if i < n % k else 0)
        if want > len(members):
            raise ValueError(f"a balanced subset of {n} needs {want} items of class {cls}, "
                             f"which has only {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=g)[:want]])
    return torch.sort(torch.cat(picked)).values


@dataclass(frozen=True)
class Splits:
    train_x: torch.Tensor  # uint8 NCHW
    train_y: torch.Tensor  # int64
    val_x: torch.Tensor
    val_y: torch.Tensor


def select(cfg: Mapping[str, Any], data: Cifar10) -> Splits:
    """Training and validation images under cfg keys val_split, n_val, n_train.

    "test": validate on the test set (the reference), n_val of it if set.
    "holdout": validate on n_val (default 5,000) balanced training images, and
    train only on the rest. n_train takes a balanced subset of what remains.
    """
    train_x, train_y = data.train_x, data.train_y
    if cfg["val_split"] == "holdout":
        n_val = cfg["n_val"] or N_HOLDOUT_DEFAULT
        held = _subset("n_val", train_y, n_val, HOLDOUT_SEED)
        keep = torch.ones(len(train_y), dtype=torch.bool)
        keep[held] = False
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    else:
        val_x, val_y = data.test_x, data.test_y
        if cfg["n_val"]:
            idx = _subset("n_val", val_y, cfg["n_val"], SUBSET_SEED)
            val_x, val_y = val_x[idx], val_y[idx]
    if cfg["n_train"]:
        idx = _subset("n_train", train_y, cfg["n_train"], SUBSET_SEED)
        train_x, train_y = train_x[idx], train_y[idx]
    return Splits(train_x, train_y, val_x, val_y)


def _subset(key: str, labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    if n > len(labels):
        raise ConfigError(f"{key}={n} is more than the {len(labels)} images available")
    try:
        return balanced_indices(labels, n, seed)
    except ValueError as e:
        raise ConfigError(f"{key}={n}: {e}") from None


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------

def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator on `device`. CPU and CUDA generators give different streams
    for the same seed: a run is reproducible on the same kind of device."""
    return torch.Generator(device=device).manual_seed(seed)


def batches(n: int, batch_size: int, generator: torch.Generator,
            device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """One epoch's index batches: a fresh permutation of range(n) on `device`,
    cut into batch_size slices. The last, partial batch is kept, as in Keras's fit."""
    return torch.randperm(n, generator=generator, device=device).split(batch_size)


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [0, 1]: the reference's only input scaling."""
    return x.to(torch.float32).div_(255.0)
