"""config.pbtxt text for every Triton model, generated from the descriptors (never written by hand).

Everything here is torch-free and deterministic, so the generated text can be compared byte for byte (golden tests,
idempotent rebuilds).
"""

from __future__ import annotations

from collections.abc import Mapping

from stylize.contract import tiling
from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MODELS,
    REQUEST_CHECK_MODEL,
    SERVED_VERSIONS,
    ModelDescriptor,
    TensorSpec,
)
from stylize.contract.step import IN_PROCESS_RUNTIMES, PRECISIONS, Limits, StepConfig
from stylize.engine.model_runner import DEFAULT_MODEL_FILENAME, MAX_REQUEST_PIXELS
from stylize.engine.ov_runner import PRECISION_PARAMETER

NUM_VERSIONS = 2  # the newest two versions stay servable: a rebuild with new weights never breaks pinned clients
# Backends of the CPU networks (the image step runs the same runtime in its own process): OpenVINO by default, ONNX
# Runtime on request (stylize build --cpu-runtime onnxruntime). docs/performance.md has the side-by-side numbers.
CPU_RUNTIMES = IN_PROCESS_RUNTIMES
DEFAULT_CPU_RUNTIME = "openvino"


def _triton_type(dtype: str) -> str:
    return "TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"


def _tensors(key: str, specs: list[TensorSpec], *, optional: set[str] = frozenset(), batch_dim: bool = False) -> str:
    """``batch_dim``: the model does not batch (max_batch_size 0) and the batch is the first of its dims."""
    lead = (-1,) if batch_dim else ()
    items = ",\n".join(
        f'  {{ name: "{t.name}" data_type: {_triton_type(t.dtype)} dims: [ {", ".join(map(str, lead + t.dims))} ]'
        + (" optional: true" if t.name in optional else "")
        + " }"
        for t in specs
    )
    return f"{key} [\n{items}\n]\n"


def _parameters(params: dict[str, str]) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in sorted(params.items()))


def describe(
    desc: ModelDescriptor,
    weights_status: str,
    weights_license: str | None = None,
    weights_versions: Mapping[int, str] | None = None,
) -> dict[str, str]:
    """Parameters every model of a descriptor carries, so `stylize models` can read them from the server.
    ``weights_status`` / ``weights_license``: those of the version served by default, the newest (its manifest); the
    license defaults to the descriptor's. ``weights_versions``: the status of every version of the network on disk
    (``weights_versions`` "3:real,2:real,1:untrained"): a pinned version's label is its own, not the newest's."""
    params = {
        "stylize_id": desc.id,
        "task": desc.task,
        "scale": str(desc.scale),
        "weights": weights_status,
        "license": weights_license or desc.weights.license,
    }
    if weights_versions:
        params["weights_versions"] = format_weights_versions(weights_versions)
    return params


def format_weights_versions(statuses: Mapping[int, str]) -> str:
    return ",".join(f"{v}:{statuses[v]}" for v in sorted(statuses, reverse=True))


