"""Quick: the BN / no-BN contrast in a few minutes on a laptop's CPU.

The README's first command runs this. It is the reference experiment shrunk
until it fits two CPU cores for about a minute and a half, keeping what the
comparison needs:

- the study's Inception at 1/16 width (24 k parameters instead of 5.8 M);
- 4,000 training images (class balanced) and 2,000 validation images;
- 5 epochs at batch 50: 400 optimizer steps, so BN's running statistics (Keras
  momentum 0.99) have forgotten their initial values (0.99^400 < 2%) before
  the last validations. Fewer steps would evaluate the BN arm with stale
  statistics and show a false contrast (docs/design.md §2);
- lr 0.1, dropped x0.1 from the 4th epoch on (lr_drop_period 4).

Measured on 2 idle CPU cores (one trial per core, the JPEG-derived CIFAR-10
copy): 1 min 35 s for the whole `bnsweep run` on a CPU that computes bf16 natively
(AMD EPYC with AVX512_BF16, so amp=auto trains in bf16 autocast + channels-last;
trials 69 s BN, 56 s no BN), best validation accuracy BN 0.42, no BN 0.17
(2026-12-07). In fp32 (the path before issue 20, or `--amp none`) it took 2 min 22 s
and gave BN 0.44, no BN 0.21 (2026-11-26); over 3 seeds bf16 costs the no-BN arm
about 2 points and BN nothing (docs/benchmarks.md). Scientific: bn. Fixed: the above.
"""

SEARCH = "grid"
SPACE = {
    "lr": [0.1],
    "bn": [True, False],
}
FIXED = {"width": 0.0625, "n_train": 4000, "n_val": 2000, "epochs": 5, "batch_size": 50, "lr_drop_period": 4}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers for its one counterpart there (lr 0.1: BN 92 %, no BN 10 %), beside ours.
CLAIMS = [1]
FIGURES = ["lr", "curves"]
ORIGINAL = "lr"

SMOKE = {"n_train": 200, "n_val": 200, "epochs": 1}
