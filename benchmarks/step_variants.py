"""Time per training step of the reference Inception in the forms bnsweep could run it (issue 2).

Each variant is one optimizer step as bnsweep.step.TrainStep runs it (forward,
cross-entropy, backward, SGD momentum 0.9; on CUDA bf16 autocast, channels_last),
on batches already on the device, for both arms:

- eager:             PyTorch runs the step op by op;
- graph:             the same step replayed from a CUDA graph (train()'s default on CUDA);
- ... +aten pool:    max pooling by F.max_pool2d instead of bnsweep/pool.py's
                     kernels (as bnsweep ran before them);
- eager nchw:        the whole model in NCHW (channels_last off);
- ... +fused BN:     batch norm and ReLU by bnsweep/bn_relu.py's kernels (config
                     fused_bn_relu; off by default until these figures decide);
- compiled (--compile): torch.compile of the model with aten pools, eager step;
                     measured only, bnsweep does not compile (its compile time is printed).

A profile of an eager BN step, with and without the fused BN, adds the GPU's
busy time per step (the sum of kernel times): a wall time well above it means
the GPU waits on the host, which a graph removes. Ratios printed are eager /
variant (> 1: faster). On a CPU only "eager" (and "compiled") run: the other
variants differ from it only on CUDA.

Measured on an H200 (2026-11-26) and rejected: max pooling on an NCHW copy
(BN step 0.73x eager's speed) and as a 1x3 then 3x1 pool (0.84x).

    .venv/bin/python benchmarks/step_variants.py                 # CPU-sized (eager variants only)
    python benchmarks/step_variants.py --width 1.0 --batch-size 250   # a GPU
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import device_line, resolve_device, run_main

from bnsweep.config import make_config
from bnsweep.model import build_model
from bnsweep.pool import TFSamePool, aten_max_pool
from bnsweep.step import TrainStep


class AtenPool(torch.nn.Module):
    """F.max_pool2d with TensorFlow's padding: the pooling bnsweep ran before its kernels."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return aten_max_pool(x, self.stride)


def use_aten_pools(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, TFSamePool):
            setattr(module, name, AtenPool(child.stride))
        else:
            use_aten_pools(child)


VARIANTS = {  # name: (graph, aten pools, channels_last, compiled, fused BN + ReLU)
    "eager": (False, False, True, False, False),
    "graph": (True, False, True, False, False),
    "eager +aten pool": (False, True, True, False, False),
    "graph +aten pool": (True, True, True, False, False),
    "eager nchw": (False, False, False, False, False),
    "eager +fused BN": (False, False, True, False, True),
    "graph +fused BN": (True, False, True, False, True),
    "compiled +aten pool": (False, True, True, True, False),
}
PROFILED = ("eager", "eager +fused BN")  # of the BN arm


def make_step(cfg: dict, device: torch.device, variant: str) -> tuple[TrainStep, torch.memory_format]:
    graph, aten_pools, channels_last, compiled, fused = VARIANTS[variant]
    torch.manual_seed(0)
    model = build_model({**cfg, "fused_bn_relu": fused})
    if aten_pools:
        use_aten_pools(model)
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt).train()
    if compiled:
        model = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    return TrainStep(model, optimizer, amp=device.type == "cuda", graph=graph), fmt


def step_ms(made: tuple[TrainStep, torch.memory_format], batches, steps: int, warmup: int,
            device: torch.device) -> float:
    step, fmt = made
    batches = [(x.contiguous(memory_format=fmt), y) for x, y in batches]
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        loss, _ = step(*batches[i % len(batches)])
    loss.item()
    return 1000 * (time.perf_counter() - t0) / steps


# Kernel-name patterns of the profile's categories, first match wins (names as
# PyTorch 2.11 / cuDNN 9 / Triton print them on Hopper).
KERNEL_KINDS = (
    ("max pooling", ("max_pool",)),
    ("batch norm", ("batch_norm", "bn_fw", "bn_bw", "_stats_partial", "_stats_final", "_normalize_relu",
                    "_backward_partial", "_backward_final", "_backward_dx")),
    ("convolution", ("xmma", "gemm", "cutlass", "cudnn", "implicit", "wgrad", "dgrad", "fprop", "conv2d")),
    ("concatenation", ("CatArray",)),
    ("SGD (foreach)", ("multi_tensor_apply",)),
    ("elementwise and other", ("",)),
)


