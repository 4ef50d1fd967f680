"""`bnsweep report`: the figures a study asks for (its FIGURES, else those its data
supports; bnsweep/analysis/), its claims judged once, report.md and report.html beside
their PNG, SVG and CSV files, then the folder logged to the sweep's parent run in MLflow.
Everything comes from the sweep's record in MLflow (bnsweep/asks.py: what the study
asked, as the sweep ran); nothing depends on the study file's name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bnsweep.analysis import batch_size, curves, dropout, lr, optuna, original, summary
from bnsweep.analysis.claims import evaluate_claims
from bnsweep.analysis.common import Item, default_out, make_out_dir, save_table
from bnsweep.analysis.compare import comparison_items
from bnsweep.analysis.plots import nothing_to_draw
from bnsweep.analysis.render import comparison_html, comparison_markdown, render_html, render_markdown
from bnsweep.analysis.results import Results, ResultsError, load_experiment
from bnsweep.analysis.scale import smoke_mode
from bnsweep.analysis.tables import sort_trials, varied
from bnsweep.asks import FIGURES
from bnsweep.errors import UsageError
from bnsweep.storage import DEFAULT_STORAGE, contains

MODULES = (*FIGURES, "summary")  # bnsweep.analysis.<name>; summary runs last, always


def figures_for(results: Results) -> list[str]:
    """The figures the study asks for (its FIGURES, as the sweep recorded them); for a study
    that declares none, those its data supports."""
    if "figures" in results.asks:
        return list(results.asks["figures"])
    if results.search == "optuna":  # each trial its own lr and batch size: no grid figure to draw
        return ["optuna", "curves"]
    t = results.trials
    chosen = []
    if t["lr"].nunique() > 1:
        chosen.append("lr")
    if t["batch_size"].nunique() > 1:
        chosen.append("batch_size")
    if (t["dropout"].fillna(0) > 0).any() and (t["arm"] == "no_bn").any():
        chosen.append("dropout")
    return [*chosen, "curves"]


def scripts_for(results: Results) -> list[str]:
    """The analysis modules a report of `results` runs, in order."""
    return [*figures_for(results), "summary"]


def cannot_draw(name: str, results: Results) -> str | None:
    """Why the trials cannot give figure `name` (a study may ask for one its trials cannot fill), or None."""
    t = results.trials
    if name == "optuna" and results.search != "optuna":
        return "needs an Optuna search"
    if name == "dropout" and not (t["dropout"].fillna(0) > 0).any():
        return "needs trials with dropout"
    if name in ("curves", "dropout") and results.history.empty:
        return nothing_to_draw(t)  # in the ledger's words: "all 2 trials failed before their first epoch (...)"
    return None


def draw(name: str, results: Results, out: Path, theirs: original.PublishedSet | None = None) -> list[Item]:
    """bnsweep.analysis.<name>'s figures and tables of `results` into `out`."""
    if name not in FIGURES:
        raise ResultsError(f"no analysis figure {name!r}; there are {', '.join(FIGURES)}")
    if name == "curves":
        return curves.analyse(results, out)
    modules = {"lr": lr, "batch_size": batch_size, "dropout": dropout, "optuna": optuna}
    return modules[name].analyse(results, out, theirs)


def _reading_order(item: Item) -> int:
    """The verdicts first, then the pictures (each with the original's numbers beside it), then the tables."""
    if item.name.startswith("claims"):
        return 0
    return 1 if item.kind == "figure" or item.beside else 2


def build_report(experiment: str | list[str], out_dir: str | Path | None = None, tracking_uri: str | None = None,
                 *, parent_run_id: str | None = None, all_sweeps: bool = False, log_to_mlflow: bool = True) -> Path:
    """Draw the figures the study asks for on `experiment` (its latest sweep unless told
    otherwise), judge its claims once, write report.md and report.html with the figures and
    CSVs into out_dir (default reports/<experiment>), log the folder as artifacts (report/) of
    the sweep's parent run, and return the path of report.html. Two or more experiments:
    one report that sets them side by side (bnsweep/analysis/compare.py).

    Raises ResultsError (a BnsweepError) for an experiment that is missing, empty
    or not a bnsweep sweep; UsageError for an output folder that takes no file.
    """
    if not isinstance(experiment, str):
        if len(experiment) > 1:
            if parent_run_id is not None:
                raise UsageError("--sweep picks one sweep of one experiment; a comparison reads each experiment's "
                                 "latest sweep (or all of them, --all-sweeps)")
            return build_comparison(list(experiment), out_dir, tracking_uri, all_sweeps=all_sweeps)
        experiment = experiment[0]
    results = load_experiment(experiment, tracking_uri, parent_run_id, all_sweeps=all_sweeps)
    out = Path(out_dir) if out_dir is not None else default_out(experiment)
    check_out(out, results)
    out = make_out_dir(out)
    claims = evaluate_claims(results.trials, results.history, smoke_mode(results))  # once, for every reader
    theirs = original.published(results.asks)
    items: list[Item] = []
    notes = []
    wanted = figures_for(results)
    for name in wanted:
        why = cannot_draw(name, results)
        if why:
            notes.append(f"{name}: {why}")
            continue
        items.extend(draw(name, results, out, theirs))
    if theirs is not None and theirs.figure not in wanted:
        notes.append(f"{theirs.name} (ORIGINAL): drawn on the {theirs.figure} figure, which the study does not ask for")
    items.extend(summary.analyse(results, out, claims))
    items.sort(key=_reading_order)  # stable: a figure's companion table stays right after it
    items += overview_items(results, out)
    extra = [("not drawn", "; ".join(notes))] if notes else []
    (out / "report.md").write_text(render_markdown(results, items, claims, extra))
    (out / "report.html").write_text(render_html(results, items, claims, extra))
    if log_to_mlflow:
        written = [out / "report.md", out / "report.html", *(p for item in items for p in item.files.values())]
        _log_artifacts(results, out, list(dict.fromkeys(written)))
    return out / "report.html"


