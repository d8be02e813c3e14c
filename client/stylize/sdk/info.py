"""What the server says about its models: client-facing models with task, scale, versions and weights (ModelInfo),
the server's health, and the network behind a model for raw frames (RawModel from its metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stylize.contract.descriptors import (
    REGISTRY,
    ModelDescriptor,
)
from stylize.contract.frames import RawModel

# ---------------------------------------------------------------------------------------------------------------
# Listing and health
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    id: str  # what you pass as model=
    task: str  # style | sr | vsr
    scale: int
    weights: str  # real | untrained ("?" without the admin key: the status is in the model config)
    license: str
    versions: tuple[int, ...]  # ready versions of the network (pin one with version=)
    ready: bool  # the client-facing model is ready
    title: str = ""
    # the weights status of each version of the network on disk ({3: "real", 1: "untrained"}); ``weights`` is the
    # newest's, which runs unless a version is pinned. Empty from a server whose build did not record it
    weights_versions: dict[int, str] = field(default_factory=dict)

    @property
    def served_weights(self) -> dict[int, str]:
        """The weights status of each ready version (newest first), or {} when the build did not record them."""
        return {v: self.weights_versions[v] for v in sorted(self.versions, reverse=True) if v in self.weights_versions}


@dataclass(frozen=True)
class Health:
    url: str
    live: bool
    ready: bool
    server_version: str | None
    models: dict[str, str]  # "name/version" -> state (READY, UNAVAILABLE, LOADING, ...)
    seconds: float  # time the checks took
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.live and self.ready


def model_infos(index: list[dict], configs: dict[str, dict]) -> list[ModelInfo]:
    """Group Triton models by their `stylize_id` parameter; one ModelInfo per client-facing model."""
    ready_versions: dict[str, list[int]] = {}
    states: dict[str, set[str]] = {}
    for entry in index:
        states.setdefault(entry["name"], set()).add(entry.get("state", ""))
        if entry.get("state") == "READY" and entry.get("version"):
            ready_versions.setdefault(entry["name"], []).append(int(entry["version"]))
    infos = []
    for name, config in sorted(configs.items()):
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if not params.get("stylize_id") or not _client_facing(name):
            continue  # a composing model (python step, network, the nested cached ensemble), not a client-facing one
        desc = descriptor_of(name)
        infos.append(
            ModelInfo(
                id=name,
                task=params.get("task", ""),
                scale=int(params.get("scale", "0") or 0),
                weights=params.get("weights", ""),
                weights_versions=parse_weights_versions(params.get("weights_versions", "")),
                license=params.get("license", ""),
                versions=tuple(sorted(ready_versions.get(_raw_name(name), ()))),
                ready="READY" in states.get(name, ()),
                title=(desc.title + (" (INT8)" if name != desc.id else "")) if desc is not None else "",
            )
        )
    return infos


def parse_weights_versions(text: str) -> dict[int, str]:
    """``"3:real,1:untrained"`` (the config parameter the build writes) -> {3: "real", 1: "untrained"}."""
    out: dict[int, str] = {}
    for item in text.split(","):
        version, _, status = item.strip().partition(":")
        if version.isdigit() and status:
            out[int(version)] = status
    return out


def descriptor_of(model: str) -> ModelDescriptor | None:
    """The descriptor behind a client-facing name: a model id or its INT8 variant's ensemble."""
    if model in REGISTRY:
        return REGISTRY[model]
    for desc in REGISTRY.values():
        if model == getattr(desc, "int8_ensemble", None):
            return desc
    return None


def version_arg(version: int | str | None) -> str:
    return "" if version is None else str(version)


def _raw_name(model: str) -> str:
    """Network model behind a client-facing id (a name that is not an id is taken as a Triton model name)."""
    desc = descriptor_of(model)
    if desc is None:
        return model
    return desc.net_model if model == desc.id else desc.int8_model


