"""Frames and the networks that take them: the size rules both sides apply (the image step pads a picture, the SDK
pads raw frames, by one rule), and what a client needs to know to call a network directly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


def pad_to_multiple(frames: np.ndarray, multiple: int, min_side: int = 1) -> np.ndarray:
    """Pad the bottom/right of (..., H, W, C) frames so both sides are multiples of ``multiple`` and at least
    ``min_side``: reflected, or edge-replicated where a side is too small to reflect."""
    h, w = frames.shape[-3:-1]
    ph = max(-(-h // multiple) * multiple, min_side) - h
    pw = max(-(-w // multiple) * multiple, min_side) - w
    if ph == 0 and pw == 0:
        return frames
    mode: Literal["reflect", "edge"] = "reflect" if ph < h and pw < w else "edge"
    pad = [(0, 0)] * (frames.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    return np.pad(frames, pad, mode=mode)


def crop_frames(out: np.ndarray, h: int, w: int, padded_h: int, padded_w: int) -> np.ndarray:
    """Drop what the padding became (the output side is proportional to the input side)."""
    oh, ow = out.shape[-3:-1]
    return out[..., : h * oh // padded_h, : w * ow // padded_w, :]


@dataclass(frozen=True)
class RawModel:
    """What the client needs to call a network directly, read once from the server's config."""

    name: str
    input: str
    output: str
    max_batch_size: int
    window: int | None  # frames per request of a windowed (video) network
    size_multiple: int
    min_size: int
    scale: int
    tile_size: int | None = None  # frames larger than this go through in overlapping tiles (as the image step does)
    tile_overlap: int = 16
    tile_batch: int = 1
    tiles_per_call: int | None = None  # tiles of a tiled frame per request (None: tile_batch; CPU networks: 1)
    max_side: int | None = None  # no side sent is longer (a TensorRT plan: its optimization profile's maximum)
    max_request_pixels: int | None = None  # the network refuses requests carrying more (ModelDescriptor)
