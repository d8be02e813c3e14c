"""What the image step does for one image: options -> decode -> (shrink) -> tiles through the network -> resize ->
recompose (gray, 16 bits, alpha) -> encode. Pure Python/numpy; the network is a callable, so this is unit-tested
with ONNX Runtime in-process and served with a BLS call to ``<id>_net``.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from stylize.contract.descriptors import MAX_SIDE, RequestOption
from stylize.contract.frames import pad_to_multiple
from stylize.contract.step import ALL_OPTIONS, DEFAULT_QUALITY, MAX_OUTSCALE, StepConfig
from stylize.contract.tiling import RunBatch, run_tiled
from stylize.engine.imaging import (
    OUTPUT_FORMATS,
    InvalidImage,
    decode,
    encode,
    fit_within,
    recompose,
    resize,
)


@dataclass(frozen=True, kw_only=True)
class Options:
    output_format: str = "PNG"
    quality: int = DEFAULT_QUALITY
    outscale: float | None = None  # None: the network's scale
    max_side: int | None = None
    tile_size: int | None = None
    net_version: int | None = None  # None: the newest version of the network Triton serves (steps/network.py)


def _scalar(value: Any, option: RequestOption) -> Any:
    """One value from a request parameter (JSON scalar) or an optional input (numpy array of one element)."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidImage(f"input {option.tensor.name} must hold one value, got {value.size}", reason="bad_tensor")
        value = value.reshape(-1)[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
    return value


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidImage(f"{name} must be an integer, got {value!r}", reason="bad_option")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise InvalidImage(f"{name} must be an integer, got {value!r}", reason="bad_option") from None


# Names Triton reserves for its own request parameters ("triton_" prefix, parameters extension docs): not ours
_TRITON_PARAMETER_PREFIX = "triton_"


def request_parameters(read: Callable[[], str]) -> dict[str, Any]:
    """A request's parameters from ``read`` (``request.parameters`` in the step: a JSON string). A parameter that is
    not valid UTF-8 makes the stub's decoding fail: that is the request's fault (INVALID_ARGUMENT), not the step's."""
    try:
        text = read()
    except UnicodeDecodeError as e:
        raise InvalidImage(
            f"request parameters are not valid UTF-8 ({e.reason} at byte {e.start})", reason="bad_option"
        ) from None
    try:
        parameters = json.loads(text) if text and text.strip() else {}
    except ValueError:
        raise InvalidImage("request parameters are not a JSON object", reason="bad_option") from None
    if not isinstance(parameters, dict):
        raise InvalidImage("request parameters are not a JSON object", reason="bad_option")
    return parameters


def check_parameters(
    parameters: Mapping[str, Any], *, options: Sequence[RequestOption] = ALL_OPTIONS, model: str = "the image ensembles"
) -> None:
    """Refuse every request parameter: options are optional input tensors only.

    Triton's response cache (on the image step of every image ensemble) keys on the inputs alone, so an option sent
    as a request parameter would be answered from the cache entry of the same image sent with other options (seen
    on 2.51: a PNG request's cached answer came back for output_format=WEBP). The ensembles' first step
    (steps/request_check) calls this before the cached step is reached; the image step calls it again for direct
    callers. A misspelled option is refused too, rather than silently ignored; parameters Triton reserves
    (``triton_`` prefix) are left alone.
    """
    inputs = ", ".join(o.tensor.name for o in options)
    by_name = {o.name: o for o in ALL_OPTIONS}
    for name in parameters:
        if name.startswith(_TRITON_PARAMETER_PREFIX):
            continue
        option = by_name.get(name.lower())
        if option is not None:
            raise InvalidImage(
                f"send {option.tensor.name} as an input tensor: request parameters are not part of "
                f"the response-cache key (option inputs of {model}: {inputs})",
                reason="bad_option",
            )
        close = difflib.get_close_matches(name.lower(), [o.name for o in options], n=1, cutoff=0.6)
        hint = f" (did you mean {by_name[close[0]].tensor.name}?)" if close else ""
        raise InvalidImage(
            f"unknown request parameter {name!r}{hint}: no request parameters are accepted; the "
            f"options of {model} are the optional inputs {inputs}",
            reason="bad_option",
        )


def parse_options(
    config: StepConfig,
    *,
    parameters: Mapping[str, Any] | str | None = None,
    tensors: Mapping[str, np.ndarray | None] | None = None,
) -> Options:
    """Options of one request, from its optional inputs; any request parameter is refused (:func:`check_parameters`)."""
    if isinstance(parameters, str):
        parameters = request_parameters(lambda: parameters)
    check_parameters(parameters or {}, options=config.options, model=config.model_id)
    tensors = tensors or {}
    allowed = config.options
    opts: dict[str, Any] = {"output_format": config.output_format}
    for option in ALL_OPTIONS:
        value = tensors.get(option.tensor.name)
        if value is None:
            continue
        if option not in allowed:
            why = "it has no max_side" if option is MAX_SIDE else "it is not tiled"
            raise InvalidImage(f"option {option.name} does not apply to {config.model_id} ({why})", reason="bad_option")
        opts[option.name] = _parse_one(config, option.name, _scalar(value, option))
    return Options(**opts)


def _parse_one(config: StepConfig, name: str, value: Any) -> Any:
    if name == "output_format":
        fmt = OUTPUT_FORMATS.get(str(value).strip().upper().lstrip("."))
        if fmt is None:
            raise InvalidImage(f"output_format {value!r}; expected PNG, JPEG or WEBP", reason="bad_option")
        return fmt
    if name == "quality":
        q = _as_int(value, name)
        if not 1 <= q <= 100:
            raise InvalidImage(f"quality {q}; expected 1..100", reason="bad_option")
        return q
    if name == "outscale":
        if isinstance(value, bool):  # JSON true is not 1.0
            raise InvalidImage(f"outscale must be a number, got {value!r}", reason="bad_option")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise InvalidImage(f"outscale must be a number, got {value!r}", reason="bad_option") from None
        if not (math.isfinite(f) and 0 < f <= MAX_OUTSCALE):
            raise InvalidImage(f"outscale {value!r}; expected 0 < outscale <= {MAX_OUTSCALE:g}", reason="bad_option")
        return f
    if name == "max_side":
        m = _as_int(value, name)
        if m < config.min_size:
            raise InvalidImage(f"max_side {m}; expected >= {config.min_size}", reason="bad_option")
        return min(m, config.max_side or m)  # never above the configured bound (memory)
    if name == "tile_size":
        t = _as_int(value, name)
        if not config.min_tile <= t <= (config.tile_size or 0):
            raise InvalidImage(
                f"tile_size {t}; expected {config.min_tile}..{config.tile_size} (the configured "
                "tile size bounds memory)",
                reason="bad_option",
            )
        return t - t % config.size_multiple
    if name == "net_version":
        v = _as_int(value, name)
        if v < 1:
            raise InvalidImage(f"net_version {v}; model versions are numbered from 1", reason="bad_option")
        return v
    raise AssertionError(name)


@dataclass(kw_only=True)
class Report:
    """What one image cost (for the step's metrics)."""

    decode_seconds: float = 0.0
    network_seconds: float = 0.0
    encode_seconds: float = 0.0  # resize + recompose + encode
    tiles: int = 0
    input_pixels: int = 0
    output_pixels: int = 0

    @property
    def input_megapixels(self) -> float:
        return self.input_pixels / 1e6


@dataclass(kw_only=True)
class Spent:
    """Pixels the earlier images of the same request took. A request's images share the step's limits (max_pixels
    in, max_output_pixels out): the step holds every result of a request until it answers, so a per-image limit
    alone would let one request of max_batch_size images hold that many times the limit (issue 13 #4)."""

    input_pixels: int = 0
    output_pixels: int = 0
    images: int = 0

    def add(self, report: Report) -> None:
        self.input_pixels += report.input_pixels
        self.output_pixels += report.output_pixels
        self.images += 1


def output_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


def process(
    data: bytes,
    config: StepConfig,
    options: Options,
    run: RunBatch,
    *,
    spent: Spent | None = None,
    admit: Callable[[Report], None] | None = None,
) -> tuple[bytes, Report]:
    """Encoded image -> encoded result. Raises :class:`InvalidImage` for anything wrong with the request.

    ``spent``: what the request's earlier images took; this one must fit in what the limits leave (checked before
    the network runs). ``admit``: called with the image's pixels once the limits are checked, before the costly
    part (the step reserves the image's memory there: stylize.engine.memory_budget)."""
    report = Report()
    t0 = time.perf_counter()
    picture = decode(data, limits=config.limits)
    h, w = picture.size
    outscale = config.scale if options.outscale is None else options.outscale
    target = output_size(h, w, outscale)
    if target[0] * target[1] > config.limits.max_output_pixels:
        raise InvalidImage(
            f"the output would be {target[1]}x{target[0]} pixels; the limit is "
            f"{config.limits.max_output_pixels} (lower outscale)",
            reason="output_too_large",
        )
    report.input_pixels, report.output_pixels = h * w, target[0] * target[1]
    if spent is not None and spent.images:
        total_in, total_out = spent.input_pixels + report.input_pixels, spent.output_pixels + report.output_pixels
        if total_in > config.limits.max_pixels:
            raise InvalidImage(
                f"this request's images total {total_in} input pixels; the limit of one request is "
                f"{config.limits.max_pixels} (send these images in separate requests)",
                reason="too_many_pixels",
            )
        if total_out > config.limits.max_output_pixels:
            raise InvalidImage(
                f"this request's results would total {total_out} pixels; the limit of one request is "
                f"{config.limits.max_output_pixels} (send these images in separate requests)",
                reason="output_too_large",
            )
    if admit is not None:
        admit(report)
    color = picture.color
    max_side = options.max_side or config.max_side
    if max_side:
        shrunk = fit_within(h, w, max_side)
        if shrunk != (h, w):
            color = resize(color, shrunk)
    t1 = time.perf_counter()
    report.decode_seconds = t1 - t0

    ch, cw = color.shape[:2]
    padded = pad_to_multiple(color, config.size_multiple, config.min_size)
    tile = options.tile_size or config.tile_size
    if tile:
        net_out, report.tiles = run_tiled(
            padded,
            run=run,
            scale=config.scale,
            tile=tile,
            overlap=config.tile_overlap,
            batch=config.tile_batch,
            per_call=config.tiles_per_call,
            max_side=config.max_tile_side,
            multiple=config.size_multiple,
        )
    else:
        net_out, report.tiles = np.ascontiguousarray(run(padded[None])[0]), 1
    # what the padding became after the network (the output side is proportional to the input side)
    oh, ow = net_out.shape[:2]
    net_out = net_out[: ch * oh // padded.shape[0], : cw * ow // padded.shape[1]]
    t2 = time.perf_counter()
    report.network_seconds = t2 - t1

    color_out = resize(net_out, target)
    pixels, alpha = recompose(picture, color_out)
    result = encode(
        pixels,
        alpha,
        fmt=options.output_format,
        quality=options.quality,
        icc_profile=picture.icc_profile,
        dpi=picture.dpi,
    )
    report.encode_seconds = time.perf_counter() - t2
    return result, report


__all__ = [
    "Options",
    "Report",
    "Spent",
    "check_parameters",
    "output_size",
    "parse_options",
    "process",
    "request_parameters",
]
