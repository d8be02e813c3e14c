"""Import an AnimeGANv2 generator from a TensorFlow Lite file onto ``archs.AnimeGANv2Generator``.

The files are the original TensorFlow generator (TachibanaYoshino/AnimeGANv2: scopes ``generator/G_MODEL/`` ``A``,
``B``, ``C`` with its inverted residual blocks ``r1``..``r4``, ``D``, ``E``, ``out_layer``) converted to full-integer
TFLite by PINTO_model_zoo (050_AnimeGANv2; Hayao, Shinkai and Paprika share one graph). The flatbuffer is read with
the bindings of PyPI ``tflite``; nothing is interpreted by hand but the TFLite quantization rules:

- conv / depthwise weights: int8 with one scale and zero point per output channel, ``w = (q - z[c]) * s[c]``;
  layouts OHWI -> OIHW and, for depthwise, 1HWC -> C1HW.
- depthwise biases: int32 with scale ``input_scale * weight_scale[c]`` and zero point 0, as the TFLite quantization
  spec defines them (the kernels use that product; the scales stored with the tensor must agree). The int32 biases
  the converter gives the bias-free convolutions must be zero: the port's convolutions have none.
- layer norms (TF contrib ``layer_norm`` over H, W, C, which is ``GroupNorm(1, C)``), decomposed by the converter into
  MEAN / SQUARED_DIFFERENCE / ADD eps / RSQRT / MUL / SUB / ADD: the whole pattern is matched op by op; gamma and
  beta are int8 with one scale per tensor.

Mapping: the convolutions in the file's execution order are paired with the port's Conv2d modules in module order;
for each pair the TF scope of the op's output (block letter; ``rN`` = the N-th inverted residual block) must be the
port's block, and kernel shape, stride, groups, reflection padding (MIRROR_PAD), the layer norm after it, the
LeakyReLU(0.2) or its absence, the residual ADDs, both resizes (to block A's output size, then the input size) and the
final tanh must be where the port has them. Every operator of the file must be accounted for. The names of *constant*
tensors are not used: the converter merges equal constants and names the survivor after one user (A/Conv's zero
bias is called ``E/Conv_2/Conv2D``). The resize flags pick the ``upsample`` architecture parameter: the TF generator
was trained with the legacy ``ResizeBilinear`` (``align_corners=False, half_pixel_centers=False``) -> ``tf_legacy``.

The TF layer norm adds epsilon 1e-12 (the file's constant; in int8 arithmetic it vanishes), the port's GroupNorm
1e-5: kept, the difference is far below what the quantized weights themselves differ by (docs/weights.md).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..archs import REGISTRY
from ..archs.animegan import PARAMETER_COUNT, AnimeGANv2Generator, ConvNormLReLU, InvertedResBlock
from . import WeightImportError

__all__ = ["TFLITE_IDENTIFIER", "WEIGHT_TENSOR_COUNT", "TfliteImport", "import_tflite", "upsample_mode"]

TFLITE_IDENTIFIER = b"TFL3"
WEIGHT_TENSOR_COUNT = 77  # 25 conv kernels + 4 depthwise biases + 24 gamma + 24 beta
_SCOPE_ROOT = "G_MODEL/"
_LEAKY_SLOPE = 0.2
_BIAS_SCALE_RTOL = 1e-5

# Operators an AnimeGANv2 full-integer file consists of; anything else means another graph.
_KNOWN_OPS = frozenset(
    {
        "QUANTIZE",
        "DEQUANTIZE",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "MIRROR_PAD",
        "MEAN",
        "SQUARED_DIFFERENCE",
        "RSQRT",
        "MUL",
        "SUB",
        "ADD",
        "LEAKY_RELU",
        "RESIZE_BILINEAR",
        "TANH",
    }
)
_QDQ = frozenset({"QUANTIZE", "DEQUANTIZE"})


# ---------------------------------------------------------------------------------------------------------------
# The flatbuffer, read once into plain values
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    index: int
    name: str
    type: str  # "INT8", "INT32", "FLOAT32", ...
    shape: tuple[int, ...]
    data: bytes  # constant contents; b"" for activations
    scale: np.ndarray  # float64, empty when not quantized
    zero_point: np.ndarray  # int64
    quantized_dimension: int

    @property
    def is_constant(self) -> bool:
        return bool(self.data)


@dataclass(frozen=True)
class _Op:
    index: int
    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Mapping[str, Any]

    @property
    def out(self) -> int:
        return self.outputs[0]


@dataclass
class _Graph:
    name: str
    tensors: list[_Tensor]
    ops: list[_Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    producer: dict[int, _Op] = field(default_factory=dict)
    consumers: dict[int, list[_Op]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for op in self.ops:
            for t in op.outputs:
                if t in self.producer:
                    raise WeightImportError(f"{self.name}: tensor {self.tensors[t].name!r} is produced twice")
                self.producer[t] = op
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)

    def value(self, t: int) -> int:
        """The tensor behind a chain of QUANTIZE/DEQUANTIZE (the same value in another number format)."""
        while (op := self.producer.get(t)) is not None and op.type in _QDQ:
            t = op.inputs[0]
        return t

    def source(self, t: int) -> _Op | None:
        """The operator computing ``t``, looking through QUANTIZE/DEQUANTIZE."""
        return self.producer.get(self.value(t))

    def uses(self, t: int) -> list[_Op]:
        """The operators reading ``t``, looking through QUANTIZE/DEQUANTIZE."""
        found: list[_Op] = []
        for op in self.consumers.get(t, []):
            found += self.uses(op.out) if op.type in _QDQ else [op]
        return found

    def tname(self, t: int) -> str:
        return self.tensors[t].name


_TENSOR_TYPES: dict[int, str] = {}
_OPCODE_NAMES: dict[int, str] = {}


def _enums() -> None:
    import tflite
    from tflite.utils import BUILTIN_OPCODE2NAME

    if not _TENSOR_TYPES:
        _TENSOR_TYPES.update({v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_")})
        _OPCODE_NAMES.update(BUILTIN_OPCODE2NAME)


def _options(op: Any, kind: str) -> dict[str, Any]:
    """The builtin options the importer checks, as plain values."""
    import tflite

    table = op.BuiltinOptions()
    classes = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "MIRROR_PAD": tflite.MirrorPadOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
        "LEAKY_RELU": tflite.LeakyReluOptions,
        "MEAN": tflite.ReducerOptions,
    }
    if kind not in classes:
        return {}
    if table is None:
        raise WeightImportError(f"{kind} operator without its options table")
    o = classes[kind]()
    o.Init(table.Bytes, table.Pos)
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out = {
            "padding": o.Padding(),
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": o.FusedActivationFunction(),
        }
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind == "MIRROR_PAD":
        return {"mode": o.Mode()}
    if kind == "RESIZE_BILINEAR":
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if kind == "LEAKY_RELU":
        return {"alpha": float(o.Alpha())}
    return {"keep_dims": bool(o.KeepDims())}


def _read_graph(path: Path) -> _Graph:
    import tflite

    _enums()
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise WeightImportError(f"{path.name}: not a TFLite flatbuffer (no {TFLITE_IDENTIFIER.decode()} identifier)")
    try:
        model = tflite.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() != 1:
            raise WeightImportError(f"{path.name}: {model.SubgraphsLength()} subgraphs, an AnimeGANv2 file has 1")
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # the schema's rule for old and new files
            codes.append(_OPCODE_NAMES.get(code, f"builtin #{code}"))
        sg = model.Subgraphs(0)
        tensors = []
        for i in range(sg.TensorsLength()):
            t = sg.Tensors(i)
            buf = model.Buffers(t.Buffer())
            if buf.Offset() > 1:  # data outside the flatbuffer: only files over 2 GB do that
                raise WeightImportError(f"{path.name}: tensor {i} keeps its data outside the flatbuffer")
            raw = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
            q = t.Quantization()
            scale = q.ScaleAsNumpy().astype(np.float64) if q is not None and q.ScaleLength() else np.zeros(0)
            zero = q.ZeroPointAsNumpy().astype(np.int64) if q is not None and q.ZeroPointLength() else np.zeros(0, int)
            tensors.append(
                _Tensor(
                    index=i,
                    name=(t.Name() or b"").decode("utf-8"),
                    type=_TENSOR_TYPES.get(t.Type(), str(t.Type())),
                    shape=tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                    data=raw,
                    scale=scale,
                    zero_point=zero,
                    quantized_dimension=int(q.QuantizedDimension()) if q is not None else 0,
                )
            )
        ops = []
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            kind = codes[op.OpcodeIndex()]
            if kind not in _KNOWN_OPS:
                raise WeightImportError(f"{path.name}: operator {i} is {kind}, which no AnimeGANv2 file has")
            ins = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            if len(outs) != 1 or any(v >= len(tensors) for v in ins + outs):
                raise WeightImportError(f"{path.name}: operator {i} ({kind}) has bad tensor references")
            ops.append(_Op(i, kind, ins, outs, _options(op, kind)))
        inputs = tuple(int(v) for v in sg.InputsAsNumpy())
        outputs = tuple(int(v) for v in sg.OutputsAsNumpy())
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise WeightImportError(f"{path.name}: corrupt TFLite flatbuffer: {type(exc).__name__}: {exc}") from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise WeightImportError(f"{path.name}: {len(inputs)} inputs / {len(outputs)} outputs, AnimeGANv2 has 1 / 1")
    return _Graph(path.name, tensors, ops, inputs, outputs)


# ---------------------------------------------------------------------------------------------------------------
# Dequantization
# ---------------------------------------------------------------------------------------------------------------

_NP_TYPES = {"INT8": np.int8, "INT32": np.int32}


def _raw(t: _Tensor, what: str) -> np.ndarray:
    if not t.is_constant:
        raise WeightImportError(f"{what} ({t.name!r}) is not a constant tensor")
    if t.type not in _NP_TYPES:
        raise WeightImportError(
            f"{what} ({t.name!r}) is {t.type}: only full-integer files (int8 weights, int32 biases) are supported"
        )
    dtype = np.dtype(_NP_TYPES[t.type]).newbyteorder("<")
    count = int(np.prod(t.shape, dtype=np.int64))
    if len(t.data) != count * dtype.itemsize:
        raise WeightImportError(f"{what} ({t.name!r}): {len(t.data)} bytes for shape {t.shape} of {t.type}")
    return np.frombuffer(t.data, dtype=dtype).reshape(t.shape).astype(np.int64)


def _broadcast(values: np.ndarray, t: _Tensor, axis: int, what: str) -> np.ndarray:
    """Per-tensor (1 value) or per-axis (one per entry of ``axis``) quantization parameters, shaped to broadcast."""
    if len(values) == 1:
        return values.reshape((1,) * len(t.shape))
    if t.quantized_dimension != axis or len(values) != t.shape[axis]:
        raise WeightImportError(
            f"{what} ({t.name!r}): {len(values)} quantization values along dimension {t.quantized_dimension}, "
            f"expected 1 or one per entry of dimension {axis} ({t.shape[axis]})"
        )
    shape = [1] * len(t.shape)
    shape[axis] = len(values)
    return values.reshape(shape)


def _dequantize_int8(t: _Tensor, what: str, *, channel_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 values and the (per channel or per tensor) scales."""
    if t.type != "INT8":
        raise WeightImportError(f"{what} ({t.name!r}) is {t.type}, expected INT8")
    q = _raw(t, what)
    if len(t.scale) == 0 or len(t.zero_point) != len(t.scale):
        raise WeightImportError(f"{what} ({t.name!r}): int8 without matching scales and zero points")
    if not np.all(t.scale > 0):
        raise WeightImportError(f"{what} ({t.name!r}): non-positive quantization scale")
    scale = _broadcast(t.scale, t, channel_axis, what)
    zero = _broadcast(t.zero_point, t, channel_axis, what)
    return ((q - zero) * scale).astype(np.float32), t.scale


