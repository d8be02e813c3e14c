"""What the Python-based network backends (``backends/<runtime>/model.py``) share: requests -> numpy -> a
:class:`stylize.engine.model_runner.ModelRunner` -> one response per request, errors with their Triton code.

Imported only inside Triton's python stub (``triton_python_backend_utils`` exists nowhere else).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from stylize.engine.model_runner import InvalidInputError


class RunnerModel:
    """``execute`` / ``finalize`` of a ``TritonPythonModel`` whose ``initialize`` sets ``self.runner``."""

    runner = None

    def execute(self, requests):
        names = [t.name for t in self.runner.config.inputs]
        batch = []
        for request in requests:
            inputs = {}
            for name in names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                inputs[name] = None if tensor is None else tensor.as_numpy()
            batch.append(inputs)
        return [self._response(outcome) for outcome in self.runner.run(batch)]

    def _response(self, outcome):
        if isinstance(outcome, InvalidInputError):
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(outcome), pb_utils.TritonError.INVALID_ARG)
            )
        if isinstance(outcome, Exception):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(outcome), pb_utils.TritonError.INTERNAL))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(t.name, np.ascontiguousarray(outcome[t.name])) for t in self.runner.config.outputs
            ]
        )

    def finalize(self):
        self.runner = None
