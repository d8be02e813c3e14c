"""The INT8 quantizer: exact graph passes (on small graphs run in ONNX Runtime), what gets quantized, quality
measurement, and the versioned INT8 models in a repository (on the real animevideo_x4 network of the built
repository)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from stylize.contract.descriptors import REGISTRY
from stylize_build.quantize import (
    MAX_LOSS_DB,
    QuantizeError,
    QuantizeSettings,
    body_nodes,
    fold_min_zero,
    measure_quality,
    photo_crops,
    psnr,
    quantize_network,
    recipe,
    rewrite_prelu,
)

pytestmark = pytest.mark.export

RNG = np.random.default_rng(0)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _serving_like_graph() -> onnx.ModelProto:
    """uint8 NHWC -> Cast/Mul/Transpose -> Conv -> PRelu -> Conv -> Clip/Round/Cast -> uint8 NHWC (the export's
    shape)."""
    w1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((3, 8, 3, 3)).astype(np.float32) * 0.3
    slope = RNG.uniform(-0.5, 1.6, (8, 1, 1)).astype(np.float32)  # slopes on both sides of 1, like animevideo
    nodes = [
        helper.make_node("Cast", ["FRAME"], ["f"], to=TensorProto.FLOAT, name="cast_in"),
        helper.make_node("Mul", ["f", "k"], ["fs"], name="scale_in"),
        helper.make_node("Transpose", ["fs"], ["x"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("PRelu", ["c1", "slope"], ["p1"], name="prelu1"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Mul", ["c2", "k255"], ["o"], name="scale_out"),
        helper.make_node("Clip", ["o", "lo", "hi"], ["oc"], name="clip"),
        helper.make_node("Round", ["oc"], ["orr"], name="round"),
        helper.make_node("Cast", ["orr"], ["ou"], to=TensorProto.UINT8, name="cast_out"),
        helper.make_node("Transpose", ["ou"], ["FRAME_OUT"], perm=[0, 2, 3, 1], name="to_nhwc"),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in (
            (np.array(1 / 255, np.float32), "k"),
            (w1, "w1"),
            (w2, "w2"),
            (slope, "slope"),
            (np.array(255, np.float32), "k255"),
            (np.array(0, np.float32), "lo"),
            (np.array(255, np.float32), "hi"),
        )
    ]
    g = helper.make_graph(
        nodes,
        "serving",
        [helper.make_tensor_value_info("FRAME", TensorProto.UINT8, [1, 16, 16, 3])],
        [helper.make_tensor_value_info("FRAME_OUT", TensorProto.UINT8, [1, 16, 16, 3])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_rewrite_prelu_is_exact_and_removes_every_prelu():
    model = _serving_like_graph()
    g = model.graph
    x = RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)
    # run the PRelu alone on float data (the uint8 output would hide small differences)
    sub = helper.make_model(
        helper.make_graph(
            [n for n in g.node if n.op_type == "PRelu"],
            "p",
            [helper.make_tensor_value_info("c1", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("p1", TensorProto.FLOAT, None)],
            [i for i in g.initializer if i.name == "slope"],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    before = _session(sub).run(None, {"c1": x})[0]
    assert rewrite_prelu(sub) == 1
    assert not [n for n in sub.graph.node if n.op_type == "PRelu"]
    assert "slope" not in {i.name for i in sub.graph.initializer}  # the unused slope is dropped
    after = _session(sub).run(None, {"c1": x})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    assert rewrite_prelu(sub) == 0  # idempotent


def test_body_nodes_are_between_the_first_and_last_conv():
    model = _serving_like_graph()
    assert body_nodes(model) == ["conv1", "prelu1", "conv2"]
    no_conv = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["a"], ["b"], name="r")],
            "g",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        )
    )
    with pytest.raises(QuantizeError, match="no Conv"):
        body_nodes(no_conv)


def test_fold_min_zero_is_exact_in_the_quantized_domain():
    """DQ -> Min(x, 0) -> Q -> DQ becomes Min(q, zp) -> DQ with the input's scale: same values, one op on uint8."""
    scale, zp = np.array(0.05, np.float32), np.array(117, np.uint8)
    q2_scale, q2_zp = np.array(0.031, np.float32), np.array(250, np.uint8)
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["x"], name="dq"),
        helper.make_node("Min", ["x", "zero"], ["m"], name="min"),
        helper.make_node("QuantizeLinear", ["m", "s2", "z2"], ["mq"], name="q_after"),
        helper.make_node("DequantizeLinear", ["mq", "s2", "z2"], ["y"], name="dq_after"),
    ]
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((scale, "s"), (zp, "z"), (np.array(0, np.float32), "zero"), (q2_scale, "s2"), (q2_zp, "z2"))
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 4, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
            inits,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    q = RNG.integers(0, 256, (1, 4, 8, 8), dtype=np.uint8)
    exact = np.minimum((q.astype(np.float32) - 117) * 0.05, 0)
    assert fold_min_zero(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Min", "DequantizeLinear"]
    got = _session(model).run(None, {"q": q})[0]
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-6)  # better than the removed requantization


