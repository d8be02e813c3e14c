"""Every generated config.pbtxt parses as Triton's ModelConfig and agrees with its descriptor."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from stylize.descriptors import ENCODED_IMAGE, ENCODED_RESULT, MODELS, REGISTRY
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
    assert cfg.HasField("dynamic_batching")
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
    assert tuple(steps) + (desc.id,) == desc.triton_models
    assert cfg.input[0].name == desc.ensemble_input.name
    assert cfg.output[0].name == desc.ensemble_output.name
    # every internal tensor is produced before it is consumed, and the output is produced
    produced = {cfg.input[0].name}
    for s in cfg.ensemble_scheduling.step:
        assert set(s.input_map.values()) <= produced, s
        produced |= set(s.output_map.values())
    assert cfg.output[0].name in produced
    assert cfg.parameters["weights"].string_value == "untrained"


def test_image_ensembles_use_encoded_contract():
    for desc in MODELS:
        if desc.window:
            continue
        assert desc.ensemble_input == ENCODED_IMAGE and desc.ensemble_output == ENCODED_RESULT


def test_gpu_ensemble_routes_to_tensorrt_plan():
    desc = REGISTRY["esrgan_x4"]
    cfg = parse(pbtxt.ensemble_config(desc, weights_status="real", net_model=desc.trt_model))
    assert desc.trt_model in [s.model_name for s in cfg.ensemble_scheduling.step]


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_python_steps_parse(desc):
    if desc.window:
        pytest.skip("windowed video models have no python steps")
    pre = parse(pbtxt.pre_config(desc, weights_status="real", max_pixels=100, max_bytes=200))
    post = parse(pbtxt.post_config(desc, weights_status="real"))
    assert pre.backend == post.backend == "python"
    assert pre.parameters["size_multiple"].string_value == str(desc.size_multiple)


def test_registry_refuses_duplicates():
    from stylize.descriptors import Registry

    with pytest.raises(ValueError, match="duplicate"):
        Registry((MODELS[0], MODELS[0]))