def _dequantize_bias(t: _Tensor, input_scale: float, weight_scale: np.ndarray, what: str) -> np.ndarray:
    """int32 bias, scale input_scale * weight_scale[c] and zero point 0 (TFLite's quantization spec)."""
    if t.type != "INT32" or len(t.shape) != 1:
        raise WeightImportError(f"{what} ({t.name!r}): expected a 1-D INT32 bias, got {t.type} {t.shape}")
    q = _raw(t, what)
    scale = input_scale * np.broadcast_to(weight_scale, t.shape)
    if len(t.scale) and not np.allclose(np.broadcast_to(t.scale, t.shape), scale, rtol=_BIAS_SCALE_RTOL, atol=0):
        raise WeightImportError(f"{what} ({t.name!r}): stored scales differ from input_scale * weight_scale")
    if len(t.zero_point) and np.any(t.zero_point != 0):
        raise WeightImportError(f"{what} ({t.name!r}): int32 bias with a non-zero zero point")
    return (q * scale).astype(np.float32)


def _scalar(g: _Graph, t: int, what: str) -> float:
    tensor = g.tensors[t]
    q = _raw(tensor, what)
    if q.size != 1:
        raise WeightImportError(f"{what} ({tensor.name!r}): expected a scalar, shape {tensor.shape}")
    if tensor.type == "INT8":
        return float(_dequantize_int8(tensor, what, channel_axis=0)[0].reshape(()))
    return float(q.reshape(()))


