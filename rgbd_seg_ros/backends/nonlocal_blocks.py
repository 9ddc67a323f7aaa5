"""Asymmetric non-local blocks (Zhu et al., "Asymmetric Non-local Neural Networks for Semantic
Segmentation", ICCV 2019): APNB, AFNB, the standard non-local block they are measured against,
and the pyramid pooling that makes them asymmetric.

The blocks follow the authors' public code (``MendelXu/ANN``) where it differs from the paper:

* Query and key share one projection (``share='qk'``, the code) where the paper says key and value
  are shared "following OCNet"; ``share='kv'`` gives the paper's variant and ``'none'`` shares
  nothing. AFNB shares nothing (query and key read different inputs).
* The affinity is scaled by ``key_channels ** -0.5`` before the softmax (not in the paper).
* Key/query projections are ``conv1x1 + BN + ReLU``, the value projection a plain ``conv1x1``;
  ``W_o`` is zero-initialised so a fresh block contributes no context (``zero_init=False``
  gives it the default init; with zero init the query/key/value weights get no gradient
  until ``W_o`` has moved, by design); APNB fuses
  ``cat(context, x)`` with ``conv1x1 + BN + ReLU + Dropout2d(0.05)``, AFNB with
  ``conv1x1 + BN + Dropout2d(0.05)`` (no ReLU).

Departures from both, for deployment:

* **Pooling.** The pyramid of adaptive average pools {1, 3, 6, 8} (S = 110 anchors) is computed
  as matrix products with averaging matrices built from the input's height and width, not with
  ``adaptive_avg_pool2d``. The legacy ONNX exporter refuses ``adaptive_avg_pool2d`` when the
  output size does not divide the input size (60x80 -> 3, 6, 8 at 480x640) and the dynamo
  exporter bakes one shape in; the matrices reproduce the operator's bins exactly
  (``floor(i*L/n) .. ceil((i+1)*L/n)``, tested to 1e-6) and export with both. Average pooling
  over a rectangle is separable, so the S x N pooling matrix (doc/backends/ann.md §4.2) is
  applied as one ``n x H`` and one ``n x W`` product per pyramid level (the full matrix is
  :func:`pyramid_pool_matrix`, kept for reference and tests). The matrices are constants of the
  input size, so an exported graph is tied to the resolution it was exported at (as with every
  fixed-shape engine).
* AFNB accepts keys/values at a different spatial size from the queries (the anchors are pooled
  anyway), which lets a half-resolution depth stream feed an RGB query: the cross-modal fusion
  option of :class:`CrossModalAFNB` (in neither paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PYRAMID_SIZES: tuple[int, ...] = (1, 3, 6, 8)


def adaptive_pool_matrix(
    length: int, bins: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """``[bins, length]`` matrix whose rows average the bins of ``adaptive_avg_pool1d``."""
    rows = torch.zeros(bins, length, dtype=dtype, device=device)
    for i in range(bins):
        start = (i * length) // bins
        end = -((-(i + 1) * length) // bins)  # ceil((i + 1) * length / bins)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def pyramid_pool_matrix(
    height: int,
    width: int,
    sizes: Sequence[int] = PYRAMID_SIZES,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The full ``[S, H*W]`` averaging matrix of the pyramid (S = sum n^2), rows ordered by
    pyramid level then row-major bin, matching ``cat([adaptive_avg_pool2d(x, n).flatten(2)])``."""
    blocks = [
        torch.kron(adaptive_pool_matrix(height, n, dtype), adaptive_pool_matrix(width, n, dtype))
        for n in sizes
    ]
    return torch.cat(blocks, 0)


def pyramid_pool(x: torch.Tensor, sizes: Sequence[int] = PYRAMID_SIZES) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, S]``: pyramid adaptive average pooling as matrix products.

    Exportable to ONNX at any fixed resolution (see the module docstring)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    pooled = []
    for n in sizes:
        rows = adaptive_pool_matrix(height, n, x.dtype, x.device)  # n x H
        cols = adaptive_pool_matrix(width, n, x.dtype, x.device)  # n x W
        level = torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))  # B, C, n, n
        pooled.append(level.flatten(2))
    return torch.cat(pooled, 2)


