"""The exported serving graph's exact rewrites: the polyphase bicubic downscale and the PRelu form."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from stylize.contract.descriptors import REGISTRY
from stylize_build.archs import build_network
from stylize_build.export import BicubicDownscale, ServingWrapper, export_onnx
from stylize_build.graph_passes import network_convs

pytestmark = pytest.mark.export


@pytest.mark.parametrize(("p", "q"), [(1, 2), (3, 4), (2, 3)])
def test_polyphase_downscale_equals_pytorch_bicubic(p, q):
    torch.manual_seed(0)
    down = BicubicDownscale(p=p, q=q)
    for h, w in ((q * 16, q * 16), (q * 5, q * 9), (q * 2, q * 3)):
        x = torch.rand(2, 3, h, w) * 2 - 0.5  # beyond [0, 1]: the cubic's overshoot must match too
        want = F.interpolate(x, scale_factor=p / q, mode="bicubic", align_corners=False)
        got = down(x)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) < 2e-5


def test_downscale_refuses_upscales():
    with pytest.raises(ValueError, match="downscales"):
        BicubicDownscale(p=2, q=1)


@pytest.mark.parametrize("model_id", ["animevideo_x2", "animevideo_x3"])
def test_exported_x2_x3_graph_has_no_resize_and_matches_the_upstream_form(model_id, tmp_path):
    """The served graph (PRelu rewritten, downscale as a convolution) against the upstream arithmetic (nn.PReLU and
    F.interpolate bicubic) on a real photo crop: at most 1 uint8 level apart."""
    desc = REGISTRY[model_id]
    torch.manual_seed(0)
    net = build_network(desc).eval()
    path = tmp_path / "model.onnx"
    export_onnx(desc, net, path)
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    modes = [
        onnx.helper.get_attribute_value(a)
        for n in graph.node
        if n.op_type == "Resize"
        for a in n.attribute
        if a.name == "mode"
    ]
    assert "PRelu" not in ops and modes == [b"nearest"]  # only the network's own nearest upsample of its input
    assert len(network_convs(graph)) == ops.count("Conv") - 1  # the downscale conv is not the network's

    from stylize_build.export import sample_input

    x = sample_input(desc, side=48)
    with torch.no_grad():
        wrapper = ServingWrapper(net=net, desc=desc)
        y = wrapper.net(torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255.0)
        ref = F.interpolate(y, scale_factor=desc.network.output_resize, mode="bicubic", align_corners=False)
        ref = (ref * 255).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {desc.net_input.name: x})[0]
    assert got.shape == ref.shape
    assert int(np.abs(got.astype(np.int16) - ref.astype(np.int16)).max()) <= 1
