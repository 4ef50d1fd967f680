"""One formatter per kind of value (bnsweep/formats.py): what it prints reads back as the
value tried, whatever the value; counts agree with their nouns."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from bnsweep.analysis.common import latex_table
from bnsweep.analysis.render import html_table, markdown_table
from bnsweep.formats import MISSING, cell, count, measured, number, seconds, value_range
from bnsweep.trials import display_name


@given(st.floats(allow_nan=False))
def test_a_printed_value_reads_back_as_the_value_tried(x):
    text = number(x)
    assert float(text) == x and "+" not in text and " " not in text
    assert "e-0" not in text  # 1e-5, never 1e-05


@given(st.integers())
def test_whole_numbers_print_as_themselves(n):
    assert number(n) == str(n)


def test_the_study_grids_in_one_spelling():
    assert [number(x) for x in (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)] == \
        ["1e-5", "1e-4", "1e-3", "0.01", "0.1", "1", "10"]
    assert [number(x) for x in (1000.0, 1e6, 2.5e-4, 0.5)] == ["1000", "1e6", "2.5e-4", "0.5"]
    assert number(math.nan) == "nan" and number(True) == "True" and number("simple") == "simple"
    assert value_range([10.0, 1e-5, 0.1]) == "1e-5 to 10" and value_range([]) == "none"
    assert value_range([-1.0, 10.0]) == "-1 to 10"  # no dash a minus sign could run into
    # A run's name writes its settings the same way.
    assert display_name({"bn": False, "lr": 1e-4, "batch_size": 50}, ["bn", "lr", "batch_size"]) == \
        "no_bn lr=1e-4 batch_size=50"


def test_counts_agree_with_their_nouns():
    assert [count(n, "trial") for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
    assert count(1, "matched pair") == "1 matched pair" and count(3, "epoch") == "3 epochs"
    assert [seconds(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


@settings(deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_measured_value_reads_back_to_its_digits(x):
    text = measured(x)
    assert float(text) == float(f"{x:.4g}") and "+" not in text and "e-0" not in text


@settings(deadline=None, max_examples=60)  # a DataFrame and two renderings per example: never fail on time
@given(st.lists(st.floats(min_value=1e-12, max_value=1e12), min_size=1, max_size=6),
       st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=6))
def test_every_lr_a_report_table_prints_reads_back_as_the_value_tried(lrs, accs):
    """The lr column of a report table (markdown and HTML), whatever the values: each cell parses
    back to the lr tried; a measured column keeps 4 digits in the same spelling."""
    n = min(len(lrs), len(accs))
    df = pd.DataFrame({"lr": lrs[:n], "best val acc": accs[:n]})
    rows = [line.split(" | ") for line in markdown_table(df).splitlines()[2:]]
    assert [float(r[0].removeprefix("| ")) for r in rows] == lrs[:n]
    assert [r[1].removesuffix(" |") for r in rows] == [measured(a) for a in accs[:n]]
    cells = re.findall(r"<td class='n' data-v='[^']*'>([^<]*)</td>", html_table(df))
    assert [float(c) for c in cells[0::2]] == lrs[:n]


def test_a_table_cell_says_yes_no_and_a_dash_for_nothing():
    assert [cell(v) for v in (True, np.bool_(False), None, float("nan"), np.int64(3))] == ["yes", "no", MISSING,
                                                                                          MISSING, "3"]
    md = markdown_table(pd.DataFrame({"speaks to": [True, False], "sd": [0.012345, float("nan")], "lr": [1e6, 1e-5]}))
    assert md.splitlines()[2:] == ["| yes | 0.01235 | 1e6 |", f"| no | {MISSING} | 1e-5 |"]
    tex = latex_table(pd.DataFrame({"lr": [1e6, 1e-5], "sd": [0.5, float("nan")]}))
    assert "1e6 & 0.5" in tex and "1e-5 & –" in tex and "e+06" not in tex and "1e-05" not in tex


def test_a_range_in_a_message_is_spelled_as_its_values():
    from bnsweep.config import TABLE, _bounds_text
    from bnsweep.domains import Domain

    assert Domain("float", 1e-5, 10.0, log=True).describe() == "log-uniform real numbers from 1e-5 to 10"
    assert _bounds_text(TABLE["dropout"]) == "in [0, 1)"
