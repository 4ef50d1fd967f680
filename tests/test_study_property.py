"""Whatever `plan` accepts, `run` starts: a property over generated study files.

Each example is a study file as a Python user writes one: a grid or an Optuna search,
its values written as plain literals, numpy scalars and arrays, ranges, tuples,
Fractions, Ray Tune's or Optuna's own objects, valid or not. If the loader (what
`plan` and `run` both call first) accepts it, then every trial Ray Tune would start
has a valid config: the grid through Tune's own variant generator, the Optuna search
through a real OptunaSearch built on the space the sweep hands Tune. A file of right
values only, however spelled, is accepted; a refusal is one line naming the file and
the key or name at fault.
"""

from __future__ import annotations

import textwrap

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bnsweep.config import make_config
from bnsweep.space import SpaceError, load_study
from bnsweep.trials import trial_config

HEADER = textwrap.dedent("""
    import numpy as np
    import optuna
    from fractions import Fraction
    from ray import tune
""")
FIXED = {"dataset": "'synthetic'", "model": "'simple'", "width": "0.0625", "n_train": "400", "n_val": "100",
         "epochs": "1", "augment": "False"}


def _spelled(x) -> st.SearchStrategy[str]:
    """One value as code, in each of the spellings a user's own code makes it."""
    if isinstance(x, bool):
        return st.sampled_from([repr(x), f"np.{x!r}_"])
    if isinstance(x, str):
        return st.sampled_from([repr(x), f"np.str_({x!r})"])
    if x is None:
        return st.just("None")
    code = "float('inf')" if x == float("inf") else repr(x)
    spellings = [code, f"np.float64({str(x)!r})", f"np.float32({str(x)!r})", repr(str(x))]
    if float(x).is_integer() and abs(x) < 1e9:
        spellings += [f"np.int64({int(x)})", f"Fraction({int(x)})"]
    return st.sampled_from(spellings)


# Per key: (right values, wrong ones) by the bounds in bnsweep/config.py.
VALUES = {
    "lr": ([1e-5, 0.01, 0.1, 1, 10], [0, -0.1, float("inf")]),
    "batch_size": ([5, 10, 50, 100], [0, 2.5, 10_000]),
    "dropout": ([0.0, 0.25, 0.5], [1.0, -0.1]),
    "width": ([0.0625, 0.125], [0]),
    "bn": ([True, False], ["yes", None, 2]),
    "model": (["simple"], ["resnet", 3]),
}


def _values(key: str, wrong: bool) -> st.SearchStrategy[list[str]]:
    """A list of values as code: distinct right ones, or (wrong) anything, repeats included."""
    right, bad = VALUES[key]
    if wrong:
        return st.lists(st.sampled_from(right + bad).flatmap(_spelled), max_size=3)
    return st.lists(st.sampled_from(right), min_size=1, max_size=3, unique=True).flatmap(
        lambda xs: st.tuples(*map(_spelled, xs)).map(list))


DISTRIBUTIONS = {  # (right, maybe refused) for an Optuna search
    # With 400 training images, a batch size of 57 or 133 leaves a last batch of one, which
    # the simple model's BN cannot take: a draw from 50..250 in ones may be refused, rightly.
    "batch_size": (["tune.qrandint(50, 250, 50)", "optuna.distributions.IntDistribution(50, 250, step=50)",
                    "tune.choice(np.array([50, 100]))", "tune.choice(range(50, 101, 50))", "('choice', [50, 100])"],
                   ["('intuniform', 50, 250)", "tune.randint(50, 251)", "('uniform', 50, 250)",
                    "('intloguniform', 0, 10)", "tune.randint(0, 5)"]),
    "lr": (["('loguniform', 1e-4, 0.5)", "tune.loguniform(np.float64(1e-4), 0.5)", "tune.uniform(0.01, 0.5)",
            "optuna.distributions.FloatDistribution(1e-4, 0.5, log=True)", "tune.quniform(0.1, 0.5, 0.1)"],
           ["('uniform', -1.0, 0.5)", "('loguniform', 0, 1)", "tune.uniform(0.5, 0.1)", "tune.uniform(0.0, 0.5)"]),
    "dropout": (["('uniform', 0.0, 0.5)", "optuna.distributions.FloatDistribution(0.0, 0.5)",
                 "tune.quniform(0.0, 0.5, 0.1)"], ["('uniform', 0.0, 1.0)", "tune.uniform(-0.5, 0.5)"]),
    "width": (["('uniform', 0.0625, 0.25)", "tune.choice([0.0625, 0.125])"], ["('uniform', 0.0, 0.25)"]),
}


