"""The models the page offers, read from Triton: the SDK's model list (task, scale, weights), each ensemble's
inputs (the options it takes) and its image step's parameters (tile size, limits, default format).

Nothing here is typed twice: option names and tensors come from the descriptors, bounds from the server's own step
configuration (stylize.contract.step.StepConfig, the object the step itself reads them into).

The model configs are an admin API (stylize.contract.access). Without the admin key the page still works from the open
metadata API, with the descriptors' defaults for the options' bounds (``step_source == "descriptors"``); photos
then go to Triton whole, one request each: tile by tile needs the server's own tile plan, which only its config has.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from stylize.contract import access
from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MAX_SIDE,
    OUTPUT_FORMAT,
    OUTSCALE,
    QUALITY,
    REGISTRY,
    TILE_SIZE,
)
from stylize.contract.errors import AccessDenied, from_triton
from stylize.contract.step import DEFAULT_QUALITY, MAX_OUTSCALE, StepConfig
from stylize.sdk.info import ModelInfo
from stylize.sdk.request import OPTIONS

_BY_TENSOR = {o.tensor.name: o for o in OPTIONS.values()}


@dataclass(frozen=True)
class ModelEntry:
    info: ModelInfo
    image_model: str | None  # the image step behind the ensemble (None: the model takes no photos)
    step: StepConfig | None  # the image step's settings (None: the model takes no photos)
    options: tuple[str, ...]  # option names the ensemble takes, in OPTIONS order
    step_source: str = "server"  # "server" (its config) | "descriptors" (no admin key: our defaults)
    # where Triton's response cache may answer a request of this model: the first model on the ensemble's path whose
    # config enables it (the ensemble itself, or its image step); without the configs, both candidates
    cache_models: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def takes_images(self) -> bool:
        return self.step is not None

    @property
    def takes_videos(self) -> bool:
        return bool(self.info.versions)  # the network (raw frames) is ready

    def option_specs(self) -> list[dict[str, Any]]:
        """What the page draws for each option: type, bounds, default (the server's)."""
        step = self.step
        specs: list[dict[str, Any]] = []
        if step is None:
            return specs
        for name in self.options:
            if name == OUTSCALE.name:
                specs.append(
                    {
                        "name": name,
                        "label": "Output scale",
                        "type": "float",
                        "min": 0.25,
                        "max": MAX_OUTSCALE,
                        "step": 0.25,
                        "default": float(step.scale),
                        "help": f"the network upscales x{step.scale}; the result is resized to this",
                    }
                )
            elif name == OUTPUT_FORMAT.name:
                specs.append(
                    {
                        "name": name,
                        "label": "Format",
                        "type": "choice",
                        "choices": ["PNG", "JPEG", "WEBP"],
                        "default": step.output_format,
                    }
                )
            elif name == QUALITY.name:
                specs.append(
                    {
                        "name": name,
                        "label": "Quality",
                        "type": "int",
                        "min": 1,
                        "max": 100,
                        "step": 1,
                        "default": DEFAULT_QUALITY,
                        "help": "JPEG and WebP only",
                    }
                )
            elif name == TILE_SIZE.name and step.tile_size:
                specs.append(
                    {
                        "name": name,
                        "label": "Tile size",
                        "type": "int",
                        "min": step.min_tile,
                        "max": step.tile_size,
                        "step": step.size_multiple,
                        "default": step.tile_size,
                        "help": "smaller tiles: less memory per call, more calls",
                    }
                )
            elif name == MAX_SIDE.name and step.max_side:
                specs.append(
                    {
                        "name": name,
                        "label": "Longest side",
                        "type": "int",
                        "min": step.min_size,
                        "max": step.max_side,
                        "step": 1,
                        "default": step.max_side,
                        "help": "the photo is shrunk to this before the network",
                    }
                )
        return specs

    def to_json(self) -> dict[str, Any]:
        info = asdict(self.info)
        info["versions"] = list(self.info.versions)
        return {
            **info,
            "images": self.takes_images,
            "videos": self.takes_videos,
            "options": self.option_specs(),
            "settings_from": self.step_source,
            "tile": None
            if self.step is None or not self.step.tile_size
            else {"size": self.step.tile_size, "overlap": self.step.tile_overlap},
        }


class Catalog:
    """The server's models, re-read at most every ``ttl`` seconds (models can be loaded and unloaded)."""

    def __init__(self, client, triton, *, admin_key: str | None = None, ttl: float = 30.0):
        self._client = client  # AsyncStylizeClient (with the same admin key)
        self._triton = triton  # tritonclient.grpc.aio.InferenceServerClient (configs, metadata)
        self._headers = access.grpc_headers(admin_key)
        self._ttl = ttl
        self._entries: dict[str, ModelEntry] = {}
        self._read_at = 0.0
        self._lock = asyncio.Lock()

    async def entries(self, *, fresh: bool = False) -> dict[str, ModelEntry]:
        async with self._lock:
            if fresh or not self._entries or time.monotonic() - self._read_at > self._ttl:
                self._entries = await self._read()
                self._read_at = time.monotonic()
            return self._entries

    async def get(self, model: str) -> ModelEntry | None:
        entries = await self.entries()
        if model not in entries:  # loaded since the last read?
            entries = await self.entries(fresh=True)
        return entries.get(model)

    async def _ask(self, call, name: str) -> dict[str, Any]:
        try:
            return await call()
        except Exception as e:  # noqa: BLE001 - tritonclient's and grpc's errors become ours
            raise from_triton(e, model=name) from None

    async def _config(self, name: str) -> dict[str, Any]:
        return (
            await self._ask(lambda: self._triton.get_model_config(name, as_json=True, headers=self._headers), name)
        )["config"]

    async def _read(self) -> dict[str, ModelEntry]:
        entries = {}
        for info in await self._client.models():
            if not info.ready:
                continue
            try:
                entry = await self._from_config(info) if self._headers else None
            except AccessDenied:
                entry = None  # a wrong key: the open APIs still serve the page
            entries[info.id] = entry or await self._from_metadata(info)
        return entries

    async def _from_config(self, info: ModelInfo) -> ModelEntry:
        config = await self._config(info.id)
        inputs = {i["name"] for i in config.get("input", [])}
        image_model = step = None
        cached = [info.id] if _caches(config) else []
        if config.get("platform") == "ensemble" and ENCODED_IMAGE.name in inputs:
            # the image step is the one that makes the result (a request check may run before it), possibly inside
            # a nested ensemble (the one holding the response cache): follow RESULT_BYTES down to a python step
            node = config
            for _ in range(4):
                maker = next(
                    (
                        s["model_name"]
                        for s in node.get("ensemble_scheduling", {}).get("step", [])
                        if ENCODED_RESULT.name in s.get("output_map", {})
                    ),
                    None,
                )
                if maker is None:
                    break
                node = await self._config(maker)
                if _caches(node):
                    cached.append(maker)
                if node.get("platform") != "ensemble":
                    image_model = maker
                    break
            if image_model is not None:
                params = {k: v.get("string_value", "") for k, v in node.get("parameters", {}).items()}
                step = StepConfig.from_parameters(params)
        return ModelEntry(
            info=info,
            image_model=image_model,
            step=step,
            options=_options(inputs),
            cache_models=tuple(cached[:1]) or (info.id,),
        )

    async def _from_metadata(self, info: ModelInfo) -> ModelEntry:
        meta = await self._ask(lambda: self._triton.get_model_metadata(info.id, as_json=True), info.id)
        inputs = {i["name"] for i in meta.get("inputs", [])}
        desc = _descriptor(info.id)
        step = None
        if ENCODED_IMAGE.name in inputs and desc is not None and not desc.is_video_window:
            step = StepConfig.from_descriptor(desc, net_model=info.id)
        cached = (info.id,) if desc is None or desc.is_video_window else (info.id, _cached_model(desc, info.id))
        return ModelEntry(
            info=info,
            image_model=None,
            step=step,
            options=_options(inputs),
            step_source="descriptors",
            cache_models=cached,
        )


def _caches(config: dict[str, Any]) -> bool:
    return bool(config.get("response_cache", {}).get("enable"))


def _cached_model(desc, model: str) -> str:
    return desc.cached_model if model == desc.id else desc.int8_cached_model


def _options(inputs: set[str]) -> tuple[str, ...]:
    return tuple(o.name for t, o in _BY_TENSOR.items() if t in inputs)


def _descriptor(model: str):
    """The descriptor of a client-facing name: a model id or its INT8 ensemble."""
    return REGISTRY.get(model) or next((d for d in REGISTRY.values() if d.int8_ensemble == model), None)


__all__ = ["Catalog", "ModelEntry"]
