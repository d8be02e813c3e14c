"""The INT8 variant served: `stylize build --int8`'s writer (stylize_build.int8.build_int8) quantizes the built
animevideo_x2 network into a small repository of this module's own, next to the fp32 models as the build writes
them now; a real server loads both, and a real photo sent to `<id>_int8` comes back close to the fp32 ensemble's
answer, but not the same (it did run the INT8 graph)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from small_repository import small_repository
from stylize.contract import access
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY
from stylize.engine.network import newest_model_file
from stylize.engine.photos import real_photo_crop
from stylize_build.quantize import EVALUATION_PHOTOS, QuantizeSettings, recipe

pytestmark = pytest.mark.triton

MODEL = "animevideo_x2"  # the lightest network with an INT8 variant (SRVGGNetCompact, x2)
# the architecture's recipe with the fewest calibration crops: the served graph is a real INT8 graph of the real
# network, quantized in seconds instead of the full build's minute
QUICK = QuantizeSettings(method=recipe(REGISTRY[MODEL]).method, crops_per_photo=1, crop_side=32)
# INT8 vs fp32 output (measured 42.2 dB on the photo below). A plain bicubic x2 of the photo scores 33.5 dB against
# the fp32 output: a graph that only kept the smooth part of the picture (wrong scales, a layer lost) fails this bar
MIN_PSNR_DB = 38.0


@pytest.fixture(scope="module")
def int8_server(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local
    from stylize_build.int8 import build_int8
    from stylize_build.repository import BuildSettings

    desc = REGISTRY[MODEL]
    repo = small_repository(model_repository, tmp_path_factory.mktemp("int8_repository"), [MODEL])
    # reads the fp32 <id>_net (a link to the built one), writes only the INT8 models into repo
    built = build_int8(desc, BuildSettings(repository=repo), QUICK)
    with start_local(repo) as server:
        yield server, built


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "PNG")
    return buf.getvalue()


def _infer(client, model: str, data: bytes) -> bytes:
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return client.infer(model, [t]).as_numpy(ENCODED_RESULT.name).reshape(-1)[0]


def _decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_the_int8_ensemble_serves_a_real_photo_close_to_fp32(int8_server):
    server, built = int8_server
    desc = REGISTRY[MODEL]
    assert not built.reused and built.version == 1 and built.weights == "real"
    assert {desc.id, desc.int8_ensemble, desc.int8_image_model, desc.int8_model} <= set(server.ready_models())
    # the INT8 step runs the INT8 graph: its config names the INT8 network, whose newest file is quantized (QDQ)
    repo = server.settings.model_repository
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        cfg = client.get_model_config(
            desc.int8_image_model, as_json=True, headers=access.grpc_headers(server.admin_key)
        )["config"]["parameters"]
        assert cfg["net_model"]["string_value"] == desc.int8_model
        found = newest_model_file(repo, desc.int8_model)
        assert found is not None and found[1] == built.version
        assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(found[0])).graph.node}

        photo = real_photo_crop(64, 80, name=EVALUATION_PHOTOS[0])  # a photo the calibration never saw
        data = _png(photo)
        fp32_bytes, int8_bytes = _infer(client, desc.id, data), _infer(client, desc.int8_ensemble, data)
    fp32, int8 = _decoded(fp32_bytes), _decoded(int8_bytes)
    assert fp32.shape == int8.shape == (128, 160, 3)
    assert int8_bytes != fp32_bytes and not np.array_equal(int8, fp32)  # it is not the fp32 network answering
    quality = _psnr(int8, fp32)
    bicubic = _psnr(np.asarray(Image.fromarray(photo).resize((160, 128), Image.BICUBIC)), fp32)
    print(f"INT8 vs fp32: {quality:.1f} dB; bicubic vs fp32: {bicubic:.1f} dB")
    assert quality > MIN_PSNR_DB, f"INT8 vs fp32: {quality:.1f} dB"
    assert bicubic < MIN_PSNR_DB, f"bicubic vs fp32: {bicubic:.1f} dB: the bar does not tell a network from a resize"