def _int_vector(g: _Graph, t: int, what: str) -> tuple[int, ...]:
    tensor = g.tensors[t]
    if tensor.type != "INT32":
        raise WeightImportError(f"{what} ({tensor.name!r}) is {tensor.type}, expected INT32")
    return tuple(int(v) for v in _raw(tensor, what).reshape(-1))


# ---------------------------------------------------------------------------------------------------------------
# The port's layers, in module order, with what the TF graph must show around each
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PortLayer:
    conv: str  # state_dict prefix of the Conv2d
    norm: str | None  # prefix of the GroupNorm after it (None: out_layer)
    module: nn.Conv2d
    pad: tuple[int, int, int, int]  # ReflectionPad2d (left, right, top, bottom) before the conv
    lrelu: bool  # LeakyReLU(0.2) after the norm
    scope: tuple[str, str | None]  # TF scope: block letter, rN for the N-th inverted residual block
    resize_to: str | None = None  # "half" (block A's output size) / "input": a bilinear resize feeds this layer
    residual_from: int | None = None  # this layer ends a residual block whose input is layer N's output (-1: input)


def _port_layers(net: AnimeGANv2Generator) -> list[_PortLayer]:
    layers: list[_PortLayer] = []
    resize_before = {"block_d": "half", "block_e": "input"}  # AnimeGANv2Generator.forward

    def add(
        conv: str,
        module: nn.Conv2d,
        *,
        norm: str | None,
        pad: Any,
        lrelu: bool,
        scope: tuple[str, str | None],
        first_in_block: str | None = None,
    ) -> None:
        left, right, top, bottom = (int(p) for p in pad) if pad is not None else (0, 0, 0, 0)
        layers.append(
            _PortLayer(
                conv,
                norm,
                module,
                (left, right, top, bottom),
                lrelu,
                scope,
                resize_to=resize_before.get(first_in_block or ""),
            )
        )

    for block_name, block in net.named_children():
        letter = block_name.removeprefix("block_").upper() if block_name.startswith("block_") else block_name
        n_res = 0
        for idx, m in enumerate(block):
            first = block_name if idx == 0 else None
            prefix = f"{block_name}.{idx}"
            if isinstance(m, ConvNormLReLU):
                add(
                    f"{prefix}.1",
                    m[1],
                    norm=f"{prefix}.2",
                    pad=m[0].padding,
                    lrelu=True,
                    scope=(letter, None),
                    first_in_block=first,
                )
            elif isinstance(m, InvertedResBlock):
                n_res += 1
                block_input = len(layers) - 1
                sub = list(m.layers)
                for j, s in enumerate(sub):
                    sp = f"{prefix}.layers.{j}"
                    if isinstance(s, ConvNormLReLU):
                        add(
                            f"{sp}.1",
                            s[1],
                            norm=f"{sp}.2",
                            pad=s[0].padding,
                            lrelu=True,
                            scope=(letter, f"r{n_res}"),
                            first_in_block=first if j == 0 else None,
                        )
                    elif isinstance(s, nn.Conv2d):
                        add(sp, s, norm=f"{prefix}.layers.{j + 1}", pad=None, lrelu=False, scope=(letter, f"r{n_res}"))
                if m.use_res_connect:
                    layers[-1] = replace(layers[-1], residual_from=block_input)
            elif isinstance(m, nn.Conv2d):
                add(prefix, m, norm=None, pad=None, lrelu=False, scope=(letter, None), first_in_block=first)
    return layers


