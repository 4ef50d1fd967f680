"""Fused batch norm + ReLU (bnsweep/bn_relu.py) against PyTorch's batch_norm then relu.

The kernels run on every machine, in Triton's interpreter on CPU tensors: the
same kernel code the GPU compiles. Unlike bnsweep/pool.py's kernels, these call
Triton's library functions (tl.sum), which are interpreted only when
TRITON_INTERPRET=1 is set before triton is first imported; so they run in a
process of their own, started with it set.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import compile_for_hopper

from bnsweep import bn_relu
from bnsweep.config import make_config
from bnsweep.model import ShiftOnlyBatchNorm, build_model

pytest.importorskip("triton")

MOMENTUM, EPS = 0.01, 1e-3  # the reference's BN: Keras momentum 0.99, epsilon 1e-3


@pytest.fixture(scope="module")
def interpreter():
    """A process whose triton was imported with TRITON_INTERPRET=1."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"  # inherited by the spawned process
    try:
        pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        pool.submit(int).result()  # started now, while the variable is set
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    with pool:
        yield lambda fn, *args: pool.submit(fn, *args).result()


def run(fn, x: torch.Tensor, beta: torch.Tensor, seed: int = 1, grad_dtype: torch.dtype | None = None):
    """Output, input and beta gradients, and the running stats after one training step.
    The incoming gradient is random, rounded to grad_dtype (default: the output's)."""
    x = x.detach().requires_grad_()
    beta = beta.detach().clone().requires_grad_()
    c = x.shape[1]
    running_mean, running_var = torch.full((c,), 0.5, dtype=beta.dtype), torch.full((c,), 2.0, dtype=beta.dtype)
    y = fn(x, beta, running_mean, running_var)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(grad_dtype or y.dtype).to(y.dtype)
    if g.dim() == 4:  # as the Inception's concatenation hands it back: a channel slice of a wider gradient
        wide = torch.zeros(g.shape[0], g.shape[1] + 5, *g.shape[2:], dtype=g.dtype)
        wide = wide.contiguous(memory_format=torch.channels_last)
        wide[:, 2:2 + g.shape[1]] = g
        g = wide[:, 2:2 + g.shape[1]]
    dx, dbeta = torch.autograd.grad(y, (x, beta), g)
    return y.detach(), dx, dbeta, running_mean, running_var


def run_fused(x: torch.Tensor, beta: torch.Tensor, constants: dict | None = None):
    # In the interpreter's process (bn_relu imported there with TRITON_INTERPRET=1).
    # `constants` set bn_relu's tiling for this call (small tensors, many partials).
    assert os.environ.get("TRITON_INTERPRET") == "1"
    constants = constants or {}
    saved = {k: getattr(bn_relu, k) for k in constants}
    vars(bn_relu).update(constants)
    try:
        return run(lambda x, b, rm, rv: bn_relu._BatchNormReLU.apply(x, b, rm, rv, MOMENTUM, EPS), x, beta)
    finally:
        vars(bn_relu).update(saved)


def reference(x, beta, rm, rv):
    ones = torch.ones(x.shape[1], dtype=beta.dtype)
    return F.relu(F.batch_norm(x, rm, rv, ones, beta, training=True, momentum=MOMENTUM, eps=EPS))


def data(shape, offset=0.0, dtype=torch.float32, seed=0) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 1.5 + offset
    return x.to(dtype)


# Tilings: as on a GPU (for these sizes, one tile per partial); and few programs, so
# that a partial walks several tiles (the last one with an empty tile) and the final
# passes read their partials in several steps.
TILINGS = {"default": {}, "merged": {"MAX_PARTS": 4, "BLOCK_T": 2}}


