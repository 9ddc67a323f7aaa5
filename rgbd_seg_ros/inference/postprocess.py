"""Per-pixel post-processing of the logits, written for the cost of each op on a 2-core CPU.

The obvious forms are slow on the CPU: ``logits.max(dim=1)`` and ``argmax(dim=1)`` reduce across
channel planes while tracking indices (10-60 ms at 480x640x14 on two cores), a float blend of the
overlay makes three float images, and ``buffer[mask]`` compacts a 307,200-point cloud row by row.
The forms here give identical results (first maximum on ties, confidence = largest softmax
probability, the 1/256-quantised integer overlay of ``core.palette.overlay``) from
plane-vectorised reductions (``amax``, ``sum``), integer arithmetic and index gathers, and they
run on any device, so the CUDA path uses the same code.
"""

from __future__ import annotations

import torch


class ReducedLogits:
    """Labels of ``[1, C, H, W]`` logits now, their softmax confidence only if asked for.

    Labels are the first channel reaching the per-pixel maximum (``argmax`` semantics): every
    channel equal to the maximum votes ``C - c`` and the largest vote wins. The confidence,
    ``1 / sum(exp(l - max))``, the softmax probability of that channel, is computed from the
    logits when asked for (``softmax_max``), so a caller publishes the labels before paying
    for it, and may compute it in parts (``rows``) on two threads. ``labels`` given
    (``[H, W]``, the ONNX graph's own ArgMax) are used as they are, clamped to the classes.

    The labels are ``[H, W]`` uint8 while every class id fits a byte (C <= 256), int32 beyond:
    the engine publishes 8-bit labels for such models, and after a forward of a second or more
    every image-sized buffer the labels' path writes is memory gone cold; an int32 copy of
    480x640 labels was 1.2 MB written and read again only to be narrowed (README, Performance).
    For the same reason the votes compare the logits with their maximum directly rather than
    through the shifted logits ``l - max``, a copy as large as the logits (14.7 MB at
    480x640x12); ``softmax_max`` makes those block by block, in the cache.
    """

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        num_classes = logits.shape[1]
        self.logits = logits
        label_dtype = torch.uint8 if num_classes <= 256 else torch.int32
        if labels is not None:
            if labels.dtype == label_dtype:  # in place: the runtime's output array is ours
                self.labels = labels.clamp_(0, num_classes - 1)
            else:  # clamped before narrowing, so an id past 255 cannot wrap into range
                self.labels = labels.clamp(0, num_classes - 1).to(label_dtype)
            return
        top = logits.amax(dim=1, keepdim=True)
        vote_dtype = torch.uint8 if num_classes <= 255 else torch.int32
        votes = torch.arange(num_classes, 0, -1, device=logits.device, dtype=vote_dtype)
        votes = (logits == top) * votes.view(1, -1, 1, 1)
        winner = votes.amax(dim=1)[0]
        # A pixel with a NaN logit has a NaN maximum and votes for nothing (winner 0, label C);
        # clamping keeps the id a valid class. C - winner is in [0, C]: within the votes' type,
        # so no copy is made unless the labels' type differs (C = 256 only).
        self.labels = (num_classes - winner).clamp_(0, num_classes - 1).to(label_dtype)

    def confidence(
        self, out: torch.Tensor | None = None, rows: slice | None = None
    ) -> torch.Tensor:
        """``[H, W]`` largest softmax probability (``softmax_max``)."""
        return softmax_max(self.logits, out, rows)


# Bytes of logits per block of rows in softmax_max on the CPU: small enough that the block's
# shifted copy stays in the core's 2-4 MB cache between its writing and its summing, large
# enough that the engine's two threads, each doing half the rows, seldom wait for the GIL
# between ops. At 480x640x12, right after a cache flush, on the 2-core test machine: whole
# image 4.9 ms at 256 KB and at 1 MB (6.6 at 4 MB); halves on two threads 4.8 at 256 KB (the
# hand-overs of the GIL between some 300 small ops ate the second core), 3.4 at 1 MB.
_CPU_BLOCK_BYTES = 1 << 20
# exp() of a float32 below about -87.3 is subnormal or zero, and torch's CPU exp (2.13, AVX512)
# takes a path 80-200x slower for such inputs: 77-91 ns an element against 0.4 on the test
# machine. Logits 88 or more below the maximum occur with confident trained models; they add
# at most exp(-80) = 1.8e-35 each to a sum that is at least 1, so raising them to -80 changes
# no float32 result and keeps every element on the fast path.
_EXP_FLOOR = -80.0


