"""Max pooling, forward + backward: bnsweep's kernels against PyTorch's (issue 2).

Why: on an H200 (2026-11-26, width 1, batch 250, bf16, channels_last) PyTorch's
max pooling took 10.2 ms of a 28.5 ms BN training step, 36 %, the largest
single cost. bnsweep/pool.py runs the Inception's pools with Triton kernels on
CUDA (why they can be faster is said there). This script times one training
step's pooling calls, at the shapes a width-1 Inception feeds them, in two forms:

- aten: F.max_pool2d on channels_last input, as bnsweep ran it before
  (explicit -inf padding where TensorFlow's is asymmetric);
- bnsweep: the model's own pooling modules (the kernels on CUDA, F.max_pool2d
  elsewhere, so on a CPU both forms are the same code).

Forward outputs must be equal (checked), and so must the routing of gradients:
the share of positive inputs whose gradient differs from aten's is printed (0
expected; inputs are post-ReLU-like, with a third exact zeros, and bf16 ties).
Also printed: the first call's time, which includes compiling the kernels
(Triton caches them on disk, so a later process skips most of it).

Measured on the same H200 before the kernels, and rejected: the same pools on an
NCHW copy (0.56x aten's speed) and as a 1x3 then 3x1 pool (0.69x).

    .venv/bin/python benchmarks/pooling.py                       # CPU, batch 16
    python benchmarks/pooling.py --batch-size 250                # a GPU (bf16)
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import device_line, resolve_device, run_main

from bnsweep.config import make_config
from bnsweep.model import build_model
from bnsweep.pool import TFSamePool, aten_max_pool


def pool_calls(width: float) -> list[tuple[tuple[int, ...], torch.nn.Module]]:
    """(input shape per image, the pooling module) of each 3x3 max pool the Inception
    runs, read from the model itself with forward hooks."""
    model = build_model(make_config({"bn": True, "width": width}))
    calls = []

    def hook(mod, inputs, _out):
        calls.append((tuple(inputs[0].shape[1:]), mod))

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if isinstance(mod, TFSamePool)]
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for handle in handles:  # the timed calls below run the same modules
        handle.remove()
    return calls


def aten(x, pool):
    return aten_max_pool(x, pool.stride)  # what the module runs where its kernels do not


def bnsweep(x, pool):
    return pool(x)  # the model's own module


FORMS = {"aten": aten, "bnsweep": bnsweep}


def time_form(fn, xs, grads, calls, device, repeats: int) -> float:
    """Milliseconds for one training step's pooling (all calls, forward + backward)."""
    def once():
        for x, g, (_, pool) in zip(xs, grads, calls):
            x.grad = None
            fn(x, pool).backward(g)

    once()  # warm-up: kernels chosen, memory pooled
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=None, help="default: 250 on a GPU, 16 on a CPU")
    p.add_argument("--repeats", type=int, default=None, help="timed steps (default: 20 on a GPU, 2 on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    args = p.parse_args()
    device = torch.device(resolve_device(args.device))
    on_cuda = device.type == "cuda"
    batch = args.batch_size or (250 if on_cuda else 16)
    repeats = args.repeats or (20 if on_cuda else 2)
    dtype = torch.bfloat16 if on_cuda else torch.float32  # what autocast gives the pools in train()

    calls = pool_calls(args.width)
    gen = torch.Generator(device=device).manual_seed(0)
    # Post-ReLU-like inputs: a third exact zeros, so ties occur as they do in the model.
    xs = [torch.relu(torch.randn(batch, *shape, device=device, generator=gen) - 0.4).to(dtype)
          .contiguous(memory_format=torch.channels_last).requires_grad_() for shape, _ in calls]
    outs = [aten(x, pool) for x, (_, pool) in zip(xs, calls)]
    grads = [torch.randn(o.shape, device=device, generator=gen).to(dtype)
             .contiguous(memory_format=torch.channels_last) for o in outs]

    print("max pooling: one training step's pooling calls, forward + backward")
    print(f"device: {device_line(device)}")
    print(f"settings: width {args.width}, batch {batch}, {dtype}, channels_last input, {len(calls)} calls "
          f"per step, {repeats} timed steps")
    reference_grads = []
    for x, g, out in zip(xs, grads, outs):
        x.grad = None
        out.backward(g)
        reference_grads.append(x.grad.clone())
    times = {}
    for name, fn in FORMS.items():
        differs, total = 0, 0
        t0 = time.perf_counter()
        for x, g, out, ref, (_, pool) in zip(xs, grads, outs, reference_grads, calls):
            x.grad = None
            mine = fn(x, pool)
            if not torch.equal(mine, out.detach()):
                raise SystemExit(f"{name}: forward output differs from F.max_pool2d; not a valid form")
            mine.backward(g)
            passed_on = x.detach() > 0  # where the ReLU before the pool passes a gradient on
            # A misrouted gradient moves a whole N(0, 1) value; summation order only rounds.
            misrouted = ~torch.isclose(x.grad.float(), ref.float(), rtol=1e-2, atol=1e-2)
            differs += int((misrouted & passed_on).sum())
            total += int(passed_on.sum())
        first_s = time.perf_counter() - t0
        times[name] = time_form(fn, xs, grads, calls, device, repeats)
        print(f"  {name:<8} {times[name]:9.2f} ms per step   gradient differs from aten's at "
              f"{100 * differs / total:.4f} % of positive inputs   first call {first_s:.1f} s", flush=True)
    print(f"ratio aten / bnsweep (> 1 means bnsweep's is faster): {times['aten'] / times['bnsweep']:.2f}")


if __name__ == "__main__":
    run_main(main)
