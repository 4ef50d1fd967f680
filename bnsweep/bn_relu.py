"""Batch norm (training mode) and the ReLU after it, fused; on CUDA, Triton kernels.

Why: in a BN training step of the width-1 Inception on an H200 (2026-11-26,
batch 250, bf16, channels_last; benchmarks/step_variants.py), PyTorch's batch
norm kernels took about 5.1 ms of 21 ms of GPU time, and the elementwise passes,
ReLU's forward and backward among them, 2.9 ms. Every one of them streams a
whole activation through memory. Here, per BN layer, six kernels:

    forward   partial stats: read x once (Welford per tile, merged as Chan et al.)
              final stats: mean, rstd and the running stats from the partials
              y = max((x - mean) * rstd + beta, 0): read x, write y
    backward  partial sums of dz and dz * xhat, dz = dy where the ReLU passed: read x, dy
              final sums: their means and d(beta)
              dx = rstd * (dz - mean(dz) - xhat * mean(dz * xhat)): read x, dy, write dx

against PyTorch's batch norm plus a separate ReLU, which also writes the
normalised tensor, reads it again for the ReLU, and in the backward reads and
writes the ReLU's gradient once more. All sums are in fp32 and in a fixed order
(no atomics), so a step is deterministic; nothing runs between the kernels on
the host side but allocation, so a CUDA graph captures them as they are.

The arithmetic is PyTorch's: biased variance for normalising, unbiased
(M / (M - 1)) for the running variance, running stats updated with the
module's momentum, num_batches_tracked counted. gamma is the constant 1 of
Keras's scale=False (model.ShiftOnlyBatchNorm). Which elements pass the ReLU
is decided from x in fp32 in both directions, as the forward decided it.

Status (2026-11-26): checked against PyTorch in Triton's interpreter on CPU and
compiled to sm_90 machine code without a GPU (tests/test_bn_relu.py), but not
yet run or timed on one, so the model uses it only where the config asks
(fused_bn_relu, default off) until benchmarks/step_variants.py has measured it. Elsewhere (CPU, eval mode, other
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
BLOCK_ELEMENTS = 4096  # per program and step: e.g. 64 rows x 64 channels, 4 warps
# A partial-pass program walks a power of two of tiles, enough that each channel block
# has at most about MAX_PARTS partials: the final passes, one program per channel
# block, read those in steps of BLOCK_T, and their time grows with the steps.
MAX_PARTS = 1024  # 1,000+ programs for the widest layers; 16 final steps of BLOCK_T
BLOCK_T = 64


def kernel_for(device: torch.device, bn: bool, fused: bool) -> str:
    """Which BN + ReLU a ConvUnit runs in training on `device`: batch_norm_relu's own test."""
    if not bn:
        return "none"
    return "triton" if fused and device.type == "cuda" and triton is not None else "pytorch"