# ---------------------------------------------------------------------------------------------------------------
# Matching the TF graph
# ---------------------------------------------------------------------------------------------------------------


def _scope(name: str, what: str) -> tuple[str, str | None]:
    first = name.split(";")[0]  # fused ops list every folded name; the first is the op's own
    pos = first.find(_SCOPE_ROOT)
    if pos < 0 or (pos > 0 and first[pos - 1] != "/"):
        raise WeightImportError(f"{what}: tensor name {first!r} is not under the generator's {_SCOPE_ROOT} scope")
    parts = first[pos + len(_SCOPE_ROOT) :].split("/")
    sub = parts[1] if len(parts) > 2 and re.fullmatch(r"r\d+", parts[1]) else None
    return parts[0], sub


@dataclass
class _Norm:
    out: int
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float
    ops: list[_Op]
    tensors: tuple[int, int]  # gamma, beta


def _one(ops: list[_Op], kind: str, what: str) -> _Op:
    hits = [o for o in ops if o.type == kind]
    if len(hits) != 1:
        raise WeightImportError(f"{what}: expected one {kind}, found {len(hits)}")
    return hits[0]


def _split_const(g: _Graph, op: _Op, what: str) -> tuple[int, int]:
    """(the constant input, the other input) of a binary op with exactly one constant input."""
    consts = [t for t in op.inputs if g.tensors[g.value(t)].is_constant]
    others = [t for t in op.inputs if not g.tensors[g.value(t)].is_constant]
    if len(consts) != 1 or len(others) != 1:
        raise WeightImportError(f"{what}: {op.type} (operator {op.index}) must have exactly one constant input")
    return g.value(consts[0]), others[0]


