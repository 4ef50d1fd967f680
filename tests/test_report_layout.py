"""The report's layout rules that need no sweep (hand-made results, tests/fake_results.py): the
lr figure's legend keys only what it draws, the curves' epoch axis is whole epochs with room at
both ends, the scale box mentions published numbers only where the report shows some, and the
quick study asks for the original's numbers of its counterpart (lr 0.1)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from fake_results import results, trial  # noqa: E402

from bnsweep.analysis.lr import lr_table, marking_keys  # noqa: E402
from bnsweep.analysis.plots import plot_curve_panel  # noqa: E402
from bnsweep.analysis.scale import scale_note  # noqa: E402
from bnsweep.space import load_study  # noqa: E402
from bnsweep.studies import shipped_studies  # noqa: E402


def lr_rows(**last) -> list[dict]:
    rows = [trial(f"{'b' if bn else 'n'}{lr}", bn, lr=lr, best_val_acc=0.3)
            for lr in (0.01, 0.1) for bn in (True, False)]
    rows[-1].update(last)
    return rows


def legend(rows) -> list[str]:
    t = pd.DataFrame(rows)
    table = lr_table(t)
    drawn = t[t["run_id"].isin({r for ids in table["run_ids"] for r in ids.split(";")})]
    return [label for _, label in marking_keys(table, drawn)]


def test_the_lr_legend_keys_only_the_markings_drawn():
    assert legend(lr_rows()) == ["one seed"]
    assert legend(lr_rows(diverged=True, outcome="diverged")) == [
        "diverged (loss NaN/inf): accuracy it reached", "one seed"]
    assert legend(lr_rows(outcome="failed")) == ["one seed", "failed or unfinished seed (not in the bar)"]


def curve_axes(epochs: list[int]):
    table = pd.DataFrame({"arm": "bn", "config": "lr=0.1, 1 seed", "epoch": epochs, "val_acc_mean": 0.4,
                          "val_acc_ci_low": float("nan"), "val_acc_ci_high": float("nan"),
                          "time_total_s_mean": [30.0 * e for e in epochs]})
    fig, axes = plt.subplots(1, 2)
    plot_curve_panel(axes[0], table, "val_acc", "epoch")
    plot_curve_panel(axes[1], table, "val_acc", "time")
    fig.canvas.draw()
    return fig, axes


def test_curves_of_one_epoch_sit_on_a_whole_epoch_with_room_either_side():
    fig, (by_epoch, by_time) = curve_axes([1])
    shown = [t.get_text() for t in by_epoch.get_xticklabels() if 0.5 <= t.get_position()[0] <= 1.5]
    assert by_epoch.get_xlim() == (0.5, 1.5) and shown == ["1"]
    assert by_time.get_xlim()[0] == 0 and by_time.get_xlim()[1] >= 1.05 * 30  # the last point whole
    plt.close(fig)
    fig, (by_epoch, _) = curve_axes(list(range(1, 31)))
    ticks = [float(t) for t in by_epoch.get_xticks() if 0.5 <= t <= 30.5]
    assert by_epoch.get_xlim() == (0.5, 30.5) and all(t == int(t) for t in ticks) and len(ticks) >= 3
    plt.close(fig)


def test_the_scale_box_mentions_published_numbers_only_where_shown(tmp_path):
    rows = lr_rows()
    assert "published numbers" not in scale_note(results(rows, tmp_path, smoke=True, study="quick"))
    note = scale_note(results(rows, tmp_path, smoke=True, study="quick", asks={"original": "lr"}))
    assert note.endswith("beside the published numbers shown below they compare shapes only.")


def test_the_quick_study_shows_the_originals_numbers_of_its_pair():
    asks = load_study(shipped_studies()["quick"]).asks
    assert asks["original"] == "lr" and asks["figures"][0] == "lr"  # the lr figure draws theirs, at lr 0.1


def test_the_sd_of_one_run_reads_as_a_dash_not_0(tmp_path):
    from bnsweep.analysis.claims import evaluate_claims
    from bnsweep.analysis.summary import SHOWN, analyse
    from bnsweep.analysis.tables import seed_stats
    from bnsweep.formats import MISSING

    rows = lr_rows() + [trial("b0.1-1", True, seed=1, lr=0.1, best_val_acc=0.5)]
    stats = seed_stats(pd.DataFrame(rows), ["arm", "lr"]).set_index(["arm", "lr"])
    assert pd.isna(stats.loc[("bn", 0.01), "best_val_acc_std"])  # one run: no spread measured
    assert stats.loc[("bn", 0.1), "best_val_acc_std"] > 0  # two runs: their spread
    r = results(rows, tmp_path)
    item = analyse(r, tmp_path, evaluate_claims(r.trials, r.history))[0]
    md = (tmp_path / "summary.tex").read_text()
    assert MISSING in md and item.table[SHOWN["best_val_acc_std"]].isna().sum() == 3
