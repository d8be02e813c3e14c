"""TensorRT's ONNX parser rules, checked statically on every exported graph (no TensorRT on these machines)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from stylize.contract.descriptors import MODELS, REGISTRY
from stylize_build.export import OPSET, ServingWrapper
from stylize_build.repository import ONNX_FILE, existing_versions
from stylize_build.trt_rules import check_graph, require_trt_compatible
from torch import nn

pytestmark = pytest.mark.export


def _graph(nodes, inputs, outputs, initializers=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def _rules(model):
    return {p.rule for p in check_graph(model)}


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_every_served_graph_meets_tensorrts_parser_rules(model_repository, desc):
    versions = existing_versions(model_repository / desc.net_model)
    newest = max(versions)
    model = onnx.load(str(model_repository / desc.net_model / str(newest) / ONNX_FILE))
    assert check_graph(model) == []


def test_the_serving_wrapper_casts_to_uint8_last():
    """The exported tail is Transpose (float) -> Cast(UINT8) -> FRAME_OUT: no UINT8 edge inside the graph."""
    desc = REGISTRY["animevideo_x4"]
    wrapper = ServingWrapper(net=nn.Conv2d(3, 3, 3, padding=1), desc=desc).eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (torch.zeros(1, 16, 16, 3, dtype=torch.uint8),),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[desc.net_input.name],
            output_names=[desc.net_output.name],
        )
    model = onnx.load_from_string(buf.getvalue())
    assert check_graph(model) == []
    last = next(n for n in model.graph.node if desc.net_output.name in n.output)
    assert last.op_type == "Cast"


def test_a_uint8_intermediate_is_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 4, 3])
    model = _graph(
        [
            helper.make_node("Cast", ["x"], ["c"], to=TensorProto.UINT8, name="cast"),
            helper.make_node("Transpose", ["c"], ["y"], perm=[0, 2, 3, 1], name="perm"),
        ],
        [x],
        [y],
    )
    assert _rules(model) == {"uint8-intermediate"}
    with pytest.raises(ValueError, match="UINT8 but is not a graph input or output"):
        require_trt_compatible(model, "test graph")


def test_unsupported_ops_resize_modes_and_runtime_conv_weights_are_reported():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 3, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    model = _graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
            helper.make_node(
                "Resize",
                ["c", "", "scales"],
                ["r"],
                mode="linear",
                coordinate_transformation_mode="tf_crop_and_resize",
                name="resize",
            ),
            helper.make_node("Hardmax", ["r"], ["y"], name="hardmax"),
        ],
        [x, w],
        [y],
        [scales],
    )
    assert _rules(model) == {"conv-weights", "resize-mode", "unsupported-op"}


# ---- what the GPU image step sends stays inside the plan's optimization profile ------------------------------


def _gpu_step(desc):
    from google.protobuf import text_format
    from stylize.contract.step import StepConfig
    from stylize_build import pbtxt
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(pbtxt.image_config(desc, weights_status="real", net_model=desc.trt_model), mc.ModelConfig())
    return StepConfig.from_parameters({k: v.string_value for k, v in cfg.parameters.items()})


def _sides_sent(step, h, w):
    """The (batch, height, width) of every network call the GPU image step makes for an h x w image."""
    from stylize.contract.frames import pad_to_multiple
    from stylize.contract.tiling import plan_tiles

    ph, pw = pad_to_multiple(np.zeros((h, w, 3), np.uint8), step.size_multiple, step.min_size).shape[:2]
    if not step.tile_size:
        return [(1, ph, pw)]
    plan = plan_tiles(
        ph,
        pw,
        tile=step.tile_size,
        overlap=step.tile_overlap,
        multiple=step.size_multiple,
        batch=step.tile_batch,
        max_side=step.max_tile_side,
    )
    per_call = step.tiles_per_call or step.tile_batch
    calls = -(-plan.count // per_call)
    return [(min(per_call, plan.count - i * per_call), plan.tile_h, plan.tile_w) for i in range(calls)]


IMAGE_MODELS = [d for d in MODELS if not d.window]
# long thin images within one call's pixel budget (sent whole before: a 100x600 photo to esrgan, a banner), squares
# and the step's own limits, plus seeded random sizes
EDGE_SIZES = [(100, 600), (600, 100), (150, 1920), (1920, 150), (16, 16), (513, 513), (1024, 1024), (37, 2047)]


@pytest.mark.parametrize("desc", IMAGE_MODELS, ids=lambda d: d.id)
def test_every_shape_the_gpu_step_sends_is_within_the_profile(desc):
    from stylize_build.tensorrt import profile_for

    profile = profile_for(desc)
    step = _gpu_step(desc)
    rng = np.random.default_rng(20)
    sizes = EDGE_SIZES + [tuple(int(v) for v in rng.integers(desc.network.min_size, 2500, 2)) for _ in range(300)]
    for h, w in sizes:
        if step.max_side:  # animeganv2 shrinks to its longest side first, as the step does
            from stylize.engine.imaging import fit_within

            h, w = fit_within(h, w, step.max_side)
        for batch, th, tw in _sides_sent(step, h, w):
            assert profile.min[0] <= batch <= profile.max[0], (desc.id, h, w, batch)
            assert profile.min[-3] <= th <= profile.max[-3] and profile.min[-2] <= tw <= profile.max[-2], (
                desc.id,
                (h, w),
                (th, tw),
                profile,
            )


@pytest.mark.parametrize("desc", MODELS, ids=lambda d: d.id)
def test_the_profile_is_the_steps_real_shape(desc):
    from stylize_build.tensorrt import profile_for

    p = profile_for(desc)
    gpu_max_side = desc.serving.gpu_max_side
    assert p.max[-3] == p.max[-2] == gpu_max_side - gpu_max_side % desc.network.size_multiple
    if tiling := desc.serving.tiling:
        assert p.opt[0] == tiling.batch and p.opt[-3] == p.opt[-2] == tiling.size
    assert all(lo <= opt <= hi for lo, opt, hi in zip(p.min, p.opt, p.max))


def test_plans_are_keyed_by_tensorrt_version_and_gpu_architecture():
    from stylize_build.tensorrt import GpuTarget, trt_config

    desc = REGISTRY["animevideo_x4"]
    h200, l4 = GpuTarget("10.5.0", (9, 0), "NVIDIA H200"), GpuTarget("10.5.0", (8, 9), "NVIDIA L4")
    assert h200.plan_file == "model.trt10.5.0.sm90.plan" and h200.timing_cache_file == "timing.trt10.5.0.sm90.cache"
    text = trt_config(desc, weights_status="real", targets=[h200, l4])
    assert 'cc_model_filenames { key: "8.9" value: "model.trt10.5.0.sm89.plan" }' in text
    assert 'cc_model_filenames { key: "9.0" value: "model.trt10.5.0.sm90.plan" }' in text
    assert "default_model_filename" not in text  # another GPU must fail to load, not run a foreign plan


def test_the_plan_builder_image_installs_the_serving_containers_tensorrt():
    import re
    from pathlib import Path

    from stylize_build.tensorrt import SERVING_TENSORRT

    dockerfile = (Path(__file__).resolve().parents[2] / "k8s/image/Dockerfile").read_text()
    stage = dockerfile[dockerfile.index("AS plan-builder") :]
    assert re.search(rf"ARG TENSORRT_VERSION={re.escape(SERVING_TENSORRT)}\n", stage)
    assert "tensorrt-cu12==${TENSORRT_VERSION}" in stage and '"/src[build]"' in stage and "python3.11" in dockerfile
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile  # 24.10 ships TensorRT 10.5.0
