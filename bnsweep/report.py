"""Figures, tables and the report: what the analysis/ scripts share, and
`build_report`, which runs the scripts a study needs and writes report.md and
report.html beside their PNG, SVG and CSV files.

Every figure is saved as PNG and SVG with a CSV of the numbers drawn, so a
reader can re-plot or check any of them. The scripts themselves stay plain
files under analysis/ (nothing imports them); build_report runs them with runpy.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import runpy
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from bnsweep.errors import BnsweepError, UsageError
from bnsweep.results import (CHANCE, STUDY_CLAIMS, Results, ResultsError, arm_label, evaluate_claims,
                             load_experiment, varied)

ANALYSIS_DIR = Path(__file__).resolve().parents[1] / "analysis"
DEFAULT_OUT = Path("reports")

ARM_COLORS = {"bn": "#1f77b4", "no_bn": "#ff7f0e", "no_bn+dropout": "#2ca02c", "bn+dropout": "#9467bd"}
ARM_MARKERS = {"bn": "o", "no_bn": "s", "no_bn+dropout": "^", "bn+dropout": "D"}
DIVERGED_HATCH = "///"

# Which scripts answer which study (the search-space file stem). Studies not
# listed get the scripts their data supports (see scripts_for). summary runs last, always.
STUDY_SCRIPTS = {
    "quick": ("curves",),
    "lr": ("lr", "curves"),
    "batch_size": ("batch_size", "curves"),
    "quick_batch_size": ("batch_size", "curves"),
    "dropout": ("dropout",),
    "quick_dropout": ("dropout",),
    "optuna": ("optuna",),
}


def arm_color(arm: str) -> str:
    return ARM_COLORS.get(arm, "#7f7f7f")


@dataclass
class Item:
    """One output of a script: a figure (PNG+SVG+CSV) or a table (CSV), with the words
    a report needs around it."""

    kind: str  # "figure" or "table"
    name: str
    title: str
    caption: str
    files: dict[str, Path] = field(default_factory=dict)  # "png", "svg", "csv" -> path
    table: pd.DataFrame | None = None  # tables shown inline in the report


# --------------------------------------------------------------------------
# Script plumbing
# --------------------------------------------------------------------------

def script_parser(doc: str, many: bool = False) -> argparse.ArgumentParser:
    """The command line every analysis script shares; `doc` is the script's docstring,
    whose first paragraph describes it in --help."""
    p = argparse.ArgumentParser(description=" ".join(doc.strip().split("\n\n")[0].split()))
    p.add_argument("--experiment", required=True, action="append" if many else "store",
                   help="MLflow experiment name, e.g. bnsweep-lr" + (" (repeat for several)" if many else ""))
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<experiment>)")
    p.add_argument("--sweep", metavar="PARENT_RUN_ID", help="a sweep other than the latest")
    p.add_argument("--all-sweeps", action="store_true", help="every sweep of the experiment, not just the latest")
    p.add_argument("--study", help="fail unless the sweep's study is this one")
    return p


def load(args: argparse.Namespace, experiment: str | None = None) -> Results:
    return load_experiment(experiment or args.experiment, args.tracking_uri, args.sweep,
                           all_sweeps=args.all_sweeps, study=args.study)


def out_dir(args: argparse.Namespace, results: Results) -> Path:
    return make_out_dir(args.out or DEFAULT_OUT / results.experiment)


def make_out_dir(out: Path) -> Path:
    """The output folder, made if need be, and checked to take a file (an existing folder
    may be read-only): fail now, in one line, not at the first figure."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f"cannot write the report to {out}: {e.strerror}; pass --out DIR") from None
    return out


def run_script(main: Callable[[Sequence[str] | None], list[Item]]) -> None:
    """The `if __name__ == "__main__"` of an analysis script: expected errors as one line, no traceback."""
    try:
        items = main(sys.argv[1:])
    except BnsweepError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    for item in items:
        print(f"{item.title}: " + ", ".join(str(p) for p in item.files.values()))


