"""Batch norm (training mode) and the ReLU after it, fused; on CUDA, Triton kernels.

Why: in a BN training step of the width-1 Inception on an H200 (2026-11-26,
batch 250, bf16, channels_last; benchmarks/step_variants.py), PyTorch's batch
norm kernels took about 5.1 ms of 21 ms of GPU time, and the elementwise passes,
ReLU's forward and backward among them, 2.9 ms. Every one of them streams a
whole activation through memory. Here, per BN layer:

    forward   stats: read x once (per-tile mean and M2, merged as Chan et al.)
              y = max((x - mean) * rstd + beta, 0): read x, write y
    backward  sums of dz and dz * xhat, dz = dy where y > 0: read x, dy
              dx = rstd * (dz - mean(dz) - xhat * mean(dz * xhat)): read x, dy, write dx

against PyTorch's batch norm plus a separate ReLU, which also writes the
normalised tensor, reads it again for the ReLU, and in the backward reads and
writes the ReLU's gradient once more. All sums are in fp32 and in a fixed order
(no atomics), so a step is deterministic.

The arithmetic is PyTorch's: biased variance for normalising, unbiased
(M / (M - 1)) for the running variance, running stats updated with the
module's momentum, num_batches_tracked counted. gamma is the constant 1 of
Keras's scale=False (model.ShiftOnlyBatchNorm). Which elements pass the ReLU
is decided from x in fp32 in both directions, as the forward decided it.

Status (2026-11-26): checked against PyTorch in Triton's interpreter on CPU
(tests/test_bn_relu.py); not yet compiled or timed on a GPU, so the model uses
it only where the config asks (fused_bn_relu, default off) until
benchmarks/step_variants.py has measured it. Elsewhere (CPU, eval mode, other
layouts, float64, no Triton) it is batch_norm then ReLU.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: batch_norm then ReLU
    triton = None

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # computed in fp32 either way
BLOCK_ELEMENTS = 4096  # per program: e.g. 64 rows x 64 channels, 4 warps


def batch_norm_relu(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """relu(bn(x)) for a shift-only batch norm (gamma == 1); fused in training on CUDA."""
    if bn.training and bn.track_running_stats and bn.momentum is not None and x.is_cuda and triton is not None \
            and x.dtype in KERNEL_DTYPES and _as_rows(x) is not None and x.numel() // x.shape[1] > 1:
        bn.num_batches_tracked.add_(1)
        return _BatchNormReLU.apply(x, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps)
    return F.relu(bn(x))


def _as_rows(x: torch.Tensor) -> torch.Tensor | None:
    """x as an [M, C] matrix with contiguous rows (channels_last 4D, or 2D), else None."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view: no copy
    if x.dim() == 2 and x.is_contiguous():
        return x
    return None


