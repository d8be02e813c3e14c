"""Triton python step of an image ensemble: encoded image -> tiles through the network -> encoded result.

The network runs in this process on CPU repositories (``net_runtime: openvino`` or ``onnxruntime``, see
stylize.engine.network for why), or is called by BLS (``net_runtime: triton``: the GPU's TensorRT plan, or a
repository Triton reads from object storage, where the network's file is not on this machine's disk).

The version of the network that runs is the request's NET_VERSION input, or the newest version Triton served of
the network model when request_check saw the request (its SERVED_VERSIONS, an input here and so part of the
response-cache key: an unpinned cached answer is that of the version the key names). stylize.engine.network:
NetworkVersions asks Triton at each request, so a version loaded or unloaded while serving is followed, and a
version Triton does not serve is refused with INVALID_ARGUMENT naming the served ones. In this process each served
version that requests ask for is opened once and kept while it is served.

Thin on purpose: the work is in stylize.engine.pipeline / imaging / tiling (unit-tested); names come from the
descriptors and the step's config.pbtxt parameters. One response per request; a bad request gets INVALID_ARGUMENT
with the reason and never fails the other requests of the same execute() call.
"""

import json
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, FRAME_IN, FRAME_OUT, SERVED_VERSIONS
from stylize.contract.step import IN_PROCESS_RUNTIMES, StepConfig
from stylize.engine.imaging import REASONS, InvalidImage
from stylize.engine.memory_budget import COSTS, BudgetBusy, BudgetExceeded, MemoryBudget
from stylize.engine.network import (
    NetworkVersions,
    VersionNotServed,
    newest_model_file,
    open_network,
    token_version,
    triton_readiness,
)
from stylize.engine.ort_runner import threads_from_env
from stylize.engine.ov_runner import cache_dir_from_env
from stylize.engine.pipeline import Spent, parse_options, process, request_parameters

