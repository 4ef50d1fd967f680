"""Learning-rate study: best validation accuracy per initial learning rate, BN and no BN,
with the original study's numbers beside ours (claims 1 and 3).

A thin entry point: the analysis is the module bnsweep.analysis.lr, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.lr`.

    python analysis/lr.py --experiment bnsweep-lr [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.common import run_script
from bnsweep.analysis.lr import main

if __name__ == "__main__":
    run_script(main)
