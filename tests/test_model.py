import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from bnsweep.config import make_config
from bnsweep.model import Blocks, Inception, ShiftOnlyBatchNorm, SimpleCNN, build_model

# The study's filter table, typed in again from docs/design.md §2 so that the counts
# below do not reuse the model's own table: (1x1, 3x3r, 3x3, 5x5r, 5x5, pool proj).
TABLE = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


def _reference_convs():
    """(k, cin, cout, spatial size) of every conv in the Keras model, in order."""
    convs, cin, size = [], 3, 32
    for entry in TABLE:
        if entry == "pool":
            size = math.ceil(size / 2)  # TF 'same', stride 2
            continue
        c1, r3, c3, r5, c5, cp = entry
        convs += [(1, cin, c1, size), (1, cin, r3, size), (3, r3, c3, size),
                  (1, cin, r5, size), (5, r5, c5, size), (1, cin, cp, size)]
        cin = c1 + c3 + c5 + cp
    return convs, cin


def _keras_trainable(bn: bool) -> int:
    # Keras counting: Conv2D(use_bias=False) kernel k*k*cin*cout; BatchNormalization(scale=False)
    # trains beta only (moving mean/var are non-trainable); Dense(10) W + b.
    convs, cin = _reference_convs()
    n = sum(k * k * ci * co + (co if bn else 0) for k, ci, co, _ in convs)
    return n + cin * 10 + 10


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _bn_modules(model):
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@pytest.fixture(scope="module")
def reference_models():
    torch.manual_seed(0)
    return {True: Inception(Blocks(bn=True)), False: Inception(Blocks(bn=False))}


@pytest.mark.parametrize("bn", [True, False])
def test_inception_trainable_params_equal_keras(reference_models, bn):
    expected = _keras_trainable(bn)
    assert _trainable(reference_models[bn]) == expected
    # The numbers themselves, for the record (and the README).
    assert expected == {True: 5_820_074, False: 5_813_114}[bn]