def net_config(
    desc: ModelDescriptor,
    *,
    weights_status: str,
    threads: int,
    instances: int = 1,
    model_name: str | None = None,
    weights_license: str | None = None,
    runtime: str = DEFAULT_CPU_RUNTIME,
    precision: str = "fp32",
) -> str:
    """The network model on CPU; ``model_name`` defaults to ``desc.net_model`` (INT8: int8_model). ``runtime``: the
    backend (one of :data:`CPU_RUNTIMES`), ``threads`` per instance; ``precision`` (OpenVINO: fp32 or bf16, that of
    an INT8 graph's float parts) is recorded as the parameter ``precision`` and, for bf16, asked for with the native
    OpenVINO backend's ``HINT_BF16``.

    OpenVINO: ``max_batch_size: 0`` with the batch as the first of the dims, ``default_model_filename: "model.onnx"``
    and the native backend's parameter names (stylize.engine.ov_runner): that backend fixes a batching model's batch
    at max_batch_size and fails or pads smaller ones, while this graph takes any batch (and the runs are one request
    per execution anyway, see below). ``instances`` instances share ``NUM_STREAMS = instances`` streams of
    ``INFERENCE_NUM_THREADS = instances x threads`` threads natively (one request per stream).

    One request per execution on CPU: a batch costs more per image than single requests on every network here, served
    or in process (docs/decisions.md#one-request-per-execution). Requests still carry batches of their own
    (``max_batch_size``): tiles, frames. The config says so explicitly with a preferred batch size of 1 (every
    execution takes one request) rather than by leaving the scheduler out: NVIDIA's native ONNX Runtime backend
    auto-completes a batching model without a scheduler with a default dynamic batcher. The GPU (TensorRT) config
    keeps a real batcher: there batching is what fills the device.
    """
    if runtime not in CPU_RUNTIMES or precision not in PRECISIONS:
        raise ValueError(
            f"runtime {runtime!r} / precision {precision!r}: expected one of {', '.join(CPU_RUNTIMES)} / "
            f"{', '.join(PRECISIONS)}"
        )
    if runtime == "openvino":
        return _openvino_net_config(
            desc,
            weights_status=weights_status,
            threads=threads,
            instances=instances,
            model_name=model_name,
            weights_license=weights_license,
            precision=precision,
        )
    if precision != "fp32":
        raise ValueError(f"ONNX Runtime serves these networks in fp32 on CPU, not {precision}")
    warm = desc.checks.warmup_size
    warm_dims = ([desc.window] if desc.window else []) + [warm, warm, 3]
    params = describe(desc, weights_status, weights_license) | {
        "intra_op_thread_count": str(threads),
        "inter_op_thread_count": "1",
        PRECISION_PARAMETER: precision,
        MAX_REQUEST_PIXELS: str(desc.max_request_pixels),
    }
    return (
        f'name: "{model_name or desc.net_model}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {desc.serving.max_batch_size}\n"
        + _tensors("input", [desc.net_input])
        + _tensors("output", [desc.net_output])
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        "dynamic_batching { preferred_batch_size: [ 1 ] }\n"
        f"version_policy: {{ latest: {{ num_versions: {NUM_VERSIONS} }} }}\n"
        + _parameters(params)
        + _warmup(desc, warm, warm_dims)
    )


def _warmup(desc: ModelDescriptor, warm: int, dims: list[int]) -> str:
    """One zero-filled warm-up request of the network's input (``dims`` as the config's input has them)."""
    return (
        "model_warmup [\n"
        f'  {{ name: "zeros_{warm}" batch_size: 1 inputs {{ key: "{desc.net_input.name}" value: '
        f"{{ data_type: {_triton_type(desc.net_input.dtype)} dims: [ {', '.join(map(str, dims))} ] "
        "zero_data: true } } }\n"
        "]\n"
    )


def _openvino_net_config(
    desc: ModelDescriptor,
    *,
    weights_status: str,
    threads: int,
    instances: int,
    model_name: str | None,
    weights_license: str | None,
    precision: str,
) -> str:
    warm = desc.checks.warmup_size
    warm_dims = [1] + ([desc.window] if desc.window else []) + [warm, warm, 3]
    params = (
        describe(desc, weights_status, weights_license)
        | {
            PRECISION_PARAMETER: precision,
            MAX_REQUEST_PIXELS: str(desc.max_request_pixels),
            "NUM_STREAMS": str(instances),
            "INFERENCE_NUM_THREADS": str(instances * threads),
            "PERFORMANCE_HINT": "LATENCY" if instances == 1 else "THROUGHPUT",
        }
        | ({"HINT_BF16": "YES"} if precision == "bf16" else {})
    )
    return (
        f'name: "{model_name or desc.net_model}"\n'
        'backend: "openvino"\n'
        f'default_model_filename: "{DEFAULT_MODEL_FILENAME}"\n'
        "max_batch_size: 0\n"
        + _tensors("input", [desc.net_input], batch_dim=True)
        + _tensors("output", [desc.net_output], batch_dim=True)
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        f"version_policy: {{ latest: {{ num_versions: {NUM_VERSIONS} }} }}\n"
        + _parameters(params)
        + _warmup(desc, warm, warm_dims)
    )


