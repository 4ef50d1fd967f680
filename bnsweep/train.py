"""One training run of the study, in plain PyTorch: `train(cfg, report)`.

Knows nothing of Ray or MLflow, so it runs the same from the CLI, a test, a
notebook or a Tune trial. The caller sees each epoch through `report` and may
save the checkpoint state it is handed; `resume` continues from such a state.

Determinism: every random draw of epoch e (data order, augmentation, dropout)
comes from generators seeded with (seed, e), so a run resumed at epoch e makes
the same draws as an uninterrupted one, and paired BN / no-BN trials with the
same seed see the same batches and the same augmented images.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bnsweep import augment
from bnsweep import data as data_mod
from bnsweep.config import EXECUTION_FACTS, lr_at, norm_of
from bnsweep.errors import BnsweepError
from bnsweep.model import build_model
from bnsweep.step import TrainStep

# How often the training loop checks for a non-finite loss. Each check is one
# host sync; on CUDA a sync per step would cost measurable throughput.
_DIVERGENCE_CHECK_STEPS = 50

Report = Callable[[dict[str, float], dict[str, Any]], None]


class DeviceError(BnsweepError):
    """The config names a device this machine does not have."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name} but CUDA is not available on this machine; use device=auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# x86 CPU features that compute bf16 natively: AVX512_BF16 (Intel Cooper Lake and later,
# AMD Zen 4 and later) and AMX (Intel Sapphire Rapids and later). Without them oneDNN
# emulates bf16 through fp32, slower than fp32 itself: a width-1/16 training step took
# 2.7x as long under bf16 autocast on this project's AVX2-only build machine (2026-12-07,
# docs/benchmarks.md). Other architectures get fp32 until someone measures theirs.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_features() -> frozenset[str]:
    """The CPU's instruction-set features: torch's cpuinfo (any OS; a private torch API,
    so guarded), else the flags of Linux's /proc/cpuinfo, else none known."""
    try:
        caps = torch._C._cpu._get_cpu_capability()
        return frozenset(name for name, present in caps.items() if present is True)
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device, features: frozenset[str] | None = None) -> bool:
    """Whether `device` computes bf16 natively. Every CUDA run has autocast bf16 since
    bnsweep began (GPUs from sm_80 compute it natively; older ones are not measured)."""
    if device.type == "cuda":
        return True
    features = cpu_features() if features is None else features
    return device.type == "cpu" and any(f in features for f in NATIVE_BF16_FEATURES)


@dataclass(frozen=True)
class Execution:
    """How a run executes its steps, in training and validation alike."""

    autocast: bool  # bf16 autocast (TrainStep and evaluate); False: fp32
    memory_format: torch.memory_format  # of the model's weights and every batch

    @property
    def autocast_name(self) -> str:
        return "bf16" if self.autocast else "none"  # config.AMP_CHOICES' words, the exec.autocast tag

    def autocast_context(self, device: torch.device) -> torch.autocast:
        """This execution's autocast for a forward pass (evaluate, plan's probe, a plain loop);
        TrainStep builds its own, to turn off autocast's weight cache inside a CUDA-graph capture."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast)


def choose_execution(amp: str, channels_last: bool, bf16_native: bool) -> Execution:
    """The execution a config asks for, on a device that does or does not compute bf16
    natively (native_bf16; a parameter, so a test can state it). amp "auto" takes bf16
    where it is native, fp32 elsewhere; "bf16" and "none" mean what they say on every
    device, and so does channels_last (the fast layout on CUDA and on CPUs alike)."""
    autocast = amp == "bf16" or (amp == "auto" and bf16_native)
    return Execution(autocast, torch.channels_last if channels_last else torch.contiguous_format)


def execution(cfg: Mapping[str, Any], device: torch.device) -> Execution:
    """choose_execution for this config on this machine's `device`: made once per run."""
    return choose_execution(cfg["amp"], cfg["channels_last"], native_bf16(device))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model as its cpuinfo gives it (e.g. "AMD EPYC")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        return str(torch._C._cpu._get_cpu_capability().get("cpu_name") or "cpu")
    except (AttributeError, RuntimeError):
        import platform

        return platform.processor() or "cpu"


# Epoch seeds of the two random streams: data order and augmentation (a generator
# of its own), and dropout masks (the global generator). Seeded alike, the two
# would draw the very same numbers, so dropout would follow the shuffle.
DATA_STREAM, DROPOUT_STREAM = 0, 1


def _epoch_seed(seed: int, epoch_index: int, stream: int) -> int:
    # Reproducible per (seed, epoch, stream). The large odd multipliers keep
    # neighbouring seeds and epochs from sharing a stream.
    return (seed * 1_000_003 + epoch_index + stream * 998_244_353) % (2**63 - 1)


