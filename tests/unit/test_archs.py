"""The four networks: construct -> state_dict -> detect -> rebuild -> load round trips, shapes, scales, init."""

from __future__ import annotations

import pytest
import torch
from stylize.contract import descriptors
from stylize_build.archs import (
    REGISTRY,
    AnimeGANv2Generator,
    ArchDetectionError,
    ArchRegistry,
    ArchSpec,
    BasicVSR,
    RRDBNet,
    SRVGGNetCompact,
    build_network,
    detect_arch,
    infer_arch_params,
)
from stylize_build.archs.animegan import PARAMETER_COUNT
from stylize_build.archs.basicvsr import SpyNet, flow_warp
from stylize_build.weights.loaders import UNTRAINED_SEED, load_weights

pytestmark = pytest.mark.unit

# Small hyperparameters keep the suite fast; the detection must still recover every one of them.
SMALL = {
    "AnimeGANv2": {},
    "RRDBNet": {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 2, "num_grow_ch": 8},
    "SRVGGNetCompact": {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 16,
        "num_conv": 3,
        "upscale": 4,
        "act_type": "prelu",
    },
    "BasicVSR": {"num_feat": 8, "num_block": 2},
}


def _seeded(arch: str, params: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return REGISTRY[arch](**params).eval()


def _input(arch: str, h: int = 16, w: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if arch == "BasicVSR":
        return torch.rand(1, 3, 3, h * 2, w * 2, generator=g)
    x = torch.rand(1, 3, h, w, generator=g)
    return x * 2 - 1 if arch == "AnimeGANv2" else x


def test_registry_matches_descriptors_and_refuses_duplicates():
    assert set(REGISTRY) == {"AnimeGANv2", "RRDBNet", "SRVGGNetCompact", "BasicVSR"}
    assert {d.network.arch for d in descriptors.MODELS} <= set(REGISTRY)
    with pytest.raises(ValueError, match="already registered"):
        REGISTRY.register(REGISTRY["RRDBNet"])
    reg = ArchRegistry()
    spec = ArchSpec("X", SRVGGNetCompact, lambda s: False, lambda s: {})
    reg.register(spec)
    with pytest.raises(ValueError):
        reg.register(spec)
    with pytest.raises(KeyError, match="unknown architecture"):
        REGISTRY["ESRGAN"]


@pytest.mark.parametrize("arch", list(SMALL))
def test_round_trip_construct_detect_load(arch):
    net = _seeded(arch, SMALL[arch], seed=0)
    state = net.state_dict()
    assert detect_arch(state) == arch
    params = infer_arch_params(state)
    assert params == SMALL[arch]

    other = _seeded(arch, params, seed=1)  # different init, then the weights of the first
    other.load_state_dict(state, strict=True)
    x = _input(arch)
    with torch.no_grad():
        assert torch.equal(net(x), other(x))


def test_detect_rejects_unknown_state_dict():
    with pytest.raises(ArchDetectionError):
        detect_arch({"encoder.weight": torch.zeros(1)})


@pytest.mark.parametrize("desc", descriptors.MODELS, ids=lambda d: d.id)
def test_descriptor_params_are_recovered_from_the_full_size_state_dict(desc):
    net = build_network(desc)
    assert not net.training
    assert detect_arch(net.state_dict()) == desc.network.arch
    assert infer_arch_params(net.state_dict()) == dict(desc.network.params)


def test_animegan_parameter_count_keys_shape_and_range():
    net = AnimeGANv2Generator().eval()
    assert sum(p.numel() for p in net.parameters()) == PARAMETER_COUNT == 2_143_552
    keys = net.state_dict().keys()
    # names of the port's published checkpoints
    for k in (
        "block_a.0.1.weight",
        "block_a.0.2.weight",
        "block_c.1.layers.0.1.weight",
        "block_c.1.layers.1.1.bias",
        "block_c.1.layers.2.weight",
        "out_layer.0.weight",
    ):
        assert k in keys
    x = torch.rand(1, 3, 37, 50) * 2 - 1  # odd side: the bilinear steps go back to the saved sizes
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert float(y.abs().max()) <= 1.0


def test_rrdbnet_x4_and_x2_output_shapes():
    x = _input("RRDBNet", 8, 12)
    with torch.no_grad():
        assert _seeded("RRDBNet", SMALL["RRDBNet"])(x).shape == (1, 3, 32, 48)
        p2 = {**SMALL["RRDBNet"], "scale": 2}
        net2 = _seeded("RRDBNet", p2)
        assert net2(x).shape == (1, 3, 16, 24)
    assert net2.state_dict()["conv_first.weight"].shape[1] == 12  # pixel-unshuffled input
    assert infer_arch_params(net2.state_dict())["scale"] == 2
    with pytest.raises(ValueError):
        RRDBNet(scale=3)


def test_srvgg_is_a_residual_on_nearest_upsampling():
    net = _seeded("SRVGGNetCompact", SMALL["SRVGGNetCompact"])
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
        x = _input("SRVGGNetCompact", 5, 7)
        y = net(x)
    assert y.shape == (1, 3, 20, 28)
    assert torch.equal(y, x.repeat_interleave(4, 2).repeat_interleave(4, 3))
    assert [k for k in net.state_dict() if k.startswith("body.1.")] == ["body.1.weight"]  # PReLU slopes
    assert net.state_dict()["body.1.weight"].shape == (16,)


def test_flow_warp_moves_content_by_the_flow():
    x = torch.arange(5 * 6, dtype=torch.float32).view(1, 1, 5, 6)
    zero = torch.zeros(1, 5, 6, 2)
    assert torch.allclose(flow_warp(x, zero), x, atol=1e-4)
    right = zero.clone()
    right[..., 0] = 1.0  # sample one pixel to the right
    out = flow_warp(x, right)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-4)
    assert torch.all(out[..., -1] == 0)  # zeros padding outside


def test_spynet_flow_shape_on_sides_not_multiple_of_32():
    torch.manual_seed(0)
    spy = SpyNet().eval()
    a, b = torch.rand(2, 3, 33, 47), torch.rand(2, 3, 33, 47)
    with torch.no_grad():
        flow = spy(a, b)
    assert flow.shape == (2, 2, 33, 47)
    assert torch.isfinite(flow).all()
    assert "mean" in spy.state_dict() and "std" in spy.state_dict()


def test_basicvsr_shapes_and_scale():
    net = _seeded("BasicVSR", SMALL["BasicVSR"])
    x = torch.rand(1, 4, 3, 20, 28)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 4, 3, 80, 112)
    # Untrained trunks are near-identity residuals: the output stays near the bilinear x4 skip.
    base = torch.nn.functional.interpolate(x[:, 1], scale_factor=4, mode="bilinear", align_corners=False)
    assert float((y[:, 1] - base).abs().mean()) < 0.5
    assert BasicVSR.scale == 4
    with pytest.raises(ValueError):
        net(torch.rand(3, 3, 20, 28))


def test_seeded_untrained_init_is_deterministic_and_leaves_global_rng_alone():
    desc = descriptors.get("animeganv2")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    net_a, info = load_weights(desc)
    after = torch.rand(3)
    net_b, _ = load_weights(desc)
    assert torch.equal(before, after)  # the caller's RNG stream is untouched
    assert info.kind == "untrained" and info.seed == UNTRAINED_SEED and info.files == ()
    for (ka, va), (kb, vb) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    torch.manual_seed(UNTRAINED_SEED)
    fresh = AnimeGANv2Generator()
    assert torch.equal(fresh.state_dict()["block_a.0.1.weight"], net_a.state_dict()["block_a.0.1.weight"])