def require(ok: bool, results: Results, script: str, needs: str) -> None:
    """A script asked to analyse a study that cannot answer it: say what the experiment holds."""
    if not ok:
        raise ResultsError(f"{script} needs {needs}, but experiment {results.experiment!r} (study "
                           f"{results.study!r}, {results.note}) has none; run it on a study that does")


def data_note(results: Results) -> str:
    """What the data is, when it is not the official CIFAR-10; a reader must not mistake it."""
    sources = set(results.trials["dataset_source"].dropna()) - {"official", "None"}
    return f"data: {', '.join(sorted(sources))} (not the official CIFAR-10)" if sources else ""


def subtitle(results: Results, *extra: str) -> str:
    t = results.trials
    seeds = t.groupby("arm")["seed"].nunique().max()
    epochs = sorted(set(t["epochs"].dropna().astype(int)))
    parts = [f"{results.experiment}, sweep {', '.join(results.parents['run_name'])}",
             f"{len(t)} trials, {seeds} seed{'s' if seeds != 1 else ''}",
             f"{'/'.join(map(str, epochs))} epochs", *extra, data_note(results)]
    return " · ".join(p for p in parts if p)


def finish(fig, title: str, results: Results, *extra: str) -> None:
    fig.suptitle(f"{title}\n{subtitle(results, *extra)}", fontsize=11)


def chance_line(ax) -> None:
    ax.axhline(CHANCE, color="grey", linestyle="--", linewidth=1, label="chance (10 classes)", zorder=1)


def log_scale(axis) -> None:
    """A log axis labelled in plain numbers at 1, 2 and 5 of each decade, minor ticks
    unlabelled: matplotlib's default labels either only the decades (10^-2) or every
    minor tick, which crowds the axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig, out: Path, name: str, data: pd.DataFrame, title: str, caption: str) -> Item:
    import matplotlib.pyplot as plt

    files = {"png": out / f"{name}.png", "svg": out / f"{name}.svg", "csv": out / f"{name}.csv"}
    fig.savefig(files["png"], dpi=130, bbox_inches="tight")
    fig.savefig(files["svg"], bbox_inches="tight")
    plt.close(fig)
    data.to_csv(files["csv"], index=False)
    return Item("figure", name, title, caption, files)


def save_table(out: Path, name: str, data: pd.DataFrame, title: str, caption: str,
               shown: pd.DataFrame | None = None) -> Item:
    path = out / f"{name}.csv"
    data.to_csv(path, index=False)
    return Item("table", name, title, caption, {"csv": path}, shown if shown is not None else data)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes


def fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def config_label(runs: pd.DataFrame, results: Results) -> str:
    keys = [k for k in varied(results.trials) if k in runs]
    parts = [f"{k}={fmt_value(runs[k].iloc[0])}" for k in keys]
    n = runs["seed"].nunique()
    parts.append(f"{n} seed{'s' if n != 1 else ''}")
    return ", ".join(parts)


# --------------------------------------------------------------------------
# Shared plots
# --------------------------------------------------------------------------

def plot_mean_band(ax, x: pd.Series, mean: pd.Series, std: pd.Series, n: pd.Series, *, color: str,
                   label: str, linestyle: str = "-", marker: str | None = "o") -> None:
    """A mean line with a ±1 sd band where more than one run contributes."""
    ax.plot(x, mean, color=color, linestyle=linestyle, marker=marker, markersize=4, label=label)
    if (n > 1).any():
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)


def curves_table(results: Results, runs_by_arm: dict[str, pd.DataFrame], metrics: Sequence[str]) -> pd.DataFrame:
    """Per arm and epoch: mean and sd over seeds of `metrics` and of the cumulative wall time."""
    from bnsweep.results import epoch_stats

    frames = []
    for arm, runs in runs_by_arm.items():
        done = runs[runs["outcome"].isin(["completed", "diverged"])]
        runs = done if len(done) else runs  # failed / unfinished trials only where there is nothing else
        h = results.history[results.history["run_id"].isin(runs["run_id"])]
        if h.empty:
            continue
        stats = epoch_stats(h, metrics)
        stats.insert(0, "arm", arm)
        stats.insert(1, "config", config_label(runs, results))
        stats["run_ids"] = ";".join(runs["run_id"])
        frames.append(stats)
    if not frames:
        raise ResultsError(f"experiment {results.experiment!r}: no trial has logged an epoch yet")
    return pd.concat(frames, ignore_index=True)


def plot_curve_panel(ax, table: pd.DataFrame, metric: str, x: str, linestyle: str = "-",
                     label_suffix: str = "") -> None:
    for arm, g in table.groupby("arm", sort=False):
        xs = g["epoch"] if x == "epoch" else g["time_total_s_mean"]
        plot_mean_band(ax, xs, g[f"{metric}_mean"], g[f"{metric}_std"], g["n_runs"], color=arm_color(arm),
                       label=f"{arm_label(arm)}{label_suffix} ({g['config'].iloc[0]})", linestyle=linestyle,
                       marker=ARM_MARKERS.get(arm, "o"))
    if x == "epoch":
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.set_xlabel("wall-clock time (s, cumulative training + validation)")
        ax.set_xlim(left=0)  # time starts at 0: how soon each arm gets there


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------

def scripts_for(results: Results) -> list[str]:
    """The analysis scripts that answer this study; for a study bnsweep does not know,
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
    path = ANALYSIS_DIR / f"{name}.py"
    if not path.is_file():
        raise ResultsError(f"analysis script {path} is missing: bnsweep report needs the analysis/ folder "
                           "of a bnsweep checkout (pip install -e . from the repository)")
    module = runpy.run_path(str(path), run_name=f"bnsweep_analysis_{name}")
    return module["main"](argv, results=results)


