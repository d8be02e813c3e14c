"""The image step's network run inside the step's own process (CPU repositories): ONNX Runtime on the newest version of
the network model, read from the same model repository.

Why not a BLS call to ``<id>_net``: every call crosses two process boundaries (step -> Triton -> network -> Triton ->
step) and on a CPU server those hops compete with the network for the same cores. Measured on this 2-core machine,
served side by side in one run (animevideo_x4, 128² PNG in/out, 2 requests in flight), served / in-process ONNX
Runtime: BLS to a 1 x 2-thread network 0.85-0.88 (INT8 0.77-0.80); BLS to a 2 x 1-thread network 0.88 (INT8 0.90);
the network in the step, 2 step instances x 1 thread, 0.95 (INT8 0.99-1.01). A rerun of the same comparison
(``python -m loadtest.step_runtime_ab``, 2026-11-25): 0.92 / 0.97 / 1.02 (INT8 0.81 / 0.95 / 1.00). Most of the gain
is the 2 x 1 layout; removing the hop adds about 5 % on top. The network model stays in the repository for raw-frame
clients and video windows; a GPU repository calls its TensorRT plan by BLS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stylize.server.ort_runner import DEFAULT_MODEL_FILENAME


def newest_model_file(repository: Path, model: str, filename: str = DEFAULT_MODEL_FILENAME) -> tuple[Path, int] | None:
    """``<repository>/<model>/<v>/<filename>`` for the highest numbered version ``v`` that has the file, or None.

    Triton serves the same version by default (the version policy keeps the newest ones; a call without a version
    gets the highest loaded)."""
    folder = repository / model
    if not folder.is_dir():
        return None
    versions = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / filename).is_file()),
                      reverse=True)
    return (folder / str(versions[0]) / filename, versions[0]) if versions else None


class InProcessNetwork:
    """One ONNX Runtime session: uint8 NxHxWx3 in, the network's uint8 output out (the raw frame contract)."""

    def __init__(self, path: Path, *, input_name: str, output_name: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.path = Path(path)
        self.threads = max(1, threads)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name, self.output_name = input_name, output_name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch)})[0]


__all__ = ["InProcessNetwork", "newest_model_file"]
