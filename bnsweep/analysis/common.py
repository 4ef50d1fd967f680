"""What every analysis module shares: its command line, loading the experiment,
the output folder, and saving figures (PNG + SVG + the CSV of the numbers drawn)
and tables (CSV, and LaTeX for a paper), each as an `Item` with the words a report
needs around it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bnsweep.analysis.results import Results, ResultsError, load_experiment
from bnsweep.analysis.scale import scale_tag
from bnsweep.analysis.tables import varied
from bnsweep.config import REFERENCE
from bnsweep.errors import BnsweepError, UsageError
from bnsweep.formats import cell, count, number
from bnsweep.storage import folder_name

DEFAULT_OUT = Path("reports")


@dataclass
class Item:
    """One output of a module: a figure (PNG+SVG+CSV) or a table (CSV+TeX), with the words
    a report needs around it."""

    kind: str  # "figure" or "table"
    name: str
    title: str
    caption: str
    files: dict[str, Path] = field(default_factory=dict)  # "png", "svg", "csv", "tex" -> path
    table: pd.DataFrame | None = None  # tables shown inline in the report
    beside: bool = False  # a table the report shows right after the figure before it (the original's numbers)


def script_parser(doc: str, many: bool = False) -> argparse.ArgumentParser:
    """The command line every analysis module shares; `doc` is the module's docstring,
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


def default_out(experiment: str) -> Path:
    """reports/<experiment>, the name made a single folder (storage.folder_name: never outside reports/)."""
    return DEFAULT_OUT / folder_name(experiment)


def out_dir(args: argparse.Namespace, results: Results) -> Path:
    return make_out_dir(args.out or default_out(results.experiment))


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
    """The `if __name__ == "__main__"` of an analysis module: expected errors as one line, no traceback."""
    try:
        items = main(sys.argv[1:])
    except BnsweepError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    for item in items:
        print(f"{item.title}: " + ", ".join(str(p) for p in item.files.values()))


def require(ok: bool, results: Results, script: str, needs: str) -> None:
    """A module asked to analyse a study that cannot answer it: say what the experiment holds."""
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
             f"{count(len(t), 'trial')}, {count(seeds, 'seed')}",
             f"{'/'.join(map(str, epochs))} epoch{'s' if epochs != [1] else ''}", *extra, data_note(results),
             scale_tag(results)]
    return " · ".join(p for p in parts if p)


def finish(fig, title: str, results: Results, *extra: str) -> None:
    fig.suptitle(f"{title}\n{subtitle(results, *extra)}", fontsize=11)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 4.2):
    """A figure of nrows x ncols panels, each width x height inches; (fig, 2-D array of axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes


def save_figure(fig, out: Path, name: str, data: pd.DataFrame, title: str, caption: str) -> Item:
    import matplotlib.pyplot as plt

    files = {"png": out / f"{name}.png", "svg": out / f"{name}.svg", "csv": out / f"{name}.csv"}
    fig.savefig(files["png"], dpi=130, bbox_inches="tight")
    fig.savefig(files["svg"], bbox_inches="tight")
    plt.close(fig)
    data.to_csv(files["csv"], index=False)
    return Item("figure", name, title, caption, files)


def save_table(out: Path, name: str, data: pd.DataFrame, title: str, caption: str,
               shown: pd.DataFrame | None = None, beside: bool = False) -> Item:
    """A table as CSV (all of `data`) and as LaTeX (what the report shows: `shown`, default
    `data`, whose columns are some of data's, renamed, on the same rows)."""
    shown = shown if shown is not None else data
    files = {"csv": out / f"{name}.csv", "tex": out / f"{name}.tex"}
    data.to_csv(files["csv"], index=False)
    files["tex"].write_text(latex_table(shown, title, caption))
    return Item("table", name, title, caption, files, shown, beside)


LATEX_WRAP = 40  # characters: a text column longer than this wraps in a paragraph column (p{}) of a page's width


def latex_table(df: pd.DataFrame, title: str = "", caption: str = "") -> str:
    """A LaTeX tabular (booktabs: \\toprule, \\midrule, \\bottomrule) through pandas, for
    \\input{} into a paper: numbers to 4 significant digits, right-aligned; text escaped;
    long text in wrapping columns. The title and caption come first, as comments."""
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    long = [c for c in df.columns if c not in numeric and df[c].astype(str).str.len().max() > LATEX_WRAP]
    align = "".join("p{%.2f\\linewidth}" % (0.8 / len(long)) if c in long else "r" if c in numeric else "l"
                    for c in df.columns)
    cells = df.apply(lambda col: col.map(lambda v: table_cell(v, col.name)))  # as the report's tables write them
    body = cells.to_latex(index=False, escape=True, column_format=align)
    words = [f"% {line}" for line in textwrap.wrap(f"{title}. {caption}" if title else caption, 100)]
    return "\n".join([*words, "% needs \\usepackage{booktabs}", body])


def table_cell(v, column) -> str:
    """One cell of a report table (markdown, HTML, LaTeX): a setting's column (a config key: lr,
    batch_size, seed...) as formats.number writes the value tried, any other number to 4
    significant digits in the same spelling, yes/no, and a dash where there is no value."""
    return cell(v, setting=column in REFERENCE)


def config_label(runs: pd.DataFrame, results: Results) -> str:
    """The varied settings of one configuration's runs and its number of seeds, for a legend."""
    keys = [k for k in varied(results.trials) if k in runs]
    parts = [f"{k}={number(runs[k].iloc[0])}" for k in keys]
    parts.append(count(runs["seed"].nunique(), "seed"))
    return ", ".join(parts)
