"""The server-wide memory budget through the real tritonserver (issue 13 #4): the image step reserves each image's
estimated cost from the budget the CPU pod sets (STYLIZE_MEMORY_BUDGET_MIB).
This test holds part of that budget itself, from outside the server, as another stub would: a request that does
not fit waits, then is refused with UNAVAILABLE (the SDK retries it); once the budget is free it is served. A
request whose cost alone is above the whole budget is refused at once with INVALID_ARGUMENT, and the server stays
ready."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from small_repository import small_repository
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY
from stylize.engine.memory_budget import BUDGET_ENV, COSTS, DIR_ENV, WAIT_ENV, MemoryBudget
from stylize.engine.photos import real_photo_crop
from tritonclient.utils import InferenceServerException

MODEL = "animevideo_x2"
DESC = REGISTRY[MODEL]
SMALL, LARGE = 40, 800  # sides of the images: the small one fits the budget, the large one never does
COST = COSTS[MODEL]
# just above what the small image costs, below the large image's cost
BUDGET_MIB = COST.image(SMALL * SMALL * DESC.scale**2) + 2.0
assert COST.image(LARGE * LARGE * DESC.scale**2) > BUDGET_MIB


@pytest.fixture(scope="module")
def served(model_repository, tmp_path_factory):
    from stylize.server.launcher import start_local

    folder = tmp_path_factory.mktemp("budget")
    repo = small_repository(model_repository, tmp_path_factory.mktemp("budget_repository"), [MODEL])
    with pytest.MonkeyPatch.context() as mp:  # the server's environment (its stubs inherit it)
        mp.setenv(BUDGET_ENV, f"{BUDGET_MIB:.1f}")
        mp.setenv(DIR_ENV, str(folder))
        mp.setenv(WAIT_ENV, "0.5")
        with start_local(repo) as server:
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                yield client, MemoryBudget(float(os.environ[BUDGET_ENV]), folder, wait_s=0)


def _image(client, side: int) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(real_photo_crop(min(side, 400), min(side, 400))).resize((side, side)).save(buf, "PNG")
    t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[buf.getvalue()]], dtype=np.object_))
    return Image.open(io.BytesIO(client.infer(MODEL, [t]).as_numpy(ENCODED_RESULT.name).reshape(-1)[0]))


def _raw(client) -> np.ndarray:
    t = grpcclient.InferInput(DESC.net_input.name, [1, 32, 32, 3], DESC.net_input.dtype)
    t.set_data_from_numpy(np.full((1, 32, 32, 3), 100, np.uint8))
    return client.infer(DESC.net_model, [t]).as_numpy(DESC.net_output.name)


def test_requests_within_the_budget_are_served_and_give_it_back(served):
    client, budget = served
    assert _image(client, SMALL).size == (SMALL * DESC.scale,) * 2
    assert _raw(client).shape == (1, 32 * DESC.scale, 32 * DESC.scale, 3)
    with budget._locked():
        assert budget.in_use_mib() == 0  # every reservation was given back
    assert not list(budget.directory.glob("*.mib"))


def test_a_request_that_does_not_fit_waits_then_is_refused_as_retryable(served):
    client, budget = served
    with budget.reserve(budget.total_mib - 1.0, what="another stub"):
        with pytest.raises(InferenceServerException) as e:
            _image(client, SMALL)
        assert e.value.status() == "StatusCode.UNAVAILABLE", e.value
        assert "memory budget" in e.value.message() and "retry later" in e.value.message()
        # a raw request borrows nothing beyond what its network model keeps (bounded by max_request_pixels and
        # counted apart in the pod's worst case): it does not wait for the budget
        assert _raw(client).shape == (1, 32 * DESC.scale, 32 * DESC.scale, 3)
    assert _image(client, SMALL).size == (SMALL * DESC.scale,) * 2  # the budget is free again: served
    assert client.is_server_ready() and client.is_model_ready(MODEL)


def test_a_request_above_the_whole_budget_is_refused_at_once(served):
    client, _ = served
    with pytest.raises(InferenceServerException) as e:
        _image(client, LARGE)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert "more than this server's whole memory budget" in e.value.message()
    assert client.is_server_ready() and _image(client, SMALL).size == (SMALL * DESC.scale,) * 2
