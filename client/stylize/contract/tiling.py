"""Server-side tiling: fixed-size overlapping tiles, sent to the network in batches, blended back without seams.

Why this shape:

* every tile has the same size, so tiles can go to the network several per call (GPU) and ONNX Runtime sees one
  input shape; on CPU they go one per call (docs/decisions.md#one-request-per-execution);
* tiles are blended with separable feathering weights normalised to a partition of unity: in an overlap the
  outermost quarter of each tile (where zero padding inside the network hurts most) gets almost no weight, the middle
  half cross-fades linearly. No hard seams (Real-ESRGAN crops tiles hard, and its users see the seams);
* memory stays bounded: one call carries at most ``batch`` tiles' worth of pixels and only one band of output rows
  (a tile high) is kept in float32; finished rows are rounded into the uint8 output as soon as no later tile can
  touch them.

Pure numpy; ``run`` is the network (the python step passes a BLS call, tests pass ONNX Runtime or a stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

RunBatch = Callable[[np.ndarray], np.ndarray]  # uint8 NxHxWx3 -> uint8 Nx(H*s)x(W*s)x3

_FLOOR = 1e-4  # smallest blending weight: keeps every output pixel's weight sum > 0
# Windows of a video network (BasicVSR) whose frames are larger than WINDOW_TILE x WINDOW_TILE go in overlapping
# spatial tiles (stylize.sdk.video). The overlap is wider than an image tile's: the network estimates motion (SPyNet)
# and needs context past the border.
WINDOW_TILE = 256
WINDOW_TILE_OVERLAP = 32


@dataclass(frozen=True, kw_only=True)
class TilePlan:
    height: int  # input (already padded to the network's size rules)
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]  # top rows of the tile rows
    xs: tuple[int, ...]  # left columns of the tile columns
    overlap: int

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def tiles(self) -> Iterator[tuple[int, int]]:
        """(y, x) of every tile in row-major order (the order outputs are blended in)."""
        for y in self.ys:
            for x in self.xs:
                yield y, x


def _axis(length: int, tile: int, overlap: int, multiple: int) -> tuple[int, tuple[int, ...]]:
    """(tile length, starts) along one axis: the fewest tiles of at most ``tile`` that cover ``length`` with
    neighbours overlapping by >= ``overlap``, each as small as that allows (a 512 side with 384 tiles gets two 264
    tiles, not two 384 ones: 1.03x the pixels instead of 1.5x)."""
    if length <= tile:
        return length, (0,)
    n = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    size = min(tile, -(-size // multiple) * multiple)
    starts = [min(length - size, round(i * (length - size) / (n - 1)) // multiple * multiple) for i in range(n)]
    starts[-1] = length - size  # flush with the edge
    return size, tuple(sorted(set(starts)))


def plan_tiles(
    height: int, width: int, *, tile: int, overlap: int, multiple: int = 1, batch: int = 1, max_side: int | None = None
) -> TilePlan:
    """Equal tiles of at most ``tile`` x ``tile`` (the whole side when the image is smaller) overlapping by
    >= ``overlap``.

    ``batch`` is the number of tiles per network call, so one call's budget is ``batch * tile**2`` pixels, which is
    what bounds the network's memory (a convolutional network's activations grow with the pixel count, not with
    the shape). An image within that budget is one tile, whatever its sides (``batch=0``: tile by sides only):
    tiling it would only add the overlap's work (esrgan_x4 at 256² with 192 tiles and 32 overlap: four 144² tiles,
    1.27x the pixels; docs/performance.md) -- unless a side exceeds ``max_side`` (a TensorRT plan's optimization
    profile accepts no longer side): then only what is too long is split, into pieces of at most ``max_side``.
    """
    if tile <= 2 * overlap:
        raise ValueError(f"tile {tile} must be more than twice the overlap {overlap}")
    if max_side is not None and tile > max_side:
        raise ValueError(f"tile {tile} is longer than the network's largest side {max_side}")
    if height * width <= batch * tile * tile:
        if max_side is None or (height <= max_side and width <= max_side):
            return TilePlan(height=height, width=width, tile_h=height, tile_w=width, ys=(0,), xs=(0,), overlap=overlap)
        limit = max_side - max_side % multiple
        th, ys = _axis(height, limit, overlap, multiple)
        tw, xs = _axis(width, limit, overlap, multiple)
        return TilePlan(height=height, width=width, tile_h=th, tile_w=tw, ys=ys, xs=xs, overlap=overlap)
    th, ys = _axis(height, tile, overlap, multiple)
    tw, xs = _axis(width, tile, overlap, multiple)
    return TilePlan(height=height, width=width, tile_h=th, tile_w=tw, ys=ys, xs=xs, overlap=overlap)


def edge_weights(length: int, ramp: int, *, start_free: bool, end_free: bool) -> np.ndarray:
    """1-D feathering weights of one tile side: 1 inside, falling towards an edge shared with a neighbour.

    ``ramp`` is the overlap in output pixels; within it the outer quarter is ~0 and the middle half ramps linearly.
    A side on the image border (``*_free``) keeps weight 1 up to the edge.
    """
    w = np.ones(length, np.float32)
    if ramp <= 0:
        return w
    margin = ramp // 4
    span = max(1, ramp - 2 * margin)
    d = np.arange(length, dtype=np.float32) + 0.5
    if not start_free:
        w = np.minimum(w, np.clip((d - margin) / span, _FLOOR, 1.0))
    if not end_free:
        w = np.minimum(w, np.clip((length - d - margin) / span, _FLOOR, 1.0))
    return w


def _axis_weights(
    starts: tuple[int, ...], tile: int, total: int, overlap: int, scale: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-tile weights along one axis, normalised so they sum to 1 at every output position."""
    weights = [
        edge_weights(tile * scale, overlap * scale, start_free=s == 0, end_free=s + tile >= total) for s in starts
    ]
    norm = np.zeros(total * scale, np.float32)
    for s, w in zip(starts, weights):
        norm[s * scale : (s + tile) * scale] += w
    return [w / norm[s * scale : (s + tile) * scale] for s, w in zip(starts, weights)], norm


