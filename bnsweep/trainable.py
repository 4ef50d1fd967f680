"""The Tune trainable: one trial, one train() run, recorded in the ledger epoch by epoch.

Ray pickles run_trial by reference, so a trial's process imports this module (and
train) and nothing that imports mlflow (tests/test_tracking.py checks).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune

from bnsweep import ledger
from bnsweep.config import make_config
from bnsweep.errors import BnsweepError
from bnsweep.trials import RUN_INFO_KEYS, trial_config, trial_dirname

CHECKPOINT_FILE = "checkpoint.pt"


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """The Tune trainable: one train() run; per epoch a record in the ledger, then a
    checkpoint and a result for Tune.

    The ledger (bnsweep/ledger.py) gets the trial's start, each epoch before Tune hears
    of it, and the end this process knows; a trial the ledger says has ended (other than
    errored, which resume retries) is not run again. A mistake another attempt would repeat (a
    BnsweepError: a bad config, data this node lacks) ends the trial at once, failed,
    with its reason; raised, Tune would retry it MAX_FAILURES times. Anything else (a
    dead worker or node, a process killed for memory) reaches Tune, which retries it
    from the last checkpoint.
    """
    sweep_dir, trial_id = sweep["sweep_dir"], tune.get_context().get_trial_id()
    name = trial_dirname(config, trial_id)
    end = ledger.end_of(sweep_dir, name)
    if end and end["status"] != "errored":
        # Tune's saved state missed this trial's end (the driver was killed before Tune's next
        # snapshot) and a restore runs it again; the ledger did not: nothing is left to run.
        return
    ledger.start_trial(sweep_dir, name, trial_id, sweep["tuner"], trial_config(config))
    try:
        summary = _train_trial(config, sweep, name)
    except BnsweepError as e:
        ledger.end_trial(sweep_dir, name, "failed", str(e))
        print(f"bnsweep: trial {name} failed, not to be retried: {e}", flush=True)
        return
    ledger.end_trial(sweep_dir, name, "diverged" if summary["diverged"] else "completed")


def _train_trial(config: dict[str, Any], sweep: dict[str, Any], name: str) -> dict[str, Any]:
    import torch

    from bnsweep.train import load_checkpoint, save_checkpoint, train

    # A line per checkpoint (every epoch of every trial) would bury the progress table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = make_config(trial_config(config))
    cfg["device"] = trial_device(cfg["device"], ray.get_runtime_context().get_accelerator_ids().get("GPU", []))
    torch.set_num_threads(max(1, int(sweep["resources"]["cpu"])))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = load_checkpoint(Path(d) / CHECKPOINT_FILE)
    # Where this attempt runs (a retry after a node failure may run elsewhere); a result key, not a tag.
    info: dict[str, Any] = {"node_id": ray.get_runtime_context().get_node_id()}

    def on_start(run_info: dict[str, Any]) -> None:
        # Strings MLflow gets as tags (dataset identity, device, what executed).
        info.update({k: run_info[k] for k in RUN_INFO_KEYS})

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(state, Path(d) / CHECKPOINT_FILE)
            # checkpoint_bytes: what a full disk must keep room for (ledger.shortage).
            record = {**metrics, **info, "checkpoint_bytes": (Path(d) / CHECKPOINT_FILE).stat().st_size}
            ledger.record_epoch(sweep["sweep_dir"], name, record)
            # Tune overwrites time_total_s with its own sum of time_this_iter_s, which by default is
            # the wall time between reports (trial start-up and restores included). Given the
            # epoch's time, its sum is train()'s time_total_s: one meaning of the name everywhere.
            tune.report({**record, "time_this_iter_s": metrics["epoch_time_s"]},
                        checkpoint=tune.Checkpoint.from_directory(d))

    return train(cfg, report=report, resume=resume, on_start=on_start)


def trial_device(device: str, gpu_ids: list) -> str:
    """device=auto follows what Ray gave the trial: no GPU given, the CPU.

    Ray 2.5x+ leaves CUDA_VISIBLE_DEVICES alone for a task given 0 GPUs (ray
    issue 54868), so "auto" would otherwise find the node's GPUs and put every
    such trial on cuda:0, uncounted by Ray's scheduler.
    """
    return "cpu" if device == "auto" and not gpu_ids else device