# Image steps: two instances, so one image decodes/encodes while another is in the network. On CPU each runs the
# network in its own process (steps/network.py) with threads // instances intra-op threads, so instances x threads
# stays within the cores the build was told about: the fastest served layout, for ONNX Runtime and OpenVINO
# (docs/decisions.md#image-step-layout). A step handles one request at a time, so OpenVINO streams inside one
# step would only serve tiles run concurrently: one stream each.
IMAGE_STEP_INSTANCES = 2


def image_config(
    desc: ModelDescriptor,
    *,
    weights_status: str,
    net_model: str | None = None,
    name: str | None = None,
    limits: Limits = Limits(),
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    instances: int = IMAGE_STEP_INSTANCES,
    threads: int = 2,
    net_runtime: str | None = None,
    weights_license: str | None = None,
    precision: str = "fp32",
) -> str:
    """The python step of an image ensemble (decode -> tiles through the network -> encode).

    ``net_model`` defaults to ``desc.net_model`` (GPU: ``desc.trt_model``, INT8: ``desc.int8_model``); ``name`` to
    ``desc.image_model`` (INT8: ``desc.int8_image_model``). Tile size/overlap override the descriptor's defaults.
    On CPU the step runs the network's ONNX file itself with ``threads // instances`` intra-op threads per instance
    (``threads``: the cores a model may use, the build's --threads; one instance if that is 1); the GPU step calls
    the TensorRT plan by BLS. ``net_runtime``: the CPU runtime (default :data:`DEFAULT_CPU_RUNTIME`), or "triton"
    for BLS (side-by-side experiments: loadtest/); ``precision``: that of the in-process network (OpenVINO).

    No response cache here: a backend model's cache also stores its error responses, and replays them as
    successes without outputs (seen on 2.51: a refused image sent twice came back empty the second time). The
    cache is on :func:`cached_config`'s ensemble around this step, reached only after the request check.
    """
    on_gpu = (net_model or desc.net_model) == desc.trt_model
    if not on_gpu:
        instances = max(1, min(instances, threads))  # one core: one instance
    step = StepConfig.from_descriptor(
        desc,
        net_model=net_model,
        limits=limits,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        tiles_per_call=None if on_gpu else tiling.CPU_TILES_PER_CALL,
        max_tile_side=desc.serving.gpu_max_side if on_gpu else None,
        net_runtime=net_runtime or ("triton" if on_gpu else DEFAULT_CPU_RUNTIME),
        net_threads=max(1, threads // instances),
        net_precision="fp32" if on_gpu else precision,
    )
    params = describe(desc, weights_status, weights_license) | step.parameters()
    return (
        f'name: "{name or desc.image_model}"\n'
        'backend: "python"\n'
        f"max_batch_size: {desc.serving.max_batch_size}\n"
        + _tensors(
            "input",
            [ENCODED_IMAGE, *(o.tensor for o in desc.options), SERVED_VERSIONS],
            optional=_option_names(desc) | {SERVED_VERSIONS.name},
        )
        + _tensors("output", [ENCODED_RESULT])
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        + _parameters(params)
    )


def cached_config(
    desc: ModelDescriptor, *, name: str, image_model: str, weights_status: str, weights_license: str | None = None
) -> str:
    """The ensemble between the request check and the image step, with Triton's response cache on (used when the
    server runs with ``--cache-config``).

    Why a nested ensemble: the client-facing ensemble's own cache would be looked up before any step runs, so a
    request with parameters (not part of the key) could be answered from the entry of the same image sent with
    other options before the request check refused it; and a backend model's cache (the image step's) keeps error
    responses too. An ensemble caches only successful answers (Triton core, ensemble_scheduler.cc), and this one is
    reached only with SERVED_VERSIONS, after the check. The key is its inputs: the image, the option inputs and
    SERVED_VERSIONS (the newest served version of each network, which the step runs when no NET_VERSION is sent:
    an unpinned answer is never that of another version).
    """
    inputs = [ENCODED_IMAGE, *(o.tensor for o in desc.options), SERVED_VERSIONS]
    steps = [_step(image_model, {t.name: t.name for t in inputs}, {ENCODED_RESULT.name: ENCODED_RESULT.name})]
    return (
        f'name: "{name}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {desc.serving.max_batch_size}\n"
        + _tensors("input", inputs, optional=_option_names(desc))
        + _tensors("output", [ENCODED_RESULT])
        + "ensemble_scheduling {\n  step [\n"
        + ",\n".join(steps)
        + "\n  ]\n}\n"
        + "response_cache { enable: true }\n"
        + _parameters(describe(desc, weights_status, weights_license))
    )


def request_check_config() -> str:
    """The first step of every image ensemble (steps/request_check): refuses request parameters, answers
    SERVED_VERSIONS (the newest served version of each image network). One model for all ensembles; cheap (no
    decode, one readiness question per network), so one instance batching whatever arrives."""
    return (
        f'name: "{REQUEST_CHECK_MODEL}"\n'
        'backend: "python"\n'
        f"max_batch_size: {max(d.serving.max_batch_size for d in MODELS)}\n"
        + _tensors("input", [ENCODED_IMAGE])
        + _tensors("output", [SERVED_VERSIONS])
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        "dynamic_batching { }\n"
    )


def _option_names(desc: ModelDescriptor) -> set[str]:
    return {o.tensor.name for o in desc.options}


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}'


