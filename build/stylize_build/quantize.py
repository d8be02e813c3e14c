"""INT8 variant of a network: ONNX Runtime static quantization (QDQ, per-channel), calibrated on real photos.

What is quantized and why:

* Only the convolutional body. The serving graph has uint8 I/O with the arithmetic in the graph (Cast, scale to the
  value range, layout Transpose; at the end the inverse, Clip, Round, Cast). Those head/tail nodes stay fp32: they are
  cheap, and quantizing them would add a second 8-bit rounding of the pixels.
* The first and the last convolution stay fp32 by default (``QuantizeSettings.fp32_convs``): the first sees raw
  pixels with 3 channels (negligible FLOPs, large relative error), the last writes the image (its 8-bit output would
  quantize the result a second time). Together they are < 5 % of the FLOPs of every network here.
* Weights: signed 8-bit, symmetric, per output channel. Activations: unsigned 8-bit, asymmetric, per tensor, ranges
  from MinMax calibration over crops of real photos (scikit-image's data folder, read as files).

The exported fp32 graph already has ``PRelu(x, a)`` replaced by ``x + (a - 1) * min(x, 0)``
(:func:`stylize_build.graph_passes.rewrite_prelu`, part of the export: the fp32 graph served is as fast as it can be,
so the speed-up of quantization itself is never overstated); the pass runs here again for graphs exported before
it existed. In a QDQ graph ONNX Runtime kept every PRelu layer in a slow fp32 detour. After quantization,
:func:`fold_min_zero` moves the rewrite's ``Min(x, 0)`` onto the uint8 tensor (exact), so every PRelu layer runs
in int8 (QLinearMul/QLinearAdd) rather than dequantize -> float ops -> quantize.

Quality is measured, not assumed (:func:`measure_quality`): on held-out photos (not used for calibration) the INT8
output is compared with the fp32 output (fidelity PSNR) and, for super-resolution, both are compared with the
ground truth (the original photo; the network sees its bicubic downscale), which gives the PSNR loss in dB.
For networks whose weights are untrained (no real checkpoint here) these numbers are reported but say nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper
from stylize.contract.descriptors import ModelDescriptor
from stylize.engine.photos import load_rgb

from .graph_passes import constant_values as _constant_values
from .graph_passes import network_convs, rewrite_prelu

QUANT_REVISION = 2  # bump when the quantization recipe changes for the same settings
MAX_LOSS_DB = 0.5  # the build refuses an INT8 variant that loses more (PSNR vs ground truth, real photos, served)

CALIBRATION_PHOTOS = ("astronaut.png", "chelsea.png", "rocket.jpg")
EVALUATION_PHOTOS = ("coffee.png", "motorcycle_left.png")  # held out: never seen by the calibration


class QuantizeError(RuntimeError):
    """The network cannot be quantized (unsupported model, broken graph) or the result is not servable."""


@dataclass(frozen=True, kw_only=True)
class QuantizeSettings:
    calibration_photos: tuple[str, ...] = CALIBRATION_PHOTOS
    crops_per_photo: int = 3
    crop_side: int = 64  # network input side of a calibration crop
    per_channel: bool = True
    method: str = "minmax"  # activation ranges: minmax | percentile (99.999) | entropy
    fp32_convs: tuple[str, ...] = ("first", "last")  # "first" / "last" / exact Conv node names
    rewrite_prelu: bool = True
    seed: int = 0

    def identity(self) -> dict:
        return asdict(self) | {"revision": QUANT_REVISION}


# Per-architecture recipes, chosen by measurement (PSNR loss vs ground truth on the held-out photos, 64² inputs):
# * RRDBNet: MinMax. Percentile clipping (99.999) cut real, large activations of the dense blocks: esrgan_anime_x4
#   lost 0.41 dB with it vs 0.11 dB with MinMax.
# * SRVGGNetCompact: Percentile over more crops. MinMax ranges were set by rare outliers: animevideo_x2 lost 0.54 dB
#   (MinMax, 9 crops of 64²) vs 0.20 dB (Percentile, 18 crops of 96²); animevideo_x4 0.22 -> 0.12 dB.
RECIPES: dict[str, dict] = {
    "SRVGGNetCompact": {"method": "percentile", "crops_per_photo": 6, "crop_side": 96},
}


def recipe(desc: ModelDescriptor) -> QuantizeSettings:
    """The quantization settings used for a descriptor's architecture (defaults unless RECIPES says otherwise)."""
    return QuantizeSettings(**RECIPES.get(desc.network.arch, {}))


