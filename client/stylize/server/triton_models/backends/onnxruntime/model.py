"""Triton Python-based backend ``onnxruntime``: serves ``<model>/<version>/model.onnx`` with ONNX Runtime's Python API.

The launcher places this file at ``<backend-dir>/onnxruntime/model.py``; Triton then runs every model whose config
says ``backend: "onnxruntime"`` through the python backend with this class. The CPU server image installs it the
same way in NVIDIA's container, in place of the native C++ ONNX Runtime backend (k8s/image/Dockerfile); a GPU image
keeps the native one.

Thin on purpose: config parsing, validation, dynamic batching and error mapping live in stylize.engine.ort_runner
and stylize.server.triton_models.backend_model.
"""

import sys
from pathlib import Path

try:
    from stylize.engine import ort_runner
except ModuleNotFoundError:
    # A source checkout served without PYTHONPATH: the package sits five levels above the real file
    # (this file is usually reached through a symlink in the backend directory, hence resolve()).
    sys.path.append(
        str(Path(__file__).resolve().parents[5])
    )  # client/ (stylize/server/triton_models/backends/<runtime>/)
    from stylize.engine import ort_runner
from stylize.server.triton_models.backend_model import RunnerModel


class TritonPythonModel(RunnerModel):
    def initialize(self, args):
        ort_runner.check_numpy()
        config = ort_runner.OrtModelConfig.from_triton(args["model_config"])
        model_path = Path(args["model_repository"]) / args["model_version"] / config.model_filename
        self.runner = ort_runner.OrtRunner(
            config=config, model_path=model_path, threads_override=ort_runner.threads_from_env()
        )
