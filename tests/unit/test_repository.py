"""The repository writer: idempotent rebuilds, new weights make version N+1, manifests, TensorRT refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stylize.descriptors import REGISTRY
from stylize_build.archs import build_network
from stylize_build.export import OPSET
from stylize_build.repository import BuildSettings, build_repository, existing_versions

pytestmark = pytest.mark.export

LIGHT = [REGISTRY["animevideo_x4"], REGISTRY["animeganv2"]]


def snapshot(repo: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(repo)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(repo.rglob("*")) if p.is_file()}


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
        assert manifest["opset"] == OPSET and manifest["parity_max_abs"] <= desc.parity_atol
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
