"""MLflow → pandas → figures and tables, one module per study.

Each study module (lr, batch_size, curves, dropout, optuna, summary) has a
`main(argv=None, results=None) -> list[Item]` and runs alone as
`python -m bnsweep.analysis.<name> --experiment bnsweep-<study>`; `bnsweep report`
(bnsweep/report.py) imports and runs the ones a study needs. The shared parts:
common (command line, output files), plots (colours, curves), scale (how the
sweep compares with the reference experiment), original (the original study's
published numbers) and render (report.md and report.html).
"""
