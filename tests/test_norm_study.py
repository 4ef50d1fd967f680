"""The study of the next question (search_spaces/norm_batch_size.py and its quick version):
three arms through the claims and the batch-size figure, Wu & He's published curve beside
ours, and the study files' arms and pairs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fake_results import results, trial

from bnsweep.trials import arm_name, pair_id

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------ the read side ---

def _three_arms(tmp_path, asks=None):
    rows = []
    for arm, bn, accs in (("bn", True, (0.5, 0.6, 0.55)), ("no_bn", False, (0.3, 0.35, 0.2)),
                          ("gn", False, (0.52, 0.5, 0.5))):
        for b, acc in zip((5, 50, 250), accs):
            extra = {"norm": "gn", "groups": 32} if arm == "gn" else {}
            rows.append(trial(f"{arm}{b}", bn, batch_size=b, best_val_acc=acc, arm=arm, bn_arm=arm, **extra))
    return results(rows, tmp_path, study="quick_norm_batch_size", asks=asks)


def test_claims_compare_bn_with_no_normalisation_and_leave_gn_beside(tmp_path):
    from bnsweep.analysis.claims import claim_step_time, evaluate_claims

    r = _three_arms(tmp_path)
    claims = {c.number: c for c in evaluate_claims(r.trials, r.history, smoke=False)}
    assert "GN" in claims[5].evidence  # shown among the arms present
    assert "batch 50" in claims[4].evidence and "0.6" in claims[4].evidence  # BN's own curve, not GN's
    step = claim_step_time(r.trials, r.history)
    assert step.numbers["pairs"] == 3  # BN with no BN at each batch size; GN's trials (bn false) are neither


def test_batch_size_figure_draws_three_arms_and_wu_and_hes_curve(tmp_path):
    from bnsweep.analysis import batch_size, original

    r = _three_arms(tmp_path, asks={"original": "group_norm"})
    theirs = original.published(r.asks)
    assert theirs.own_axis == "images per GPU" and list(theirs.table["bn"]) == [76.4, 76.3, 75.2, 72.7, 65.3]
    assert list(theirs.table["gn"]) == [75.9, 75.8, 76.0, 75.8, 75.9]
    (tmp_path / "out").mkdir()
    items = batch_size.analyse(r, tmp_path / "out", theirs)
    table = pd.read_csv(items[0].files["csv"])
    assert sorted(set(table["arm"])) == ["bn", "gn", "no_bn"]
    assert "Wu & He 2018" in items[0].caption and "shape only" in items[0].caption
    published = items[1].table
    assert list(published.columns) == ["images per GPU", "BN Wu & He 2018 (GN, Table 2) (%)",
                                       "GN Wu & He 2018 (GN, Table 2) (%)"]
    # The original's own set still tables GN beside BN and no BN where a study has it.
    mine = original.batch_comparison(table)
    assert "GN acc ours (%)" in mine.columns and "BN acc original (slides) (%)" in mine.columns


@pytest.mark.parametrize("name", ["norm_batch_size", "quick_norm_batch_size"])
def test_the_norm_studies_load_plan_and_pair_their_three_arms(name):
    from bnsweep.space import load_study

    study = load_study(REPO / "search_spaces" / f"{name}.py")
    configs = study.grid_configs()
    assert {arm_name(c) for c in configs} == {"bn", "gn", "no_bn"}
    pairs = {}
    for c in configs:
        pairs.setdefault(pair_id(c), set()).add(arm_name(c))
    assert all(arms == {"bn", "gn", "no_bn"} for arms in pairs.values()) and len(pairs) == len(configs) // 3
    assert study.asks["original"] == "group_norm"
    if name == "norm_batch_size":  # the batch-size study's sizes, its reference otherwise
        assert sorted({c["batch_size"] for c in configs}) == [5, 10, 50, 100, 250]
        assert all(c["lr"] == 0.01 and c["epochs"] == 30 and c["width"] == 1.0 for c in configs)


def test_an_optuna_study_of_norms_names_its_searches_as_a_grid_names_its_arms(tmp_path):
    from bnsweep.space import load_study
    from bnsweep.sweep import tuner_names

    f = tmp_path / "o.py"
    f.write_text('SEARCH = "optuna"\nARMS = {"norm": ["bn", "gn", "none"]}\nSPACE = {"lr": ("loguniform", 1e-3, 1.0)}\n'
                 'NUM_SAMPLES = 2\n')
    assert [name for name, _ in tuner_names(load_study(f))] == ["bn", "gn", "no_bn"]
    assert [name for name, _ in tuner_names(load_study(REPO / "search_spaces" / "optuna.py"))] == ["bn", "no_bn"]
