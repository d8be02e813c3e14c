"""What a request is made of: images in and out of every kind infer() takes (arrays, PIL images, paths, bytes),
the options as the ensembles' input tensors, and raw frames padded, batched and tiled for a network."""

from __future__ import annotations

import io
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Union

import numpy as np

from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MAX_SIDE,
    NET_VERSION,
    OUTPUT_FORMAT,
    OUTSCALE,
    QUALITY,
    TILE_SIZE,
    RequestOption,
)
from stylize.contract.errors import InvalidInput
from stylize.contract.frames import RawModel, crop_frames, pad_to_multiple
from stylize.sdk.info import descriptor_of, version_arg

# Request options of the image ensembles, by keyword of infer(); names, tensors and dtypes come from the descriptors.
if TYPE_CHECKING:
    from PIL import Image as PILImage

OPTIONS: dict[str, RequestOption] = {o.name: o for o in (OUTPUT_FORMAT, QUALITY, OUTSCALE, MAX_SIDE, TILE_SIZE)}
OUTPUT_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"}

ImageLike = Union[np.ndarray, "PILImage.Image", str, os.PathLike, bytes, bytearray, memoryview]


# ---------------------------------------------------------------------------------------------------------------
# Input / output kinds
# ---------------------------------------------------------------------------------------------------------------


