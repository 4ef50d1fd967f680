"""The Inception's 3x3 max pooling, padded as TensorFlow pads it; on CUDA, a Triton kernel pair.

Padding: Keras MaxPooling2D(padding='same') gives an output of ceil(n / stride)
and splits the total padding max((out - 1) * stride + 3 - n, 0) with the smaller
half first (top/left); padded cells never win. For stride 1 that is PyTorch's
symmetric padding=1; for 32 -> 16 it is 0 before and 1 after, where PyTorch's
MaxPool2d(3, 2, padding=1) would shift every window.

Why a kernel of our own on CUDA: PyTorch's channels_last max pooling took 10.2 ms
of a 28.5 ms BN training step on an H200 (2026-11-26, width 1, batch 250, bf16;
benchmarks/step_variants.py), 36 %, the largest single cost. It keeps the winner
of every window as an int64 index (8 bytes per output element, 4x the bf16
output) and its backward scatters. The kernels below keep the winner as a 1-byte
offset in the 3x3 window, and the backward gathers: each input element adds the
gradients of the (at most 9) outputs whose winner it is, in fp32, and is written
once, so no zero-fill, no atomics, and the result is deterministic.

Ties and NaN are resolved exactly as PyTorch's max_pool2d kernels do: windows
are scanned row by row, a later element wins only if it is greater or NaN, and
the first in-bounds element stands if none is, so gradients go to the same
elements (tests/test_pool.py). On other devices, for float64, and where Triton
is missing, F.max_pool2d runs.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs; the CUDA path then falls back to F.max_pool2d
    triton = None

POOL = 3  # the kernels are written for the study's 3x3 windows
# They compare in fp32, which holds these exactly; float64 would be rounded.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def kernel_for(device: torch.device) -> str:
    """Which max pooling TFSamePool runs on `device` (training dtypes are KERNEL_DTYPES)."""
    return "triton" if device.type == "cuda" and triton is not None else "pytorch"


def same_pads(n: int, stride: int, pool: int = POOL) -> tuple[int, int]:
    """(before, after) padding of one axis of length n under TensorFlow's 'same'."""
    total = max((math.ceil(n / stride) - 1) * stride + pool - n, 0)
    return total // 2, total - total // 2


def aten_max_pool(x: torch.Tensor, stride: int, pool: int = POOL) -> torch.Tensor:
    """F.max_pool2d with TensorFlow's 'same' padding: what runs where the kernels do not."""
    (top, bottom), (left, right) = same_pads(x.shape[-2], stride, pool), same_pads(x.shape[-1], stride, pool)
    if top == bottom and left == right:  # symmetric: max_pool2d pads with -inf itself
        return F.max_pool2d(x, pool, stride, padding=(top, left))
    return F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), pool, stride)


class TFSamePool(nn.Module):
    """MaxPooling2D(pool, strides, padding='same') with TensorFlow's padding."""

    def __init__(self, pool: int = POOL, stride: int = 2):
        super().__init__()
        self.pool, self.stride = pool, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and triton is not None and self.pool == POOL and x.dtype in KERNEL_DTYPES:
            top, _ = same_pads(x.shape[-2], self.stride)
            left, _ = same_pads(x.shape[-1], self.stride)
            return _TritonMaxPool.apply(x, self.stride, top, left)
        return aten_max_pool(x, self.stride, self.pool)

    def extra_repr(self) -> str:
        return f"pool={self.pool}, stride={self.stride}, padding='same' (TensorFlow)"


class _TritonMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, stride: int, top: int, left: int) -> torch.Tensor:
        n, c, h, w = x.shape
        ho, wo = math.ceil(h / stride), math.ceil(w / stride)
        fmt = _memory_format(x)
        y = torch.empty((n, c, ho, wo), device=x.device, dtype=x.dtype, memory_format=fmt)
        winner = torch.empty((n, c, ho, wo), device=x.device, dtype=torch.int8, memory_format=fmt)
        block_p, block_c = _blocks(c)
        grid = (triton.cdiv(n * ho * wo, block_p), triton.cdiv(c, block_c))
        with _device_of(x):
            _max_pool_fwd[grid](x, y, winner, n * ho * wo, c, h, w, ho, wo, *x.stride(), *y.stride(),
                                STRIDE=stride, PAD_T=top, PAD_L=left, BLOCK_P=block_p, BLOCK_C=block_c)
        ctx.save_for_backward(winner)
        ctx.geometry = (x.shape, fmt, stride, top, left)
        return y

    @staticmethod
    @once_differentiable  # the backward is a kernel; a second derivative is an error, not a wrong 0
    def backward(ctx, dy: torch.Tensor):
        (winner,) = ctx.saved_tensors
        (n, c, h, w), fmt, stride, top, left = ctx.geometry
        ho, wo = winner.shape[-2:]
        dx = torch.empty((n, c, h, w), device=dy.device, dtype=dy.dtype, memory_format=fmt)
        block_p, block_c = _blocks(c)
        grid = (triton.cdiv(n * h * w, block_p), triton.cdiv(c, block_c))
        with _device_of(dy):
            _max_pool_bwd[grid](dy, winner, dx, n * h * w, c, h, w, ho, wo, *dy.stride(), *winner.stride(),
                                *dx.stride(), STRIDE=stride, PAD_T=top, PAD_L=left,
                                BLOCK_P=block_p, BLOCK_C=block_c)
        return dx, None, None, None


