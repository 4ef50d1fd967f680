"""No name a user gives becomes a path outside the folder it is meant for (storage.folder_name,
the one rule): a property over generated names, the names issue 17 found, and the report's
default folder built from an experiment name."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bnsweep.analysis.common import DEFAULT_OUT, default_out
from bnsweep.storage import MAX_NAME, contains, folder_name

# Names as people and scripts write them: any text, and texts built from the pieces that make paths.
PIECES = st.sampled_from(["..", ".", "/", "\\", "~", "/etc", "C:", "\x00", " ", "bnsweep-lr", "é", "\n", "*"])
NAMES = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=12).map("".join))


@given(NAMES)
def test_a_name_becomes_one_folder_inside_its_parent(name):
    folder = folder_name(name)
    assert folder and folder not in (".", "..") and not folder.startswith(".")
    assert "/" not in folder and "\\" not in folder and "\x00" not in folder and os.sep not in folder
    assert len(folder) <= MAX_NAME + 9
    parent = Path("/srv/reports")
    assert (parent / folder).resolve().parent == parent.resolve()


@given(NAMES)
def test_the_reports_default_folder_stays_under_reports(name):
    out = default_out(name)
    assert contains(DEFAULT_OUT, out) and out.parent == DEFAULT_OUT


def test_the_names_that_escaped_before():
    for name in ("../../escaped-report", "/etc", "..", ".", "a/../../b", "~root"):
        assert default_out(name).parent == DEFAULT_OUT and folder_name(name) != name
    assert folder_name("bnsweep-lr") == "bnsweep-lr"  # a plain name is kept as it is
    assert len({folder_name(n) for n in ("a/b", "a:b", "a_b")}) == 3


def test_contains_follows_links(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert contains(tmp_path / "link", tmp_path / "real" / "x")
    assert contains(tmp_path, tmp_path) and not contains(tmp_path / "real", tmp_path)
    assert not contains(tmp_path / "re", tmp_path / "real")  # a prefix of the name is not a parent


@settings(deadline=None)  # the first example imports Ray
@given(NAMES)
def test_a_tuners_folder_stays_in_its_sweep_whatever_its_arms_values(label):
    from bnsweep.sweep import tune_dir

    sweep_dir = "/srv/results/lr-20261207-101500-3fa2"
    folder = tune_dir(sweep_dir, label)
    assert Path(folder).parent == Path(sweep_dir) and Path(folder).name not in (".", "..")
    if folder_name(label) == label:  # today's labels ("grid", "bn", "no_bn") keep today's folders
        assert folder == f"{sweep_dir}/{label}-lr-20261207-101500-3fa2"
