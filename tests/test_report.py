"""bnsweep report: the study's analysis modules run on a real tiny sweep, report.md and
report.html written with every figure and CSV, the scale header and the original
study's numbers beside ours, and logged to the sweep's parent run; the quick studies'
own files, run in smoke mode, reported with the claims they speak to. The rules behind
the header, the verdicts and the tables, on tables built here: tests/test_report_rules.py."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pandas as pd
import pytest


def test_report_for_lr_study(lr_sweep, tmp_path):
    from mlflow import MlflowClient

    from bnsweep.analysis.claims import claim_accuracy_speed
    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment

    uri, experiment = lr_sweep
    out = tmp_path / "report"
    page = build_report(experiment, out, uri)
    assert page == out / "report.html"
    md = (out / "report.md").read_text()
    html = page.read_text()
    # lr study: the lr figure and the curves, then the summary and claims; every figure with PNG, SVG, CSV.
    for fig in ("lr_accuracy", "curves"):
        for ext in ("png", "svg", "csv"):
            assert (out / f"{fig}.{ext}").stat().st_size > 0
        assert f"]({fig}.png)" in md and f"]({fig}.csv)" in md and f"href='{fig}.csv'" in html
    for table in ("claims", "summary", "trials"):
        assert len(pd.read_csv(out / f"{table}.csv")) > 0
        assert f"]({table}.csv)" in md
    assert not (out / "batch_size.png").exists() and not (out / "dropout_curves.png").exists()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 2 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    # The verdicts come first, as computed from the same runs; the synthetic data is flagged.
    assert md.index("The study's claims") < md.index("![")
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims["claim"]) == [1, 2, 3, 4, 5]
    r = load_experiment(experiment, uri)
    # Two seeds per configuration: BN's lead is only suggestive (a verdict needs 3, evidence.EVIDENCE_RULE).
    assert claims.loc[0, "verdict"] == claim_accuracy_speed(r.trials, r.history).verdict == (
        "suggestive, leans supported (2 seeds; a verdict needs 3)")
    assert "A claim is supported or refuted only when" in md  # the rule, stated in the header
    # Not the reference experiment (the small model, synthetic data): the header says so.
    assert "> **Scale.** Not the reference experiment: model, width, training images" in md
    assert "| model | inception | simple | yes |" in md
    # The original's numbers beside ours, right after the lr figure, labelled as theirs.
    assert md.index("](lr_accuracy.png)") < md.index("### Learning rate: ours beside the original (slides)") < (
        md.index("](curves.png)"))
    theirs = pd.read_csv(out / "lr_original.csv").set_index("lr")
    assert theirs.loc[0.01, "BN original (slides) (%)"] == 87 and theirs.loc[0.01, "no BN original (slides) (%)"] == 66
    assert theirs.loc[1e-5, "BN original (slides) (%)"] == 31 and pd.isna(theirs.loc[1e-5, "BN ours (%)"])
    ours = pd.read_csv(out / "lr_accuracy.csv").query("arm == 'bn' and lr == 0.01")["best_val_acc_mean"].item()
    assert theirs.loc[0.01, "BN ours (%)"] == pytest.approx(100 * ours, abs=0.05)
    assert "the comparison is of shape only" in md
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name(experiment).experiment_id],
                                         "tags.`bnsweep.role` = 'trial'")
    n_failed = sum(run.info.status == "FAILED" for run in runs)
    n_diverged = sum(run.data.tags.get("diverged") == "true" for run in runs)
    assert n_failed == 2 and n_diverged >= 2  # as the lr study's space file makes them (test_analysis.py)
    assert "synthetic (not the official CIFAR-10)" in md and f"{n_failed} failed" in md
    assert f"{n_diverged} diverged" in md and f"{len(runs) - n_failed - n_diverged} completed" in md
    # Logged as artifacts of the sweep's parent run.
    logged = {a.path for a in MlflowClient(uri).list_artifacts(r.parents["run_id"].iloc[0], "report")}
    assert {"report/report.md", "report/report.html", "report/lr_accuracy.png", "report/claims.csv"} <= logged


def test_scripts_follow_what_the_study_asks_never_its_name(lr_sweep):
    from bnsweep.analysis.report import scripts_for
    from bnsweep.analysis.results import load_experiment

    r = load_experiment(lr_sweep[1], lr_sweep[0])
    assert r.asks == {"claims": [3, 1], "figures": ["lr", "curves"], "original": "lr"}  # recorded by the sweep
    assert scripts_for(r) == ["lr", "curves", "summary"]
    r.study = "dropout"  # a name means nothing
    assert scripts_for(r) == ["lr", "curves", "summary"]
    r.asks = {"figures": ["dropout"]}
    assert scripts_for(r) == ["dropout", "summary"]
    r.asks = {}  # declares nothing: what its data supports (here lr varies, nothing else)
    assert scripts_for(r) == ["lr", "curves", "summary"]
    r.search = "optuna"  # sampled settings: no grid figure, whatever the name
    assert scripts_for(r) == ["optuna", "curves", "summary"]


def test_report_bad_input(lr_sweep, tmp_path):
    from bnsweep.analysis import report
    from bnsweep.analysis.results import ResultsError
    from bnsweep.errors import UsageError

    uri, experiment = lr_sweep
    with pytest.raises(ResultsError, match="no MLflow experiment named 'bnsweep-missing'.*there: .*bnsweep-lr"):
        report.build_report("bnsweep-missing", tmp_path, uri)
    # A folder that exists but takes no file (as root, /proc stands in for a read-only one).
    with pytest.raises(UsageError, match="cannot write the report to /proc"):
        report.build_report(experiment, Path("/proc"), uri, log_to_mlflow=False)
    with pytest.raises(ResultsError, match="no analysis figure .nope.; there are lr, batch_size"):
        report.draw("nope", None, tmp_path)


def test_report_uploads_only_what_it_wrote_and_refuses_an_out_that_holds_the_record(lr_sweep, tmp_path,
                                                                                     monkeypatch, capsys):
    from mlflow import MlflowClient

    from bnsweep import cli
    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment

    uri, experiment = lr_sweep
    out = tmp_path / "shared-folder"  # a folder that already holds files of the user's
    (out / "secrets").mkdir(parents=True)
    (out / "secrets" / ".env").write_text("TOKEN=never-uploaded\n")
    (out / "other_experiment.png").write_bytes(b"\x89PNG stale")
    build_report(experiment, out, uri)
    parent = load_experiment(experiment, uri).parents["run_id"].iloc[0]
    uploaded = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    written = {f"report/{p.name}" for p in out.iterdir() if p.is_file() and p.name != "other_experiment.png"}
    assert written <= uploaded and "report/report.html" in uploaded
    assert not uploaded & {"report/secrets", "report/other_experiment.png"}
    # Folders that hold the working folder, the MLflow store or its artifacts: one line, exit 2, nothing written.
    store = Path(uri.removeprefix("sqlite:///"))
    artifacts = MlflowClient(uri).get_experiment_by_name(experiment).artifact_location.removeprefix("file://")
    monkeypatch.chdir(tmp_path)
    for bad in (".", str(tmp_path.parent), str(store.parent), str(Path(artifacts).parent)):
        before = sorted(Path(bad).iterdir())
        assert cli.main(["report", experiment, "--tracking-uri", uri, "--out", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--out {bad} holds" in err, err
        assert sorted(Path(bad).iterdir()) == before


def test_an_experiment_name_that_reads_as_a_path_gets_a_report_folder_under_reports(lr_sweep, tmp_path, monkeypatch):
    import shutil

    from mlflow import MlflowClient

    from bnsweep.analysis.report import build_report

    uri, experiment = lr_sweep
    store = tmp_path / "copy.db"  # the session's store is only read: rename the experiment in a copy
    shutil.copy(uri.removeprefix("sqlite:///"), store)
    client = MlflowClient(f"sqlite:///{store}")
    client.rename_experiment(client.get_experiment_by_name(experiment).experiment_id, "../../escaped-report")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    page = build_report("../../escaped-report", None, f"sqlite:///{store}", log_to_mlflow=False)
    assert page.resolve().parent.parent == work / "reports" and page.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "copy.db"] and os.listdir(work.parent) == ["b"]


# ------------------------------------------------------- the quick studies ---

# Each quick study's file (search_spaces/), the claims it speaks to, its figures and trials.
QUICK = {
    "quick_batch_size": {"claims": (4, 2), "figures": ("batch_size", "curves"), "trials": 8},
    "quick_dropout": {"claims": (5,), "figures": ("dropout_curves",), "trials": 3},
}


@pytest.fixture(scope="session")
def quick_sweeps(recorded_sweeps, cifar_dir):
    """(tracking_uri, experiment) per quick study: `bnsweep run search_spaces/<study>.py --smoke`
    on the CIFAR-10 files, both started at once."""
    names = tuple(QUICK)
    return {s: recorded_sweeps(s, data_dir=cifar_dir, together=names).result() for s in names}


@pytest.mark.parametrize("study", QUICK)
def test_quick_study_report_names_its_claims_with_verdicts_from_its_trials(study, quick_sweeps, tmp_path):
    from bnsweep.analysis.claims import claim_batch_size, claim_regularisation, claim_step_time
    from bnsweep.analysis.evidence import STATEMENTS
    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment

    uri, experiment = quick_sweeps[study]
    expect = QUICK[study]
    r = load_experiment(experiment, uri)
    t = r.trials
    assert r.study == study and len(t) == expect["trials"] and (t["outcome"] == "completed").all()
    build_report(experiment, tmp_path, uri, log_to_mlflow=False)
    md = (tmp_path / "report.md").read_text()
    for fig in expect["figures"]:
        assert f"]({fig}.png)" in md and (tmp_path / f"{fig}.png").stat().st_size > 0
    # The verdicts, computed here from the same trials by the claims' own functions.
    computed = {2: lambda: claim_step_time(t, r.history), 4: lambda: claim_batch_size(t),
                5: lambda: claim_regularisation(t, r.history)}
    verdicts = {n: computed[n]().verdict for n in expect["claims"]}
    (line,) = [x for x in md.splitlines() if x.startswith("- **speaks to**: ")]
    assert line == "- **speaks to**: " + "; ".join(f"claim {n} ({STATEMENTS[n]}): {verdicts[n]}"
                                                   for n in expect["claims"])
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    assert sorted(claims.index[claims["speaks_to"]]) == sorted(expect["claims"])
    assert all(claims.loc[n, "verdict"] == v for n, v in verdicts.items())
    # Their numbers are the trials': the BN arm's best accuracy per batch size, each pair's
    # step times; the last-epoch train - val gap of each dropout arm.
    if study == "quick_batch_size":
        bn = t[t["bn"]].set_index("batch_size")["best_val_acc"]
        assert claims.loc[4, "n:per_batch"] == ";".join(f"{b}:{bn[b]:.3f}" for b in (5, 10, 50, 100))
        assert claims.loc[2, "n:pairs"] == 4  # BN and no BN at each batch size, same seed and device
        assert claims.loc[4, "verdict"] not in ("supported", "refuted")  # one seed: never decided
    else:
        for arm, row in t.set_index("arm").iterrows():
            assert claims.loc[5, f"n:{arm}_gap"] == pytest.approx(row["train_acc"] - row["val_acc"])
    # A smoke run of a shipped file: the scale header says so, row by row.
    assert "> **Scale.** Not the reference experiment:" in md
    assert "| smoke run (--smoke) | no | yes | yes |" in md
    # The original's numbers, as for the full-size study: beside ours, labelled as theirs.
    if study == "quick_batch_size":
        theirs = pd.read_csv(tmp_path / "batch_size_original.csv").set_index("batch_size")
        assert list(theirs.loc[[5, 10, 50, 100, 250], "BN acc original (slides) (%)"]) == [92, 92, 91, 89, 87]
        assert list(theirs.loc[[5, 10, 50, 100, 250], "no BN time original (slides) (min)"]) == [123, 77, 43, 36, 33]
        assert theirs.loc[5, "BN/no BN time original (slides)"] == pytest.approx(225 / 123, abs=0.005)
        assert pd.notna(theirs.loc[5, "BN acc ours (%)"]) and pd.isna(theirs.loc[250, "BN acc ours (%)"])
        assert "### Batch size: ours beside the original (slides)" in md
    else:
        theirs = pd.read_csv(tmp_path / "dropout_original.csv").set_index("arm")
        assert set(theirs.index) == {"no_bn", "no_bn+dropout", "bn"}
        assert (theirs["val acc original (slides)"] == "0.30-0.35").all()
        assert "### Dropout: ours beside the original (slides)" in md
    assert "the comparison is of shape only" in md


@pytest.fixture(scope="session")
def lr_smoke_sweeps(recorded_sweeps, cifar_dir):
    """search_spaces/lr.py and a copy of it (another name, another folder), both run with --smoke."""
    names = ("lr_smoke", "lr_copy")
    return [recorded_sweeps(s, data_dir=cifar_dir, together=names).result() for s in names]


def _sections(md: str, experiment: str) -> list[str]:
    """The report's headings, its experiment's and study's names made neutral (they name themselves)."""
    study = experiment.removeprefix("bnsweep-")
    return [x.replace(experiment, "EXP").replace(f"'{study}'", "STUDY") for x in md.splitlines() if x.startswith("#")]