def _device_of(t: torch.Tensor):
    # Triton launches on the current CUDA device, which need not be the tensor's. (CPU
    # tensors reach the kernels only in Triton's interpreter, in tests/test_pool.py.)
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _blocks(channels: int) -> tuple[int, int]:
    # 1,024 elements per program: up to 64 channels (128 contiguous bytes of bf16 in
    # channels_last) times 16 or more positions, 4 warps. Of ten shapes timed on an
    # H200 over the model's pools (fwd + bwd, batch 250; 2026-11-26), 64 x 16 took
    # 4.19 ms per step, 64 x 32 4.87, 32 x 64 4.84, 128 x 16 5.19, larger ones 6-9.
    block_c = min(64, triton.next_power_of_2(channels))
    return 1024 // block_c, block_c


if triton is not None:

    # tl.full, not tl.zeros: tl.zeros is itself a jitted function, which Triton's
    # interpreter (TRITON_INTERPRET=1, how tests/test_pool.py runs these on a CPU)
    # only handles when the variable was set before triton was imported.

    @triton.jit
    def _positions(P, C, ROWS, COLS, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # A program's BLOCK_P positions (n, row, col) of an N x ROWS x COLS grid, and its
        # BLOCK_C channels, with their masks. The image index n is int64 so that offsets
        # past 2**31 elements (batches of ~8,000 at 32x32x256) do not wrap; the other
        # terms stay within one image.
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col = p % COLS
        row = (p // COLS) % ROWS
        n = (p // COLS // ROWS).to(tl.int64)
        return n, row, col, c, p < P, c < C

    @triton.jit
    def _max_pool_fwd(x_ptr, y_ptr, win_ptr, P, C, H, W, HO, WO,
                      sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                      STRIDE: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_P output positions (n, ho, wo) x BLOCK_C channels.
        n, ho, wo, c, p_ok, c_ok = _positions(P, C, HO, WO, BLOCK_P, BLOCK_C)
        best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
        win = tl.full((BLOCK_P, BLOCK_C), 0, tl.int32)
        seen = tl.full((BLOCK_P, BLOCK_C), 0, tl.int32)  # 1 once an in-bounds element was scanned
        for k in tl.static_range(9):  # row by row, as PyTorch's and TensorFlow's kernels scan
            hi = ho * STRIDE - PAD_T + k // 3
            wi = wo * STRIDE - PAD_L + k % 3
            inside = p_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            ok = inside[:, None] & c_ok[None, :]
            offset = (n * sxn + hi * sxh + wi * sxw)[:, None] + (c * sxc)[None, :]
            v = tl.load(x_ptr + offset, mask=ok, other=float("-inf")).to(tl.float32)
            take = ok & ((v > best) | (v != v) | (seen == 0))  # greater, NaN, or the first in bounds
            best = tl.where(take, v, best)
            win = tl.where(take, k, win)
            seen = tl.where(ok, 1, seen)
        out_ok = p_ok[:, None] & c_ok[None, :]
        out = (n * syn + ho * syh + wo * syw)[:, None] + (c * syc)[None, :]
        tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=out_ok)
        tl.store(win_ptr + out, win.to(tl.int8), mask=out_ok)

    @triton.jit
    def _max_pool_bwd(dy_ptr, win_ptr, dx_ptr, P, C, H, W, HO, WO,
                      sdn, sdc, sdh, sdw, swn, swc, swh, sww, sxn, sxc, sxh, sxw,
                      STRIDE: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # One program: BLOCK_P input positions (n, hi, wi) x BLOCK_C channels. Each gathers
        # from the outputs whose window holds it, in the order PyTorch's CUDA backward adds
        # them (output rows, then columns, ascending), in fp32, so the sums round alike.
        n, hi, wi, c, p_ok, c_ok = _positions(P, C, H, W, BLOCK_P, BLOCK_C)
        acc = tl.full((BLOCK_P, BLOCK_C), 0.0, tl.float32)
        for k in tl.static_range(9):
            kh = 2 - k // 3  # the window row holding (hi, wi) for output row ho
            kw = 2 - k % 3
            ho_s = hi + PAD_T - kh  # = ho * STRIDE
            wo_s = wi + PAD_L - kw
            ho = ho_s // STRIDE
            wo = wo_s // STRIDE
            inside = (p_ok & (ho_s >= 0) & (wo_s >= 0) & (ho_s % STRIDE == 0) & (wo_s % STRIDE == 0)
                      & (ho < HO) & (wo < WO))
            ok = inside[:, None] & c_ok[None, :]
            win = tl.load(win_ptr + (n * swn + ho * swh + wo * sww)[:, None] + (c * swc)[None, :],
                          mask=ok, other=-1)
            g = tl.load(dy_ptr + (n * sdn + ho * sdh + wo * sdw)[:, None] + (c * sdc)[None, :],
                        mask=ok & (win == kh * 3 + kw), other=0.0)
            acc += g.to(tl.float32)
        out = (n * sxn + hi * sxh + wi * sxw)[:, None] + (c * sxc)[None, :]
        tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])
