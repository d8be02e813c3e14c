"""Triton Python-based backend ``onnxruntime``: serves ``<model>/<version>/model.onnx`` with ONNX Runtime's Python API.

The launcher places this file at ``<backend-dir>/onnxruntime/model.py``; Triton then runs every model whose config
says ``backend: "onnxruntime"`` through the python backend with this class. In NVIDIA's container the native C++
ONNX Runtime backend serves the same repository unchanged and this file is never loaded.

Thin on purpose: config parsing, validation, dynamic batching and error mapping live in stylize.server.ort_runner.
"""

import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

try:
    from stylize.server import ort_runner
except ModuleNotFoundError:
    # A source checkout served without PYTHONPATH: the package sits four levels above the real file
    # (this file is usually reached through a symlink in the backend directory, hence resolve()).
    sys.path.append(str(Path(__file__).resolve().parents[4]))
    from stylize.server import ort_runner


class TritonPythonModel:
    def initialize(self, args):
        ort_runner.check_numpy()
        config = ort_runner.OrtModelConfig.from_triton(args["model_config"])
        model_path = Path(args["model_repository"]) / args["model_version"] / config.model_filename
        self.runner = ort_runner.OrtRunner(
            config=config, model_path=model_path, threads_override=ort_runner.threads_from_env())
        self.input_names = [t.name for t in config.inputs]
        self.output_names = [t.name for t in config.outputs]

    def execute(self, requests):
        batch = []
        for request in requests:
            inputs = {}
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                inputs[name] = None if tensor is None else tensor.as_numpy()
            batch.append(inputs)
        return [self._response(outcome) for outcome in self.runner.run(batch)]

    def _response(self, outcome):
        if isinstance(outcome, ort_runner.InvalidInputError):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(outcome), pb_utils.TritonError.INVALID_ARG))
        if isinstance(outcome, Exception):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(outcome), pb_utils.TritonError.INTERNAL))
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.ascontiguousarray(outcome[name])) for name in self.output_names])
