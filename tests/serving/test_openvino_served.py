"""Both CPU runtimes through one real tritonserver: the Python-based ``openvino`` backend (the default) and
``onnxruntime``, raw frames and the image ensemble, each within its precision's tolerance of in-process ONNX Runtime
fp32 on a real photo (stylize_build.precision.TOLERANCE_DB: bf16 >= 45 dB).

The server runs a small repository written by the config writer now, around the built animevideo_x4 network:
``animevideo_x4_net`` on OpenVINO in the build's precision, the same file as ``animevideo_x4_ort_net`` on ONNX Runtime
and as ``animevideo_x4_named_net`` read through its config's ``default_model_filename`` (a file named net.onnx),
a bf16 network where this CPU has bf16, and the image ensemble with each runtime in its step.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from stylize.contract.descriptors import REGISTRY
from stylize.engine.network import newest_model_file, open_network
from stylize.engine.ov_runner import cpu_supports_bf16, default_precision
from stylize.engine.photos import psnr, real_photo_crop

pytestmark = pytest.mark.triton

DESC = REGISTRY["animevideo_x4"]
ORT_NET, NAMED_NET, BF16_NET = "animevideo_x4_ort_net", "animevideo_x4_named_net", "animevideo_x4_bf16_net"
ORT_ENSEMBLE = "animevideo_x4_ort"


def _net_model(repo, source, name, config: str, *, filename: str = "model.onnx") -> None:
    for version in sorted(p for p in source.iterdir() if p.name.isdigit()):
        (repo / name / version.name).mkdir(parents=True)
        (repo / name / version.name / filename).symlink_to((version / "model.onnx").resolve())
    (repo / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def runtimes_server(model_repository, tmp_path_factory):
    from stylize.loadtest.bench import Variant, add_variant
    from stylize.server.launcher import start_local
    from stylize_build import pbtxt

    repo = tmp_path_factory.mktemp("runtimes") / "repository"
    source = model_repository / DESC.net_model
    precision = default_precision()
    net = lambda name, **kw: pbtxt.net_config(DESC, weights_status="real", threads=1, model_name=name, **kw)  # noqa
    _net_model(repo, source, DESC.net_model, net(DESC.net_model, precision=precision))
    _net_model(repo, source, ORT_NET, net(ORT_NET, runtime="onnxruntime"))
    _net_model(repo, source, NAMED_NET, net(NAMED_NET).replace('"model.onnx"', '"net.onnx"'), filename="net.onnx")
    if cpu_supports_bf16():
        _net_model(repo, source, BF16_NET, net(BF16_NET, precision="bf16"))
    (repo / "request_check").symlink_to((model_repository / "request_check").resolve(), target_is_directory=True)
    add_variant(
        model_repository,
        repo,
        DESC,
        DESC.id,
        Variant(instances=1, threads=1, net_runtime="openvino", precision=precision),
    )
    add_variant(model_repository, repo, DESC, ORT_ENSEMBLE, Variant(instances=1, threads=1, net_runtime="onnxruntime"))
    with start_local(repo) as server:
        yield server, precision


@pytest.fixture(scope="module")
def reference(model_repository):
    """In-process ONNX Runtime fp32 on the same file and a real photo: the fp32 reference."""
    path, _ = newest_model_file(model_repository, DESC.net_model)
    frame = real_photo_crop(72, 96, name="coffee.png")[None]
    run = open_network(
        path, runtime="onnxruntime", input_name=DESC.net_input.name, output_name=DESC.net_output.name, threads=1
    )
    return frame, run(frame)


def _frames(url: str, model: str, frame: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        x = grpcclient.InferInput(DESC.net_input.name, list(frame.shape), "UINT8")
        x.set_data_from_numpy(frame)
        return client.infer(model, [x]).as_numpy(DESC.net_output.name)


def _image(url: str, model: str, frame: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(frame[0]).save(buf, "PNG")
    with grpcclient.InferenceServerClient(url) as client:
        t = grpcclient.InferInput("IMAGE_BYTES", [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=np.object_))
        data = client.infer(model, [t]).as_numpy("RESULT_BYTES").reshape(-1)[0]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[None]


def test_raw_frames_on_both_runtimes_are_within_the_precision_tolerance(runtimes_server, reference):
    from stylize_build.precision import TOLERANCE_DB

    server, precision = runtimes_server
    frame, expected = reference
    openvino = _frames(server.grpc_url, DESC.net_model, frame)
    onnxruntime = _frames(server.grpc_url, ORT_NET, frame)
    assert openvino.shape == expected.shape == (1, 72 * DESC.scale, 96 * DESC.scale, 3)
    assert psnr(openvino, expected) >= TOLERANCE_DB[precision]
    assert psnr(onnxruntime, expected) >= TOLERANCE_DB["fp32"]  # the same runtime in another process
    with grpcclient.InferenceServerClient(server.grpc_url) as client:  # what a client sees of the two backends
        meta = {m: client.get_model_metadata(m, as_json=True) for m in (DESC.net_model, ORT_NET)}
    assert meta[DESC.net_model]["platform"] == "openvino"
    assert meta[DESC.net_model]["inputs"][0]["shape"] == meta[ORT_NET]["inputs"][0]["shape"] == ["-1", "-1", "-1", "3"]


def test_a_batch_of_frames_is_one_request_without_a_batching_config(runtimes_server, reference):
    server, _ = runtimes_server
    frame, expected = reference
    three = np.concatenate([frame, frame[:, ::-1], frame])
    out = _frames(server.grpc_url, DESC.net_model, three)
    assert out.shape[0] == 3
    np.testing.assert_array_equal(out[0], out[2])


def test_the_openvino_backend_reads_the_file_its_config_names(runtimes_server, reference):
    server, _ = runtimes_server
    frame, _ = reference
    named = _frames(server.grpc_url, NAMED_NET, frame)  # its version folders hold net.onnx, no model.onnx
    np.testing.assert_array_equal(named, _frames(server.grpc_url, DESC.net_model, frame))


def test_the_image_ensemble_on_both_runtimes_is_within_the_precision_tolerance(runtimes_server, reference):
    from stylize_build.precision import TOLERANCE_DB

    server, precision = runtimes_server
    frame, expected = reference
    assert psnr(_image(server.grpc_url, DESC.id, frame), expected) >= TOLERANCE_DB[precision]
    assert psnr(_image(server.grpc_url, ORT_ENSEMBLE, frame), expected) >= TOLERANCE_DB["fp32"]


@pytest.mark.skipif(
    not cpu_supports_bf16(),
    reason="this CPU has no native bf16 (AVX512_BF16 / AMX): OpenVINO would run a bf16 hint in f32",
)
def test_served_bf16_is_within_45_db_of_fp32(runtimes_server, reference):
    server, _ = runtimes_server
    frame, expected = reference
    served = _frames(server.grpc_url, BF16_NET, frame)
    assert 45.0 <= psnr(served, expected) < float("inf")  # bf16 really ran: not bit-identical to fp32
