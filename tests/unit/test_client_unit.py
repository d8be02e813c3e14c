"""SDK and CLI logic that needs no server: input/output kinds, options, errors, retry policy, folder walking and
output naming, frame padding, video window planning, metrics."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize.commands.infer import ensure_format, plan_jobs, side_by_side
from stylize.contract.descriptors import OUTPUT_FORMAT, OUTSCALE, QUALITY, REGISTRY
from stylize.contract.errors import (
    InvalidInput,
    ModelNotFound,
    ServerError,
    ServerUnavailable,
    StylizeError,
    Timeout,
    from_status,
    from_triton,
)
from stylize.contract.frames import RawModel, crop_frames, pad_to_multiple
from stylize.engine.photos import photo_path, real_photo_crop
from stylize.sdk.client import StylizeClient
from stylize.sdk.info import model_infos
from stylize.sdk.request import (
    build_options,
    decode_output,
    encode_input,
    image_format,
    kind_of,
    option_tensors,
    run_frames,
    tile_for,
)
from stylize.sdk.transport import ClientStats, RetryPolicy
from stylize.sdk.video import WindowPlanner, plan_windows, temp_path, window_indices

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _png(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, "PNG")
    return out.getvalue()


# ---- input and output kinds ------------------------------------------------------------------------------------


def test_kinds_of_every_accepted_input(tmp_path):
    arr = real_photo_crop(16, 20)
    assert kind_of(arr) == "array"
    assert kind_of(Image.fromarray(arr)) == "pil"
    assert kind_of(str(tmp_path / "a.png")) == "path"
    assert kind_of(tmp_path / "a.png") == "path"
    assert kind_of(b"x") == kind_of(bytearray(b"x")) == kind_of(memoryview(b"x")) == "bytes"
    with pytest.raises(InvalidInput, match="unsupported input type"):
        kind_of(3.5)


@pytest.mark.parametrize("shape", [(12, 10, 3), (12, 10), (12, 10, 1), (12, 10, 4)])
def test_arrays_travel_as_lossless_png(shape):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    data, kind = encode_input(arr)
    assert kind == "array" and image_format(data) == "PNG"
    with Image.open(io.BytesIO(data)) as im:
        back = np.asarray(im)
    np.testing.assert_array_equal(back, arr.reshape(back.shape))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 2), np.uint8), "shape"),
        (np.zeros((2, 8, 8, 3), np.uint8), "shape"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
    ],
)
def test_bad_arrays_are_refused_before_any_request(bad, match):
    with pytest.raises(InvalidInput, match=match):
        encode_input(bad)


def test_pil_input_keeps_pixels():
    arr = real_photo_crop(24, 24)
    data, kind = encode_input(Image.fromarray(arr))
    assert kind == "pil"
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), arr)
    cmyk = Image.fromarray(arr).convert("CMYK")  # PNG cannot hold CMYK: converted to RGB first
    data, _ = encode_input(cmyk)
    assert image_format(data) == "PNG"


def test_paths_and_bytes_are_sent_untouched(tmp_path):
    jpeg = photo_path("rocket.jpg").read_bytes()
    f = tmp_path / "r.jpg"
    f.write_bytes(jpeg)
    assert encode_input(f) == (jpeg, "path")
    assert encode_input(str(f)) == (jpeg, "path")
    assert encode_input(jpeg) == (jpeg, "bytes")


def test_missing_file_and_empty_bytes_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInput) as e:
        encode_input(tmp_path / "nope.png")
    assert "cannot read" in e.value.reason
    with pytest.raises(InvalidInput, match="empty"):
        encode_input(b"")


@pytest.mark.parametrize("mode, shape", [("L", (10, 14)), ("RGBA", (10, 14, 4)), ("RGB", (10, 14, 3))])
def test_array_outputs_keep_the_servers_layout(mode, shape):
    arr = np.random.default_rng(2).integers(0, 256, size=shape, dtype=np.uint8)
    out = decode_output(_png(arr), "array")
    np.testing.assert_array_equal(out, arr)
    assert decode_output(_png(arr), "pil").mode == mode
    if mode == "L":  # PNG has no HxWx1: the input's trailing axis comes back
        assert decode_output(_png(arr), "array", like=arr[..., None]).shape == (10, 14, 1)


def test_outputs_come_back_as_the_kind_given():
    arr = real_photo_crop(10, 14)
    data = _png(arr)
    out = decode_output(data, "array")
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    pil = decode_output(data, "pil")
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (14, 10)
    assert decode_output(data, "path") is data
    assert decode_output(data, "bytes") is data


def test_image_format_magic():
    arr = real_photo_crop(8, 8)
    assert image_format(_png(arr)) == "PNG"
    for fmt in ("JPEG", "WEBP"):
        out = io.BytesIO()
        Image.fromarray(arr).save(out, fmt)
        assert image_format(out.getvalue()) == fmt
    assert image_format(b"garbage") is None


# ---- options ---------------------------------------------------------------------------------------------------


def test_options_are_typed_and_travel_as_the_ensembles_optional_inputs():
    values = build_options(
        {"output_format": "jpg", "quality": "90", "outscale": 2, "max_side": 1024.0, "tile_size": None}
    )
    assert values == {"output_format": "JPEG", "quality": 90, "outscale": 2.0, "max_side": 1024}
    assert isinstance(values["outscale"], float) and isinstance(values["max_side"], int)
    wire = {name: (dtype, arr) for name, dtype, arr in option_tensors(values)}
    assert wire[OUTPUT_FORMAT.tensor.name][0] == "BYTES" and wire[OUTPUT_FORMAT.tensor.name][1].tolist() == [[b"JPEG"]]
    assert wire[QUALITY.tensor.name][1].dtype == np.int32 and wire[QUALITY.tensor.name][1].shape == (1, 1)
    assert wire[OUTSCALE.tensor.name][1].dtype == np.float32 and wire[OUTSCALE.tensor.name][1].item() == 2.0


def test_a_pinned_version_of_an_image_model_travels_as_net_version():
    """An ensemble has one version: the network's version goes as the NET_VERSION input (the image step runs it);
    a model the descriptors do not know keeps its own Triton version."""
    import tritonclient.grpc as grpcclient
    from stylize.contract.descriptors import NET_VERSION
    from stylize.sdk.request import image_request

    inputs, _, model_version = image_request(grpcclient, "animevideo_x4", b"png", {}, "2")
    assert model_version == "" and [i.name() for i in inputs] == ["IMAGE_BYTES", NET_VERSION.tensor.name]
    assert inputs[1].datatype() == "INT64" and inputs[1].shape() == [1, 1]
    assert image_request(grpcclient, "esrgan_x4_int8", b"png", {}, 3)[2] == ""  # the INT8 network's version
    inputs, _, model_version = image_request(grpcclient, "animevideo_x4", b"png", {})
    assert model_version == "" and [i.name() for i in inputs] == ["IMAGE_BYTES"]
    inputs, _, model_version = image_request(grpcclient, "someone_elses_model", b"png", {}, 4)
    assert model_version == "4" and len(inputs) == 1
    for bad in ("latest", 0, "-1"):
        with pytest.raises(InvalidInput, match="model version"):
            image_request(grpcclient, "animevideo_x4", b"png", {}, bad)


@pytest.mark.parametrize(
    "options, error",
    [
        ({"output_format": "gif"}, InvalidInput),
        ({"quality": 0}, InvalidInput),
        ({"quality": 101}, InvalidInput),
        ({"outscale": 0}, InvalidInput),
        ({"max_side": 0}, InvalidInput),
        ({"colour": "red"}, TypeError),
        ({"colour": None}, TypeError),
    ],
)
def test_bad_options_are_refused(options, error):
    with pytest.raises(error):
        build_options(options)


def test_options_a_model_does_not_take_are_refused_before_the_upload():
    untiled = next(
        d for d in REGISTRY.values() if not d.is_video_window and "tile_size" not in {o.name for o in d.options}
    )
    with pytest.raises(InvalidInput, match="does not apply"):
        build_options({"tile_size": 64}, untiled.id)
    no_max_side = next(
        d for d in REGISTRY.values() if not d.is_video_window and "max_side" not in {o.name for o in d.options}
    )
    with pytest.raises(InvalidInput, match="does not apply"):
        build_options({"max_side": 512}, no_max_side.id)
    assert build_options({"output_format": "png"}, no_max_side.id) == {"output_format": "PNG"}


# ---- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, cls",
    [
        ("StatusCode.UNAVAILABLE", ServerUnavailable),
        ("StatusCode.NOT_FOUND", ModelNotFound),
        ("StatusCode.INVALID_ARGUMENT", InvalidInput),
        ("StatusCode.DEADLINE_EXCEEDED", Timeout),
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.CANCELLED", ServerError),
        (None, ServerError),
    ],
)
def test_grpc_statuses_map_to_typed_errors(status, cls):
    err = from_status(status, "boom", model="m", url="u:1")
    assert type(err) is cls and isinstance(err, StylizeError)
    assert err.model == "m" and err.url == "u:1"


def test_invalid_input_carries_the_servers_reason_without_the_ensemble_prefix():
    from tritonclient.utils import InferenceServerException

    exc = InferenceServerException(
        "in ensemble 'animeganv2', not a recognised image (supported: PNG)", status="StatusCode.INVALID_ARGUMENT"
    )
    err = from_triton(exc, model="animeganv2")
    assert isinstance(err, InvalidInput) and isinstance(err, ValueError)
    assert err.reason == "not a recognised image (supported: PNG)"
    assert err.status == "INVALID_ARGUMENT"


def test_typed_errors_are_also_builtin_kinds():
    assert issubclass(ServerUnavailable, ConnectionError)
    assert issubclass(Timeout, TimeoutError)
    assert issubclass(ModelNotFound, LookupError)


# ---- retry policy ----------------------------------------------------------------------------------------------


def test_retry_only_on_unavailable():
    policy = RetryPolicy(attempts=5, deadline=None)
    unavailable = ServerUnavailable("down")
    assert policy.should_retry(unavailable, attempt=1, elapsed=0)
    for err in (InvalidInput("bad"), ModelNotFound("nope"), Timeout("slow"), ServerError("internal")):
        assert not policy.should_retry(err, attempt=1, elapsed=0)
    assert not policy.should_retry(unavailable, attempt=5, elapsed=0)  # attempts used up


def test_a_restricted_admin_api_is_access_denied_not_a_server_down():
    """Triton refuses a restricted gRPC protocol with UNAVAILABLE (and HTTP with 403): not retried."""
    from stylize.contract.errors import AccessDenied

    err = from_status(
        "StatusCode.UNAVAILABLE",
        "This protocol is restricted, expecting header 'triton-grpc-protocol-stylize-admin-key'",
        url="u:1",
    )
    assert isinstance(err, AccessDenied) and isinstance(err, PermissionError) and "STYLIZE_ADMIN_KEY" in str(err)
    assert not RetryPolicy(attempts=5, deadline=None).should_retry(err, attempt=1, elapsed=0)
    assert isinstance(from_status("UNAVAILABLE", "Socket closed"), ServerUnavailable)


def test_retry_deadline():
    policy = RetryPolicy(attempts=None, deadline=10.0)
    assert policy.should_retry(ServerUnavailable("down"), attempt=100, elapsed=9.9)
    assert not policy.should_retry(ServerUnavailable("down"), attempt=2, elapsed=10.0)


def test_backoff_grows_exponentially_with_bounded_jitter_and_cap():
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.2)
    rng = random.Random(0)
    for attempt, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        for _ in range(50):
            assert base * 0.8 - 1e-9 <= policy.backoff(attempt, rng=rng) <= base * 1.2 + 1e-9
    assert policy.backoff(9, remaining=0.05, rng=rng) == pytest.approx(0.05)
    assert policy.backoff(9, remaining=-1, rng=rng) == 0.0


def test_retry_policy_validates():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=2, max_backoff=1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.0)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_client_retries_unavailable_then_raises_typed_error():
    """A real gRPC channel to a port nobody listens on: UNAVAILABLE, retried, then ServerUnavailable."""
    policy = RetryPolicy(attempts=3, deadline=None, initial_backoff=0.01, max_backoff=0.02)
    with StylizeClient(url=f"127.0.0.1:{_closed_port()}", retry=policy, timeout=5) as client:
        with pytest.raises(ServerUnavailable) as e:
            client.infer(real_photo_crop(8, 8))
        assert e.value.status == "UNAVAILABLE"
        assert e.value.__cause__ is None and e.value.__suppress_context__  # no tritonclient exception chained
        assert client.stats.requests == 3 and client.stats.retries == 2 and client.stats.ok == 0
        assert client.stats.errors["unavailable"] == 3
        assert "2 attempts retried" in client.stats.summary() and client.stats.outages == 1
        h = client.health(timeout=1)
        assert not h.ok and h.error and not h.models


def test_client_side_validation_sends_nothing():
    with StylizeClient(url=f"127.0.0.1:{_closed_port()}", retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(InvalidInput):
            client.infer(np.zeros((4, 4, 3), np.float64))
        with pytest.raises(InvalidInput, match="video model"):
            client.infer(real_photo_crop(8, 8), "basicvsr_x4")
        with pytest.raises(TypeError):
            client.infer(real_photo_crop(8, 8), colour="red")
        assert client.stats.requests == 0


def test_client_refuses_unknown_compression():
    with pytest.raises(ValueError):
        StylizeClient(url="127.0.0.1:1", compression="brotli")


def test_default_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STYLIZE_URL", "example.test:9001")
    with StylizeClient() as client:
        assert client.url == "example.test:9001"


# ---- frames ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w, multiple, min_side", [(30, 45, 4, 1), (17, 9, 4, 32), (32, 32, 4, 32), (3, 5, 1, 8)])
def test_a_batch_of_frames_is_padded_frame_by_frame_and_cropped_back(h, w, multiple, min_side):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, h, w, 3), dtype=np.uint8)
    padded = pad_to_multiple(frames, multiple, min_side)
    for i in range(2):
        np.testing.assert_array_equal(padded[i], pad_to_multiple(frames[i], multiple, min_side))
    scale = 3
    out = padded.repeat(scale, axis=1).repeat(scale, axis=2)  # what a nearest x3 network would return
    cropped = crop_frames(out, h, w, padded.shape[1], padded.shape[2])
    np.testing.assert_array_equal(cropped, frames.repeat(scale, axis=1).repeat(scale, axis=2))


def test_large_frames_go_through_in_tiles_that_blend_back_exactly():
    """A stand-in x2 network (nearest neighbour) is tile-invariant: tiling must give the untiled result exactly."""
    raw = RawModel(
        name="x_net",
        input="FRAME",
        output="FRAME_OUT",
        max_batch_size=4,
        window=None,
        size_multiple=4,
        min_size=16,
        scale=2,
        tile_size=48,
        tile_overlap=8,
        tile_batch=2,
    )
    calls = []

    def run(batch):
        calls.append(batch.shape)
        assert batch.shape[1] <= 48 and batch.shape[2] <= 48  # no request larger than a tile
        return batch.repeat(2, axis=1).repeat(2, axis=2)

    frames = np.random.default_rng(3).integers(0, 256, size=(2, 70, 101, 3), dtype=np.uint8)
    out = run_frames(frames, raw, tile_for(raw, None), run)
    np.testing.assert_array_equal(out, frames.repeat(2, axis=1).repeat(2, axis=2))
    assert len(calls) > 2
    calls.clear()
    whole = run_frames(frames[0], raw, tile_for(raw, 0), lambda b: b.repeat(2, axis=1).repeat(2, axis=2))
    np.testing.assert_array_equal(whole, out[0])
    with pytest.raises(InvalidInput):
        tile_for(raw, 16)  # not more than twice the overlap


def test_tiles_go_one_per_request_to_a_cpu_network_and_tile_batch_to_a_gpu_one():
    """Read from the network's metadata (the config is an admin API): an ONNX model (CPU instances) runs one request
    per execution, so a tiled frame is sent one tile per request (measured faster, see tiling.CPU_TILES_PER_CALL);
    a TensorRT plan batches."""
    from stylize.sdk.info import raw_model_from_metadata

    def metadata(name, platform):
        return {
            "name": name,
            "versions": ["1"],
            "platform": platform,
            "inputs": [{"name": "FRAME", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}],
            "outputs": [{"name": "FRAME_OUT", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}],
        }

    cpu = raw_model_from_metadata("esrgan_x4", metadata("esrgan_x4_net", "onnxruntime_onnx"))
    gpu = raw_model_from_metadata("esrgan_x4", metadata("esrgan_x4_trt", "tensorrt_plan"))
    # an OpenVINO network (max_batch_size 0, the batch first of its dims: the same metadata shape) is a CPU one too
    openvino = raw_model_from_metadata("esrgan_x4", metadata("esrgan_x4_net", "openvino"))
    assert (openvino.tiles_per_call, openvino.max_batch_size) == (1, cpu.max_batch_size)
    assert cpu.tiles_per_call == 1 and gpu.tiles_per_call is None and cpu.tile_batch == gpu.tile_batch > 1
    assert cpu.max_batch_size == gpu.max_batch_size == REGISTRY["esrgan_x4"].serving.max_batch_size
    assert cpu.window is None
    frames = np.random.default_rng(5).integers(0, 256, size=(1, 900, 900, 3), dtype=np.uint8)
    for raw, most in ((cpu, 1), (gpu, cpu.tile_batch)):
        sizes = []

        def run(batch):
            sizes.append(len(batch))
            return np.zeros((len(batch), batch.shape[1] * 4, batch.shape[2] * 4, 3), np.uint8)

        run_frames(frames, raw, tile_for(raw, None), run)
        assert len(sizes) > 1 and max(sizes) == most


# ---- model listing ---------------------------------------------------------------------------------------------


def test_model_infos_group_triton_models_by_stylize_id():
    def cfg(name, sid, **p):
        return {
            "name": name,
            "parameters": {
                k: {"string_value": v}
                for k, v in {"stylize_id": sid, "task": "sr", "scale": "2", "weights": "real", "license": "BSD"}.items()
                | p.items()
            },
        }

    index = [
        {"name": "animevideo_x2", "version": "1", "state": "READY"},
        {"name": "animevideo_x2_net", "version": "1", "state": "READY"},
        {"name": "animevideo_x2_net", "version": "2", "state": "READY"},
        {"name": "animevideo_x2_net", "version": "3", "state": "UNAVAILABLE"},
        {"name": "animevideo_x2_pre", "version": "1", "state": "READY"},
    ]
    configs = {
        "animevideo_x2": cfg("animevideo_x2", "animevideo_x2"),
        "animevideo_x2_net": cfg("animevideo_x2_net", "animevideo_x2"),
        "animevideo_x2_pre": cfg("animevideo_x2_pre", "animevideo_x2"),
    }
    index += [
        {"name": "animevideo_x2_int8", "version": "1", "state": "READY"},
        {"name": "animevideo_x2_int8_net", "version": "4", "state": "READY"},
    ]
    configs["animevideo_x2_int8"] = cfg("animevideo_x2_int8", "animevideo_x2") | {"platform": "ensemble"}
    configs["animevideo_x2_int8_net"] = cfg("animevideo_x2_int8_net", "animevideo_x2")
    info, int8 = model_infos(index, configs)
    assert (info.id, info.task, info.scale, info.weights, info.versions, info.ready) == (
        "animevideo_x2",
        "sr",
        2,
        "real",
        (1, 2),
        True,
    )
    assert info.title.startswith("Real-ESRGAN animevideov3 x2")
    assert (int8.id, int8.versions) == ("animevideo_x2_int8", (4,)) and int8.title.endswith("(INT8)")


# ---- folder walking and output naming (stylize infer) ----------------------------------------------------------


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folders_keep_their_layout_with_suffix_and_ext(tmp_path):
    src = tmp_path / "photos"
    _tree(src, ["a.jpg", "sub/b.PNG", "sub/deeper/c.webp", "notes.txt", ".hidden.png", ".cache/d.png"])
    out = tmp_path / "out"
    jobs, problems = plan_jobs([src], out, suffix="_anime", ext="JPG")
    # a file that is not an image is listed as skipped (not silently dropped, not an error); hidden ones are not
    assert [(p.path.name, p.skipped) for p in problems] == [("notes.txt", True)]
    assert problems[0].reason.startswith("skipped: not an image file")
    assert [(j.src.relative_to(src).as_posix(), j.dst.relative_to(out).as_posix()) for j in jobs] == [
        ("a.jpg", "a_anime.jpg"),
        ("sub/b.PNG", "sub/b_anime.jpg"),
        ("sub/deeper/c.webp", "sub/deeper/c_anime.jpg"),
    ]


def test_models_that_take_no_image_files_say_what_to_use():
    from stylize.commands.infer import model_problem

    assert model_problem("esrgan_x4") is None and model_problem("animevideo_x2_int8") is None
    assert "video model" in model_problem("basicvsr_x4") and "stylize video" in model_problem("basicvsr_x4")
    assert "raw-frame network model" in model_problem("esrgan_x4_net") and "-m esrgan_x4`" in model_problem(
        "esrgan_x4_net"
    )
    assert "-m esrgan_x4_int8`" in model_problem("esrgan_x4_int8_net")
    assert "-m esrgan_x4`" in model_problem("esrgan_x4_image")
    assert model_problem("someone_elses_model") is None  # the server answers for names we do not know


def test_explicit_files_and_missing_paths(tmp_path):
    _tree(tmp_path, ["x/one.png", "two.bmp"])
    jobs, problems = plan_jobs([tmp_path / "x/one.png", tmp_path / "two.bmp", tmp_path / "ghost.png"], tmp_path / "out")
    assert [j.dst.name for j in jobs] == ["one.png", "two.png"]
    assert [(p.path.name, p.reason) for p in problems] == [("ghost.png", "no such file or folder")]


def test_single_file_to_a_file_name(tmp_path):
    _tree(tmp_path, ["one.jpg"])
    jobs, _ = plan_jobs([tmp_path / "one.jpg"], tmp_path / "result.webp", ext="webp")
    assert [j.dst for j in jobs] == [tmp_path / "result.webp"]


def test_an_input_is_never_an_output(tmp_path):
    src = tmp_path / "photos"
    _tree(src, ["a.png", "b.jpg"])
    jobs, problems = plan_jobs([src], src)  # same folder, no suffix, png: a.png would be overwritten
    assert [j.src.name for j in jobs] == ["b.jpg"] and jobs[0].dst == src / "b.png"
    assert [p.path.name for p in problems] == ["a.png"] and "overwrite an input" in problems[0].reason


def test_output_folder_inside_the_input_is_not_walked(tmp_path):
    src = tmp_path / "photos"
    _tree(src, ["a.png", "out/a.png", "out/sub/z.png"])
    jobs, problems = plan_jobs([src], src / "out")
    assert [j.src.relative_to(src).as_posix() for j in jobs] == ["a.png"] and problems == []


def test_colliding_output_names_are_reported(tmp_path):
    _tree(tmp_path / "p", ["a.jpg", "a.png"])
    jobs, problems = plan_jobs([tmp_path / "p"], tmp_path / "out")
    assert len(jobs) == 1 and len(problems) == 1 and "same output name" in problems[0].reason


def test_side_by_side_is_an_extra_output_checked_like_the_result(tmp_path):
    _tree(tmp_path / "p", ["a.png", "sub/b.jpg", "c.png", "c_side_by_side.png"])
    out = tmp_path / "out"
    jobs, problems = plan_jobs([tmp_path / "p"], out, suffix="_x2", ext="jpg", side_by_side=True)
    assert [(j.dst.relative_to(out).as_posix(), j.side_by_side.relative_to(out).as_posix()) for j in jobs] == [
        ("a_x2.jpg", "a_x2_side_by_side.jpg"),
        ("c_x2.jpg", "c_x2_side_by_side.jpg"),
        ("c_side_by_side_x2.jpg", "c_side_by_side_x2_side_by_side.jpg"),
        ("sub/b_x2.jpg", "sub/b_x2_side_by_side.jpg"),
    ]
    assert problems == []
    # without a suffix, c.png's composite would take the name of c_side_by_side.png's result
    jobs, problems = plan_jobs([tmp_path / "p"], out, side_by_side=True)
    assert [p.path.name for p in problems] == ["c_side_by_side.png"] and "same output name" in problems[0].reason
    [single] = plan_jobs([tmp_path / "p" / "a.png"], tmp_path / "pair.png", side_by_side=True)[0]
    assert (single.dst, single.side_by_side) == (tmp_path / "pair.png", tmp_path / "pair_side_by_side.png")
    assert plan_jobs([tmp_path / "p" / "a.png"], tmp_path / "r.png")[0][0].side_by_side is None


def test_ensure_format_reencodes_only_when_needed():
    png = _png(real_photo_crop(16, 16))
    assert ensure_format(png, "PNG", 90) is png
    jpeg = ensure_format(png, "JPEG", 90)
    assert image_format(jpeg) == "JPEG"
    assert image_format(ensure_format(png, "WEBP", 90)) == "WEBP"


def test_ext_auto_keeps_each_input_s_extension(tmp_path):
    src = tmp_path / "photos"
    _tree(src, ["a.jpg", "b.PNG", "c.webp", "sub/d.bmp", "sub/e.tif", "f.tiff", "g.JPEG", "a.png"])
    out = tmp_path / "out"
    jobs, problems = plan_jobs([src], out, suffix="_x2", ext="auto")
    assert problems == []  # a.jpg and a.png no longer collide
    assert [j.dst.relative_to(out).as_posix() for j in jobs] == [
        "a_x2.jpg",
        "a_x2.png",
        "b_x2.PNG",
        "c_x2.webp",
        "f_x2.tiff",
        "g_x2.JPEG",
        "sub/d_x2.bmp",
        "sub/e_x2.tif",
    ]
    # a BMP with alpha: PNG, as Real-ESRGAN writes RGBA results (a BMP result would not hold the alpha readably)
    (src / "h.bmp").write_bytes(_bmp_with_alpha(np.full((4, 6, 4), 200, np.uint8)))
    with Image.open(src / "h.bmp") as im:
        assert im.mode == "RGBA"
    assert [j.dst.name for j in plan_jobs([src / "h.bmp"], out, ext="auto")[0]] == ["h.png"]
    # one file to a file name: that name's format
    [single] = plan_jobs([src / "a.jpg"], tmp_path / "r.tif", ext="auto")[0]
    assert single.dst == tmp_path / "r.tif"


def _bmp_with_alpha(rgba: np.ndarray) -> bytes:
    """A 32-bit BI_BITFIELDS BMP with an alpha mask (BITMAPV4HEADER), as image editors write them: Pillow reads it
    as RGBA (and writes RGBA BMPs that read back as RGB)."""
    import struct

    h, w = rgba.shape[:2]
    pixels = np.ascontiguousarray(rgba[::-1][..., [2, 1, 0, 3]]).tobytes()  # bottom-up BGRA
    header = struct.pack(
        "<IiiHHIIiiII4I4s36s3I",
        108,
        w,
        h,
        1,
        32,
        3,
        len(pixels),
        2835,
        2835,
        0,
        0,
        0x00FF0000,
        0x0000FF00,
        0x000000FF,
        0xFF000000,
        b"BGRs",
        bytes(36),
        0,
        0,
        0,
    )
    return struct.pack("<2sIHHI", b"BM", 14 + len(header) + len(pixels), 0, 0, 14 + len(header)) + header + pixels


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_bmp_and_tiff_are_written_losslessly_from_the_server_s_png(fmt, mode):
    from stylize.commands.infer import file_format, wire_format

    assert wire_format(fmt) == "PNG" and file_format(Path("x.TIF")) == "TIFF"
    rgb = real_photo_crop(12, 20)
    arrays = {
        "RGB": rgb,
        "RGBA": np.dstack([rgb, rgb[..., :1]]),
        "L": rgb[..., 0],
        "I;16": rgb[..., 0].astype(np.uint16) * 257 + 3,
    }
    buf = io.BytesIO()
    Image.fromarray(arrays[mode]).save(buf, "PNG", dpi=(300, 300))
    written = ensure_format(buf.getvalue(), fmt, 95)
    with Image.open(io.BytesIO(written)) as im:
        assert im.format == fmt
        got = np.asarray(im)
        if fmt == "TIFF":
            assert round(im.info["dpi"][0]) == 300
    if fmt == "BMP" and mode == "I;16":  # BMP holds 8 bits a channel: the high byte
        np.testing.assert_array_equal(got, arrays[mode] >> 8)
    elif fmt == "BMP" and mode == "RGBA":  # no readable alpha (--ext auto writes those as PNG)
        np.testing.assert_array_equal(got, arrays[mode][..., :3])
    else:
        np.testing.assert_array_equal(got, arrays[mode])


def test_side_by_side_puts_the_resized_input_left():
    small = real_photo_crop(10, 16)
    big = np.asarray(Image.fromarray(small).resize((32, 20), Image.Resampling.NEAREST))
    out = side_by_side(_png(small), _png(big), "PNG", 95)
    with Image.open(io.BytesIO(out)) as im:
        both = np.asarray(im)
    assert both.shape == (20, 64, 3)
    np.testing.assert_array_equal(both[:, 32:], big)


# ---- video windows ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 6, 7, 8, 10, 11, 20, 23, 50])
@pytest.mark.parametrize("window, margin", [(7, 2), (7, 1), (5, 0), (2, 0)])
def test_windows_keep_every_frame_once_with_context(n, window, margin):
    wins = plan_windows(n, window, margin)
    kept = [i for w in wins for i in range(w.keep_from, w.keep_to)]
    assert kept == list(range(n))
    for w in wins:
        assert w.start <= w.keep_from < w.keep_to <= w.start + window
        assert w.start >= 0 and (w.start + window <= n or n < window)
        for i in range(w.keep_from, w.keep_to):  # context on both sides wherever the clip has it
            assert i - w.start >= min(margin, i)
            assert w.start + window - 1 - i >= min(margin, n - 1 - i)


def test_online_window_planning_matches_offline():
    for n in (5, 9, 16, 31):
        planner = WindowPlanner(7, 2)
        online = []
        for seen in range(1, n + 1):
            online += list(planner.feed(seen, eof=False))
        online += list(planner.feed(n, eof=True))
        assert online == plan_windows(n, 7, 2)


def test_short_clips_are_mirrored_in_time():
    assert window_indices(0, 7, 3) == [0, 1, 2, 2, 1, 0, 0]
    assert window_indices(0, 4, 1) == [0, 0, 0, 0]
    assert window_indices(2, 3, 10) == [2, 3, 4]


def test_window_margin_must_leave_centre_frames():
    with pytest.raises(ValueError):
        WindowPlanner(7, 4)


def test_temporary_video_name_is_hidden_and_keeps_the_container(tmp_path):
    t = temp_path(tmp_path / "movie.mkv")
    assert t.parent == tmp_path and t.name.startswith(".movie.") and t.suffix == ".mkv"


# ---- metrics and stats -----------------------------------------------------------------------------------------


def test_client_metrics_record_latency_errors_and_retries():
    import prometheus_client
    from stylize.sdk.metrics import ClientMetrics

    registry = prometheus_client.CollectorRegistry()
    m = ClientMetrics(registry=registry)
    m.observe_request("animeganv2", 0.2, None)
    m.observe_request("animeganv2", 0.01, ServerUnavailable("down"))
    m.observe_retry("animeganv2", ServerUnavailable("down"), 0.25)
    get = registry.get_sample_value
    assert get("stylize_client_request_seconds_count", {"model": "animeganv2", "outcome": "ok"}) == 1
    assert get("stylize_client_request_seconds_sum", {"model": "animeganv2", "outcome": "ok"}) == pytest.approx(0.2)
    assert get("stylize_client_errors_total", {"model": "animeganv2", "kind": "unavailable"}) == 1
    assert get("stylize_client_retries_total", {"model": "animeganv2"}) == 1


def test_stats_summary_says_what_happened(monkeypatch):
    import stylize.sdk.transport as transport_module

    # the stats' clock, injected: each observation happens at the next of these times
    clock = iter([100.0, 101.0, 102.5, 104.0])
    monkeypatch.setattr(transport_module.time, "monotonic", lambda: next(clock))
    s = ClientStats()
    s.observe_request("m", 0.1, None)  # at 100.0
    s.observe_request("m", 0.2, ServerUnavailable("down"))  # at 101.0: sent at 100.8, the outage starts there
    s.observe_retry("m", ServerUnavailable("down"), 0.5)
    s.observe_request("m", 0.1, ServerUnavailable("down"))  # at 102.5: the same outage
    s.observe_retry("m", ServerUnavailable("down"), 0.5)
    assert s.outages == 1 and "still unavailable" in s.summary()
    s.observe_request("m", 0.3, None)  # at 104.0: sent at 103.7, after the failures came back: the server is back
    assert s.outages == 1 and s.outage_seconds == pytest.approx(104.0 - 100.8)
    assert s.retries == 2 and s.retry_wait_seconds == pytest.approx(1.0) and s.requests == 4 and s.ok == 2
    assert s.summary() == (
        "2 requests ok; the server was unavailable 1 time for 3.2 s, 2 attempts retried; failed attempts: unavailable 2"
    )


def test_a_request_sent_before_an_outage_does_not_end_it(monkeypatch):
    """Two requests in flight when the server dies: one fails, the other (sent earlier, answered just before the
    kill) is observed after it. That success says nothing about the server now: still one outage, not two."""
    import stylize.sdk.client as client_module

    clock = iter([10.0, 10.05, 10.5, 13.0])
    monkeypatch.setattr(client_module.time, "monotonic", lambda: next(clock))
    s = ClientStats()
    s.observe_request("m", 0.5, ServerUnavailable("down"))  # at 10.0: failed (sent at 9.5)
    s.observe_request("m", 1.0, None)  # at 10.05: ok, but sent at 9.05, before the failure came back
    assert s.outages == 1 and s.outage_seconds == 0.0  # still down as far as anyone knows
    s.observe_request("m", 0.1, ServerUnavailable("down"))  # at 10.5: the same outage, not a second one
    s.observe_request("m", 0.2, None)  # at 13.0: sent at 12.8, after the failure: the server is back
    assert s.outages == 1 and s.outage_seconds == pytest.approx(13.0 - 9.5)


# ---- no torch ----------------------------------------------------------------------------------------------------


def test_sdk_and_cli_never_import_torch():
    code = (
        "import sys, stylize.sdk.client, stylize.sdk.video, stylize.sdk.metrics, stylize.contract.errors, stylize.cli; "
        "stylize.cli.make_parser(); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "client"), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_a_closed_client_raises_a_typed_error_at_once():
    client = StylizeClient(url=f"127.0.0.1:{_closed_port()}", retry=RetryPolicy(deadline=30))
    client.close()
    with pytest.raises(StylizeError, match="closed"):
        client.infer(real_photo_crop(8, 8))


def test_close_ends_retry_waits_at_once():
    """Ctrl-C in the CLI closes the client: a call waiting out a dead server must not sit out its backoff. The
    backoff here is an hour and there is no deadline, so only close() can end the wait: the call returns with the
    one failed attempt it made, and never makes a second (the joins' timeouts only guard against a hang)."""
    import threading
    import time

    client = StylizeClient(
        url=f"127.0.0.1:{_closed_port()}", retry=RetryPolicy(deadline=None, initial_backoff=3600, max_backoff=3600)
    )
    errors = []
    t = threading.Thread(
        target=lambda: errors.append(pytest.raises(StylizeError, client.infer, real_photo_crop(8, 8))), daemon=True
    )
    t.start()
    deadline = time.monotonic() + 60  # a hang guard: the first attempt fails at once (nothing listens there)
    while client.stats.retries == 0 and t.is_alive():  # the failed attempt is booked, the hour's wait begins
        assert time.monotonic() < deadline, "the first attempt never failed"
        time.sleep(0.01)
    client.close()
    t.join(timeout=60)
    assert not t.is_alive(), "close() did not end the retry wait"
    assert errors and isinstance(errors[0].value, ServerUnavailable)  # the attempt's own error, raised at close
    assert (client.stats.requests, client.stats.retries) == (1, 1)  # one attempt, one wait, no second attempt
    assert client.stats.retry_wait_seconds == pytest.approx(3600, rel=0.2)  # the policy's backoff (+/- jitter)


def test_raw_frames_go_to_the_network_model_the_server_loads():
    """A CPU pod loads <id>_net, a GPU pod <id>_trt only: the client asks which is ready, in that order; a plan's
    metadata brings its profile's largest side (tiles stay within it; BasicVSR windows larger are refused)."""
    from stylize.sdk.info import raw_candidates, raw_model_from_metadata
    from stylize.sdk.request import _frames_batch

    esr, vsr = REGISTRY["esrgan_x4"], REGISTRY["basicvsr_x4"]
    assert raw_candidates("esrgan_x4") == (esr.net_model, esr.trt_model)
    assert raw_candidates("esrgan_x4_int8") == (esr.int8_model,)
    assert raw_candidates("someone_elses") == ("someone_elses",)

    def meta(desc, platform):
        dims = [-1, *desc.net_input.dims]
        return {
            "name": desc.trt_model,
            "platform": platform,
            "inputs": [{"name": desc.net_input.name, "shape": dims}],
            "outputs": [{"name": desc.net_output.name, "shape": dims}],
        }

    plan = raw_model_from_metadata("esrgan_x4", meta(esr, "tensorrt_plan"))
    assert plan.max_side == esr.serving.gpu_max_side and plan.tiles_per_call is None  # tile_batch tiles per call
    assert raw_model_from_metadata("esrgan_x4", meta(esr, "openvino")).max_side is None
    window = raw_model_from_metadata("basicvsr_x4", meta(vsr, "tensorrt_plan"))
    ok = np.zeros((vsr.window, 64, vsr.serving.gpu_max_side, 3), np.uint8)
    assert _frames_batch(ok, window)[0].shape == (1, *ok.shape)
    with pytest.raises(InvalidInput, match="at most 512 pixels a side"):
        _frames_batch(np.zeros((vsr.window, 64, vsr.serving.gpu_max_side + 4, 3), np.uint8), window)


def test_not_found_from_a_server_that_is_not_ready_is_a_drain_and_is_retried():
    """tritonserver unloads its models first when it stops and answers NOT_FOUND for seconds: from a server that is
    not ready that is a drain (retried like UNAVAILABLE), from a ready one a missing model."""
    from stylize.contract.errors import ModelNotFound, ServerUnavailable
    from stylize.sdk.transport import RetryPolicy, draining

    err = ModelNotFound(
        "Request for unknown model: 'esrgan_x4' is not found", model="esrgan_x4", status="NOT_FOUND", url="h:1"
    )
    assert draining(err, True) is err and not RetryPolicy().should_retry(err, 1, 0.0)
    drain = draining(err, lambda: False)
    assert isinstance(drain, ServerUnavailable) and "not ready" in drain.message and drain.model == "esrgan_x4"
    assert RetryPolicy().should_retry(drain, 1, 0.0)
