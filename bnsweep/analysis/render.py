"""report.md and report.html from the items of the analysis modules: a header that
says what the sweep is and how far to trust it (its scale against the reference,
the evidence a verdict needs), then each figure and table with its caption.

The HTML is one self-contained file (figures inlined as PNG) that reads on a
1280 px screen: wide tables scroll inside their own box instead of widening the
page, numbers are right-aligned, and a click on a column header sorts by it
(numbers as numbers).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bnsweep.analysis.claims import evaluate_claims
from bnsweep.analysis.common import Item, data_note, table_cell
from bnsweep.analysis.evidence import EVIDENCE_RULE, Claim
from bnsweep.analysis.evidence import speaks_to as claims_speaks_to
from bnsweep.analysis.results import Results
from bnsweep.analysis.scale import scale_note, scale_rows, smoke_mode
from bnsweep.formats import MISSING


def header_rows(results: Results, claims: list[Claim] | None = None) -> list[tuple[str, str]]:
    """(label, text) pairs: what the sweep is, what it speaks to, and how far to trust it.
    `claims`: the claims as judged for this report (judged here if not given)."""
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
        ("speaks to", speaks_to(results, claims)),
        ("verdicts", EVIDENCE_RULE),
    ]
    if (t["dataset_source"] == "synthetic").any():  # a copy of CIFAR-10 is flagged in the scale box instead
        rows.append(("warning", f"{data_note(results)}: the numbers say nothing about the study's claims on CIFAR-10"))
    return rows


def speaks_to(results: Results, claims: list[Claim] | None = None) -> str:
    """The claims the study speaks to (its CLAIMS, else those its trials could compare), each with
    its verdict from these trials; a declared claim its trials cannot compare says so."""
    if claims is None:
        claims = evaluate_claims(results.trials, results.history, smoke_mode(results))
    by_number = {c.number: c for c in claims}
    declared = results.asks.get("claims")
    ours = claims_speaks_to(claims, declared)

    def line(n: int) -> str:
        c = by_number[n]
        if not c.tests:  # declared, but nothing in these trials to compare
            return f"claim {n} ({c.statement}): declared, but these trials cannot speak to it: {c.verdict}"
        return f"claim {n} ({c.statement}): {c.verdict}"

    if declared is None:
        if not ours:
            return "no claim declared (CLAIMS), and its trials can compare none; each is judged below"
        return "no claim declared (CLAIMS); those its trials could compare: " + "; ".join(map(line, ours))
    if not ours:
        return "no claim (CLAIMS = []); each is judged below from what its trials hold"
    return "; ".join(map(line, ours))


def scale_table(results: Results) -> pd.DataFrame:
    """The scale header as a table: setting, the reference's value, this sweep's, and a mark where they differ."""
    return pd.DataFrame([{"setting": r.setting, "reference": r.reference, "this sweep": r.sweep,
                          "differs": "yes" if r.differs else ""} for r in scale_rows(results)])


# ------------------------------------------------------------------ markdown ---

def _md_cell(v, column) -> str:
    return table_cell(v, column).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(_md_cell(v, c) for v, c in zip(row, df.columns)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(results: Results, items: list[Item], claims: list[Claim] | None = None,
                    extra: Sequence[tuple[str, str]] = ()) -> str:
    out = [f"# Batch Normalization study: {results.experiment}", ""]
    out += _markdown_scale(results)
    out += [f"- **{k}**: {v}" for k, v in [*header_rows(results, claims), *extra]] + [""]
    return "\n".join(out + _markdown_items(items))


def _markdown_scale(results: Results) -> list[str]:
    note = scale_note(results)
    if note:
        return [f"> **Scale.** {note}", "", markdown_table(scale_table(results)), ""]
    return ["> **Scale.** The reference experiment: every setting as the study's, on the official data.", ""]


def _markdown_items(items: list[Item]) -> list[str]:
    out = []
    for item in items:
        out += [f"{'###' if item.beside else '##'} {item.title}", ""]
        if item.kind == "figure":
            out += [f"![{item.title}]({item.files['png'].name})", ""]
        if item.table is not None:
            out += [markdown_table(item.table), ""]
        links = ", ".join(f"[{k.upper()}]({p.name})" for k, p in item.files.items())
        out += [item.caption, "", f"Files: {links}", ""]
    return out


def comparison_markdown(runs: list[Results], claims: list[list[Claim]], items: list[Item],
                        extra: Sequence[tuple[str, str]] = ()) -> str:
    """Experiments side by side: per experiment its scale box and header, then the shared verdicts and figures."""
    out = [f"# Batch Normalization study: {' vs '.join(r.experiment for r in runs)}", ""]
    out += [f"- **{k}**: {v}" for k, v in [("verdicts", EVIDENCE_RULE), *extra]] + [""]
    for r, judged in zip(runs, claims):
        out += [f"## Experiment {r.experiment}", "", *_markdown_scale(r)]
        out += [f"- **{k}**: {v}" for k, v in header_rows(r, judged) if k not in ("experiment", "verdicts")] + [""]
    return "\n".join(out + _markdown_items(items))


# ---------------------------------------------------------------------- html ---

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45;color:#222;max-width:1180px;
 margin:1.5em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.3em}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
ul.meta{padding-left:1.2em;font-size:.92em}
ul.meta li{margin:.15em 0}
img{max-width:100%;height:auto}
figure{margin:1em 0}
.box{border-left:4px solid #c98a00;background:#fff7e0;padding:.6em 1em;margin:1em 0}
.box.ok{border-color:#2e7d32;background:#eef7ee}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0}
table.t{border-collapse:collapse;font-size:.85em}
table.t th,table.t td{border:1px solid #d5d9e0;padding:3px 7px;vertical-align:top}
table.t th{background:#eef1f6;text-align:left;cursor:pointer;font-weight:600}
table.t th:hover{background:#dde3ec}
table.t tbody tr:nth-child(even){background:#f8f9fb}
table.t td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.t td.w{min-width:16em;max-width:44em}
table.t tr.diff td{background:#fff1cc}
.cap{color:#333;font-size:.92em;max-width:60em}
.files{font-size:.85em;color:#555}
"""

