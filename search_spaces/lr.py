"""Learning rate: does Batch Normalization let the network train at both higher
and smaller learning rates (the study's claim 3), and does it raise validation
accuracy (claim 1)?

The study's lr figure: best validation accuracy per learning rate, BN and no BN
side by side; runs that diverge stay in the data at the accuracy they reached.

Scientific: bn. Varied: lr over seven decades. Nuisance: none (a full grid,
one seed; add seeds to SEEDS for error bars). Fixed: the reference experiment
(docs/design.md §2): Inception, 30 epochs, batch 250, lr x0.1 every 10 epochs,
Keras augmentation. 14 trials; at each lr the BN and no-BN trials share the
seed, so they see the same batches and augmented images.
"""

SEARCH = "grid"
SPACE = {
    "lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0],
    "bn": [True, False],  # last, so the two arms of a pair run next to each other
}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and the
# original's published numbers beside ours.
CLAIMS = [3, 1]
FIGURES = ["lr", "curves"]
ORIGINAL = "lr"

# Seconds per trial, for tests: a 1/16-width model on 500 images for 1 epoch.
SMOKE = {"width": 0.0625, "n_train": 500, "n_val": 500, "epochs": 1, "batch_size": 50}
