"""The repository writer: idempotent rebuilds, new weights make version N+1, manifests, TensorRT refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from stylize.contract.descriptors import REGISTRY, REQUEST_CHECK_MODEL
from stylize_build.archs import build_network
from stylize_build.export import OPSET
from stylize_build.repository import BuildSettings, build_repository, existing_versions

pytestmark = pytest.mark.export

LIGHT = [REGISTRY["animevideo_x4"], REGISTRY["animeganv2"]]


def snapshot(repo: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(repo)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(repo.rglob("*")) if p.is_file()
    }


def write_animegan_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_network(REGISTRY["animeganv2"])
    torch.save(net.state_dict(), path)  # the port's format: a plain state_dict
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    results = build_repository(LIGHT, BuildSettings(repository=repo))
    return repo, results


def test_first_build_writes_every_model(built):
    repo, results = built
    for desc in LIGHT:
        for name in desc.triton_models:
            assert (repo / name / "config.pbtxt").is_file(), name
        v = repo / desc.net_model / "1"
        graph = onnx.load(str(v / "model.onnx"))
        assert [i.name for i in graph.graph.input] == [desc.net_input.name]
        assert [o.name for o in graph.graph.output] == [desc.net_output.name]
        assert graph.opset_import[0].version == OPSET
        manifest = json.loads((v / "manifest.json").read_text())
        assert manifest["opset"] == OPSET and manifest["parity_max_abs"] <= desc.checks.parity_atol
        assert manifest["tools"]["torch"].startswith("2.13")
        assert len(manifest["weights"]["sha256"]) == 64 or manifest["weights"]["status"] == "untrained"
    by_id = {r.id: r for r in results}
    assert by_id["animevideo_x4"].weights == "real"
    assert by_id["animeganv2"].weights == "untrained"
    cfg = (repo / "animeganv2_net" / "config.pbtxt").read_text()
    assert 'key: "weights" value: { string_value: "untrained" }' in cfg
    manifest = json.loads((repo / "animevideo_x4_net" / "1" / "manifest.json").read_text())
    assert manifest["weights"]["kind"] == "ncnn"
    # the served graph carries the exact PRelu rewrite (graph_passes): no PRelu left, one Min per former PRelu,
    # and the parity above (<= 1 uint8 level vs PyTorch's nn.PReLU) still holds
    ops = [n.op_type for n in onnx.load(str(repo / "animevideo_x4_net" / "1" / "model.onnx")).graph.node]
    assert "PRelu" not in ops and ops.count("Min") == 17
    assert manifest["weights"]["files"][0]["path"].endswith(".param")


def test_the_networks_are_served_by_openvino_in_the_precision_the_build_checked(built):
    """The default CPU runtime: each version's manifest records its check in the served precision (on real photos,
    against ONNX Runtime fp32, within that precision's tolerance), the configs say the same precision."""
    from stylize.engine.ov_runner import default_precision
    from stylize_build.precision import TOLERANCE_DB

    repo, results = built
    precision = default_precision()
    for desc, result in zip(LIGHT, results):
        manifest = json.loads((repo / desc.net_model / "1" / "manifest.json").read_text())
        check = manifest["served_checks"][f"openvino/{precision}"]
        assert check["precision"] == precision and len(check["per_photo_db"]) == 3
        assert check["psnr_db"] is None or check["psnr_db"] >= TOLERANCE_DB[precision]
        assert result.served_check == check
        net = _config_parameters(repo / desc.net_model / "config.pbtxt")
        assert net["precision"] == precision and ("HINT_BF16" in net) == (precision == "bf16")
        assert 'backend: "openvino"' in (repo / desc.net_model / "config.pbtxt").read_text()
        step = _config_parameters(repo / desc.image_model / "config.pbtxt")
        assert (step["net_runtime"], step["net_precision"]) == ("openvino", precision)


