"""What the image step's per-request version check costs: ``pb_utils.is_model_ready`` timed inside a python model
of a real tritonserver, against a network model of the built repository (the step asks once per version folder of
``<id>_net`` at each request: stylize.engine.network.NetworkVersions).

    python -m stylize.loadtest.experiments.version_check_cost [model_repository] [animevideo_x4]

Prints microseconds per call (mean over 1000 calls, twice after a warm-up of 10).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

PROBE = """
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.net = json.loads(args["model_config"])["parameters"]["net"]["string_value"]

    def execute(self, requests):
        out = []
        for r in requests:
            n = int(pb_utils.get_input_tensor_by_name(r, "N").as_numpy()[0])
            t0 = time.perf_counter()
            ready = [pb_utils.is_model_ready(model_name=self.net, model_version=str(1 + i % 3)) for i in range(n)]
            seconds = (time.perf_counter() - t0) / n
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
                "SECONDS", np.array([seconds, sum(ready), n], dtype=np.float64))]))
        return out
"""


def main(argv: list[str]) -> None:
    import tritonclient.grpc as grpcclient

    from stylize.contract.descriptors import REGISTRY
    from stylize.server.launcher import start_local

    source = Path(argv[0] if argv else "model_repository").resolve()
    net = REGISTRY[argv[1] if len(argv) > 1 else "animevideo_x4"].net_model
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / net).symlink_to(source / net, target_is_directory=True)
        (repo / "probe" / "1").mkdir(parents=True)
        (repo / "probe" / "1" / "model.py").write_text(PROBE)
        (repo / "probe" / "config.pbtxt").write_text(
            'name: "probe"\nbackend: "python"\nmax_batch_size: 0\n'
            'input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
            'output [ { name: "SECONDS" data_type: TYPE_FP64 dims: [ 3 ] } ]\n'
            "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
            f'parameters {{ key: "net" value: {{ string_value: "{net}" }} }}\n'
        )
        with start_local(repo) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            for n in (10, 1000, 1000):
                inp = grpcclient.InferInput("N", [1], "INT32")
                inp.set_data_from_numpy(np.array([n], np.int32))
                seconds, ready, calls = client.infer("probe", [inp]).as_numpy("SECONDS")
                print(
                    f"pb_utils.is_model_ready({net}, v): {seconds * 1e6:.1f} us per call over {int(calls)} calls "
                    f"(versions 1-3 in turn, {int(ready)} answered ready)"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