def test_a_copy_of_lr_under_another_name_reports_as_lr(lr_smoke_sweeps, tmp_path):
    from bnsweep.analysis.report import build_report

    (uri, experiment), (copy_uri, copy_experiment) = lr_smoke_sweeps
    assert copy_experiment == "bnsweep-my_rates"
    md = {}
    for name, (u, e) in (("lr", lr_smoke_sweeps[0]), ("copy", lr_smoke_sweeps[1])):
        build_report(e, tmp_path / name, u, log_to_mlflow=False)
        md[name] = (tmp_path / name / "report.md").read_text()
    assert _sections(md["copy"], copy_experiment) == _sections(md["lr"], experiment)
    assert "### Learning rate: ours beside the original (slides)" in md["copy"]
    speaks = [[x for x in m.splitlines() if x.startswith("- **speaks to**: ")] for m in md.values()]
    assert speaks[0] == speaks[1] and speaks[0][0].startswith("- **speaks to**: claim 3 (")
    for table in ("claims", "lr_original"):
        a, b = (pd.read_csv(tmp_path / name / f"{table}.csv") for name in ("lr", "copy"))
        cols = ["claim", "speaks_to"] if table == "claims" else [c for c in a.columns if "original" in c or c == "lr"]
        pd.testing.assert_frame_equal(a[cols], b[cols])


