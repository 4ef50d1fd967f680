"""Quick batch size: does BN work best at medium batch sizes, 50-100 (the study's
claim 4), and how much longer is each step with BN at each batch size (claim 2)?
search_spaces/batch_size.py shrunk until it fits two CPU cores for about eight
minutes, keeping what the comparison needs.

Scientific: bn. Varied: batch_size. Fixed: the rest, as below. One seed by
default; `--seeds 0,1` (or SEEDS = [0, 1]) repeats every point, for twice the time.

The scale, reasoned from steps, images and epochs:

- Equal epochs for every batch size, as the study: each trial trains on the same
  images the same number of times, so batch 5 takes 20x the steps of batch 100.
- BN's running statistics (Keras momentum 0.99) keep 0.99^n of their initial
  values after n steps, so the largest batch needs >= 300 steps (0.99^300 = 5%)
  before its validations can be trusted (docs/design.md §2). Steps at the largest batch
  B are (images per trial) / B: 300 x B training images per trial, whatever the
  split into images and epochs.
- Cost on this machine (2-vCPU AMD EPYC, no GPU; one thread per trial, as a
  1-CPU trial runs; 2026-12-06, fp32): the 1/16-width Inception trains at 10.2 /
  7.4 / 7.0 / 6.4 ms per image with BN at batch 5 / 50 / 100 / 250, and 9.2 / 5.2
  / 5.8 / 5.1 ms without; validation 3.8 ms per image. Width 1/32 saves only a
  quarter (max pooling, not the convolutions, takes 40% of a CPU step), so the
  quick study's network stays. On a CPU that computes bf16 natively, bnsweep's
  CPU path (bf16 autocast, channels-last: docs/benchmarks.md) halves these: a
  full run of batch 5, 50 and 100 took 5.8 minutes on 2 idle cores (2026-12-07;
  BN's trials 214 / 80 / 71 s, no BN's 142 / 59 / 56 s).
- Hence a subset of the study's batch sizes: 5, 10, 50 and 100. Keeping 250 would
  take 300 x 250 = 75,000 images per trial, for every batch size (equal epochs):
  2.5x the images of every trial here, about 20 minutes even on the bf16 path.
  With 100 the largest, 30,000 images per trial (6,000 images x 5 epochs) give
  batch 100 its 300 steps, batch 50 600, batch 10 3,000 and batch 5 6,000. Batch
  10, left out in fp32 for time, is back now that the bf16 path leaves room for
  it (its pair: about 2 minutes of the 8); 5 stays, the study's extreme. So claim
  4 is read here against smaller batches only: nothing above the 50-100 band.
- lr 0.1, dropped x0.1 from the 4th epoch (lr_drop_period 4), at every batch size:
  the study held the lr fixed across batch sizes; 0.1 is quick.py's, which trains
  this network in a few hundred steps (the reference's 0.01 is for 6,000).
- 2,000 validation images (class balanced): a standard error of about 1.1 points
  at 40% accuracy, enough to read differences of a few points between batch sizes.
  Validated 250 images per forward pass (eval_batch_size; no effect on results):
  on this CPU, 1.2-2x faster than 1,000 at a time (cache), measured.
- Estimated wall time on 2 idle cores, one trial per core in grid order (BN and
  no BN of a batch size next to each other): the measured trial times above, batch
  10's between batch 5's and 50's, scheduled on two cores, plus Ray's start-up:
  about 7.5 minutes (in fp32: about 17). Each trial has a core of its own, so the
  pairs' times per step (step_time_ms) and total times (time_total_s) give BN's
  cost per step at every batch size (claim 2).

Measured (full run, 2026-12-07, this project's 2-vCPU build machine, idle, JPEG-derived
CIFAR-10, one seed, bnsweep's CPU path: bf16 autocast and channels-last, since this CPU
computes bf16 natively): 7.9 minutes wall (478 s; `bnsweep plan` said 8). Best
validation accuracy, BN: 0.419 / 0.481 / 0.470 / 0.431 at batch 5 / 10 / 50 / 100; no
BN: 0.100 (chance) / 0.123 / 0.143 / 0.233. So BN is ahead at every batch size (claim
1), and its best is in the middle, at 10 and 50 (0.481 and 0.470, one standard error
apart), worse at both ends: claim 4's shape, its band reaching lower here than the
study's 50-100. Time per step BN / no BN: 1.48 at batch 5 and 10, 1.31 at 50, 1.32 at
100 (claim 2). Each trial's total time, BN / no BN: 220 / 153 s at batch 5, 149 / 105
at 10, 83 / 62 at 50, 75 / 57 at 100. A second run of batch 5, 50 and 100 alone
(5.8 minutes) gave the same accuracies to the digit: a fixed seed on one CPU repeats.
In fp32 (2026-12-06, batch 5, 50 and 100, 20.6 minutes on shared cores): BN 0.435 /
0.481 / 0.433, no BN 0.100 / 0.238 / 0.174; no BN learns less in bf16 at this scale
(docs/benchmarks.md), BN the same. `--amp none` gives the fp32 run. One seed: read it
as suggestive; `--seeds 0,1` for a spread.
"""

SEARCH = "grid"
SPACE = {
    "batch_size": [5, 10, 50, 100],
    "bn": [True, False],  # last, so the two arms of a pair run side by side
}
FIXED = {"width": 0.0625, "n_train": 6000, "n_val": 2000, "epochs": 5, "lr": 0.1, "lr_drop_period": 4,
         "eval_batch_size": 250}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers beside ours.
CLAIMS = [4, 2]
FIGURES = ["batch_size", "curves"]
ORIGINAL = "batch_size"

# Seconds per trial, for tests: 200 images, 1 epoch (40 steps at batch 5).
SMOKE = {"n_train": 200, "n_val": 200, "epochs": 1}
