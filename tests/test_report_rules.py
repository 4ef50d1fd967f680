"""The rules behind a report, on tables built here (no Ray, no MLflow, no training):
the scale header against the reference, how much evidence a verdict needs, the
numeric order of tables, the original study's numbers beside ours, the choice of
each arm's best configuration, and the shipped studies found by name."""

from __future__ import annotations

import pandas as pd
import pytest
from fake_results import history, results, trial

# -------------------------------------------------------------- the scale ---

def test_no_scale_warning_at_the_reference(tmp_path):
    from bnsweep.analysis.render import render_markdown
    from bnsweep.analysis.scale import at_reference_scale, scale_note, scale_rows

    r = results([trial(f"{a}{s}", a == "b", s, lr=lr) for a in "bn" for s in range(3) for lr in (0.01, 0.1)],
                tmp_path)
    assert at_reference_scale(r) and scale_note(r) is None
    assert not [row for row in scale_rows(r) if row.differs]
    assert "> **Scale.** The reference experiment" in render_markdown(r, [])


def test_scale_header_for_a_smoke_run(tmp_path):
    from bnsweep.analysis.render import render_html, render_markdown
    from bnsweep.analysis.scale import at_reference_scale, scale_note, scale_rows

    # search_spaces/lr.py's SMOKE, on the JPEG-derived copy of CIFAR-10.
    smoke = {"width": 0.0625, "n_train": 500, "n_val": 500, "epochs": 1, "batch_size": 50,
             "dataset_source": "unverified copy", "dataset_verified": False}
    r = results([trial(f"{a}{lr}", a == "b", lr=lr, **smoke) for a in "bn" for lr in (0.01, 0.1)], tmp_path,
                smoke=True)
    assert not at_reference_scale(r)
    rows = {row.setting: row for row in scale_rows(r)}
    assert (rows["width (channel multiplier)"].reference, rows["width (channel multiplier)"].sweep) == ("1", "0.0625")
    assert (rows["training images"].reference, rows["training images"].sweep) == ("50000", "500")
    assert rows["epochs"].sweep == "1" and rows["batch size (images per step)"].sweep == "50"
    assert rows["smoke run (--smoke)"].sweep == "yes" and rows["data"].differs
    assert not rows["model"].differs
    note = scale_note(r)
    assert note.startswith("Not the reference experiment: width, training images, validation images, epochs, "
                           "batch size, smoke run, data differ")
    md = render_markdown(r, [])
    assert "| smoke run (--smoke) | no | yes | yes |" in md and "| training images | 50000 | 500 | yes |" in md
    assert "Scale.</b> Not the reference experiment" in render_html(r, [])
    # A setting the study varies is its question, not a difference of scale.
    varied = results([trial(f"{a}{b}", a == "b", batch_size=b) for a in "bn" for b in (50, 250)], tmp_path)
    row = {row.setting: row for row in scale_rows(varied)}["batch size (images per step)"]
    assert row.sweep == "varied by the study: 50, 250" and not row.differs and at_reference_scale(varied)
    # Without a readable sweep.json, smoke mode is unknown, and the other rows still tell the scale.
    (tmp_path / "gone").mkdir()
    unknown = results([trial("b", True, width=0.5)], tmp_path / "gone", smoke=None)
    assert {row.setting: row for row in scale_rows(unknown)}["smoke run (--smoke)"].sweep.startswith("unknown")


# -------------------------------------------------------------- verdicts ---

def test_one_pair_or_seed_cannot_decide_a_claim():
    from bnsweep.analysis.claims import claim_accuracy_speed, claim_step_time

    def pairs(n):
        t = pd.DataFrame([trial(f"{a}{s}", a == "b", s, best_val_acc=0.8 if a == "b" else 0.5)
                          for s in range(n) for a in "bn"])
        return t, history(t, {f"b{s}": 12.0 for s in range(n)})  # BN 12 ms per step, no BN 10 ms

    one = claim_step_time(*pairs(1))
    assert one.verdict == "suggestive, leans supported (1 matched pair; a verdict needs 3)"
    assert not one.decided and one.lean == "supported"
    assert claim_step_time(*pairs(3)).verdict == "supported"
    # Claim 1 alike: one seed per arm leans, three decide.
    assert claim_accuracy_speed(*pairs(1)).verdict == "suggestive, leans supported (1 seed; a verdict needs 3)"
    assert claim_accuracy_speed(*pairs(3)).verdict == "supported"


