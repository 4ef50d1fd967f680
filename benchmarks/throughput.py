"""Training throughput of bnsweep: BN and no-BN, its execution against the CPU's old one and a naive pipeline.

What runs:
- bnsweep BN / no-BN: bnsweep.train.train itself, as `bnsweep train` runs it (uint8 data
  resident on the device, batches as index slices of a permutation, batched Keras
  augmentation from a torch.Generator, SGD momentum 0.9, validation after the epoch), with
  the execution it chooses (train.choose_execution: channels_last; bf16 autocast on CUDA and
  on CPUs that compute bf16 natively, fp32 elsewhere; on CUDA each step replayed from a CUDA
  graph). n_train = steps x batch size, n_val half of it (the quick study's proportion); each
  run has --warmup-epochs untimed epochs, then one timed epoch, whose images_per_s and
  step_time_ms (train()'s own figures: the training pass, augmentation included) and
  epoch_time_s (validation included) are printed.
- old CPU path (on a CPU): the same runs in fp32 and NCHW (amp none, channels_last false),
  bnsweep's CPU execution before issue 20, at every --width, interleaved with the new path
  in --rounds rounds (medians), so that a busy machine slows both alike.
- naive baseline (BN arm, first width): the same model, optimizer and step with bnsweep's
  execution, run eagerly as a plain PyTorch loop does, fed by a torch DataLoader (--workers
  processes) over a torchvision-CIFAR10-style Dataset of the same uint8 images (PIL image
  per item) with per-image PIL transforms: RandomHorizontalFlip + RandomAffine(degrees=0,
  shear=0.2, scale=(0.8, 1.2), bilinear) + ToTensor. --baseline-warmup steps (worker
  start-up included) are not timed. Its workers may prefetch up to 2 x workers batches
  during warm-up, a head start that favours the baseline over a short --steps.

How to read it: ratios > 1 mean the first is faster. The BN/no-BN time-per-step ratio is
the study's claim (2), "BN lengthens time per step". GFLOP/s counts forward FLOPs of the
model as built (torch flop counter, one image) x 3 for forward + backward; the reference
at width 1 is about 2.8 GFLOP forward per image (docs/design.md §5). Figures come from one
run on a machine that may be busy: compare ratios measured in the same run, on the same device.

    .venv/bin/python benchmarks/throughput.py --threads 1 --no-baseline   # one trial's core; ~6 min, 2 idle cores
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
from bnsweep.train import execution, train

REFERENCE_GFLOP_FWD = 2.8  # per 32x32 image at width 1 (docs/design.md §5)


def widths(text: str) -> list[float]:
    try:
        values = [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"widths must be > 0, got {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=widths, default=[0.0625, 0.25],
                   help="channel multipliers, comma-separated (reference 1.0; default 1/16, the quick studies', 1/4)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=15, help="timed optimizer steps per measurement")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs of --steps before bnsweep's timed one")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the new and old CPU paths (medians)")
    p.add_argument("--baseline-warmup", type=int, default=3, help="untimed steps of the baseline")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes of the baseline")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's, as `bnsweep train`; a sweep's trial: one per CPU)")
    p.add_argument("--data-dir", default=None, help="folder with cifar-10-batches-py/ (default $BNSWEEP_DATA_DIR)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    p.add_argument("--no-old-path", action="store_true", help="on a CPU, skip the old path (fp32, NCHW)")
    return p.parse_args()


def bnsweep_run(cfg: dict) -> dict:
    """train() for warm-up + 1 epochs; the last epoch's own throughput figures, and the same
    from this process's CPU time (cpu_images_per_s, cpu_epoch_s): with one thread, what a
    machine shared with other work does not stretch, as it stretches wall time."""
    reports: list[dict] = []
    marks: list[float] = []  # process CPU seconds at each epoch's end, and at its training pass's end

    def report(metrics, state):
        reports.append(metrics)
        marks.append(time.process_time())

    def on_step(step, steps, loss):
        if step == steps:
            marks.append(time.process_time())

    start = time.process_time()
    train(cfg, report=report, on_step=on_step)
    before = marks[-3] if len(marks) >= 3 else start  # the end of the epoch before the timed one
    return {**reports[-1], "cpu_images_per_s": cfg["n_train"] / (marks[-2] - before),
            "cpu_epoch_s": marks[-1] - before}


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
    run = execution(cfg, device)  # bnsweep's own choice: the pipelines differ, not the step
    fmt = run.memory_format
    model = build_model(cfg).to(device).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    autocast = run.autocast_context(device)
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


# bnsweep's CPU execution before issue 20: fp32 and NCHW, whatever the config asked.
OLD_CPU_PATH = {"amp": "none", "channels_last": False}


def describe(cfg: dict) -> str:
    run = execution(cfg, torch.device(cfg["device"]))
    layout = "channels_last" if run.memory_format == torch.channels_last else "NCHW"
    graphs = ", cuda_graphs" if cfg["device"].startswith("cuda") and cfg["cuda_graphs"] else ""
    return f"{'bf16 autocast' if run.autocast else 'fp32'}, {layout}{graphs}"


FIGURES = ("images_per_s", "step_time_ms", "epoch_time_s", "cpu_images_per_s", "cpu_epoch_s")


def median_run(runs: list[dict]) -> dict:
    return {key: float(np.median([r[key] for r in runs])) for key in FIGURES if key in runs[0]}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", category=data_mod.UnverifiedDataWarning)  # identity is printed below
    n_train = args.steps * args.batch_size
    base = make_config({"batch_size": args.batch_size, "n_train": n_train, "n_val": max(1, n_train // 2),
                        "epochs": args.warmup_epochs + 1, "device": device, "data_dir": args.data_dir})
    full = data_mod.load_dataset(base)
    paths = {"new": {}}
    if device == "cpu" and not args.no_old_path:
        paths["old"] = OLD_CPU_PATH

    print("throughput: bnsweep's training epoch, its CPU path before issue 20, and a naive DataLoader + PIL "
          "pipeline")
    print(f"device: {device_line(device)}")
    print(f"settings: widths {', '.join(f'{w:g}' for w in args.width)}, batch {args.batch_size}, {args.steps} timed "
          f"steps ({n_train} images; {base['n_val']} validated), warm-up {args.warmup_epochs} epoch(s), "
          f"{args.rounds} round(s); bnsweep: {describe(base)}"
          + (f"; old path: {describe({**base, **OLD_CPU_PATH})}" if "old" in paths else "")
          + f"; data: {full.identity['dataset_source']} ({full.identity['dataset_fingerprint']})", flush=True)

    runs: dict[tuple, list[dict]] = {}
    for _ in range(args.rounds):  # interleaved: load on a shared machine falls on every variant alike
        for width in args.width:
            for path, overrides in paths.items():
                for arm, bn in (("BN", True), ("no-BN", False)):
                    m = bnsweep_run({**base, **overrides, "width": width, "bn": bn})
                    runs.setdefault((width, path, arm), []).append(m)
                    print(f"  width {width:<7g} {path} {arm:<6} {m['images_per_s']:8.1f} img/s  "
                          f"{m['step_time_ms']:8.1f} ms/step  epoch {m['epoch_time_s']:6.1f} s;  CPU time: "
                          f"{m['cpu_images_per_s']:8.1f} img/s, epoch {m['cpu_epoch_s']:6.1f} s", flush=True)
    res = {key: median_run(r) for key, r in runs.items()}
    if not args.no_baseline:
        width = args.width[0]
        res[(width, "baseline", "BN")] = baseline_run({**base, "width": width, "bn": True}, full, args.steps,
                                                      args.baseline_warmup, args.workers)
        print(f"  width {width:<7g} naive baseline BN {res[(width, 'baseline', 'BN')]['images_per_s']:8.1f} img/s  "
              f"{res[(width, 'baseline', 'BN')]['step_time_ms']:8.1f} ms/step", flush=True)

    print("ratios" + (f" (medians of {args.rounds} rounds)" if args.rounds > 1 else ""))
    for width in args.width:
        for path in paths:
            bn, nobn = res[(width, path, "BN")], res[(width, path, "no-BN")]
            print(f"  width {width:g}, {path} path: BN / no-BN time per step "
                  f"{bn['step_time_ms'] / nobn['step_time_ms']:.2f}")
        if "old" in paths:
            for arm in ("BN", "no-BN"):
                new, old = res[(width, "new", arm)], res[(width, "old", arm)]
                print(f"  width {width:g}, {arm:<5} new / old path: training images/s "
                      f"{new['images_per_s'] / old['images_per_s']:.2f}, whole epoch (validation included) "
                      f"{old['epoch_time_s'] / new['epoch_time_s']:.2f}; by CPU time "
                      f"{new['cpu_images_per_s'] / old['cpu_images_per_s']:.2f} and "
                      f"{old['cpu_epoch_s'] / new['cpu_epoch_s']:.2f}")
        if (width, "baseline", "BN") in res:
            naive = res[(width, "baseline", "BN")]["images_per_s"]
            for arm in ("BN", "no-BN"):
                print(f"  width {width:g}, bnsweep {arm} / baseline BN (images/s): "
                      f"{res[(width, 'new', arm)]['images_per_s'] / naive:.2f}")

    print("compute: forward GFLOP per image counted at each width (reference "
          f"{REFERENCE_GFLOP_FWD} at width 1, x width^2)")
    for width in args.width:
        gflop = {bn_: forward_gflop({**base, "width": width, "device": "cpu", "bn": bn_}) for bn_ in (True, False)}
        for (w, path, arm), r in res.items():
            if w == width:
                print(f"  width {width:g} ({gflop[True]:.3f} GFLOP/img) {path:<8} {arm:<5} "
                      f"{3 * gflop[arm != 'no-BN'] * r['images_per_s']:8.1f} GFLOP/s achieved (3 x forward x images/s)")


if __name__ == "__main__":
    run_main(main)
