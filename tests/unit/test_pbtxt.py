"""Every generated config.pbtxt parses as Triton's ModelConfig and agrees with its descriptor."""

import pytest
from google.protobuf import text_format
from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    MODELS,
    REGISTRY,
    REQUEST_CHECK_MODEL,
    SERVED_VERSIONS,
)
from stylize.contract.step import Limits, StepConfig
from stylize.contract.tiling import CPU_TILES_PER_CALL
from stylize_build import pbtxt
from tritonclient.grpc import model_config_pb2 as mc

pytestmark = pytest.mark.unit


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_net_config_matches_descriptor(desc):
    cfg = parse(pbtxt.net_config(desc, weights_status="real", threads=2, runtime="onnxruntime"))
    assert cfg.name == desc.net_model
    assert cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == desc.serving.max_batch_size
    assert [(i.name, list(i.dims)) for i in cfg.input] == [(desc.net_input.name, list(desc.net_input.dims))]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [(desc.net_output.name, list(desc.net_output.dims))]
    assert cfg.input[0].data_type == mc.TYPE_UINT8
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1]  # one request per execution (net_config)
    assert cfg.version_policy.latest.num_versions == pbtxt.NUM_VERSIONS
    assert cfg.parameters["weights"].string_value == "real"
    assert cfg.parameters["precision"].string_value == "fp32"
    warm = cfg.model_warmup[0].inputs[desc.net_input.name]
    assert len(warm.dims) == len(desc.net_input.dims) and warm.zero_data
    # no exporter-generated names (input.1, 307, ...)
    assert all(t.name.isidentifier() for t in [*cfg.input, *cfg.output])


# The parameters Triton's native OpenVINO backend reads (openvino_backend src/openvino.cc, ParseParameters)
NATIVE_OPENVINO_PARAMETERS = {
    "INFERENCE_NUM_THREADS",
    "COMPILATION_NUM_THREADS",
    "HINT_BF16",
    "NUM_STREAMS",
    "PERFORMANCE_HINT",
    "SKIP_OV_DYNAMIC_BATCHSIZE",
    "ENABLE_BATCH_PADDING",
    "RESHAPE_IO_LAYERS",
    "TARGET_DEVICE",
    "CPU_EXTENSION_PATH",
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_openvino_net_config_is_what_the_native_backend_reads(desc, precision):
    """The default CPU backend: the ONNX file by name, no batching (the native backend would fix the batch at
    max_batch_size), the batch first of the dims, the native parameter names, the precision recorded."""
    cfg = parse(pbtxt.net_config(desc, weights_status="real", threads=2, instances=1, precision=precision))
    assert (cfg.name, cfg.backend, cfg.default_model_filename) == (desc.net_model, "openvino", "model.onnx")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in cfg.input] == [(desc.net_input.name, [-1, *desc.net_input.dims])]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [(desc.net_output.name, [-1, *desc.net_output.dims])]
    upper = {k for k in cfg.parameters if k.isupper()}
    assert upper <= NATIVE_OPENVINO_PARAMETERS
    assert cfg.parameters["NUM_STREAMS"].string_value == "1"
    assert cfg.parameters["INFERENCE_NUM_THREADS"].string_value == "2"
    assert cfg.parameters["precision"].string_value == precision
    assert ("HINT_BF16" in cfg.parameters) == (precision == "bf16")
    if precision == "bf16":
        assert cfg.parameters["HINT_BF16"].string_value == "YES"  # the only value the native backend accepts
    warm = cfg.model_warmup[0]
    assert warm.batch_size == 1 and list(warm.inputs[desc.net_input.name].dims)[0] == 1
    assert len(warm.inputs[desc.net_input.name].dims) == len(desc.net_input.dims) + 1
    # two instances share two streams of the threads of both, natively (one request per stream)
    two = parse(pbtxt.net_config(desc, weights_status="real", threads=1, instances=2))
    assert (two.parameters["NUM_STREAMS"].string_value, two.parameters["INFERENCE_NUM_THREADS"].string_value) == (
        "2",
        "2",
    )
    with pytest.raises(ValueError, match="fp32"):
        pbtxt.net_config(desc, weights_status="real", threads=2, runtime="onnxruntime", precision="bf16")