def softmax_block_rows(logits: torch.Tensor) -> int:
    """Rows per block of ``softmax_max`` on the CPU. A caller splitting the rows between
    threads splits at a multiple of it: torch's sum vectorises across a block's pixels, so
    where the width is not a multiple of the vector length, blocks of other shapes round some
    pixels differently (1 ulp), and the split would change the result."""
    _, channels, _, width = logits.shape
    return max(1, _CPU_BLOCK_BYTES // max(1, channels * width * logits.element_size()))


def softmax_max(
    logits: torch.Tensor, out: torch.Tensor | None = None, rows: slice | None = None
) -> torch.Tensor:
    """``[H, W]`` largest softmax probability of ``[1, C, H, W]`` logits (written into
    ``out``, ``[H, W]``, when given; only its ``rows``, when given, for a caller that splits
    the image between threads at a multiple of ``softmax_block_rows``).

    On the CPU the rows are done in blocks of about 1 MB of logits. The whole-image form
    writes a shifted copy as large as the logits (14.7 MB for 12 classes at 480x640) and reads
    it twice more; a block's copy is summed while still in the cache, so the logits are read
    once from memory and nothing image-sized is written but the result. On the 2-core test
    machine, right after a forward, that was 28-30 ms against 56-60 ms (README, Performance).
    A GPU gets the whole range in one pass (every block would be its own kernel launches).
    """
    height, width = logits.shape[2:]
    if out is None:
        out = torch.empty(height, width, dtype=logits.dtype, device=logits.device)
    first, stop, _ = (rows or slice(None)).indices(height)
    # A GPU takes the whole range as one block.
    step = softmax_block_rows(logits) if logits.device.type == 'cpu' else max(1, stop - first)
    for row in range(first, stop, step):
        end = min(row + step, stop)
        block = logits[:, :, row:end]
        shifted = (block - block.amax(dim=1, keepdim=True)).clamp_min_(_EXP_FLOOR)
        torch.sum(shifted.exp_(), dim=1, out=out[None, row:end])
    out[first:stop].reciprocal_()
    return out


def blend_overlay(rgb: torch.Tensor, colour: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * rgb + alpha * colour`` in uint8 with alpha quantised to 1/256, rounded.

    Integer arithmetic in int32 (the sums reach 65,535, beyond int16), matching
    ``core.palette.overlay`` exactly.
    """
    a = round(alpha * 256)
    if a <= 0:
        return rgb.clone()
    if a >= 256:
        return colour.clone()
    acc = rgb.to(torch.int32).mul_(256 - a)
    acc.add_(colour.to(torch.int32).mul_(a)).add_(128).bitwise_right_shift_(8)
    return acc.to(torch.uint8)


class RayCache:
    """Back-projection rays ``(u - cx) / fx`` and ``(v - cy) / fy`` per camera, reused per frame.

    A camera's intrinsics and size rarely change, so the two 1-D ray vectors are computed once
    and every frame's x, y are one multiplication each.
    """

    def __init__(self) -> None:
        self._key: tuple[tuple[float, ...], int, int, int, torch.device] | None = None
        self._rays: tuple[torch.Tensor, torch.Tensor] | None = None

    def rays(
        self, K: torch.Tensor, height: int, width: int, stride: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(row vector of x/z ``[1, w']``, column vector of y/z ``[h', 1]``) for this camera."""
        key = (tuple(K.reshape(-1).tolist()), height, width, stride, K.device)
        if key != self._key or self._rays is None:
            cols = torch.arange(0, width, stride, device=K.device, dtype=torch.float32)
            rows = torch.arange(0, height, stride, device=K.device, dtype=torch.float32)
            ray_x = ((cols - K[0, 2]) / K[0, 0]).view(1, -1)
            ray_y = ((rows - K[1, 2]) / K[1, 1]).view(-1, 1)
            self._key, self._rays = key, (ray_x, ray_y)
        return self._rays


def cloud_xyz(
    z: torch.Tensor, ray_x: torch.Tensor, ray_y: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """x y z of ``out`` (``[h, w, 6]`` float32 whose bytes are CLOUD_DTYPE records) from the
    depth ``z`` and the camera's rays: the columns that need no labels, so an engine can write
    them while the forward runs. Returns ``out``."""
    torch.mul(ray_x, z, out=out[..., 0])
    torch.mul(ray_y, z, out=out[..., 1])
    out[..., 2] = z
    return out


def cloud_classes(
    labels: torch.Tensor,
    palette_index: torch.Tensor,
    palette_packed: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """rgb and label of ``out`` (``[h, w, 6]`` float32 records); the confidence column is left
    for the caller (``CloudJob.finish``). Returns ``out``.

    ``rgb`` carries the ``0x00RRGGBB`` bits of ``palette_packed[palette_index]`` (the labels as
    int64 clamped to the palette, shared with the colour image) and ``label`` the int32 label
    bits (its low 16 bits are the uint16 field, the high half the padding, which is zero).
    """
    out[..., 3] = palette_packed.take(palette_index).view(torch.float32)
    out[..., 4] = labels.to(torch.int32).view(torch.float32)
    return out


def compact_rows(
    buffer: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows of ``[h, w, F]`` where ``keep`` is True, as ``[n, F]`` (into ``out`` when given):
    one gather, no mask copy."""
    flat = buffer.view(-1, buffer.shape[-1])
    rows = keep.reshape(-1).nonzero().squeeze(1)
    if out is None:
        return flat.index_select(0, rows)
    return torch.index_select(flat, 0, rows, out=out)
