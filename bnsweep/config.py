"""The reference experiment's settings and the validation of every override.

Every key here is the one name of its quantity: the CLI flag (`--batch-size`
for `batch_size`), the search-space key, the MLflow param and the analysis
column all use it. Sources: the study's Keras notebook (DESIGN.md §2).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from bnsweep.errors import UsageError

REFERENCE: dict[str, Any] = {
    # --- model ---
    "model": "inception",  # "inception" (the study's) or "simple" (dropout study)
    "bn": True,  # the scientific axis: Batch Normalization after every conv
    "width": 1.0,  # channel multiplier; 1.0 is the reference, < 1 for CPU-sized runs
    "dropout": 0.0,  # drop probability before the classifier; the reference has none
    "conv_bias": False,  # Keras notebook: Conv2D(use_bias=False) in both arms
    "bn_momentum": 0.99,  # Keras convention (weight of the old running stat); torch uses 1 - this
    "bn_eps": 1e-3,  # Keras BatchNormalization default epsilon
    # --- optimisation ---
    "lr": 0.01,  # initial SGD learning rate
    "momentum": 0.9,  # SGD momentum, no Nesterov, no weight decay
    "lr_drop_factor": 0.1,  # lr multiplied by this, in (0, 1] ... (the slides say "10% drop"; the code uses 0.1)
    "lr_drop_period": 10,  # ... every this many epochs: lr0 * f ** floor((epoch + 1) / period)
    "epochs": 30,
    "batch_size": 250,  # images per optimizer step
    "seed": 0,  # data order, augmentation draws, init; paired BN/no-BN trials share it
    # --- data ---
    "dataset": "cifar10",  # "cifar10" or "synthetic" (random CIFAR-shaped data, tests only)
    "data_dir": None,  # None: $BNSWEEP_DATA_DIR, else ~/.cache/bnsweep
    "download": True,  # try torchvision's download of the official archive when files are missing
    "n_train": None,  # training images, class-balanced subset; None = all 50,000
    "val_split": "test",  # "test": validate on the test set (reference); "holdout": a fixed part of train
    "n_val": None,  # validation images, class-balanced; None = all 10,000 test images (or 5,000 holdout)
    "augment": True,  # Keras ImageDataGenerator(horizontal_flip, shear_range, zoom_range)
    "shear_range": 0.2,  # degrees (Keras >= 2.2.0 semantics): shear angle drawn from U(-s, s)
    "zoom_range": 0.2,  # x and y zoom drawn independently from U(1 - z, 1 + z)
    "horizontal_flip": True,  # flip with probability 0.5
    # --- execution ---
    "device": "auto",  # "auto" (cuda if available), "cpu", "cuda", "cuda:N"
    "amp": True,  # bf16 autocast on CUDA; ignored on CPU (runs in fp32)
    "channels_last": True,  # memory format on CUDA; ignored on CPU
    "cuda_graphs": True,  # on CUDA, replay each training step as one CUDA graph (bnsweep/step.py)
    "fused_bn_relu": False,  # on CUDA, BN + ReLU as one Triton op pair (bnsweep/bn_relu.py); off until timed on a GPU
    "eval_batch_size": 1000,  # images per validation forward pass (no effect on results)
}

CHOICES = {
    "model": ("inception", "simple"),
    "dataset": ("cifar10", "synthetic"),
    "val_split": ("test", "holdout"),
}

# Keys whose values must be strictly positive / in [0, 1) / non-negative.
_POSITIVE = {"lr", "width", "epochs", "batch_size", "lr_drop_factor", "lr_drop_period",
             "bn_eps", "eval_batch_size", "n_train", "n_val"}
_UNIT_INTERVAL = {"dropout", "bn_momentum", "momentum"}
_NON_NEGATIVE = {"shear_range", "seed"}
SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed or unsigned 64-bit integer; one bound for both
_INTS = {"epochs", "batch_size", "lr_drop_period", "seed", "eval_batch_size", "n_train", "n_val"}
_OPTIONAL = {"data_dir", "n_train", "n_val"}

# Images per dataset: (training, test). "synthetic" is data.synthetic_cifar10, for tests.
DATASET_SIZES = {"cifar10": (50_000, 10_000), "synthetic": (500, 200)}
N_HOLDOUT_DEFAULT = 5_000


# Metric names of every epoch's result, defined once: train() reports them, tracking logs
# them to MLflow, analysis reads them back.
EPOCH_METRICS = (
    "epoch",  # completed epochs, from 1
    "train_loss",  # mean cross-entropy over the epoch's (augmented) training batches
    "train_acc",  # fraction correct on those batches, in training mode
    "val_loss",
    "val_acc",
    "lr",  # learning rate used during this epoch
    "epoch_time_s",  # wall time of the epoch: training pass + validation, seconds
    "step_time_ms",  # training-pass wall time per optimizer step, milliseconds
    "images_per_s",  # training images per second of the training pass
    "time_total_s",  # wall time summed over all epochs so far (resumes included), seconds
    "diverged",  # 1.0 once the training or validation loss became NaN or inf, else 0.0
    "best_val_acc",  # highest val_acc of the run so far
    "best_epoch",  # the epoch that reached it
)


class ConfigError(UsageError, ValueError):
    """A bad key or value; the message names it and is meant for a person."""


def value_kind(key: str) -> str:
    """What a key takes: "bool", "choice" (one of CHOICES), "str", "int" or "float"."""
    default = REFERENCE[key]
    if isinstance(default, bool):
        return "bool"
    if key in CHOICES:
        return "choice"
    if key in _INTS:
        return "int"
    return "float" if isinstance(default, float) else "str"


def _check_value(key: str, value: Any) -> Any:
    default = REFERENCE[key]
    if value is None:
        if key in _OPTIONAL:
            return None
        raise ConfigError(f"{key} must not be empty")
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise ConfigError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
        return value
    if key == "data_dir":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        return value
    if key == "device":
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value
    # numbers
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            # An integer's text is read as an int: through a float, integers above 2**53
            # would round, and two distinct seeds could become one.
            value = int(value) if key in _INTS and re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if key in _INTS:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    if key in _UNIT_INTERVAL and not 0 <= value < 1:
        raise ConfigError(f"{key} must be in [0, 1), got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"{key} must be >= 0, got {value!r}")
    if key == "seed" and value > SEED_MAX:
        raise ConfigError(f"seed must be <= {SEED_MAX} (2**63 - 1), got {value!r}")
    if key == "lr_drop_factor" and value > 1:
        raise ConfigError(f"lr_drop_factor must be in (0, 1]: the lr is multiplied by it at each drop, got {value!r}")
    if key == "zoom_range" and not 0 <= value < 1:
        raise ConfigError(f"zoom_range must be in [0, 1), got {value!r}")
    return value


def n_train_available(cfg: Mapping[str, Any]) -> int:
    """Training images the data can supply under this config (before n_train)."""
    n_train_full = DATASET_SIZES[cfg["dataset"]][0]
    if cfg["val_split"] == "holdout":
        return n_train_full - (cfg["n_val"] or N_HOLDOUT_DEFAULT)
    return n_train_full


def make_config(overrides: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None,
                consistent: bool = True) -> dict[str, Any]:
    """Reference settings (or `base`) with `overrides` applied and every value checked.

    Raises ConfigError naming the first unknown key or bad value. `consistent=False`
    skips the checks between keys (batch_size vs n_train), for a sweep's shared
    base whose varied keys are not set yet.
    """
    cfg = dict(REFERENCE if base is None else base)
    for key, value in (overrides or {}).items():
        if key not in REFERENCE:
            raise ConfigError(f"unknown config key {key!r}" + _did_you_mean(key))
        cfg[key] = value
    for key in REFERENCE:
        cfg[key] = _check_value(key, cfg[key])
    if consistent:
        _check_consistency(cfg)
    return cfg


# The keys the rules between keys read (_check_consistency): a study that varies any of
# them is checked point by point, not only key by key.
CONSISTENCY_KEYS = frozenset({"dataset", "val_split", "n_val", "n_train", "batch_size", "model", "bn"})


def _check_consistency(cfg: dict[str, Any]) -> None:
    n_available = n_train_available(cfg)
    if cfg["val_split"] == "holdout" and n_available < 1:
        n_val = cfg["n_val"] or f"{N_HOLDOUT_DEFAULT} (the default)"
        raise ConfigError(f"n_val={n_val} leaves no training images of {DATASET_SIZES[cfg['dataset']][0]} "
                          f"in {cfg['dataset']}")
    n_test = DATASET_SIZES[cfg["dataset"]][1]
    if cfg["val_split"] == "test" and cfg["n_val"] and cfg["n_val"] > n_test:
        raise ConfigError(f"n_val must be <= {n_test} (the {cfg['dataset']} test set), got {cfg['n_val']}")
    if cfg["n_train"] and cfg["n_train"] > n_available:
        raise ConfigError(f"n_train must be <= {n_available} (images available), got {cfg['n_train']}")
    n_train = cfg["n_train"] or n_available
    if cfg["batch_size"] > n_train:
        raise ConfigError(f"batch_size={cfg['batch_size']} is larger than the training set ({n_train} images)")
    last_batch = n_train % cfg["batch_size"] or cfg["batch_size"]
    if cfg["model"] == "simple" and cfg["bn"] and last_batch == 1:
        # Its dense layer is batch-normalised over the images of a batch, and a batch
        # of one has no spread to normalise by (torch refuses it in training).
        raise ConfigError(f"model=simple with bn needs 2 or more images in every batch, but batch_size="
                          f"{cfg['batch_size']} with {n_train} training images leaves a batch of one; "
                          f"change batch_size or n_train")


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), REFERENCE, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def lr_at(cfg: Mapping[str, Any], epoch: int) -> float:
    """Learning rate for `epoch` (counted from 0), the notebook's step decay.

    lr0 * factor ** floor((epoch + 1) / period): with period 10 the first drop
    lands on the 10th epoch (epoch index 9), exactly as in the Keras callback.
    """
    lr = cfg["lr"] * cfg["lr_drop_factor"] ** math.floor((epoch + 1) / cfg["lr_drop_period"])
    return float(f"{lr:.12g}")  # 0.001, not 0.0010000000000000002, in logs and MLflow