def test_psnr_and_photo_crops():
    a = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")
    b = a.astype(np.int16)
    b[0, 0, 0] = (b[0, 0, 0] + 16) % 256
    assert 30 < psnr(a, b.astype(np.uint8)) < 60
    crops = photo_crops(["astronaut.png"], 32, 2, seed=3)
    assert len(crops) == 2 and crops[0][1].shape == (32, 32, 3) and crops[0][1].dtype == np.uint8
    assert [c for c, _ in crops] == [c for c, _ in photo_crops(["astronaut.png"], 32, 2, seed=3)]  # seeded
    with pytest.raises(QuantizeError, match="larger than"):
        photo_crops(["astronaut.png"], 1024, 1, seed=0)


def test_recipes_by_architecture():
    assert recipe(REGISTRY["animevideo_x4"]).method == "percentile"
    assert recipe(REGISTRY["esrgan_x4"]).method == "minmax"


SMALL = QuantizeSettings(crops_per_photo=1, crop_side=32, method="percentile")


def test_quantize_the_real_animevideo_network(model_repository, tmp_path):
    desc = REGISTRY["animevideo_x4"]
    src = next(model_repository.glob(f"{desc.net_model}/*/model.onnx"))
    dst = tmp_path / "int8.onnx"
    report = quantize_network(desc, src, dst, SMALL)
    # the served fp32 graph arrives with its 17 PRelu already rewritten by the export; all 17 Min go to uint8
    assert report.prelu_rewritten == 0 and report.min_folded == 17
    assert report.fp32_convs == ["/net/body.0/Conv", "/net/body.34/Conv"] and report.quantized_convs == 16
    model = onnx.load(str(dst))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "PRelu" not in ops
    assert [i.name for i in model.graph.input] == [desc.net_input.name]
    q = measure_quality(desc, src, dst, weights="real", side=32, crops_per_photo=1)
    assert q.meaningful and q.loss_db is not None
    assert q.fidelity_psnr_db > 30  # INT8 follows fp32 closely on held-out real photos
    assert q.fp32_psnr_db > 20 and abs(q.loss_db) < 1.5


def test_untrained_weights_are_flagged_meaningless(model_repository, tmp_path):
    desc = REGISTRY["animeganv2"]
    src = next(model_repository.glob(f"{desc.net_model}/*/model.onnx"))
    dst = tmp_path / "int8.onnx"
    quantize_network(desc, src, dst, QuantizeSettings(crops_per_photo=1, crop_side=32))
    q = measure_quality(desc, src, dst, weights="untrained", side=32, crops_per_photo=1)
    assert not q.meaningful and q.meets(0.5) is None and q.loss_db is None
    assert "meaningless" in q.note and "no ground truth" in q.note


