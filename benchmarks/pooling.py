"""Max pooling, forward + backward, in the forms a faster Inception could use (issue 2).

Why: on an H200 (2026-11-26, width 1, batch 250, bf16, channels_last) max pooling
took 35 % of a BN training step's GPU time (backward 22 %, forward 13 %) and
about 0.7 TB/s of a 4.8 TB/s memory, the largest single cost. This script times
the model's own pooling calls (the shapes a width-1 Inception feeds them) in
three forms, so a GPU session can decide with one run:

- current: the model's own pooling modules on channels_last input, as it runs them now;
- nchw: the same call on a contiguous (NCHW) copy, the two layout conversions timed too;
- separable: a 3x1 then a 1x3 max pool (the max over a rectangle is the max of
  row maxima), each a cheaper kernel.

Forward outputs must be equal (checked). Gradients agree wherever the window's
maximum is unique; where it is tied the forms may route the gradient to
different tied elements. Every pool input in the model comes out of a ReLU
(the first module's pool sees the image, which needs no gradient; it is timed
with one anyway, 3 of some 4,000 pooled channels), so ties
among zeros do not matter: ReLU's gradient at 0 is 0. Ties among positive
values (bf16 rounding) do: the share of positive input elements whose gradient
differs from `current` is printed. TensorFlow's MaxPoolGrad, like PyTorch's
kernel, sends the gradient to the first maximum in scan order, so a form that
differs there changes the reference arithmetic (if slightly), which needs a word
in DESIGN.md before adoption.

    .venv/bin/python benchmarks/pooling.py                       # CPU, batch 16
    python benchmarks/pooling.py --batch-size 250                # a GPU (bf16)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import device_line, resolve_device

from bnsweep.config import make_config
from bnsweep.model import TFSamePool, build_model


def pool_calls(width: float) -> list[tuple[tuple[int, ...], torch.nn.Module]]:
    """(input shape per image, the pooling module) of each 3x3 max pool the Inception
    runs, read from the model itself with forward hooks."""
    model = build_model(make_config({"bn": True, "width": width}))
    calls = []

    def hook(mod, inputs, _out):
        if isinstance(mod, TFSamePool) or mod.kernel_size == 3:
            calls.append((tuple(inputs[0].shape[1:]), mod))

    handles = [mod.register_forward_hook(hook) for mod in model.modules()
               if isinstance(mod, (torch.nn.MaxPool2d, TFSamePool))]
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for handle in handles:  # the timed calls below run the same modules
        handle.remove()
    return calls


def current(x, pool):
    return pool(x)  # the model's own module


def nchw(x, pool):
    return pool(x.contiguous()).contiguous(memory_format=torch.channels_last)


def separable(x, pool):
    if isinstance(pool, TFSamePool):
        (top, bottom), (left, right) = pool._pads(x.shape[-2]), pool._pads(x.shape[-1])
    else:
        top = bottom = left = right = pool.padding
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(F.max_pool2d(x, (3, 1), (pool.stride, 1)), (1, 3), (1, pool.stride))


FORMS = {"current": current, "nchw": nchw, "separable": separable}


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
    outs = [current(x, pool) for x, (_, pool) in zip(xs, calls)]
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
        times[name] = time_form(fn, xs, grads, calls, device, repeats)
        print(f"  {name:<10} {times[name]:9.2f} ms per step   gradient differs from current at "
              f"{100 * differs / total:.4f} % of positive inputs", flush=True)
    print("ratios (current / form: > 1 means the form is faster)")
    for name in ("nchw", "separable"):
        print(f"  current / {name:<10} {times['current'] / times[name]:.2f}")


if __name__ == "__main__":
    main()
