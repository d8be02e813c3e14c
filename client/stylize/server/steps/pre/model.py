"""Triton python step before an image network: encoded bytes -> padded uint8 frame + geometry.

Thin on purpose: the work is in stylize.server.steps.imaging (unit-tested); tensor names come from the descriptors.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from stylize.descriptors import ENCODED_IMAGE, FRAME_IN, GEOMETRY
from stylize.server.steps.imaging import InvalidImage, Limits, decode_image


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.size_multiple = int(params.get("size_multiple", "1"))
        self.limits = Limits(
            max_pixels=int(params.get("max_pixels", Limits.max_pixels)),
            max_bytes=int(params.get("max_bytes", Limits.max_bytes)),
            min_side=int(params.get("min_side", "1")),
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                data = pb_utils.get_input_tensor_by_name(request, ENCODED_IMAGE.name).as_numpy()
                if data.size != 1:
                    raise InvalidImage(f"{ENCODED_IMAGE.name} must hold exactly one encoded image, got {data.size}")
                frame, geometry = decode_image(bytes(data.reshape(-1)[0]), size_multiple=self.size_multiple,
                                               limits=self.limits)
            except InvalidImage as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(FRAME_IN.name, frame[np.newaxis]),
                pb_utils.Tensor(GEOMETRY.name, geometry[np.newaxis]),
            ]))
        return responses
