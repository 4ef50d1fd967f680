"""Normalisation as an axis (config `norm`): each one built once through model.Blocks and
trained on real CIFAR-10, the reference arms unchanged, names and pairs across norms,
checkpoints that refuse another norm, and the read side with a third arm."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnsweep.config import EXECUTION_KEYS, NORMS, REFERENCE, ConfigError, make_config, norm_of
from bnsweep.errors import BnsweepError
from bnsweep.model import ScaledBatchNorm, ShiftOnlyBatchNorm, build_model, gn_groups
from bnsweep.train import train
from bnsweep.trials import arm_name, display_name, pair_id

REPO = Path(__file__).resolve().parents[1]
MODELS = ("inception", "simple")


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))]


def _channels(model: nn.Module) -> int:
    # Every hidden layer's width: the output channels of each conv, and the simple net's dense 256.
    convs = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return convs + sum(m.out_features for m in dense[:-1])


# ------------------------------------------------------------- the key ---

def test_norm_follows_bn_unless_set_and_then_bn_says_whether_it_is_the_studys():
    assert norm_of(make_config()) == "bn" and make_config()["norm"] is None
    assert norm_of(make_config({"bn": False})) == "none"
    for norm in NORMS:
        cfg = make_config({"norm": norm})
        assert norm_of(cfg) == norm and cfg["bn"] is (norm == "bn")
    assert norm_of({"bn": True}) == "bn" and norm_of({"bn": False}) == "none"  # records from before norm
    with pytest.raises(ConfigError, match="norm must be one of bn, bn_scale, gn, ln, none, got 'batch'"):
        make_config({"norm": "batch"})
    with pytest.raises(ConfigError, match="groups must be > 0"):
        make_config({"groups": 0})


def test_gn_groups_default_is_wu_and_hes_32_capped_at_two_channels_per_group():
    assert [gn_groups(c) for c in (1, 2, 3, 4, 6, 13, 16, 24, 64, 96, 832)] == [1, 1, 1, 2, 3, 1, 8, 12, 32, 32, 32]
    assert gn_groups(64, groups=8) == 8 and gn_groups(64, groups=1) == 1
    for c in range(1, 300):
        g = gn_groups(c)
        assert c % g == 0 and (g == 1 or c // g >= 2) and g <= 32


# ------------------------------------------------- the models, built once ---

@pytest.mark.parametrize("model", MODELS)
def test_each_norm_builds_its_own_layer_everywhere(model):
    expected = {"bn": ShiftOnlyBatchNorm, "bn_scale": ScaledBatchNorm, "gn": nn.GroupNorm, "ln": nn.GroupNorm}
    base = make_config({"model": model, "width": 0.0625, "bn": False})
    plain = build_model(base)
    for norm in NORMS:
        m = build_model(make_config({"model": model, "width": 0.0625, "norm": norm}))
        layers = _norm_layers(m)
        if norm == "none":
            assert layers == [] and _trainable(m) == _trainable(plain)
            continue
        assert layers and all(type(x) is expected[norm] for x in layers), norm
        assert len(layers) == len(_norm_layers(build_model(make_config({"model": model, "width": 0.0625}))))
        if norm == "ln":
            assert all(x.num_groups == 1 for x in layers)
        if norm == "gn":
            assert all(x.num_groups == gn_groups(x.num_channels) for x in layers)
        # One parameter per channel (β) for the study's BN, two (γ, β) for the others.
        per_channel = 1 if norm == "bn" else 2
        assert _trainable(m) == _trainable(plain) + per_channel * _channels(plain), norm


@pytest.mark.parametrize("model", MODELS)
def test_reference_arms_are_exactly_as_before_whichever_key_chose_them(model):
    # tests/test_model.py pins the Inception's counts (5,820,074 and 5,813,114) and FLOPs for
    # bn true / false; norm bn / none must be the very same models, state and all.
    for bn, norm in ((True, "bn"), (False, "none")):
        torch.manual_seed(0)
        a = build_model(make_config({"model": model, "bn": bn}))
        torch.manual_seed(0)
        b = build_model(make_config({"model": model, "norm": norm}))
        assert str(a) == str(b) and _trainable(a) == _trainable(b)
        sa, sb = a.state_dict(), b.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    if model == "inception":
        assert _trainable(build_model(make_config({"norm": "bn"}))) == 5_820_074
        assert _trainable(build_model(make_config({"norm": "none"}))) == 5_813_114


def test_fused_bn_relu_only_for_the_studys_bn():
    from bnsweep.model import ConvUnit

    for norm, fused in (("bn", True), ("bn_scale", False), ("gn", False), ("ln", False), ("none", False)):
        m = build_model(make_config({"width": 0.0625, "norm": norm, "fused_bn_relu": True}))
        units = [u for u in m.modules() if isinstance(u, ConvUnit)]
        assert units and all(u.fused_bn_relu is fused for u in units), norm


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("norm", ["bn_scale", "gn", "ln", "none", "bn"])
def test_each_norm_trains_a_few_steps_on_real_cifar(cifar_dir, model, norm):
    # Width 1/16, 100 real images, 4 steps of 25, channels-last (the default); GN and LN
    # run bf16 autocast as well, which the CPU path takes where it computes bf16 natively.
    amp = "bf16" if norm in ("gn", "ln") else "auto"
    cfg = make_config({"model": model, "norm": norm, "width": 0.0625, "n_train": 100, "n_val": 50,
                       "batch_size": 25, "epochs": 1, "lr": 0.05, "amp": amp, "data_dir": str(cifar_dir),
                       "eval_batch_size": 50})
    seen, states = {}, []
    summary = train(cfg, report=lambda m, s: states.append(s), on_start=seen.update)
    assert not summary["diverged"] and summary["epochs_completed"] == 1
    assert seen["exec.bn_kernel"] == ("pytorch" if norm in ("bn", "bn_scale") else "none")
    weights = states[-1]["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert states[-1]["config"]["norm"] == norm  # the checkpoint records its normalisation


# ------------------------------------------------------------ checkpoints ---

def test_a_checkpoint_refuses_to_resume_as_another_norm():
    tiny = {"dataset": "synthetic", "width": 0.0625, "n_train": 100, "n_val": 50, "batch_size": 50, "epochs": 1}
    states = []
    train(make_config({**tiny, "norm": "bn_scale"}), report=lambda m, s: states.append(s))
    # BN with a scale and GN hold the same γ and β per channel: only the record tells them apart.
    for other in ("gn", "bn", "none"):
        with pytest.raises(BnsweepError, match=f"trained with norm=bn_scale; it cannot resume as norm={other}$"):
            train(make_config({**tiny, "norm": other, "epochs": 2}), resume=states[-1])
    old = {**states[-1], "config": {k: v for k, v in states[-1]["config"].items() if k not in ("norm", "groups")}}
    old["config"]["bn"] = True  # a checkpoint from before `norm`: its bn says which
    with pytest.raises(BnsweepError, match="trained with norm=bn; it cannot resume as norm=gn"):
        train(make_config({**tiny, "norm": "gn", "epochs": 2}), resume=old)
    gn = []
    train(make_config({**tiny, "norm": "gn", "groups": 2}), report=lambda m, s: gn.append(s))
    with pytest.raises(BnsweepError, match="trained with groups=2; it cannot resume with groups=32"):
        train(make_config({**tiny, "norm": "gn", "epochs": 2}), resume=gn[-1])
    train(make_config({**tiny, "norm": "gn", "groups": 2, "epochs": 2}), resume=gn[-1])  # the same: resumes


def test_cli_resume_compares_bn_and_norm_as_one_choice(tmp_path):
    from bnsweep.cli import _resume_config
    from bnsweep.errors import UsageError

    path = tmp_path / "c.pt"
    torch.save({"config": make_config({"dataset": "synthetic"}), "model": {}, "optimizer": {}, "epoch": 1,
                "time_total_s": 1.0, "history": []}, path)
    assert norm_of(_resume_config(str(path), {"norm": "bn"})[0]) == "bn"  # the same choice, by the other key
    with pytest.raises(UsageError, match=r"--norm gn \(trained with --norm bn\)"):
        _resume_config(str(path), {"norm": "gn"})
    with pytest.raises(UsageError, match=r"--no-bn \(trained with --bn\)"):
        _resume_config(str(path), {"bn": False})
    gn = tmp_path / "gn.pt"
    torch.save({"config": make_config({"dataset": "synthetic", "norm": "gn"}), "model": {}, "optimizer": {},
                "epoch": 1, "time_total_s": 1.0, "history": []}, gn)
    assert norm_of(_resume_config(str(gn), {"epochs": 3})[0]) == "gn"
    # --bn / --no-bn alone are the study's two arms (BN, none): neither continues a GN run.
    for flags, said in (({"bn": False}, "--no-bn"), ({"bn": True}, "--bn")):
        with pytest.raises(UsageError, match=rf"{said} \(trained with --norm gn\)"):
            _resume_config(str(gn), flags)


def test_bn_and_norm_flags_that_disagree_are_one_line():
    import argparse

    from bnsweep.cli import config_overrides
    from bnsweep.errors import UsageError

    def flags(**given):
        return argparse.Namespace(**{k: given.get(k) for k in REFERENCE})

    assert config_overrides(flags(bn=False, norm="none")) == {"bn": False, "norm": "none"}
    with pytest.raises(UsageError, match=r"^--bn and --norm gn disagree; --norm alone chooses the normalisation"):
        config_overrides(flags(bn=True, norm="gn"))


# ---------------------------------------------------------- names, pairs ---

def test_arms_are_named_by_norm_and_pair_across_norms():
    cfgs = {norm: make_config({"norm": norm, "batch_size": 50}) for norm in NORMS}
    assert {n: arm_name(c) for n, c in cfgs.items()} == {"bn": "bn", "bn_scale": "bn_scale", "gn": "gn", "ln": "ln",
                                                        "none": "no_bn"}
    # `bn: false` and `norm: none` are one experiment: one arm name, one pair.
    assert arm_name(make_config({"bn": False})) == "no_bn" and arm_name(make_config({"bn": True})) == "bn"
    assert len({pair_id(c) for c in cfgs.values()}) == 1
    assert pair_id(make_config({"bn": False, "batch_size": 50})) == pair_id(cfgs["gn"])
    assert pair_id(make_config({"norm": "gn", "groups": 8, "batch_size": 50})) != pair_id(cfgs["gn"])
    assert display_name(cfgs["gn"], ["batch_size", "norm"]) == "gn batch_size=50"
    assert arm_name(make_config({"norm": "gn", "dropout": 0.5})) == "gn+dropout"


def test_pair_ids_of_recorded_trials_are_unchanged():
    # A pair's id as it was computed before norm and groups existed (every key but bn and
    # the execution keys): trials recorded then keep theirs.
    cfg = make_config({"lr": 0.1})
    before = {k: cfg[k] for k in sorted(REFERENCE) if k not in ("bn", "norm", "groups") and k not in EXECUTION_KEYS}
    assert pair_id(cfg) == hashlib.sha1(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:10]


def test_a_study_may_not_vary_bn_beside_norm(tmp_path):
    from bnsweep.errors import UsageError
    from bnsweep.space import load_study

    for text in ('SPACE = {"bn": [True, False], "norm": ["gn", "none"]}\n',
                 'SPACE = {"norm": ["gn", "none"]}\nFIXED = {"bn": False}\n',
                 'SPACE = {"bn": [True, False]}\nFIXED = {"norm": "gn"}\n'):
        f = tmp_path / "s.py"
        f.write_text(text)
        with pytest.raises(UsageError, match="bn and norm both choose the normalisation"):
            load_study(f)
    f.write_text('SPACE = {"bn": [True, False]}\n')
    with pytest.raises(UsageError, match="bn and norm both choose the normalisation"):
        load_study(f, overrides={"norm": "gn"})  # bnsweep run FILE --norm gn


def test_every_norm_keeps_the_reference_convolution_and_dense_flops():
    # FlopCounterMode counts the convolutions and the dense layer (tests/test_model.py pins them
    # for the reference arms, 2.8 GFLOP per image); a normalisation's elementwise work is not
    # among them, so every norm's count is the reference's exactly.
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for norm in NORMS:
        with torch.device("meta"):
            model = build_model(make_config({"norm": norm}))
            x = torch.empty(1, 3, 32, 32)
        with FlopCounterMode(display=False) as counter:
            model(x)
        counts[norm] = counter.get_total_flops()
    assert len(set(counts.values())) == 1 and 2.7e9 < counts["bn"] < 2.9e9, counts
