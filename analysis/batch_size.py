"""Batch-size study: best validation accuracy, execution time and time per step per
batch size, BN and no BN, with the original study's numbers beside ours (claims 4 and 2).

A thin entry point: the analysis is the module bnsweep.analysis.batch_size, which
`bnsweep report` runs too and which also runs as `python -m bnsweep.analysis.batch_size`.

    python analysis/batch_size.py --experiment bnsweep-batch_size [--tracking-uri URI] [--out DIR]
"""

from bnsweep.analysis.batch_size import main
from bnsweep.analysis.common import run_script

if __name__ == "__main__":
    run_script(main)