def test_windowed_models_are_refused(tmp_path):
    with pytest.raises(QuantizeError, match="windowed"):
        quantize_network(REGISTRY["basicvsr_x4"], tmp_path / "x.onnx", tmp_path / "y.onnx")


def test_int8_variants_in_a_repository_are_versioned_and_idempotent(model_repository, tmp_path):
    from stylize_build.int8 import build_int8
    from stylize_build.repository import BuildSettings

    desc = REGISTRY["animevideo_x4"]
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / desc.net_model, repo / desc.net_model)
    settings = BuildSettings(repository=repo)
    first = build_int8(desc, settings, SMALL)
    assert not first.reused and first.version == 1 and first.weights == "real"
    for name in (
        f"{desc.int8_model}/1/model.onnx",
        f"{desc.int8_model}/1/manifest.json",
        f"{desc.int8_model}/config.pbtxt",
        f"{desc.int8_image_model}/config.pbtxt",
        f"{desc.int8_ensemble}/config.pbtxt",
    ):
        assert (repo / name).is_file(), name
    manifest = json.loads((repo / desc.int8_model / "1" / "manifest.json").read_text())
    assert manifest["source"]["model"] == desc.net_model and manifest["quality"]["meaningful"]
    # measured again the way it is served (OpenVINO runs the QDQ graph's int8 kernels its own way), within the gate
    served = manifest["served_quality"][f"openvino/{settings.precision}"]
    assert served["runtime"] == "openvino" and served["meaningful"] and served["loss_db"] <= MAX_LOSS_DB
    assert first.quality == served
    assert 'backend: "openvino"' in (repo / desc.int8_model / "config.pbtxt").read_text()
    assert f'name: "{desc.int8_model}"' in (repo / desc.int8_model / "config.pbtxt").read_text()
    ensemble = (repo / desc.int8_ensemble / "config.pbtxt").read_text()
    assert f'name: "{desc.int8_ensemble}"' in ensemble and desc.int8_cached_model in ensemble
    assert desc.int8_image_model in (repo / desc.int8_cached_model / "config.pbtxt").read_text()
    assert desc.int8_model in (repo / desc.int8_image_model / "config.pbtxt").read_text()
    for name in (desc.int8_model, desc.int8_image_model, desc.int8_cached_model, desc.int8_ensemble):  # server's uid
        for path in [repo / name, *(repo / name).rglob("*")]:
            assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path

    again = build_int8(desc, settings, SMALL)
    assert again.reused and again.written == [] and again.version == 1
    other = build_int8(desc, settings, QuantizeSettings(crops_per_photo=1, crop_side=32, method="minmax"))
    assert not other.reused and other.version == 2  # new settings: a new version, the old one stays


def test_an_int8_variant_that_loses_more_than_the_gate_is_refused(model_repository, tmp_path, monkeypatch):
    """The PSNR-loss gate, on the served runtime: a real measured loss above the limit writes no version and no
    config (the limit lowered below the measured loss, so the real measurement trips it)."""
    from stylize_build import int8
    from stylize_build.repository import BuildSettings

    desc = REGISTRY["animevideo_x4"]
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / desc.net_model, repo / desc.net_model)
    monkeypatch.setattr(int8, "MAX_LOSS_DB", -10.0)
    with pytest.raises(QuantizeError, match="refused"):
        int8.build_int8(desc, BuildSettings(repository=repo), SMALL)
    assert not (repo / desc.int8_model).exists() and not (repo / desc.int8_ensemble).exists()


def test_int8_needs_an_fp32_version(tmp_path):
    from stylize_build.int8 import build_int8
    from stylize_build.repository import BuildSettings

    with pytest.raises(QuantizeError, match="no fp32 version"):
        build_int8(REGISTRY["animevideo_x4"], BuildSettings(repository=tmp_path), SMALL)
