"""Image decode/encode used by the ensembles' Python steps (importable and unit-tested without Triton).

Only decoding, orientation, padding, cropping and encoding live here: the uint8<->float arithmetic, the value-range
scaling and the layout change are inside the ONNX graph.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 16_777_216  # 4096 x 4096
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class InvalidImage(ValueError):
    """The request's image cannot be processed; the message says why (sent back as INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class Limits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    min_side: int = 1


def pad_to_multiple(frame: np.ndarray, multiple: int, min_side: int = 1) -> np.ndarray:
    """Reflect-pad the bottom/right so both sides are multiples of ``multiple`` and at least ``min_side``."""
    h, w = frame.shape[:2]
    ph = max(-(-h // multiple) * multiple, min_side) - h
    pw = max(-(-w // multiple) * multiple, min_side) - w
    if ph == 0 and pw == 0:
        return frame
    # reflect needs pad < side; fall back to edge replication for tiny inputs
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode=mode)


def decode_image(data: bytes, *, size_multiple: int = 1, limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray]:
    """Encoded bytes -> (uint8 H'xW'x3 padded frame, int32 geometry [h, w, H', W'])."""
    if not data:
        raise InvalidImage("empty input: no image bytes")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"input is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise InvalidImage(f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")
            if w == 0 or h == 0:
                raise InvalidImage(f"image has a zero-sized side ({w}x{h})")
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage("not a recognised image (supported: PNG, JPEG, WebP, BMP, TIFF)") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated / corrupt files
        raise InvalidImage(f"corrupt or truncated image: {e}") from None
    h, w = rgb.shape[:2]
    if min(h, w) < limits.min_side:
        raise InvalidImage(f"image is {w}x{h}; the smallest side accepted is {limits.min_side}")
    frame = pad_to_multiple(rgb, size_multiple)
    geometry = np.array([h, w, frame.shape[0], frame.shape[1]], dtype=np.int32)
    return np.ascontiguousarray(frame), geometry


def crop_output(frame: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """Remove what the padding became after the network (the output side is proportional to the input side)."""
    h, w, ph, pw = (int(v) for v in geometry)
    oh, ow = frame.shape[:2]
    if ph <= 0 or pw <= 0:
        raise InvalidImage(f"bad geometry {geometry.tolist()}")
    return frame[: h * oh // ph, : w * ow // pw]


def encode_image(frame: np.ndarray, *, fmt: str = "PNG", quality: int = 95) -> bytes:
    """uint8 HxWx3 -> encoded bytes. PNG uses a fast compression level: the server is CPU bound."""
    fmt = fmt.upper()
    img = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    out = io.BytesIO()
    if fmt == "PNG":
        img.save(out, "PNG", compress_level=1)
    elif fmt in ("JPEG", "JPG"):
        img.save(out, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=quality)
    else:
        raise InvalidImage(f"unsupported output format {fmt!r} (PNG, JPEG, WEBP)")
    return out.getvalue()
