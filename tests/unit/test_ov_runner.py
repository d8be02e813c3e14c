"""stylize.engine.ov_runner: the native OpenVINO backend's parameters, this backend's share of a layout, and real
OpenVINO runs (outputs, bad requests, the model cache)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from stylize.contract.descriptors import FRAME_IN, FRAME_OUT
from stylize.engine.ov_runner import (
    CompileSettings,
    InvalidInputError,
    ModelConfigError,
    OvModelConfig,
    OvRunner,
    cache_dir_from_env,
    compile_network,
)
from test_ort_runner import frame_config, invert_graph

pytestmark = pytest.mark.unit


def ov_config(**params) -> dict:
    """An OpenVINO network config as the build writes it: no batching, the batch first of the dims."""
    return frame_config(
        max_batch_size=0,
        dims=(-1, -1, -1, 3),
        backend="openvino",
        default_model_filename="model.onnx",
        parameters={k: {"string_value": v} for k, v in params.items()},
    )


def test_native_parameters_and_this_backends_share_of_the_layout():
    cfg = OvModelConfig.from_triton(
        ov_config(
            NUM_STREAMS="2",
            INFERENCE_NUM_THREADS="4",
            PERFORMANCE_HINT="throughput",
            HINT_BF16="YES",
            stylize_id="animevideo_x4",
        )
        | {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    )
    assert (cfg.num_streams, cfg.inference_threads, cfg.performance_hint, cfg.hint_bf16) == (2, 4, "THROUGHPUT", True)
    assert cfg.instances == 2 and cfg.parameters["stylize_id"] == "animevideo_x4"
    # two processes here where the native backend has one compiled model: each takes half (unpinned, as all here)
    assert cfg.compile_settings() == CompileSettings(
        precision="bf16", threads=2, streams=1, hint="THROUGHPUT", pinning=False
    )
    alone = OvModelConfig.from_triton(ov_config(NUM_STREAMS="AUTO", precision="fp32"))
    assert alone.compile_settings() == CompileSettings(precision="fp32", threads=None, streams="AUTO", hint=None)
    assert CompileSettings().properties()["ENABLE_CPU_PINNING"] is False
    # no HINT_BF16 and no recorded precision: OpenVINO's own default, as natively
    assert OvModelConfig.from_triton(ov_config()).compile_settings().precision is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_batch_size": 4}, "fixes the batch"),
        ({"parameters": {"HINT_BF16": {"string_value": "NO"}}}, "HINT_BF16' to be YES"),
        ({"parameters": {"NUM_STREAMS": {"string_value": "many"}}}, "AUTO/NUMA/<int_value>"),
        ({"parameters": {"PERFORMANCE_HINT": {"string_value": "fast"}}}, "LATENCY/THROUGHPUT"),
        ({"parameters": {"INFERENCE_NUM_THREADS": {"string_value": "-1"}}}, "non-negative number"),
        ({"parameters": {"TARGET_DEVICE": {"string_value": "GPU"}}}, "only CPU"),
        ({"parameters": {"RESHAPE_IO_LAYERS": {"string_value": "yes"}}}, "not supported"),
        ({"parameters": {"precision": {"string_value": "fp16"}}}, "precision"),
    ],
)
def test_configs_the_native_backend_would_refuse_or_serve_differently_are_refused(change, message):
    with pytest.raises(ModelConfigError, match=message):
        OvModelConfig.from_triton(ov_config() | change)


def test_runner_serves_the_file_the_config_names(tmp_path):
    invert_graph(tmp_path / "net.onnx", channels=3)  # the file the config names
    cfg = OvModelConfig.from_triton(
        ov_config(INFERENCE_NUM_THREADS="1", precision="fp32") | {"default_model_filename": "net.onnx"}
    )
    assert cfg.model_filename == "net.onnx"
    runner = OvRunner(config=cfg, model_path=tmp_path / cfg.model_filename)
    assert (runner.built.precision, runner.built.threads, runner.built.streams) == ("fp32", 1, 1)
    x = np.random.default_rng(3).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    good, wrong_type, empty = runner.run(
        [{FRAME_IN.name: x}, {FRAME_IN.name: x.astype(np.float32)}, {FRAME_IN.name: x[:, :0]}]
    )
    np.testing.assert_array_equal(good[FRAME_OUT.name], 255 - x)  # a batch of 3 in one request: no batching here
    assert isinstance(wrong_type, InvalidInputError) and "TYPE_UINT8" in str(wrong_type)
    assert isinstance(empty, InvalidInputError) and "empty axis" in str(empty)
    with pytest.raises(ModelConfigError, match="does not exist"):
        OvRunner(config=cfg, model_path=tmp_path / "model.onnx")


def test_config_tensors_must_match_the_graph(tmp_path):
    path = invert_graph(tmp_path / "model.onnx", channels=3)
    renamed = ov_config()
    renamed["input"][0]["name"] = "IMAGE"
    with pytest.raises(ModelConfigError, match="not in the ONNX graph"):
        OvRunner(config=OvModelConfig.from_triton(renamed), model_path=path)
    wrong_rank = ov_config() | {"input": [{"name": FRAME_IN.name, "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}]}
    with pytest.raises(ModelConfigError, match="rank"):
        OvRunner(config=OvModelConfig.from_triton(wrong_rank), model_path=path)


def test_the_model_cache_is_used_and_an_unusable_one_costs_only_the_cache(tmp_path):
    path = invert_graph(tmp_path / "model.onnx", channels=3)
    cache = tmp_path / "cache"
    first = compile_network(path, CompileSettings(threads=1, cache_dir=cache))
    assert first.cache_dir == cache and not first.from_cache
    (blob,) = cache.glob("*.blob")  # the compiled network is there for the next start
    again = compile_network(path, CompileSettings(threads=1, cache_dir=cache))
    assert again.from_cache and "from the cache" in again.describe()
    other = compile_network(path, CompileSettings(threads=2, cache_dir=cache))
    assert not other.from_cache and len(list(cache.glob("*.blob"))) == 2  # other properties, another blob
    whole = blob.read_bytes()
    blob.write_bytes(whole[: len(whole) // 2])  # what a process killed while writing would have left (OpenVINO's own)
    mended = compile_network(path, CompileSettings(threads=1, cache_dir=cache))
    assert not mended.from_cache and mended.cache_dir == cache and blob.stat().st_size == len(whole)
    assert not list(cache.glob(".*.tmp"))
    np.testing.assert_array_equal(
        mended.compiled.create_infer_request().infer({0: np.full((1, 2, 2, 3), 9, np.uint8)})[0],
        np.full((1, 2, 2, 3), 246, np.uint8),
    )
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    fallback = compile_network(path, CompileSettings(threads=1, cache_dir=blocked / "openvino"))
    assert fallback.cache_dir is None and fallback.cache_error
    request = fallback.compiled.create_infer_request()
    x = np.full((1, 2, 2, 3), 7, np.uint8)
    np.testing.assert_array_equal(request.infer({0: x})[0], 255 - x)


def test_cache_folder_from_the_environment():
    assert cache_dir_from_env({"STYLIZE_OV_CACHE": "/var/cache/ov"}) == type(cache_dir_from_env({}))("/var/cache/ov")
    assert cache_dir_from_env({"STYLIZE_OV_CACHE": "off"}) is None
    assert str(cache_dir_from_env({})).endswith(os.path.join(".cache", "stylize", "openvino"))


RACE = """
import sys
from pathlib import Path
from stylize.engine.ov_runner import CompileSettings, compile_network
built = compile_network(Path(sys.argv[1]), CompileSettings(threads=1, cache_dir=Path(sys.argv[2])))
print("from cache" if built.from_cache else "compiled")
"""


def test_processes_that_compile_one_network_on_a_cold_cache_all_get_it(model_repository, tmp_path):
    """An image step's two instances (two processes) compile its network at once on a fresh machine. With OpenVINO's
    own CACHE_DIR this killed a stub in CI (SIGBUS: a blob mapped while another process wrote it; reproduced here
    twice in 36 starts with this network). Three processes, three rounds, each on a cold cache: every one gets the
    network, one compiles it, the others import what it wrote, and one whole blob is left."""
    import subprocess
    import sys

    net = model_repository / "animevideo_x3_net" / "1" / "model.onnx"
    for round_ in range(3):
        cache = tmp_path / f"cache{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(net), str(cache)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [(p.wait(timeout=300), p.stdout.read().strip(), p.stderr.read()[-500:]) for p in procs]
        assert all(code == 0 for code, _, _ in results), results
        assert sorted(out for _, out, _ in results) == ["compiled", "from cache", "from cache"], results
        assert len(list(cache.glob("*.blob"))) == 1 and not list(cache.glob(".*.tmp"))
