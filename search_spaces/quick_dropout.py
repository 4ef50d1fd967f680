"""Quick dropout: does BN regularise the way dropout does (the study's claim 5)?
search_spaces/dropout.py shrunk until it fits two CPU cores for a few minutes,
keeping what the comparison needs: a network that overfits.

The study's three arms: no BN, no BN with 50% dropout, BN (no dropout). What to
read: each arm's last-epoch train - validation accuracy gap, and its validation
loss curve. Scientific: bn and dropout. Fixed: the rest, as below. One seed by
default; `--seeds 0,1` (or SEEDS = [0, 1]) repeats every arm, for twice the time.

The scale, reasoned from images, steps and epochs:

- Overfitting is the point: the no-BN network must memorise its training images
  (training accuracy near 1) while validation stalls, or there is no gap for
  dropout or BN to narrow. 1,000 training images (100 per class): the study's
  dropout arms all ended near 0.30-0.35 validation accuracy with training accuracy
  near 1; our no-BN probes below reached 0.40 on these 1,000 images.
- The simple model at half width (0.20 M parameters instead of dropout.py's
  0.81 M): still 200 parameters per training image, and 5x cheaper per image on a
  CPU (one thread, 2026-12-06: 1.3-2.0 ms per training image against 7-11 at full
  width). Dropout acts on the inputs of both dense layers, as in dropout.py.
- Batch 50: 20 steps per epoch. Memorising takes steps, and on a CPU an image
  costs about the same at batch 50 as at 250 while every epoch also pays a
  validation pass, so more steps per epoch buys memorisation cheapest. 100 epochs
  are 2,000 steps (BN's running statistics settled long before: 0.99^2000 ~ 0).
- lr 0.05 for 49 epochs, then x0.1 (lr_drop_period 50) for the rest (and x0.01
  for the last): the slow phase is where the network memorises. Probes of the
  no-BN arm (n_val 500): at the reference lr 0.01, dropped at epoch 20, training
  accuracy was 0.59 at epoch 60 (validation 0.41), no memorisation; at lr 0.05,
  dropped at epoch 60, it was 0.48 at epoch 59 and 0.83 at epoch 75, still rising,
  while validation loss rose from 1.83 (epoch 30) to 3.10: overfitting. Here the
  drop comes 10 epochs sooner, leaving 51 slow epochs rather than the probe's 16;
  a probe of this schedule had 0.52 at epoch 50 and 0.79 at epoch 60, where its
  3-minute limit stopped it. The same lr for all three arms.
- Augmentation stays on (the reference's Keras generator), as in dropout.py; the
  training accuracy is that of the augmented batches, in training mode (dropout
  active in its arm).
- 3,000 validation images (class balanced): a standard error of about 0.9 points
  at 35% accuracy, so gaps a few points apart can be told apart. Validation runs
  every epoch and costs about as much as training here: 0.6 ms per image at 250
  images per forward pass (eval_batch_size; no effect on results), 1.7x faster on
  this CPU than 1,000 at a time, measured.
- Estimated wall time on 2 idle cores: 160-200 s of training and 180 s of
  validation per trial in fp32; three trials at one per core take two rounds (the
  two no-BN arms side by side, then BN): about 12-13 minutes in fp32, and about 4
  on a CPU with native bf16 (`bnsweep plan quick_dropout`: 4 minutes, 2026-12-07).

Measured (full run, 2026-12-07, this project's 2-vCPU build machine, idle, JPEG-derived
CIFAR-10, one seed, bnsweep's CPU path: bf16 autocast and channels-last, since this CPU
computes bf16 natively): 4.1 minutes wall (248 s; the no-BN pair side by side in 99 and
101 s, then BN alone in 123 s). Last epoch, training accuracy / validation accuracy
(gap): no BN 0.776 / 0.334 (0.44), its validation loss up from 1.88 (its least) to
3.84: it memorised; no BN + 50% dropout 0.298 / 0.306 (-0.01): dropout kept it from
memorising; BN 0.999 / 0.467 (0.53), validation loss up from 1.98 to 2.51. So at this
scale BN raised validation accuracy by 13 points but did not narrow the
train-validation gap the way dropout did: claim 5, read as "BN regularises like
dropout", is not shown here. The original's three arms all ended near 0.30-0.35 with
training accuracy near 1; ours land in that band without BN, and above it with BN.
In fp32 (2026-12-06, 16.6 minutes on shared cores) the shape was the same: no BN 0.922
/ 0.369, dropout 0.396 / 0.374, BN 0.999 / 0.481; bf16 memorises less without BN (the
numerics check in docs/benchmarks.md found bf16 costs the no-BN net about 2 points).
`--amp none` gives the fp32 run. One seed: `--seeds 0,1` for a spread.
"""

SEARCH = "grid"
SPACE = [  # explicit points: the study compares three arms, not the 2x2 grid
    {"bn": False, "dropout": 0.0},
    {"bn": False, "dropout": 0.5},
    {"bn": True, "dropout": 0.0},
]
FIXED = {"model": "simple", "width": 0.5, "n_train": 1000, "n_val": 3000, "batch_size": 50, "epochs": 100,
         "lr": 0.05, "lr_drop_period": 50, "eval_batch_size": 250}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers beside ours.
CLAIMS = [5]
FIGURES = ["dropout"]
ORIGINAL = "dropout"

# Seconds per trial, for tests: 200 images, 2 epochs.
SMOKE = {"n_train": 200, "n_val": 200, "epochs": 2}