# ---------------------------------------------------------------------------------------------------------------
# Graph passes
# ---------------------------------------------------------------------------------------------------------------


def fold_min_zero(model: onnx.ModelProto) -> int:
    """In a QDQ graph, run ``DequantizeLinear -> Min(x, 0) -> QuantizeLinear`` on the uint8 tensor: ``Min(q, zp)``.

    Exact in the quantized domain (dequantization is monotonic, and ``zp`` is where 0 lands), so the result keeps
    the input's scale and zero point; the DequantizeLinear nodes after the removed QuantizeLinear are pointed at
    them. ONNX Runtime then keeps the whole PRelu rewrite in int8 (QLinearMul, QLinearAdd) instead of a float
    detour per layer (measured on animevideo at 128²: the INT8 graph 1.6x faster, same output to 0.1 dB).
    Returns the number of Min nodes moved to uint8.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = _constant_values(g)
    replace_by: dict[str, onnx.NodeProto] = {}
    drop: set[str] = set()
    for n in g.node:
        if n.op_type != "Min" or len(n.input) != 2:
            continue
        dq, zero = producer.get(n.input[0]), consts.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3 or zero is None:
            continue
        if zero.size != 1 or float(zero.reshape(-1)[0]) != 0.0:
            continue
        after = consumers.get(n.output[0], [])
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q = after[0]
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" for d in dqs) or q.output[0] in {o.name for o in g.output}:
            continue
        q_in, scale, zp = dq.input[0], dq.input[1], dq.input[2]
        out = f"{n.output[0]}_uint8"
        replace_by[n.name] = helper.make_node("Min", [q_in, zp], [out], name=f"{n.name}_uint8")
        for d in dqs:
            d.input[0], d.input[1], d.input[2] = out, scale, zp
        drop.add(q.name)
    if replace_by:
        nodes = [replace_by.get(n.name, n) for n in g.node if n.name not in drop]
        del g.node[:]
        g.node.extend(nodes)
    return len(replace_by)


def body_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the first and the last convolution of the network: a descendant of a Conv (or a
    Conv) that is also an ancestor of a Conv. Everything else is the serving head/tail (uint8 <-> float arithmetic,
    the x2/x3 downscale), kept in fp32."""
    graph = model.graph
    producers = {o: n.name for n in graph.node for o in n.output}
    children: dict[str, list[str]] = {n.name: [] for n in graph.node}
    parents: dict[str, list[str]] = {n.name: [] for n in graph.node}
    for n in graph.node:
        for i in n.input:
            if i in producers:
                parents[n.name].append(producers[i])
                children[producers[i]].append(n.name)
    convs = network_convs(graph)
    if not convs:
        raise QuantizeError("the graph has no Conv node: nothing to quantize")

    def reach(starts: list[str], edges: dict[str, list[str]]) -> set[str]:
        seen, stack = set(starts), list(starts)
        while stack:
            for nxt in edges[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    inside = reach(convs, children) & reach(convs, parents)
    return [n.name for n in graph.node if n.name in inside]


def _ensure_node_names(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def fp32_conv_names(model: onnx.ModelProto, keep: Sequence[str]) -> list[str]:
    convs = network_convs(model.graph)
    names = []
    for k in keep:
        if k == "first":
            names.append(convs[0])
        elif k == "last":
            names.append(convs[-1])
        elif k in convs:
            names.append(k)
        else:
            raise QuantizeError(f"fp32_convs: no Conv node named {k!r}")
    return names


# ---------------------------------------------------------------------------------------------------------------
# Calibration data: real photos
# ---------------------------------------------------------------------------------------------------------------


def photo_crops(photos: Sequence[str], side: int, per_photo: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """Random side x side crops (uint8 HxWx3) of real photos, seeded; labelled 'photo.png y,x'."""
    rng = np.random.default_rng(seed)
    out = []
    for name in photos:
        img = load_rgb(name)
        h, w = img.shape[:2]
        if side > min(h, w):
            raise QuantizeError(f"crop side {side} larger than {name} ({w}x{h})")
        for _ in range(per_photo):
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append((f"{name} {top},{left}", np.ascontiguousarray(img[top : top + side, left : left + side])))
    return out


def _calibration_reader(input_name: str, frames: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(frames)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x[None]}

        def rewind(self) -> None:
            self._it = iter(frames)

    return Reader()


# ---------------------------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@dataclass
class QuantizeReport:
    source: str  # the fp32 file quantized
    quantized_convs: int
    fp32_convs: list[str]
    prelu_rewritten: int
    min_folded: int  # Min(x, 0) of the PRelu rewrite moved to uint8 (fold_min_zero)
    calibration: list[str]  # which crops
    seconds: float
    onnx_bytes: int
    quality: "QualityReport | None" = None

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


def quantize_network(
    desc: ModelDescriptor,
    src: Path,
    dst: Path,
    settings: QuantizeSettings = QuantizeSettings(),
    *,
    log: Callable[[str], None] = lambda s: None,
) -> QuantizeReport:
    """Quantize the fp32 serving graph ``src`` of ``desc`` to ``dst`` (written atomically)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if desc.window:
        raise QuantizeError(
            f"{desc.id}: windowed video models are not quantized (flow warping through GridSample "
            "is precision-sensitive, and BasicVSR has no real weights here to measure it on)"
        )
    _METHODS = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if settings.method not in _METHODS:
        raise QuantizeError(f"unknown calibration method {settings.method!r}; known: {', '.join(_METHODS)}")
    t0 = time.perf_counter()
    side = settings.crop_side - settings.crop_side % desc.network.size_multiple
    crops = photo_crops(settings.calibration_photos, side, settings.crops_per_photo, settings.seed)
    with tempfile.TemporaryDirectory(prefix=f"stylize-int8-{desc.id}-") as tmp:
        tmp_dir = Path(tmp)
        model = onnx.load(str(src))
        rewritten = rewrite_prelu(model) if settings.rewrite_prelu else 0
        _ensure_node_names(model)
        prepared = tmp_dir / "prepared.onnx"
        onnx.save(model, str(prepared))
        # ORT's quantization pre-processing: shape inference + graph optimisations the quantizer expects.
        optimized = tmp_dir / "optimized.onnx"
        quant_pre_process(str(prepared), str(optimized), skip_symbolic_shape=True)
        model = onnx.load(str(optimized))
        _ensure_node_names(model)
        onnx.save(model, str(optimized))
        body = set(body_nodes(model))
        keep = fp32_conv_names(model, settings.fp32_convs)
        exclude = [n.name for n in model.graph.node if n.name not in body] + keep
        n_convs = sum(1 for n in model.graph.node if n.op_type == "Conv")
        log(f"{desc.id}: calibrating on {len(crops)} crops of {side}x{side} ({', '.join(settings.calibration_photos)})")
        out = tmp_dir / "int8.onnx"
        with _quiet_root_logger():  # the quantizer warns per tensor through the root logger
            _quantize_static(
                str(optimized),
                str(out),
                _calibration_reader(desc.net_input.name, [c for _, c in crops]),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=_METHODS[settings.method],
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "CalibPercentile": 99.999},
            )
        quantized = onnx.load(str(out))
        folded = fold_min_zero(quantized)
        _check_servable(desc, quantized)
        data = quantized.SerializeToString()
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".tmp")
    part.write_bytes(data)
    part.replace(dst)
    return QuantizeReport(
        source=str(src),
        quantized_convs=n_convs - len(keep),
        fp32_convs=keep,
        prelu_rewritten=rewritten,
        min_folded=folded,
        calibration=[label for label, _ in crops],
        seconds=round(time.perf_counter() - t0, 2),
        onnx_bytes=len(data),
    )


def _check_servable(desc: ModelDescriptor, model: onnx.ModelProto) -> None:
    """Same contract as the fp32 graph: one uint8 input and output under the descriptor's names."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise QuantizeError(f"{desc.id}: onnx.checker rejected the quantized graph: {e}") from e
    g = model.graph
    for got, want in ((g.input, desc.net_input), (g.output, desc.net_output)):
        names = [t.name for t in got]
        if names != [want.name] or got[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            raise QuantizeError(f"{desc.id}: quantized graph I/O {names} differs from the descriptor's {want}")
    if not any(n.op_type == "QuantizeLinear" for n in g.node):
        raise QuantizeError(f"{desc.id}: the quantizer produced no QuantizeLinear node")


# ---------------------------------------------------------------------------------------------------------------
# Quality
# ---------------------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _psnr_of_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class QualityReport:
    photos: list[str]  # held-out crops (ground truth side)
    input_side: int
    fidelity_psnr_db: float  # INT8 output vs fp32 output
    fp32_psnr_db: float | None  # fp32 output vs ground truth (super-resolution only)
    int8_psnr_db: float | None  # INT8 output vs ground truth
    loss_db: float | None  # fp32_psnr_db - int8_psnr_db
    max_abs_diff: int  # uint8 levels, INT8 vs fp32
    weights: str  # real | untrained
    meaningful: bool  # False: untrained weights, the numbers say nothing about a real model
    note: str = ""
    runtime: str = "onnxruntime"  # what ran the INT8 graph (the fp32 reference is always ONNX Runtime fp32)
    precision: str = "fp32"  # what that runtime reported for the graph's float parts

    def meets(self, max_loss_db: float) -> bool | None:
        if not self.meaningful or self.loss_db is None:
            return None
        return self.loss_db <= max_loss_db


def _downscale(hr: np.ndarray, factor: int) -> np.ndarray:
    from PIL import Image

    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // factor, h // factor), Image.BICUBIC))


def measure_quality(
    desc: ModelDescriptor,
    fp32: Path,
    int8: Path,
    *,
    weights: str,
    side: int = 64,
    photos: Sequence[str] = EVALUATION_PHOTOS,
    crops_per_photo: int = 3,
    seed: int = 1,
    threads: int = 2,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
) -> QualityReport:
    """INT8 vs fp32 on held-out real photos. Super-resolution: the network sees the bicubic downscale of an
    (input side x scale) crop, and both outputs are scored against that crop (the ground truth). The INT8 graph runs
    the way it will be served (``runtime``, ``precision`` of its float parts: the image step's own code); the fp32
    reference is ONNX Runtime fp32."""
    from stylize.engine.network import open_network

    side -= side % desc.network.size_multiple
    sr = desc.task == "sr"
    gt_side = side * desc.scale if sr else side
    crops = photo_crops(photos, gt_side, crops_per_photo, seed)
    names = {"input_name": desc.net_input.name, "output_name": desc.net_output.name, "threads": threads}
    f = open_network(fp32, runtime="onnxruntime", **names)
    q = open_network(int8, runtime=runtime, precision=precision, **names)
    built = getattr(getattr(q, "network", None), "built", None)
    mse_fid = mse_fp32 = mse_int8 = 0.0
    max_abs = 0
    for _, gt in crops:
        x = _downscale(gt, desc.scale) if sr else gt
        a = f(x[None])[0]
        b = q(x[None])[0]
        mse_fid += float(np.mean((a.astype(np.float64) - b) ** 2))
        max_abs = max(max_abs, int(np.abs(a.astype(np.int16) - b).max()))
        if sr:
            mse_fp32 += float(np.mean((a.astype(np.float64) - gt) ** 2))
            mse_int8 += float(np.mean((b.astype(np.float64) - gt) ** 2))
    n = len(crops)
    fp32_db = _psnr_of_mse(mse_fp32 / n) if sr else None
    int8_db = _psnr_of_mse(mse_int8 / n) if sr else None
    meaningful = weights == "real"
    note = (
        ""
        if meaningful
        else (
            f"{desc.id} has untrained weights here: the quality numbers are meaningless "
            "until a real checkpoint is built with --weights"
        )
    )
    if not sr:
        note = (note + "; " if note else "") + "no ground truth for style transfer: fidelity to fp32 only"
    return QualityReport(
        photos=[label for label, _ in crops],
        input_side=side,
        fidelity_psnr_db=round(_psnr_of_mse(mse_fid / n), 2),
        fp32_psnr_db=None if fp32_db is None else round(fp32_db, 3),
        int8_psnr_db=None if int8_db is None else round(int8_db, 3),
        loss_db=None if fp32_db is None else round(fp32_db - int8_db, 3),
        max_abs_diff=max_abs,
        weights=weights,
        meaningful=meaningful,
        note=note,
        runtime=runtime,
        precision=built.precision if built is not None else "fp32",
    )


def settings_fingerprint(source_fingerprint: str, settings: QuantizeSettings) -> str:
    import onnxruntime

    ident = {"source": source_fingerprint, "settings": settings.identity(), "onnxruntime": onnxruntime.__version__}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


__all__ = [
    "QUANT_REVISION",
    "MAX_LOSS_DB",
    "CALIBRATION_PHOTOS",
    "EVALUATION_PHOTOS",
    "QuantizeError",
    "QuantizeSettings",
    "RECIPES",
    "recipe",
    "QuantizeReport",
    "QualityReport",
    "rewrite_prelu",
    "fold_min_zero",
    "body_nodes",
    "quantize_network",
    "measure_quality",
    "psnr",
    "photo_crops",
    "settings_fingerprint",
]
