"""Training curves: training and validation accuracy against epoch and wall-clock
time, BN vs no BN (claim 1).

A thin entry point: the analysis is the module bnsweep.analysis.curves, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.curves`.

    python analysis/curves.py --experiment bnsweep-curves [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.common import run_script
from bnsweep.analysis.curves import main

if __name__ == "__main__":
    run_script(main)