def build_comparison(experiments: list[str], out_dir: str | Path | None = None, tracking_uri: str | None = None,
                     *, all_sweeps: bool = False) -> Path:
    """Experiments side by side (bnsweep/analysis/compare.py): each one's scale box and header,
    their verdicts in one table (each experiment's claims judged once), the figures their studies
    ask for on shared axes; into out_dir (default reports/<A>_vs_<B>), not logged to MLflow (no
    one sweep's run owns it). Returns the path of report.html."""
    if len(set(experiments)) != len(experiments):
        raise UsageError(f"experiment {next(e for e in experiments if experiments.count(e) > 1)!r} is named twice; "
                         "a comparison sets different experiments side by side")
    runs = [load_experiment(e, tracking_uri, all_sweeps=all_sweeps) for e in experiments]
    out = Path(out_dir) if out_dir is not None else default_out("_vs_".join(experiments))
    for r in runs:
        check_out(out, r)
    out = make_out_dir(out)
    claims = [evaluate_claims(r.trials, r.history, smoke_mode(r)) for r in runs]
    items, notes = comparison_items(runs, claims, [figures_for(r) for r in runs], out)
    extra = [("not overlaid", "; ".join(notes))] if notes else []
    (out / "report.md").write_text(comparison_markdown(runs, claims, items, extra))
    (out / "report.html").write_text(comparison_html(runs, claims, items, extra))
    return out / "report.html"


def check_out(out: Path, results: Results) -> None:
    """Refuse, before anything is written, an output folder that holds what a report must never
    overwrite or copy into MLflow: the working folder itself, the MLflow store's files and
    artifacts, or a sweep's results. (A report in `.` once logged `./mlruns` into MLflow's
    artifacts, inside `./mlruns`, until the path was too long to create.)"""
    from mlflow import MlflowClient

    keep = {"the working folder": os.getcwd()}
    store = results.tracking_uri
    if store.startswith("sqlite:///"):
        keep["the MLflow store"] = store[len("sqlite:///"):]
    artifacts = MlflowClient(store).get_experiment_by_name(results.experiment).artifact_location
    for label, where in (("MLflow's artifact store", artifacts),
                         ("the results storage", os.environ.get("BNSWEEP_STORAGE") or DEFAULT_STORAGE),
                         *(("the sweep's results", d) for d in results.parents.get("sweep_dir", []))):
        local = _local_path(where)
        if local:
            keep[label] = local
    for label, path in keep.items():
        if contains(out, path):
            raise UsageError(f"--out {out} holds {label} ({path}); a report writes and uploads its own files "
                             f"only: pass a folder of its own, e.g. --out {default_out(results.experiment)}")


def _local_path(where) -> str | None:
    """A local path from a path or a file:// URI; None for a remote store or nothing."""
    from urllib.parse import unquote, urlparse

    if not isinstance(where, str) or not where:
        return None
    scheme = urlparse(where).scheme
    if scheme == "file":
        return unquote(urlparse(where).path)
    return None if scheme else os.path.abspath(where)  # s3://, mlflow-artifacts:/ (a server's), ...


def overview_items(results: Results, out: Path) -> list[Item]:
    """Every trial, one row each, in reading order (arm, then each varied setting by value, then seed)."""
    t = sort_trials(results.trials)
    # MLflow's status is in the CSV; outcome is the ledger's word (the run's `outcome` tag).
    cols = ["run_name", "outcome", "arm", *varied(t), "seed", "epochs_completed", "best_val_acc",
            "val_acc", "train_acc", "time_total_s", "run_id"]
    trials = t[[c for c in dict.fromkeys(cols) if c in t]]
    caption = ("Every trial of the sweep, one row each (trials.csv), by arm and then by each setting's value. "
               "outcome, in the words of the terminal and the sweep's ledger: completed; diverged (loss became "
               "NaN/inf; accuracy is what it reached); stopped (ended early by the scheduler, accuracy as reached); "
               "failed (for a reason no retry fixes); errored (failed its last retry); unfinished (interrupted: "
               "`bnsweep resume` continues it) or running. Accuracies are fractions of the validation images; "
               "best_val_acc is the best epoch's; time_total_s is training plus validation, in seconds.")
    data = t.drop(columns=["start_time", "end_time"], errors="ignore")
    return [save_table(out, "trials", data, "All trials", caption, trials)]


def _log_artifacts(results: Results, out: Path, files: list[Path]) -> None:
    """The files this report wrote, and nothing else of `out`, as the parent run's report/ artifacts."""
    from mlflow import MlflowClient

    run_id = results.parents["run_id"].iloc[0]
    try:
        client = MlflowClient(results.tracking_uri)
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="report")
    except Exception as e:  # noqa: BLE001 — the files on disk are the report; MLflow only holds a copy
        print(f"warning: the report is in {out}, but logging it to MLflow run {run_id} failed: "
              f"{type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
