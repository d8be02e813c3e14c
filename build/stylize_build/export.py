"""Export a network to ONNX with the serving arithmetic inside the graph.

The exported graph takes uint8 NHWC frames (NTHWC for windowed video models) and returns uint8 NHWC: the cast, the
scaling to the network's value range, the layout change, an optional final resize, the clamp and the rounding all run
inside ONNX Runtime / TensorRT, so the Python steps around the network only decode and encode.

One exact graph pass runs on the exported graph (:mod:`.graph_passes`: PRelu as ``x + (a - 1) * min(x, 0)``, which
ONNX Runtime's CPU provider runs much faster). Every export is checked: ``onnx.checker`` full check, graph I/O names
and dtypes against the descriptor, and ONNX Runtime vs PyTorch parity on a crop of a real photo (the build fails above the descriptor's tolerance).
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from stylize.contract.descriptors import ModelDescriptor
from stylize.engine.photos import real_photo_crop
from torch import nn

from .graph_passes import rewrite_prelu

OPSET = 17  # one constant for the whole project (GridSample for BasicVSR needs >= 16)

_ONNX_TO_TRITON = {
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT32: "INT32",
}


class ExportError(RuntimeError):
    """The exported graph is invalid or does not match PyTorch within tolerance."""


def _cubic(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel (PyTorch's and ONNX's bicubic, a = -0.75) at distance ``t``."""
    t = abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


class BicubicDownscale(nn.Module):
    """``F.interpolate(x, scale_factor=p/q, mode="bicubic", align_corners=False)`` for a rational downscale, as an
    edge Pad + one grouped strided Conv (+ DepthToSpace when p > 1): the polyphase form of the same sums.

    Why: ONNX Runtime 1.31's cubic Resize is a scalar loop, a quarter to a half of animevideo_x2's graph; as a
    convolution it is a few ms (docs/decisions.md#bicubic-as-conv).
    Exact up to float summation order: output pixel ``o = k*p + r`` reads input ``(o + 0.5) * q/p - 0.5``, i.e. phase
    ``r`` of block ``k`` has fixed taps and weights; indices outside the image are clamped (edge padding), as
    PyTorch's bicubic does. Sides must be multiples of ``q`` (the x4 network output always is).
    """

    def __init__(self, *, p: int, q: int, channels: int = 3):
        super().__init__()
        if not 0 < p < q:
            raise ValueError(f"BicubicDownscale is for downscales p/q < 1, got {p}/{q}")
        self.p, self.q, self.channels = p, q, channels
        taps = []  # per phase r: (first input offset within the block, 4 weights)
        for r in range(p):
            c = (r + 0.5) * q / p - 0.5
            i0 = int(np.floor(c))
            t = c - i0
            taps.append((i0 - 1, [_cubic(t + 1), _cubic(t), _cubic(1 - t), _cubic(2 - t)]))
        lo = min(first for first, _ in taps)
        hi = max(first + 3 for first, _ in taps)
        self.kernel = hi - lo + 1
        self.pad_before, self.pad_after = -lo, max(0, hi - q + 1)
        w1 = np.zeros((p, self.kernel), np.float64)  # 1-D filter per phase
        for r, (first, w) in enumerate(taps):
            w1[r, first - lo : first - lo + 4] = w
        w2 = np.einsum("ri,sj->rsij", w1, w1).reshape(p * p, 1, self.kernel, self.kernel)  # phase (ry, rx)
        weight = np.concatenate([w2] * channels)  # groups = channels, p*p phases each (DepthToSpace CRD order)
        self.register_buffer("weight", torch.from_numpy(weight.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad_before, self.pad_after, self.pad_before, self.pad_after), mode="replicate")
        y = F.conv2d(x, self.weight, stride=self.q, groups=self.channels)
        return F.pixel_shuffle(y, self.p) if self.p > 1 else y


class ServingWrapper(nn.Module):
    """uint8 NHWC (or NTHWC) in, uint8 out; everything between is graph arithmetic."""

    def __init__(self, *, net: nn.Module, desc: ModelDescriptor):
        super().__init__()
        self.net = net
        lo, hi = desc.network.value_range
        self.lo = float(lo)
        self.span = float(hi - lo)
        # upstream animevideov3 x2/x3: the x4 network followed by a bicubic downscale (p/q = 1/2 or 3/4). The
        # attribute's name is the ONNX node scope graph_passes.SERVING_SCOPES knows (quantization leaves it fp32).
        self.downscale = None
        if desc.network.output_resize is not None:
            ratio = Fraction(desc.network.output_resize).limit_denominator(16)
            self.downscale = BicubicDownscale(p=ratio.numerator, q=ratio.denominator)
        self.windowed = desc.window is not None

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(torch.float32) * (self.span / 255.0) + self.lo
        if self.windowed:  # N, T, H, W, C -> N, T, C, H, W
            x = x.permute(0, 1, 4, 2, 3)
        else:  # N, H, W, C -> N, C, H, W
            x = x.permute(0, 3, 1, 2)
        y = self.net(x)
        if self.downscale is not None:
            y = self.downscale(y)
        y = ((y - self.lo) * (255.0 / self.span)).clamp(0.0, 255.0).round()
        # permute in float and cast last: TensorRT takes UINT8 only as a network input or output, never in between
        y = y.permute(0, 1, 3, 4, 2) if self.windowed else y.permute(0, 2, 3, 1)
        return y.to(torch.uint8)


