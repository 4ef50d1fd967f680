"""What identifies a trial: its config as Tune holds it, its arm, its pair, its name.

Shared by the trainable, the MLflow callback, `sync` and the summary, so that
all of them name a trial the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bnsweep.config import EXECUTION_FACTS, EXECUTION_KEYS, REFERENCE, norm_of
from bnsweep.formats import number

POINT_KEY = "point"  # Tune config key of an explicit grid point (a search space given as a list)
# What train() says at its start that the trial's MLflow run carries as tags (dataset
# identity, device, what executed): the trainable puts them in every epoch's result. Here,
# not in tracking, so that a trial's process never imports mlflow.
RUN_INFO_KEYS = ("dataset_verified", "dataset_source", "dataset_fingerprint", "device_name", *EXECUTION_FACTS)


def trial_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys of a Tune trial's config, an explicit grid point unpacked."""
    flat = {k: v for k, v in config.items() if k in REFERENCE}
    flat.update(config.get(POINT_KEY) or {})
    return flat


# A trial's arm by its normalisation (config.norm_of): the study's two keep their names
# (bn, no_bn), whichever key chose them, so `norm: none` and `bn: false` are one arm.
NORM_ARMS = {"bn": "bn", "none": "no_bn"}
# The keys that choose the arm (config.norm_of), left out of a pair's identity.
ARM_KEYS = ("bn", "norm")
# Keys added after trials were recorded: in a pair's identity only when off their default,
# so that the pair ids of recorded trials stay what they were.
LATER_KEYS = ("groups",)


def norm_arm(cfg: Mapping[str, Any]) -> str:
    """The arm of a trial's normalisation alone: bn, no_bn, bn_scale, gn or ln."""
    norm = norm_of(cfg)
    return NORM_ARMS.get(norm, norm)


def arm_name(cfg: Mapping[str, Any]) -> str:
    """A grid trial's arm: its normalisation (norm_arm), and "+dropout" where the grid varies
    dropout as an arm of its own (the dropout study's no_bn+dropout)."""
    arm = norm_arm(cfg)
    return f"{arm}+dropout" if cfg.get("dropout") else arm


GRID_TUNER = "grid"  # the one Tuner of a grid study (sweep.tuner_names)
# An Optuna arm's confirmation Tuner is "confirm_" + the arm's search (sweep.confirm_names):
# its best configuration on fresh seeds. Its trials are of that arm, tagged tuner=confirm_<arm>.
CONFIRM_PREFIX = "confirm_"


def arm_of(cfg: Mapping[str, Any], tuner: str) -> str:
    """The arm a trial belongs to: a grid's (arm_name), or the Optuna search it ran in or
    confirms ("bn", "no_bn": the study's ARMS), where a tuned dropout is a setting, not an arm."""
    return arm_name(cfg) if tuner == GRID_TUNER else tuner.removeprefix(CONFIRM_PREFIX)


def is_confirmation(tuner: str | None) -> bool:
    return bool(tuner) and tuner.startswith(CONFIRM_PREFIX)


def pair_id(cfg: Mapping[str, Any]) -> str:
    """Same for the trials of every arm (BN, no BN, GN, ...) of one grid point: every key
    that defines the experiment equal but the normalisation's (execution keys, where and
    how it ran, do not count)."""
    rest = {k: cfg.get(k) for k in sorted(REFERENCE) if k not in ARM_KEYS and k not in EXECUTION_KEYS
            and not (k in LATER_KEYS and cfg.get(k, REFERENCE[k]) == REFERENCE[k])}
    return hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def trial_name(cfg: Mapping[str, Any]) -> str:
    name = f"{arm_name(cfg)}_lr={cfg['lr']:g}_bs={cfg['batch_size']}_seed={cfg['seed']}"
    return name.replace("+", "_")


def display_name(cfg: Mapping[str, Any], varied: Sequence[str]) -> str:
    """A trial's MLflow run name: its normalisation's arm first, then the values the study varies
    (e.g. "no_bn lr=0.01"), short enough for the runs table's name column."""
    # Execution keys (where the data is, the device) say nothing about the experiment.
    values = [f"{k}={number(cfg[k])}" for k in varied if k not in ARM_KEYS and k in cfg and k not in EXECUTION_KEYS]
    return " ".join([norm_arm(cfg), *values])


def mark_diverged(name: str) -> str:
    """The run name of a trial that diverged: the mark after its settings ("no_bn lr=1e3
    DIVERGED"), so that where MLflow's runs table cuts a long name (at about 17 characters in
    MLflow 3.17) the settings that tell two diverged runs apart are what stays."""
    return name if DIVERGED_MARK in name.split() else f"{name} {DIVERGED_MARK}".strip()


DIVERGED_MARK = "DIVERGED"


def trial_dirname(config: Mapping[str, Any], trial_id: str) -> str:
    """A trial's folder name (and Tune's name for it): readable, and unique by Tune's trial id."""
    return f"{trial_name(trial_config(config))}_{trial_id}"


def trial_tags(cfg: Mapping[str, Any], tuner: str) -> dict[str, str]:
    return {"arm": arm_of(cfg, tuner), "pair_id": pair_id(cfg), "seed": str(cfg["seed"]), "tuner": tuner}
