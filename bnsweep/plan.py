"""`bnsweep plan`: what a study will cost, before spending it.

The estimate comes from a probe on this machine: a few real optimizer steps
of each distinct model shape in the study, run as train() runs them (its autocast
and memory format, train.execution; eagerly, where training would replay a CUDA graph, so
the estimate errs long), and a validation pass by train's own `evaluate`, each timed per
image and scaled by the images each trial will train on and validate. It is as good as
this machine is like the one the sweep runs on; the line says which device measured it.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import torch

from bnsweep import augment, data
from bnsweep.config import COST_KEYS, DATASET_SIZES, N_HOLDOUT_DEFAULT, n_train_available
from bnsweep.model import build_model
from bnsweep.space import Study
from bnsweep.step import TrainStep
from bnsweep.train import evaluate, execution, resolve_device

# Images per probe step on a CPU: the trial's batch up to this many, since a small model's
# cost per image depends on its batch (a step's fixed overhead shared by fewer images: at
# width 1/16, 32 images cost 1.4-1.6x per image what the quick study's 50 do, and plan read
# 96 s for a sweep whose trials trained 69 and 56 s, 2026-12-07); small enough to stay
# seconds per step at width 1. A GPU takes the trial's own batch.
PROBE_IMAGES = 64
# Steps per probe: the first is warm-up and not timed, and the median of the others counts.
# A small model on a CPU needs more than one to warm up (oneDNN's bf16 kernels: at width 1/16
# 3 steps read 3.7 ms per image, 8 read 3.1, the trial trained at 3.0), so the probe takes up
# to PROBE_STEPS_MAX steps within PROBE_BUDGET_S seconds, and never fewer than PROBE_STEPS.
# The median, not the fastest: on a shared 2-vCPU machine (AVX2 Zen 3, fp32, 2026-12-08) the
# fastest step read 3.8 ms per image where train() trained at 4.8.
PROBE_STEPS, PROBE_STEPS_MAX, PROBE_BUDGET_S = 3, 8, 10.0
# Images per validation probe: a forward pass costs a different share of a training step on
# each execution (about a third under bf16 on AVX512_BF16; 0.6 in fp32 on AVX2, the same
# machine), so it is measured, by train.evaluate over two passes of up to this many images.
PROBE_VAL_IMAGES = 500


def probe_images(cfg: dict[str, Any]) -> int:
    on_cuda = resolve_device(cfg["device"]).type == "cuda"
    return cfg["batch_size"] if on_cuda else min(PROBE_IMAGES, cfg["batch_size"])


def seconds_per_image(cfg: dict[str, Any], threads: int) -> tuple[float, float]:
    """Measured wall seconds per training image (augmentation, forward, backward and SGD) and
    per validated image (train.evaluate) for this model."""
    torch.set_num_threads(threads)
    device = resolve_device(cfg["device"])
    run = execution(cfg, device)  # as train() decides it
    fmt = run.memory_format
    model = build_model(cfg).to(device).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
    step = TrainStep(model, opt, amp=run.autocast, graph=False)
    n = probe_images(cfg)
    x = torch.rand(n, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    gen = data.make_generator(0, device)
    times: list[float] = []
    while len(times) < PROBE_STEPS or (len(times) < PROBE_STEPS_MAX and sum(times) < PROBE_BUDGET_S):
        t0 = time.perf_counter()
        xb = augment.augment(x, gen, cfg["shear_range"], cfg["zoom_range"], cfg["horizontal_flip"]) \
            if cfg["augment"] else x
        loss, _ = step(xb.contiguous(memory_format=fmt), y)
        loss.item()  # waits for the step
        times.append(time.perf_counter() - t0)
    n_val = min(PROBE_VAL_IMAGES, cfg["eval_batch_size"] * 2)
    val_x = torch.randint(0, 256, (n_val, 3, 32, 32), dtype=torch.uint8, device=device)
    val_y = torch.randint(0, 10, (n_val,), device=device)
    val_times = []
    for _ in range(2):  # the first pass warms up the eval-mode kernels
        t0 = time.perf_counter()
        evaluate(model, val_x, val_y, cfg["eval_batch_size"], run.autocast_context(device), fmt)
        val_times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) / n, val_times[-1] / n_val


def _trial_configs(study: Study) -> list[dict[str, Any]]:
    """A config per trial the study runs: a grid's points; an Optuna study's samples of each
    arm and its confirmation runs (its best configuration on CONFIRM_SEEDS fresh seeds), each
    costed as the arm's fixed config, since the samples are not drawn yet."""
    if study.search == "grid":
        return study.grid_configs()
    return [{**study.fixed, **arm} for arm in study.arm_list()] * (study.num_samples + study.confirm_seeds)


