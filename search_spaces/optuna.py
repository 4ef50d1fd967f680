"""Optuna: with each arm's nuisance parameters tuned, is BN still better?

BN is the scientific axis and is never sampled together with the nuisance
parameters: each arm (BN, no BN) gets its own TPE search with the same number
of trials (NUM_SAMPLES), so neither arm wins by getting a better search.
ASHA stops poor trials early; a trial is kept at least a quarter of its epochs,
because BN's running statistics need that many steps (docs/design.md §2).

Each arm's best configuration is then trained again on CONFIRM_SEEDS seeds the
search did not use: the best of 16 single-seed trials is biased upwards (the best
of 16 noisy draws), so the arms are compared on these runs, and the search's own
best is shown beside them as the optimistic number it is.

Nuisance, tuned: lr (log scale), batch_size, dropout. Fixed: the reference
experiment otherwise.
"""

SEARCH = "optuna"
ARMS = {"bn": [True, False]}
SPACE = {
    "lr": ("loguniform", 1e-4, 1.0),
    "batch_size": ("choice", [50, 100, 250]),
    "dropout": ("uniform", 0.0, 0.5),
}
NUM_SAMPLES = 16  # per arm

# What the report shows (README, "study files"): the claims this study tests, its figures.
CLAIMS = [1]
FIGURES = ["optuna"]
METRIC = "val_acc"
SCHEDULER = "asha"
CONFIRM_SEEDS = 3  # per arm: the fewest runs a verdict rests on (docs/design.md §6)

SMOKE = {"width": 0.0625, "n_train": 300, "n_val": 200, "epochs": 2}
SMOKE_NUM_SAMPLES = 2
SMOKE_CONFIRM_SEEDS = 2  # the least that exercises a confirmation's interval (a smoke run decides nothing)