def test_a_claim_needs_a_difference_beyond_the_spread():
    from bnsweep.analysis.claims import claim_accuracy_speed

    # Three seeds each, BN ahead by 0.02 on average but with an sd of 0.1: the paired t
    # interval of the difference includes 0.
    rows = [trial(f"b{s}", True, s, best_val_acc=acc) for s, acc in enumerate((0.42, 0.52, 0.62))]
    rows += [trial(f"n{s}", False, s, best_val_acc=0.5) for s in range(3)]
    t = pd.DataFrame(rows)
    verdict = claim_accuracy_speed(t, history(t)).verdict
    assert verdict.startswith("undecided (the interval includes no effect: best val acc, BN - no BN +0.02 "
                              "(95% CI -0.228 to +0.268; paired t, n=3, p=0.76))")


def test_best_configuration_is_never_one_that_diverged_or_failed():
    from bnsweep.analysis.tables import best_config_per_arm

    rows = [trial("b-high", True, lr=1.0, best_val_acc=0.9, outcome="diverged", diverged=True),  # peaked, then NaN
            trial("b-fail", True, lr=0.5, best_val_acc=0.95, outcome="failed", status="FAILED"),
            trial("b-ok", True, lr=0.01, best_val_acc=0.6),
            trial("n-high", False, lr=1.0, best_val_acc=0.3, outcome="diverged", diverged=True)]
    best = best_config_per_arm(pd.DataFrame(rows))
    assert list(best["bn"]["run_id"]) == ["b-ok"]
    assert list(best["no_bn"]["run_id"]) == ["n-high"]  # nothing else to show: the diverged one, marked as such


# ---------------------------------------------------------------- tables ---

def test_trials_sort_by_value_not_text():
    from bnsweep.analysis.render import html_table
    from bnsweep.analysis.tables import sort_trials

    lrs = [10.0, 1.0, 1e-05, 0.1, 1e-4]
    t = pd.DataFrame([trial(f"{a}{lr}", a == "b", lr=lr) for a in "bn" for lr in lrs])
    ordered = sort_trials(t)
    assert list(ordered["arm"]) == ["no_bn"] * 5 + ["bn"] * 5
    assert list(ordered["lr"]) == sorted(lrs) * 2  # 1e-05, 0.0001, 0.1, 1, 10: not "1", "10", "1e-05"
    # In the page, each number carries its value, so a click on a header sorts numbers as numbers.
    page = html_table(ordered[["arm", "lr"]])
    assert "<td class='n' data-v='1e-05'>1e-5</td>" in page and page.startswith("<div class='scroll'>")


# ------------------------------------------------------------- the original ---

def test_the_originals_numbers_beside_ours():
    from bnsweep.analysis.original import batch_comparison, lr_comparison

    ours = pd.DataFrame({"arm": ["bn", "no_bn", "bn", "no_bn"], "lr": [0.01, 0.01, 0.05, 0.05],
                         "best_val_acc_mean": [0.8, 0.6, 0.7, 0.1]})
    table = lr_comparison(ours).set_index("lr")
    assert list(table.index) == [1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 1.0, 10.0]
    assert list(table.loc[0.01]) == [80.0, 87, 60.0, 66]
    assert table.loc[0.1, "BN original (slides) (%)"] == 92 and pd.isna(table.loc[0.1, "BN ours (%)"])
    assert pd.isna(table.loc[0.05, "BN original (slides) (%)"]) and table.loc[0.05, "BN ours (%)"] == 70.0
    ours = pd.DataFrame({"arm": ["bn", "no_bn"] * 2, "batch_size": [5, 5, 250, 250],
                         "best_val_acc_mean": [0.5, 0.4, 0.45, 0.3], "time_total_s_mean": [40.0, 20.0, 10.0, 8.0]})
    table = batch_comparison(ours).set_index("batch_size")
    assert table.loc[5, "BN acc original (slides) (%)"] == 92
    assert table.loc[250, "no BN acc original (slides) (%)"] == 66
    assert table.loc[5, "BN time original (slides) (min)"] == 225 and table.loc[250, "BN time ours (s)"] == 10.0
    assert table.loc[5, "BN/no BN time ours"] == 2.0 and table.loc[5, "BN/no BN time original (slides)"] == 1.83


