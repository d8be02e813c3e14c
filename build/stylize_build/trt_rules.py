"""TensorRT's ONNX parser rules, checked statically on an exported graph (no TensorRT exists on this project's
machines, so this is how a graph that TensorRT would reject is caught before it meets a GPU).

Sources: onnx-tensorrt's operator support matrix (docs/operators.md) and ModelImporter.cpp of the 10.x line:
- UINT8 is accepted only as a network input or output ("TensorRT does not support UINT8 types for intermediate
  tensors"); a Cast from a UINT8 input and a Cast to a UINT8 output are the only UINT8 edges allowed;
- only operators of the support matrix (the set below: the matrix's supported rows that these networks can use;
  anything else is reported, not guessed);
- Resize: coordinate transformation modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric,
  align_corners; modes nearest, linear, cubic;
- Conv / ConvTranspose weights must be initializers (or, in a QDQ graph, a DequantizeLinear of an initializer);
- Q/DQ zero points must be zero (TensorRT's quantization is symmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper, shape_inference

__all__ = [
    "SUPPORTED_OPS",
    "RESIZE_COORDINATE_MODES",
    "RESIZE_MODES",
    "TrtRuleViolation",
    "check_graph",
    "require_trt_compatible",
]

SUPPORTED_OPS = frozenset(
    {
        "Abs",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "CumSum",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "If",
        "InstanceNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mod",
        "Mul",
        "Neg",
        "Not",
        "Or",
        "Pad",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "Range",
        "Reciprocal",
        "ReduceL2",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "Round",
        "Selu",
        "Shape",
        "Sigmoid",
        "Sign",
        "Slice",
        "Softmax",
        "Softplus",
        "SpaceToDepth",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "Where",
    }
)
RESIZE_COORDINATE_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})


@dataclass(frozen=True)
class TrtRuleViolation:
    node: str  # node name (or tensor name for tensor-level rules)
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node}: {self.rule}: {self.detail}"


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.input, *g.output)}
    types.update({init.name: init.data_type for init in g.initializer})
    for node in g.node:  # Constant nodes and Casts are typed by their attributes even where inference stops
        if node.op_type == "Cast":
            types.setdefault(node.output[0], int(_attr(node, "to", 0)))
        elif node.op_type == "Constant":
            value = _attr(node, "value", None)
            if isinstance(value, TensorProto):
                types.setdefault(node.output[0], value.data_type)
    return types


def check_graph(model: onnx.ModelProto) -> list[TrtRuleViolation]:
    """Every rule above that ``model`` breaks (an empty list: TensorRT's parser rules are met)."""
    g = model.graph
    problems: list[TrtRuleViolation] = []
    types = _elem_types(model)
    io_names = {t.name for t in (*g.input, *g.output)}
    initializers = {i.name for i in g.initializer}
    producers = {out: n for n in g.node for out in n.output}

    for name, elem in types.items():
        if elem == TensorProto.UINT8 and name not in io_names:
            where = producers[name].name if name in producers else name
            problems.append(
                TrtRuleViolation(
                    where, "uint8-intermediate", f"tensor {name!r} is UINT8 but is not a graph input or output"
                )
            )

    for node in g.node:
        label = node.name or f"{node.op_type}->{node.output[0]}"
        if node.op_type not in SUPPORTED_OPS:
            problems.append(
                TrtRuleViolation(
                    label, "unsupported-op", f"{node.op_type} is not in TensorRT's ONNX operator support matrix"
                )
            )
        if node.op_type == "Resize":
            ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            mode = _attr(node, "mode", b"nearest")
            ctm, mode = (v.decode() if isinstance(v, bytes) else v for v in (ctm, mode))
            if ctm not in RESIZE_COORDINATE_MODES:
                problems.append(TrtRuleViolation(label, "resize-mode", f"coordinate_transformation_mode {ctm}"))
            if mode not in RESIZE_MODES:
                problems.append(TrtRuleViolation(label, "resize-mode", f"mode {mode}"))
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = node.input[1]
            src = producers.get(w)
            ok = w in initializers or (
                src is not None
                and (src.op_type == "Constant" or (src.op_type == "DequantizeLinear" and src.input[0] in initializers))
            )
            if not ok:
                problems.append(TrtRuleViolation(label, "conv-weights", f"weights {w!r} are not an initializer"))
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zp = next((i for i in g.initializer if i.name == node.input[2]), None)
            if zp is not None and any(onnx.numpy_helper.to_array(zp).reshape(-1) != 0):
                problems.append(TrtRuleViolation(label, "qdq-zero-point", "zero point must be 0 (symmetric)"))
    return problems


def require_trt_compatible(model: onnx.ModelProto, what: str) -> None:
    """Raise ValueError listing every violation (the TensorRT build refuses before it starts)."""
    problems = check_graph(model)
    if problems:
        listed = "; ".join(str(p) for p in problems[:10]) + (" ..." if len(problems) > 10 else "")
        raise ValueError(f"{what} breaks TensorRT's ONNX parser rules ({len(problems)}): {listed}")
