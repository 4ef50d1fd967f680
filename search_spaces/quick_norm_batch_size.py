"""Quick normalisation and batch size: does Group Normalization hold its accuracy at
small batches where the study's BN does not (Wu & He 2018), and is BN best at medium
batches here (the study's claim 4)? search_spaces/norm_batch_size.py shrunk until it
fits two CPU cores for about a quarter of an hour, keeping what the comparison needs.

Scientific: norm (bn: the study's BN; gn: Group Normalization, groups by
bnsweep/model.py gn_groups; none: no normalisation). Varied: batch_size. Fixed: the
rest, as below. One seed by default; `--seeds 0,1` repeats every point, for twice the
time.

The scale, reasoned from steps, images and epochs (as search_spaces/quick_batch_size.py,
whose measurements it reuses):

- Equal epochs for every batch size, as the study: each trial trains on the same
  images the same number of times, so batch 5 takes 10x the steps of batch 50.
- BN's running statistics (Keras momentum 0.99) keep 0.99^n of their initial values
  after n steps, so the largest batch B needs >= 300 steps (0.99^300 = 5 %) before its
  validations can be trusted (docs/design.md §2): 300 x B training images per trial.
- Three arms instead of two make 1.5x the trials, so the batch sizes are the study's
  small end, where Wu & He's BN falls and GN holds (their BN lost 3.7 points from 32 to
  4 images per GPU, 11 to 2), and one medium size: 5, 10 and 50. With 50 the largest,
  15,000 images per trial (3,000 images x 5 epochs) give it 300 steps, batch 10 1,500
  and batch 5 3,000. Nothing above the 50-100 band: claim 4 is read against smaller
  batches only, and 50 is the band's one point.
- Cost on this machine (2-vCPU AMD EPYC, no GPU; one thread per trial): the 1/16-width
  Inception trains at 10.2 / 7.4 ms per image with BN at batch 5 / 50 and 9.2 / 5.2
  without (quick_batch_size.py, 2026-12-06); GN measured 1.15x / 1.11x BN's at batch
  5 / 50 (10.3 against 8.9, 7.0 against 6.4 ms on a busy machine, 2026-12-07), so
  about 11.7 / 8.2 ms. Batch 10 lies between. Training: about 1,170 core-seconds for
  the nine trials (15,000 images each).
- lr 0.1, dropped x0.1 from the 4th epoch (lr_drop_period 4), at every batch size and
  for every arm: the study held the lr fixed across batch sizes; 0.1 is quick.py's,
  which trains this network in a few hundred steps (the reference's 0.01 is for 6,000).
- 2,000 validation images (class balanced): a standard error of about 1.1 points at
  40 % accuracy, enough for differences of a few points between arms. 250 images per
  validation pass (eval_batch_size; no effect on results), faster on this CPU.
  Validation: 5 x 2,000 images x ~3.8 ms = ~40 s per trial, 340 core-seconds in all.
- Estimated wall time on 2 idle cores, one trial per core, the arms of a batch size
  next to each other in grid order: (1,170 + 340) / 2 core-seconds plus Ray's
  start-up, about 13-15 minutes. Times per step (claim 2) pair the BN and none trials
  of a batch size; they are BN's cost only where each had a core of its own.

Result (2026-12-07, 2 idle cores of an AMD EPYC with AVX512_BF16, so bf16 autocast +
channels-last; the JPEG-derived CIFAR-10 copy; one seed): 8 min 22 s for the whole
`bnsweep run` (`plan`: 9 min). Best validation accuracy at batch 5 / 10 / 50: BN 0.372 /
0.414 / 0.382, GN 0.218 / 0.193 / 0.247, none 0.100 / 0.128 / 0.135. At this scale GN
did not hold BN's accuracy at small batches: it trained, but far behind BN at every batch
size (GN with 2-channel groups in the narrowest layers, lr 0.1 tuned for BN, 300-3,000
steps), and it cost 1.5-2.5x BN's time per step on this CPU (GN 57 / 85 / 300 ms, BN
40 / 53 / 120 ms per step). BN was best at batch 10, not in the 50-100 band (claim 4:
suggestive, leans refuted; one seed); claim 2: BN / none 1.13 per step (95 % CI 0.82 to
1.56, n = 3 pairs, undecided). Wu & He's shape (GN flat, BN falling at small batches)
is not what these 5 epochs show; more epochs, GN's own lr, or wider layers are the
next things to vary before reading anything into it.
"""

SEARCH = "grid"
SPACE = {
    "batch_size": [5, 10, 50],
    "norm": ["bn", "gn", "none"],  # last, so the arms of a batch size run side by side
}
FIXED = {"width": 0.0625, "n_train": 3000, "n_val": 2000, "epochs": 5, "lr": 0.1, "lr_drop_period": 4,
         "eval_batch_size": 250}
SEEDS = [0]

# What the report shows (README, "study files"): the claims this study tests, its figures, and
# Wu & He's batch-size curve of BN and GN beside ours (a different model and dataset: shapes only).
CLAIMS = [4, 2]
FIGURES = ["batch_size", "curves"]
ORIGINAL = "group_norm"

# Seconds per trial, for tests: 200 images, 1 epoch (40 steps at batch 5).
SMOKE = {"n_train": 200, "n_val": 200, "epochs": 1}
