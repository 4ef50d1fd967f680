"""3x3 'same' max pooling: TensorFlow's padding, and the Triton kernels that run it on CUDA.

The kernels are checked on every machine: a second copy of bnsweep/pool.py is
loaded with TRITON_INTERPRET=1, which runs them in Triton's interpreter on CPU
tensors, the same kernel code the GPU compiles. The CUDA test compares the
compiled kernels with PyTorch's own on the model's shapes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import compile_for_hopper

from bnsweep import pool
from bnsweep.config import make_config
from bnsweep.model import build_model
from bnsweep.pool import TFSamePool, same_pads

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def _interpreted_module():
    """bnsweep/pool.py loaded again, its kernels decorated under TRITON_INTERPRET=1."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        spec = importlib.util.spec_from_file_location("pool_interpreted", Path(pool.__file__))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def interpreted(_interpreted_module, monkeypatch):
    # The interpreter also reads the variable while a kernel runs.
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return _interpreted_module


def kernel_pool(module, x: torch.Tensor, stride: int) -> torch.Tensor:
    (top, _), (left, _) = same_pads(x.shape[-2], stride), same_pads(x.shape[-1], stride)
    return module._TritonMaxPool.apply(x, stride, top, left)


def pool_and_grad(fn, x: torch.Tensor, seed: int = 0):
    x = x.detach().requires_grad_()
    y = fn(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype)
    (dx,) = torch.autograd.grad(y, x, g)
    return y.detach(), dx


@pytest.mark.parametrize("form", ["module", "kernel"])
def test_tf_same_maxpool_stride2_matches_tensorflow(form, interpreted):
    def run(x, stride=2):
        return TFSamePool(3, stride)(x) if form == "module" else kernel_pool(interpreted, x, stride)

    # TF 'same', 3x3 stride 2 on 4x4: out 2x2, total padding 1, all of it bottom/right,
    # so windows cover rows/cols {0,1,2} and {2,3}. Values negative so that a zero pad
    # would show; TF's padding never wins a max.
    x = -(torch.arange(16.0) + 1).view(1, 1, 4, 4)
    torch.testing.assert_close(run(x), torch.tensor([[[[-1.0, -3.0], [-9.0, -11.0]]]]))
    # Increasing values: TF picks rows/cols 2 and 3; torch's symmetric padding=1 differs.
    y = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(run(y), torch.tensor([[[[10.0, 11.0], [14.0, 15.0]]]]))
    assert not torch.equal(run(y), F.max_pool2d(y, 3, 2, padding=1))
    # Odd size 5: TF pads 1 on each side, which is exactly torch's symmetric padding.
    z = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(run(z), F.max_pool2d(z, 3, 2, padding=1))
    # Stride 1 is symmetric padding 1; the network's sizes: 32 -> 16 -> 8.
    torch.testing.assert_close(run(z, 1), F.max_pool2d(z, 3, 1, padding=1))
    assert run(torch.randn(1, 2, 32, 32)).shape[-2:] == (16, 16)
    assert run(torch.randn(1, 2, 16, 16)).shape[-2:] == (8, 8)


def tied(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    # Values in {0, 1, 2, 3}: most windows hold their maximum more than once, so a
    # kernel that routed ties differently would send gradients elsewhere.
    return torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("size,stride", [(7, 1), (8, 1), (7, 2), (5, 2)])
def test_kernels_route_ties_nan_and_inf_as_pytorch(interpreted, size, stride, memory_format):
    # Symmetric padding (stride 1, or stride 2 on odd sizes), where F.max_pool2d pads
    # as TF does: outputs and gradients must be identical, ties and NaN included.
    x = tied((2, 70, size, size))  # 70 channels: two channel blocks, the second partly masked
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = float("nan")  # NaN wins; of two, the later one
    x[1, 3] = float("-inf")  # all -inf: the first in-bounds element wins
    x = x.contiguous(memory_format=memory_format)
    y, dx = pool_and_grad(lambda t: kernel_pool(interpreted, t, stride), x)
    y_ref, dx_ref = pool_and_grad(lambda t: F.max_pool2d(t, 3, stride, padding=1), x)
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num()) and torch.equal(y.isnan(), y_ref.isnan())
    assert torch.equal(dx, dx_ref)
    assert y.is_contiguous(memory_format=memory_format) and dx.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (3, 70, 6, 7), (1, 3, 32, 32)])