def raw_candidates(model: str) -> tuple[str, ...]:
    """The network models that can serve ``model``'s raw frames, in order: a CPU pod loads ``<id>_net``, a GPU pod
    ``<id>_trt`` only (k8s/overlays/gpu). The client takes the first one the server says is ready (an open API)."""
    desc = descriptor_of(model)
    if desc is None or model != desc.id:
        return (_raw_name(model),)
    return (desc.net_model, desc.trt_model)


_CPU_PLATFORMS = ("onnxruntime_onnx", "openvino")  # what Triton's metadata says for the CPU network backends


def raw_model_from_metadata(model: str, metadata: dict) -> RawModel:
    """From the model metadata (an open API: the model config is an admin API, stylize.contract.access) and the descriptor.

    Shapes carry the batch axis (-1) when the model batches; the window is the frame axis of a 5-d input (the
    build may change it: with_window). The batch limit comes from the descriptor (the build writes it into the
    config from there); a network unknown to the descriptors gets one item per request. ONNX networks run on CPU
    instances here (one request per execution: tiles go one per call, see tiling); a TensorRT plan takes tile_batch.
    """
    from stylize.contract.descriptors import with_window
    from stylize.contract.tiling import CPU_TILES_PER_CALL

    desc = descriptor_of(model)
    inp, out = metadata["inputs"][0], metadata["outputs"][0]
    shape = [int(d) for d in inp.get("shape", [])]
    batching = len(shape) in (4, 5) and shape[0] == -1
    dims = shape[1:] if batching else shape
    window = dims[0] if len(dims) == 4 else None  # [T, H, W, 3]
    return RawModel(
        name=metadata["name"],
        input=desc.net_input.name if desc else inp["name"],
        output=desc.net_output.name if desc else out["name"],
        max_batch_size=(desc.serving.max_batch_size if desc else 1) if batching else 0,
        window=window,
        size_multiple=desc.network.size_multiple if desc else 1,
        min_size=desc.network.min_size if desc else 1,
        scale=desc.scale if desc else 1,
        tile_size=desc.serving.tiling.size if desc and desc.serving.tiling and not desc.window else None,
        tile_overlap=desc.serving.tile_overlap if desc else 16,
        tile_batch=desc.serving.tile_batch if desc else 1,
        tiles_per_call=CPU_TILES_PER_CALL if metadata.get("platform") in _CPU_PLATFORMS else None,
        max_side=desc.serving.gpu_max_side if desc and metadata.get("platform") == "tensorrt_plan" else None,
        max_request_pixels=(
            with_window(desc, window) if desc.window and window and window != desc.window else desc
        ).max_request_pixels
        if desc
        else None,
    )


def known_models() -> list[str]:
    """Every Triton model name the descriptors define (for listing and health without the admin key)."""
    names: list[str] = []
    for d in REGISTRY.values():
        names += [*d.triton_models, d.trt_model, d.int8_model, d.int8_ensemble]
        names += [] if d.window else [d.int8_image_model]
    return list(dict.fromkeys(names))


def _client_facing(name: str) -> bool:
    desc = descriptor_of(name)
    return desc is not None and name in (desc.id, desc.int8_ensemble)


def infos_from_metadata(metadata: dict[str, dict], ready: dict[str, bool]) -> list[ModelInfo]:
    """ModelInfo of the client-facing models found through the open APIs: no weights status (it is in the model
    config, an admin API): ``weights`` is "?"."""
    infos = []
    for name in sorted(n for n in metadata if _client_facing(n)):
        desc = descriptor_of(name)
        assert desc is not None  # _client_facing: a descriptor's name
        raw = metadata.get(_raw_name(name), {})
        infos.append(
            ModelInfo(
                id=name,
                task=desc.task,
                scale=desc.scale,
                weights="?",
                license=desc.weights.license,
                versions=tuple(sorted(int(v) for v in raw.get("versions", ()))),
                ready=ready.get(name, False),
                title=desc.title + (" (INT8)" if name != desc.id else ""),
            )
        )
    return infos
