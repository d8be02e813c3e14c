"""FLOPs of a served network, counted from its ONNX graph, and this machine's fp32/int8 matrix-multiply peak.

Counted: every Conv (2 x MACs: output elements x input channels per group x kernel area), MatMul and Gemm;
elementwise ops, resizes and normalisations are not counted (well under 1 % of the FLOPs of every network
here, and not what a GEMM peak measures). Shapes come from running the graph once in ONNX Runtime at a small probe
size with every counted node's output exposed; the count is then scaled by pixel area, which is exact for these
fully-convolutional networks (feature maps are proportional to the input side) and checked at two probe sizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stylize.contract.descriptors import ModelDescriptor

COUNTED = ("Conv", "MatMul", "Gemm")


class FlopsError(RuntimeError):
    pass


def _weights(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            shapes[n.output[0]] = tuple(n.attribute[0].t.dims)
    return shapes


def count_flops(onnx_path: Path, desc: ModelDescriptor, h: int, w: int) -> int:
    """FLOPs of one image (batch 1) of ``h`` x ``w`` pixels through the graph."""
    probes = []
    for side in (32, 64):
        side = max(side - side % desc.network.size_multiple, desc.network.min_size)
        probes.append((side, _count_at(onnx_path, desc, side)))
    (s1, f1), (s2, f2) = probes
    per_px1, per_px2 = f1 / (s1 * s1), f2 / (s2 * s2)
    if abs(per_px1 - per_px2) > 0.02 * per_px2:
        raise FlopsError(
            f"{desc.id}: FLOPs are not proportional to the pixel count ({per_px1:.0f} vs "
            f"{per_px2:.0f} per pixel): scale by area would be wrong"
        )
    return int(round(per_px2 * h * w))


def _count_at(onnx_path: Path, desc: ModelDescriptor, side: int) -> int:
    from stylize_build.export import sample_input

    from stylize.engine.ort_runner import ort_session

    model = onnx.load(str(onnx_path))
    g = model.graph
    weights = _weights(g)
    counted = [n for n in g.node if n.op_type in COUNTED]
    if any(n.op_type == "ConvTranspose" for n in g.node):
        raise FlopsError(f"{onnx_path}: ConvTranspose is not counted here (no network of this project has one)")
    if not counted:
        raise FlopsError(f"{onnx_path}: no Conv/MatMul/Gemm node")
    existing = {o.name for o in g.output}
    for n in counted:
        if n.output[0] not in existing:
            g.output.append(helper.make_empty_tensor_value_info(n.output[0]))
    sess = ort_session(model.SerializeToString(), optimize=False)  # keep every node's output
    x = sample_input(desc, side=side)
    names = [n.output[0] for n in counted]
    outs = dict(zip(names, sess.run(names, {desc.net_input.name: x})))
    total = 0
    for n in counted:
        y = outs[n.output[0]]
        if n.op_type == "Conv":
            wshape = weights.get(n.input[1])
            if wshape is None:
                raise FlopsError(f"{n.name}: Conv weights are not a constant")
            # weight [M, C/group, kH, kW]: each output element takes C/group x kH x kW multiply-adds
            macs = int(np.prod(y.shape)) * int(np.prod(wshape[1:]))
        else:  # MatMul / Gemm: output elements x inner dimension
            b_shape = weights.get(n.input[1]) or outs[n.input[1]].shape
            transposed = any(a.name == "transB" and a.i for a in n.attribute)
            macs = int(np.prod(y.shape)) * int(b_shape[-1] if transposed else b_shape[-2])
        total += 2 * macs
    return total


# ---------------------------------------------------------------------------------------------------------------
# Machine peak
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Peak:
    numpy_fp32_gflops: float  # numpy (OpenBLAS) sgemm
    ort_fp32_gflops: float  # ONNX Runtime MatMul (MLAS sgemm)
    ort_int8_gops: float  # ONNX Runtime MatMulInteger u8 x s8 (MLAS QGEMM: VNNI / AMX where the CPU has them)
    n: int
    threads: int
    # OpenVINO's (oneDNN) matrix multiply in each precision it serves: fp32, bf16 (None: this CPU has no native bf16,
    # OpenVINO would run f32), int8 (a QDQ MatMul: u8 x s8 -> jit_gemm_I8, the activation quantized in the graph)
    ov_fp32_gflops: float | None = None
    ov_bf16_gflops: float | None = None
    ov_int8_gops: float | None = None


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_peak(*, n: int = 2048, threads: int = 2, reps: int = 5) -> Peak:
    """Best-of-``reps`` GEMM throughput of ``n`` x ``n`` x ``n`` products (2 n^3 operations)."""
    from onnx import TensorProto

    from stylize.engine.ort_runner import ort_session

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ops = 2.0 * n**3
    t_np = _best(lambda: a @ b, reps)

    def session(model: onnx.ModelProto):
        return ort_session(model.SerializeToString(), threads=threads)

    fp = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["A", "B"], ["Y"])],
            "sgemm",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
            [numpy_helper.from_array(b, "B")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    s_fp = session(fp)
    t_fp = _best(lambda: s_fp.run(None, {"A": a}), reps)

    qa = rng.integers(0, 256, (n, n), dtype=np.uint8)
    qb = rng.integers(-128, 128, (n, n), dtype=np.int8)
    q = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
            "qgemm",
            [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
            [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
            [numpy_helper.from_array(qb, "B")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    s_q = session(q)
    t_q = _best(lambda: s_q.run(None, {"A": qa}), reps)
    ov = openvino_peak(fp, a, b, threads=threads, reps=reps)
    return Peak(
        numpy_fp32_gflops=ops / t_np / 1e9,
        ort_fp32_gflops=ops / t_fp / 1e9,
        ort_int8_gops=ops / t_q / 1e9,
        n=n,
        threads=threads,
        **ov,
    )


def openvino_peak(fp: onnx.ModelProto, a: np.ndarray, b: np.ndarray, *, threads: int, reps: int) -> dict:
    """OpenVINO's GEMM throughput on the same product: ``fp`` (A x B, B a constant) in f32 and bf16, and its QDQ
    form (A quantized to u8 in the graph, B s8) for int8."""
    import openvino as ov

    from stylize.engine.ov_runner import cpu_supports_bf16

    n = a.shape[0]
    ops = 2.0 * n**3
    scale = np.array(float(np.abs(a).max()) / 127, np.float32)
    qdq = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("QuantizeLinear", ["A", "sa", "za"], ["qa"]),
                helper.make_node("DequantizeLinear", ["qa", "sa", "za"], ["da"]),
                helper.make_node("DequantizeLinear", ["qb", "sb", "zb"], ["db"]),
                helper.make_node("MatMul", ["da", "db"], ["Y"]),
            ],
            "qdq_gemm",
            [helper.make_tensor_value_info("A", onnx.TensorProto.FLOAT, [n, n])],
            [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [n, n])],
            [
                numpy_helper.from_array(scale, "sa"),
                numpy_helper.from_array(np.array(128, np.uint8), "za"),
                numpy_helper.from_array(np.clip(np.round(b * 32), -127, 127).astype(np.int8), "qb"),
                numpy_helper.from_array(np.array(1 / 32, np.float32), "sb"),
                numpy_helper.from_array(np.array(0, np.int8), "zb"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    core = ov.Core()

    def gops(model: onnx.ModelProto, precision) -> float:
        compiled = core.compile_model(
            core.read_model(model.SerializeToString(), b""),
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision},
        )
        request = compiled.create_infer_request()
        return ops / _best(lambda: request.infer({0: a}, share_inputs=True), reps) / 1e9

    return {
        "ov_fp32_gflops": gops(fp, ov.Type.f32),
        "ov_bf16_gflops": gops(fp, ov.Type.bf16) if cpu_supports_bf16() else None,
        "ov_int8_gops": gops(qdq, ov.Type.f32),
    }


__all__ = ["COUNTED", "FlopsError", "count_flops", "Peak", "machine_peak", "openvino_peak"]