def test_a_windowed_ensemble_over_an_openvino_network_does_not_batch_either():
    desc = REGISTRY["basicvsr_x4"]
    ov = parse(pbtxt.ensemble_config(desc, weights_status="real"))
    ort = parse(pbtxt.ensemble_config(desc, weights_status="real", runtime="onnxruntime"))
    trt = parse(pbtxt.ensemble_config(desc, weights_status="real", net_model=desc.trt_model))
    assert (ov.max_batch_size, list(ov.input[0].dims)) == (0, [-1, *desc.ensemble_input.dims])
    assert ort.max_batch_size == trt.max_batch_size == desc.serving.max_batch_size
    assert list(ort.input[0].dims) == list(desc.ensemble_input.dims)
    image = REGISTRY["animevideo_x4"]  # image ensembles reach the network through the step: unchanged
    assert parse(pbtxt.ensemble_config(image, weights_status="real")).max_batch_size == image.serving.max_batch_size


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_ensemble_wires_every_step(desc):
    cfg = parse(pbtxt.ensemble_config(desc, weights_status="untrained"))
    assert cfg.name == desc.id and cfg.platform == "ensemble"
    steps = [s.model_name for s in cfg.ensemble_scheduling.step]
    assert steps == ([desc.net_model] if desc.window else [REQUEST_CHECK_MODEL, desc.cached_model])
    assert set(steps) | {desc.id} <= set(desc.triton_models)
    assert cfg.input[0].name == desc.ensemble_input.name
    assert cfg.output[0].name == desc.ensemble_output.name
    # every internal tensor is produced before it is consumed, and the output is produced
    produced = {i.name for i in cfg.input}
    for s in cfg.ensemble_scheduling.step:
        assert set(s.input_map.values()) <= produced, s
        produced |= set(s.output_map.values())
    assert cfg.output[0].name in produced
    assert cfg.parameters["weights"].string_value == "untrained"
    # no response cache on the ensemble: it would be looked up before request_check could refuse parameters; the
    # nested ensemble behind the check holds it (test_the_cached_ensemble_runs_the_image_step_behind_the_cache)
    assert not cfg.response_cache.enable
    assert [i.name for i in cfg.input if i.optional] == [o.tensor.name for o in desc.options]
    if not desc.window:  # the cached step consumes what request_check produced: it runs after the check
        check, image = cfg.ensemble_scheduling.step
        assert image.input_map[SERVED_VERSIONS.name] == check.output_map[SERVED_VERSIONS.name]


@pytest.mark.parametrize("desc", [d for d in MODELS if not d.window], ids=lambda d: d.id)
def test_the_cached_ensemble_runs_the_image_step_behind_the_cache(desc):
    """The cache is on a nested ensemble, never on a backend model: Triton's backend-model cache stores error
    responses too (replayed as empty successes, seen on 2.51); an ensemble caches successful answers only."""
    cfg = parse(pbtxt.cached_config(desc, name=desc.cached_model, image_model=desc.image_model, weights_status="real"))
    assert cfg.name == desc.cached_model and cfg.platform == "ensemble" and cfg.response_cache.enable
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [desc.image_model]
    # the key: the image, the options, and the check's output (required: only the checked path reaches it)
    assert [(i.name, i.optional) for i in cfg.input] == [
        (ENCODED_IMAGE.name, False),
        *((o.tensor.name, True) for o in desc.options),
        (SERVED_VERSIONS.name, False),
    ]
    assert not parse(pbtxt.image_config(desc, weights_status="real")).response_cache.enable


def test_request_check_config():
    cfg = parse(pbtxt.request_check_config())
    assert cfg.name == REQUEST_CHECK_MODEL and cfg.backend == "python" and not cfg.response_cache.enable
    assert cfg.max_batch_size >= max(d.serving.max_batch_size for d in MODELS)
    assert [(i.name, i.data_type) for i in cfg.input] == [(ENCODED_IMAGE.name, mc.TYPE_STRING)]
    assert [(o.name, o.data_type) for o in cfg.output] == [(SERVED_VERSIONS.name, mc.TYPE_STRING)]


def test_image_ensembles_use_encoded_contract():
    for desc in MODELS:
        if desc.window:
            continue
        assert desc.ensemble_input == ENCODED_IMAGE and desc.ensemble_output == ENCODED_RESULT


def test_gpu_and_int8_route_through_their_image_step():
    desc = REGISTRY["esrgan_x4"]
    gpu = parse(pbtxt.image_config(desc, weights_status="real", net_model=desc.trt_model))
    assert gpu.name == desc.image_model and gpu.parameters["net_model"].string_value == desc.trt_model
    ens = parse(pbtxt.ensemble_config(desc, weights_status="real", name=desc.int8_ensemble, net_model=desc.int8_model))
    assert ens.name == desc.int8_ensemble
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [REQUEST_CHECK_MODEL, desc.int8_cached_model]
    step = parse(pbtxt.image_config(desc, weights_status="real", name=desc.int8_image_model, net_model=desc.int8_model))
    assert step.name == desc.int8_image_model and step.parameters["net_model"].string_value == desc.int8_model
    # tiles of a tiled image: one per call on CPU (fp32 and INT8), tile_batch per call on the GPU
    assert step.parameters["tiles_per_call"].string_value == str(CPU_TILES_PER_CALL) == "1"
    cpu = parse(pbtxt.image_config(desc, weights_status="real"))
    assert cpu.parameters["tiles_per_call"].string_value == "1"
    assert cpu.parameters["tile_batch"].string_value == str(desc.serving.tiling.batch)  # the pixel budget is unchanged
    assert gpu.parameters["tiles_per_call"].string_value == "0"  # 0: tile_batch
    # the network: in the step's process on CPU (fp32 and INT8), by BLS to the TensorRT plan on the GPU
    assert [c.parameters["net_runtime"].string_value for c in (cpu, step, gpu)] == ["openvino"] * 2 + ["triton"]
    vsr = REGISTRY["basicvsr_x4"]
    cfg = parse(pbtxt.ensemble_config(vsr, weights_status="real", net_model=vsr.trt_model))
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [vsr.trt_model]