def test_the_build_refuses_a_network_above_its_precision_tolerance(built, tmp_path, monkeypatch):
    """A version whose check in the served precision misses the tolerance is refused: no config is written for it
    (the tolerance is raised above what any runtime can reach, 97 dB measured here, so the real check fails)."""
    import shutil

    from stylize.engine.ov_runner import default_precision
    from stylize_build import precision as precision_check

    repo, _ = built
    desc = REGISTRY["animevideo_x4"]
    target = tmp_path / "repo"
    shutil.copytree(repo / desc.net_model / "1", target / desc.net_model / "1")
    manifest = target / desc.net_model / "1" / "manifest.json"
    manifest.write_text(
        json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "served_checks"})
    )  # checked before this build's tolerance
    monkeypatch.setitem(precision_check.TOLERANCE_DB, default_precision(), 500.0)
    with pytest.raises(precision_check.PrecisionError, match="refused"):
        build_repository([desc], BuildSettings(repository=target))
    assert not (target / desc.net_model / "config.pbtxt").exists() and not (target / desc.id).exists()
    # ONNX Runtime is the fp32 reference itself: an --cpu-runtime onnxruntime build writes its configs
    build_repository([desc], BuildSettings(repository=target, cpu_runtime="onnxruntime"))
    assert 'backend: "onnxruntime"' in (target / desc.net_model / "config.pbtxt").read_text()
    assert _config_parameters(target / desc.image_model / "config.pbtxt")["net_runtime"] == "onnxruntime"
    with pytest.raises(ValueError, match="fp32"):
        BuildSettings(repository=target, cpu_runtime="onnxruntime", precision="bf16")


def test_rebuild_rewrites_nothing(built):
    repo, _ = built
    before = snapshot(repo)
    results = build_repository(LIGHT, BuildSettings(repository=repo))
    assert all(r.reused and not r.written for r in results)
    assert snapshot(repo) == before  # same bytes and same mtimes


def test_new_weights_make_a_new_version_and_keep_the_old(built, tmp_path):
    repo, _ = built
    desc = REGISTRY["animeganv2"]
    ckpt = write_animegan_checkpoint(tmp_path / "face_paint_512_v2.pt", seed=7)
    v1 = (repo / desc.net_model / "1" / "model.onnx").read_bytes()
    results = build_repository([desc], BuildSettings(repository=repo, weights={desc.id: ckpt}))
    assert results[0].net_version == 2 and not results[0].reused
    versions = existing_versions(repo / desc.net_model)
    assert sorted(versions) == [1, 2]
    assert (repo / desc.net_model / "1" / "model.onnx").read_bytes() == v1  # untouched
    assert versions[2]["weights"]["status"] == "real"
    assert versions[2]["weights"]["kind"] == "checkpoint"
    assert 'string_value: "real"' in (repo / desc.net_model / "config.pbtxt").read_text()
    # the same checkpoint again: nothing new
    again = build_repository([desc], BuildSettings(repository=repo, weights={desc.id: ckpt}))
    assert again[0].reused and again[0].net_version == 2 and not again[0].written


@pytest.mark.parametrize("damage", ["garbage", "missing_key", "wrong_shape"])
def test_wrong_checkpoint_fails_loudly_and_writes_nothing(built, tmp_path, damage):
    repo, _ = built
    desc = REGISTRY["animeganv2"]
    state = torch.load(write_animegan_checkpoint(tmp_path / "ok.pt", seed=1), weights_only=True)
    if damage == "garbage":
        state = {"block_a.0.1.weight": torch.zeros(3)}
    elif damage == "missing_key":
        state.pop("out_layer.0.weight")
    else:
        state["block_e.2.1.weight"] = torch.zeros(32, 64, 3, 3)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    before = snapshot(repo)
    with pytest.raises(Exception, match="(?i)missing|unexpected|shape|mismatch|matches no architecture"):
        build_repository([desc], BuildSettings(repository=repo, weights={desc.id: bad}))
    assert snapshot(repo) == before