def test_inception_forward_flops_equal_analytic_count():
    convs, cin = _reference_convs()
    analytic = sum(2 * s * s * k * k * ci * co for k, ci, co, s in convs) + 2 * cin * 10
    with torch.device("meta"):
        model = Inception(Blocks(bn=False))
        x = torch.empty(1, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == analytic
    print(f"Inception forward: {analytic / 1e9:.3f} GFLOP per 32x32 image")
    assert 2.7e9 < analytic < 2.9e9  # docs/design.md §5: about 2.8 GFLOP


def test_simple_cnn_trainable_params():
    # 3x3 convs 3-32-32 | 32-64-64 | 64-128-128, dense 2048->256 (no bias), dense 256->10.
    convs = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    dense_hidden = 4 * 4 * 128 * 256
    no_bn = sum(9 * ci * co for ci, co in convs) + dense_hidden + 256 * 10 + 10
    shifts = sum(co for _, co in convs) + 256
    assert _trainable(SimpleCNN(Blocks(bn=False))) == no_bn
    assert _trainable(SimpleCNN(Blocks(bn=True))) == no_bn + shifts


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("width", [0.05, 0.25])
def test_forward_shapes(cls, bn, width):
    model = cls(Blocks(bn=bn), width=width)
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    model.eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_width_scales_channels_and_keeps_at_least_one():
    tiny = Inception(Blocks(bn=False), width=0.001)
    assert all(m.out_channels >= 1 for m in tiny.modules() if isinstance(m, nn.Conv2d))
    assert tiny(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    half = Inception(Blocks(bn=False), width=0.5)
    assert half.features[0].branch1[0].out_channels == 32  # 3a 1x1: 64 * 0.5
    assert half.classifier.in_features == (384 + 384 + 128 + 128) // 2


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
def test_no_bn_arm_has_no_batchnorm_and_bn_arm_has_keras_bn(cls):
    assert _bn_modules(cls(Blocks(bn=False), width=0.1)) == []
    bns = _bn_modules(cls(Blocks(bn=True), width=0.1))
    assert bns and all(isinstance(m, ShiftOnlyBatchNorm) for m in bns)
    for m in bns:
        assert m.momentum == pytest.approx(0.01, abs=1e-12)  # Keras momentum 0.99
        assert m.eps == 1e-3
        # gamma: the constant 1, neither trained nor saved (a tensor, which CUDA's backward needs)
        assert not isinstance(m.weight, nn.Parameter) and torch.all(m.weight == 1)
        assert "weight" not in m.state_dict()
        assert m.bias.requires_grad and torch.all(m.bias == 0)  # beta, Keras init zeros
        assert m.track_running_stats


def test_bn_options_are_passed_through():
    model = Inception(Blocks(bn=True, bn_momentum=0.9, bn_eps=1e-5), width=0.1)
    assert all(m.momentum == pytest.approx(0.1) and m.eps == 1e-5 for m in _bn_modules(model))


def test_shift_only_bn_normalises_with_gamma_one_and_keras_running_update():
    bn = ShiftOnlyBatchNorm(4)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    expected = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-3) + bn.bias[:, None, None]
    torch.testing.assert_close(bn(x), expected.detach(), rtol=1e-5, atol=1e-5)
    # Keras: moving = 0.99 * moving + 0.01 * batch (moving mean starts at 0).
    torch.testing.assert_close(bn.running_mean, 0.01 * mean, rtol=1e-5, atol=1e-6)
    # Dense inputs (the simple model's hidden layer) work too.
    assert ShiftOnlyBatchNorm(4)(torch.randn(6, 4)).shape == (6, 4)


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_bn_arm_trains_a_step_as_train_runs_it(cls, device):
    # channels_last, and bf16 autocast on CUDA, as train() runs them: the combination in which
    # CUDA's batch-norm backward rejected a missing gamma (torch 2.11, H200).
    on_cuda = device == "cuda"
    fmt = torch.channels_last
    model = cls(Blocks(bn=True), width=0.25).to(device).to(memory_format=fmt).train()
    x = torch.rand(16, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        loss = F.cross_entropy(model(x).float(), torch.arange(16, device=device) % 10)
    loss.backward()
    for m in _bn_modules(model):
        assert m.bias.grad is not None and m.bias.grad.shape == m.bias.shape
        assert torch.all(m.weight == 1)  # gamma stays 1


@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
def test_a_channels_last_cpu_model_computes_what_an_nchw_one_does(cls, bn):
    # On a CPU in channels-last, BN of few channels runs in NCHW between layout copies and the
    # Inception's concatenation hands back contiguous gradients (model.py): the same outputs,
    # gradients and running statistics as the NCHW model, up to fp32 summation order. At width
    # 1/16 the Inception's BNs have 1 to 24 channels (both routes), the simple model's 2 to 16
    # and one of its dense layer (2D). 16 x 16 images: the same layers, a quarter of the work.
    torch.manual_seed(0)
    nchw = cls(Blocks(bn=bn), width=0.0625).train()
    fast = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16) if cls is Inception else torch.rand(4, 3, 32, 32)
    y = torch.arange(4)
    outs = []
    for model, fmt in ((nchw, torch.contiguous_format), (fast, torch.channels_last)):
        logits = model(x.contiguous(memory_format=fmt))
        F.cross_entropy(logits, y).backward()
        outs.append(logits)

    def close(a, b):  # relative to the size of the whole tensor: BN's backward cancels, elementwise
        return (a - b).norm() <= 1e-4 * a.norm() + 1e-7

    assert close(outs[0], outs[1])
    for (name, a), b in zip(nchw.named_parameters(), fast.parameters()):
        assert close(a.grad, b.grad), name
        assert b.dim() != 4 or b.grad.is_contiguous(memory_format=torch.channels_last), name
    for (name, a), b in zip(nchw.named_buffers(), fast.buffers()):
        assert close(a.float(), b.float()), name
    nchw.eval(), fast.eval()
    assert close(nchw(x), fast(x.contiguous(memory_format=torch.channels_last)))


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
def test_conv_bias_option(cls):
    convs = [m for m in cls(Blocks(bn=False), width=0.1).modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)
    convs = [m for m in cls(Blocks(bn=False, bias=True), width=0.1).modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is not None and torch.all(m.bias == 0) for m in convs)


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
def test_keras_glorot_uniform_init(cls):
    torch.manual_seed(0)
    model = cls(Blocks(bn=True), width=0.5)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:
        w = m.weight
        k = w[0, 0].numel() if w.dim() == 4 else 1
        fan_in, fan_out = w.shape[1] * k, w.shape[0] * k
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= limit
        if w.numel() >= 2000:  # uniform over the whole range, not torch's narrower default
            assert w.abs().max() > 0.95 * limit
            assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
        if m.bias is not None:
            assert torch.all(m.bias == 0)


@pytest.mark.parametrize("cls", [Inception, SimpleCNN])
def test_dropout_only_when_requested(cls):
    def drops(model):
        return [m for m in model.modules() if isinstance(m, nn.Dropout)]

    assert drops(cls(Blocks(bn=False), width=0.1)) == []
    present = drops(cls(Blocks(bn=False), width=0.1, dropout=0.5))
    assert present and all(m.p == 0.5 for m in present)


def test_inception_dropout_sits_before_classifier():
    model = Inception(Blocks(bn=False), width=0.1, dropout=0.3)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.3
    model.eval()  # dropout off in eval: deterministic logits
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), model(x))


def test_build_model_from_config():
    model = build_model(make_config({"width": 0.1}))
    assert isinstance(model, Inception) and _bn_modules(model)
    model = build_model(make_config({"model": "simple", "bn": False, "dropout": 0.5, "width": 0.25}))
    assert isinstance(model, SimpleCNN) and not _bn_modules(model)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules())
    model = build_model(make_config({"width": 0.1, "conv_bias": True, "bn_eps": 1e-5}))
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert all(m.eps == 1e-5 for m in _bn_modules(model))
    with pytest.raises(ValueError, match="model"):
        build_model({**make_config(), "model": "resnet"})
