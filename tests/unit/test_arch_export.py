"""ONNX export of the four networks (opset 17, TorchScript exporter) and ONNX Runtime parity, dynamic spatial axes.

Small hyperparameters: the exported graph structure does not depend on depth or width, and the suite stays fast.
BasicVSR exports with a fixed window T (the frame loops unroll) and dynamic H and W.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from stylize_build.archs import REGISTRY

pytestmark = pytest.mark.export

OPSET = 17

IMAGE_NETS = {
    "AnimeGANv2": {},
    "RRDBNet": {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 1, "num_grow_ch": 8},
    "SRVGGNetCompact": {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "num_feat": 64,
        "num_conv": 16,
        "upscale": 4,
        "act_type": "prelu",
    },
}


def _export(net: torch.nn.Module, example: torch.Tensor, path: Path, dynamic: dict[int, str]) -> ort.InferenceSession:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its retirement
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["y"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={"x": dynamic, "y": {k: f"{v}_out" for k, v in dynamic.items()}},
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in dynamic.items():
        assert dims[axis].dim_param == name, f"axis {axis} was frozen to {dims[axis].dim_value}"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _max_err(sess: ort.InferenceSession, net: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        want = net(x).numpy()
    got = sess.run(None, {"x": x.numpy()})[0]
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


@pytest.mark.parametrize("arch", list(IMAGE_NETS))
def test_image_network_exports_with_dynamic_batch_and_sides(arch, tmp_path):
    torch.manual_seed(0)
    net = REGISTRY[arch](**IMAGE_NETS[arch]).eval()
    lo, hi = (-1.0, 1.0) if arch == "AnimeGANv2" else (0.0, 1.0)
    g = torch.Generator().manual_seed(1)
    sess = _export(net, torch.rand(1, 3, 16, 20, generator=g), tmp_path / f"{arch}.onnx", {0: "n", 2: "h", 3: "w"})
    for shape in [(1, 3, 16, 20), (2, 3, 24, 12), (1, 3, 36, 28)]:
        x = lo + (hi - lo) * torch.rand(*shape, generator=g)
        assert _max_err(sess, net, x) < 1e-4, shape


def test_basicvsr_exports_with_fixed_window_and_dynamic_sides(tmp_path):
    torch.manual_seed(0)
    net = REGISTRY["BasicVSR"](num_feat=16, num_block=2).eval()
    with torch.no_grad():  # untrained SPyNet predicts ~0 flow; make the warps move pixels so they are exercised
        for level in net.spynet.basic_module:
            level.basic_module[-1].weight.mul_(20)
    g = torch.Generator().manual_seed(2)
    window = 3
    # The reconstruction head runs 64 channels at 4x the side whatever num_feat is: keep the sides small.
    sess = _export(net, torch.rand(1, window, 3, 32, 32, generator=g), tmp_path / "basicvsr.onnx", {3: "h", 4: "w"})
    model = onnx.load(str(tmp_path / "basicvsr.onnx"))
    assert "GridSample" in {n.op_type for n in model.graph.node}
    # 32x32 as exported (SPyNet's coarsest level is 1x1 there); 24x40 and 36x52 are not multiples of 32 (SPyNet
    # resizes to 32x64 and 64x64 inside) and have other aspect ratios: no size was frozen into the graph.
    for h, w in [(32, 32), (24, 40), (36, 52)]:
        x = torch.rand(1, window, 3, h, w, generator=g)
        with torch.no_grad():
            flow = net.spynet(x[:, 0], x[:, 1])
        assert float(flow.abs().max()) > 0.5  # the flows are not trivially zero
        assert _max_err(sess, net, x) < 1e-3, (h, w)
