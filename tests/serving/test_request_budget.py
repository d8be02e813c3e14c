"""A request's images share the image step's limits (issue 13 #4). The step holds every result of a request until it
answers, so with a per-image limit only, one request of max_batch_size images could hold that many times the
limit. A small server of its own with small limits: max_pixels 4,000 in, max_output_pixels 16,000 out, per request.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from small_repository import small_repository
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, OUTSCALE, REGISTRY
from stylize.contract.step import Limits
from stylize.engine.photos import real_photo_crop
from tritonclient.utils import InferenceServerException

MODEL = "animevideo_x2"
LIMITS = Limits(max_pixels=4_000, max_output_pixels=16_000)


@pytest.fixture(scope="module")
def client(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    repo = small_repository(model_repository, tmp_path_factory.mktemp("budget_repository"), [MODEL], limits=LIMITS)
    with start_local(repo) as server, grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def _photo(i: int, side: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(real_photo_crop(side, side, offset=(9 * i, 5 * i))).save(buf, "PNG")
    return buf.getvalue()


def _request(client, images: list[bytes], outscale: float | None = None) -> list[Image.Image]:
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [len(images), 1], "BYTES")
    t.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    inputs = [t]
    if outscale is not None:
        o = grpcclient.InferInput(OUTSCALE.tensor.name, [len(images), 1], OUTSCALE.tensor.dtype)
        o.set_data_from_numpy(np.full((len(images), 1), outscale, np.float32))
        inputs.append(o)
    out = client.infer(MODEL, inputs).as_numpy(ENCODED_RESULT.name).reshape(-1)
    return [Image.open(io.BytesIO(b)) for b in out]


def test_images_within_the_request_budget_are_served(client):
    outs = _request(client, [_photo(0), _photo(1)])  # 2 x 1,600 px in, 2 x 6,400 px out
    scale = REGISTRY[MODEL].scale
    assert [o.size for o in outs] == [(40 * scale, 40 * scale)] * 2


def test_the_request_total_of_input_pixels_is_bounded(client):
    with pytest.raises(InferenceServerException) as e:
        _request(client, [_photo(i) for i in range(3)])  # 4,800 px in: each image alone is within 4,000
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = e.value.message()
    assert "item 2 of the request's 3 images" in message and "total 4800 input pixels" in message, message
    assert "limit of one request is 4000" in message and "separate requests" in message
    assert client.is_server_ready() and client.is_model_ready(MODEL)


def test_the_request_total_of_output_pixels_is_bounded(client):
    assert [o.size for o in _request(client, [_photo(0)], outscale=3.0)] == [(120, 120)]  # 14,400 out: alone, fine
    with pytest.raises(InferenceServerException) as e:
        _request(client, [_photo(0), _photo(1)], outscale=3.0)  # 28,800 out
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = e.value.message()
    assert "item 1 of the request's 2 images" in message and "total 28800 pixels" in message, message
    assert "limit of one request is 16000" in message
    assert len(_request(client, [_photo(2)])) == 1  # the next request is served
