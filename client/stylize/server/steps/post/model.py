"""Triton python step after an image network: uint8 frame + geometry -> cropped, encoded bytes.

Thin on purpose: the work is in stylize.server.steps.imaging (unit-tested); tensor names come from the descriptors.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from stylize.descriptors import ENCODED_RESULT, FRAME_OUT, GEOMETRY
from stylize.server.steps.imaging import InvalidImage, crop_output, encode_image


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.format = params.get("output_format", "PNG")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                frame = pb_utils.get_input_tensor_by_name(request, FRAME_OUT.name).as_numpy()
                geometry = pb_utils.get_input_tensor_by_name(request, GEOMETRY.name).as_numpy()
                data = encode_image(crop_output(frame[0], geometry[0]), fmt=self.format)
            except InvalidImage as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
                continue
            out = np.array([[data]], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(ENCODED_RESULT.name, out)]))
        return responses