def _check_axes(g: _Graph, mean: _Op, what: str) -> None:
    axes = tuple(sorted(a % 4 for a in _int_vector(g, mean.inputs[1], f"{what} reduction axes")))
    if axes != (1, 2, 3) or not mean.options.get("keep_dims"):
        raise WeightImportError(
            f"{what}: MEAN over axes {axes} (keep_dims={mean.options.get('keep_dims')}); "
            "a layer norm of the port reduces H, W and C"
        )


def _layer_norm(g: _Graph, y: int, channels: int, what: str) -> _Norm:
    """The layer norm reading ``y``, as TF's batchnorm form the converter emits:
    ``out = y * (gamma * rsqrt(var + eps)) + (beta - mean * gamma * rsqrt(var + eps))``."""
    uses = g.uses(y)
    mean = _one(uses, "MEAN", f"{what}: layer norm mean")
    _check_axes(g, mean, f"{what}: mean")
    sqd = _one(uses, "SQUARED_DIFFERENCE", f"{what}: layer norm variance")
    if {g.value(t) for t in sqd.inputs} != {g.value(y), g.value(mean.out)}:
        raise WeightImportError(f"{what}: SQUARED_DIFFERENCE (operator {sqd.index}) is not (y - mean(y))^2")
    var = _one(g.uses(sqd.out), "MEAN", f"{what}: layer norm variance")
    _check_axes(g, var, f"{what}: variance")
    add_eps = _one(g.uses(var.out), "ADD", f"{what}: variance + epsilon")
    eps_t, _ = _split_const(g, add_eps, f"{what}: variance + epsilon")
    epsilon = _scalar(g, eps_t, f"{what}: epsilon")
    rsqrt = _one(g.uses(add_eps.out), "RSQRT", f"{what}: rsqrt")
    mul_gamma = _one(g.uses(rsqrt.out), "MUL", f"{what}: gamma * rsqrt")
    gamma_t, _ = _split_const(g, mul_gamma, f"{what}: gamma * rsqrt")
    mul_y = [o for o in g.uses(mul_gamma.out) if o.type == "MUL" and g.value(y) in {g.value(t) for t in o.inputs}]
    mul_mean = [
        o for o in g.uses(mul_gamma.out) if o.type == "MUL" and g.value(mean.out) in {g.value(t) for t in o.inputs}
    ]
    if len(mul_y) != 1 or len(mul_mean) != 1:
        raise WeightImportError(f"{what}: the normalised scale must multiply y and mean(y) once each")
    sub = _one(g.uses(mul_mean[0].out), "SUB", f"{what}: beta - mean * scale")
    if g.value(sub.inputs[1]) != g.value(mul_mean[0].out) or not g.tensors[g.value(sub.inputs[0])].is_constant:
        raise WeightImportError(f"{what}: SUB (operator {sub.index}) is not beta - mean * scale")
    beta_t = g.value(sub.inputs[0])
    add_out = _one(g.uses(mul_y[0].out), "ADD", f"{what}: y * scale + shift")
    if {g.value(t) for t in add_out.inputs} != {g.value(mul_y[0].out), g.value(sub.out)}:
        raise WeightImportError(f"{what}: ADD (operator {add_out.index}) is not y * scale + (beta - mean * scale)")
    gamma, _ = _dequantize_int8(g.tensors[gamma_t], f"{what}: gamma", channel_axis=0)
    beta, _ = _dequantize_int8(g.tensors[beta_t], f"{what}: beta", channel_axis=0)
    for label, arr in (("gamma", gamma), ("beta", beta)):
        if arr.shape != (channels,):
            raise WeightImportError(f"{what}: {label} has shape {arr.shape}, the conv has {channels} channels")
    ops = [mean, sqd, var, add_eps, rsqrt, mul_gamma, mul_y[0], mul_mean[0], sub, add_out]
    return _Norm(add_out.out, gamma, beta, epsilon, ops, (gamma_t, beta_t))


