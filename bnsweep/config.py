"""The reference experiment's settings, one typed table, and the validation of every override.

Every key here is the one name of its quantity: the CLI flag (`--batch-size`
for `batch_size`), the search-space key, the MLflow param and the analysis
column all use it. Sources: the study's Keras notebook (docs/design.md §2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bnsweep.errors import UsageError
from bnsweep.formats import number

KINDS = ("model", "optimisation", "data", "execution")


@dataclass(frozen=True)
class Key:
    """One config key: its reference value, what it is, and which values it takes.

    kind: "model", "optimisation" and "data" keys define the experiment; "execution"
    keys say where and how it runs (a device, a kernel, where the files are) and leave
    its results alone, so they may differ between the arms of a pair, change on
    `train --resume`, and are not settings analysis groups trials by.
    cost: whether the time of a training step per image depends on it (plan's probe).
    Bounds: `low`/`high` inclusive unless `*_open`; `type` where the default is None.
    """

    default: Any
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False
    type: type | None = None
    cost: bool = False

    @property
    def value_type(self) -> type:
        return self.type or type(self.default)


# norm's values (the `norm` key). bn and none are what `bn` true / false build; the arm of a
# trial is named by its normalisation (trials.arm_name): bn, no_bn (none), bn_scale, gn, ln.
NORMS = ("bn", "bn_scale", "gn", "ln", "none")

# amp's values: "bf16" and "none" are also what the exec.autocast tag says ran.
AMP_CHOICES = ("auto", "bf16", "none")
# amp was a bool until 2026-12: True (the default) autocast where bnsweep chose to, which
# is "auto" now; old checkpoints and sweep files carry it, and still load.
_AMP_BOOLS = {True: "auto", False: "none"}

SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed or unsigned 64-bit integer; one bound for both

# The reference experiment, from the study's Keras notebook (docs/design.md §2): every default
# below is its value. Help texts give units and sources; `bnsweep train --help` shows them.
TABLE: dict[str, Key] = {
    # --- model ---
    "model": Key("inception", "model", "the network: the study's Inception, or the simpler CNN of the dropout study",
                 choices=("inception", "simple"), cost=True),
    "bn": Key(True, "model", "the scientific axis: BatchNormalization after every conv (Keras, scale=False); "
              "where norm is set, whether norm is this BN", cost=True),
    "norm": Key(None, "model", "the normalisation of every hidden layer: bn (the study's, Keras scale=False), "
                "bn_scale (BN with a learned scale, torch's BatchNorm2d; same momentum and eps), gn (Group "
                "Normalization, Wu & He 2018), ln (Layer Normalization, Ba et al. 2016, as GroupNorm with one group, "
                "Wu & He 2018 sec. 3.1), none; unset: bn's choice (bn or none)", choices=NORMS, optional=True,
                type=str, cost=True),
    "groups": Key(32, "model", "gn's groups per layer: this many (Wu & He 2018's default, their Table 3), fewer "
                  "where a layer is narrow: the largest divisor of its channels <= min(groups, channels / 2), so a "
                  "group keeps 2 or more channels (1 is instance norm, their Table 3's worst, 28.4 %)", low=1),
    "width": Key(1.0, "model", "channel multiplier; 1.0 is the reference, below 1 for CPU-sized runs",
                 low=0, low_open=True, cost=True),
    "dropout": Key(0.0, "model", "drop probability before the classifier's dense layers; the reference has none",
                   low=0, high=1, high_open=True, cost=True),
    "conv_bias": Key(False, "model", "a bias in every conv; the notebook's Conv2D(use_bias=False) has none",
                     cost=True),
    "bn_momentum": Key(0.99, "model", "weight of the old running statistic, Keras convention (torch's is 1 - "
                       "this); Keras default", low=0, high=1, high_open=True),
    "bn_eps": Key(1e-3, "model", "added to the variance; Keras BatchNormalization's default",
                  low=0, low_open=True),
    # --- optimisation ---
    "lr": Key(0.01, "optimisation", "initial SGD learning rate (the notebook's)", low=0, low_open=True),
    "momentum": Key(0.9, "optimisation", "SGD momentum; no Nesterov, no weight decay (the notebook's)",
                    low=0, high=1, high_open=True),
    "lr_drop_factor": Key(0.1, "optimisation", "the lr is multiplied by this at each drop (the notebook: 0.1; "
                          "its slides say \"10% drop\")", low=0, high=1, low_open=True),
    "lr_drop_period": Key(10, "optimisation", "epochs between drops: lr0 * factor ** floor((epoch + 1) / period)",
                          low=1),
    "epochs": Key(30, "optimisation", "epochs of training, each followed by validation", low=1),
    "batch_size": Key(250, "optimisation", "images per optimizer step", low=1, cost=True),
    "seed": Key(0, "optimisation", "initial weights, data order, augmentation and dropout draws; paired BN / "
                "no-BN trials share it", low=0, high=SEED_MAX),
    # --- data ---
    "dataset": Key("cifar10", "data", "cifar10, or synthetic (random CIFAR-shaped images, for tests)",
                   choices=("cifar10", "synthetic")),
    "n_train": Key(None, "data", "training images, a class-balanced subset; none: all 50,000",
                   low=1, optional=True, type=int),
    "val_split": Key("test", "data", "test: validate on the test set (the reference); holdout: on a fixed part "
                     "of the training set", choices=("test", "holdout")),
    "n_val": Key(None, "data", "validation images, class balanced; none: all 10,000 test images (or 5,000 "
                 "held out)", low=1, optional=True, type=int),
    "augment": Key(True, "data", "Keras ImageDataGenerator(horizontal_flip, shear_range, zoom_range), new draws "
                   "per image every epoch", cost=True),
    "shear_range": Key(0.2, "data", "degrees (Keras >= 2.2 semantics): shear angle drawn from U(-s, s)", low=0),
    "zoom_range": Key(0.2, "data", "x and y zoom drawn independently from U(1 - z, 1 + z)",
                      low=0, high=1, high_open=True),
    "horizontal_flip": Key(True, "data", "flip with probability 0.5"),
    # --- execution: where and how it runs, not what ---
    "data_dir": Key(None, "execution", "folder holding cifar-10-batches-py/; none: $BNSWEEP_DATA_DIR, else "
                    "~/.cache/bnsweep", optional=True, type=str),
    "download": Key(True, "execution", "download the official archive (torchvision) when the files are missing"),
    "device": Key("auto", "execution", "auto (cuda if available), cpu, cuda or cuda:N", cost=True),
    "amp": Key("auto", "execution", "bf16 autocast in training and validation: auto (on CUDA, and on a CPU that "
               "computes bf16 natively: AVX512_BF16 or AMX; elsewhere fp32, as emulated bf16 is slower), bf16 (on "
               "every device) or none (fp32); true/false, the values before 2026-12, read as auto/none",
               choices=AMP_CHOICES, cost=True),
    "channels_last": Key(True, "execution", "channels-last memory format for the model and its inputs, on every "
                         "device (faster on CUDA and CPUs alike: docs/benchmarks.md)", cost=True),
    "cuda_graphs": Key(True, "execution", "on CUDA, replay each training step as one CUDA graph (bnsweep/step.py)",
                       cost=True),
    "fused_bn_relu": Key(False, "execution", "on CUDA, BN + ReLU as Triton kernels (bnsweep/bn_relu.py); off until "
                         "timed on a GPU", cost=True),
    "eval_batch_size": Key(1000, "execution", "images per validation forward pass (no effect on results)", low=1),
}
assert {k.kind for k in TABLE.values()} <= set(KINDS)

REFERENCE: dict[str, Any] = {key: spec.default for key, spec in TABLE.items()}
CHOICES = {key: spec.choices for key, spec in TABLE.items() if spec.choices}
# The keys that leave an experiment's results alone (see Key): one list for every rule
# that needs it (the pair of a trial, what `train --resume` may change, analysis settings).
EXECUTION_KEYS = tuple(k for k, spec in TABLE.items() if spec.kind == "execution")
# What the time of a training step per image depends on (plan's probe).
COST_KEYS = tuple(k for k, spec in TABLE.items() if spec.cost)

# Images per dataset: (training, test). "synthetic" is data.synthetic_cifar10, for tests.
DATASET_SIZES = {"cifar10": (50_000, 10_000), "synthetic": (500, 200)}
N_HOLDOUT_DEFAULT = 5_000


# What a run actually executed, as train() reports it at its start (MLflow tags, each
# trial): the request is the config (amp, channels_last, ...), which "auto" and the device
# resolve (train.choose_execution; a CPU has no CUDA graphs or Triton kernels); these say
# what happened. Comparisons of time (claim 2) pair trials only where they agree.
EXECUTION_FACTS = (
    "exec.device",  # the torch device the run trained on: cpu, cuda:0, ...
    "exec.autocast",  # bf16 under autocast, or none (fp32)
    "exec.memory_format",  # channels_last or contiguous
    "exec.cuda_graphs",  # true when each training step replayed a CUDA graph
    "exec.pool_kernel",  # triton (bnsweep/pool.py) or pytorch (F.max_pool2d)
    "exec.bn_kernel",  # triton (bnsweep/bn_relu.py), pytorch, or none (the no-BN arm)
    "exec.triton",  # Triton's version where a Triton kernel ran, else none
)


# Metric names of every epoch's result, defined once: train() reports them, tracking logs
# them to MLflow, analysis reads them back.
EPOCH_METRICS = (
    "epoch",  # the epoch's number, from 1 (= completed epochs); train()'s loop index is 0-based
    "train_loss",  # mean cross-entropy over the epoch's (augmented) training batches
    "train_acc",  # fraction correct on those batches, in training mode
    "val_loss",
    "val_acc",
    "scheduled_lr",  # the learning rate the step decay set for this epoch (the param `lr` is the initial one)
    "epoch_time_s",  # wall time of the epoch: training pass + validation, seconds
    "step_time_ms",  # training-pass wall time per optimizer step, milliseconds
    "images_per_s",  # training images per second of the training pass
    "time_total_s",  # wall time summed over all epochs so far (resumes included), seconds
    "diverged",  # 1.0 once the training or validation loss became NaN or inf, else 0.0
    "best_val_acc",  # highest val_acc of the run so far
    "best_epoch",  # the epoch that reached it
)
# Metric names of a trial's run as a whole (one value each, step 0), logged by tracking from the
# epochs above or the trial's end; the runs' pages show them, and analysis reads them back.
RUN_METRICS = (
    "epochs_completed",  # epochs the trial finished (its ledger end's last epoch)
    # The epoch whose loss became NaN or inf, of a trial that diverged. MLflow's metric list hides
    # non-finite values, so a diverged run's page needs a finite number saying when.
    "diverged_epoch",
)
# Metric names of a sweep's parent run: its summary (tracking.summarize), which MLflow draws as
# one chart per name, titled by the name. The experiment's chart view cuts a title to about 10
# characters (MLflow 3.17.2 at 1600 px beside its Assistant panel: "best_val_a…"; the run page's
# own metrics tab shows about 20), so each is at most 10, the part that tells them apart first,
# and none is a trial's metric name (the experiment's charts would mix the two). MLflow allows
# letters, digits, _-./: and spaces in a name, so an arm's "+" is written "_".
SWEEP_COUNT_METRICS = {"done": "n done", "diverged": "n diverged", "failed": "n failed"}  # trials that ended so


def sweep_best_metric(arm: str) -> str:
    """The parent run's metric of an arm's best val_acc over its trials: "bn best", "no_bn best"."""
    return f"{arm.replace('+', '_')} best"


class ConfigError(UsageError, ValueError):
    """A bad key or value; the message names it and is meant for a person."""


def value_kind(key: str) -> str:
    """What a key takes: "bool", "choice" (one of its choices), "str", "int" or "float"."""
    spec = TABLE[key]
    if spec.choices:
        return "choice"
    return {bool: "bool", int: "int", float: "float"}.get(spec.value_type, "str")


def _bounds_text(spec: Key) -> str:
    def show(x: float) -> str:
        return str(int(x)) if spec.value_type is int else number(x)

    if spec.low is not None and spec.high is not None:
        return f"in {'(' if spec.low_open else '['}{show(spec.low)}, {show(spec.high)}{')' if spec.high_open else ']'}"
    if spec.high is not None:
        return f"{'<' if spec.high_open else '<='} {show(spec.high)}"
    # "> 0" for a whole number >= 1: the message people expect for a count.
    if spec.value_type is int and spec.low == 1:
        return "> 0"
    return f"{'>' if spec.low_open else '>='} {show(spec.low)}"


def _check_value(key: str, value: Any) -> Any:
    spec = TABLE[key]
    kind = value_kind(key)
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(f"{key} must not be empty")
    if kind == "bool":
        if isinstance(value, str) and _bool_text(value) is not None:
            return _bool_text(value)
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        if key == "amp" and isinstance(value, (bool, str)) and _bool_text(value) in _AMP_BOOLS:
            value = _AMP_BOOLS[_bool_text(value)]
        if value not in spec.choices:
            raise ConfigError(f"{key} must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    if key == "device":
        if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        return value
    # numbers
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            # An integer's text is read as an int: through a float, integers above 2**53
            # would round, and two distinct seeds could become one.
            value = int(value) if kind == "int" and re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    too_high = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
    if too_low or too_high:
        why = {"seed": " (2**63 - 1)", "lr_drop_factor": ": the lr is multiplied by it at each drop"}.get(key, "")
        if key == "seed" and too_high:
            raise ConfigError(f"seed must be <= {SEED_MAX}{why}, got {value!r}")
        raise ConfigError(f"{key} must be {_bounds_text(spec)}{why if key != 'seed' else ''}, got {value!r}")
    return value


def _bool_text(value: bool | str) -> bool | None:
    """True or False for a bool or its text (true/false, 1/0, yes/no), else None."""
    if isinstance(value, bool):
        return value
    text = value.lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


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
    if cfg["norm"] is not None:
        # norm, where set, decides; bn then says whether it is the study's BN, so that every
        # reader of `bn` (params, analysis, the BN kernels) sees the truth (docs/design.md §2).
        cfg["bn"] = cfg["norm"] == "bn"
    if consistent:
        _check_consistency(cfg)
    return cfg


# The keys the rules between keys read (_check_consistency): a study that varies any of
# them is checked point by point, not only key by key.
CONSISTENCY_KEYS = frozenset({"dataset", "val_split", "n_val", "n_train", "batch_size", "model", "bn", "norm"})


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
    if cfg["model"] == "simple" and norm_of(cfg) in ("bn", "bn_scale") and last_batch == 1:
        # Its dense layer is batch-normalised over the images of a batch, and a batch
        # of one has no spread to normalise by (torch refuses it in training).
        raise ConfigError(f"model=simple with bn needs 2 or more images in every batch, but batch_size="
                          f"{cfg['batch_size']} with {n_train} training images leaves a batch of one; "
                          f"change batch_size or n_train")


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.replace("-", "_"), REFERENCE, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def norm_of(cfg: Mapping[str, Any]) -> str:
    """The normalisation of the hidden layers (one of NORMS): `norm` where set, else `bn`'s
    (bn or none). A record from before `norm` existed has none, and reads by its `bn`."""
    norm = cfg.get("norm")
    return norm if norm else ("bn" if cfg["bn"] else "none")


def lr_at(cfg: Mapping[str, Any], epoch_index: int) -> float:
    """Learning rate for the epoch at `epoch_index` (0-based; the epoch numbered
    epoch_index + 1 in results), the notebook's step decay.

    lr0 * factor ** floor((epoch_index + 1) / period): with period 10 the first drop
    lands on the 10th epoch (epoch index 9), exactly as in the Keras callback.
    """
    lr = cfg["lr"] * cfg["lr_drop_factor"] ** math.floor((epoch_index + 1) / cfg["lr_drop_period"])
    return float(f"{lr:.12g}")  # 0.001, not 0.0010000000000000002, in logs and MLflow
