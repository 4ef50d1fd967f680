"""MLflow → pandas → figures and tables: the read side of bnsweep.

Each figure module (lr, batch_size, curves, dropout, optuna)
has `analyse(results, out, ...) -> list[Item]`, a function from the loaded results
(bnsweep.analysis.results.Results) to figures and tables, and a thin `main(argv)` that runs
alone as `python -m bnsweep.analysis.<name> --experiment bnsweep-<study>`; summary
takes the claims as judged once by its caller. `bnsweep report` (bnsweep/analysis/report.py)
draws the ones the study asks for (its FIGURES, bnsweep/asks.py); compare sets
experiments side by side. The shared parts: common (command line, output files),
plots (colours, curves), scale (how the sweep compares with the reference experiment),
original (published numbers: the original study's, or a study's own) and render
(report.md and report.html).
"""
