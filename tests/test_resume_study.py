"""`resume` and `sync` load the study as `run` loaded it: the file itself while it is
unchanged (its folder, __file__, the files it reads beside it), else the text sweep.json
recorded, saying so, and any error naming the user's file, never a temporary folder."""

from __future__ import annotations

import textwrap

import pytest

from bnsweep.runner import _study_from_spec
from bnsweep.space import SpaceError
from bnsweep.storage import SweepSpec

STUDY = textwrap.dedent('''
    """Reads its grid from a file beside it."""
    import json
    from pathlib import Path
    SPACE = {"lr": json.loads((Path(__file__).parent / "lrs.json").read_text()), "bn": [True, False]}
''')


def _spec(path) -> SweepSpec:
    return SweepSpec(study_path=str(path), study_text=STUDY, smoke=False, overrides={}, resources={"cpu": 1.0,
                     "gpu": 0.0}, max_concurrent=None, max_failures=0, tracking=None, seeds=[0])


def test_an_unchanged_study_is_imported_as_itself(tmp_path, capsys):
    (tmp_path / "lrs.json").write_text("[0.01, 0.1]")
    (tmp_path / "mine.py").write_text(STUDY)
    study = _study_from_spec(_spec(tmp_path / "mine.py"))
    assert study.space["lr"] == [0.01, 0.1] and study.path == tmp_path / "mine.py"
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_a_changed_study_runs_its_recorded_text_and_says_so(tmp_path, capsys, change):
    (tmp_path / "lrs.json").write_text("[0.01, 0.1]")
    path = tmp_path / "mine.py"
    if change == "edited":
        path.write_text(STUDY + "\n# edited since\n")
    with pytest.raises(SpaceError) as e:
        _study_from_spec(_spec(path))
    message = str(e.value)
    assert message.startswith(f"{path} does not import") and "restore" in message
    assert "/tmp" not in message.replace(str(tmp_path), "")  # no folder the user never saw
    assert f"{path} {'has changed' if change == 'edited' else 'is gone'}" in capsys.readouterr().out
    # A recorded text that reads nothing beside it runs as it was.
    spec = _spec(path)
    spec.study_text = 'SPACE = {"bn": [True, False]}\n'
    assert _study_from_spec(spec).space == {"bn": [True, False]}
