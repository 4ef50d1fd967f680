"""Training throughput of bnsweep's step, BN and no-BN, against a naive input pipeline (issue 2).

What runs:
- bnsweep BN / no-BN: bnsweep.train.train itself (uint8 data resident on the
  device, batches as index slices of a permutation, batched Keras augmentation
  from a torch.Generator, SGD momentum 0.9; on CUDA bf16 autocast,
  channels_last and the step replayed from a CUDA graph). n_train = steps x batch size; the run has --warmup-epochs
  untimed epochs, then one timed epoch, whose images_per_s and step_time_ms
  (train()'s own figures, validation excluded) are printed.
- naive baseline (BN arm): the same model, optimizer and step, run eagerly as a
  plain PyTorch loop does (autocast and channels_last on CUDA too), fed by a
  torch DataLoader (--workers processes) over a torchvision-CIFAR10-style Dataset
  of the same uint8 images (PIL image per item) with per-image PIL transforms:
  RandomHorizontalFlip + RandomAffine(degrees=0, shear=0.2, scale=(0.8, 1.2),
  bilinear) + ToTensor. --baseline-warmup steps (worker start-up included) are
  not timed. Its workers may prefetch up to 2 x workers batches during warm-up,
  a head start that favours the baseline over a short --steps.

How to read it: ratios > 1 mean bnsweep is faster than the baseline. The
BN/no-BN time-per-step ratio is the study's claim (2), "BN lengthens time per
step". GFLOP/s counts forward FLOPs of the model as built (torch flop counter,
one image) x 3 for forward + backward; the reference at width 1 is about 2.8
GFLOP forward per image (docs/design.md §5). Figures come from one run on a machine
that may be busy: compare ratios measured in the same run, on the same device.

    .venv/bin/python benchmarks/throughput.py                      # CPU-sized, est. 2-3 min on 2 idle cores
    .venv/bin/python benchmarks/throughput.py --width 1.0 --batch-size 250 --steps 50   # a GPU
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from _common import device_line, resolve_device, run_main

from bnsweep import data as data_mod
from bnsweep.config import make_config
from bnsweep.model import build_model
from bnsweep.train import train

REFERENCE_GFLOP_FWD = 2.8  # per 32x32 image at width 1 (docs/design.md §5)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25, help="channel multiplier (reference 1.0)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=15, help="timed optimizer steps per measurement")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs of --steps before bnsweep's timed one")
    p.add_argument("--baseline-warmup", type=int, default=3, help="untimed steps of the baseline")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the baseline")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py/ (default $BNSWEEP_DATA_DIR)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    return p.parse_args()


def bnsweep_run(cfg: dict) -> dict:
    """train() for warm-up + 1 epochs; the last epoch's own throughput figures."""
    reports: list[dict] = []
    train(cfg, report=lambda metrics, state: reports.append(metrics))
    return reports[-1]