def train(
    cfg: Mapping[str, Any],
    report: Report | None = None,
    resume: Mapping[str, Any] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    on_validate: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train per `cfg` (a validated config); return the last epoch's metrics plus a summary.

    `report(metrics, state)` is called after every epoch; `state` references the
    live model, so a caller that wants a checkpoint must save it before returning.
    `on_step(step, steps, loss)` after every optimizer step (from 1; `loss` a 0-d tensor
    on the device: reading it waits for the step, so a progress bar reads it seldom).
    `on_epoch_start(epoch)` when an epoch's clock starts, before its first step (its
    images_per_s counts from there); `on_validate(done, total)`: validation images done,
    from 0 before the first batch.
    """
    device = resolve_device(cfg["device"])
    on_cuda = device.type == "cuda"
    if on_cuda and device.index is not None:
        # Graph capture and Triton launch on the current device; "cuda" already is it
        # (and set_device would reject a device without an index).
        torch.cuda.set_device(device)
    full = data_mod.load_dataset(cfg)
    splits = data_mod.select(cfg, full)
    train_x = splits.train_x.to(device)
    train_y = splits.train_y.to(device)
    val_x = splits.val_x.to(device)
    val_y = splits.val_y.to(device)

    torch.manual_seed(cfg["seed"])  # initial weights: the same for both arms of a pair
    model = build_model(cfg).to(device)
    run = execution(cfg, device)  # decided once: autocast and memory format
    memory_format = run.memory_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    # bf16 autocast, in training (TrainStep) and validation alike. What stays fp32 under it
    # (checked on a CPU by tests/test_cpu_path.py): the weights, their gradients, SGD's
    # momentum, BN's running statistics and its batch mean and variance (computed in fp32
    # from the bf16 conv output by native_batch_norm's mixed-type kernels), and the loss
    # (cross_entropy on logits cast to fp32). Convolutions and the dense layer compute in
    # bf16; BN's normalised output, ReLU, pooling and concatenation carry bf16.
    autocast = run.autocast_context(device)

    # Epochs are numbered from 1 (results, checkpoints, MLflow steps); the loop's
    # epoch_index, which the lr schedule and the data order read, counts from 0.
    epochs_done, time_total_s, history = 0, 0.0, []
    if resume is not None:
        check_resumable(resume, cfg)
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        _momentum_like_weights(optimizer)  # a checkpoint of the other layout resumes on this one
        epochs_done = resume["epoch"]
        time_total_s = resume["time_total_s"]
        history = list(resume["history"])

    if on_start is not None:
        on_start({
            **execution_facts(cfg, device, run),
            "device_name": device_name(device),
            "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "n_train_images": len(train_y),
            "n_val_images": len(val_y),
            **full.identity,
        })

    train_step = TrainStep(model, optimizer, amp=run.autocast, graph=on_cuda and cfg["cuda_graphs"])
    n_train = len(train_y)
    diverged = any(h["diverged"] for h in history)
    for epoch_index in range(epochs_done, cfg["epochs"]):
        if diverged:
            break
        epoch = epoch_index + 1
        lr = lr_at(cfg, epoch_index)
        set_lr(optimizer, lr)
        gen = data_mod.make_generator(_epoch_seed(cfg["seed"], epoch_index, DATA_STREAM), device)
        torch.manual_seed(_epoch_seed(cfg["seed"], epoch_index, DROPOUT_STREAM))  # dropout masks

        t0 = time.perf_counter()
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        n_steps = math.ceil(n_train / cfg["batch_size"])
        for step, idx in enumerate(data_mod.batches(n_train, cfg["batch_size"], gen, device)):
            xb = data_mod.to_unit_float(train_x[idx])
            if cfg["augment"]:
                xb = augment.augment(xb, gen, cfg["shear_range"], cfg["zoom_range"], cfg["horizontal_flip"])
            xb = xb.contiguous(memory_format=memory_format)
            yb = train_y[idx]
            loss, logits = train_step(xb, yb)
            loss_sum += loss * len(idx)
            correct += (logits.argmax(1) == yb).sum()
            if on_step is not None:
                on_step(step + 1, n_steps, loss)
            if (step + 1) % _DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(loss_sum):
                diverged = True
                break
        train_loss = (loss_sum / n_train).item()  # one host sync per epoch
        diverged = diverged or not math.isfinite(train_loss)
        steps_done = step + 1
        train_s = time.perf_counter() - t0

        val_loss, val_acc = evaluate(model, val_x, val_y, cfg["eval_batch_size"], autocast, memory_format,
                                     on_validate)
        # A non-finite validation loss with a finite training loss: BN's running statistics
        # (used in evaluation only) overflowed. The model cannot be evaluated any more: diverged.
        diverged = diverged or not math.isfinite(val_loss)
        epoch_s = time.perf_counter() - t0
        time_total_s += epoch_s
        images = min(steps_done * cfg["batch_size"], n_train)
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": correct.item() / images,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "scheduled_lr": lr,
            "epoch_time_s": epoch_s,
            "step_time_ms": 1000 * train_s / steps_done,
            "images_per_s": images / train_s,
            "time_total_s": time_total_s,
            "diverged": float(diverged),
        }
        best = max(history + [metrics], key=_val_acc_or_minus_one)
        metrics.update(best_val_acc=best["val_acc"], best_epoch=best["epoch"])
        history.append(metrics)
        if report is not None:
            report(metrics, {
                "config": dict(cfg),  # what `bnsweep train --resume` continues
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,  # completed epochs
                "time_total_s": time_total_s,
                "history": history,
            })
    return summarize(history)


def check_resumable(state: Mapping[str, Any], cfg: Mapping[str, Any]) -> None:
    """Refuse, in one line, a checkpoint of another normalisation: its weights might even load
    (BN with a learned scale and GN hold the same per-channel γ and β), and mean another model."""
    saved = state.get("config")
    if saved is not None and norm_of(saved) != norm_of(cfg):
        raise BnsweepError(f"the checkpoint was trained with norm={norm_of(saved)}; it cannot resume as "
                           f"norm={norm_of(cfg)}")
    if saved is not None and norm_of(cfg) == "gn" and saved.get("groups", 32) != cfg.get("groups", 32):
        raise BnsweepError(f"the checkpoint was trained with groups={saved.get('groups', 32)}; it cannot resume "
                           f"with groups={cfg.get('groups', 32)}")


def execution_facts(cfg: Mapping[str, Any], device: torch.device, run: Execution) -> dict[str, str]:
    """What this run executes (config.EXECUTION_FACTS), as strings for MLflow tags."""
    from bnsweep import bn_relu, pool

    pool_kernel = pool.kernel_for(device)
    # A BN kernel runs for both BNs; Triton's fused one (no γ) only for the study's.
    norm = norm_of(cfg)
    bn_kernel = bn_relu.kernel_for(device, norm in ("bn", "bn_scale"), cfg["fused_bn_relu"] and norm == "bn")
    triton = pool.triton if "triton" in (pool_kernel, bn_kernel) else None
    facts = {
        "exec.device": str(device),
        "exec.autocast": run.autocast_name,
        "exec.memory_format": "channels_last" if run.memory_format == torch.channels_last else "contiguous",
        "exec.cuda_graphs": str(device.type == "cuda" and cfg["cuda_graphs"]).lower(),
        "exec.pool_kernel": pool_kernel,
        "exec.bn_kernel": bn_kernel,
        "exec.triton": triton.__version__ if triton is not None else "none",
    }
    assert tuple(facts) == EXECUTION_FACTS
    return facts


@torch.no_grad()
def _momentum_like_weights(optimizer: torch.optim.SGD) -> None:
    # torch.load keeps a tensor's strides, so momentum saved in NCHW would stay NCHW beside
    # channels-last weights (or the reverse): the same numbers, in slower mixed-layout updates.
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if state.get("momentum_buffer") is not None:
                state["momentum_buffer"] = torch.empty_like(param).copy_(state["momentum_buffer"])


@torch.no_grad()
def set_lr(optimizer: torch.optim.SGD, lr: float) -> None:
    """Set the learning rate the way Keras's SGD sees a change of it.

    Keras 2.x SGD (keras/optimizers.py, the study's) keeps v = momentum * v - lr * g
    and steps p += v: the velocity carries the old learning rate, and a drop takes
    effect over ~1 / (1 - momentum) = 10 steps. PyTorch keeps b = momentum * b + g and
    steps p -= lr * b, so a new lr would rescale the whole velocity at once. Scaling
    b by old_lr / new_lr at the change makes every later step equal to Keras's.
    """
    for group in optimizer.param_groups:
        old = group["lr"]
        if old != lr:
            for param in group["params"]:
                buf = optimizer.state.get(param, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(old / lr)
        group["lr"] = lr


@torch.no_grad()
def evaluate(model, x, y, batch_size, autocast, memory_format,
             on_batch: Callable[[int, int], None] | None = None) -> tuple[float, float]:
    """(loss, accuracy) over x, y; `on_batch(done, total)` before the first batch and after each."""
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        if on_batch is not None:
            on_batch(i, len(y))
        xb = data_mod.to_unit_float(x[i:i + batch_size]).contiguous(memory_format=memory_format)
        with autocast:
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum()
    if on_batch is not None:
        on_batch(len(y), len(y))
    return (loss_sum / len(y)).item(), correct.item() / len(y)


def _val_acc_or_minus_one(h: dict[str, float]) -> float:
    return h["val_acc"] if math.isfinite(h["val_acc"]) else -1.0


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """Last epoch's metrics plus best_val_acc / best_epoch / diverged over the run."""
    if not history:
        return {"epochs_completed": 0, "diverged": 0.0}
    best = max(history, key=_val_acc_or_minus_one)
    return {
        **history[-1],
        "epochs_completed": history[-1]["epoch"],
        "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        "diverged": float(any(h["diverged"] for h in history)),
    }


def save_checkpoint(state: Mapping[str, Any], path) -> None:
    # Written beside the target, then renamed over it (atomic on POSIX): a run killed
    # mid-save keeps its previous checkpoint instead of a truncated file.
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict[str, Any]:
    # weights_only: checkpoints hold tensors, numbers, lists and dicts only.
    return torch.load(path, map_location="cpu", weights_only=True)
