"""What a person sees in a real terminal while a sweep runs: a line while Ray starts, then
the live table with a clock and the ledger's words for how trials ended."""

from __future__ import annotations

import re

from conftest import bnsweep_env, on_terminal, write_space

TINY = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "batch_size": 50, "augment": False,
        "epochs": 2}


def test_a_sweep_on_a_terminal_shows_ray_starting_then_a_table_with_a_clock(ray_address, tmp_path):
    space = write_space(tmp_path / "onatty.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {TINY!r}
    """)
    code, screen = on_terminal(["run", str(space), "--storage", str(tmp_path / "results"), "--no-tracking"],
                               bnsweep_env(RAY_ADDRESS=ray_address), tmp_path)
    assert code == 0, screen[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert f"starting Ray (joining {ray_address}) ..." in text
    assert text.index("starting Ray") < text.index("arm")  # the line comes before the table
    assert re.search(r"\[\d+s\] (\d+ (completed|running|pending),? ?)+", text), text[-3000:]
    assert "2 completed" in text and "done" not in text, text[-3000:]
    assert "  bn             1 trial " in text and "1 trials" not in text  # the summary's counts agree
