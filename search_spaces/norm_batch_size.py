"""Normalisation and batch size: is BN's dependence on the batch size (the study's claim
4: best at medium batches, 50-100) a property of normalising over the batch? Group
Normalization (Wu & He 2018) normalises each image on its own, over groups of channels,
so its statistics do not change with the batch; on ImageNet with ResNet-50 their BN's
top-1 error rose from 23.6 % at 32 images per GPU to 34.7 % at 2, while GN's stayed at
24.1 % (their Table 2). This study asks the same of the study's Inception on CIFAR-10,
over the study's own batch sizes, with no normalisation as the floor.

Scientific: norm (the normalisation of every hidden layer: bn, the study's BN, Keras
scale=False; gn, GN with 32 groups where a layer is wide enough, fewer where it is
narrow, bnsweep/model.py gn_groups; none, the study's no-BN arm). Varied: batch_size,
the study's 5, 10, 50, 100, 250. Fixed: the reference experiment (lr 0.01, 30 epochs,
its augmentation), as search_spaces/batch_size.py: its bn and none arms are that study's
BN and no-BN arms (same configs, same arm names and pairs), GN runs beside them.

Why these choices:
- The lr is the study's 0.01 at every batch size and for every arm, as its batch-size
  study held it: the question is what the batch does to each normalisation at one
  recipe, not each arm's best recipe (an Optuna study per arm asks that).
- GN's groups: Wu & He's 32 (their best of Table 3), capped at half a layer's
  channels so no group is a single channel (instance norm, their worst). The
  Inception's narrowest layers have 16 channels at full width (8 groups of 2).
- GN has a learned scale and shift per channel, as theirs; the study's BN has a shift
  only. So GN has one more parameter per channel (7,000 of 5.8 million); BN with a
  scale (norm: bn_scale) can be added as a fourth arm to separate the two effects.
- The three arms of a batch size share their seed (a pair across norms: the same
  initial weights where the shapes agree, the same data order and augmentation).

Their curve is drawn beside ours (ORIGINAL = "group_norm"), on its own axis: images
per GPU, ImageNet, ResNet-50. A different model and dataset: compare shapes only (does
BN fall at small batches while GN holds?), never the values.

Cost: the batch-size study's ten trials plus five GN trials. GN's step costs about
1.1-1.15x BN's on a CPU (width 1/16, batch 5 and 50, measured 2026-12-07); batch 5
is 10,000 optimizer steps per epoch. search_spaces/quick_norm_batch_size.py is the
laptop version.
"""

SEARCH = "grid"
SPACE = {
    "batch_size": [5, 10, 50, 100, 250],
    "norm": ["bn", "gn", "none"],  # last, so the arms of a batch size run side by side
}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests (4: BN at medium
# batches; 2: BN's cost per step, against no normalisation; GN is shown beside them), its figures,
# and Wu & He's batch-size curve beside ours.
CLAIMS = [4, 2]
FIGURES = ["batch_size", "curves"]
ORIGINAL = "group_norm"

SMOKE = {"width": 0.0625, "n_train": 250, "n_val": 200, "epochs": 1}
