"""A convolution that XLA:CPU computes fast when the input is smaller than the kernel.

XLA:CPU (jaxlib 0.10.2) falls off its fast path for a convolution whose input is spatially
smaller than its kernel. A ResNet-10 at 64 px ends in that case: its last block's second 3x3
convolution runs on a 2x2 map with 512 channels, and on 256 frames it took 4.2 s on one core
where the same FLOPs on a 4x4 map take 50 ms; it was 90 % of the trunk's time
(``benchmarks/convolution.py``). On a 1x1 map it was 163 against 24 ms.

For those shapes this computes the convolution as a matrix product over explicitly gathered
taps (im2col): pad, take each kernel tap's strided slice, contract taps and input channels with
the kernel in one dot. It is the same function (float sums in another order, about 1e-6
relative) with the same parameters, so ``nn.Conv(..., conv_general_dilated=conv)`` keeps its
parameter names and initialisation, and checkpoints and converted SERL weights load unchanged.
Every other shape goes to ``lax.conv_general_dilated``, which is faster there (a 3x3 map is a
tie, a 16x16 map 6x faster than im2col).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# Flax's NHWC/HWIO layout as lax.conv_dimension_numbers gives it: (batch, feature, *spatial)
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def _is_plain_nhwc(
    lhs: jax.Array,
    dimension_numbers: Any,
    lhs_dilation: Sequence[int] | None,
    rhs_dilation: Sequence[int] | None,
    feature_group_count: int,
) -> bool:
    if lhs.ndim != 4 or feature_group_count != 1:
        return False
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return False
    dn = lax.conv_dimension_numbers(lhs.shape, (1, 1, 1, 1), dimension_numbers)
    return dn == _NHWC


def conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated``'s signature and result; im2col where the input's height or
    width is smaller than the kernel's (NHWC/HWIO, no dilation, one feature group)."""
    plain = _is_plain_nhwc(lhs, dimension_numbers, lhs_dilation, rhs_dilation, feature_group_count)
    kh, kw = rhs.shape[:2]
    if not plain or (lhs.shape[1] >= kh and lhs.shape[2] >= kw):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
        )
    sh, sw = window_strides
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (sh, sw), padding)
    else:
        pads = [(int(lo), int(hi)) for lo, hi in padding]
    (top, bottom), (left, right) = pads
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (x.shape[1] - kh) // sh + 1
    out_w = (x.shape[2] - kw) // sw + 1
    taps = [
        x[:, i : i + (out_h - 1) * sh + 1 : sh, j : j + (out_w - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    cols = jnp.stack(taps, axis=3)  # [N, out_h, out_w, kh * kw, C_in]
    kernel = rhs.reshape(kh * kw, rhs.shape[2], rhs.shape[3])
    return jnp.einsum("nhwtc,tco->nhwo", cols, kernel, precision=precision)
