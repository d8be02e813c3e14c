"""The image step's fallback to BLS when the network's ONNX file is not beside it (a repository Triton copied from
remote storage): configured for ``openvino`` in its own process, the step finds no ``<id>_net/<v>/model.onnx`` in
its repository, says so in the server log, and calls ``<id>_net`` by BLS.

Made real with two repository paths (Triton takes several ``--model-repository``): the step's repository holds the
ensemble and its python steps but no network folder, and Triton serves ``<id>_net`` from a second path. The step
looks for the file in its own repository (``Path(args["model_repository"]).parent``) only, so it cannot open it,
while Triton serves the network model. The same models with the network beside the step (one repository) are the
in-process reference: same photo, same answer; the network model's own statistics tell the two routes apart.
"""

from __future__ import annotations

import io
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from small_repository import small_repository
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY, TILE_SIZE
from stylize.engine.photos import real_photo_crop

pytestmark = pytest.mark.triton

DESC = REGISTRY["animevideo_x2"]
PHOTO = (160, 448)
# tiles smaller than the configured 384 (the TILE_SIZE option): the photo goes in several tiles, one network call
# each on CPU, so the counts below see more than one call and the blending of tiles is compared too
TILE = 128
FALLBACK_WARNING = (
    f"{DESC.image_model}: no ONNX file of {DESC.net_model} next to this model (a repository Triton "
    "copied from remote storage?): calling the network model by BLS instead"
)
IN_PROCESS_INFO = re.compile(rf"{DESC.image_model}: network {DESC.net_model} version \d+ runs in this process")


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _infer(url: str, data: bytes) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    tile = grpcclient.InferInput(TILE_SIZE.tensor.name, [1, 1], TILE_SIZE.tensor.dtype)
    tile.set_data_from_numpy(np.array([[TILE]], dtype=np.int32))
    out = client.infer(DESC.id, [t, tile]).as_numpy(ENCODED_RESULT.name).reshape(-1)[0]
    client.close()
    return np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))


def _net_inferences(url: str) -> int:
    """Inferences Triton booked on the network model (every version): BLS calls reach it, in-process runs do not."""
    client = grpcclient.InferenceServerClient(url)
    stats = client.get_inference_statistics(DESC.net_model, as_json=True)["model_stats"]
    client.close()
    return sum(int(m.get("inference_count", 0)) for m in stats)


def _step_tiles(metrics_url: str) -> float:
    """Tiles the image step sent through its network so far (its stylize_image_tiles histogram, whatever the route)."""
    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf'^stylize_image_tiles_sum{{[^}}]*model="{DESC.image_model}"[^}}]*}} (\S+)$', text, re.M)
    assert m, f"no stylize_image_tiles series of {DESC.image_model} on {metrics_url}"
    return float(m.group(1))


def _config_runtime(repo: Path) -> str:
    text = (repo / DESC.image_model / "config.pbtxt").read_text()
    (runtime,) = re.findall(r'key: "net_runtime" value: \{ string_value: "([^"]+)" \}', text)
    return runtime


@pytest.fixture(scope="module")
def in_process_server(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path_factory.mktemp("in_process") / "repo", [DESC.id])
    assert _config_runtime(repo) == "openvino"
    with start_local(repo) as server:
        yield server


@pytest.fixture(scope="module")
def fallback_server(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    root = tmp_path_factory.mktemp("fallback")
    steps = small_repository(model_repository, root / "steps", [DESC.id])
    nets = root / "nets"
    nets.mkdir()
    (steps / DESC.net_model).rename(nets / DESC.net_model)  # the network's folder (a symlink) moves out
    assert _config_runtime(steps) == "openvino"  # the step is asked to run the network itself ...
    assert not (steps / DESC.net_model).exists()  # ... and its repository has no network folder
    assert sorted((nets / DESC.net_model).glob("*/model.onnx"))  # Triton serves it from the second path
    with start_local(steps, extra_args=(f"--model-repository={nets.resolve()}",)) as server:
        assert DESC.net_model in server.ready_models()
        yield server


def test_the_step_without_the_network_file_says_so_and_calls_the_network_model(fallback_server):
    log = fallback_server.log_path.read_text()
    assert FALLBACK_WARNING in log
    assert not IN_PROCESS_INFO.search(log)  # no network opened in the step's process
    before_net, before_tiles = _net_inferences(fallback_server.grpc_url), _step_tiles(fallback_server.metrics_url)
    out = _infer(fallback_server.grpc_url, _png(real_photo_crop(*PHOTO, name="chelsea.png")))
    assert out.shape == (PHOTO[0] * DESC.scale, PHOTO[1] * DESC.scale, 3)
    tiles = _step_tiles(fallback_server.metrics_url) - before_tiles
    assert tiles == 8  # 2 rows x 4 columns of 128-pixel tiles overlapping by 16
    # every tile went through the network model by BLS (one tile per call on CPU), none in the step's process
    assert _net_inferences(fallback_server.grpc_url) - before_net == tiles


def test_the_fallback_serves_what_the_in_process_route_serves(fallback_server, in_process_server):
    log = in_process_server.log_path.read_text()
    assert IN_PROCESS_INFO.search(log) and FALLBACK_WARNING not in log  # the reference really runs in process
    data = _png(real_photo_crop(*PHOTO, name="chelsea.png"))
    before = _net_inferences(in_process_server.grpc_url)
    in_process = _infer(in_process_server.grpc_url, data)
    assert _net_inferences(in_process_server.grpc_url) == before  # the network model saw none of it
    via_fallback = _infer(fallback_server.grpc_url, data)
    assert via_fallback.shape == in_process.shape == (PHOTO[0] * DESC.scale, PHOTO[1] * DESC.scale, 3)
    # the same ONNX file through OpenVINO in two processes: rounding may differ by one level, nothing more (as for
    # the explicit BLS route, test_bls_route.py; measured here: identical)
    diff = np.abs(via_fallback.astype(np.int16) - in_process.astype(np.int16))
    assert int(diff.max()) <= 1, f"max difference {int(diff.max())}"
    # ... and the picture is not a copy of the input scaled up (a fallback that skipped the network would be)
    naive = np.asarray(
        Image.fromarray(real_photo_crop(*PHOTO, name="chelsea.png")).resize(
            (PHOTO[1] * DESC.scale, PHOTO[0] * DESC.scale), Image.BICUBIC
        )
    )
    assert float(np.abs(via_fallback.astype(np.int16) - naive.astype(np.int16)).mean()) > 1.0  # measured: 3.2
