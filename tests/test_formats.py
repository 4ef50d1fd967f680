"""One formatter per kind of value (bnsweep/formats.py): what it prints reads back as the
value tried, whatever the value; counts agree with their nouns."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bnsweep.formats import count, number, seconds, value_range
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
    assert value_range([10.0, 1e-5, 0.1]) == "1e-5 – 10" and value_range([]) == "none"
    # A run's name writes its settings the same way.
    assert display_name({"bn": False, "lr": 1e-4, "batch_size": 50}, ["bn", "lr", "batch_size"]) == \
        "no_bn lr=1e-4 batch_size=50"


def test_counts_agree_with_their_nouns():
    assert [count(n, "trial") for n in (0, 1, 2)] == ["0 trials", "1 trial", "2 trials"]
    assert count(1, "matched pair") == "1 matched pair" and count(3, "epoch") == "3 epochs"
    assert [seconds(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
