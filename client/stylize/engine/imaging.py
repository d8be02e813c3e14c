"""Image I/O of the image ensembles' python step: decode, orientation, modes, 16 bits, resize, encode.

Importable and unit-tested without Triton. Only what cannot live in the ONNX graph is here: file formats, colour
modes, alpha, metadata. The uint8<->float arithmetic, value-range scaling and layout change are inside the graph.

What a decoded :class:`Picture` carries, and why:

* ``color``: uint8 HxWx3 RGB, the only thing the network sees (grayscale is replicated to 3 channels);
* ``alpha``: the alpha channel, kept aside and resized with a high-quality filter (networks are trained on RGB);
* ``residual``: for 16-bit inputs, what the 8 bits sent to the network lost (``value - 257 * color``); it is resized
  and added back to ``257 * output``, so 16-bit gradients stay smooth (no banding) and an identity network would give
  the input back exactly. The uint8 graph cannot carry 16 bits; an fp32 graph per model would double the exports for
  detail below the network's own noise level.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from stylize.contract.step import Limits

INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
OUTPUT_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"}
WEBP_MAX_SIDE = 16383  # the format's limit

# Short reason codes of refused inputs: the label of the refusals metric (a fixed, small set).
REASONS = (
    "empty",
    "too_many_bytes",
    "not_an_image",
    "unsupported_format",
    "too_many_pixels",
    "zero_size",
    "animated",
    "unsupported_mode",
    "corrupt",
    "bad_tensor",
    "bad_option",
    "output_too_large",
)

_ORIENTATION_TAG = 0x0112
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class InvalidImage(ValueError):
    """The request cannot be processed; the message says why (sent back as INVALID_ARGUMENT).

    ``reason`` is one of :data:`REASONS` (for metrics; the message is for people).
    """

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        if reason not in REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.reason = reason


@dataclass(kw_only=True)
class Picture:
    color: np.ndarray  # uint8 HxWx3 RGB
    alpha: np.ndarray | None = None  # HxW, uint8 or uint16 (as the input)
    residual: np.ndarray | None = None  # int16 HxWxC (C = 1 gray, 3 colour): 16-bit inputs only
    gray: bool = False
    bits: int = 8
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    source_format: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.color.shape[0], self.color.shape[1]


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------------------------


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an HxW[xC] array, as a viewer would display it."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, k=-1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, k=1)
    return arr


def fit_within(h: int, w: int, max_side: int) -> tuple[int, int]:
    """(h, w) scaled down so the longest side is at most ``max_side`` (unchanged if it already is)."""
    longest = max(h, w)
    if longest <= max_side:
        return h, w
    f = max_side / longest
    return max(1, round(h * f)), max(1, round(w * f))


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """High-quality (Lanczos, antialiased when shrinking) resize of HxW[xC] to ``size`` = (h, w).

    uint8 keeps uint8; any other dtype is resized per channel in float32 and returned as float32 (the caller rounds
    and clips into its own range: 16-bit alpha, signed residuals).
    """
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] in (3, 4)):
        mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA")
        img = Image.fromarray(np.ascontiguousarray(arr), mode)
        return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
    if arr.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), "F")
        return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS))
    return np.stack([resize(arr[..., c].astype(np.float32), size) for c in range(arr.shape[2])], axis=-1)


# ---------------------------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------------------------


def _png_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(bit depth, colour type, height, width) from a PNG's IHDR, or None if ``data`` is not a PNG."""
    if len(data) >= 26 and data.startswith(_PNG_MAGIC) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return data[24], data[25], height, width
    return None


