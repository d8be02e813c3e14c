"""config.pbtxt text for every Triton model, generated from the descriptors (never written by hand).

Everything here is torch-free and deterministic, so the generated text can be compared byte for byte (golden tests,
idempotent rebuilds).
"""

from __future__ import annotations

from stylize.descriptors import ENCODED_IMAGE, ENCODED_RESULT, FRAME_IN, FRAME_OUT, GEOMETRY, ModelDescriptor, TensorSpec

NUM_VERSIONS = 2  # the newest two versions stay servable: a rebuild with new weights never breaks pinned clients


def _triton_type(dtype: str) -> str:
    return "TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"


def _tensors(key: str, specs: list[TensorSpec]) -> str:
    items = ",\n".join(
        f'  {{ name: "{t.name}" data_type: {_triton_type(t.dtype)} dims: [ {", ".join(map(str, t.dims))} ] }}'
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
    """The network model (ONNX Runtime backend); ``model_name`` defaults to ``desc.net_model`` (INT8: int8_model)."""
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
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        f"version_policy: {{ latest: {{ num_versions: {NUM_VERSIONS} }} }}\n"
        + _parameters(params)
        + "model_warmup [\n"
        f'  {{ name: "zeros_{warm}" batch_size: 1 inputs {{ key: "{desc.net_input.name}" value: '
        f'{{ data_type: {_triton_type(desc.net_input.dtype)} dims: [ {", ".join(map(str, warm_dims))} ] '
        "zero_data: true } } }\n"
        "]\n"
    )


def pre_config(desc: ModelDescriptor, *, weights_status: str, max_pixels: int, max_bytes: int) -> str:
    params = describe(desc, weights_status) | {
        "size_multiple": str(desc.size_multiple),
        "min_side": "1",
        "max_pixels": str(max_pixels),
        "max_bytes": str(max_bytes),
    }
    return (
        f'name: "{desc.pre_model}"\n'
        'backend: "python"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", [ENCODED_IMAGE])
        + _tensors("output", [FRAME_IN, GEOMETRY])
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + _parameters(params)
    )


def post_config(desc: ModelDescriptor, *, weights_status: str) -> str:
    params = describe(desc, weights_status) | {"output_format": "PNG"}
    return (
        f'name: "{desc.post_model}"\n'
        'backend: "python"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", [FRAME_OUT, GEOMETRY])
        + _tensors("output", [ENCODED_RESULT])
        + "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
        + _parameters(params)
    )


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}'


def ensemble_config(desc: ModelDescriptor, *, weights_status: str, net_model: str | None = None,
                    name: str | None = None) -> str:
    """The client-facing model: decode -> network -> encode (or the bare network for frame windows).

    ``net_model`` defaults to the ONNX model; a GPU repository routes to ``desc.trt_model`` instead.
    ``name`` defaults to ``desc.id``; the INT8 variant is ``desc.int8_ensemble`` routed to ``desc.int8_model``.
    """
    net_model = net_model or desc.net_model
    if desc.window:
        steps = [_step(net_model, {desc.net_input.name: desc.net_input.name},
                       {desc.net_output.name: desc.net_output.name})]
    else:
        # internal tensors are named after the producing step's outputs, lower-cased to tell them apart
        steps = [
            _step(desc.pre_model, {ENCODED_IMAGE.name: ENCODED_IMAGE.name},
                  {FRAME_IN.name: "frame", GEOMETRY.name: "geometry"}),
            _step(net_model, {desc.net_input.name: "frame"}, {desc.net_output.name: "frame_out"}),
            _step(desc.post_model, {FRAME_OUT.name: "frame_out", GEOMETRY.name: "geometry"},
                  {ENCODED_RESULT.name: ENCODED_RESULT.name}),
        ]
    return (
        f'name: "{name or desc.id}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {desc.max_batch_size}\n"
        + _tensors("input", [desc.ensemble_input])
        + _tensors("output", [desc.ensemble_output])
        + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
        + _parameters(describe(desc, weights_status))
    )