def _axis(key: str, wrong: bool) -> st.SearchStrategy[str]:
    items = _values(key, wrong)
    spelled = st.one_of(items.map(lambda xs: f"[{', '.join(xs)}]"),
                        items.map(lambda xs: f"({''.join(x + ', ' for x in xs)})"),
                        items.map(lambda xs: f"np.array([{', '.join(xs)}])"),
                        items.map(lambda xs: f"tune.grid_search([{', '.join(xs)}])"))
    extra = {"batch_size": ["range(50, 151, 50)"], "lr": ["np.logspace(-3, -1, 3)"]}.get(key, [])
    wrong_extra = ["tune.loguniform(1e-3, 1)", "range(0)", "0.1"] if wrong else []
    return st.one_of(spelled, st.sampled_from(extra + wrong_extra)) if extra or wrong_extra else spelled


def _distribution(key: str, wrong: bool) -> st.SearchStrategy[str]:
    if key in ("bn", "model"):
        return _values(key, wrong).flatmap(lambda xs: st.sampled_from([
            f"('choice', [{', '.join(xs)}])", f"tune.choice([{', '.join(xs)}])",
            f"optuna.distributions.CategoricalDistribution([{', '.join(xs)}])"]))
    right, bad = DISTRIBUTIONS[key]
    return st.sampled_from(right + bad if wrong else right)


@st.composite
def study_files(draw) -> tuple[str, bool]:
    wrong = draw(st.booleans())  # half the files may hold mistakes anywhere; the others none
    search = draw(st.sampled_from(["grid", "optuna"]))
    keys = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True))
    fixed = ", ".join(f"{k!r}: {v}" for k, v in FIXED.items() if k not in keys)  # a key is set in one place
    lines = [HEADER, f"FIXED = {{{fixed}}}", f"SEARCH = {search!r}"]
    if search == "grid":
        lines.append("SPACE = {" + ", ".join(f"{k!r}: {draw(_axis(k, wrong))}" for k in keys) + "}")
    else:
        arms = draw(st.sampled_from(["", 'ARMS = {"bn": [True, False]}', 'ARMS = {"bn": np.array([True, False])}']))
        if arms:
            keys = [k for k in keys if k != "bn"] or ["lr"]
        lines += [arms, "SPACE = {" + ", ".join(f"{k!r}: {draw(_distribution(k, wrong))}" for k in keys) + "}",
                  f"NUM_SAMPLES = {draw(st.sampled_from(['2', 'np.int64(2)'] + (['0', '1.5'] if wrong else [])))}"]
    seeds = ["[0]", "[0, 1]", "np.arange(2)", "range(1)", "(3,)"] + (["[0, 0]", "[-1]", "[]"] if wrong else [])
    lines.append(f"SEEDS = {draw(st.sampled_from(seeds))}")
    return "\n".join(lines) + "\n", wrong


def _tune_configs(study) -> list[dict]:
    """The configs Ray Tune would start, generated by Tune's and Optuna's own code."""
    from bnsweep import sweep

    if study.search == "grid":
        from ray.tune.search.variant_generator import generate_variants

        out = [config for _, config in generate_variants(sweep._param_space(study, None))]
        assert len(out) == study.n_trials()
        return out
    from ray.tune.search.optuna import OptunaSearch

    out = []
    for _, arm in sweep.tuner_names(study):
        search = OptunaSearch(seed=0)  # as the sweep builds it; Tune then hands it the space, as here
        assert search.set_search_properties(study.metric, "max", sweep._param_space(study, arm))
        out += [search.suggest(f"t{i}") for i in range(3)]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=study_files())
def test_whatever_plan_accepts_every_trial_starts_with_a_valid_config(study, tmp_path):
    text, wrong = study
    path = tmp_path / "generated.py"
    path.write_text(text)
    try:
        study = load_study(path)
        event("accepted")
    except SpaceError as e:
        event("refused")
        message = str(e)
        assert wrong, f"a file of right values only was refused: {message}"
        assert message.startswith(f"{path}") and "\n" not in message, message
        named = ("does not import (line", "SPACE", "ARMS", "SEEDS", "NUM_SAMPLES", "FIXED", "lr", "batch_size", "bn",
                 "dropout", "width", "model", "grid point")
        assert any(n in message for n in named), message
        return
    for cfg in _tune_configs(study):
        make_config(trial_config(cfg), base=study.fixed)  # raises ConfigError for a trial that could not start
