"""The image step's BLS route (``net_runtime: triton``), served on CPU against ``<id>_net``.

It is the GPU's route (the step calls the TensorRT plan by BLS) and the one a repository read from object storage
takes, so it is served here on the CPU network model: same answer as the in-process route, and the BLS request asks
for host memory (a TensorRT plan's outputs live on the GPU, where ``as_numpy()`` cannot read them).
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY
from stylize.engine.photos import real_photo_crop

pytestmark = pytest.mark.triton

DESC = REGISTRY["animevideo_x2"]
STEP_SOURCE = Path(__file__).resolve().parents[2] / "client/stylize/server/triton_models/image/model.py"


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _infer(url: str, data: bytes) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    out = client.infer(DESC.id, [t]).as_numpy(ENCODED_RESULT.name).reshape(-1)[0]
    return np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))


def test_every_bls_request_of_the_step_asks_for_host_memory():
    calls = [
        n
        for n in ast.walk(ast.parse(STEP_SOURCE.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "InferenceRequest"
    ]
    assert calls, "the image step makes no BLS request"
    for call in calls:
        kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
        assert "TRITONSERVER_MEMORY_CPU" in kw.get("preferred_memory", ""), ast.unparse(call)


@pytest.fixture(scope="module")
def bls_server(tmp_path_factory):
    from stylize.server.launcher import start_local
    from stylize_build import pbtxt
    from stylize_build.repository import BuildSettings, build_repository

    repo = tmp_path_factory.mktemp("bls") / "repo"
    (result,) = build_repository([DESC], BuildSettings(repository=repo))
    config = repo / DESC.image_model / "config.pbtxt"
    config.write_text(pbtxt.image_config(DESC, weights_status=result.weights, net_runtime="triton"))
    assert re.search(r'key: "net_runtime" value: \{ string_value: "triton" \}', config.read_text())
    with start_local(repo) as server:
        yield server


def test_the_bls_route_serves_what_the_in_process_route_serves(server, bls_server):
    data = _png(real_photo_crop(96, 128, name="chelsea.png"))
    via_bls = _infer(bls_server.grpc_url, data)
    in_process = _infer(server.grpc_url, data)
    assert via_bls.shape == (96 * DESC.scale, 128 * DESC.scale, 3)
    # the same ONNX file through the CPU runtime in two processes: rounding may differ by one level, nothing more
    assert int(np.abs(via_bls.astype(np.int16) - in_process.astype(np.int16)).max()) <= 1
    stats = grpcclient.InferenceServerClient(bls_server.grpc_url).get_inference_statistics(
        DESC.net_model, as_json=True
    )["model_stats"]
    assert sum(int(m.get("inference_count", 0)) for m in stats) >= 1  # the network model really was called