def test_tensorrt_refuses_without_gpu(tmp_path, capsys):
    from stylize.cli import main

    repo = tmp_path / "gpu_repo"
    code = main(["build", "animevideo_x4", "--trt", "-o", str(repo)])
    assert code == 3
    err = capsys.readouterr().err
    assert "no NVIDIA GPU" in err and "Nothing was written" in err
    assert not repo.exists()


def test_parity_uses_a_real_photo():
    from stylize_build.export import sample_input

    x = sample_input(REGISTRY["animevideo_x4"])
    assert x.dtype == np.uint8 and x.std() > 20  # a photo, not a constant or noise-free tensor


def _modes(repo: Path) -> dict[str, int]:
    """Mode of every entry a server reads (the hidden build lock is the builder's own)."""
    return {
        str(p.relative_to(repo)): p.stat().st_mode & 0o777 for p in [repo, *repo.rglob("*")] if p.name != ".build.lock"
    }


def test_the_repository_is_readable_by_another_user_whatever_the_umask(tmp_path):
    """The image runs tritonserver as uid 1000 on files owned by root: 0644 files in 0755 folders, even when the
    builder's umask is private; a repository left with the old writer's 0600/0700 is repaired by a plain rebuild."""
    import os

    desc = REGISTRY["animevideo_x4"]
    repo = tmp_path / "model_repository"
    old = os.umask(0o077)
    try:
        build_repository([desc], BuildSettings(repository=repo))
    finally:
        os.umask(old)
    modes = _modes(repo)
    assert f"{desc.net_model}/1/model.onnx" in modes and f"{desc.image_model}/1/model.py" in modes
    assert {k: m for k, m in modes.items() if m != (0o755 if (repo / k).is_dir() else 0o644)} == {}

    for p in repo.rglob("*"):  # what mkstemp / mkdtemp made before
        p.chmod(0o700 if p.is_dir() else 0o600)
    [again] = build_repository([desc], BuildSettings(repository=repo))
    assert again.reused and not again.written
    assert _modes(repo) == modes


def _config_parameters(path: Path) -> dict[str, str]:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    return {k: v.string_value for k, v in cfg.parameters.items()}


def test_labels_describe_the_version_that_is_served(tmp_path):
    """A plain build after a --weights build matches version 1, but the step runs version 2 (model_version -1):
    every config, the build's result and weights_status_of say what version 2 holds."""
    from stylize_build.repository import weights_status_of

    desc = REGISTRY["animeganv2"]
    repo = tmp_path / "model_repository"
    ckpt = write_animegan_checkpoint(tmp_path / "face_paint_512_v2.pt", seed=3)
    [first] = build_repository([desc], BuildSettings(repository=repo))  # no weights: the seeded network
    [trained] = build_repository([desc], BuildSettings(repository=repo, weights={desc.id: ckpt}))
    [plain] = build_repository([desc], BuildSettings(repository=repo))  # what `make run` does afterwards
    versions = existing_versions(repo / desc.net_model)
    assert (first.net_version, first.weights, trained.net_version, trained.weights) == (1, "untrained", 2, "real")
    assert versions[1]["weights"]["status"] == "untrained" and versions[2]["weights"]["status"] == "real"

    assert plain.reused and (plain.net_version, plain.weights) == (1, "untrained")  # its inputs match version 1
    assert (plain.served_version, plain.served_weights) == (2, "real")  # but version 2 runs
    assert weights_status_of(repo, desc) == "real"
    for name in desc.triton_models:
        if name == REQUEST_CHECK_MODEL:
            continue  # shared by every image ensemble: it describes no network
        params = _config_parameters(repo / name / "config.pbtxt")
        assert params["weights"] == "real", name
        assert params["license"] == (versions[2].get("weights_license") or desc.weights.license), name
    assert (first.served_version, trained.served_version) == (1, 2)  # each build reports what runs after it