# Tiles of a tiled image per network call on CPU: one, for the reason the CPU network runs one request per execution
# (build: pbtxt.net_config; docs/decisions.md#one-request-per-execution). ``tile_batch`` still sets one call's pixel
# budget (an image within it is not tiled at all); on a GPU, tile_batch tiles go per call.
CPU_TILES_PER_CALL = 1


def run_tiled(
    frame: np.ndarray,
    *,
    run: RunBatch,
    scale: int,
    tile: int,
    overlap: int,
    batch: int,
    multiple: int = 1,
    per_call: int | None = None,
    max_side: int | None = None,
) -> tuple[np.ndarray, int]:
    """uint8 HxWx3 (sides already valid for the network) -> (uint8 (H*s)x(W*s)x3, number of tiles).

    A window of a video network (TxHxWx3) is tiled the same way: every frame is cut at the same places, a tile is a
    TxhxWx3 window (``run`` gets NxTxhxwx3) and each frame is blended with the same weights.

    An image within one call's pixel budget (``batch`` tiles of ``tile``², :func:`plan_tiles`) is one network call
    and no blending. A tiled image goes ``per_call`` tiles per call (default ``batch``; at most ``batch``).
    """
    per_call = batch if per_call is None else max(1, min(per_call, batch))
    h, w = frame.shape[-3:-1]
    lead = frame.shape[:-3]  # () for a frame, (T,) for a window
    plan = plan_tiles(h, w, tile=tile, overlap=overlap, multiple=multiple, batch=batch, max_side=max_side)
    if plan.count == 1:
        return np.ascontiguousarray(run(frame[None])[0]), 1
    s = scale
    wy, _ = _axis_weights(plan.ys, plan.tile_h, h, overlap, s)
    wx, _ = _axis_weights(plan.xs, plan.tile_w, w, overlap, s)
    row_of = {y: i for i, y in enumerate(plan.ys)}
    col_of = {x: j for j, x in enumerate(plan.xs)}
    out = np.empty((*lead, h * s, w * s, 3), np.uint8)
    band_h = plan.tile_h * s
    band = np.zeros((*lead, band_h, w * s, 3), np.float32)
    band_top = 0  # output row of band[0]

    def flush(upto: int) -> None:
        """Rows [band_top, upto) are final: round them out and slide the band down."""
        nonlocal band_top
        n = upto - band_top
        if n <= 0:
            return
        np.rint(band[..., :n, :, :], out=band[..., :n, :, :])
        out[..., band_top:upto, :, :] = band[..., :n, :, :]
        band[..., : band_h - n, :, :] = band[..., n:, :, :].copy()
        band[..., band_h - n :, :, :] = 0.0
        band_top = upto

    coords = list(plan.tiles())
    for first in range(0, len(coords), per_call):
        chunk = coords[first : first + per_call]
        tiles = np.stack([frame[..., y : y + plan.tile_h, x : x + plan.tile_w, :] for y, x in chunk])
        results = run(tiles)
        if results.shape != (len(chunk), *lead, band_h, plan.tile_w * s, 3):
            raise RuntimeError(f"the network returned {results.shape} for tiles {tiles.shape} (scale {s})")
        for (y, x), res in zip(chunk, results):
            flush(y * s)
            weight = wy[row_of[y]][:, None] * wx[col_of[x]][None, :]
            region = band[..., y * s - band_top : y * s - band_top + band_h, x * s : (x + plan.tile_w) * s, :]
            region += res.astype(np.float32) * weight[..., None]
    flush(h * s)
    return out, plan.count


__all__ = ["CPU_TILES_PER_CALL", "TilePlan", "edge_weights", "plan_tiles", "run_tiled"]