class _Tiling:
    """How an [M, C] matrix is cut into programs: tiles of block_m rows x block_c channels."""

    def __init__(self, rows: torch.Tensor):
        self.m, self.c = rows.shape
        self.block_c = min(64, triton.next_power_of_2(self.c))
        self.block_m = BLOCK_ELEMENTS // self.block_c
        self.tiles = triton.cdiv(self.m, self.block_m)
        self.grid = (self.tiles, triton.cdiv(self.c, self.block_c))
        self.blocks = dict(BLOCK_M=self.block_m, BLOCK_C=self.block_c)

    def per_tile(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two fp32 [tiles, C] buffers for the tiles' partial results."""
        first = torch.empty((self.tiles, self.c), device=like.device, dtype=torch.float32)
        return first, torch.empty_like(first)


def _device_of(t: torch.Tensor):
    # Triton launches on the current CUDA device (CPU tensors: the interpreter, in tests).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta, running_mean, running_var, momentum: float, eps: float):
        rows = _as_rows(x)
        t = _Tiling(rows)
        m = t.m
        tile_mean, tile_m2 = t.per_tile(x)
        with _device_of(x):
            _stats_tiles[t.grid](rows, tile_mean, tile_m2, m, t.c, **t.blocks)
        # Chan et al.'s merge of the tiles' (count, mean, M2): exact in exact arithmetic,
        # and without the cancellation of E[x^2] - E[x]^2. Counts from arange, on the
        # device: no host-to-device copy, so a CUDA graph can capture it.
        counts = (m - torch.arange(t.tiles, device=x.device, dtype=torch.float32) * t.block_m).clamp_(max=t.block_m)
        mean = (counts[:, None] * tile_mean).sum(0) / m
        m2 = tile_m2.sum(0) + (counts[:, None] * (tile_mean - mean) ** 2).sum(0)
        var = m2 / m  # biased: what normalises
        rstd = torch.rsqrt(var + eps)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(m2 / (m - 1), alpha=momentum)  # unbiased, as PyTorch
        y = torch.empty_like(x)  # same memory format
        beta32 = beta.float()
        with _device_of(x):
            _normalize_relu[t.grid](rows, _as_rows(y), mean, rstd, beta32, m, t.c, **t.blocks)
        ctx.save_for_backward(x, mean, rstd, beta32)
        ctx.beta_dtype = beta.dtype
        return y

    @staticmethod
    @once_differentiable  # kernels: a second derivative is an error, not a wrong 0
    def backward(ctx, dy):
        x, mean, rstd, beta32 = ctx.saved_tensors
        rows = _as_rows(x)
        dy_rows = _as_rows(dy.contiguous(memory_format=torch.channels_last) if dy.dim() == 4 else dy.contiguous())
        t = _Tiling(rows)
        tile_dz, tile_dz_xhat = t.per_tile(x)
        with _device_of(x):
            _backward_sums[t.grid](rows, dy_rows, mean, rstd, beta32, tile_dz, tile_dz_xhat, t.m, t.c, **t.blocks)
        sum_dz, sum_dz_xhat = tile_dz.sum(0), tile_dz_xhat.sum(0)
        dx = torch.empty_like(x)
        with _device_of(x):
            _backward_dx[t.grid](rows, dy_rows, _as_rows(dx), mean, rstd, beta32, sum_dz / t.m, sum_dz_xhat / t.m,
                                 t.m, t.c, **t.blocks)
        return dx, sum_dz.to(ctx.beta_dtype), None, None, None, None


if triton is not None:

    # Every kernel: one program per tile of BLOCK_M rows x BLOCK_C channels of the
    # [M, C] matrix (row stride C). Row offsets are int64: M * C passes 2**31 at batch
    # 250 for the widest layers (32 x 32 x 512 per image is 524,288 elements).
    # tl.full, not tl.zeros: Triton's interpreter (tests) handles the former only.

    @triton.jit
    def _tile(pid_m, pid_c, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        ok = (r < M)[:, None] & (c < C)[None, :]
        offsets = (r.to(tl.int64) * C)[:, None] + c[None, :]
        return c, offsets, ok

    @triton.jit
    def _stats_tiles(x_ptr, mean_ptr, m2_ptr, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_m = tl.program_id(0)
        c, offsets, ok = _tile(pid_m, tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        count = tl.minimum(M - pid_m * BLOCK_M, BLOCK_M).to(tl.float32)
        mean = tl.sum(x, axis=0) / count
        centred = tl.where(ok, x - mean[None, :], 0.0)
        m2 = tl.sum(centred * centred, axis=0)
        c_ok = c < C
        tl.store(mean_ptr + pid_m * C + c, mean, mask=c_ok)
        tl.store(m2_ptr + pid_m * C + c, m2, mask=c_ok)

    @triton.jit
    def _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C):
        # x normalised, the pre-ReLU value, and where the ReLU passes it (all fp32).
        c_ok = c < C
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
        beta = tl.load(beta_ptr + c, mask=c_ok, other=0.0)
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        xhat = (x - mean[None, :]) * rstd[None, :]
        z = xhat + beta[None, :]
        return xhat, z, z > 0

    @triton.jit
    def _normalize_relu(x_ptr, y_ptr, mean_ptr, rstd_ptr, beta_ptr, M, C,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        c, offsets, ok = _tile(tl.program_id(0), tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
        y = tl.where(passes, z, 0.0)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _backward_sums(x_ptr, dy_ptr, mean_ptr, rstd_ptr, beta_ptr, dz_ptr, dz_xhat_ptr, M, C,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        pid_m = tl.program_id(0)
        c, offsets, ok = _tile(pid_m, tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
        dy = tl.load(dy_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        dz = tl.where(passes & ok, dy, 0.0)
        c_ok = c < C
        tl.store(dz_ptr + pid_m * C + c, tl.sum(dz, axis=0), mask=c_ok)
        tl.store(dz_xhat_ptr + pid_m * C + c, tl.sum(dz * xhat, axis=0), mask=c_ok)

    @triton.jit
    def _backward_dx(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, beta_ptr, mean_dz_ptr, mean_dz_xhat_ptr, M, C,
                     BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        c, offsets, ok = _tile(tl.program_id(0), tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
        dy = tl.load(dy_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        dz = tl.where(passes, dy, 0.0)
        c_ok = c < C
        rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
        mean_dz = tl.load(mean_dz_ptr + c, mask=c_ok, other=0.0)
        mean_dz_xhat = tl.load(mean_dz_xhat_ptr + c, mask=c_ok, other=0.0)
        dx = rstd[None, :] * (dz - mean_dz[None, :] - xhat * mean_dz_xhat[None, :])
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=ok)
