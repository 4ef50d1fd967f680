"""A study file says what it asks (bnsweep/asks.py): CLAIMS, FIGURES and ORIGINAL are
checked when the file loads, with one line naming the file and the key; and the report
reads them, never the file's name (a declared claim its trials cannot compare says so)."""

from __future__ import annotations

import pytest
from fake_results import results, trial

from bnsweep.space import SpaceError, load_study

BASE = 'SPACE = {"lr": [0.01, 0.1], "bn": [True, False]}\n'


def study(tmp_path, text: str, name: str = "mine.py"):
    path = tmp_path / name
    path.write_text(BASE + text)
    return load_study(path)


def test_declarations_load_as_declared(tmp_path):
    s = study(tmp_path, 'CLAIMS = [3, 1, 3]\nFIGURES = ("lr", "curves")\nORIGINAL = "lr"\n')
    assert s.asks == {"claims": [3, 1], "figures": ["lr", "curves"], "original": "lr"}
    assert study(tmp_path, "").asks == {}
    inline = {"figure": "batch_size", "source": "Masters & Luschi 2018", "values": {
        "batch_size": [2, 32, 256], "bn": [93.0, 92.5, None], "bn_time_min": [5, 2, 1]}}
    assert study(tmp_path, f"ORIGINAL = {inline!r}\n").asks == {"original": inline}


@pytest.mark.parametrize("text, says", [
    ("CLAIMS = [6]", "CLAIMS must be a list of the study's claim numbers (1, 2, 3, 4, 5), got [6]"),
    ("CLAIMS = 1", "CLAIMS must be a list"),
    ('FIGURES = ["lr", "histogram"]', "FIGURES must be a list of figure names (lr, batch_size, curves, dropout, "
                                      "optuna), got 'histogram'"),
    ('ORIGINAL = "imagenet"', "ORIGINAL 'imagenet' is not a published set bnsweep ships (lr, batch_size, dropout, "
                              "group_norm)"),
    ('ORIGINAL = {"figure": "curves", "source": "x", "values": {}}',
     "ORIGINAL['figure'] must be one of lr, batch_size"),
    ('ORIGINAL = {"figure": "lr", "values": {"lr": [1], "bn": [50]}}', "ORIGINAL['source'] must be a non-empty string"),
    ('ORIGINAL = {"figure": "lr", "source": "x", "values": {"lr": [1, 2], "bn": [50]}}',
     "ORIGINAL['values']['bn'] has 1 values, 'lr' has 2"),
    ('ORIGINAL = {"figure": "lr", "source": "x", "values": {"lr": [1], "bn": [150]}}',
     "ORIGINAL['values']['bn'] holds 150; each must be a number in [0, 100] or None"),
    ('ORIGINAL = {"figure": "lr", "source": "x", "values": {"lr": [1], "gn": [50]}}',
     "ORIGINAL['values'] has unknown key 'gn'"),
    ('ORIGINAL = {"figure": "lr", "source": "x", "values": {"lr": list(range(1, 2000)), "bn": [1] * 1999}}',
     "the sweep's record keeps at most 4000: shorten ORIGINAL"),
])
def test_a_bad_declaration_is_one_line_naming_file_and_key(tmp_path, text, says):
    with pytest.raises(SpaceError) as e:
        study(tmp_path, text + "\n")
    assert str(e.value).startswith(f"{tmp_path / 'mine.py'}: ") and says in str(e.value)
    assert "\n" not in str(e.value)


def test_every_shipped_study_declares_what_it_asks():
    from bnsweep.studies import shipped_studies

    for name, path in shipped_studies().items():
        asks = load_study(path).asks
        assert asks.get("claims") and asks.get("figures"), name


def test_a_copy_asks_the_same_under_any_name(tmp_path):
    from bnsweep.studies import shipped_studies

    (tmp_path / "deep" / "er").mkdir(parents=True)
    copy = tmp_path / "deep" / "er" / "my_rates.py"
    copy.write_text(shipped_studies()["lr"].read_text())
    assert load_study(copy).asks == load_study(shipped_studies()["lr"]).asks


def test_speaks_to_what_is_declared_else_what_the_trials_can_compare(tmp_path):
    from bnsweep.analysis.evidence import STATEMENTS
    from bnsweep.analysis.render import speaks_to

    rows = [trial(f"{a}{lr}-{s}", a == "b", s, lr=lr, best_val_acc=(0.8 if a == "b" else 0.6) + 0.01 * s)
            for lr in (0.01, 0.1) for s in range(4) for a in "bn"]
    # Declares nothing: the claims its trials could compare (accuracy, step time, the lr range), named as such.
    line = speaks_to(results(rows, tmp_path, study="lr"))
    assert line.startswith("no claim declared (CLAIMS); those its trials could compare: claim 1 (")
    assert "claim 4" not in line and "claim 5" not in line
    # Declares claim 4, which needs batch sizes inside and outside 50-100: a clear line, not a crash.
    line = speaks_to(results(rows, tmp_path, study="anything", asks={"claims": [4, 1]}))
    assert line.startswith(f"claim 4 ({STATEMENTS[4]}): declared, but these trials cannot speak to it: undecided "
                           "(needs BN trials at batch sizes inside and outside 50-100); claim 1 (")
