"""config.pbtxt text for every Triton model, generated from the descriptors (never written by hand).

Everything here is torch-free and deterministic, so the generated text can be compared byte for byte (golden tests,
idempotent rebuilds).
"""

from __future__ import annotations

from stylize.descriptors import ENCODED_IMAGE, ENCODED_RESULT, ModelDescriptor, TensorSpec
from stylize.server.steps import tiling
from stylize.server.steps.imaging import Limits
from stylize.server.steps.pipeline import StepConfig

NUM_VERSIONS = 2  # the newest two versions stay servable: a rebuild with new weights never breaks pinned clients


def _triton_type(dtype: str) -> str:
    return "TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"


def _tensors(key: str, specs: list[TensorSpec], *, optional: set[str] = frozenset()) -> str:
    items = ",\n".join(
        f'  {{ name: "{t.name}" data_type: {_triton_type(t.dtype)} dims: [ {", ".join(map(str, t.dims))} ]'
        + (" optional: true" if t.name in optional else "") + " }"
        for t in specs
    )
    return f"{key} [\n{items}\n]\n"


def _parameters(params: dict[str, str]) -> str:
    return "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in sorted(params.items())
    )


def describe(desc: ModelDescriptor, weights_status: str) -> dict[str, str]:
    """Parameters every model of a descriptor carries, so `stylize models` can read them from the server."""
    return {
        "stylize_id": desc.id,
        "task": desc.task,
        "scale": str(desc.scale),
        "weights": weights_status,
        "license": desc.weights.license,
    }


def net_config(desc: ModelDescriptor, *, weights_status: str, threads: int, instances: int = 1,
               model_name: str | None = None) -> str:
    """The network model (ONNX Runtime backend); ``model_name`` defaults to ``desc.net_model`` (INT8: int8_model).

    One request per execution on CPU: measured on this 2-core CPU, a batch of 2 costs 2-15 % more per image than two
    batches of 1 for every network (in-process ONNX Runtime, 128-512 px), and served side by side with 2 requests in
    flight the unbatched model was faster (animevideo_x4 128²: served / ONNX Runtime 0.98 vs 0.91 with the
    batcher). Requests still carry batches of their own (``max_batch_size``): tiles, frames. The config says so
    explicitly with a preferred batch size of 1 (every execution takes one request) rather than by leaving the
    scheduler out: NVIDIA's native ONNX Runtime backend auto-completes a batching model without a scheduler with a
    default dynamic batcher. The GPU (TensorRT) config keeps a real batcher: there batching is what fills the device.
    """
    warm = desc.warmup_size
    warm_dims = ([desc.window] if desc.window else []) + [warm, warm, 3]
    params = describe(desc, weights_status) | {
        "intra_op_thread_count": str(threads),
        "inter_op_thread_count": "1",
    }
    return (
        f'name: "{model_name or desc.net_model}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", [desc.net_input])
        + _tensors("output", [desc.net_output])
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        "dynamic_batching { preferred_batch_size: [ 1 ] }\n"
        f"version_policy: {{ latest: {{ num_versions: {NUM_VERSIONS} }} }}\n"
        + _parameters(params)
        + "model_warmup [\n"
        f'  {{ name: "zeros_{warm}" batch_size: 1 inputs {{ key: "{desc.net_input.name}" value: '
        f'{{ data_type: {_triton_type(desc.net_input.dtype)} dims: [ {", ".join(map(str, warm_dims))} ] '
        "zero_data: true } } }\n"
        "]\n"
    )


# Image steps: two instances, so one image decodes/encodes while another is in the network. On CPU each runs the
# network in its own process (steps/network.py) with threads // instances intra-op threads, so instances x threads
# stays within the cores the build was told about. Measured on this 2-core machine, served side by side in one run
# (PNG in/out, 2 in flight; served / in-process ONNX Runtime at 2 threads): animevideo_x4 128² 2 x 1 thread 0.95
# (INT8 0.99), 1 x 2 threads 0.92 (INT8 0.78); esrgan_anime_x4 128² 2 x 1 1.02 (INT8 1.57), 1 x 2 1.00 (INT8 1.07).
# Reproduce: python -m loadtest.step_runtime_ab [model side].
IMAGE_STEP_INSTANCES = 2