def test_kernels_pad_bottom_right_as_tensorflow(interpreted, shape):
    # Asymmetric padding (stride 2 on even sizes): the reference pads explicitly.
    (top, bottom), (left, right) = same_pads(shape[2], 2), same_pads(shape[3], 2)
    x = tied(shape)
    y, dx = pool_and_grad(lambda t: kernel_pool(interpreted, t, 2), x)
    y_ref, dx_ref = pool_and_grad(
        lambda t: F.max_pool2d(F.pad(t, (left, right, top, bottom), value=float("-inf")), 3, 2), x)
    assert torch.equal(y, y_ref) and torch.equal(dx, dx_ref)


def test_kernels_take_gradients_of_any_layout(interpreted):
    # The gradient reaching the pool need not be contiguous: y.sum() hands it a stride-0
    # tensor, a transposed consumer a transposed one. The kernels address it by strides.
    x = tied((2, 5, 7, 7)).contiguous(memory_format=torch.channels_last).requires_grad_()
    for make_dy in (lambda y: torch.ones(1).expand(y.shape),
                    lambda y: torch.randn(y.shape[:2] + y.shape[:1:-1]).transpose(-1, -2)):
        dy = make_dy(F.max_pool2d(x, 3, 1, padding=1))
        assert not dy.is_contiguous() and not dy.is_contiguous(memory_format=torch.channels_last)
        (dx,) = torch.autograd.grad(kernel_pool(interpreted, x, 1), x, dy)
        (dx_ref,) = torch.autograd.grad(F.max_pool2d(x, 3, 1, padding=1), x, dy)
        assert torch.equal(dx, dx_ref)


def test_kernels_in_bf16_round_once(interpreted):
    # bf16 as autocast gives it: the same maxima; gradients summed in fp32 and rounded
    # once (PyTorch's CPU kernel rounds after every addition, so they may differ by
    # bf16 rounding, never by a misrouted value of about 1).
    x = tied((2, 16, 8, 8), torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y, dx = pool_and_grad(lambda t: kernel_pool(interpreted, t, 1), x)
    y_ref, dx_ref = pool_and_grad(lambda t: F.max_pool2d(t, 3, 1, padding=1), x)
    assert y.dtype == dx.dtype == torch.bfloat16
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(dx.float(), dx_ref.float(), rtol=0.02, atol=0.02)


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 0)])
def test_kernels_compile_for_a_hopper_gpu(stride, pad):
    # The model's two pools (stride 1, padding 1; stride 2, TF's 0 before), bf16.
    blocks = {"STRIDE": stride, "PAD_T": pad, "PAD_L": pad, "BLOCK_P": 16, "BLOCK_C": 64}
    types = {"x_ptr": "*bf16", "y_ptr": "*bf16", "dy_ptr": "*bf16", "dx_ptr": "*bf16", "win_ptr": "*i8"}
    compile_for_hopper(pool._max_pool_fwd, blocks, types)
    compile_for_hopper(pool._max_pool_bwd, blocks, types)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_kernels_match_pytorch_on_the_models_pools():
    # Every pool the width-1 Inception runs, at its shapes, bf16 channels_last as in training.
    model = build_model(make_config({"width": 1.0}))
    pools = [m for m in model.modules() if isinstance(m, TFSamePool)]
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape))) for m in pools]
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(shapes) == 11
    for module, (_, c, h, w) in shapes:
        x = torch.relu(torch.randn(8, c, h, w, device="cuda") - 0.3).to(torch.bfloat16)
        x = (x * 8).round() / 8  # coarse values: ties among positive inputs, as bf16 makes them
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        y = module(x)
        assert type(y.grad_fn).__name__ == "_TritonMaxPoolBackward"
        (top, bottom), (left, right) = same_pads(h, module.stride), same_pads(w, module.stride)
        y_ref = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), 3, module.stride)
        g = torch.randn_like(y_ref)
        (dx,) = torch.autograd.grad(y, x, g)
        (dx_ref,) = torch.autograd.grad(y_ref, x, g)
        assert torch.equal(y, y_ref), (module, c, h, w)
        # PyTorch's CUDA kernel also adds in fp32 and rounds once.
        assert torch.equal(dx, dx_ref), (module, c, h, w, (dx.float() - dx_ref.float()).abs().max())