@pytest.mark.parametrize("tiling", TILINGS)
@pytest.mark.parametrize("shape", [(3, 70, 5, 7), (3, 16, 20, 20), (37, 24)])
def test_fused_equals_batch_norm_then_relu(interpreter, shape, tiling):
    # 70 channels: two channel blocks, the second partly masked; 105 or 1,200 rows: a
    # partial last tile; (37, 24): a dense layer's [N, C] input.
    x = data(shape)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    beta = torch.linspace(-0.5, 0.5, shape[1])  # some channels mostly cut by the ReLU, some mostly kept
    got, want = interpreter(run_fused, x, beta, TILINGS[tiling]), run(reference, x, beta)
    for name, a, b in zip(("y", "dx", "dbeta", "running_mean", "running_var"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    assert got[0].is_contiguous(memory_format=torch.channels_last) if x.dim() == 4 else got[0].is_contiguous()
    assert got[1].stride() == x.stride()


KERNELS = ("_stats_partial", "_stats_final", "_normalize_relu", "_backward_partial", "_backward_final", "_backward_dx")


def launches(x: torch.Tensor, beta: torch.Tensor) -> dict[str, int]:
    # In the interpreter's process: how often each kernel runs in one forward and backward.
    counts = dict.fromkeys(KERNELS, 0)

    class Counted:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            counts[self.name] += 1
            return self.kernel[grid]

    kernels = {name: getattr(bn_relu, name) for name in KERNELS}
    vars(bn_relu).update({name: Counted(name, k) for name, k in kernels.items()})
    try:
        run_fused(x, beta)
    finally:
        vars(bn_relu).update(kernels)
    return counts


def test_each_kernel_runs_once_per_step(interpreter):
    # Six passes per layer and step, no more: a kernel run twice gives the same numbers
    # and would show only in the time.
    x = data((2, 8, 4, 4)).contiguous(memory_format=torch.channels_last)
    assert interpreter(launches, x, torch.zeros(8)) == dict.fromkeys(KERNELS, 1)


def test_variance_of_an_offset_batch_does_not_cancel(interpreter):
    # Activations far from zero: E[x^2] - E[x]^2 in fp32 would lose the variance
    # (1e4^2 = 1e8 against a spread of 1.5^2); the merged per-tile M2 keeps it.
    x = data((4, 8, 16, 16), offset=1e4).contiguous(memory_format=torch.channels_last)
    got = interpreter(run_fused, x, torch.zeros(8), TILINGS["merged"])
    want = run(reference, x.double(), torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(got[4], want[4].float(), rtol=1e-4, atol=0)  # running var
    # Outputs as close as fp32 can hold x itself (its spacing at 1e4 is 1e-3, the spread 1.5).
    torch.testing.assert_close(got[0], want[0].float(), rtol=0, atol=5e-3)


def test_bf16_as_autocast_gives_it(interpreter):
    # bf16 activations, fp32 beta and stats: computed in fp32, rounded once on the way out.
    x = data((4, 32, 8, 8), dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    beta = torch.linspace(-0.3, 0.3, 32)
    y, dx, dbeta, rm, rv = interpreter(run_fused, x, beta)
    assert y.dtype == dx.dtype == torch.bfloat16 and dbeta.dtype == torch.float32
    want = run(reference, x.float(), beta, grad_dtype=torch.bfloat16)  # the same incoming gradient
    torch.testing.assert_close(y.float(), want[0], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(dx.float(), want[1], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dbeta, want[2], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(rv, want[4], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # over 5 s on 2 cores
def test_kernels_compile_for_a_hopper_gpu():
    # At the block shapes the model uses: 64 channels per block (most layers), 16 (the
    # narrowest), one tile or several per partial program.
    fp32 = ("mean_ptr", "m2_ptr", "rstd_ptr", "beta_ptr", "dz_ptr", "dz_xhat_ptr", "part_mean_ptr", "part_m2_ptr",
            "running_mean_ptr", "running_var_ptr", "part_dz_ptr", "part_dz_xhat_ptr", "mean_dz_ptr",
            "mean_dz_xhat_ptr", "dbeta_ptr", "momentum", "eps")
    types = {**{n: "*bf16" for n in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr")},
             **{n: "fp32" if n in ("momentum", "eps") else "*fp32" for n in fp32}}
    for block_c in (64, 16):
        blocks = {"BLOCK_M": 4096 // block_c, "BLOCK_C": block_c}
        for tiles in (1, 8):
            compile_for_hopper(bn_relu._stats_partial, {"TILES": tiles, **blocks}, types)
            compile_for_hopper(bn_relu._backward_partial, {"TILES": tiles, **blocks}, types)
        final = {"BLOCK_T": 64, "BLOCK_C": block_c}
        compile_for_hopper(bn_relu._stats_final, {"ROWS": 8 * blocks["BLOCK_M"], **final}, types)
        compile_for_hopper(bn_relu._backward_final, final, types)
        compile_for_hopper(bn_relu._normalize_relu, blocks, types)
        compile_for_hopper(bn_relu._backward_dx, blocks, types)


def test_model_with_the_option_is_the_same_model():
    # The option changes how BN + ReLU run on CUDA, not the model: the same modules and
    # state (a checkpoint loads either way), and off CUDA the same computation.
    cfg = make_config({"width": 0.125})
    torch.manual_seed(0)
    plain = build_model(cfg)
    torch.manual_seed(0)
    fused_model = build_model({**cfg, "fused_bn_relu": True})
    assert plain.state_dict().keys() == fused_model.state_dict().keys()
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(fused_model(x), plain(x), rtol=0, atol=0)
    bn = ShiftOnlyBatchNorm(8)
    z = torch.randn(4, 8, 5, 5)
    torch.testing.assert_close(bn_relu.batch_norm_relu(z, bn), F.relu(ShiftOnlyBatchNorm(8)(z)))
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_kernels_in_the_model_match_pytorch():
    # The width-1 Inception's BN arm, bf16 channels_last as in training: one step fused
    # against one step of PyTorch's batch norm, from the same weights and batch. The two
    # round differently in bf16 layer after layer, so gradients are compared by direction
    # and size, running statistics to bf16's precision.
    cfg = make_config({"width": 1.0})
    torch.manual_seed(0)
    plain = build_model(cfg).cuda().to(memory_format=torch.channels_last)
    fused_model = build_model({**cfg, "fused_bn_relu": True}).cuda().to(memory_format=torch.channels_last)
    fused_model.load_state_dict(plain.state_dict())
    x = torch.rand(64, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), device="cuda")
    grads = []
    for model in (plain, fused_model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for (name, _), a, b in zip(plain.named_parameters(), *grads):
        a, b = a.float().flatten(), b.float().flatten()
        assert F.cosine_similarity(a, b, dim=0) > 0.99, name
        assert abs(b.norm() / a.norm() - 1) < 0.02, name
    for (name, a), b in zip(plain.named_buffers(), fused_model.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=1e-3, msg=name)
    assert type(fused_model.features[0].branch1(x).grad_fn).__name__ == "_BatchNormReLUBackward"