def build_report(experiment: str, out_dir: str | Path | None = None, tracking_uri: str | None = None, *,
                 parent_run_id: str | None = None, all_sweeps: bool = False, log_to_mlflow: bool = True) -> Path:
    """Run the study's analysis scripts on `experiment` (its latest sweep unless told
    otherwise), write report.md and report.html with the figures and CSVs into
    out_dir (default reports/<experiment>), log the folder as artifacts (report/) of
    the sweep's parent run, and return the path of report.html.

    Raises ResultsError (a BnsweepError) for an experiment that is missing, empty
    or not a bnsweep sweep.
    """
    results = load_experiment(experiment, tracking_uri, parent_run_id, all_sweeps=all_sweeps)
    out = make_out_dir(Path(out_dir) if out_dir is not None else DEFAULT_OUT / experiment)
    argv = ["--experiment", experiment, "--tracking-uri", results.tracking_uri, "--out", str(out)]
    argv += ["--all-sweeps"] if all_sweeps else ["--sweep", str(results.parents["run_id"].iloc[0])]
    items: list[Item] = []
    for name in scripts_for(results):
        items.extend(run_analysis(name, argv, results=results))
    # A reader wants the verdicts first, then the pictures, then the tables behind them.
    items.sort(key=lambda i: 0 if i.name.startswith("claims") else 1 if i.kind == "figure" else 2)
    items += overview_items(results, out)
    md, page = render_markdown(results, items), render_html(results, items)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(page)
    if log_to_mlflow:
        _log_artifacts(results, out)
    return out / "report.html"


def overview_items(results: Results, out: Path) -> list[Item]:
    t = results.trials
    cols = ["run_name", "outcome", "status", "arm", *varied(t), "seed", "epochs_completed", "best_val_acc",
            "val_acc", "train_acc", "time_total_s", "run_id"]
    trials = t[[c for c in dict.fromkeys(cols) if c in t]].sort_values(["arm", "run_name"])
    caption = ("Every trial of the sweep, one row each (trials.csv). outcome: completed, diverged (loss became "
               "NaN/inf; accuracy is what it reached), failed (the trial errored), killed or running (unfinished). "
               "Accuracies are fractions of the validation images; best_val_acc is the best epoch's.")
    return [save_table(out, "trials", t.drop(columns=["start_time", "end_time"]), "All trials", caption, trials)]


