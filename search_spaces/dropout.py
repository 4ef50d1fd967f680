"""Dropout: does Batch Normalization regularise the way dropout does (the
study's claim 5)?

Three arms, as in the study: no BN, no BN with 50% dropout, and BN (no dropout).
The study does not define the model or the data for this comparison; we chose,
so that overfitting shows within the budget:

- model "simple" (bnsweep/model.py SimpleCNN): six 3x3 convs (32-64-128 filters,
  three pooling stages) and a 256-unit dense layer; dropout, when on, acts on the
  inputs of both dense layers (Srivastava et al. 2014). About 0.8 M parameters,
  against 5.8 M for the Inception.
- 5,000 training images (class balanced, 500 per class), validated on the full
  10,000 test images: ten times fewer images than the reference, so the no-BN
  network memorises its training set and the train-validation gap opens.
- 60 epochs (1,200 steps at batch 250). The lr drops x0.1 every 20 epochs, on the
  20th and the 40th (and for the last): the reference's schedule stretched to
  twice its length, so that the later epochs are fine-tuning.

What to read: the train-validation accuracy gap and validation loss curves of
the three arms. Scientific: bn and dropout. Fixed: everything else.
"""

SEARCH = "grid"
SPACE = [  # explicit points: the study compares three arms, not the 2x2 grid
    {"bn": False, "dropout": 0.0},
    {"bn": False, "dropout": 0.5},
    {"bn": True, "dropout": 0.0},
]
FIXED = {"model": "simple", "n_train": 5000, "epochs": 60, "lr_drop_period": 20}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers beside ours.
CLAIMS = [5]
FIGURES = ["dropout"]
ORIGINAL = "dropout"

SMOKE = {"width": 0.125, "n_train": 200, "n_val": 200, "epochs": 1, "batch_size": 50}
