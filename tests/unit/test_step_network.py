"""The image step's in-process network: which file it loads, and that it computes what ONNX Runtime computes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from stylize.contract.descriptors import REGISTRY
from stylize.engine.network import InProcessNetwork, newest_model_file
from stylize.engine.ort_runner import DEFAULT_MODEL_FILENAME as MODEL_FILE
from stylize.engine.photos import real_photo_crop


def test_newest_version_with_the_file_wins(tmp_path):
    model = tmp_path / "m_net"
    for v in ("1", "3", "10"):
        (model / v).mkdir(parents=True)
        (model / v / MODEL_FILE).write_bytes(b"x")
    (model / "12").mkdir()  # a version folder without the file (being written, or broken): skipped
    (model / "latest").mkdir()  # not a version
    assert newest_model_file(tmp_path, "m_net") == (model / "10" / MODEL_FILE, 10)  # 10 > 3: numbers, not text
    assert newest_model_file(tmp_path, "other") is None
    (tmp_path / "empty").mkdir()
    assert newest_model_file(tmp_path, "empty") is None


def test_in_process_network_matches_onnx_runtime_on_the_repository_file(model_repository):
    desc = REGISTRY["animevideo_x2"]
    path, _ = newest_model_file(model_repository, desc.net_model)
    net = InProcessNetwork(path, input_name=desc.net_input.name, output_name=desc.net_output.name, threads=1)
    assert net.session.get_session_options().intra_op_num_threads == 1
    frame = real_photo_crop(24, 32)[None]
    out = net(np.asfortranarray(frame))  # not C-contiguous: accepted (copied for ONNX Runtime)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        [desc.net_output.name], {desc.net_input.name: frame}
    )[0]
    assert out.dtype == np.uint8 and out.shape == (1, 48, 64, 3)
    np.testing.assert_array_equal(out, reference)


def _versions_on_disk(root, versions, filename=MODEL_FILE):
    for v in versions:
        (root / "m_net" / str(v)).mkdir(parents=True)
        if filename:
            (root / "m_net" / str(v) / filename).write_bytes(b"x")


def test_network_versions_follow_what_triton_serves(tmp_path):
    """The step's versions: the newest served by default, a pinned served one, a refusal naming the served ones for
    any other (on disk or not), a network let go once Triton stops serving its version, new ones picked up."""
    from stylize.engine.network import NetworkVersions, VersionNotServed

    _versions_on_disk(tmp_path, (1, 2, 3))
    served, opened = {2, 3}, []
    versions = NetworkVersions(
        tmp_path,
        "m_net",
        ready=lambda v: v in served,
        open=lambda path: opened.append(path) or f"net:{path.parent.name}",
    )
    assert versions.preload() == 3 and opened == [tmp_path / "m_net" / "3" / MODEL_FILE]
    assert versions.resolve(None) == (3, "net:3")
    assert versions.resolve(2) == (2, "net:2") and versions.resolve(2) == (2, "net:2")
    assert len(opened) == 2  # each version opened once
    for v in (1, 4):
        with pytest.raises(
            VersionNotServed, match=rf"version {v} of m_net is not served \(served versions: 2, 3\)"
        ) as e:
            versions.resolve(v)
        assert e.value.invalid
    _versions_on_disk(tmp_path, (4,))
    served = {3, 4}  # Triton loaded 4 and unloaded 2 (latest 2)
    assert versions.resolve(None) == (4, "net:4") and sorted(versions.networks) == [3, 4]
    served = set()  # the network model is not loaded at all: not the client's fault
    with pytest.raises(VersionNotServed, match="no version of m_net is served") as e:
        versions.resolve(None)
    assert not e.value.invalid and versions.networks == {}


def test_network_versions_over_bls(tmp_path):
    """BLS (no network in the step): versions resolved the same way from the folders, whatever file they hold; a
    repository not on this disk leaves the newest to Triton (-1) and checks a pinned version with Triton alone."""
    from stylize.engine.network import NetworkVersions, VersionNotServed

    _versions_on_disk(tmp_path, (1, 2), filename="model.plan")
    versions = NetworkVersions(tmp_path, "m_net", ready=lambda v: v == 2)
    assert versions.preload() is None
    assert versions.resolve(None) == (2, None)
    with pytest.raises(VersionNotServed, match=r"served versions: 2\)"):
        versions.resolve(1)
    remote = NetworkVersions(tmp_path / "elsewhere", "m_net", ready=lambda v: v == 5)
    assert remote.resolve(None) == (-1, None) and remote.resolve(5) == (5, None)
    with pytest.raises(VersionNotServed, match="version 6 of m_net is not served"):
        remote.resolve(6)


def test_the_checked_version_is_the_version_that_runs(tmp_path):
    """SERVED_VERSIONS: the request check names each network's newest served version; the step runs that one when
    no NET_VERSION is sent (the token is part of the cache key), and refuses, worth a retry, when that version is
    no longer served, instead of computing another version's answer under its key."""
    from stylize.engine.network import NetworkVersions, VersionNotServed, served_versions_token, token_version

    _versions_on_disk(tmp_path, (1, 2, 3))
    (tmp_path / "other_net" / "7").mkdir(parents=True)
    served = {"m_net": {2, 3}, "other_net": set()}
    models = ("m_net", "absent_net", "other_net")
    token = served_versions_token(tmp_path, {m: (lambda v, m=m: v in served.get(m, ())) for m in models})
    assert token == "m_net:3,other_net:0"  # a model without a folder is not named; none served: 0
    assert [token_version(token, m) for m in models] == [3, None, 0]
    assert token_version(served_versions_token(tmp_path / "elsewhere", {"m_net": lambda v: True}), "m_net") is None

    versions = NetworkVersions(tmp_path, "m_net", ready=lambda v: v in served["m_net"], open=lambda p: p.parent.name)
    assert versions.resolve(None, newest=2) == (2, "2")  # the checked version, though 3 is newer
    assert versions.resolve(3, newest=2) == (3, "3")  # a pinned version wins
    served["m_net"] = {3, 4}
    _versions_on_disk(tmp_path, (4,))
    with pytest.raises(
        VersionNotServed, match=r"version 2 of m_net, the newest when the request was checked, is no"
    ) as e:
        versions.resolve(None, newest=2)
    assert not e.value.invalid  # UNAVAILABLE: the client retries and is checked again
    with pytest.raises(VersionNotServed, match="no version of m_net is served") as e:
        versions.resolve(None, newest=0)
    assert not e.value.invalid