def _decode_png16(data: bytes, color_type: int) -> np.ndarray:
    """A 16-bit PNG as uint16 HxWxC RGB(A)/gray(+alpha) (Pillow reads 16-bit colour PNGs as 8 bits, OpenCV does not)."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InvalidImage("corrupt or truncated 16-bit PNG", reason="corrupt")
    if arr.ndim == 2:
        return arr[..., None]
    if color_type == 4:  # gray + alpha: OpenCV expands it to BGRA
        return arr[..., [0, 3]]
    if arr.shape[2] == 3:
        return arr[..., ::-1]
    return arr[..., [2, 1, 0, 3]]


def _to_array(im: Image.Image) -> np.ndarray:
    """Pillow image -> HxWxC array with C in 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA); uint8 or uint16."""
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))[..., None]
    if mode in ("LA", "La"):
        return np.asarray(im.convert("LA"))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("RGBA", "RGBa"):
        return np.asarray(im.convert("RGBA"))
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im))
    if mode in ("RGB", "RGBX", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]
    raise InvalidImage(
        f"unsupported image mode {mode!r} (8/16-bit gray, palette, RGB(A), CMYK are supported)",
        reason="unsupported_mode",
    )


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK through its embedded ICC profile into sRGB when it has one (print colours), else Pillow's formula."""
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below is still a usable image
    return im.convert("RGB")


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def _unidentified(data: bytes) -> str:
    """Why Pillow could not identify ``data``: a TIFF it cannot read is still a TIFF, and is told so."""
    if data.startswith(_TIFF_MAGIC):
        return "a TIFF the decoder cannot read (its compression or layout is not supported): convert it to PNG"
    return "not a recognised image (supported: PNG, JPEG, WebP, BMP, TIFF)"


def decode(data: bytes, *, limits: Limits = Limits()) -> Picture:
    """Encoded bytes -> :class:`Picture`. Raises :class:`InvalidImage` with the reason."""
    if not data:
        raise InvalidImage("empty input: no image bytes", reason="empty")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"input is {len(data)} bytes; the limit is {limits.max_bytes}", reason="too_many_bytes")
    png = _png_header(data)
    if png is not None and 0 in png[2:]:  # Pillow would only say "cannot identify"
        raise InvalidImage(f"image has a zero-sized side ({png[3]}x{png[2]})", reason="zero_size")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage(_unidentified(data), reason="not_an_image") from None
    except Image.DecompressionBombError as e:
        raise InvalidImage(f"image is too large: {e}", reason="too_many_pixels") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as e:
        raise InvalidImage(f"corrupt image header: {e}", reason="corrupt") from None
    with im:
        if im.format not in INPUT_FORMATS:
            raise InvalidImage(
                f"{im.format} images are not supported (PNG, JPEG, WebP, BMP, TIFF)", reason="unsupported_format"
            )
        w, h = im.size
        if w == 0 or h == 0:
            raise InvalidImage(f"image has a zero-sized side ({w}x{h})", reason="zero_size")
        if w * h > limits.max_pixels:  # checked on the header, before any pixel is decoded
            raise InvalidImage(
                f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}", reason="too_many_pixels"
            )
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise InvalidImage(f"animated or multi-page images are not supported ({frames} frames)", reason="animated")
        try:
            orientation = int(im.getexif().get(_ORIENTATION_TAG, 1))
            icc = im.info.get("icc_profile") or None
            dpi = im.info.get("dpi")
            if png is not None and png[0] == 16:
                arr = _decode_png16(data, png[1])
            else:
                im.load()
                arr = _to_array(im)
                if im.mode == "CMYK":
                    icc = None  # the CMYK profile was applied; the result is sRGB
        except InvalidImage:
            raise
        except Image.DecompressionBombError as e:
            raise InvalidImage(f"image is too large: {e}", reason="too_many_pixels") from None
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, zlib.error) as e:
            raise InvalidImage(f"corrupt or truncated image: {e}", reason="corrupt") from None
    return split(apply_orientation(arr, orientation), icc_profile=icc, dpi=_clean_dpi(dpi), source_format=im.format)


