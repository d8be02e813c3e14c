"""The image step's configuration and limits: what the build writes into an image step's config.pbtxt parameters
(from the descriptor), what the step reads back from them, and the bounds of one request.

In the contract because every side reads them: the build (stylize_build.pbtxt), the step inside tritonserver
(stylize.engine.pipeline), the web page, the bench and the k8s tools (the longest request a pod drains).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Mapping, cast, get_args

from stylize.contract.descriptors import (
    DEFAULT_MAX_PIXELS,
    MAX_SIDE,
    NET_VERSION,
    OUTPUT_FORMAT,
    OUTSCALE,
    QUALITY,
    TILE_SIZE,
    ModelDescriptor,
    RequestOption,
)

# ---- limits of one request ------------------------------------------------------------------------------------
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_OUTPUT_PIXELS = 67_108_864  # 8192 x 8192 output (a 2048^2 input upscaled x4)
MAX_OUTSCALE = 16.0  # the largest ``outscale`` option
DEFAULT_QUALITY = 95  # JPEG/WebP quality when a request does not say


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What the image step admits: input pixels (checked on the header, before any pixel is decoded), encoded
    bytes, and output pixels."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS


# ---- how the step runs the network ----------------------------------------------------------------------------
Precision = Literal["fp32", "bf16"]  # what a build can serve a float network in (INT8 graphs: their float parts)
PRECISIONS: tuple[str, ...] = get_args(Precision)
InProcessRuntime = Literal["openvino", "onnxruntime"]  # the step opens the network's file itself (engine/network.py)
IN_PROCESS_RUNTIMES: tuple[str, ...] = get_args(InProcessRuntime)
NetRuntime = Literal["triton", InProcessRuntime]  # "triton": the step calls the network model by BLS
NET_RUNTIMES: tuple[str, ...] = get_args(NetRuntime)

# Every option an image step knows (a descriptor offers a subset: ModelDescriptor.options, StepConfig.options)
ALL_OPTIONS: tuple[RequestOption, ...] = (OUTPUT_FORMAT, QUALITY, OUTSCALE, MAX_SIDE, TILE_SIZE, NET_VERSION)


@dataclass(frozen=True, kw_only=True)
class StepConfig:
    """The image step's settings, read once from its config.pbtxt parameters (written from the descriptor)."""

    model_id: str
    net_model: str
    scale: int
    size_multiple: int = 1
    min_size: int = 1
    tile_size: int | None = None
    tile_overlap: int = 16
    tile_batch: int = 1  # one call's pixel budget, in tiles (plan_tiles)
    tiles_per_call: int | None = None  # tiles of a tiled image per network call (None: tile_batch)
    max_tile_side: int | None = None  # no side sent to the network is longer (GPU: the TensorRT profile's maximum)
    # How the step runs the network: "triton" calls ``net_model`` by BLS (any backend: TensorRT on GPU); "openvino"
    # or "onnxruntime" runs ``net_model``'s newest ONNX file in the step's own process with ``net_threads`` threads
    # (CPU), in ``net_precision`` (OpenVINO: fp32 or bf16; ONNX Runtime runs fp32)
    net_runtime: NetRuntime = "triton"
    net_threads: int = 1
    net_precision: Precision = "fp32"
    max_side: int | None = None
    output_format: str = "PNG"
    limits: Limits = field(default_factory=Limits)

    @property
    def options(self) -> tuple[RequestOption, ...]:
        return tuple(
            o for o in ALL_OPTIONS if (o is not MAX_SIDE or self.max_side) and (o is not TILE_SIZE or self.tile_size)
        )

    @property
    def min_tile(self) -> int:
        m = self.size_multiple
        return -(-max(self.min_size, 2 * self.tile_overlap + 16) // m) * m

    def __post_init__(self) -> None:
        if self.net_runtime not in NET_RUNTIMES:
            raise ValueError(f"net_runtime {self.net_runtime!r}; expected one of {', '.join(NET_RUNTIMES)}")
        if self.net_precision not in PRECISIONS:
            raise ValueError(f"net_precision {self.net_precision!r}; expected one of {', '.join(PRECISIONS)}")

    def parameters(self) -> dict[str, str]:
        """As config.pbtxt parameters (string values); :meth:`from_parameters` reads them back."""
        return {
            "stylize_id": self.model_id,
            "net_model": self.net_model,
            "scale": str(self.scale),
            "size_multiple": str(self.size_multiple),
            "min_size": str(self.min_size),
            "tile_size": str(self.tile_size or 0),
            "tile_overlap": str(self.tile_overlap),
            "tile_batch": str(self.tile_batch),
            "tiles_per_call": str(self.tiles_per_call or 0),
            "max_tile_side": str(self.max_tile_side or 0),
            "net_runtime": self.net_runtime,
            "net_threads": str(self.net_threads),
            "net_precision": self.net_precision,
            "max_side": str(self.max_side or 0),
            "output_format": self.output_format,
            "max_pixels": str(self.limits.max_pixels),
            "max_bytes": str(self.limits.max_bytes),
            "max_output_pixels": str(self.limits.max_output_pixels),
        }

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> "StepConfig":
        def num(key: str, default: int) -> int:
            raw = str(params.get(key, "")).strip()
            return int(raw) if raw else default

        return cls(
            model_id=params["stylize_id"],
            net_model=params["net_model"],
            scale=num("scale", 1),
            size_multiple=num("size_multiple", 1),
            min_size=num("min_size", 1),
            tile_size=num("tile_size", 0) or None,
            tile_overlap=num("tile_overlap", 16),
            tile_batch=num("tile_batch", 1),
            tiles_per_call=num("tiles_per_call", 0) or None,
            max_tile_side=num("max_tile_side", 0) or None,
            # checked in __post_init__
            net_runtime=cast(NetRuntime, str(params.get("net_runtime", "triton")).strip() or "triton"),
            net_threads=max(1, num("net_threads", 1)),
            net_precision=cast(Precision, str(params.get("net_precision", "fp32")).strip() or "fp32"),
            max_side=num("max_side", 0) or None,
            output_format=str(params.get("output_format", "PNG")),
            limits=Limits(
                max_pixels=num("max_pixels", DEFAULT_MAX_PIXELS),
                max_bytes=num("max_bytes", DEFAULT_MAX_BYTES),
                max_output_pixels=num("max_output_pixels", DEFAULT_MAX_OUTPUT_PIXELS),
            ),
        )

    @classmethod
    def from_descriptor(
        cls,
        desc: ModelDescriptor,
        *,
        net_model: str | None = None,
        limits: Limits = Limits(),
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        tiles_per_call: int | None = None,
        net_runtime: NetRuntime = "triton",
        net_threads: int = 1,
        max_tile_side: int | None = None,
        net_precision: Precision = "fp32",
    ) -> "StepConfig":
        """Descriptor defaults; ``tile_size``/``tile_overlap``/``tiles_per_call`` override them (build options; an
        untiled descriptor stays untiled). The descriptor's ``serving.max_pixels`` caps ``limits.max_pixels`` (the
        longest request a pod has to drain)."""
        serving = desc.serving
        if serving.max_pixels is not None and serving.max_pixels < limits.max_pixels:
            limits = dataclasses.replace(limits, max_pixels=serving.max_pixels)
        return cls(
            model_id=desc.id,
            net_model=net_model or desc.net_model,
            scale=desc.scale,
            size_multiple=desc.network.size_multiple,
            min_size=desc.network.min_size,
            tile_size=(tile_size or serving.tiling.size) if serving.tiling else None,
            tile_overlap=serving.tile_overlap if tile_overlap is None else tile_overlap,
            tile_batch=serving.tile_batch,
            tiles_per_call=tiles_per_call,
            max_tile_side=max_tile_side,
            net_runtime=net_runtime,
            net_threads=net_threads,
            net_precision=net_precision,
            max_side=serving.max_side,
            limits=limits,
        )


__all__ = [
    "ALL_OPTIONS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_OUTPUT_PIXELS",
    "DEFAULT_QUALITY",
    "IN_PROCESS_RUNTIMES",
    "InProcessRuntime",
    "Limits",
    "MAX_OUTSCALE",
    "NET_RUNTIMES",
    "NetRuntime",
    "PRECISIONS",
    "Precision",
    "StepConfig",
]
