"""The build's check of a network in the precision it will be served in, with a tolerance per precision.

The export's parity check (export.parity) holds the fp32 graph to PyTorch within the descriptor's ``checks.parity_atol``
(uint8 levels) on ONNX Runtime. Serving runs the same file on another runtime and possibly in another precision
(OpenVINO, bf16 where the CPU has it), so the build also runs it the way the server will, through the image step's
own code (stylize.engine.network.open_network), on crops of several real photos, and compares the output with
ONNX Runtime fp32 on the same file: PSNR of the uint8 outputs, the worst photo counts. A network below its
precision's tolerance is refused (:class:`PrecisionError`): nothing is written for it.

Tolerances: bf16 keeps 8 bits of mantissa, so its outputs differ from fp32 by a level here and there; measured
50-55 dB on these networks (issue 15), 45 dB is the floor (a visible difference starts well below 40 dB). fp32 on
another runtime differs only in summation order: 60 dB (an average error of a quarter of a level).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from stylize.contract.descriptors import ModelDescriptor
from stylize.engine.photos import pan_sequence, psnr, real_photo_crop

TOLERANCE_DB = {"fp32": 60.0, "bf16": 45.0}  # served output vs ONNX Runtime fp32, worst real photo
CHECK_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")


class PrecisionError(RuntimeError):
    """The network, served in the precision asked for, is further from fp32 than that precision's tolerance."""


@dataclass(frozen=True)
class PrecisionReport:
    runtime: str
    precision: str  # what the runtime reported it ran (OpenVINO turns a bf16 hint into f32 on CPUs without bf16)
    psnr_db: float  # worst photo; inf when identical
    per_photo_db: dict[str, float]
    max_abs: int  # uint8 levels, over all photos
    tolerance_db: float
    input_side: int
    seconds: float
    runtime_version: str

    def to_dict(self) -> dict:
        d = asdict(self)
        # JSON has no inf: identical outputs are recorded as null
        d["psnr_db"] = None if np.isinf(self.psnr_db) else round(self.psnr_db, 2)
        d["per_photo_db"] = {k: None if np.isinf(v) else round(v, 2) for k, v in self.per_photo_db.items()}
        return d


def check_key(runtime: str, precision: str) -> str:
    """Where a manifest keeps the check of one runtime and precision (``served_checks``)."""
    return f"{runtime}/{precision}"


def check_inputs(desc: ModelDescriptor, side: int | None = None) -> dict[str, np.ndarray]:
    """One batch-of-1 network input per photo: a crop (windowed models: a pan of ``window`` frames)."""
    side = side or desc.checks.parity_size
    side -= side % desc.network.size_multiple
    out = {}
    for name in CHECK_PHOTOS:
        frames = pan_sequence(desc.window, side, name=name) if desc.window else real_photo_crop(side, side, name=name)
        out[name] = np.ascontiguousarray(frames[None])
    return out


def _runtime_version(runtime: str) -> str:
    if runtime == "openvino":
        import openvino

        return openvino.__version__
    import onnxruntime

    return onnxruntime.__version__


def check_precision(
    desc: ModelDescriptor, path, *, runtime: str, precision: str, threads: int = 2, side: int | None = None
) -> PrecisionReport:
    """Serve ``path`` on ``runtime`` in ``precision`` and compare with ONNX Runtime fp32; raises
    :class:`PrecisionError` below the tolerance, or when the runtime cannot run ``precision`` on this CPU (the
    check would then measure another precision than the one the config asks for)."""
    from stylize.engine.network import open_network

    t0 = time.perf_counter()
    names = {"input_name": desc.net_input.name, "output_name": desc.net_output.name}
    reference = open_network(path, runtime="onnxruntime", threads=threads, **names)
    served = open_network(path, runtime=runtime, precision=precision, threads=threads, **names)
    ran = getattr(getattr(served, "network", None), "built", None)
    actual = ran.precision if ran is not None else "fp32"
    if actual != precision:
        raise PrecisionError(
            f"{desc.id}: {runtime} runs {actual} on this CPU when asked for {precision} (no native {precision}): "
            f"the build cannot check the precision it would serve; build with --precision {actual}"
        )
    tolerance = TOLERANCE_DB[precision]
    per_photo, max_abs = {}, 0
    for name, x in check_inputs(desc, side).items():
        a, b = reference(x), served(x)
        if a.shape != b.shape:
            raise PrecisionError(f"{desc.id}: {runtime} output {b.shape} != ONNX Runtime's {a.shape} on {name}")
        per_photo[name] = psnr(a, b)
        max_abs = max(max_abs, int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
    report = PrecisionReport(
        runtime=runtime,
        precision=actual,
        psnr_db=min(per_photo.values()),
        per_photo_db=per_photo,
        max_abs=max_abs,
        tolerance_db=tolerance,
        input_side=next(iter(check_inputs(desc, side).values())).shape[-2],
        seconds=round(time.perf_counter() - t0, 2),
        runtime_version=_runtime_version(runtime),
    )
    if report.psnr_db < tolerance:
        worst = min(per_photo, key=per_photo.get)
        raise PrecisionError(
            f"{desc.id}: served on {runtime} in {precision} the output is {report.psnr_db:.1f} dB from ONNX Runtime "
            f"fp32 on {worst} (tolerance {tolerance} dB, max difference {max_abs} levels): refused"
        )
    return report


__all__ = [
    "TOLERANCE_DB",
    "CHECK_PHOTOS",
    "PrecisionError",
    "PrecisionReport",
    "check_key",
    "check_inputs",
    "check_precision",
]