# A click on a header sorts the rows by that column; numbers (data-v) as numbers, blanks last.
SORT_SCRIPT = """
document.querySelectorAll('table.t').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){
  th.title='click to sort';
  th.addEventListener('click',function(){
   var body=t.tBodies[0],rows=Array.from(body.rows),up=th.dataset.dir!=='up';
   t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=up?'up':'down';
   function key(r){var c=r.cells[i];return c.dataset.v!==undefined?parseFloat(c.dataset.v):c.textContent}
   rows.sort(function(a,b){var x=key(a),y=key(b);
    if(x===''||Number.isNaN(x))return 1;if(y===''||Number.isNaN(y))return -1;
    var d=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
    return up?d:-d});
   rows.forEach(function(r){body.appendChild(r)});
  });
 });
});
"""

LONG_TEXT = 60  # characters: a column holding text this long wraps in a wide cell instead of stretching the table


def _cell(v, column) -> tuple[str, str]:
    """(attributes, text) of one table cell (common.table_cell's text): numbers right-aligned, with
    their value for sorting; a missing one sorts last."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return " class='n' data-v=''", MISSING
    if isinstance(v, (bool, np.bool_)):
        return "", table_cell(v, column)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return f" class='n' data-v='{float(v)!r}'", table_cell(v, column)
    return "", html.escape(str(v))


def html_table(df: pd.DataFrame, row_class=None) -> str:
    """A DataFrame as a sortable, horizontally scrolling table; row_class(row) may name a CSS class per row."""
    wide = {c for c in df.columns if df[c].astype(str).str.len().max() > LONG_TEXT}
    # Headers may break after an underscore, so that names like best_val_acc_mean need no wide column.
    head = "".join(f"<th>{html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in df.columns)
    rows = []
    for _, row in df.iterrows():
        cells = []
        for c in df.columns:
            attrs, text = _cell(row[c], c)
            if not attrs and c in wide:
                attrs = " class='w'"
            cells.append(f"<td{attrs}>{text}</td>")
        cls = row_class(row) if row_class else ""
        rows.append((f"<tr class='{cls}'>" if cls else "<tr>") + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='t'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _scale_box(results: Results) -> str:
    note = scale_note(results)
    if not note:
        return ("<div class='box ok'><b>Scale.</b> The reference experiment: every setting as the study's, "
                "on the official data.</div>")
    table = html_table(scale_table(results), lambda r: "diff" if r["differs"] else "")
    return f"<div class='box scale'><b>Scale.</b> {html.escape(note)}{table}</div>"


def _html_page(title: str) -> list[str]:
    return [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)} — bnsweep report</title><style>{STYLE}</style></head><body>"
            f"<h1>Batch Normalization study: {html.escape(title)}</h1>"]


def _html_meta(rows: Sequence[tuple[str, str]]) -> str:
    e = html.escape
    return "<ul class='meta'>" + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in rows) + "</ul>"


def _html_items(items: list[Item]) -> list[str]:
    e = html.escape
    parts = []
    for item in items:
        parts.append(f"<h3>{e(item.title)}</h3>" if item.beside else f"<h2>{e(item.title)}</h2>")
        if item.kind == "figure":
            data = base64.b64encode(item.files["png"].read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(item.title)}' src='data:image/png;base64,{data}'></figure>")
        if item.table is not None:
            parts.append(html_table(item.table))
        links = ", ".join(f"<a href='{e(p.name)}'>{k.upper()}</a>" for k, p in item.files.items())
        parts.append(f"<p class='cap'>{e(item.caption)}</p><p class='files'>Files: {links}</p>")
    return [*parts, f"<script>{SORT_SCRIPT}</script></body></html>"]


def render_html(results: Results, items: list[Item], claims: list[Claim] | None = None,
                extra: Sequence[tuple[str, str]] = ()) -> str:
    parts = [*_html_page(results.experiment), _scale_box(results), _html_meta([*header_rows(results, claims), *extra])]
    return "\n".join(parts + _html_items(items))


def comparison_html(runs: list[Results], claims: list[list[Claim]], items: list[Item],
                    extra: Sequence[tuple[str, str]] = ()) -> str:
    """Experiments side by side: per experiment its scale box and header, then the shared verdicts and figures."""
    parts = [*_html_page(" vs ".join(r.experiment for r in runs)), _html_meta([("verdicts", EVIDENCE_RULE), *extra])]
    for r, judged in zip(runs, claims):
        parts += [f"<h2>Experiment {html.escape(r.experiment)}</h2>", _scale_box(r),
                  _html_meta([(k, v) for k, v in header_rows(r, judged) if k not in ("experiment", "verdicts")])]
    return "\n".join(parts + _html_items(items))