def test_report_sets_two_experiments_side_by_side(lr_smoke_sweeps, tmp_path):
    """`bnsweep report A B`: the copy's sweep synced into the lr sweep's store (a moved copy of
    its folder), then both on shared axes, their verdicts in one table, each with its scale box."""
    import shutil
    import subprocess

    from conftest import bnsweep_cmd, bnsweep_env

    from bnsweep.analysis.results import load_experiment

    (uri, experiment), (copy_uri, copy_experiment) = lr_smoke_sweeps
    moved = tmp_path / "moved"
    shutil.copytree(load_experiment(copy_experiment, copy_uri).parents["sweep_dir"].iloc[0], moved)
    store = tmp_path / "both.db"
    shutil.copy(uri.removeprefix("sqlite:///"), store)  # the lr sweep's store, not the session's own
    both = f"sqlite:///{store}"
    env = bnsweep_env(None)
    done = subprocess.run(bnsweep_cmd("sync", str(moved), "--tracking-uri", both), env=env, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "side"
    done = subprocess.run(bnsweep_cmd("report", experiment, copy_experiment, "--tracking-uri", both, "--out", str(out)),
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert md.startswith(f"# Batch Normalization study: {experiment} vs {copy_experiment}")
    assert md.count("> **Scale.** Not the reference experiment:") == 2  # one scale box per experiment
    assert md.index(f"## Experiment {experiment}") < md.index(f"## Experiment {copy_experiment}")
    claims = pd.read_csv(out / "claims.csv")
    assert list(zip(claims["claim"], claims["experiment"])) == [
        (n, e) for n in (1, 2, 3, 4, 5) for e in (experiment, copy_experiment)]
    for fig in ("compare_lr", "compare_curves"):
        assert f"]({fig}.png)" in md and (out / f"{fig}.png").stat().st_size > 0
        drawn = pd.read_csv(out / f"{fig}.csv")
        assert set(drawn["experiment"]) == {experiment, copy_experiment} and set(drawn["arm"]) == {"bn", "no_bn"}
    # The same study, the same settings: the copy's points sit on the lr sweep's axis values.
    lrs = pd.read_csv(out / "compare_lr.csv").groupby("experiment")["lr"].apply(sorted)
    assert lrs[experiment] == lrs[copy_experiment]


def test_a_study_that_declares_nothing_and_one_that_declares_a_claim_it_cannot_speak_to(lr_sweep, tmp_path):
    """The lr sweep's record (a copy of its store) with what its study asks rewritten on its
    parent run, as a study file declaring otherwise would have recorded it."""
    import json
    import shutil

    from mlflow import MlflowClient

    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment
    from bnsweep.asks import ASKS_TAG

    uri, experiment = lr_sweep
    for asks, expect in (({}, "- **speaks to**: no claim declared (CLAIMS); those its trials could compare: claim 1"),
                         ({"claims": [4], "figures": ["lr", "dropout"]},
                          "- **speaks to**: claim 4 (BN works best with medium batch sizes (50-100)): declared, but "
                          "these trials cannot speak to it: undecided (needs BN trials at batch sizes inside")):
        store = tmp_path / f"{len(asks)}.db"
        shutil.copy(uri.removeprefix("sqlite:///"), store)
        copy = f"sqlite:///{store}"
        parent = load_experiment(experiment, copy).parents["run_id"].iloc[0]
        if asks:
            MlflowClient(copy).set_tag(parent, ASKS_TAG, json.dumps(asks))
        else:
            MlflowClient(copy).delete_tag(parent, ASKS_TAG)
        out = tmp_path / str(len(asks))
        build_report(experiment, out, copy, log_to_mlflow=False)
        md = (out / "report.md").read_text()
        assert expect in md
        claims = pd.read_csv(out / "claims.csv").set_index("claim")
        if asks:
            assert "- **not drawn**: dropout: needs trials with dropout" in md and "](lr_accuracy.png)" in md
            assert list(claims.index[claims["speaks_to"]]) == [4]
        else:  # what its data supports, and no published numbers it did not ask for
            assert "](lr_accuracy.png)" in md and "](curves.png)" in md
            assert "ours beside the original" not in md and not (out / "lr_original.csv").exists()
            assert 1 in claims.index[claims["speaks_to"]] and 5 not in claims.index[claims["speaks_to"]]


# ------------------------------------------------------------ from a wheel ---

def _wheel_venv(root: Path, work: Path) -> Path:
    """A fresh venv holding bnsweep as a wheel built from the repository at `root`; its
    bin folder. The wheel is built from a copy of the files it packs (so no build/ or
    egg-info lands in the repository) with the test venv's own setuptools
    (--no-build-isolation: no index to fetch one from here). bnsweep goes in with
    --no-deps; its dependencies (torch, Ray, MLflow: GBs) come from the test venv's
    site-packages through a .pth file, which puts that folder on sys.path after the
    fresh venv's own: fast, offline, and bnsweep itself is only the wheel's (the test
    venv's editable bnsweep is a finder that only its own .pth files install, and a
    folder added by a .pth line has its .pth files ignored)."""
    import importlib.metadata
    import importlib.util
    import shutil
    import subprocess
    import sys
    import sysconfig

    setuptools = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    if setuptools < (70, 1) and importlib.util.find_spec("wheel") is None:  # 70.1 took in bdist_wheel
        pytest.skip(f"building a wheel offline needs setuptools >= 70.1 or the wheel package in {sys.prefix}")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    for folder in ("bnsweep", "search_spaces"):
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work / "dist"),
                            str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (work / "dist").glob("bnsweep-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "bnsweep_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


@pytest.mark.slow
def test_wheel_reports_and_runs_shipped_studies_by_name(recorded_sweeps, cifar_dir, tmp_path):
    """Built as a wheel and installed without -e, from a folder outside the repository:
    `bnsweep report` on a smoke sweep's store (the analysis modules come from the
    package), `bnsweep plan lr` finding the shipped study by name, and an analysis
    module run alone with python -m."""
    import subprocess

    from conftest import bnsweep_env

    uri, experiment = recorded_sweeps("quick_batch_size", data_dir=cifar_dir, together=tuple(QUICK)).result()
    root = Path(__file__).resolve().parents[1]
    bin_dir = _wheel_venv(root, tmp_path)
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing there to import or read
    elsewhere.mkdir()
    env = bnsweep_env()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=elsewhere,
                              timeout=300)

    where = run(bin_dir / "python", "-c", "import bnsweep.analysis.report as r; print(r.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr
    r = run(bin_dir / "bnsweep", "report", experiment, "--tracking-uri", uri, "--out", elsewhere / "report")
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    md = (elsewhere / "report" / "report.md").read_text()
    assert "](batch_size.png)" in md and "### Batch size: ours beside the original (slides)" in md
    assert "> **Scale.** Not the reference experiment:" in md and (elsewhere / "report" / "report.html").is_file()
    r = run(bin_dir / "python", "-m", "bnsweep.analysis.summary", "--experiment", experiment, "--tracking-uri", uri,
            "--out", elsewhere / "summary")
    assert r.returncode == 0 and (elsewhere / "summary" / "claims.csv").is_file(), r.stderr[-4000:]
    # A shipped study by name, as `bnsweep run lr --smoke --no-tracking` resolves it (plan stops before Ray).
    r = run(bin_dir / "bnsweep", "plan", "lr", "--smoke", "--no-probe")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"study lr ({tmp_path / 'venv'}" in r.stdout and "bnsweep/search_spaces/lr.py)" in r.stdout
    r = run(bin_dir / "bnsweep", "plan", "lrr", "--no-probe")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "'lrr' is neither a search-space file nor a shipped study; shipped studies: batch_size, dropout, lr," \
        in r.stderr


def test_the_norm_study_reports_three_arms_beside_wu_and_he(recorded_sweeps, cifar_dir, tmp_path):
    # search_spaces/quick_norm_batch_size.py run as shipped (smoke mode; the session's run, which
    # test_sweep also reads): BN, GN and none at three batch sizes, their figure with Wu & He's
    # BN / GN curve on a panel of its own, labelled as theirs and by shape only.
    from bnsweep.analysis.report import build_report
    from bnsweep.analysis.results import load_experiment

    uri, experiment = recorded_sweeps("quick_norm_batch_size", data_dir=cifar_dir).result()
    r = load_experiment(experiment, uri)
    assert sorted(set(r.trials["arm"])) == ["bn", "gn", "no_bn"] and len(r.trials) == 9
    build_report(experiment, tmp_path, uri, log_to_mlflow=False)
    md = (tmp_path / "report.md").read_text()
    drawn = pd.read_csv(tmp_path / "batch_size.csv")
    assert sorted(set(drawn["arm"])) == ["bn", "gn", "no_bn"]
    assert "](batch_size.png)" in md and "Wu & He 2018" in md and "shape only" in md
    claims = pd.read_csv(tmp_path / "claims.csv").set_index("claim")
    assert sorted(claims.index[claims["speaks_to"]]) == [2, 4]  # as the file declares (CLAIMS)