_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
_MEGAPIXELS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
_TILES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class NetworkError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class StepMetrics:
    """Custom metrics beside Triton's own on the metrics port (one series per model; instances share it)."""

    def __init__(self, model: str):
        H, C = pb_utils.MetricFamily.HISTOGRAM, pb_utils.MetricFamily.COUNTER
        self.families = {
            "decode": pb_utils.MetricFamily("stylize_image_decode_seconds", "Decode time per image (s)", H),
            "network": pb_utils.MetricFamily(
                "stylize_image_network_seconds", "Time in the network model per image, all tiles (s)", H
            ),
            "encode": pb_utils.MetricFamily(
                "stylize_image_encode_seconds", "Resize, recompose and encode time per image (s)", H
            ),
            "megapixels": pb_utils.MetricFamily("stylize_image_input_megapixels", "Input size per image (MP)", H),
            "tiles": pb_utils.MetricFamily("stylize_image_tiles", "Network tiles per image", H),
            "refused": pb_utils.MetricFamily("stylize_image_refused_total", "Refused requests by reason", C),
        }
        labels = {"model": model}
        self.decode = self.families["decode"].Metric(labels=labels, buckets=_SECONDS)
        self.network = self.families["network"].Metric(labels=labels, buckets=_SECONDS)
        self.encode = self.families["encode"].Metric(labels=labels, buckets=_SECONDS)
        self.megapixels = self.families["megapixels"].Metric(labels=labels, buckets=_MEGAPIXELS)
        self.tiles = self.families["tiles"].Metric(labels=labels, buckets=_TILES)
        # every reason exists from the start (at 0), so rate() works before the first refusal
        self.refused = {r: self.families["refused"].Metric(labels={**labels, "reason": r}) for r in REASONS}

    def observe(self, report):
        self.decode.observe(report.decode_seconds)
        self.network.observe(report.network_seconds)
        self.encode.observe(report.encode_seconds)
        self.megapixels.observe(report.input_megapixels)
        self.tiles.observe(report.tiles)

    def close(self):
        # Metric objects must go before their families (the python backend requires that order)
        for name in ("decode", "network", "encode", "megapixels", "tiles", "refused"):
            setattr(self, name, None)
        self.families = None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.config = StepConfig.from_parameters(params)
        self.option_inputs = [o.tensor.name for o in self.config.options]
        # the server's shared memory budget (off unless STYLIZE_MEMORY_BUDGET_MIB is set: the CPU pod sets it)
        self.budget = MemoryBudget.from_env()
        self.cost = COSTS.get(self.config.model_id)
        if self.budget is not None and self.cost is None:
            raise pb_utils.TritonModelException(
                f"{config['name']}: a memory budget is set but {self.config.model_id} has no measured cost "
                "(stylize.engine.memory_budget.COSTS)"
            )
        self.metrics = StepMetrics(config["name"])
        repository = Path(args["model_repository"]).parent
        net = self.config.net_model
        opener = None
        if self.config.net_runtime in IN_PROCESS_RUNTIMES:
            if newest_model_file(repository, net) is None:
                pb_utils.Logger.log_warn(
                    f"{config['name']}: no ONNX file of {net} next to this model (a repository Triton copied from "
                    "remote storage?): calling the network model by BLS instead"
                )
            else:
                opener = partial(
                    open_network,
                    runtime=self.config.net_runtime,
                    input_name=FRAME_IN.name,
                    output_name=FRAME_OUT.name,
                    threads=threads_from_env() or self.config.net_threads,
                    precision=self.config.net_precision,
                    cache_dir=cache_dir_from_env(),
                )
        # the versions of the network Triton serves, asked at each request (steps/network.py: NetworkVersions)
        self.versions = NetworkVersions(repository, net, ready=triton_readiness(pb_utils, repository, net), open=opener)
        version = self.versions.preload()
        if version is not None:
            pb_utils.Logger.log_info(
                f"{config['name']}: network {net} version {version} runs in this process "
                f"({self.versions.networks[version].describe()}); other served versions open "
                "when a request's NET_VERSION asks for them"
            )

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        with ExitStack() as held:  # the budget this request reserved, given back once it is answered
            return self._answer(request, held)

    def _answer(self, request, held):
        try:
            images = pb_utils.get_input_tensor_by_name(request, ENCODED_IMAGE.name).as_numpy().reshape(-1)
            tensors = {}
            for name in self.option_inputs:
                t = pb_utils.get_input_tensor_by_name(request, name)
                if t is not None:
                    tensors[name] = t.as_numpy().reshape(len(images), -1)
            parameters = request_parameters(request.parameters)  # refused by parse_options: inputs only
            # the newest served version of the network when the request was checked (part of the cache key)
            checked = pb_utils.get_input_tensor_by_name(request, SERVED_VERSIONS.name)
            token = checked.as_numpy().reshape(-1)[0] if checked is not None else b""
            newest = token_version(token.decode() if isinstance(token, bytes) else str(token), self.config.net_model)
            results, spent = [], Spent()  # the request's images share the limits (pipeline.Spent)
            for i, data in enumerate(images):
                try:
                    results.append(
                        self._one(request, data, parameters, {k: v[i] for k, v in tensors.items()}, spent, held, newest)
                    )
                except (InvalidImage, NetworkError) as e:
                    if len(images) == 1:
                        raise
                    # one response per request (Triton): a batch fails whole, and says which item failed
                    where = f"item {i} of the request's {len(images)} images: {e}"
                    raise (
                        InvalidImage(where, reason=e.reason)
                        if isinstance(e, InvalidImage)
                        else NetworkError(where, e.code)
                    ) from None
        except InvalidImage as e:
            self.metrics.refused[e.reason].increment(1)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
        except NetworkError as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), e.code))
        except Exception as e:  # a bug must fail this request only, not the others of the execute() call
            pb_utils.Logger.log_error(f"{self.config.model_id}: unexpected {type(e).__name__}: {e}")
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"internal error in the image step: {type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL
                )
            )
        out = np.array(results, dtype=np.object_).reshape(-1, 1)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(ENCODED_RESULT.name, out)])

    def _admit(self, held, report):
        """Reserve this image's estimated memory from the server's budget (held until the request is answered)."""
        if self.budget is None:
            return
        effective = max(report.output_pixels, report.input_pixels * self.config.scale**2)
        what = f"a {report.input_pixels:,}-pixel image ({effective:,} output pixels)"
        try:
            held.enter_context(self.budget.reserve(self.cost.image(effective), what=what))
        except BudgetExceeded as e:
            raise InvalidImage(str(e), reason="too_many_pixels") from None
        except BudgetBusy as e:
            raise NetworkError(str(e), pb_utils.TritonError.UNAVAILABLE) from None

    def _one(self, request, data, parameters, tensors, spent, held, newest):
        options = parse_options(self.config, parameters=parameters, tensors=tensors)
        if not isinstance(data, bytes):
            raise InvalidImage(f"{ENCODED_IMAGE.name} must hold encoded image bytes", reason="bad_tensor")
        try:
            version, network = self.versions.resolve(options.net_version, newest)
        except VersionNotServed as e:
            if e.invalid:
                raise InvalidImage(str(e), reason="bad_option") from None
            raise NetworkError(str(e), pb_utils.TritonError.UNAVAILABLE) from None
        result, report = process(
            data,
            self.config,
            options,
            partial(self._run, request, version, network),
            spent=spent,
            admit=partial(self._admit, held),
        )
        spent.add(report)
        self.metrics.observe(report)
        return result

    def _run(self, request, version, network, batch):
        """uint8 NxHxWx3 -> uint8 network output: ``version``'s network in this process, or one BLS request to
        that version of the network model (-1: the newest Triton serves)."""
        if request.is_cancelled():  # the client gave up: stop sending tiles of a large image
            raise NetworkError("request cancelled", pb_utils.TritonError.CANCELLED)
        if network is not None:
            try:
                return network(batch)
            except Exception as e:  # the runtime's own errors: this request fails, the step stays up
                raise NetworkError(
                    f"network {self.config.net_model} version {version} failed: {e}", pb_utils.TritonError.INTERNAL
                ) from e
        # a TensorRT plan's output is in GPU memory, where as_numpy() cannot read it: ask Triton for host memory
        net_request = pb_utils.InferenceRequest(
            model_name=self.config.net_model,
            model_version=version,
            requested_output_names=[FRAME_OUT.name],
            inputs=[pb_utils.Tensor(FRAME_IN.name, np.ascontiguousarray(batch))],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = net_request.exec()
        if response.has_error():
            err = response.error()
            code = err.code() if hasattr(err, "code") else pb_utils.TritonError.INTERNAL
            raise NetworkError(f"network model {self.config.net_model} failed: {err.message()}", code)
        # copied out of the response's shared memory, which goes with the response object
        return pb_utils.get_output_tensor_by_name(response, FRAME_OUT.name).as_numpy().copy()

    def finalize(self):
        self.metrics.close()