class PilCifar(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10's __getitem__ over given arrays: HWC uint8 -> PIL -> transform."""

    def __init__(self, x_nchw: torch.Tensor, y: torch.Tensor, transform):
        self.x = np.ascontiguousarray(x_nchw.permute(0, 2, 3, 1).numpy())
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def baseline_run(cfg: dict, full, steps: int, warmup: int, workers: int) -> dict:
    from torchvision import transforms as T

    device = torch.device(cfg["device"])
    on_cuda = device.type == "cuda"
    n = (warmup + steps) * cfg["batch_size"]
    transform = T.Compose([
        T.RandomHorizontalFlip(),
        T.RandomAffine(degrees=0, shear=cfg["shear_range"], scale=(1 - cfg["zoom_range"], 1 + cfg["zoom_range"]),
                       interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),
    ])
    loader = torch.utils.data.DataLoader(PilCifar(full.train_x[:n], full.train_y[:n], transform),
                                         batch_size=cfg["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=on_cuda)
    torch.manual_seed(cfg["seed"])
    fmt = torch.channels_last if on_cuda and cfg["channels_last"] else torch.contiguous_format
    model = build_model(cfg).to(device).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda and cfg["amp"])
    t0 = None
    for i, (xb, yb) in enumerate(loader):
        if i == warmup:
            if on_cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        xb = xb.to(device, non_blocking=True).contiguous(memory_format=fmt)
        yb = yb.to(device, non_blocking=True)
        with autocast:
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()  # wait for the device, as train() does once per epoch
    elapsed = time.perf_counter() - t0
    return {"images_per_s": steps * cfg["batch_size"] / elapsed, "step_time_ms": 1000 * elapsed / steps}


def forward_gflop(cfg: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model({**cfg}).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 32, 32))
    return counter.get_total_flops() / 1e9


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", category=data_mod.UnverifiedDataWarning)  # identity is printed below
    n_train = args.steps * args.batch_size
    base = make_config({"width": args.width, "batch_size": args.batch_size, "n_train": n_train,
                        "n_val": 100, "epochs": args.warmup_epochs + 1, "device": device,
                        "data_dir": args.data_dir})
    full = data_mod.load_dataset(base)

    print("throughput: bnsweep's training step vs a naive DataLoader + PIL pipeline")
    print(f"device: {device_line(device)}")
    print(f"settings: width {args.width}, batch {args.batch_size}, {args.steps} timed steps "
          f"({n_train} images), bnsweep warm-up {args.warmup_epochs} epoch(s) of {args.steps} steps, "
          f"baseline warm-up {args.baseline_warmup} steps with {args.workers} workers; "
          f"amp {base['amp'] and device.startswith('cuda')}, channels_last "
          f"{base['channels_last'] and device.startswith('cuda')}, cuda_graphs "
          f"{base['cuda_graphs'] and device.startswith('cuda')}; data: {full.identity['dataset_source']} "
          f"({full.identity['dataset_fingerprint']})", flush=True)

    res = {}
    for name, bn in (("bnsweep BN", True), ("bnsweep no-BN", False)):
        res[name] = bnsweep_run({**base, "bn": bn})
        print(f"  {name:<15} {res[name]['images_per_s']:9.1f} img/s  {res[name]['step_time_ms']:9.1f} ms/step",
              flush=True)
    if not args.no_baseline:
        res["baseline BN"] = baseline_run({**base, "bn": True}, full, args.steps, args.baseline_warmup, args.workers)
        print(f"  {'baseline BN':<15} {res['baseline BN']['images_per_s']:9.1f} img/s  "
              f"{res['baseline BN']['step_time_ms']:9.1f} ms/step", flush=True)

    bn, nobn = res["bnsweep BN"], res["bnsweep no-BN"]
    print("ratios")
    if "baseline BN" in res:
        naive = res["baseline BN"]["images_per_s"]
        print(f"  bnsweep BN / baseline BN (images/s):      {bn['images_per_s'] / naive:.2f}")
        print(f"  bnsweep no-BN / baseline BN (images/s):   {nobn['images_per_s'] / naive:.2f}")
    print(f"  BN / no-BN time per step:                 {bn['step_time_ms'] / nobn['step_time_ms']:.2f}")

    gflop = {bn_: forward_gflop({**base, "device": "cpu", "bn": bn_}) for bn_ in (True, False)}
    print(f"compute: forward {gflop[True]:.3f} GFLOP/img at width {args.width} (counted; "
          f"reference {REFERENCE_GFLOP_FWD} at width 1, x width^2 = {REFERENCE_GFLOP_FWD * args.width ** 2:.3f})")
    for name, bn_ in (("bnsweep BN", True), ("bnsweep no-BN", False), ("baseline BN", True)):
        if name in res:
            print(f"  {name:<15} {3 * gflop[bn_] * res[name]['images_per_s']:9.1f} GFLOP/s achieved "
                  f"(3 x forward x images/s)")


if __name__ == "__main__":
    run_main(main)