def kind_of(img: object) -> str:
    """'array' | 'pil' | 'path' | 'bytes' (what infer will return the result as)."""
    if isinstance(img, np.ndarray):
        return "array"
    if isinstance(img, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(img, (str, os.PathLike)):
        return "path"
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        pass
    else:
        if isinstance(img, Image.Image):
            return "pil"
    raise InvalidInput(f"unsupported input type {type(img).__name__}: give a numpy array, a PIL image, a path or bytes")


def _png(image: "PILImage.Image") -> bytes:
    out = io.BytesIO()
    # level 1: the input is decoded once on the server, and encoding time is on the caller's critical path
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def array_to_image(arr: np.ndarray) -> "PILImage.Image":
    from PIL import Image

    if arr.dtype != np.uint8:
        raise InvalidInput(f"array dtype is {arr.dtype}; expected uint8 (0..255)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        mode = "RGB" if arr.shape[2] == 3 else "RGBA"
    else:
        raise InvalidInput(f"array shape {arr.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if 0 in arr.shape[:2]:
        raise InvalidInput(f"array shape {arr.shape} has an empty side")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def encode_input(img: ImageLike) -> tuple[bytes, str]:
    """(bytes sent to the server, kind of the input). Arrays and PIL images become lossless PNG."""
    kind = kind_of(img)  # refuses any other type
    # the branches test what kind_of tested: the same kinds, told apart in a way mypy follows
    if isinstance(img, np.ndarray):  # "array"
        data = _png(array_to_image(img))
    elif isinstance(img, (bytes, bytearray, memoryview)):  # "bytes"
        data = bytes(img)
    elif isinstance(img, (str, os.PathLike)):  # "path"
        try:
            data = Path(img).read_bytes()
        except OSError as e:
            raise InvalidInput(
                f"cannot read {img}: {e.strerror or e}", reason=f"cannot read file: {e.strerror or e}"
            ) from None
    else:  # "pil"
        im = img if img.mode in ("RGB", "RGBA", "L", "LA", "P", "I;16") else img.convert("RGB")
        data = _png(im)
    if not data:
        raise InvalidInput("empty input: no image bytes", reason="empty input: no image bytes")
    return data, kind


_KEPT_MODES = ("RGB", "RGBA", "L", "I;16")  # what the server sends back for RGB, alpha, gray and 16-bit inputs


def decode_output(data: bytes, kind: str, *, like: np.ndarray | None = None) -> Any:
    """The server's encoded result as the kind the caller gave (see the module docstring).

    The server answers in the input's layout (gray stays gray, alpha is kept); ``like`` (the input array) restores a
    trailing channel axis of 1 that PNG cannot express.
    """
    if kind in ("path", "bytes"):
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in _KEPT_MODES:
            out = im.copy()
        else:  # palette, LA, ...: what the server does not send today
            out = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    if kind == "pil":
        return out
    arr = np.asarray(out)
    if like is not None and like.ndim == 3 and like.shape[2] == 1 and arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    return arr


def image_format(data: bytes) -> str | None:
    """'PNG' | 'JPEG' | 'WEBP' | ... from the magic bytes (None if unknown)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def build_options(options: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """Validate the **options of infer: {option name: typed value}; None values mean "not set" and are dropped.

    With a ``model`` known to the descriptors, options that model does not take are refused here (the server would
    refuse them too, after the upload).
    """
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key not in OPTIONS:
            raise TypeError(f"unknown option {key!r}; known: {', '.join(OPTIONS)}")
        if value is None:
            continue  # "not set": the CLI passes every flag
        if key == "output_format":
            fmt = OUTPUT_FORMATS.get(str(value).strip().upper().lstrip("."))
            if fmt is None:
                raise InvalidInput(f"output_format {value!r}; expected PNG, JPEG or WEBP")
            value = fmt
        elif key == "quality":
            value = int(value)
            if not 1 <= value <= 100:
                raise InvalidInput(f"quality {value}; expected 1..100")
        elif key == "outscale":
            value = float(value)
            if not value > 0:
                raise InvalidInput(f"outscale {value}; expected > 0")
        else:  # max_side, tile_size: sides in pixels
            value = int(value)
            if value < 1:
                raise InvalidInput(f"{key} {value}; expected >= 1")
        values[key] = value
    desc = descriptor_of(model) if model else None
    if desc is not None and values:
        allowed = {o.name for o in desc.options}
        for key in values:
            if key not in allowed:
                why = "it has no max_side" if key == MAX_SIDE.name else "it is not tiled"
                raise InvalidInput(
                    f"option {key} does not apply to {model} ({why})",
                    reason=f"option {key} does not apply to {model}",
                    model=model,
                )
    return values


def option_tensors(values: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """(tensor name, Triton dtype, [1, 1] array) of each option: what goes on the wire as optional inputs."""
    out = []
    for key, value in values.items():
        t = OPTIONS[key].tensor
        if t.dtype == "BYTES":
            arr = np.array([[str(value).encode()]], dtype=np.object_)
        else:
            arr = np.array([[value]], dtype=t.numpy_dtype)
        out.append((t.name, t.dtype, arr.reshape(1, *t.dims)))
    return out


def tile_for(raw: RawModel, tile: int | None) -> int | None:
    """The tile size to use: the model's unless given; 0 means never tile."""
    if raw.window:
        return None
    size = raw.tile_size if tile is None else tile
    if not size:
        return None
    size -= size % raw.size_multiple
    if size <= 2 * raw.tile_overlap:
        raise InvalidInput(f"tile {tile} must be more than twice the overlap ({raw.tile_overlap})")
    return size


def run_frames(
    frames: np.ndarray, raw: RawModel, tile: int | None, run: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Validate, pad, batch (or tile), run, crop: the raw-frame path shared by both clients."""
    arr, added = _frames_batch(frames, raw)
    h, w = arr.shape[-3:-1]
    padded = pad_to_multiple(arr, raw.size_multiple, raw.min_size)
    ph, pw = padded.shape[-3:-1]
    if tile and (ph > tile or pw > tile):
        from stylize.contract.tiling import run_tiled

        out = np.stack(
            [
                run_tiled(
                    f,
                    run=run,
                    scale=raw.scale,
                    tile=tile,
                    overlap=raw.tile_overlap,
                    batch=max(1, min(raw.tile_batch, raw.max_batch_size or 1)),
                    per_call=raw.tiles_per_call,
                    multiple=raw.size_multiple,
                    max_side=raw.max_side,
                )[0]
                for f in padded
            ]
        )
    else:
        step = max(raw.max_batch_size, 1)
        if raw.max_request_pixels:  # fewer frames per request where the network's pixel limit says so
            per_frame = int(np.prod(padded.shape[1:-1], dtype=np.int64))
            step = max(1, min(step, raw.max_request_pixels // max(per_frame, 1)))
        outs = [run(np.ascontiguousarray(padded[i : i + step])) for i in range(0, len(padded), step)]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
    out = crop_frames(out, h, w, ph, pw)
    return out[0] if added else out


def _check_image_model(model: str) -> None:
    desc = descriptor_of(model)
    if desc is not None and desc.is_video_window:
        raise InvalidInput(
            f"{model} is a video model (frame windows): use upscale_video() or infer_frames()", model=model
        )


def net_version(model: str, version: int | str | None) -> int | None:
    """The network version a pinned image call asks for with NET_VERSION (None: not pinned, or a model the
    descriptors do not know, whose own version is pinned instead). Refused here unless a positive integer."""
    desc = descriptor_of(model)
    if version is None or version == "" or desc is None or desc.window:
        return None
    try:
        v = int(str(version).strip())
    except ValueError:
        raise InvalidInput(
            f"model version {version!r}: expected a version number (see `stylize models`)", model=model
        ) from None
    if v < 1:
        raise InvalidInput(f"model version {v}: versions are numbered from 1", model=model)
    return v


def image_request(
    grpc: ModuleType, model: str, data: bytes, options: dict[str, Any], version: int | str | None = None
) -> tuple[list[Any], list[Any], str]:
    """Inputs, requested outputs and the model version of one image request (shared by the blocking and the asyncio
    client). A client-facing ensemble has one version; a pinned ``version`` is the network's, sent as NET_VERSION
    (the image step runs that version: stylize.engine.network.NetworkVersions). A model the descriptors do not
    know gets ``version`` as its own Triton version."""
    _check_image_model(model)
    values = build_options(options, model)
    pinned = net_version(model, version)
    if not data:
        raise InvalidInput("empty input: no image bytes", model=model)
    image = grpc.InferInput(ENCODED_IMAGE.name, [1, *ENCODED_IMAGE.dims], ENCODED_IMAGE.dtype)
    image.set_data_from_numpy(np.array([[bytes(data)]], dtype=np.object_))
    inputs = [image]
    tensors = option_tensors(values)
    if pinned is not None:
        tensors.append(
            (
                NET_VERSION.tensor.name,
                NET_VERSION.tensor.dtype,
                np.array([[pinned]], dtype=NET_VERSION.tensor.numpy_dtype),
            )
        )
    for name, dtype, arr in tensors:
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    model_version = "" if pinned is not None else version_arg(version)
    return inputs, [grpc.InferRequestedOutput(ENCODED_RESULT.name)], model_version


def _frames_batch(frames: np.ndarray, raw: RawModel) -> tuple[np.ndarray, bool]:
    """Validate frames for a network; returns (batched array, whether a batch axis was added)."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise InvalidInput(f"frames dtype is {arr.dtype}; expected uint8")
    per_item = 4 if raw.window else 3
    if arr.ndim == per_item:
        arr, added = arr[np.newaxis], True
    elif arr.ndim == per_item + 1:
        added = False
    else:
        want = "TxHxWx3 (or NxTxHxWx3)" if raw.window else "HxWx3 (or NxHxWx3)"
        raise InvalidInput(f"frames shape {arr.shape}; {raw.name} expects {want}")
    if arr.shape[-1] != 3:
        raise InvalidInput(f"frames shape {arr.shape}; expected 3 channels (RGB)")
    if raw.window and arr.shape[1] != raw.window:
        raise InvalidInput(f"{raw.name} takes windows of {raw.window} frames, got {arr.shape[1]}")
    if raw.window and raw.max_side and max(arr.shape[-3:-1]) > raw.max_side:
        raise InvalidInput(
            f"{raw.name} takes frames of at most {raw.max_side} pixels a side (its TensorRT profile; "
            f"windows are not tiled in space), got {arr.shape[-2]}x{arr.shape[-3]}"
        )
    return arr, added
