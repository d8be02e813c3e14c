"""The image step's network run inside the step's own process (CPU repositories): OpenVINO (the default) or ONNX
Runtime on the newest version of the network model, read from the same model repository. :func:`open_network` is
the one place either is opened.

Why not a BLS call to ``<id>_net``: every call crosses two process boundaries (step -> Triton -> network -> Triton ->
step) and on a CPU server those hops compete with the network for the same cores. Measured on this 2-core machine,
served side by side in one run (animevideo_x4, 128² PNG in/out, 2 requests in flight), served / in-process ONNX
Runtime: BLS to a 1 x 2-thread network 0.85-0.88 (INT8 0.77-0.80); BLS to a 2 x 1-thread network 0.88 (INT8 0.90);
the network in the step, 2 step instances x 1 thread, 0.95 (INT8 0.99-1.01). A rerun of the same comparison
(``python -m loadtest.step_runtime_ab``, 2026-11-25): 0.92 / 0.97 / 1.02 (INT8 0.81 / 0.95 / 1.00). Most of the gain
is the 2 x 1 layout; removing the hop adds about 5 % on top. The same experiment with OpenVINO
(``python -m loadtest.step_runtime_ab``, one server) kept both choices: in the step, 2 x 1 (docs/performance.md).
The network model stays in the repository for raw-frame clients and video windows; a GPU repository calls its
TensorRT plan by BLS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stylize.server.model_runner import DEFAULT_MODEL_FILENAME
from stylize.server.steps.pipeline import IN_PROCESS_RUNTIMES


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

    runtime = "onnxruntime"

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

    def describe(self) -> str:
        return f"ONNX Runtime fp32, {self.threads} intra-op thread(s)"


class OpenVinoNetwork:
    """One compiled OpenVINO model (one stream, latency hint, unpinned: ov_runner.PINNING): the same contract as
    :class:`InProcessNetwork`."""

    runtime = "openvino"

    def __init__(self, path: Path, *, input_name: str, output_name: str, threads: int, precision: str = "fp32",
                 cache_dir: Path | None = None):
        from stylize.server.ov_runner import CompileSettings, Network

        self.path = Path(path)
        self.threads = max(1, threads)
        self.input_name, self.output_name = input_name, output_name
        self.network = Network(self.path, CompileSettings(precision=precision, threads=self.threads, streams=1,
                                                          hint="LATENCY", cache_dir=cache_dir),
                               output_names=[output_name])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.network.run({self.input_name: batch})[0]

    def describe(self) -> str:
        return self.network.built.describe()


def open_network(path: Path, *, runtime: str, input_name: str, output_name: str, threads: int,
                 precision: str = "fp32", cache_dir: Path | None = None):
    """The step's network on ``runtime`` (one of :data:`IN_PROCESS_RUNTIMES`)."""
    if runtime == "openvino":
        return OpenVinoNetwork(path, input_name=input_name, output_name=output_name, threads=threads,
                               precision=precision, cache_dir=cache_dir)
    if runtime == "onnxruntime":
        if precision != "fp32":
            raise ValueError(f"ONNX Runtime runs these networks in fp32 on CPU, not {precision}")
        return InProcessNetwork(path, input_name=input_name, output_name=output_name, threads=threads)
    raise ValueError(f"in-process runtime {runtime!r}; expected one of {', '.join(IN_PROCESS_RUNTIMES)}")


__all__ = ["InProcessNetwork", "OpenVinoNetwork", "open_network", "newest_model_file"]