def _concurrency(study: Study) -> tuple[int, str]:
    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    by_cpu = int(cpus // study.resources["cpu"])
    by_gpu = int(gpus // study.resources["gpu"]) if study.resources["gpu"] else by_cpu
    n = min(by_cpu, by_gpu, study.max_concurrent or by_cpu)  # 0: a trial does not fit this machine
    return n, f"{cpus} CPUs, {gpus} GPUs on this machine"


def describe(study: Study, probe: bool = True) -> str:
    study.default_gpus(torch.cuda.device_count())  # as `run` on this machine would
    configs = _trial_configs(study)
    epochs = study.fixed["epochs"]
    concurrent, machine = _concurrency(study)
    lines = [
        f"study {study.name} ({study.path})",
        f"  search          {study.search}" + (f", {study.num_samples} samples per arm, "
                                                 f"{len(study.arm_list())} arms" + (
                                                     f", then each arm's best on {study.confirm_seeds} fresh seeds"
                                                     if study.confirm_seeds else "")
                                                 if study.search == "optuna" else ""),
        f"  trials          {len(configs)}",
        f"  epochs/trial    {epochs}",
        f"  trial-epochs    {len(configs) * epochs}",
        f"  per trial       {study.resources['cpu']:g} CPU, {study.resources['gpu']:g} GPU",
        f"  at once         {concurrent} ({machine})"
        + ("; a trial does not fit here: run it on a cluster (--address)" if not concurrent else ""),
    ]
    if not probe:
        return "\n".join(lines)
    threads = max(1, int(study.resources["cpu"]))
    cache: dict[tuple, tuple[float, float]] = {}
    trial_s = []
    for cfg in configs:
        # What a step's time per image depends on (the config table's cost keys), the probe's batch,
        # and the validation pass's.
        key = (*(cfg[k] for k in COST_KEYS), probe_images(cfg), cfg["eval_batch_size"])
        if key not in cache:
            cache[key] = seconds_per_image(cfg, threads)
        n_train = cfg["n_train"] or n_train_available(cfg)
        n_val = cfg["n_val"] or (DATASET_SIZES[cfg["dataset"]][1] if cfg["val_split"] == "test" else N_HOLDOUT_DEFAULT)
        train_s, val_s = cache[key]
        trial_s.append(epochs * (train_s * n_train + val_s * n_val))
    total_s = sum(trial_s)
    device = resolve_device(study.fixed["device"])
    wall = f"{_duration(_makespan(trial_s, concurrent))} wall here" if concurrent else \
        "no wall time here (a trial does not fit)"
    lines.append(f"  estimate        {wall} ({_duration(total_s)} of trial time), "
                 f"from a {len(cache)}-shape probe on {device.type}; without each trial's start-up (data "
                 f"loading, the first epoch's warm-up: tens of seconds on a CPU); optuna/ASHA may stop trials earlier")
    return "\n".join(lines)


def _makespan(seconds: list[float], slots: int) -> float:
    """When the last trial ends, trials started in the study's order each on the first slot
    to free up, as Tune starts them: the longest trial of a pair sets the pace, not their mean."""
    free = [0.0] * slots
    for s in seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{math.ceil(seconds / 86400)} days"
