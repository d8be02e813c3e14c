"""Triton python step: the first step of every image ensemble, one model shared by all of them.

It refuses request parameters before the request reaches the image step, whose response cache keys on the inputs
alone (see stylize.contract.descriptors.RequestOption and stylize.engine.pipeline.check_parameters): a cache hit
would otherwise answer a request whose options came as parameters with the entry of the same image sent with other
options. Its output SERVED_VERSIONS is an input of the cached image step, so that step runs only after this one
agreed; it names the newest version Triton serves of every image network of the repository, which makes the
version that computes an unpinned answer part of that answer's cache key (the step runs the version named there).
It reads nothing of the image but the batch size.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from stylize.contract.descriptors import ENCODED_IMAGE, SERVED_VERSIONS, image_network_models
from stylize.engine.imaging import InvalidImage
from stylize.engine.network import served_versions_token, triton_readiness
from stylize.engine.pipeline import check_parameters, request_parameters


class TritonPythonModel:
    def initialize(self, args):
        self.repository = Path(args["model_repository"]).parent
        self.ready = {m: triton_readiness(pb_utils, self.repository, m) for m in image_network_models()}

    def execute(self, requests):
        # one look at the served versions for the requests Triton batched together (about 25 us per question)
        token = served_versions_token(self.repository, self.ready).encode()
        return [self._respond(request, token) for request in requests]

    def _respond(self, request, token):
        try:
            check_parameters(request_parameters(request.parameters))
        except InvalidImage as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
        n = len(pb_utils.get_input_tensor_by_name(request, ENCODED_IMAGE.name).as_numpy())  # the batch size
        out = np.full((n, *SERVED_VERSIONS.dims), token, dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(SERVED_VERSIONS.name, out)])
