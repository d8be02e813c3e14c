"""Triton Python-based backend ``openvino``: serves ``<model>/<version>/<default_model_filename>`` (the build writes
``model.onnx``) with OpenVINO's Python API.

The launcher places this file at ``<backend-dir>/openvino/model.py``; Triton then runs every model whose config
says ``backend: "openvino"`` through the python backend with this class. The CPU server image installs it the same
way in NVIDIA's container (``python -m stylize.server.install --python-based-backends``, k8s/image/Dockerfile), in
place of the native C++ OpenVINO backend, which reads the same parameters (stylize.engine.ov_runner says which, and
where the two differ) but does not enforce ``max_request_pixels``; a GPU image keeps the native one.

Thin on purpose: config parsing, validation and error mapping live in stylize.engine.ov_runner and
stylize.server.triton_models.backend_model.
"""

import sys
from pathlib import Path

try:
    from stylize.engine import ov_runner
except ModuleNotFoundError:
    # A source checkout served without PYTHONPATH: the package sits five levels above the real file
    # (this file is usually reached through a symlink in the backend directory, hence resolve()).
    sys.path.append(
        str(Path(__file__).resolve().parents[5])
    )  # client/ (stylize/server/triton_models/backends/<runtime>/)
    from stylize.engine import ov_runner
import triton_python_backend_utils as pb_utils
from stylize.engine.model_runner import check_numpy
from stylize.server.triton_models.backend_model import RunnerModel


class TritonPythonModel(RunnerModel):
    def initialize(self, args):
        check_numpy()
        config = ov_runner.OvModelConfig.from_triton(args["model_config"])
        model_path = Path(args["model_repository"]) / args["model_version"] / config.model_filename
        self.runner = ov_runner.OvRunner(config=config, model_path=model_path, cache_dir=ov_runner.cache_dir_from_env())
        pb_utils.Logger.log_info(
            f"{config.name}: {model_path.name} version {args['model_version']} on {self.runner.built.describe()}"
        )
