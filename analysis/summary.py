"""Summary: per study a table per arm and setting, and the study's five claims judged
from the data (supported, refuted, suggestive or undecided, with the reason).

A thin entry point: the analysis is the module bnsweep.analysis.summary, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.summary`.

    python analysis/summary.py --experiment bnsweep-summary [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.common import run_script
from bnsweep.analysis.summary import main

if __name__ == "__main__":
    run_script(main)
