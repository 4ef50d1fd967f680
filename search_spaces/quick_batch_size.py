"""Quick batch size: does BN work best at medium batch sizes, 50-100 (the study's
claim 4), and how much longer is each step with BN at each batch size (claim 2)?
search_spaces/batch_size.py shrunk until it fits two CPU cores for about a quarter
of an hour, keeping what the comparison needs.

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
  1-CPU trial runs; 2026-12-06): the 1/16-width Inception trains at 10.2 / 7.4 /
  7.0 / 6.4 ms per image with BN at batch 5 / 50 / 100 / 250, and 9.2 / 5.2 / 5.8
  / 5.1 ms without; validation 3.8 ms per image. Width 1/32 saves only a quarter
  (max pooling, not the convolutions, takes 40% of a CPU step), so the quick
  study's network stays.
- Hence a subset of the study's batch sizes: 5, 50 and 100. Keeping 250 would take
  300 x 250 = 75,000 images per trial: ten trials of it are about 45 minutes here.
  With 100 the largest, 30,000 images per trial (6,000 images x 5 epochs) give
  batch 100 its 300 steps, batch 50 600 and batch 5 6,000. Batch 10 is left out
  for time (it would add about 5 minutes); 5 stays, the study's extreme. So claim
  4 is read here against smaller batches only: nothing above the 50-100 band.
- lr 0.1, dropped x0.1 from the 4th epoch (lr_drop_period 4), at every batch size:
  the study held the lr fixed across batch sizes; 0.1 is quick.py's, which trains
  this network in a few hundred steps (the reference's 0.01 is for 6,000).
- 2,000 validation images (class balanced): a standard error of about 1.1 points
  at 40% accuracy, enough to read differences of a few points between batch sizes.
  Validated 250 images per forward pass (eval_batch_size; no effect on results):
  on this CPU, 1.2-2x faster than 1,000 at a time (cache), measured.
- Estimated wall time on 2 idle cores, one trial per core, the BN and no-BN trials
  of a batch size side by side (grid order): 30,000 images x the costs above, plus
  5 x 2,000 validations at ~3.5 ms and Ray's start-up, about 14-15 minutes (the
  batch-5 pair ~6 min, the others ~4 each). Each trial of a pair has a core of its
  own, so the pair's times per step (step_time_ms) and total times (time_total_s)
  give BN's cost per step at every batch size (claim 2).

Measured (full run, 2026-12-06, this project's 2-vCPU build machine, JPEG-derived
CIFAR-10, one seed; the machine was shared with other work for part of the run):
20.6 minutes wall (1,236 s), longer than the 14-15 estimated. Best validation
accuracy, BN: 0.435 / 0.481 / 0.433 at batch 5 / 50 / 100; no BN: 0.100 (chance) /
0.238 / 0.174. So BN is ahead at every batch size (claim 1), and its best is at the
medium batch, 50 (claim 4's shape, against smaller and larger alike, though 0.435 vs
0.433 at the ends is within one standard error). Time per step BN / no BN: 1.46 at
batch 5, 1.38 at batch 100 (claim 2); at batch 50 the BN trial shared its core with
other work (69 images/s against 146 at batch 100), so its 2.5 is not a measurement of
BN. One seed: read it as suggestive; `--seeds 0,1` for a spread.
"""

SEARCH = "grid"
SPACE = {
    "batch_size": [5, 50, 100],
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
