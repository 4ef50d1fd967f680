"""Keras's ImageDataGenerator(shear_range, zoom_range, horizontal_flip), the study's
augmentation, on the data's device: per-image draws, then one affine resampling.

Reproduces keras-preprocessing 1.0.x-1.1.0, which the study's Keras delegated to
(see the notes below, with the sources); tests/test_data.py checks it against a
reference written from those sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------
# Augmentation: Keras ImageDataGenerator(shear_range, zoom_range, horizontal_flip)
# --------------------------------------------------------------------------
#
# Keras 2.2-2.3 (2018-2019, the study's era) delegates to keras-preprocessing
# 1.0.x-1.1.0, whose keras_preprocessing/image/affine_transformations.py builds,
# per image,
#     M = shear @ zoom,  shear = [[1, -sin(sh), 0], [0, cos(sh), 0], [0, 0, 1]],
#                        zoom  = [[zx, 0, 0], [0, zy, 0], [0, 0, 1]],
# sh = deg2rad(shear in degrees); centres it with transform_matrix_offset_center
# (matrix, h, w): T = [[I, o], [0, 1]] @ M @ [[I, -o], [0, 1]] with
# o = (h / 2 + 0.5, w / 2 + 0.5); and calls scipy.ndimage.affine_transform
# (channel, T[:2, :2], T[:2, 2], order=1, mode='nearest') on each channel, which
# reads output pixel p from input position T p. The first coordinate is the ROW
# (axis 0), so Keras's "x" is vertical. Then it flips the columns with p = 0.5.
# keras-preprocessing PR #314 (merged Oct 2020) changed o to h / 2 - 0.5, the
# true centre (+0.5 puts the fixed point one pixel past it; with zoom 0.8 that
# shifts the image by 0.2 px), and later copies also swap the axes. The study
# predates both, so the default is the older +0.5, kept as a parameter.
KERAS_CENTER_OFFSET = 0.5


@dataclass(frozen=True)
class AugmentDraws:
    """Per-image random draws, each a [N] tensor on the data's device."""

    shear_deg: torch.Tensor  # shear angle in degrees, U(-shear_range, shear_range)
    zx: torch.Tensor  # zoom of the row coordinate (Keras's zx), U(1 - z, 1 + z)
    zy: torch.Tensor  # zoom of the column coordinate (Keras's zy), U(1 - z, 1 + z)
    flip: torch.Tensor  # bool: mirror left-right


def draw_augmentation(n: int, generator: torch.Generator, shear_range_deg: float,
                      zoom_range: float, horizontal_flip: bool,
                      device: torch.device | str) -> AugmentDraws:
    """Draws for n images: one U[0, 1) tensor of shape [n, 4] from `generator`,
    columns (shear, zx, zy, flip) in Keras's per-image order. Exactly these 4n
    numbers are consumed whatever the ranges, so the stream stays aligned."""
    u = torch.rand(n, 4, generator=generator, device=device)
    shear = (2 * u[:, 0] - 1) * shear_range_deg
    zx = 1 - zoom_range + 2 * zoom_range * u[:, 1]
    zy = 1 - zoom_range + 2 * zoom_range * u[:, 2]
    flip = (u[:, 3] < 0.5) & bool(horizontal_flip)
    return AugmentDraws(shear, zx, zy, flip)


def keras_affine_matrices(draws: AugmentDraws, height: int, width: int,
                          center_offset: float = KERAS_CENTER_OFFSET) -> torch.Tensor:
    """[N, 3, 3] matrices mapping output pixel (row, col, 1) to input pixel
    (row, col, 1), exactly Keras's centred transform (see the comment above)."""
    sh = torch.deg2rad(draws.shear_deg)
    n = sh.shape[0]
    m = torch.zeros(n, 3, 3, dtype=sh.dtype, device=sh.device)
    # shear @ zoom, multiplied out
    m[:, 0, 0] = draws.zx
    m[:, 0, 1] = -torch.sin(sh) * draws.zy
    m[:, 1, 1] = torch.cos(sh) * draws.zy
    m[:, 2, 2] = 1
    # centre: T = offset @ M @ reset has linear part A and translation o - A o.
    # o stays Python floats: a tensor built from a list on CUDA is a host-to-device
    # copy, which waits for the GPU, once per training step.
    o0, o1 = height / 2 + center_offset, width / 2 + center_offset
    m[:, 0, 2] = o0 - (m[:, 0, 0] * o0 + m[:, 0, 1] * o1)
    m[:, 1, 2] = o1 - m[:, 1, 1] * o1
    return m


def _grid_theta(pixel_matrices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    # affine_grid works in normalised coordinates in (x=column, y=row) order;
    # with align_corners=True pixel index p maps to u = p / s - 1, s = (size - 1) / 2.
    # From in_p = A out_p + b: in_u = S^-1 A S out_u + S^-1 (A S 1 + b) - 1.
    # Scales as Python floats, not a device tensor (no host sync per step; see above).
    s = ((height - 1) / 2, (width - 1) / 2)
    theta = torch.empty(pixel_matrices.shape[0], 2, 3, dtype=pixel_matrices.dtype, device=pixel_matrices.device)
    for i in range(2):
        for j in range(2):
            theta[:, i, j] = pixel_matrices[:, i, j] * (s[j] / s[i])
        theta[:, i, 2] = (pixel_matrices[:, i, 0] * s[0] + pixel_matrices[:, i, 1] * s[1]
                          + pixel_matrices[:, i, 2]) / s[i] - 1
    return _rows_cols_to_xy(theta)


def _rows_cols_to_xy(theta: torch.Tensor) -> torch.Tensor:
    # Swap the two output rows and the two input columns of the linear part:
    # (row, col) order becomes (x=col, y=row); the translation column stays last.
    # flip, not indexing with [1, 0]: a Python index list becomes a device tensor (a host sync).
    out = theta.flip(1)
    return torch.cat([out[:, :, :2].flip(2), out[:, :, 2:]], dim=2)


def apply_augmentation(x: torch.Tensor, draws: AugmentDraws,
                       center_offset: float = KERAS_CENTER_OFFSET, affine: bool = True) -> torch.Tensor:
    """Apply draws to float images x [N, C, H, W]: the affine warp (bilinear,
    edge pixels repeated outside, i.e. Keras's order=1 and fill_mode='nearest'),
    then the flip, as Keras does."""
    n, _, h, w = x.shape
    if affine:
        theta = _grid_theta(keras_affine_matrices(draws, h, w, center_offset), h, w).to(x.dtype)
        grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=True)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return torch.where(draws.flip[:, None, None, None], x.flip(-1), x)


def augment(x: torch.Tensor, generator: torch.Generator, shear_range_deg: float,
            zoom_range: float, horizontal_flip: bool) -> torch.Tensor:
    """Keras ImageDataGenerator augmentation of float images in [0, 1], NCHW,
    with new draws per image from `generator` (which must live on x's device)."""
    if not x.is_floating_point():
        raise TypeError(f"augment expects float images in [0, 1], got {x.dtype}; use data.to_unit_float first")
    draws = draw_augmentation(x.shape[0], generator, shear_range_deg, zoom_range, horizontal_flip, x.device)
    # Keras skips the warp when there is no shear or zoom; so do we (it would be
    # the identity, up to rounding).
    affine = shear_range_deg != 0 or zoom_range != 0
    return apply_augmentation(x, draws, affine=affine)