def busy_ms(made: tuple[TrainStep, torch.memory_format], batches, device: torch.device,
            steps: int = 3) -> tuple[float, str]:
    """GPU kernel time per eager step; the time per kind of kernel and the largest kernels."""
    from torch.profiler import ProfilerActivity, profile

    step_ms(made, batches, 2, 1, device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step_ms(made, batches, steps, 0, device)
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in events)
    kinds = dict.fromkeys((kind for kind, _ in KERNEL_KINDS), 0.0)
    for e in events:
        kind = next(k for k, patterns in KERNEL_KINDS if any(p in e.key for p in patterns))
        kinds[kind] += e.self_device_time_total / 1000 / steps
    lines = [f"    {kind:<22} {ms:6.2f} ms/step ({100 * ms * 1000 * steps / total_us:4.1f} %)"
             for kind, ms in kinds.items()]
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=90)
    return total_us / 1000 / steps, "\n".join(lines) + "\n" + table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on a GPU, 3 on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-profile", action="store_true", help="skip the profile of an eager BN step")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling per arm)")
    args = p.parse_args()
    device = torch.device(resolve_device(args.device))
    on_cuda = device.type == "cuda"
    steps = args.steps or (50 if on_cuda else 3)
    names = [v for v in VARIANTS
             if (on_cuda or v == "eager" or VARIANTS[v][3]) and (args.compile or not VARIANTS[v][3])]
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [(torch.rand(args.batch_size, 3, 32, 32, device=device, generator=gen),
                torch.randint(0, 10, (args.batch_size,), device=device, generator=gen)) for _ in range(4)]

    print("training step: the forms bnsweep could run it in")
    print(f"device: {device_line(device)}")
    print(f"settings: width {args.width}, batch {args.batch_size}, {steps} timed steps after 5 warm-up; "
          f"{'bf16 autocast' if on_cuda else 'fp32'}; random batches already on the device")
    times = {}
    for bn in (True, False):
        cfg = make_config({"bn": bn, "width": args.width, "device": str(device)})
        arm = "BN" if bn else "no BN"
        for name in names:
            try:
                t0 = time.perf_counter()
                made = make_step(cfg, device, name)
                if VARIANTS[name][3]:
                    step_ms(made, batches, 1, 0, device)
                    print(f"  {arm:<6} {name:<24} compiled in {time.perf_counter() - t0:.0f} s", flush=True)
                ms = times[arm, name] = step_ms(made, batches, steps, 5, device)
            except Exception as exc:  # one broken variant must not hide the others' figures
                print(f"  {arm:<6} {name:<24} failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"  {arm:<6} {name:<24} {ms:8.2f} ms/step {1000 * args.batch_size / ms:9.0f} img/s", flush=True)
        for name in PROFILED if on_cuda and bn and not args.no_profile else ():
            if (arm, name) not in times:
                continue
            try:
                busy, table = busy_ms(make_step(cfg, device, name), batches, device)
            except Exception as exc:
                print(f"  profile of {name} failed: {type(exc).__name__}: {exc}", flush=True)
            else:
                print(f"  BN {name}: GPU busy {busy:.2f} ms of {times[arm, name]:.2f} ms per step "
                      f"({100 * busy / times[arm, name]:.0f} %)\n{table}", flush=True)
    print("ratios (eager / variant: > 1 means the variant is faster)")
    for arm in ("BN", "no BN"):
        for name in names[1:]:
            if (arm, name) in times and (arm, "eager") in times:
                print(f"  {arm:<6} eager / {name:<24} {times[arm, 'eager'] / times[arm, name]:.2f}")
    for name in names:
        if ("BN", name) in times and ("no BN", name) in times:
            print(f"  BN/no-BN time per step, {name:<24} {times['BN', name] / times['no BN', name]:.2f}")


if __name__ == "__main__":
    run_main(main)