def _log_artifacts(results: Results, out: Path) -> None:
    from mlflow import MlflowClient

    run_id = results.parents["run_id"].iloc[0]
    try:
        MlflowClient(results.tracking_uri).log_artifacts(run_id, str(out), artifact_path="report")
    except Exception as e:  # noqa: BLE001 — the files on disk are the report; MLflow only holds a copy
        print(f"warning: the report is in {out}, but logging it to MLflow run {run_id} failed: "
              f"{type(e).__name__}: {str(e)[:200]}", file=sys.stderr)


def _header(results: Results) -> list[tuple[str, str]]:
    t = results.trials
    outcomes = t["outcome"].value_counts()
    rows = [
        ("experiment", results.experiment),
        ("study", f"{results.study} ({results.search} search)"),
        ("sweep", results.note),
        ("tracking URI", results.tracking_uri),
        ("trials", ", ".join(f"{n} {o}" for o, n in outcomes.items())),
        ("data", ", ".join(sorted(set(t["dataset_source"].dropna().astype(str)))) or "unknown"),
        ("code", ", ".join(sorted(set(t["git_commit"].dropna().astype(str)))) or "unknown"),
        ("devices", ", ".join(sorted(set(t["device_name"].dropna().astype(str)))) or "unknown"),
        ("speaks to", _speaks_to(results)),
    ]
    note = data_note(results)
    if note:
        rows.append(("warning", f"{note}: the numbers say nothing about the study's claims on CIFAR-10"))
    return rows


def _speaks_to(results: Results) -> str:
    """The claims the study was designed to test, each with its verdict from these trials."""
    ours = STUDY_CLAIMS.get(results.study, ())
    if not ours:
        return f"no claim declared for study {results.study!r}; each is judged below from what its trials hold"
    claims = {c.number: c for c in evaluate_claims(results.trials, results.history)}
    return "; ".join(f"claim {n} ({claims[n].statement}): {claims[n].verdict}" for n in ours)


def _md_cell(v) -> str:
    if isinstance(v, float):
        v = "" if math.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(results: Results, items: list[Item]) -> str:
    out = [f"# Batch Normalization study: {results.experiment}", ""]
    out += [f"- **{k}**: {v}" for k, v in _header(results)] + [""]
    for item in items:
        out += [f"## {item.title}", ""]
        if item.kind == "figure":
            out += [f"![{item.title}]({item.files['png'].name})", ""]
        if item.table is not None:
            out += [markdown_table(item.table), ""]
        links = ", ".join(f"[{k.upper()}]({p.name})" for k, p in item.files.items())
        out += [item.caption, "", f"Files: {links}", ""]
    return "\n".join(out)


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0, classes="t")


def render_html(results: Results, items: list[Item]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(results.experiment)} — bnsweep report"
             "</title><style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%}table.t{border-collapse:collapse;font-size:0.85em}"
             "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px}figcaption,.cap{color:#333}</style>"
             f"</head><body><h1>Batch Normalization study: {e(results.experiment)}</h1><ul>"]
    parts += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in _header(results)]
    parts.append("</ul>")
    for item in items:
        parts.append(f"<h2>{e(item.title)}</h2>")
        if item.kind == "figure":
            data = base64.b64encode(item.files["png"].read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(item.title)}' src='data:image/png;base64,{data}'></figure>")
        if item.table is not None:
            parts.append(_html_table(item.table))
        links = ", ".join(f"<a href='{e(p.name)}'>{k.upper()}</a>" for k, p in item.files.items())
        parts.append(f"<p class='cap'>{e(item.caption)}</p><p>Files: {links}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)

