"""Batch size: does Batch Normalization work best with medium batch sizes,
50-100 (the study's claim 4), and how much longer is each step with BN (claim 2)?

The study's batch-size figure: best validation accuracy per batch size for both
arms, with the total execution time and the time per step beside it. Those
times are recorded per epoch (epoch_time_s, step_time_ms, images_per_s): compare
them between trials that ran on the same kind of device, each with a device of
its own, or the figures mix contention into the cost of BN. Where there are GPUs,
`bnsweep run` gives each trial one unless told otherwise: do not pack this study
with --gpus-per-trial below 1. On CPUs, each trial has its own core(s)
(--cpus-per-trial).

Scientific: bn. Varied: batch_size. Fixed: the reference experiment (lr 0.01,
30 epochs). Note the cost: batch 5 is 10,000 optimizer steps per epoch.
"""

SEARCH = "grid"
SPACE = {
    "batch_size": [5, 10, 50, 100, 250],
    "bn": [True, False],
}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers beside ours.
CLAIMS = [4, 2]
FIGURES = ["batch_size", "curves"]
ORIGINAL = "batch_size"

SMOKE = {"width": 0.0625, "n_train": 250, "n_val": 200, "epochs": 1}
