"""Exact ONNX graph passes applied to every exported graph (fp32, and before INT8 quantization).

``rewrite_prelu``: ONNX Runtime 1.31's CPU provider runs a per-channel ``PRelu`` through its generic broadcasting
path and, under ORT_ENABLE_ALL, between NCHWc reorders. ``x + (a - 1) * min(x, 0)`` is the same function and runs
several times faster (docs/decisions.md#prelu-rewrite). TensorRT fuses either form into the convolution, so the GPU
path does not care.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

SERVING_SCOPES = ("/downscale/",)  # export.ServingWrapper's modules that are serving arithmetic, not the network


def network_convs(graph: onnx.GraphProto) -> list[str]:
    """Conv node names of the network itself, in graph (topological) order: the serving wrapper's own convolutions
    (the x2/x3 bicubic downscale, see export.BicubicDownscale) are left out, so "the last convolution" of a graph
    means the network's, and quantization never reaches the resampling arithmetic."""
    return [n.name for n in graph.node if n.op_type == "Conv" and not n.name.startswith(SERVING_SCOPES)]


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Tensor name -> value, for initializers, Constant nodes and Identity nodes of either."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:  # topological order: an Identity's input is known before the Identity
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in values:
            # the exporter shares equal initializers through Identity nodes (e.g. untrained, equal PReLU slopes)
            values[n.output[0]] = values[n.input[0]]
    return values


def rewrite_prelu(model: onnx.ModelProto) -> int:
    """Replace every ``PRelu(x, a)`` with constant slopes by ``x + (a - 1) * min(x, 0)`` in place; returns the count.

    Exact: for x >= 0 the second term is 0; for x < 0 it is x + a*x - x = a*x.
    """
    graph = model.graph
    consts = constant_values(graph)
    nodes: list[onnx.NodeProto] = []
    count = 0
    zero = "stylize_prelu_zero"
    for n in graph.node:
        if n.op_type != "PRelu" or n.input[1] not in consts:
            nodes.append(n)
            continue
        if count == 0:
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        count += 1
        x, y = n.input[0], n.output[0]
        base = n.name or f"prelu_{count}"
        slope_m1 = f"{base}_slope_minus_1"
        graph.initializer.append(numpy_helper.from_array((consts[n.input[1]] - 1).astype(np.float32), slope_m1))
        nodes += [
            helper.make_node("Min", [x, zero], [f"{y}_neg"], name=f"{base}_min"),
            helper.make_node("Mul", [f"{y}_neg", slope_m1], [f"{y}_scaled"], name=f"{base}_mul"),
            helper.make_node("Add", [x, f"{y}_scaled"], [y], name=f"{base}_add"),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for nd in graph.node for i in nd.input}
        keep = [i for i in graph.initializer if i.name in used]  # the PRelu slopes are gone
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return count


__all__ = ["SERVING_SCOPES", "constant_values", "network_convs", "rewrite_prelu"]
