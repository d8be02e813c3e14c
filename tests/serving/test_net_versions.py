"""The version a client asks for is the version that runs, end to end: through the client-facing ensemble (the
NET_VERSION input, read by the image step, which runs that version of ``<id>_net`` itself), the SDK's ``version=``
and ``stylize infer --model-version``, the response cache, and a version loaded while the server runs.

One repository of its own, built by the real build: three versions of animevideo_x4's network that compute
different things (a seeded random checkpoint, the untrained initialisation, the trained weights), of which the
version policy (newest two) serves 2 and 3, so version 1 is on disk but not served.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from PIL import Image
from stylize.cli import main
from stylize.contract import access
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, NET_VERSION, REGISTRY
from stylize.contract.errors import InvalidInput
from stylize.engine.photos import real_photo_crop
from stylize.sdk.client import StylizeClient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

DESC = REGISTRY["animevideo_x4"]  # the lightest network with a real trained file
PHOTO = real_photo_crop(40, 48)  # within one tile: the step runs the network once on the whole picture


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _random_checkpoint(path, seed: int):
    from stylize_build.archs import build_network

    torch.manual_seed(seed)
    torch.save({"params_ema": build_network(DESC).state_dict()}, path)  # BasicSR's wrapper
    return path


def _build(repo, weights):
    from stylize_build.repository import BuildSettings, build_repository

    return build_repository([DESC], BuildSettings(repository=repo, weights={DESC.id: weights} if weights else {}))[0]


@pytest.fixture(scope="module")
def versioned(tmp_path_factory):
    """(server, repository): versions 1 (random), 2 (untrained), 3 (trained) of the network; Triton serves 2 and 3.
    Explicit model control, so a test can load a new version while serving (with the admin key)."""
    from stylize.server.launcher import start_local

    root = tmp_path_factory.mktemp("net_versions")
    repo = root / "repo"
    built = [_build(repo, _random_checkpoint(root / "random.pth", 3)), _build(repo, "untrained"), _build(repo, None)]
    assert [(r.net_version, r.weights) for r in built] == [(1, "real"), (2, "untrained"), (3, "real")]
    with start_local(
        repo, cache_size=64 * 1024 * 1024, extra_args=("--model-control-mode=explicit", "--load-model=*")
    ) as s:
        yield s, repo


def _image_request(client, data: bytes, version: int | None = None, model: str = DESC.id):
    inp = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], ENCODED_IMAGE.dtype)
    inp.set_data_from_numpy(np.array([[data]], dtype=object))
    inputs = [inp]
    if version is not None:
        v = grpcclient.InferInput(NET_VERSION.tensor.name, [1, 1], NET_VERSION.tensor.dtype)
        v.set_data_from_numpy(np.array([[version]], dtype=np.int64))
        inputs.append(v)
    out = client.infer(model, inputs).as_numpy(ENCODED_RESULT.name)[0, 0]
    return np.asarray(Image.open(io.BytesIO(out)))


def _net(client, frame: np.ndarray, version: int) -> np.ndarray:
    inp = grpcclient.InferInput(DESC.net_input.name, [1, *frame.shape], "UINT8")
    inp.set_data_from_numpy(frame[None])
    return client.infer(DESC.net_model, [inp], model_version=str(version)).as_numpy(DESC.net_output.name)[0]


def _metric(server, name: str, model: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and f'model="{model}"' in line
    )


def test_each_served_version_through_the_ensemble_is_that_version_of_the_network(versioned):
    server, _ = versioned
    c = grpcclient.InferenceServerClient(server.grpc_url)
    data = _png(PHOTO)
    nets = {v: _net(c, PHOTO, v) for v in (2, 3)}
    assert not np.array_equal(nets[2], nets[3])  # the two versions compute different pictures
    for v in (2, 3):
        np.testing.assert_array_equal(_image_request(c, data, v), nets[v])
    np.testing.assert_array_equal(_image_request(c, data), nets[3])  # no NET_VERSION: the newest served
    # the SDK: version= on the call and on the client, the same pictures
    with StylizeClient(url=server.grpc_url, model=DESC.id, version=2) as sdk:
        np.testing.assert_array_equal(sdk.infer(PHOTO), nets[2])
        np.testing.assert_array_equal(sdk.infer(PHOTO, version=3), nets[3])
        with pytest.raises(InvalidInput, match="versions are numbered from 1"):
            sdk.infer(PHOTO, version=0)


@pytest.mark.parametrize("version", [1, 7])
def test_a_version_that_is_not_served_is_refused_and_the_server_stays_ready(versioned, version):
    """Version 1 is on disk but outside the version policy; 7 does not exist: both INVALID_ARGUMENT, naming the
    served versions, through the ensemble and the SDK; the next request is answered."""
    server, _ = versioned
    c = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(
        InferenceServerException,
        match=rf"version {version} of {DESC.net_model} is not served "
        r"\(served versions: 2, 3\)",
    ) as e:
        _image_request(c, _png(PHOTO), version)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    with StylizeClient(url=server.grpc_url, model=DESC.id) as sdk:
        with pytest.raises(InvalidInput, match="served versions: 2, 3"):
            sdk.infer(PHOTO, version=version)
    assert c.is_server_ready() and c.is_model_ready(DESC.id)
    np.testing.assert_array_equal(_image_request(c, _png(PHOTO), 2), _net(c, PHOTO, 2))


def test_the_cache_never_answers_one_version_with_another(versioned):
    server, _ = versioned
    c = grpcclient.InferenceServerClient(server.grpc_url)
    data = _png(real_photo_crop(36, 44, offset=(5, 9)))  # an image no other test sends
    frame = np.asarray(Image.open(io.BytesIO(data)))
    nets = {v: _net(c, frame, v) for v in (2, 3)}
    hits0 = _metric(server, "nv_cache_num_hits_per_model", DESC.cached_model)
    misses0 = _metric(server, "nv_cache_num_misses_per_model", DESC.cached_model)
    for v in (2, 3):  # the same image bytes: each version is a miss of its own
        np.testing.assert_array_equal(_image_request(c, data, v), nets[v])
    assert _metric(server, "nv_cache_num_misses_per_model", DESC.cached_model) == misses0 + 2
    for v in (3, 2):  # and then a hit of its own
        np.testing.assert_array_equal(_image_request(c, data, v), nets[v])
    assert _metric(server, "nv_cache_num_hits_per_model", DESC.cached_model) == hits0 + 2


def test_cli_model_version(versioned, tmp_path, capsys):
    server, _ = versioned
    c = grpcclient.InferenceServerClient(server.grpc_url)
    src = tmp_path / "photo.png"
    src.write_bytes(_png(PHOTO))
    for v in (2, 3):
        out = tmp_path / f"v{v}.png"
        assert (
            main(
                [
                    "infer",
                    str(src),
                    "-m",
                    DESC.id,
                    "-o",
                    str(out),
                    "--model-version",
                    str(v),
                    "--url",
                    server.grpc_url,
                    "--no-progress",
                ]
            )
            == 0
        )
        assert f"1 of 1 images written to {out} (network version {v})" in capsys.readouterr().out
        np.testing.assert_array_equal(np.asarray(Image.open(out)), _net(c, PHOTO, v))
    capsys.readouterr()
    assert (
        main(
            [
                "infer",
                str(src),
                "-m",
                DESC.id,
                "-o",
                str(tmp_path / "v1.png"),
                "--model-version",
                "1",
                "--url",
                server.grpc_url,
                "--no-progress",
            ]
        )
        == 1
    )
    assert "version 1 of animevideo_x4_net is not served (served versions: 2, 3)" in capsys.readouterr().err
    assert not (tmp_path / "v1.png").exists()


def test_the_step_follows_a_version_loaded_while_serving(versioned, tmp_path):
    """A new version written while the server runs is not served until Triton loads it (the step does not open a
    file Triton does not serve); once loaded, the step runs it by default and lets go of the version the policy
    dropped, without reloading the step, and the same image sent unpinned again is computed by the new version,
    not answered from the cache entry the previous version left (the request check's SERVED_VERSIONS is part of
    the key). Last in this module: it changes the served versions to 3 and 4."""
    server, repo = versioned
    c = grpcclient.InferenceServerClient(server.grpc_url)
    photos = [real_photo_crop(32, 40, offset=(11 + i, 3 * i)) for i in range(3)]
    assert _build(repo, _random_checkpoint(tmp_path / "other.pth", 5)).net_version == 4  # on disk, not loaded
    before = _net(c, photos[0], 3)
    for _ in range(2):  # computed, then answered from the cache
        np.testing.assert_array_equal(_image_request(c, _png(photos[0])), before)
    hits = _metric(server, "nv_cache_num_hits_per_model", DESC.cached_model)
    with pytest.raises(InferenceServerException, match=r"version 4 of .* is not served \(served versions: 2, 3\)"):
        _image_request(c, _png(photos[0]), 4)
    c.load_model(DESC.net_model, headers=access.grpc_headers(server.admin_key))  # Triton: versions 3 and 4
    assert c.is_model_ready(DESC.net_model, "4") and not c.is_model_ready(DESC.net_model, "2")
    after = _net(c, photos[0], 4)
    assert not np.array_equal(after, before)
    for _ in range(2):  # the same bytes, unpinned: version 4's answer, computed once, then cached under its key
        np.testing.assert_array_equal(_image_request(c, _png(photos[0])), after)
    assert _metric(server, "nv_cache_num_hits_per_model", DESC.cached_model) == hits + 1
    v4, v3 = _net(c, photos[1], 4), _net(c, photos[1], 3)
    assert not np.array_equal(v4, v3)
    np.testing.assert_array_equal(_image_request(c, _png(photos[1])), v4)
    np.testing.assert_array_equal(_image_request(c, _png(photos[2]), 3), _net(c, photos[2], 3))
    data = _png(photos[2])
    with pytest.raises(InferenceServerException, match=r"version 2 of .* is not served \(served versions: 3, 4\)"):
        _image_request(c, data, 2)


@pytest.mark.slow
def test_the_bls_route_runs_the_version_asked_for(tmp_path):
    """The GPU's route (the step calls the network model by BLS; here the CPU network stands in for the plan):
    NET_VERSION becomes the BLS request's model_version, checked against the served versions the same way."""
    from stylize.server.launcher import start_local
    from stylize_build import pbtxt

    repo = tmp_path / "repo"
    results = [_build(repo, "untrained"), _build(repo, None)]
    (repo / DESC.image_model / "config.pbtxt").write_text(
        pbtxt.image_config(DESC, weights_status=results[-1].weights, net_runtime="triton")
    )
    data = _png(PHOTO)
    with start_local(repo) as s:
        c = grpcclient.InferenceServerClient(s.grpc_url)
        nets = {v: _net(c, PHOTO, v) for v in (1, 2)}
        assert not np.array_equal(nets[1], nets[2])
        for v in (1, 2):
            np.testing.assert_array_equal(_image_request(c, data, v), nets[v])
        np.testing.assert_array_equal(_image_request(c, data), nets[2])
        with pytest.raises(
            InferenceServerException, match=r"version 3 of .* is not served \(served versions: 1, 2\)"
        ) as e:
            _image_request(c, data, 3)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and c.is_server_ready()