def ensemble_config(
    desc: ModelDescriptor,
    *,
    weights_status: str,
    net_model: str | None = None,
    name: str | None = None,
    cached_model: str | None = None,
    weights_license: str | None = None,
    weights_versions: Mapping[int, str] | None = None,
    runtime: str = DEFAULT_CPU_RUNTIME,
) -> str:
    """The client-facing model: the image step (which calls the network) or the bare network for frame windows.

    ``name`` defaults to ``desc.id``. Image ensembles route through ``image_model`` (default: ``desc.image_model``,
    or ``desc.int8_image_model`` when ``net_model`` is ``desc.int8_model``); which network that step calls is in
    its own config (:func:`image_config`). Windowed models route straight to ``net_model`` (default
    ``desc.net_model``; a GPU repository passes ``desc.trt_model``). Image ensembles first pass the request through
    :data:`REQUEST_CHECK_MODEL`, which refuses request parameters, then through ``cached_model`` (default
    ``desc.cached_model``, INT8 ``desc.int8_cached_model``: :func:`cached_config`, the response cache), which runs
    the image step: the cache key is the inputs, so the options that change the result are optional inputs, and
    parameters never reach the cache.
    ``runtime``: the CPU networks' backend. A windowed ensemble calling an OpenVINO network (max_batch_size 0, see
    :func:`net_config`) does not batch either (Triton requires it), its batch is the first of the dims: the same
    tensors for a client.
    """
    net_model = net_model or desc.net_model
    batching = not (desc.window and runtime == "openvino" and net_model != desc.trt_model)
    if desc.window:
        steps = [
            _step(net_model, {desc.net_input.name: desc.net_input.name}, {desc.net_output.name: desc.net_output.name})
        ]
        inputs, optional, cache = [desc.ensemble_input], set(), ""
    else:
        cached_model = cached_model or (desc.int8_cached_model if net_model == desc.int8_model else desc.cached_model)
        inputs = [ENCODED_IMAGE, *(o.tensor for o in desc.options)]
        optional = _option_names(desc)
        checked = SERVED_VERSIONS.name.lower()  # an ensemble-internal tensor
        steps = [
            _step(REQUEST_CHECK_MODEL, {ENCODED_IMAGE.name: ENCODED_IMAGE.name}, {SERVED_VERSIONS.name: checked}),
            _step(
                cached_model,
                {**{t.name: t.name for t in inputs}, SERVED_VERSIONS.name: checked},
                {ENCODED_RESULT.name: ENCODED_RESULT.name},
            ),
        ]
        cache = ""  # on the nested ensemble (cached_config)
    return (
        f'name: "{name or desc.id}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {desc.serving.max_batch_size if batching else 0}\n"
        + _tensors("input", inputs, optional=optional, batch_dim=not batching)
        + _tensors("output", [desc.ensemble_output], batch_dim=not batching)
        + "ensemble_scheduling {\n  step [\n"
        + ",\n".join(steps)
        + "\n  ]\n}\n"
        + cache
        + _parameters(describe(desc, weights_status, weights_license, weights_versions))
    )
