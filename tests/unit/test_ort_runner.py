"""stylize.engine.ort_runner: config parsing, validation, dynamic batching and error mapping on real ORT sessions."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from stylize.contract.descriptors import FRAME_IN, FRAME_OUT
from stylize.engine.ort_runner import (
    ORT_THREADS_ENV,
    InferenceError,
    InvalidInputError,
    ModelConfigError,
    OrtModelConfig,
    OrtRunner,
    TensorConfig,
    threads_from_env,
)

pytestmark = pytest.mark.unit

OPSET = 17


def invert_graph(path, *, channels: int | str = "C", in_name=FRAME_IN.name, out_name=FRAME_OUT.name):
    """uint8 NHWC -> 255 - x (every byte checkable); dynamic batch/H/W; channels static when an int."""
    shape = ["N", "H", "W", channels]
    nodes = [
        helper.make_node("Cast", [in_name], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "minus_one"], ["neg"]),
        helper.make_node("Add", ["neg", "c255"], ["yf"]),
        helper.make_node("Cast", ["yf"], [out_name], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "invert",
        [helper.make_tensor_value_info(in_name, TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.UINT8, shape)],
        initializer=[
            helper.make_tensor("minus_one", TensorProto.FLOAT, [], [-1.0]),
            helper.make_tensor("c255", TensorProto.FLOAT, [], [255.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def pairs_graph(path):
    """float [N, L] -> [N, L/2, 2]: ORT fails at run time when L is odd (a real Reshape error)."""
    nodes = [helper.make_node("Reshape", ["X", "shape"], ["Y"])]
    graph = helper.make_graph(
        nodes,
        "pairs",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "L"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", "K", 2])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [3], [0, -1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def frame_config(*, max_batch_size=4, dims=(-1, -1, 3), **extra) -> dict:
    config = {
        "name": "invert",
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size,
        "input": [{"name": FRAME_IN.name, "data_type": "TYPE_UINT8", "dims": list(dims)}],
        "output": [{"name": FRAME_OUT.name, "data_type": "TYPE_UINT8", "dims": list(dims)}],
    }
    config.update(extra)
    return config


class CountingSession:
    """Delegates to the real ORT session and records the batch shapes it was run with."""

    def __init__(self, session):
        self._session = session
        self.calls: list[tuple[int, ...]] = []

    def run(self, output_names, feed):
        self.calls.append(next(iter(feed.values())).shape)
        return self._session.run(output_names, feed)

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def invert_runner(tmp_path):
    path = invert_graph(tmp_path / "model.onnx", channels=3)
    runner = OrtRunner(config=OrtModelConfig.from_triton(frame_config()), model_path=path)
    runner.session = CountingSession(runner.session)
    return runner


# ---- config ---------------------------------------------------------------------------------------------------


def test_config_parses_triton_json_with_native_ort_parameters():
    raw = json.dumps(
        frame_config(
            default_model_filename="net.onnx",
            optimization={"graph": {"level": -1}},
            parameters={
                "intra_op_thread_count": {"string_value": "2"},
                "inter_op_thread_count": {"string_value": "1"},
                "execution_mode": {"string_value": "0"},
                "enable_mem_arena": {"string_value": "false"},
                "stylize_id": {"string_value": "animeganv2"},
            },
        )
    )
    cfg = OrtModelConfig.from_triton(raw)
    assert cfg.model_filename == "net.onnx"
    assert (cfg.intra_op_threads, cfg.inter_op_threads, cfg.execution_mode) == (2, 1, 0)
    assert cfg.enable_mem_arena is False
    assert cfg.inputs == (TensorConfig(FRAME_IN.name, "UINT8", (-1, -1, 3)),)
    assert cfg.parameters["stylize_id"] == "animeganv2"  # unknown parameters are kept, not rejected

    options = cfg.session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert cfg.session_options(threads_override=1).intra_op_num_threads == 1


@pytest.mark.parametrize("level, expected", [(1, "ORT_ENABLE_EXTENDED"), (2, "ORT_DISABLE_ALL"), (0, "ORT_ENABLE_ALL")])
def test_graph_level_follows_the_native_backend(level, expected):
    cfg = OrtModelConfig.from_triton(frame_config(optimization={"graph": {"level": level}}))
    assert cfg.session_options().graph_optimization_level == getattr(ort.GraphOptimizationLevel, expected)


def test_config_defaults_and_string_dims():
    cfg = OrtModelConfig.from_triton(frame_config(dims=("-1", "-1", "3")))
    assert cfg.model_filename == "model.onnx"
    assert cfg.inputs[0].dims == (-1, -1, 3)
    assert cfg.intra_op_threads is None and cfg.graph_level is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input": []}, "inputs and outputs"),
        ({"parameters": {"intra_op_thread_count": {"string_value": "two"}}}, "must be an integer"),
        ({"input": [{"name": "X", "data_type": "TYPE_BF16", "dims": [1]}]}, "not supported"),
        ({"input": [{"name": "X", "data_type": "TYPE_UINT8", "dims": [4], "reshape": {"shape": [2, 2]}}]}, "reshape"),
    ],
)
def test_bad_configs_are_refused(change, message):
    with pytest.raises(ModelConfigError, match=message):
        OrtModelConfig.from_triton(frame_config(**change))


def test_threads_from_env():
    assert threads_from_env({}) is None
    assert threads_from_env({ORT_THREADS_ENV: "0"}) is None
    assert threads_from_env({ORT_THREADS_ENV: " 3 "}) == 3
    with pytest.raises(ModelConfigError):
        threads_from_env({ORT_THREADS_ENV: "many"})


# ---- config vs graph ------------------------------------------------------------------------------------------


def test_config_and_graph_must_agree(tmp_path):
    path = invert_graph(tmp_path / "model.onnx")
    with pytest.raises(ModelConfigError, match="not in the ONNX graph.*graph inputs: FRAME"):
        OrtRunner(
            config=OrtModelConfig.from_triton(
                frame_config(input=[{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}])
            ),
            model_path=path,
        )
    with pytest.raises(ModelConfigError, match="TYPE_FP32 in the config but tensor\\(uint8\\)"):
        OrtRunner(
            config=OrtModelConfig.from_triton(
                frame_config(input=[{"name": FRAME_IN.name, "data_type": "TYPE_FP32", "dims": [-1, -1, 3]}])
            ),
            model_path=path,
        )
    with pytest.raises(ModelConfigError, match="rank 4 in the ONNX graph, the config implies 3"):
        OrtRunner(config=OrtModelConfig.from_triton(frame_config(max_batch_size=0)), model_path=path)
    with pytest.raises(ModelConfigError, match="does not exist"):
        OrtRunner(config=OrtModelConfig.from_triton(frame_config()), model_path=tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ModelConfigError, match="cannot load"):
        OrtRunner(config=OrtModelConfig.from_triton(frame_config()), model_path=tmp_path / "junk.onnx")


# ---- execution ------------------------------------------------------------------------------------------------


def test_same_shapes_run_as_one_concatenated_batch(invert_runner, rng):
    frames = [rng.integers(0, 256, (n, 5, 7, 3), dtype=np.uint8) for n in (1, 2, 1)]
    outcomes = invert_runner.run([{FRAME_IN.name: f} for f in frames])
    assert invert_runner.session.calls == [(4, 5, 7, 3)]
    for frame, out in zip(frames, outcomes):
        assert out[FRAME_OUT.name].shape == frame.shape
        np.testing.assert_array_equal(out[FRAME_OUT.name], 255 - frame)


def test_mixed_shapes_and_bad_requests_each_get_their_own_outcome(invert_runner, rng):
    a1 = rng.integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)  # odd sizes on purpose
    b = rng.integers(0, 256, (1, 4, 6, 3), dtype=np.uint8)
    a2 = rng.integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)
    requests = [
        {FRAME_IN.name: a1},
        {FRAME_IN.name: a1.astype(np.float32)},  # wrong dtype
        {FRAME_IN.name: b},
        {FRAME_IN.name: b[0]},  # no batch dimension
        {FRAME_IN.name: np.zeros((1, 4, 6, 4), np.uint8)},  # graph has 3 channels
        {},  # missing input
        {FRAME_IN.name: a2},
        {FRAME_IN.name: a2, "EXTRA": a2},  # unknown input
        {FRAME_IN.name: np.zeros((5, 2, 2, 3), np.uint8)},  # batch above max_batch_size
    ]
    out = invert_runner.run(requests)
    assert len(out) == len(requests)
    np.testing.assert_array_equal(out[0][FRAME_OUT.name], 255 - a1)
    np.testing.assert_array_equal(out[2][FRAME_OUT.name], 255 - b)
    np.testing.assert_array_equal(out[6][FRAME_OUT.name], 255 - a2)
    assert sorted(invert_runner.session.calls) == [(1, 4, 6, 3), (2, 9, 11, 3)]
    messages = {i: str(out[i]) for i in (1, 3, 4, 5, 7, 8)}
    assert all(isinstance(out[i], InvalidInputError) for i in messages)
    assert "data type float32" in messages[1] and "TYPE_UINT8" in messages[1]
    assert "shape [4, 6, 3]" in messages[3]
    assert "shape [1, 4, 6, 4]" in messages[4] and "[batch, -1, -1, 3]" in messages[4]
    assert "missing input 'FRAME'" in messages[5]
    assert "EXTRA" in messages[7]
    assert "batch size 5" in messages[8]


@pytest.mark.parametrize("shape", [(1, 0, 0, 3), (1, 0, 8, 3), (1, 8, 0, 3)])
def test_an_empty_frame_is_refused_before_onnx_runtime(invert_runner, rng, shape):
    good = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    empty, ok = invert_runner.run([{FRAME_IN.name: np.zeros(shape, np.uint8)}, {FRAME_IN.name: good}])
    assert isinstance(empty, InvalidInputError) and "empty axis" in str(empty)
    np.testing.assert_array_equal(ok[FRAME_OUT.name], 255 - good)
    assert invert_runner.session.calls == [(1, 4, 4, 3)]  # the empty one never reached the session


def test_a_request_over_the_pixel_limit_is_refused_before_the_runtime(tmp_path, rng):
    """max_request_pixels (the build writes it on every network model): batch x height x width of one request;
    the one at the limit runs, the one above is refused naming the limit, and neither harms its neighbours."""
    path = invert_graph(tmp_path / "model.onnx", channels=3)
    cfg = OrtModelConfig.from_triton(frame_config(parameters={"max_request_pixels": {"string_value": "128"}}))
    runner = OrtRunner(config=cfg, model_path=path)
    runner.session = CountingSession(runner.session)
    at, above, small = (
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((2, 8, 8, 3), (3, 8, 8, 3), (1, 4, 4, 3))
    )
    out_at, out_above, out_small = runner.run([{FRAME_IN.name: at}, {FRAME_IN.name: above}, {FRAME_IN.name: small}])
    assert isinstance(out_above, InvalidInputError)
    assert "carries 192 pixels" in str(out_above) and "at most 128 per request (max_request_pixels)" in str(out_above)
    np.testing.assert_array_equal(out_at[FRAME_OUT.name], 255 - at)
    np.testing.assert_array_equal(out_small[FRAME_OUT.name], 255 - small)
    assert sorted(runner.session.calls) == [(1, 4, 4, 3), (2, 8, 8, 3)]  # the refused one never ran


def test_groups_are_split_at_max_batch_size(invert_runner, rng):
    frames = [rng.integers(0, 256, (n, 3, 3, 3), dtype=np.uint8) for n in (3, 2, 1, 4)]
    out = invert_runner.run([{FRAME_IN.name: f} for f in frames])
    assert invert_runner.session.calls == [(3, 3, 3, 3), (3, 3, 3, 3), (4, 3, 3, 3)]
    for frame, o in zip(frames, out):
        np.testing.assert_array_equal(o[FRAME_OUT.name], 255 - frame)


def test_without_batching_every_request_runs_alone(tmp_path, rng):
    path = invert_graph(tmp_path / "model.onnx")
    runner = OrtRunner(
        config=OrtModelConfig.from_triton(frame_config(max_batch_size=0, dims=(-1, -1, -1, 3))), model_path=path
    )
    frames = [rng.integers(0, 256, (2, 3, 5, 3), dtype=np.uint8) for _ in range(2)]
    out = runner.run([{FRAME_IN.name: f} for f in frames])
    for frame, o in zip(frames, out):
        np.testing.assert_array_equal(o[FRAME_OUT.name], 255 - frame)


def test_onnx_runtime_failures_stay_inside_their_group(tmp_path, rng):
    config = {
        "name": "pairs",
        "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1, 2]}],
    }
    runner = OrtRunner(config=OrtModelConfig.from_triton(config), model_path=pairs_graph(tmp_path / "p.onnx"))
    even = rng.standard_normal((2, 6)).astype(np.float32)
    odd = rng.standard_normal((1, 5)).astype(np.float32)
    out = runner.run([{"X": odd}, {"X": even}, {"X": odd}])
    assert isinstance(out[0], InferenceError) and out[0] is out[2]
    assert "2 request(s)" in str(out[0]) and "X [2, 5]" in str(out[0])
    np.testing.assert_array_equal(out[1]["Y"], even.reshape(2, 3, 2))
    # the runner is still usable afterwards
    np.testing.assert_array_equal(runner.run([{"X": even}])[0]["Y"], even.reshape(2, 3, 2))


def test_intra_op_threads_reach_the_session(tmp_path):
    path = invert_graph(tmp_path / "model.onnx", channels=3)
    cfg = OrtModelConfig.from_triton(frame_config(parameters={"intra_op_thread_count": {"string_value": "1"}}))
    runner = OrtRunner(config=cfg, model_path=path, threads_override=2)
    assert runner.session.get_session_options().intra_op_num_threads == 2
