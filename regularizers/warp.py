"""A bilinear affine warp with :func:`kornia.geometry.transform.warp_affine`'s semantics whose
backward computes the input's gradient only (the sampling grid is a constant of the step).

kornia stays the source of the semantics: the grid is kornia's (its pixel-to-normalized
homography, inverted, applied to kornia's base grid, as ``warp_affine`` builds it eagerly with
``align_corners=True``), and ``tests/test_recipe_cost.py`` pins the forward and the input
gradient against ``warp_affine`` (bit-identical with kornia 0.9). What changes is the autograd
graph: one node instead of kornia's dozen small ones, ``grid_sampler_2d_backward`` asked for the
input gradient alone (``output_mask=[True, False]``; PyTorch's CPU kernel still computes the grid
gradient, so on the CPU this saves the graph, not that work), the fill offset added in place, and
the output written in the memory layout the caller asks for (``memory_format``; the transform
keeps the plain layout: see results/bench_engine.md).
"""
from __future__ import annotations

import kornia
import torch

_BILINEAR, _ZEROS = 0, 0  # aten's enums for mode="bilinear", padding_mode="zeros"
try:  # the 3x3 inverse warp_affine itself uses (kornia >= 0.8): the same grid to the last bit
    from kornia.core.utils import _inverse_3x3_closed_form as _inverse
except ImportError:  # older kornia inverts with torch
    _inverse = torch.linalg.inv


def sampling_grid(matrix: torch.Tensor, in_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """``(B, Ho, Wo, 2)`` normalized source coordinates of each output pixel for source->output
    pixel maps ``matrix`` ``(B, 2, 3)``, as ``kornia.geometry.transform.warp_affine`` computes
    them with ``align_corners=True``."""
    with torch.no_grad():
        m = kornia.geometry.conversions.convert_affinematrix_to_homography(matrix)
        m = kornia.geometry.conversions.normalize_homography(m, in_size, out_size)
        inv = _inverse(m)
        ho, wo = out_size
        ys = torch.linspace(-1.0, 1.0, ho, device=matrix.device, dtype=matrix.dtype) if ho > 1 else \
            torch.zeros(1, device=matrix.device, dtype=matrix.dtype)
        xs = torch.linspace(-1.0, 1.0, wo, device=matrix.device, dtype=matrix.dtype) if wo > 1 else \
            torch.zeros(1, device=matrix.device, dtype=matrix.dtype)
        grid = torch.empty(inv.shape[0], ho, wo, 2, device=matrix.device, dtype=matrix.dtype)
        for k in range(2):  # kornia's (a * x + b * y) + c per pixel; the products per column and per row only
            torch.add(inv[:, k, 0, None, None] * xs[None, None, :], inv[:, k, 1, None, None] * ys[None, :, None],
                      out=grid[..., k]).add_(inv[:, k, 2, None, None])
        return grid


class _Warp(torch.autograd.Function):
    """``grid_sample(x - fill, grid) + fill`` (bilinear, zero padding, corners aligned) written in
    ``memory_format``; backward: the input gradient only."""

    @staticmethod
    def forward(ctx, x, grid, fill: float, memory_format):
        sampled = torch.ops.aten.grid_sampler_2d(x - fill if fill else x, grid, _BILINEAR, _ZEROS, True)
        ctx.save_for_backward(x, grid)
        if memory_format == torch.contiguous_format:
            return sampled.add_(fill) if fill else sampled
        out = torch.empty_like(sampled, memory_format=memory_format)
        return torch.add(sampled, fill, out=out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, grid = ctx.saved_tensors  # x's values only feed the grid gradient, which is not computed
        grad_x, _ = torch.ops.aten.grid_sampler_2d_backward(grad, x, grid, _BILINEAR, _ZEROS, True, [True, False])
        return grad_x, None, None, None


def warp_affine(x: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, int], fill: float = 0.0,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``kornia.geometry.transform.warp_affine(x - fill, matrix, out_size, align_corners=True) + fill``
    (bilinear, zero padding) for source->output pixel maps ``matrix`` ``(B, 2, 3)``, output in
    ``memory_format``. ``(B, C, H, W) -> (B, C, Ho, Wo)``."""
    grid = sampling_grid(matrix.to(x.device, x.dtype), tuple(x.shape[-2:]), tuple(out_size))
    return _Warp.apply(x, grid, float(fill), memory_format)