def pyramid_pool_reference(x: torch.Tensor, sizes: Sequence[int] = PYRAMID_SIZES) -> torch.Tensor:
    """The same pooling with ``adaptive_avg_pool2d`` (the paper's definition; not exportable)."""
    return torch.cat([F.adaptive_avg_pool2d(x, n).flatten(2) for n in sizes], 2)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _zero_conv(cin: int, cout: int, zero: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    if zero:
        nn.init.zeros_(conv.weight)
        assert conv.bias is not None  # built with a bias above
        nn.init.zeros_(conv.bias)
    return conv


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``query [B,Ck,N]``, ``key [B,Ck,S]``, ``value [B,Cv,S]`` -> context ``[B,Cv,N]``."""
    sim = torch.matmul(query.transpose(1, 2), key) * (query.shape[1] ** -0.5)  # B, N, S
    sim = torch.softmax(sim, dim=-1)
    return torch.matmul(value, sim.transpose(1, 2))  # B, Cv, N


class APNB(nn.Module):
    """Asymmetric Pyramid Non-local Block: self-attention of every position over S pooled anchors.

    ``fuse=True`` (the network's form): ``conv1x1+BN+ReLU+Dropout(cat(W_o(ctx), x))``;
    ``fuse=False``: residual ``x + W_o(ctx)`` (the form of the paper's block-level efficiency
    table; requires ``out_channels == in_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        key_channels: int = 256,
        value_channels: int = 256,
        sizes: Sequence[int] = PYRAMID_SIZES,
        share: str = 'qk',
        dropout: float = 0.05,
        zero_init: bool = True,
        fuse: bool = True,
    ) -> None:
        super().__init__()
        if share not in ('qk', 'kv', 'none'):
            raise ValueError(f"share must be 'qk', 'kv' or 'none', got {share!r}")
        out_channels = out_channels or in_channels
        if not fuse and out_channels != in_channels:
            raise ValueError('the residual form (fuse=False) needs out_channels == in_channels')
        if share == 'kv' and value_channels != key_channels:
            raise ValueError("share='kv' needs value_channels == key_channels")
        self.sizes = tuple(sizes)
        self.share = share
        self.key_channels = key_channels
        self.f_key = _conv_bn_relu(in_channels, key_channels)
        self.f_query = self.f_key if share == 'qk' else _conv_bn_relu(in_channels, key_channels)
        self.f_value = None if share == 'kv' else nn.Conv2d(in_channels, value_channels, 1)
        self.w_out = _zero_conv(value_channels, out_channels, zero_init)
        self.fuse = (
            nn.Sequential(
                nn.Conv2d(in_channels + out_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
            )
            if fuse
            else None
        )

    @property
    def anchors(self) -> int:
        """Number of pooled anchors S (110 for the default pyramid)."""
        return sum(n * n for n in self.sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        key_map = self.f_key(x)
        query = (key_map if self.share == 'qk' else self.f_query(x)).flatten(2)
        key = pyramid_pool(key_map, self.sizes)
        value = key if self.f_value is None else pyramid_pool(self.f_value(x), self.sizes)
        context = _attend(query, key, value).reshape(B, -1, H, W)
        context = self.w_out(context)
        if self.fuse is None:
            return context.add_(x)  # in place: no second output-sized buffer
        return self.fuse(torch.cat([context, x], 1))


class AFNB(nn.Module):
    """Asymmetric Fusion Non-local Block: queries from ``high``, keys/values pooled from ``low``.

    ``low`` may have a different spatial size from ``high``. Output has ``high``'s size and
    ``out_channels`` channels (default: ``high_channels``).
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        out_channels: int | None = None,
        *,
        key_channels: int = 256,
        value_channels: int = 256,
        sizes: Sequence[int] = PYRAMID_SIZES,
        dropout: float = 0.05,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        out_channels = out_channels or high_channels
        self.sizes = tuple(sizes)
        self.f_key = _conv_bn_relu(low_channels, key_channels)
        self.f_query = _conv_bn_relu(high_channels, key_channels)
        self.f_value = nn.Conv2d(low_channels, value_channels, 1)
        self.w_out = _zero_conv(value_channels, out_channels, zero_init)
        self.fuse = nn.Sequential(
            nn.Conv2d(high_channels + out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        B, _, H, W = high.shape
        query = self.f_query(high).flatten(2)
        key = pyramid_pool(self.f_key(low), self.sizes)
        value = pyramid_pool(self.f_value(low), self.sizes)
        context = self.w_out(_attend(query, key, value).reshape(B, -1, H, W))
        return self.fuse(torch.cat([context, high], 1))


class CrossModalAFNB(nn.Module):
    """AFNB with RGB queries and depth keys/values (a package extension, in neither paper).

    ``forward(rgb_feat, depth_feat) -> fused [B, out, H_rgb, W_rgb]``.
    """

    def __init__(
        self,
        rgb_channels: int,
        depth_channels: int,
        out_channels: int | None = None,
        *,
        key_channels: int = 256,
        value_channels: int = 256,
        sizes: Sequence[int] = PYRAMID_SIZES,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.block = AFNB(
            depth_channels,
            rgb_channels,
            out_channels,
            key_channels=key_channels,
            value_channels=value_channels,
            sizes=sizes,
            zero_init=zero_init,
        )

    def forward(self, rgb_feat: torch.Tensor, depth_feat: torch.Tensor) -> torch.Tensor:
        return self.block(depth_feat, rgb_feat)


class ANNContextHead(nn.Module):
    """ANN's context head, usable in place of eASPP: ``[AFNB(low, high)] -> 3x3 reduce -> APNB``.

    ``forward(high, low=None)``: without ``low_channels`` the AFNB stage is skipped (APNB only).
    Output: ``out_channels`` at ``high``'s resolution.
    """

    def __init__(
        self,
        high_channels: int,
        out_channels: int = 256,
        low_channels: int | None = None,
        *,
        key_channels: int = 256,
        value_channels: int = 256,
        sizes: Sequence[int] = PYRAMID_SIZES,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.afnb = (
            AFNB(
                low_channels,
                high_channels,
                high_channels,
                key_channels=key_channels,
                value_channels=value_channels,
                sizes=sizes,
                zero_init=zero_init,
            )
            if low_channels
            else None
        )
        self.reduce = nn.Sequential(
            nn.Conv2d(high_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.apnb = APNB(
            out_channels,
            out_channels,
            key_channels=key_channels,
            value_channels=value_channels,
            sizes=sizes,
            zero_init=zero_init,
        )
        self.out_channels = out_channels

    def forward(self, high: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
        if self.afnb is not None:
            if low is None:
                raise ValueError('this head was built with an AFNB stage and needs `low`')
            high = self.afnb(low, high)
        return self.apnb(self.reduce(high))


class NonLocalBlock(nn.Module):
    """Standard (embedded-Gaussian) non-local block, N x N affinity; the efficiency baseline.

    Same projections as :class:`APNB` (shared query/key, scaled softmax, zero-init ``W_o``) and
    the residual output ``x + W_o(ctx)``, so the two differ only in the anchors.
    """

    def __init__(self, in_channels: int, key_channels: int = 256, value_channels: int = 256):
        super().__init__()
        self.f_key = _conv_bn_relu(in_channels, key_channels)
        self.f_value = nn.Conv2d(in_channels, value_channels, 1)
        self.w_out = _zero_conv(value_channels, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        key = self.f_key(x).flatten(2)
        value = self.f_value(x).flatten(2)
        context = _attend(key, key, value).reshape(B, -1, H, W)
        return self.w_out(context).add_(x)


# --------------------------------------------------------------------------------------------
