"""What a person sees in a real terminal while a sweep runs: a line while Ray starts, then
the live table with a clock and the ledger's words for how trials ended."""

from __future__ import annotations

import os
import pty
import re
import subprocess

from conftest import bnsweep_cmd, bnsweep_env, write_space

TINY = {"dataset": "synthetic", "width": 0.0625, "n_train": 200, "n_val": 100, "batch_size": 50, "augment": False,
        "epochs": 2}


def test_a_sweep_on_a_terminal_shows_ray_starting_then_a_table_with_a_clock(ray_address, tmp_path):
    space = write_space(tmp_path / "onatty.py", f"""
        SPACE = {{"bn": [True, False]}}
        FIXED = {TINY!r}
    """)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(bnsweep_cmd("run", str(space), "--storage", str(tmp_path / "results"), "--no-tracking"),
                            env={**bnsweep_env(RAY_ADDRESS=ray_address), "COLUMNS": "120", "TERM": "xterm"},
                            cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        screen += chunk
    assert proc.wait(timeout=600) == 0, screen.decode(errors="replace")[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert f"starting Ray (joining {ray_address}) ..." in text
    assert text.index("starting Ray") < text.index("arm")  # the line comes before the table
    assert re.search(r"\[\d+s\] (\d+ (completed|running|pending),? ?)+", text), text[-3000:]
    assert "2 completed" in text and "done" not in text, text[-3000:]
    assert "  bn             1 trial " in text and "1 trials" not in text  # the summary's counts agree