@dataclass
class _Matched:
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    visited: set[int] = field(default_factory=set)  # operator indices accounted for
    weight_tensors: list[int] = field(default_factory=list)
    epsilons: list[float] = field(default_factory=list)
    resize_flags: list[tuple[bool, bool]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (port conv key, TF op output name)


def _conv_weights(g: _Graph, op: _Op, layer: _PortLayer, what: str, m: _Matched) -> None:
    conv = layer.module
    depthwise = op.type == "DEPTHWISE_CONV_2D"
    if depthwise != (conv.groups > 1) or (depthwise and conv.groups != conv.in_channels):
        raise WeightImportError(f"{what}: {op.type} for a Conv2d with groups={conv.groups}")
    opts = op.options
    want = {"padding": 1, "stride": tuple(conv.stride), "dilation": tuple(conv.dilation), "activation": 0}
    got = {k: opts[k] for k in want}
    if depthwise:
        want["depth_multiplier"], got["depth_multiplier"] = 1, opts["depth_multiplier"]
    if got != want:
        raise WeightImportError(
            f"{what}: options (file, port; padding 1 = VALID, activation 0 = none) differ: "
            f"{ {k: (got[k], v) for k, v in want.items() if got[k] != v} }"
        )
    w_t = g.tensors[g.value(op.inputs[1])]
    w, w_scale = _dequantize_int8(w_t, f"{what}: weights", channel_axis=3 if depthwise else 0)
    w = np.ascontiguousarray(w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2))  # -> OIHW / C1HW
    if tuple(w.shape) != tuple(conv.weight.shape):
        raise WeightImportError(f"{what}: weights {tuple(w.shape)} after OHWI->OIHW, port {tuple(conv.weight.shape)}")
    m.state[f"{layer.conv}.weight"] = torch.from_numpy(w)
    m.weight_tensors.append(w_t.index)

    in_t = g.tensors[op.inputs[0]]
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        bias = None
    else:
        if len(in_t.scale) != 1:
            raise WeightImportError(f"{what}: input {in_t.name!r} must have one (per-tensor) scale")
        b_t = g.tensors[g.value(op.inputs[2])]
        if conv.bias is None:
            # the converter's zero bias, one tensor shared by several convs (its stored scales fit one of them)
            if np.any(_raw(b_t, f"{what}: bias") != 0):
                raise WeightImportError(f"{what}: non-zero bias ({b_t.name!r}) for a bias-free port convolution")
            bias = None
        else:
            bias = _dequantize_bias(b_t, float(in_t.scale[0]), w_scale, f"{what}: bias")
            m.weight_tensors.append(b_t.index)
    if conv.bias is not None:
        if bias is None or tuple(bias.shape) != tuple(conv.bias.shape):
            raise WeightImportError(
                f"{what}: the port's conv has a bias of {tuple(conv.bias.shape)}, the file "
                f"{'none' if bias is None else bias.shape}"
            )
        m.state[f"{layer.conv}.bias"] = torch.from_numpy(bias)


def _unpad(g: _Graph, op: _Op, layer: _PortLayer, what: str, m: _Matched) -> int:
    """The conv's input before its MIRROR_PAD, checked against the port's ReflectionPad2d."""
    src = g.source(op.inputs[0])
    if src is None or src.type != "MIRROR_PAD":
        if layer.pad != (0, 0, 0, 0):
            raise WeightImportError(f"{what}: the port reflection-pads by {layer.pad}, the file does not pad")
        return g.value(op.inputs[0])
    pads = _int_vector(g, src.inputs[1], f"{what}: paddings")
    # TF [[n0, n1], [top, bottom], [left, right], [c0, c1]]; the port's ReflectionPad2d (left, right, top, bottom)
    if len(pads) != 8 or pads[0:2] != (0, 0) or pads[6:8] != (0, 0):
        raise WeightImportError(f"{what}: paddings {pads} pad more than H and W")
    got = (pads[4], pads[5], pads[2], pads[3])
    if src.options["mode"] != 0 or got != layer.pad:
        raise WeightImportError(
            f"{what}: MIRROR_PAD mode {src.options['mode']} (0 = REFLECT) by {got} "
            f"(left, right, top, bottom), the port reflection-pads by {layer.pad}"
        )
    m.visited.add(src.index)
    return g.value(src.inputs[0])


