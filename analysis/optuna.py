"""Optuna study, per arm: the best trials, the search history, each tuned parameter
against its accuracy, and whole configurations in parallel coordinates.

A thin entry point: the analysis is the module bnsweep.analysis.optuna, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.optuna`.

    python analysis/optuna.py --experiment bnsweep-optuna [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.common import run_script
from bnsweep.analysis.optuna import main

if __name__ == "__main__":
    run_script(main)
