"""Does the CPU's fast path learn what the old path learned? (issue 20, part 2)

The quick study's trial (search_spaces/quick.py: width 1/16, 4,000 images, 5 epochs,
batch 50, lr 0.1), BN and no BN, over seeds, on each execution path:

  old   fp32, NCHW: the CPU path before issue 20 (amp none, channels_last off)
  new   the default (amp auto, channels_last): fp32 channels-last on a CPU without
        native bf16, bf16 autocast + channels-last on one with it
  bf16  bf16 autocast + channels-last forced: what `new` runs on a CPU with native bf16.
        On a CPU without it PyTorch emulates bf16 (slower, the same rounding), so its
        numerics can be checked anywhere.

Prints, per arm and path, the final and best validation accuracy per seed and their
mean and sd, and the final training loss. Accuracy, not speed: the runs may share the
machine (one thread each). Usage:

    python benchmarks/cpu_numerics.py [--seeds 0,1,2] [--paths old,new,bf16] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import cpu_model, run_main

PATHS = {"old": {"amp": "none", "channels_last": False}, "new": {"amp": "auto", "channels_last": True},
         "bf16": {"amp": "bf16", "channels_last": True}}
QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.py"


def sd(xs: list[float]) -> str:
    return f"{statistics.stdev(xs):.3f}" if len(xs) > 1 else "-"


def main() -> None:
    import torch

    from bnsweep.config import make_config
    from bnsweep.data import resolve_data_dir
    from bnsweep.space import load_study
    from bnsweep.train import native_bf16, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--paths", default="old,new,bf16")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = args.paths.split(",")
    data_dir = str(resolve_data_dir(args.data_dir))
    print(f"# {cpu_model()}; native bf16: {native_bf16(torch.device('cpu'))}; torch {torch.__version__}; 1 thread")
    print("| arm | path | seed | final val_acc | best val_acc | final train_loss | seconds |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for cfg in load_study(QUICK).grid_configs():
        arm = "bn" if cfg["bn"] else "no_bn"
        for path in paths:
            for seed in seeds:
                run = make_config({**cfg, **PATHS[path], "seed": seed, "data_dir": data_dir, "device": "cpu"})
                t0 = time.perf_counter()
                out = train(run)
                took = time.perf_counter() - t0
                rows.append((arm, path, seed, out["val_acc"], out["best_val_acc"], out["train_loss"]))
                print(f"| {arm} | {path} | {seed} | {out['val_acc']:.3f} | {out['best_val_acc']:.3f} | "
                      f"{out['train_loss']:.3f} | {took:.0f} |", flush=True)
    print("\n| arm | path | n | final val_acc mean ± sd | best val_acc mean ± sd |")
    print("|---|---|---|---|---|")
    for arm in ("bn", "no_bn"):
        for path in paths:
            final = [r[3] for r in rows if r[0] == arm and r[1] == path]
            best = [r[4] for r in rows if r[0] == arm and r[1] == path]
            print(f"| {arm} | {path} | {len(final)} | {statistics.mean(final):.3f} ± {sd(final)} | "
                  f"{statistics.mean(best):.3f} ± {sd(best)} |")


if __name__ == "__main__":
    run_main(main)