def _clean_dpi(dpi) -> tuple[float, float] | None:
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def split(
    arr: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    source_format: str = "",
) -> Picture:
    """HxWxC (C = 1, 2, 3, 4; uint8 or uint16) -> :class:`Picture` (colour for the network + what it keeps aside)."""
    channels = arr.shape[2]
    gray = channels in (1, 2)
    alpha = np.ascontiguousarray(arr[..., -1]) if channels in (2, 4) else None
    color = arr[..., :1] if gray else arr[..., :3]
    residual = None
    bits = 8
    if arr.dtype == np.uint16:
        bits = 16
        wide = color.astype(np.int32)
        color8 = ((wide + 128) // 257).astype(np.uint8)
        residual = (wide - 257 * color8.astype(np.int32)).astype(np.int16)
        color = color8
    elif arr.dtype != np.uint8:
        raise InvalidImage(f"unsupported sample type {arr.dtype}", reason="unsupported_mode")
    if gray:
        color = np.repeat(color, 3, axis=2)
    return Picture(
        color=np.ascontiguousarray(color),
        alpha=alpha,
        residual=residual,
        gray=gray,
        bits=bits,
        icc_profile=icc_profile,
        dpi=dpi,
        source_format=source_format,
    )


# ---------------------------------------------------------------------------------------------------------------
# Recompose and encode
# ---------------------------------------------------------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB (Pillow's convert("L") formula), uint8 HxW."""
    wide = rgb.astype(np.uint32)
    return ((wide[..., 0] * 299 + wide[..., 1] * 587 + wide[..., 2] * 114 + 500) // 1000).astype(np.uint8)


def recompose(picture: Picture, color_out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The network's uint8 RGB output (already at the output size) -> (pixels, alpha) in the input's kind:
    gray stays gray, 16-bit stays 16-bit (residual added back), alpha resized and re-attached."""
    size = color_out.shape[:2]
    pixels: np.ndarray = luma(color_out)[..., None] if picture.gray else color_out
    if picture.bits == 16:
        wide = pixels.astype(np.float32) * 257.0
        if picture.residual is not None:
            res = resize(picture.residual, size)
            wide += res if res.ndim == 3 else res[..., None]
        pixels = np.clip(np.rint(wide), 0, 65535).astype(np.uint16)
    if picture.gray:
        pixels = pixels[..., 0]
    alpha = None
    if picture.alpha is not None:
        a = resize(picture.alpha, size)
        alpha = a if a.dtype == np.uint8 else np.clip(np.rint(a), 0, 65535).astype(picture.alpha.dtype)
    return pixels, alpha


def _icc_matches(icc: bytes | None, gray: bool) -> bool:
    """Only carry a profile over if it describes the output's colour space (bytes 16..20 of the ICC header)."""
    return bool(icc) and len(icc) >= 20 and icc[16:20] == (b"GRAY" if gray else b"RGB ")


def _to8(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype == np.uint8 else ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _flatten_on_white(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite over white for formats without alpha (JPEG)."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    p = pixels if pixels.ndim == 3 else pixels[..., None]
    out = np.rint(p.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return out if pixels.ndim == 3 else out[..., 0]


try:  # Intel ISA-L's deflate (PyPI isal, in the server extra): a standard zlib stream, ~5x zlib's speed at level 1
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - the step still works without it, with zlib, slower
    _fast_zlib = None


def _deflate(data: np.ndarray) -> bytes:
    """zlib stream of ``data`` for an IDAT chunk: ISA-L's level 1 where installed, else zlib level 1 run-length
    (docs/decisions.md#png-encoder)."""
    if _fast_zlib is not None:
        return _fast_zlib.compress(data, 1)
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return packer.compress(data) + packer.flush()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _encode_png(
    pixels: np.ndarray, alpha: np.ndarray | None, *, icc: bytes | None, dpi: tuple[float, float] | None
) -> bytes:
    """PNG written here, 8 or 16 bits per channel (Pillow cannot write 16-bit colour, and its 8-bit writer is slow).

    Every row uses the "Up" filter (byte minus the byte above, vectorised in numpy), then a fast level-1 deflate
    (:func:`_deflate`): faster than Pillow's writer for a slightly larger file, and the server is CPU bound
    (docs/decisions.md#png-encoder).
    """
    arr = pixels[..., None] if pixels.ndim == 2 else pixels
    if alpha is not None:
        arr = np.dstack([arr, alpha])  # encode() gave alpha the pixels' dtype
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = np.ascontiguousarray(arr, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    rows = np.empty((h, 1 + raw.shape[1]), np.uint8)
    rows[:, 0] = 2  # Up; the first row's "above" is zeros by definition, so it is stored as is
    rows[0, 1:] = raw[0]
    np.subtract(raw[1:], raw[:-1], out=rows[1:, 1:])  # mod 256, as the filter is defined
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))]
    if icc:
        chunks.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [max(1, round(v / 0.0254)) for v in dpi]
        chunks.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    chunks.append(_png_chunk(b"IDAT", _deflate(rows)))
    chunks.append(_png_chunk(b"IEND", b""))
    return _PNG_MAGIC + b"".join(chunks)


def encode(
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    fmt: str = "PNG",
    quality: int = 95,
    icc_profile: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> bytes:
    """HxW (gray) or HxWx3 (RGB), uint8 or uint16, plus optional alpha -> encoded bytes.

    16 bits survive in PNG only (JPEG and WebP are 8-bit formats). JPEG has no alpha: composited over white. PNG is
    written by :func:`_encode_png` (Up filter, fast level-1 deflate): the server is CPU bound.
    """
    fmt = OUTPUT_FORMATS.get(fmt.upper().lstrip("."))
    if fmt is None:
        raise InvalidImage("unsupported output format (PNG, JPEG, WEBP)", reason="bad_option")
    gray = pixels.ndim == 2
    if fmt == "WEBP" and max(pixels.shape[:2]) > WEBP_MAX_SIDE:
        raise InvalidImage(
            f"WebP images are at most {WEBP_MAX_SIDE} pixels on a side; the output is "
            f"{pixels.shape[1]}x{pixels.shape[0]} (use PNG or a lower outscale)",
            reason="output_too_large",
        )
    icc = icc_profile if _icc_matches(icc_profile, gray) else None
    if fmt == "PNG":
        if alpha is not None and alpha.dtype != pixels.dtype:
            alpha = _to8(alpha) if pixels.dtype == np.uint8 else alpha.astype(np.uint16) * 257
        return _encode_png(pixels, alpha, icc=icc, dpi=dpi)
    pixels = _to8(pixels)
    alpha = None if alpha is None else _to8(alpha)
    if fmt == "JPEG" and alpha is not None:
        pixels, alpha = _flatten_on_white(pixels, alpha), None
    if alpha is not None:
        arr, mode = (np.dstack([pixels, alpha]), "LA") if gray else (np.dstack([pixels, alpha]), "RGBA")
    else:
        arr, mode = pixels, ("L" if gray else "RGB")
    img = Image.fromarray(np.ascontiguousarray(arr), mode)
    if fmt == "WEBP" and mode in ("L", "LA"):
        img = img.convert("RGBA" if alpha is not None else "RGB")  # WebP has no gray mode
    kwargs: dict = {}
    if icc:
        kwargs["icc_profile"] = icc
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=quality, **kwargs, **({"dpi": tuple(round(v) for v in dpi)} if dpi else {}))
    else:
        # method 3 of 0..6: most of method 4's (the default) compression at about 2/3 of its time
        img.save(out, "WEBP", quality=quality, method=3, **kwargs)
    return out.getvalue()


__all__ = [
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "REASONS",
    "InvalidImage",
    "Picture",
    "apply_orientation",
    "decode",
    "encode",
    "fit_within",
    "luma",
    "recompose",
    "resize",
    "split",
]
