"""Triton python step: the first step of every image ensemble, one model shared by all of them.

It refuses request parameters before the request reaches the image step, whose response cache keys on the inputs
alone (see stylize.contract.descriptors.RequestOption and stylize.engine.pipeline.check_parameters): a cache hit
would otherwise answer a request whose options came as parameters with the entry of the same image sent with other
options. Its output REQUEST_CHECKED is an input of the image step, so that step runs only after this one agreed.
It reads nothing of the image but the batch size.
"""

import numpy as np
import triton_python_backend_utils as pb_utils
from stylize.contract.descriptors import ENCODED_IMAGE, REQUEST_CHECKED
from stylize.engine.imaging import InvalidImage
from stylize.engine.pipeline import check_parameters, request_parameters


class TritonPythonModel:
    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            check_parameters(request_parameters(request.parameters))
        except InvalidImage as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
        n = len(pb_utils.get_input_tensor_by_name(request, ENCODED_IMAGE.name).as_numpy())  # the batch size
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(REQUEST_CHECKED.name, np.ones((n, *REQUEST_CHECKED.dims), dtype=np.bool_))]
        )