def _match(g: _Graph, net: AnimeGANv2Generator) -> _Matched:
    layers = _port_layers(net)
    a_last = max(i for i, layer in enumerate(layers) if layer.scope[0] == "A")  # "half": block A's output size
    convs = [op for op in g.ops if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    if len(convs) != len(layers):
        counts = Counter(op.type for op in convs)
        raise WeightImportError(f"{g.name}: {len(convs)} convolutions ({dict(counts)}), the port has {len(layers)}")
    m = _Matched()
    graph_in = g.inputs[0]
    in_shape = g.tensors[graph_in].shape
    outputs: list[int] = []  # each layer's output tensor (after its activation)
    for i, (op, layer) in enumerate(zip(convs, layers)):
        what = f"{g.name}: operator {op.index} ({g.tname(op.out).split(';')[0]}) -> {layer.conv}"
        scope = _scope(g.tname(op.out), what)
        if scope != layer.scope:
            raise WeightImportError(
                f"{what}: TF scope {'/'.join(s for s in scope if s)}, the port's block is "
                f"{'/'.join(s for s in layer.scope if s)}"
            )
        m.visited.add(op.index)
        m.pairs.append((layer.conv, g.tname(op.out).split(";")[0]))
        _conv_weights(g, op, layer, what, m)
        x = _unpad(g, op, layer, what, m)

        # what feeds the layer: the previous layer's output, through a resize or a residual ADD
        prev = outputs[-1] if outputs else graph_in
        if i > 0 and layers[i - 1].residual_from is not None:
            res_op = g.producer.get(x)
            skip = outputs[layers[i - 1].residual_from] if layers[i - 1].residual_from >= 0 else graph_in
            if res_op is None or res_op.type != "ADD" or {g.value(t) for t in res_op.inputs} != {prev, skip}:
                raise WeightImportError(f"{what}: expected the residual ADD of the previous block's input and output")
            m.visited.add(res_op.index)
            prev = res_op.out
            outputs[-1] = prev
        if layer.resize_to is not None:
            rs = g.source(x)
            if rs is None or rs.type != "RESIZE_BILINEAR" or g.value(rs.inputs[0]) != prev:
                raise WeightImportError(f"{what}: the port resizes the previous output here, the file does not")
            ref = g.tensors[outputs[a_last]].shape if layer.resize_to == "half" else in_shape
            target = ref[1:3]
            size = _int_vector(g, rs.inputs[1], f"{what}: resize size")
            if size != tuple(target):
                raise WeightImportError(
                    f"{what}: resize to {size}, the port resizes to {tuple(target)} ({layer.resize_to} size)"
                )
            m.visited.add(rs.index)
            m.resize_flags.append((rs.options["align_corners"], rs.options["half_pixel_centers"]))
            prev = rs.out
        if x != g.value(prev):
            raise WeightImportError(
                f"{what}: reads {g.tname(x)!r}, not the previous layer's output "
                f"{g.tname(prev)!r}: the layers are not in the port's order"
            )

        y = op.out
        if layer.norm is None:
            tanh = _one(g.uses(y), "TANH", f"{what}: output activation")
            if g.value(g.outputs[0]) != tanh.out:
                raise WeightImportError(f"{what}: the graph output is not tanh of the last convolution")
            m.visited.add(tanh.index)
            outputs.append(tanh.out)
            continue
        norm = _layer_norm(g, y, layer.module.out_channels, what)
        if _scope(g.tname(norm.out), what) != layer.scope:
            raise WeightImportError(f"{what}: its layer norm {g.tname(norm.out)!r} is in another scope")
        m.visited.update(o.index for o in norm.ops)
        m.state[f"{layer.norm}.weight"] = torch.from_numpy(norm.gamma)
        m.state[f"{layer.norm}.bias"] = torch.from_numpy(norm.beta)
        m.weight_tensors += norm.tensors
        m.epsilons.append(norm.epsilon)
        out = norm.out
        acts = [o for o in g.uses(out) if o.type == "LEAKY_RELU"]
        if layer.lrelu:
            if len(acts) != 1 or len(g.uses(out)) != 1 or abs(acts[0].options["alpha"] - _LEAKY_SLOPE) > 1e-6:
                raise WeightImportError(f"{what}: expected LeakyReLU({_LEAKY_SLOPE}) as the only use of the norm")
            m.visited.add(acts[0].index)
            out = acts[0].out
        elif acts:
            raise WeightImportError(f"{what}: the file applies LeakyReLU where the port has none")
        outputs.append(g.value(out))

    left = [f"{op.index}:{op.type}" for op in g.ops if op.index not in m.visited and op.type not in _QDQ]
    if left:
        raise WeightImportError(
            f"{g.name}: operators that map onto nothing of the port: {left[:12]}{' ...' if len(left) > 12 else ''}"
        )
    return m


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------


def upsample_mode(align_corners: bool, half_pixel_centers: bool) -> str:
    """The port's ``upsample`` parameter for TFLite RESIZE_BILINEAR flags."""
    if align_corners and not half_pixel_centers:
        return "align_corners"
    if not align_corners and not half_pixel_centers:
        return "tf_legacy"
    raise WeightImportError(
        f"RESIZE_BILINEAR align_corners={align_corners}, half_pixel_centers={half_pixel_centers}: "
        "the port has no such upsample mode"
    )


@dataclass(frozen=True)
class TfliteImport:
    """What the importer produced, and what it read from the graph."""

    path: Path
    arch_params: Mapping[str, Any]  # the constructor arguments the weights need: {"upsample": ...}
    state_dict: dict[str, torch.Tensor]
    network: nn.Module  # AnimeGANv2Generator(**arch_params) holding state_dict, eval mode
    weight_tensors: int
    parameters: int
    layer_norm_epsilon: float  # the file's (TF contrib layer_norm); the port keeps GroupNorm's 1e-5
    resize: tuple[bool, bool]  # RESIZE_BILINEAR (align_corners, half_pixel_centers)
    input_shape: tuple[int, ...]  # NHWC the file was converted for
    layers: tuple[tuple[str, str], ...] = ()  # (port conv key, TF op output name)


def import_tflite(path: str | Path, *, arch: str = "AnimeGANv2") -> TfliteImport:
    """Import an AnimeGANv2 ``.tflite`` file; raises ``WeightImportError`` on anything that does not match the port."""
    path = Path(path)
    if arch != "AnimeGANv2":
        raise WeightImportError(f"{path.name}: TFLite import exists for AnimeGANv2 only, not {arch}")
    if not path.is_file():
        raise WeightImportError(f"weights file {path} does not exist")
    g = _read_graph(path)
    template = AnimeGANv2Generator()
    m = _match(g, template)

    if len(m.weight_tensors) != WEIGHT_TENSOR_COUNT or len(set(m.weight_tensors)) != len(m.weight_tensors):
        raise WeightImportError(
            f"{path.name}: {len(m.weight_tensors)} weight tensors "
            f"({len(set(m.weight_tensors))} distinct), expected {WEIGHT_TENSOR_COUNT}"
        )
    own = template.state_dict()
    missing, unexpected = sorted(set(own) - set(m.state)), sorted(set(m.state) - set(own))
    bad = [k for k in own if k in m.state and tuple(m.state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise WeightImportError(
            f"{path.name}: state_dict missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatch {bad[:8]}"
        )
    n_params = sum(int(v.numel()) for v in m.state.values())
    if n_params != PARAMETER_COUNT:
        raise WeightImportError(f"{path.name}: {n_params} parameters, the port has {PARAMETER_COUNT}")
    flags = set(m.resize_flags)
    if len(flags) != 1:
        raise WeightImportError(f"{path.name}: the two resizes use different coordinate rules {m.resize_flags}")
    resize = next(iter(flags))
    arch_params = {"upsample": upsample_mode(*resize)}

    net = REGISTRY[arch](**arch_params).eval()
    net.load_state_dict(m.state, strict=True)
    return TfliteImport(
        path=path,
        arch_params=arch_params,
        state_dict=m.state,
        network=net,
        weight_tensors=len(m.weight_tensors),
        parameters=n_params,
        layer_norm_epsilon=max(m.epsilons),
        resize=resize,
        input_shape=g.tensors[g.inputs[0]].shape,
        layers=tuple(m.pairs),
    )