@pytest.mark.parametrize("desc", [d for d in MODELS if not d.window], ids=lambda d: d.id)
def test_image_step_config_round_trips_its_settings(desc):
    limits = Limits(max_pixels=100, max_bytes=200, max_output_pixels=300)
    cfg = parse(pbtxt.image_config(desc, weights_status="real", limits=limits))
    assert cfg.name == desc.image_model and cfg.backend == "python"
    assert cfg.max_batch_size == desc.serving.max_batch_size
    assert [i.name for i in cfg.input] == [
        ENCODED_IMAGE.name,
        *(o.tensor.name for o in desc.options),
        SERVED_VERSIONS.name,
    ]
    assert [i.optional for i in cfg.input] == [False] + [True] * (len(desc.options) + 1)
    assert not cfg.response_cache.enable  # the cache is the nested ensemble's (cached_config): errors stay uncached
    assert [o.name for o in cfg.output] == [ENCODED_RESULT.name]
    step = StepConfig.from_parameters({k: v.string_value for k, v in cfg.parameters.items()})
    assert step == StepConfig.from_descriptor(
        desc, limits=limits, tiles_per_call=CPU_TILES_PER_CALL, net_runtime="openvino", net_threads=1
    )
    bf16 = parse(pbtxt.image_config(desc, weights_status="real", precision="bf16"))
    assert StepConfig.from_parameters({k: v.string_value for k, v in bf16.parameters.items()}).net_precision == "bf16"
    tiling = desc.serving.tiling
    assert (
        step.net_model == desc.net_model
        and step.tile_size == (tiling.size if tiling else None)
        and step.max_side == desc.serving.max_side
    )
    # build options override the descriptor's tile defaults (tiled models only)
    tuned = parse(pbtxt.image_config(desc, weights_status="real", tile_size=96, tile_overlap=8))
    assert tuned.parameters["tile_size"].string_value == ("96" if tiling else "0")


def test_registry_refuses_duplicates():
    from stylize.contract.descriptors import Registry

    with pytest.raises(ValueError, match="duplicate"):
        Registry((MODELS[0], MODELS[0]))


@pytest.mark.parametrize(("threads", "instances", "per_instance"), [(2, 2, 1), (4, 2, 2), (1, 1, 1), (8, 4, 2)])
def test_cpu_image_step_splits_the_cores_over_its_instances(threads, instances, per_instance):
    """Instances x intra-op threads never exceed the cores the build was given (one thread at least)."""
    desc = REGISTRY["animevideo_x4"]
    cfg = parse(
        pbtxt.image_config(
            desc, weights_status="real", threads=threads, instances=max(instances, pbtxt.IMAGE_STEP_INSTANCES)
        )
    )
    assert cfg.instance_group[0].count == instances
    assert cfg.parameters["net_threads"].string_value == str(per_instance)
    assert instances * per_instance <= threads


def test_step_config_refuses_an_unknown_network_runtime():
    with pytest.raises(ValueError, match="net_runtime"):
        StepConfig(model_id="m", net_model="m_net", scale=2, net_runtime="tensorflow")
    with pytest.raises(ValueError, match="net_precision"):
        StepConfig(model_id="m", net_model="m_net", scale=2, net_runtime="openvino", net_precision="fp16")


def test_the_ensemble_records_the_weights_of_every_version():
    """Issue 19: one config serves every version, so the label of each is written out; the SDK reads them back."""
    from stylize.commands.models import format_table
    from stylize.sdk.info import ModelInfo, parse_weights_versions

    desc = REGISTRY["animeganv2"]
    cfg = pbtxt.ensemble_config(desc, weights_status="real", weights_versions={1: "untrained", 3: "real", 2: "real"})
    assert 'key: "weights_versions" value: { string_value: "3:real,2:real,1:untrained" }' in cfg
    assert "weights_versions" not in pbtxt.ensemble_config(desc, weights_status="real")  # unrecorded: not written
    assert parse_weights_versions("3:real,2:real,1:untrained") == {3: "real", 2: "real", 1: "untrained"}
    assert parse_weights_versions("") == {}
    info = ModelInfo(
        id=desc.id,
        task=desc.task,
        scale=desc.scale,
        weights="real",
        license="",
        versions=(1, 3),
        ready=True,
        weights_versions={1: "untrained", 2: "real", 3: "real"},
    )
    assert info.served_weights == {3: "real", 1: "untrained"}  # the ready versions only, newest first
    row = format_table([info]).splitlines()[1]
    assert "3:real 1:untrained" in row and "2:real" not in row
