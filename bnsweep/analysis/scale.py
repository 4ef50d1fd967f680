"""How far a sweep is from the reference experiment (DESIGN.md §2, config.REFERENCE):
the scale header of a report, so that nobody reads a smoke run's numbers as the study's.

The settings that set the scale (model, width, images, epochs, batch size), whether
the sweep ran in smoke mode (`bnsweep run --smoke`, kept in SWEEP_DIR/sweep.json),
whether its data were the official CIFAR-10 files (the trials' `dataset_verified`
tag), and any other setting of the experiment that is not the reference's.
A setting the study varies (the lr study's lr, the batch-size study's batch size)
is its question, not a difference of scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bnsweep.analysis.results import Results
from bnsweep.analysis.tables import varied
from bnsweep.config import DATASET_SIZES, EXECUTION_KEYS, N_HOLDOUT_DEFAULT, REFERENCE, n_train_available
from bnsweep.formats import cell

# (config key, what a reader calls it): the settings that make a run big or small.
SCALE_KEYS = (("model", "model"), ("width", "width (channel multiplier)"), ("n_train", "training images"),
              ("n_val", "validation images"), ("epochs", "epochs"), ("batch_size", "batch size (images per step)"))
SWEEP_FILE = "sweep.json"  # bnsweep/storage.py's record of what `run` decided, `smoke` included


@dataclass
class ScaleRow:
    setting: str
    reference: str
    sweep: str
    differs: bool  # this sweep is not at the reference's value


def _fmt(v) -> str:
    """A setting's value as every report table writes it (formats.cell): 0.0625, 50000, yes."""
    return cell(v, setting=True)


def _py(v):
    """A table cell as a plain Python value: None for a missing one, int for numpy's ints."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def _images(cfg: dict, key: str) -> int:
    """Training or validation images a config uses: n_train / n_val, or all there are."""
    if key == "n_train":
        return int(cfg["n_train"]) if cfg.get("n_train") else n_train_available(cfg)
    if cfg.get("n_val"):
        return int(cfg["n_val"])
    return N_HOLDOUT_DEFAULT if cfg["val_split"] == "holdout" else DATASET_SIZES[cfg["dataset"]][1]


def _values(trials: pd.DataFrame, key: str) -> list:
    """The distinct values of `key` among the trials (image counts for n_train / n_val), sorted."""
    rows = [{k: _py(v) for k, v in r.items()} for r in trials[[k for k in REFERENCE if k in trials]].to_dict("records")]
    if key in ("n_train", "n_val"):
        return sorted({_images({**REFERENCE, **{k: v for k, v in r.items() if v is not None}}, key) for r in rows})
    return sorted({r[key] for r in rows if r.get(key) is not None}, key=lambda v: (str(type(v)), v))


def smoke_mode(results: Results) -> bool | None:
    """Whether the sweep(s) ran with --smoke: True, False, or None where no sweep.json can be
    read (a sweep on remote storage, or one moved away) or the sweeps disagree."""
    found = set()
    for sweep_dir in results.parents["sweep_dir"]:
        if not isinstance(sweep_dir, str) or "://" in sweep_dir:
            return None  # remote storage: not opened just to print a header
        try:
            found.add(bool(json.loads((Path(sweep_dir) / SWEEP_FILE).read_text())["smoke"]))
        except (OSError, ValueError, KeyError):
            return None
    return found.pop() if len(found) == 1 else None


def _data(trials: pd.DataFrame) -> tuple[str, bool]:
    """(what the data was, whether that is the reference's official, md5-verified CIFAR-10)."""
    ran = trials[trials["dataset_source"].notna()]  # trials that failed before loading data carry no tag
    datasets = sorted(set(trials["dataset"].dropna().astype(str)))
    if ran.empty:
        return f"{', '.join(datasets)} (no trial loaded its data)", False
    sources = ", ".join(sorted(set(ran["dataset_source"].astype(str))))
    verified = bool(ran["dataset_verified"].all()) and datasets == ["cifar10"]
    return f"{', '.join(datasets)}: {sources}" + ("" if verified else " (not md5-verified)"), verified


def scale_rows(results: Results) -> list[ScaleRow]:
    """The sweep's scale beside the reference, one row per setting that sets it, then
    smoke mode, the data, and the other settings that are not the reference's."""
    t = results.trials
    study_varies = set(varied(t))
    rows = []
    for key, label in SCALE_KEYS:
        ref = _images(REFERENCE, key) if key in ("n_train", "n_val") else REFERENCE[key]
        values = _values(t, key)
        if key in study_varies:
            rows.append(ScaleRow(label, _fmt(ref), "varied by the study: " + ", ".join(map(_fmt, values)), False))
        else:
            rows.append(ScaleRow(label, _fmt(ref), ", ".join(map(_fmt, values)) or "unknown", values != [ref]))
    smoke = smoke_mode(results)
    rows.append(ScaleRow("smoke run (--smoke)", "no", "unknown (no readable sweep.json)" if smoke is None
                         else _fmt(smoke), bool(smoke)))
    data, verified = _data(t)
    rows.append(ScaleRow("data", "cifar10: official (md5-verified)", data, not verified))
    shown = {k for k, _ in SCALE_KEYS} | {"seed", "bn", "norm", "dataset", *EXECUTION_KEYS}  # bn, norm: the arms
    others = []
    for key in REFERENCE:
        if key in shown or key in study_varies or key not in t:
            continue
        values = _values(t, key)
        if values and values != [REFERENCE[key]]:
            others.append(f"{key} {', '.join(map(_fmt, values))} (reference {_fmt(REFERENCE[key])})")
    if others:
        rows.append(ScaleRow("other settings", "the reference's", "; ".join(others), True))
    return rows


def at_reference_scale(results: Results) -> bool:
    """True when nothing in scale_rows differs from the reference (smoke mode unknown counts as not smoke)."""
    return not any(r.differs for r in scale_rows(results))


def scale_tag(results: Results) -> str:
    """A few words for a figure's subtitle, so that a figure taken out of the report keeps
    its warning: "smoke run, not the reference scale", "not the reference scale" or ""."""
    rows = scale_rows(results)
    if not any(r.differs for r in rows):
        return ""
    smoke = any(r.differs for r in rows if r.setting.startswith("smoke"))
    return ("smoke run, " if smoke else "") + "not the reference scale"


def scale_note(results: Results) -> str | None:
    """One paragraph on how far to trust the numbers at this scale; None at the reference scale."""
    differing = [r for r in scale_rows(results) if r.differs]
    if not differing:
        return None
    names = ", ".join(r.setting.split(" (")[0] for r in differing)
    # The original's numbers are in the report only where the study asks for them (its ORIGINAL).
    beside = (", and beside the published numbers shown below they compare shapes only" if results.asks.get("original")
              else "")
    return (f"Not the reference experiment: {names} differ from the study's (table below). These numbers test "
            f"the study's claims at this scale; they are not a reproduction of its published values{beside}.")
