"""Dropout comparison: training and validation accuracy and loss per epoch of no BN,
no BN + dropout and BN, with the original study's result beside ours (claim 5).

A thin entry point: the analysis is the module bnsweep.analysis.dropout, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.dropout`.

    python analysis/dropout.py --experiment bnsweep-dropout [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.common import run_script
from bnsweep.analysis.dropout import main

if __name__ == "__main__":
    run_script(main)