def test_shape_only_unless_at_the_reference(tmp_path):
    from bnsweep.analysis.original import SETS, published, shape_note

    at_ref = results([trial(f"{a}{lr}", a == "b", lr=lr) for a in "bn" for lr in (0.01, 0.1)], tmp_path)
    assert "numbers compare directly" in shape_note(at_ref, "lr")
    small = results([trial(f"{a}{lr}", a == "b", lr=lr, width=0.25) for a in "bn" for lr in (0.01, 0.1)], tmp_path)
    assert "the comparison is of shape only" in shape_note(small, "lr")
    assert "shape only" in shape_note(at_ref, "dropout")  # their dropout setting was never published
    # What a study asks for, by its ORIGINAL (recorded with the sweep), never by its name.
    for kind in ("batch_size", "dropout", "lr"):
        assert published({"original": kind}) is SETS[kind] and SETS[kind].figure == kind
    assert published({}) is None
    mine = published({"original": {"figure": "lr", "source": "Smith et al. (table 2)", "about": "ResNet-20, one seed",
                                    "values": {"lr": [0.01, 0.1], "bn": [80, 90]}}})
    assert mine.figure == "lr" and list(mine.table["bn"]) == [80, 90] and "no_bn" not in mine.table
    # Someone else's numbers are never the reference experiment: shapes only, at any scale, named as theirs.
    assert shape_note(at_ref, mine).startswith("Smith et al. (table 2): ResNet-20, one seed.")
    assert "the comparison is of shape only" in shape_note(at_ref, mine)


# --------------------------------------------------------- shipped studies ---

def test_shipped_studies_found_by_name(tmp_path, monkeypatch):
    from bnsweep.errors import UsageError
    from bnsweep.studies import resolve_study_file, shipped_studies

    names = shipped_studies()
    assert {"lr", "batch_size", "dropout", "optuna", "quick", "quick_batch_size", "quick_dropout"} <= set(names)
    assert resolve_study_file("lr") == str(names["lr"]) and names["lr"].name == "lr.py" and names["lr"].is_file()
    monkeypatch.chdir(tmp_path)
    assert resolve_study_file("search_spaces/lr.py") == "search_spaces/lr.py"  # a path, even a missing one
    assert resolve_study_file("mine.py") == "mine.py"
    (tmp_path / "lr").write_text("")  # an existing path wins over the shipped name
    assert resolve_study_file("lr") == "lr"
    with pytest.raises(UsageError, match=r"^'lrr' is neither a search-space file nor a shipped study; shipped "
                                         rf"studies: {', '.join(sorted(names))}"):
        resolve_study_file("lrr")


def test_step_time_pairs_only_trials_that_executed_alike():
    # A BN trial under bf16 autocast against a no-BN one in fp32 says nothing about BN's cost.
    from bnsweep.analysis.claims import claim_step_time

    rows = []
    for seed in range(3):
        rows.append(trial(f"bn{seed}", True, seed, **{"exec.autocast": "bf16", "exec.bn_kernel": "pytorch"}))
        rows.append(trial(f"no{seed}", False, seed, **{"exec.autocast": "none", "exec.bn_kernel": "none"}))
    t = pd.DataFrame(rows)
    steps = {f"bn{s}": 15.0 for s in range(3)} | {f"no{s}": 10.0 for s in range(3)}
    assert claim_step_time(t, history(t, steps)).verdict.startswith("undecided")
    t["exec.autocast"] = "none"  # the same execution, the BN kernel apart: three pairs, BN 1.5x
    assert claim_step_time(t, history(t, steps)).verdict == "supported"


def test_a_report_says_why_nothing_is_drawn_in_the_ledgers_words():
    from bnsweep.analysis.plots import nothing_to_draw

    failed = pd.DataFrame({"outcome": ["failed", "errored"], "failure_reason": ["DataError: no files", None]})
    assert nothing_to_draw(failed) == "all 2 trials failed before their first epoch (1 x DataError: no files)"
    waiting = pd.DataFrame({"outcome": ["unfinished", "running"]})
    assert nothing_to_draw(waiting) == "no trial has logged an epoch yet (1 unfinished, 1 running)"