def image_config(desc: ModelDescriptor, *, weights_status: str, net_model: str | None = None,
                 name: str | None = None, limits: Limits = Limits(), tile_size: int | None = None,
                 tile_overlap: int | None = None, instances: int = IMAGE_STEP_INSTANCES, threads: int = 2,
                 net_runtime: str | None = None) -> str:
    """The python step of an image ensemble (decode -> tiles through the network -> encode).

    ``net_model`` defaults to ``desc.net_model`` (GPU: ``desc.trt_model``, INT8: ``desc.int8_model``); ``name`` to
    ``desc.image_model`` (INT8: ``desc.int8_image_model``). Tile size/overlap override the descriptor's defaults.
    On CPU the step runs the network's ONNX file itself with ``threads // instances`` intra-op threads per instance
    (``threads``: the cores a model may use, the build's --threads; one instance if that is 1); the GPU step calls
    the TensorRT plan by BLS. ``net_runtime`` overrides that choice (side-by-side experiments: loadtest/).
    """
    on_gpu = (net_model or desc.net_model) == desc.trt_model
    if not on_gpu:
        instances = max(1, min(instances, threads))  # one core: one instance
    step = StepConfig.from_descriptor(desc, net_model=net_model, limits=limits, tile_size=tile_size,
                                      tile_overlap=tile_overlap,
                                      tiles_per_call=None if on_gpu else tiling.CPU_TILES_PER_CALL,
                                      net_runtime=net_runtime or ("triton" if on_gpu else "onnxruntime"),
                                      net_threads=max(1, threads // instances))
    params = describe(desc, weights_status) | step.parameters()
    return (
        f'name: "{name or desc.image_model}"\n'
        'backend: "python"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", [ENCODED_IMAGE, *(o.tensor for o in desc.options)], optional=_option_names(desc))
        + _tensors("output", [ENCODED_RESULT])
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        + _parameters(params)
    )


def _option_names(desc: ModelDescriptor) -> set[str]:
    return {o.tensor.name for o in desc.options}


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}'


def ensemble_config(desc: ModelDescriptor, *, weights_status: str, net_model: str | None = None,
                    name: str | None = None, image_model: str | None = None) -> str:
    """The client-facing model: the image step (which calls the network) or the bare network for frame windows.

    ``name`` defaults to ``desc.id``. Image ensembles route through ``image_model`` (default: ``desc.image_model``,
    or ``desc.int8_image_model`` when ``net_model`` is ``desc.int8_model``); which network that step calls is in
    its own config (:func:`image_config`). Windowed models route straight to ``net_model`` (default
    ``desc.net_model``; a GPU repository passes ``desc.trt_model``). Image ensembles enable Triton's response cache
    (used when the server runs with ``--cache-config``); the cache key is the inputs, so the options that change the
    result are optional inputs as well as request parameters (parameters are not part of the key).
    """
    net_model = net_model or desc.net_model
    if desc.window:
        steps = [_step(net_model, {desc.net_input.name: desc.net_input.name},
                       {desc.net_output.name: desc.net_output.name})]
        inputs, optional, cache = [desc.ensemble_input], set(), ""
    else:
        image_model = image_model or (desc.int8_image_model if net_model == desc.int8_model else desc.image_model)
        inputs = [ENCODED_IMAGE, *(o.tensor for o in desc.options)]
        optional = _option_names(desc)
        steps = [_step(image_model, {t.name: t.name for t in inputs}, {ENCODED_RESULT.name: ENCODED_RESULT.name})]
        cache = "response_cache { enable: true }\n"
    return (
        f'name: "{name or desc.id}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", inputs, optional=optional)
        + _tensors("output", [desc.ensemble_output])
        + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
        + cache
        + _parameters(describe(desc, weights_status))
    )