def batch_norm_relu(x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """relu(bn(x)) for a shift-only batch norm (gamma == 1); fused in training on CUDA."""
    if bn.training and bn.track_running_stats and bn.momentum is not None and x.is_cuda and triton is not None \
            and x.dtype in KERNEL_DTYPES and _as_rows(x) is not None and x.shape[1] and x.numel() // x.shape[1] > 1:
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
    """How an [M, C] matrix is cut: tiles of block_m rows x block_c channels; the
    partial passes give each program `tiles` consecutive tiles (rows_per_program rows)."""

    def __init__(self, rows: torch.Tensor):
        self.m, self.c = rows.shape
        self.block_c = min(64, triton.next_power_of_2(self.c))
        self.block_m = BLOCK_ELEMENTS // self.block_c
        n_tiles, n_cblocks = triton.cdiv(self.m, self.block_m), triton.cdiv(self.c, self.block_c)
        self.tiles = triton.next_power_of_2(triton.cdiv(n_tiles, MAX_PARTS))  # a power of two: few compiled variants
        self.rows_per_program = self.block_m * self.tiles
        self.parts = triton.cdiv(self.m, self.rows_per_program)
        self.grid = (n_tiles, n_cblocks)  # elementwise passes: one tile per program
        self.partial_grid = (self.parts, n_cblocks)
        self.final_grid = (n_cblocks,)
        self.blocks = dict(BLOCK_M=self.block_m, BLOCK_C=self.block_c)
        self.partial = dict(TILES=self.tiles, **self.blocks)
        self.final = dict(ROWS=self.rows_per_program, BLOCK_T=BLOCK_T, BLOCK_C=self.block_c)

    def buffers(self, like: torch.Tensor, n: int, rows: int | None = None) -> list[torch.Tensor]:
        """n fp32 buffers of [rows, C] (default: one row per partial)."""
        return [torch.empty((rows or self.parts, self.c), device=like.device, dtype=torch.float32) for _ in range(n)]


def _device_of(t: torch.Tensor):
    # Triton launches on the current CUDA device (CPU tensors: the interpreter, in tests).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, beta, running_mean, running_var, momentum: float, eps: float):
        rows = _as_rows(x)
        t = _Tiling(rows)
        part_mean, part_m2 = t.buffers(x, 2)
        mean, rstd = (b[0] for b in t.buffers(x, 2, rows=1))
        y = torch.empty_like(x)  # same memory format
        beta32 = beta.float()
        with _device_of(x):
            _stats_partial[t.partial_grid](rows, part_mean, part_m2, t.m, t.c, **t.partial)
            _stats_final[t.final_grid](part_mean, part_m2, mean, rstd, running_mean, running_var,
                                       t.parts, t.m, t.c, momentum, eps, **t.final)
            _normalize_relu[t.grid](rows, _as_rows(y), mean, rstd, beta32, t.m, t.c, **t.blocks)
        for stat in (running_mean, running_var):  # written by a kernel: tell autograd, as an in-place op would
            torch.autograd.graph.increment_version(stat)
        ctx.save_for_backward(x, mean, rstd, beta32)
        ctx.beta_dtype, ctx.tiling = beta.dtype, t
        return y

    @staticmethod
    @once_differentiable  # kernels: a second derivative is an error, not a wrong 0
    def backward(ctx, dy):
        x, mean, rstd, beta32 = ctx.saved_tensors
        rows = _as_rows(x)
        # The incoming gradient is often a channel slice of a wider one (the backward of the
        # Inception's concatenation): rows of C channels, `dy_stride` apart. Copied only if
        # its channels are not adjacent.
        dy_rows = dy.permute(0, 2, 3, 1).reshape(-1, dy.shape[1]) if dy.dim() == 4 else dy
        if dy_rows.stride(1) != 1:
            dy_rows = dy_rows.contiguous()
        dy_stride = dy_rows.stride(0)
        t = ctx.tiling
        part_dz, part_dz_xhat = t.buffers(x, 2)
        mean_dz, mean_dz_xhat, dbeta = (b[0] for b in t.buffers(x, 3, rows=1))
        dx = torch.empty_like(x)
        with _device_of(x):
            _backward_partial[t.partial_grid](rows, dy_rows, mean, rstd, beta32, part_dz, part_dz_xhat,
                                              t.m, t.c, dy_stride, **t.partial)
            _backward_final[t.final_grid](part_dz, part_dz_xhat, mean_dz, mean_dz_xhat, dbeta, t.parts, t.m, t.c,
                                          BLOCK_T=BLOCK_T, BLOCK_C=t.block_c)
            _backward_dx[t.grid](rows, dy_rows, _as_rows(dx), mean, rstd, beta32, mean_dz, mean_dz_xhat,
                                 t.m, t.c, dy_stride, **t.blocks)
        return dx, dbeta.to(ctx.beta_dtype), None, None, None, None


if triton is not None:

    # The [M, C] matrix has row stride C. Row offsets are int64: M * C passes 2**31 at
    # batch 250 for the widest layers. tl.full, not tl.zeros, as in bnsweep/pool.py.

    @triton.jit
    def _tile(row0, pid_c, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # Channels, offsets (row stride C) and mask of one tile; rows as int64, for other strides.
        r = (row0 + tl.arange(0, BLOCK_M)).to(tl.int64)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        ok = (r < M)[:, None] & (c < C)[None, :]
        return c, (r * C)[:, None] + c[None, :], ok, r

    @triton.jit
    def _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C):
        # x normalised, the pre-ReLU value, and where the ReLU passes it (all fp32).
        c_ok = c < C
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
        beta = tl.load(beta_ptr + c, mask=c_ok, other=0.0)
        x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        xhat = (x - mean[None, :]) * rstd[None, :]
        # One fused multiply-add, written out: the ReLU's decision must be the same bit for
        # bit in all three kernels, whatever the compiler would otherwise contract.
        z = tl.fma(x - mean[None, :], rstd[None, :], beta[None, :])
        return xhat, z, z > 0

    @triton.jit
    def _chan(n, mean, m2, n_b, mean_b, m2_b):
        # Two groups' (count, mean, M2) merged (Chan, Golub and LeVeque 1979); all [BLOCK_C]
        # vectors, and a group may be empty (count 0).
        total = tl.maximum(n + n_b, 1.0)
        delta = mean_b - mean
        return n + n_b, mean + delta * (n_b / total), m2 + m2_b + delta * delta * (n * n_b / total)

    @triton.jit
    def _stats_partial(x_ptr, mean_ptr, m2_ptr, M, C,
                       TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        # Mean and M2 (sum of squared deviations) of TILES consecutive tiles, each tile's
        # own merged into the running ones.
        part, pid_c = tl.program_id(0), tl.program_id(1)
        n = tl.full((BLOCK_C,), 0.0, tl.float32)
        mean = tl.full((BLOCK_C,), 0.0, tl.float32)
        m2 = tl.full((BLOCK_C,), 0.0, tl.float32)
        for i in range(TILES):
            row0 = (part * TILES + i) * BLOCK_M
            c, offsets, ok, _ = _tile(row0, pid_c, M, C, BLOCK_M, BLOCK_C)
            x = tl.load(x_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
            n_t = tl.sum(ok.to(tl.float32), axis=0)  # rows of this tile (the last may have none)
            mean_t = tl.sum(x, axis=0) / tl.maximum(n_t, 1.0)
            d = tl.where(ok, x - mean_t[None, :], 0.0)
            n, mean, m2 = _chan(n, mean, m2, n_t, mean_t, tl.sum(d * d, axis=0))
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        tl.store(mean_ptr + part * C + c, mean, mask=c < C)
        tl.store(m2_ptr + part * C + c, m2, mask=c < C)

    @triton.jit
    def _parts(t0, c, c_ok, PARTS, M, C, ROWS, BLOCK_T: tl.constexpr):
        # Offsets, mask and row counts of partials t0 .. t0 + BLOCK_T - 1 (ROWS rows each but the last).
        t = t0 + tl.arange(0, BLOCK_T)
        ok = (t < PARTS)[:, None] & c_ok[None, :]
        count = tl.where(ok, tl.minimum(M - t * ROWS, ROWS).to(tl.float32)[:, None], 0.0)
        return (t * C)[:, None] + c[None, :], ok, count

    @triton.jit
    def _stats_final(part_mean_ptr, part_m2_ptr, mean_ptr, rstd_ptr, running_mean_ptr, running_var_ptr,
                     PARTS, M, C, momentum, eps,
                     ROWS: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        # The partials merged, BLOCK_T at a time; mean and rstd stored, the running stats
        # updated in place as PyTorch updates them.
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        n = tl.full((BLOCK_C,), 0.0, tl.float32)
        mean = tl.full((BLOCK_C,), 0.0, tl.float32)
        m2 = tl.full((BLOCK_C,), 0.0, tl.float32)
        for t0 in range(0, PARTS, BLOCK_T):
            offsets, ok, count = _parts(t0, c, c_ok, PARTS, M, C, ROWS, BLOCK_T)
            part_mean = tl.load(part_mean_ptr + offsets, mask=ok, other=0.0)
            part_m2 = tl.load(part_m2_ptr + offsets, mask=ok, other=0.0)
            n_b = tl.sum(count, axis=0)
            mean_b = tl.sum(count * part_mean, axis=0) / tl.maximum(n_b, 1.0)
            d = part_mean - mean_b[None, :]
            m2_b = tl.sum(part_m2 + count * d * d, axis=0)  # masked: part_m2 and count are 0
            n, mean, m2 = _chan(n, mean, m2, n_b, mean_b, m2_b)
        # Biased variance normalises; IEEE-rounded sqrt and division, as PyTorch's kernels
        # (Triton's defaults are approximate, a few ulp off).
        rstd = tl.div_rn(tl.full((BLOCK_C,), 1.0, tl.float32), tl.sqrt_rn(m2 / M + eps))
        tl.store(mean_ptr + c, mean, mask=c_ok)
        tl.store(rstd_ptr + c, rstd, mask=c_ok)
        running_mean = tl.load(running_mean_ptr + c, mask=c_ok, other=0.0)
        running_var = tl.load(running_var_ptr + c, mask=c_ok, other=0.0)
        tl.store(running_mean_ptr + c, (1 - momentum) * running_mean + momentum * mean, mask=c_ok)
        tl.store(running_var_ptr + c, (1 - momentum) * running_var + momentum * (m2 / (M - 1)), mask=c_ok)

    @triton.jit
    def _normalize_relu(x_ptr, y_ptr, mean_ptr, rstd_ptr, beta_ptr, M, C,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        c, offsets, ok, _ = _tile(tl.program_id(0) * BLOCK_M, tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
        tl.store(y_ptr + offsets, tl.where(passes, z, 0.0).to(y_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _backward_partial(x_ptr, dy_ptr, mean_ptr, rstd_ptr, beta_ptr, dz_ptr, dz_xhat_ptr, M, C, DY_STRIDE,
                          TILES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        part, pid_c = tl.program_id(0), tl.program_id(1)
        sum_dz = tl.full((BLOCK_C,), 0.0, tl.float32)
        sum_dz_xhat = tl.full((BLOCK_C,), 0.0, tl.float32)
        for i in range(TILES):
            c, offsets, ok, r = _tile((part * TILES + i) * BLOCK_M, pid_c, M, C, BLOCK_M, BLOCK_C)
            xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
            dy = tl.load(dy_ptr + (r * DY_STRIDE)[:, None] + c[None, :], mask=ok, other=0.0).to(tl.float32)
            dz = tl.where(passes & ok, dy, 0.0)
            sum_dz += tl.sum(dz, axis=0)
            sum_dz_xhat += tl.sum(dz * xhat, axis=0)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        tl.store(dz_ptr + part * C + c, sum_dz, mask=c < C)
        tl.store(dz_xhat_ptr + part * C + c, sum_dz_xhat, mask=c < C)

    @triton.jit
    def _backward_final(part_dz_ptr, part_dz_xhat_ptr, mean_dz_ptr, mean_dz_xhat_ptr, dbeta_ptr, PARTS, M, C,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        sum_dz = tl.full((BLOCK_C,), 0.0, tl.float32)
        sum_dz_xhat = tl.full((BLOCK_C,), 0.0, tl.float32)
        for t0 in range(0, PARTS, BLOCK_T):
            offsets, ok, _ = _parts(t0, c, c_ok, PARTS, M, C, 1, BLOCK_T)
            sum_dz += tl.sum(tl.load(part_dz_ptr + offsets, mask=ok, other=0.0), axis=0)
            sum_dz_xhat += tl.sum(tl.load(part_dz_xhat_ptr + offsets, mask=ok, other=0.0), axis=0)
        tl.store(dbeta_ptr + c, sum_dz, mask=c_ok)
        tl.store(mean_dz_ptr + c, sum_dz / M, mask=c_ok)
        tl.store(mean_dz_xhat_ptr + c, sum_dz_xhat / M, mask=c_ok)

    @triton.jit
    def _backward_dx(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, beta_ptr, mean_dz_ptr, mean_dz_xhat_ptr, M, C,
                     DY_STRIDE, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
        c, offsets, ok, r = _tile(tl.program_id(0) * BLOCK_M, tl.program_id(1), M, C, BLOCK_M, BLOCK_C)
        xhat, z, passes = _xhat_and_pass(x_ptr, offsets, ok, c, mean_ptr, rstd_ptr, beta_ptr, C)
        dy = tl.load(dy_ptr + (r * DY_STRIDE)[:, None] + c[None, :], mask=ok, other=0.0).to(tl.float32)
        dz = tl.where(passes, dy, 0.0)
        c_ok = c < C
        rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
        mean_dz = tl.load(mean_dz_ptr + c, mask=c_ok, other=0.0)
        mean_dz_xhat = tl.load(mean_dz_xhat_ptr + c, mask=c_ok, other=0.0)
        dx = rstd[None, :] * (dz - mean_dz[None, :] - xhat * mean_dz_xhat[None, :])
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=ok)