@dataclass(frozen=True)
class ExportReport:
    opset: int
    parity_max_abs: int  # uint8 levels, ONNX Runtime vs PyTorch on a real photo crop
    parity_input: str  # which photo and crop
    seconds: float
    onnx_bytes: int


def _dynamic_axes(desc: ModelDescriptor) -> dict[str, dict[int, str]]:
    if desc.window:
        return {
            desc.net_input.name: {0: "batch", 2: "height", 3: "width"},
            desc.net_output.name: {0: "batch", 2: "out_height", 3: "out_width"},
        }
    return {
        desc.net_input.name: {0: "batch", 1: "height", 2: "width"},
        desc.net_output.name: {0: "batch", 1: "out_height", 2: "out_width"},
    }


def sample_input(desc: ModelDescriptor, *, side: int | None = None) -> np.ndarray:
    """A crop of a real photo in the network's input layout (batch of 1)."""
    side = side or desc.checks.parity_size
    side -= side % desc.network.size_multiple
    if desc.window:
        # a short "video": the same photo panned by a few pixels per frame
        frames = [real_photo_crop(side, side, offset=(2 * t, 3 * t)) for t in range(desc.window)]
        return np.stack(frames)[None]
    return real_photo_crop(side, side)[None]


def export_onnx(desc: ModelDescriptor, net: nn.Module, path: Path) -> ExportReport:
    """Export ``net`` wrapped for serving to ``path`` (written atomically), check it, measure parity."""
    t0 = time.perf_counter()
    wrapper = ServingWrapper(net=net.eval(), desc=desc).eval()
    example = torch.from_numpy(sample_input(desc, side=max(desc.network.min_size, 32)))
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper,
            (example,),
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=[desc.net_input.name],
            output_names=[desc.net_output.name],
            dynamic_axes=_dynamic_axes(desc),
            do_constant_folding=True,
        )
    model = onnx.load_from_string(buf.getvalue())
    rewrite_prelu(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{desc.id}: onnx.checker rejected the graph: {e}") from e
    _check_io(desc, model)
    data = model.SerializeToString()

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    try:
        err, what = parity(desc, wrapper, tmp)
        if err > desc.checks.parity_atol:
            raise ExportError(
                f"{desc.id}: ONNX Runtime differs from PyTorch by {err} uint8 levels on {what} "
                f"(tolerance {desc.checks.parity_atol})"
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(OPSET, err, what, time.perf_counter() - t0, len(data))


def _check_io(desc: ModelDescriptor, model: onnx.ModelProto) -> None:
    graph = model.graph
    for got, want in ((graph.input, desc.net_input), (graph.output, desc.net_output)):
        if len(got) != 1:
            raise ExportError(f"{desc.id}: expected one graph {want.name}, got {[t.name for t in got]}")
        t = got[0]
        dtype = _ONNX_TO_TRITON.get(t.type.tensor_type.elem_type)
        rank = len(t.type.tensor_type.shape.dim) - 1
        if t.name != want.name or dtype != want.dtype or rank != len(want.dims):
            raise ExportError(f"{desc.id}: graph tensor {t.name}:{dtype} rank {rank} != descriptor {want}")


def parity(desc: ModelDescriptor, wrapper: nn.Module, onnx_path: Path) -> tuple[int, str]:
    """Max abs difference (uint8 levels) between ONNX Runtime and PyTorch on a real photo crop."""
    from stylize.engine.ort_runner import ort_session

    x = sample_input(desc)
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(x)).numpy()
    sess = ort_session(onnx_path)
    got = sess.run([desc.net_output.name], {desc.net_input.name: x})[0]
    if got.shape != ref.shape:
        raise ExportError(f"{desc.id}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
    err = int(np.abs(got.astype(np.int16) - ref.astype(np.int16)).max())
    return err, f"astronaut.png crop {x.shape[-3]}x{x.shape[-2]}"
