"""`bnsweep report`: run the analysis modules a study needs (bnsweep/analysis/) on
one experiment and write report.md and report.html beside their PNG, SVG and CSV
files, then log the folder to the sweep's parent run in MLflow.

The modules are imported from the installed package, so a report needs nothing
but bnsweep itself (a wheel works as well as a checkout).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from bnsweep.analysis.common import Item, default_out, make_out_dir, save_table
from bnsweep.analysis.render import render_html, render_markdown
from bnsweep.errors import UsageError
from bnsweep.results import Results, ResultsError, load_experiment
from bnsweep.storage import DEFAULT_STORAGE, contains
from bnsweep.tables import sort_trials, varied

# Which modules answer which study (the search-space file stem). Studies not
# listed get the modules their data supports (see scripts_for). summary runs last, always.
STUDY_SCRIPTS = {
    "quick": ("curves",),
    "lr": ("lr", "curves"),
    "batch_size": ("batch_size", "curves"),
    "quick_batch_size": ("batch_size", "curves"),
    "dropout": ("dropout",),
    "quick_dropout": ("dropout",),
    "optuna": ("optuna",),
}
MODULES = ("lr", "batch_size", "curves", "dropout", "optuna", "summary")  # bnsweep.analysis.<name>


def scripts_for(results: Results) -> list[str]:
    """The analysis modules that answer this study; for a study bnsweep does not know,
    those its data supports."""
    if results.study in STUDY_SCRIPTS:
        return [*STUDY_SCRIPTS[results.study], "summary"]
    if results.search == "optuna":  # each trial its own lr and batch size: no grid figure to draw
        return ["optuna", "curves", "summary"]
    t = results.trials
    chosen = []
    if t["lr"].nunique() > 1:
        chosen.append("lr")
    if t["batch_size"].nunique() > 1:
        chosen.append("batch_size")
    if (t["dropout"].fillna(0) > 0).any() and (t["arm"] == "no_bn").any():
        chosen.append("dropout")
    return [*chosen, "curves", "summary"]


def run_analysis(name: str, argv: list[str], results: Results | None = None) -> list[Item]:
    """bnsweep.analysis.<name>.main(argv, results): the module's figures and tables."""
    if name not in MODULES:
        raise ResultsError(f"no analysis module {name!r}; there are {', '.join(MODULES)}")
    return importlib.import_module(f"bnsweep.analysis.{name}").main(argv, results=results)


def _reading_order(item: Item) -> int:
    """The verdicts first, then the pictures (each with the original's numbers beside it), then the tables."""
    if item.name.startswith("claims"):
        return 0
    return 1 if item.kind == "figure" or item.beside else 2


def build_report(experiment: str, out_dir: str | Path | None = None, tracking_uri: str | None = None, *,
                 parent_run_id: str | None = None, all_sweeps: bool = False, log_to_mlflow: bool = True) -> Path:
    """Run the study's analysis modules on `experiment` (its latest sweep unless told
    otherwise), write report.md and report.html with the figures and CSVs into
    out_dir (default reports/<experiment>), log the folder as artifacts (report/) of
    the sweep's parent run, and return the path of report.html.

    Raises ResultsError (a BnsweepError) for an experiment that is missing, empty
    or not a bnsweep sweep; UsageError for an output folder that takes no file.
    """
    results = load_experiment(experiment, tracking_uri, parent_run_id, all_sweeps=all_sweeps)
    out = Path(out_dir) if out_dir is not None else default_out(experiment)
    check_out(out, results)
    out = make_out_dir(out)
    argv = ["--experiment", experiment, "--tracking-uri", results.tracking_uri, "--out", str(out)]
    argv += ["--all-sweeps"] if all_sweeps else ["--sweep", str(results.parents["run_id"].iloc[0])]
    items: list[Item] = []
    for name in scripts_for(results):
        items.extend(run_analysis(name, argv, results=results))
    items.sort(key=_reading_order)  # stable: a figure's companion table stays right after it
    items += overview_items(results, out)
    (out / "report.md").write_text(render_markdown(results, items))
    (out / "report.html").write_text(render_html(results, items))
    if log_to_mlflow:
        written = [out / "report.md", out / "report.html", *(p for item in items for p in item.files.values())]
        _log_artifacts(results, out, list(dict.fromkeys(written)))
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
    # MLflow's status is in the CSV; outcome says the same, and says diverged too.
    cols = ["run_name", "outcome", "arm", *varied(t), "seed", "epochs_completed", "best_val_acc",
            "val_acc", "train_acc", "time_total_s", "run_id"]
    trials = t[[c for c in dict.fromkeys(cols) if c in t]]
    caption = ("Every trial of the sweep, one row each (trials.csv), by arm and then by each setting's value. "
               "outcome: completed, diverged (loss became NaN/inf; accuracy is what it reached), failed (the trial "
               "errored), killed or running (unfinished). Accuracies are fractions of the validation images; "
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
