"""Every generated config.pbtxt parses as Triton's ModelConfig and agrees with its descriptor."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from stylize.descriptors import ENCODED_IMAGE, ENCODED_RESULT, MODELS, REGISTRY
from stylize.server.steps.imaging import Limits
from stylize.server.steps.pipeline import StepConfig
from stylize.server.steps.tiling import CPU_TILES_PER_CALL
from stylize_build import pbtxt

pytestmark = pytest.mark.unit


def parse(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_net_config_matches_descriptor(desc):
    cfg = parse(pbtxt.net_config(desc, weights_status="real", threads=2))
    assert cfg.name == desc.net_model
    assert cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == desc.max_batch_size
    assert [(i.name, list(i.dims)) for i in cfg.input] == [(desc.net_input.name, list(desc.net_input.dims))]
    assert [(o.name, list(o.dims)) for o in cfg.output] == [(desc.net_output.name, list(desc.net_output.dims))]
    assert cfg.input[0].data_type == mc.TYPE_UINT8
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1]  # one request per execution (net_config)
    assert cfg.version_policy.latest.num_versions == pbtxt.NUM_VERSIONS
    assert cfg.parameters["weights"].string_value == "real"
    warm = cfg.model_warmup[0].inputs[desc.net_input.name]
    assert len(warm.dims) == len(desc.net_input.dims) and warm.zero_data
    # no exporter-generated names (input.1, 307, ...)
    assert all(t.name.isidentifier() for t in [*cfg.input, *cfg.output])


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_ensemble_wires_every_step(desc):
    cfg = parse(pbtxt.ensemble_config(desc, weights_status="untrained"))
    assert cfg.name == desc.id and cfg.platform == "ensemble"
    steps = [s.model_name for s in cfg.ensemble_scheduling.step]
    assert steps == [desc.net_model if desc.window else desc.image_model]
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
    # the response cache on the client-facing image ensembles (the cache key is the inputs: options are inputs too)
    assert cfg.response_cache.enable == (not desc.window)
    assert [i.name for i in cfg.input if i.optional] == [o.tensor.name for o in desc.options]


def test_image_ensembles_use_encoded_contract():
    for desc in MODELS:
        if desc.window:
            continue
        assert desc.ensemble_input == ENCODED_IMAGE and desc.ensemble_output == ENCODED_RESULT


def test_gpu_and_int8_route_through_their_image_step():
    desc = REGISTRY["esrgan_x4"]
    gpu = parse(pbtxt.image_config(desc, weights_status="real", net_model=desc.trt_model))
    assert gpu.name == desc.image_model and gpu.parameters["net_model"].string_value == desc.trt_model
    ens = parse(pbtxt.ensemble_config(desc, weights_status="real", name=desc.int8_ensemble,
                                      net_model=desc.int8_model))
    assert ens.name == desc.int8_ensemble
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [desc.int8_image_model]
    step = parse(pbtxt.image_config(desc, weights_status="real", name=desc.int8_image_model,
                                    net_model=desc.int8_model))
    assert step.name == desc.int8_image_model and step.parameters["net_model"].string_value == desc.int8_model
    # tiles of a tiled image: one per call on CPU (fp32 and INT8), tile_batch per call on the GPU
    assert step.parameters["tiles_per_call"].string_value == str(CPU_TILES_PER_CALL) == "1"
    cpu = parse(pbtxt.image_config(desc, weights_status="real"))
    assert cpu.parameters["tiles_per_call"].string_value == "1"
    assert cpu.parameters["tile_batch"].string_value == str(desc.tile_batch)  # the pixel budget is unchanged
    assert gpu.parameters["tiles_per_call"].string_value == "0"  # 0: tile_batch
    # the network: in the step's process on CPU (fp32 and INT8), by BLS to the TensorRT plan on the GPU
    assert [c.parameters["net_runtime"].string_value for c in (cpu, step, gpu)] == ["onnxruntime"] * 2 + ["triton"]
    vsr = REGISTRY["basicvsr_x4"]
    cfg = parse(pbtxt.ensemble_config(vsr, weights_status="real", net_model=vsr.trt_model))
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == [vsr.trt_model]


@pytest.mark.parametrize("desc", [d for d in MODELS if not d.window], ids=lambda d: d.id)
def test_image_step_config_round_trips_its_settings(desc):
    limits = Limits(max_pixels=100, max_bytes=200, max_output_pixels=300)
    cfg = parse(pbtxt.image_config(desc, weights_status="real", limits=limits))
    assert cfg.name == desc.image_model and cfg.backend == "python"
    assert cfg.max_batch_size == desc.max_batch_size
    assert [i.name for i in cfg.input] == [ENCODED_IMAGE.name, *(o.tensor.name for o in desc.options)]
    assert [i.optional for i in cfg.input] == [False] + [True] * len(desc.options)
    assert [o.name for o in cfg.output] == [ENCODED_RESULT.name]
    step = StepConfig.from_parameters({k: v.string_value for k, v in cfg.parameters.items()})
    assert step == StepConfig.from_descriptor(desc, limits=limits, tiles_per_call=CPU_TILES_PER_CALL,
                                              net_runtime="onnxruntime", net_threads=1)
    assert step.net_model == desc.net_model and step.tile_size == desc.tile_size and step.max_side == desc.max_side
    # build options override the descriptor's tile defaults (tiled models only)
    tuned = parse(pbtxt.image_config(desc, weights_status="real", tile_size=96, tile_overlap=8))
    assert tuned.parameters["tile_size"].string_value == ("96" if desc.tile_size else "0")


def test_registry_refuses_duplicates():
    from stylize.descriptors import Registry

    with pytest.raises(ValueError, match="duplicate"):
        Registry((MODELS[0], MODELS[0]))


@pytest.mark.parametrize(("threads", "instances", "per_instance"), [(2, 2, 1), (4, 2, 2), (1, 1, 1), (8, 4, 2)])
def test_cpu_image_step_splits_the_cores_over_its_instances(threads, instances, per_instance):
    """Instances x intra-op threads never exceed the cores the build was given (one thread at least)."""
    desc = REGISTRY["animevideo_x4"]
    cfg = parse(pbtxt.image_config(desc, weights_status="real", threads=threads,
                                   instances=max(instances, pbtxt.IMAGE_STEP_INSTANCES)))
    assert cfg.instance_group[0].count == instances
    assert cfg.parameters["net_threads"].string_value == str(per_instance)
    assert instances * per_instance <= threads


def test_step_config_refuses_an_unknown_network_runtime():
    with pytest.raises(ValueError, match="net_runtime"):
        StepConfig(model_id="m", net_model="m_net", scale=2, net_runtime="tensorflow")
