"""How verdicts are reached (bnsweep/analysis/stats.py, bnsweep/analysis/claims.py, docs/design.md §6), on
tables built here: each claim with seeds, arranged so that it holds and so that it does
not, decided by its interval and test; a paired design against an unpaired one on the
same data; trials too short, or a --smoke sweep, deciding nothing and saying why; and
every report table as LaTeX (booktabs) holding its CSV's numbers."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from fake_results import history, results, trial

from bnsweep.formats import MISSING, measured, number

SEEDS = range(4)


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


# ------------------------------------------------------------ the numbers ---

def test_paired_interval_is_narrower_than_unpaired_on_the_same_data():
    from bnsweep.analysis.stats import paired, welch

    # Seeds differ a lot (0.76-0.88); BN adds 0.04-0.06 to each: pairing removes the seeds' spread.
    base = [0.76, 0.84, 0.80, 0.88]
    bn = [b + d for b, d in zip(base, (0.05, 0.06, 0.04, 0.05))]
    p, w = paired(bn, base, "BN - no BN"), welch(bn, base, "BN - no BN")
    assert p.estimate == pytest.approx(w.estimate) == pytest.approx(0.05)
    assert (p.high - p.low) < (w.high - w.low) / 5
    assert p.side == "holds" and w.side is None and (p.test, w.test) == ("paired t", "Welch t")
    assert p.n == w.n == 4 and p.p < 0.01 < 0.05 < w.p


def test_claim_1_pairs_by_pair_id_and_falls_back_to_welch():
    from bnsweep.analysis.claims import claim_accuracy_speed

    base = [0.76, 0.84, 0.80, 0.88]
    rows = [trial(f"b{s}", True, s, best_val_acc=base[s] + (0.05, 0.06, 0.04, 0.05)[s]) for s in SEEDS]
    rows += [trial(f"n{s}", False, s, best_val_acc=base[s]) for s in SEEDS]
    t = frame(rows)
    held = claim_accuracy_speed(t, history(t))
    assert held.verdict == "supported", held.evidence
    acc = held.tests[0]
    assert acc.test == "paired t" and acc.n == 4 and acc.low > 0 and acc.estimate == pytest.approx(0.05)
    # As two Optuna arms: nothing pairs the runs, Welch's t, and the same numbers decide nothing.
    apart = t.assign(pair_id=[f"own-{i}" for i in range(len(t))])
    loose = claim_accuracy_speed(apart, history(apart))
    assert loose.tests[0].test == "Welch t" and loose.tests[0].low < 0 < loose.tests[0].high
    assert loose.verdict.startswith("undecided (the interval includes no effect: best val acc, BN - no BN +0.05 "
                                    "(95% CI -0.0")
    assert loose.decisive is loose.tests[0]


def test_claim_1_both_ways_and_its_speed():
    from bnsweep.analysis.claims import claim_accuracy_speed

    def arms(bn_acc, no_acc):
        t = frame([trial(f"b{s}", True, s, best_val_acc=bn_acc + 0.01 * s) for s in SEEDS]
                  + [trial(f"n{s}", False, s, best_val_acc=no_acc + 0.012 * s) for s in SEEDS])
        return t, history(t)

    assert claim_accuracy_speed(*arms(0.8, 0.6)).verdict == "supported"
    # BN less accurate (it still reaches the lower target first): refuted on accuracy.
    refuted = claim_accuracy_speed(*arms(0.6, 0.8))
    assert refuted.verdict == "refuted" and refuted.decisive.what == "best val acc, BN - no BN"
    # Equally accurate, BN faster: the accuracy interval includes 0, so not supported.
    same = claim_accuracy_speed(*arms(0.7, 0.7))
    assert same.verdict.startswith("undecided (the interval includes no effect: best val acc")
    # More accurate but no sooner (both arms reach the target at epoch 2): speed is open.
    t, h = arms(0.8, 0.6)
    h.loc[h["epoch"] == 1, "val_acc"] = 0.1
    slow = claim_accuracy_speed(t, h)
    assert slow.verdict.startswith("undecided (the interval includes no effect: epochs to val acc")


def test_claim_2_log_ratio_per_device():
    from bnsweep.analysis.claims import claim_step_time

    def pairs(ratios, device="cpu"):
        t = frame([trial(f"{a}{s}-{device}", a == "b", s, device_name=device)
                   for s in range(len(ratios)) for a in "bn"])
        steps = {f"b{s}-{device}": 10.0 * r for s, r in enumerate(ratios)} | {
            f"n{s}-{device}": 10.0 for s in range(len(ratios))}
        return t, steps

    t, steps = pairs([1.21, 1.18, 1.25, 1.2])
    held = claim_step_time(t, history(t, steps))
    (test,) = held.tests
    assert held.verdict == "supported" and test.test == "one-sample t on log ratios" and test.n == 4
    assert test.estimate == pytest.approx(math.prod([1.21, 1.18, 1.25, 1.2]) ** 0.25) and test.null == 1
    assert test.low > 1 and "time per step BN / no BN on cpu" in held.evidence
    t, steps = pairs([0.8, 0.85, 0.82])
    assert claim_step_time(t, history(t, steps)).verdict == "refuted"
    # Noisy pairs either side of 1: the interval includes a ratio of 1.
    t, steps = pairs([1.3, 0.8, 1.1, 0.9])
    assert claim_step_time(t, history(t, steps)).verdict.startswith("undecided (the interval includes no effect")
    # Two device kinds are judged apart: the one with a single pair keeps the claim from a verdict.
    (t1, s1), (t2, s2) = pairs([1.21, 1.18, 1.25]), pairs([1.3], "NVIDIA H100")
    both = claim_step_time(pd.concat([t1, t2], ignore_index=True), history(pd.concat([t1, t2]), s1 | s2))
    assert [c.what for c in both.tests] == ["time per step BN / no BN on cpu",
                                            "time per step BN / no BN on NVIDIA H100"]
    assert both.verdict == "suggestive, leans supported (1 matched pair; a verdict needs 3)"


def lr_grid(bn_trains, no_trains, lrs=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), seeds=SEEDS):
    """BN and no BN at each lr and seed: 0.6-ish where the arm trains, chance-ish where not."""
    rows = []
    for lr in lrs:
        for s in seeds:
            for arm, trains in (("b", bn_trains), ("n", no_trains)):
                acc = 0.6 + 0.02 * s if lr in trains else 0.1 + 0.005 * s
                rows.append(trial(f"{arm}{lr:g}-{s}", arm == "b", s, lr=lr, best_val_acc=acc))
    return frame(rows)


def test_claim_3_lr_range_both_ways():
    from bnsweep.analysis.claims import claim_lr_range

    held = claim_lr_range(lr_grid({1e-3, 1e-2, 1e-1, 1.0}, {1e-2, 1e-1}))
    assert held.verdict == "supported", held.evidence
    # At each end, BN above the threshold and no BN below it, one-sample t against 0.2.
    assert [c.what for c in held.tests] == ["BN's best val acc at lr 1", "no BN's best val acc at lr 1",
                                            "BN's best val acc at lr 1e-3", "no BN's best val acc at lr 1e-3"]
    assert {c.null for c in held.tests} == {0.2} and all(c.side == "holds" for c in held.tests)
    narrower = claim_lr_range(lr_grid({1e-2, 1e-1}, {1e-3, 1e-2, 1e-1, 1.0}))
    assert narrower.verdict == "refuted" and narrower.decisive.what == "BN's best val acc at lr 10"
    same = claim_lr_range(lr_grid({1e-2, 1e-1}, {1e-2, 1e-1}))  # no extension at either end
    assert same.verdict == "refuted"
    edge = claim_lr_range(lr_grid({1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0}, {1e-3, 1e-2, 1e-1, 1.0, 10.0}))
    assert edge.verdict == "undecided (no BN trains up to the edge of the lr grid; widen the grid)"
    # A diverged seed counts at chance where the arm's others train: the interval widens past the threshold.
    t = lr_grid({1e-3, 1e-2, 1e-1, 1.0}, {1e-2, 1e-1})
    t.loc[t["run_id"] == "b1-0", ["diverged", "outcome"]] = (True, "diverged")
    assert claim_lr_range(t).tests[0].estimate == pytest.approx((0.1 + 0.62 + 0.64 + 0.66) / 4)


def test_claim_4_batch_band_welch_both_ways():
    from bnsweep.analysis.claims import claim_batch_size

    def grid(best_batch):
        acc = {10: 0.7, 50: 0.68, 100: 0.72, 250: 0.65} | {best_batch: 0.8}
        return frame([trial(f"{'bn'[a]}{b}-{s}", a == 0, s, batch_size=b, best_val_acc=acc[b] + 0.01 * s)
                      for b in (10, 50, 100, 250) for s in SEEDS for a in (0, 1)])

    held = claim_batch_size(grid(50))
    assert held.verdict == "supported" and held.decisive.test == "Welch t" and held.decisive.n == 4
    assert held.decisive.what == "BN's best val acc, batch 50 - batch 10"
    assert claim_batch_size(grid(10)).verdict == "refuted"


def test_claim_5_regularisation_paired_by_seed():
    from bnsweep.analysis.claims import claim_regularisation

    def arms(gaps, seeds=SEEDS):
        rows = []
        for s in seeds:
            for arm, gap in gaps.items():
                g = gap + 0.01 * ((s * 7 + len(arm)) % 3)
                rows.append(trial(f"{arm}-{s}", arm == "bn", s, dropout=0.5 if "dropout" in arm else 0.0,
                                  arm=arm, train_acc=0.5 + g, val_acc=0.5))
        return frame(rows)

    held = claim_regularisation(arms({"no_bn": 0.3, "no_bn+dropout": 0.1, "bn": 0.12}), None)
    assert held.verdict == "supported" and held.decisive.test == "paired t over seeds (contrast)"
    assert claim_regularisation(arms({"no_bn": 0.3, "no_bn+dropout": 0.1, "bn": 0.28}), None).verdict == "refuted"
    assert claim_regularisation(arms({"no_bn": -0.02, "no_bn+dropout": -0.05, "bn": 0.0}), None).verdict.startswith(
        "undecided (no BN does not overfit here: nothing to regularise: no BN's gap -0.0")
    assert claim_regularisation(arms({"no_bn": 0.3, "no_bn+dropout": 0.32, "bn": 0.1}), None).verdict.startswith(
        "undecided (dropout does not narrow no BN's gap here")
    # Seeds the arms do not share: unpaired, a Welch contrast.
    apart = arms({"no_bn": 0.3, "no_bn+dropout": 0.1, "bn": 0.12})
    apart.loc[apart["arm"] == "bn", "seed"] += 10
    assert claim_regularisation(apart, None).decisive.test == "Welch t (contrast)"


# --------------------------------------------------------- honest smoke runs ---

def smoke_lr_sweep(seeds=(0,)) -> pd.DataFrame:
    """search_spaces/lr.py in --smoke: 7 learning rates x BN / no BN, one epoch of 10 steps (500 images, batch 50)."""
    smoke = {"width": 0.0625, "n_train": 500, "n_val": 500, "epochs": 1, "batch_size": 50, "epochs_completed": 1}
    bn = dict(zip((1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0), (0.31, 0.49, 0.71, 0.87, 0.92, 0.70, 0.10)))
    return frame([trial(f"{a}{lr:g}-{s}", a == "b", s, lr=lr, best_val_acc=(acc if a == "b" else 0.1) + 0.01 * s,
                        **smoke) for lr, acc in bn.items() for s in seeds for a in "bn"])


def test_the_smoke_lr_sweep_decides_no_claim_and_says_why(tmp_path):
    from bnsweep.analysis.claims import evaluate_claims
    from bnsweep.analysis.summary import main

    t = smoke_lr_sweep(seeds=range(3))  # three seeds: the length, not n, keeps it from a verdict
    steps = {rid: 12.0 if rid.startswith("b") else 10.0 for rid in t["run_id"]}
    claims = {c.number: c for c in evaluate_claims(t, history(t, steps))}
    assert not any(c.decided for c in claims.values())
    assert claims[1].verdict == ("undecided (trials too short to measure it: BN's running statistics keep 90% of "
                                 "their start after 10 steps (momentum 0.99); accuracy needs at most 5%; 1 epoch per "
                                 "trial; epochs to a target need 3)")
    assert claims[2].verdict == ("undecided (trials too short to measure it: 1 epoch per trial, whose steps include "
                                 "the warm-up; a step time needs 2; 10 steps per epoch; a step time needs 50)")
    assert claims[3].verdict.startswith("undecided (trials too short to measure it: BN's running statistics")
    # The 14-trial sweep itself, one seed, through the summary: claims.csv says the same.
    r = results(smoke_lr_sweep().to_dict("records"), tmp_path, smoke=True)
    main(["--experiment", r.experiment, "--out", str(tmp_path / "out")], results=r)
    table = pd.read_csv(tmp_path / "out" / "claims.csv").set_index("claim")
    assert table["verdict"].str.startswith("undecided (").all()
    assert table.loc[[1, 2, 3], "verdict"].str.contains("too short to measure it").all()


def test_a_smoke_sweep_of_long_trials_still_decides_nothing(tmp_path):
    from bnsweep.analysis.render import speaks_to

    # Reference-length trials (30 epochs of 200 steps) that would support claim 1, in a sweep run with --smoke.
    rows = [trial(f"{a}{s}", a == "b", s, best_val_acc=(0.8 if a == "b" else 0.6) + 0.01 * s) for s in SEEDS
            for a in "bn"]
    assert "claim 1 (BN raises validation accuracy and training speed): supported" in speaks_to(
        results(rows, tmp_path, smoke=False, study="quick", asks={"claims": [1]}))
    smoke = speaks_to(results(rows, tmp_path, smoke=True, study="quick", asks={"claims": [1]}))
    assert smoke.endswith("undecided (a --smoke sweep: its trials test the code, not the claims)")


# ---------------------------------------------------------------- LaTeX ---

def booktabs(tex: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a booktabs tabular, or an AssertionError where it is not one."""
    lines = [x for x in tex.splitlines() if not x.startswith("%")]
    assert lines[0].startswith("\\begin{tabular}{") and lines[-1] == "\\end{tabular}", tex[:400]
    top, mid, bottom = (lines.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert top == 1 and mid == top + 2 and bottom == len(lines) - 2
    cells = lambda line: [c.strip() for c in re.split(r"(?<!\\)&", line.rstrip().removesuffix("\\\\"))]  # noqa: E731
    rows = [cells(x) for x in lines[mid + 1:bottom]]
    header = cells(lines[top + 1])
    assert all(len(r) == len(header) for r in rows)
    return header, rows


def test_every_table_is_also_booktabs_latex_with_its_csvs_numbers(tmp_path):
    from bnsweep.analysis.report import overview_items
    from bnsweep.analysis.summary import main

    rows = [trial(f"{a}{lr}-{s}", a == "b", s, lr=lr, best_val_acc=(0.8 if a == "b" else 0.6) + 0.01 * s)
            for lr in (0.01, 0.1) for s in SEEDS for a in "bn"]
    r = results(rows, tmp_path)
    items = main(["--experiment", r.experiment, "--out", str(tmp_path)], results=r) + overview_items(r, tmp_path)
    assert {i.name for i in items} == {"summary", "claims", "trials"}
    for item in items:
        assert set(item.files) == {"csv", "tex"}
        header, rows = booktabs(item.files["tex"].read_text())
        csv = pd.read_csv(item.files["csv"])
        assert len(rows) == len(csv) and header[0] == item.table.columns[0].replace("_", "\\_")
        for cells, (_, values) in zip(rows, csv.iterrows()):
            # Settings as tried (formats.number), measurements to 4 digits (formats.measured): one spelling.
            ours = {f(v) for v in values if isinstance(v, (int, float)) and not pd.isna(v) for f in (number, measured)}
            numbers = [c for c in cells if re.fullmatch(r"-?[\d.]+(e-?\d+)?", c)]
            assert numbers and set(numbers) <= ours, (item.name, set(numbers) - ours)
    claims = next(i for i in items if i.name == "claims")
    header, rows = booktabs(claims.files["tex"].read_text())
    csv = pd.read_csv(claims.files["csv"])
    for col, name in (("estimate", "estimate"), ("ci_low", "95\\% CI low"), ("ci_high", "95\\% CI high"), ("p", "p")):
        shown = [row[header.index(name)] for row in rows]
        assert shown == [MISSING if pd.isna(v) else measured(v) for v in csv[col]], col
    assert [row[header.index("test")] for row in rows][0] == "paired t"
    assert csv.loc[0, "verdict"] == "supported" and csv.loc[0, "n"] == 4
