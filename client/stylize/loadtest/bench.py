"""`stylize bench`: the same network and input through every way of running it, side by side in one run.

Per case (a network and an input side) the runners are:

* ``torch``       PyTorch eager, in-process: the export's ServingWrapper (uint8 in/out, same arithmetic as the graph)
* ``ort``         ONNX Runtime, in-process, on the repository's ONNX file (the CPU fp32 limit of that graph)
* ``ort_streams`` the same file in-process as the served CPU layout runs it: one 1-thread session per core, in parallel
* ``ort_prelu``   the same graph after the exact PRelu rewrite (graph_passes.rewrite_prelu), for graphs exported before it was part of the export
* ``ort_int8``    ONNX Runtime, in-process, on the repository's INT8 file
* ``ov``          OpenVINO f32, in-process, on the same file, compiled as the server compiles it (ov_runner)
* ``ov_bf16``     the same in bf16 (not run where the CPU has no native bf16: OpenVINO would run f32)
* ``ov_streams``  OpenVINO in the served precision and layout: one stream of one thread per image step instance
* ``ov_int8``     OpenVINO on the INT8 file (its float parts in the served precision)
* ``served``      the client-facing ensemble over gRPC: PNG in, PNG out, ``in_flight`` requests in flight
* ``served_net``  the network model over gRPC: raw uint8 frames in and out (no python step): isolates the steps' cost
* ``served_int8`` the INT8 ensemble over gRPC, like ``served``
* ``served_ort``  the same image ensemble with ONNX Runtime fp32 in its step, a variant the benchmark adds next to the
                  repository's models on the same server (what `stylize build --cpu-runtime onnxruntime` serves)

This machine is shared and noisy, so measurements are interleaved: every round runs every runner once on the same
number of images (rotating the order), and results are ratios taken within a round (median and range over rounds),
never absolute times from different moments. Triton's statistics API gives, for the served runs, where a request's
time goes (python step own work, network compute, queues). FLOPs are counted from the ONNX graph (flops.py) and the
machine's GEMM peak is measured in the same run.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import io
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from stylize_build.repository import ONNX_FILE, existing_versions

from stylize.contract.descriptors import (
    ENCODED_IMAGE,
    ENCODED_RESULT,
    REGISTRY,
    REQUEST_CHECK_MODEL,
    ModelDescriptor,
    triton_name,
)
from stylize.contract.tiling import CPU_TILES_PER_CALL

DEFAULT_CASES: tuple[tuple[str, int], ...] = (
    ("esrgan_x4", 128),
    ("esrgan_x4", 256),
    ("esrgan_anime_x4", 128),
    ("esrgan_anime_x4", 256),
    ("animevideo_x2", 128),
    ("animevideo_x2", 256),
    ("animevideo_x3", 128),
    ("animevideo_x3", 256),
    ("animevideo_x4", 128),
    ("animevideo_x4", 256),
    ("animeganv2", 512),
)
QUICK_CASES: tuple[tuple[str, int], ...] = (
    ("esrgan_anime_x4", 128),
    ("animevideo_x4", 128),
    ("animeganv2", 512),
)

# The targets (docs/performance.md states them next to the measurements).
TARGET_SERVED_VS_ORT = {
    "esrgan_x4": 0.95,
    "esrgan_anime_x4": 0.95,
    "animeganv2": 0.95,
    "animevideo_x2": 0.90,
    "animevideo_x3": 0.90,
    "animevideo_x4": 0.90,
}
TARGET_SERVED_VS_TORCH = 1.5
TARGET_INT8_SPEEDUP = 2.5
TARGET_INT8_LOSS_DB = 0.5
# OpenVINO as the CPU runtime (issue 15): the served default against the same image ensemble served with ONNX
# Runtime fp32 in the step (real weights), against in-process OpenVINO in the same precision and layout, and the
# served INT8 variant against served ONNX Runtime fp32 on two networks
TARGET_SERVED_VS_SERVED_ORT = 2.2
TARGET_SERVED_VS_INPROCESS = 0.95
TARGET_OV_INT8_VS_SERVED_ORT = 3.5
TARGET_OV_INT8_CASES = ("animevideo_x4", "esrgan_anime_x4")
PUBLISHED_ANIMEGAN_512 = ("1.6 s", "4-thread Intel i5-8250U laptop CPU (published figure)")


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    repository: Path
    url: str | None = None  # None: start a local server on the repository for the run
    cases: tuple[tuple[str, int], ...] = DEFAULT_CASES
    runners: tuple[str, ...] = (
        "torch",
        "ort",
        "ort_streams",
        "ort_prelu",
        "ort_int8",
        "ov",
        "ov_bf16",
        "ov_streams",
        "ov_int8",
        "served",
        "served_net",
        "served_int8",
        "served_ort",
    )
    rounds: int = 3  # at least this many interleaved rounds per case ...
    max_rounds: int = 8  # ... and more, up to this many, while the case has used less than case_seconds
    case_seconds: float = 150.0
    seconds_per_round: float = 2.0  # images per runner-round: enough for the in-process fp32 ORT to take this long
    max_images: int = 8
    in_flight: int = 2  # requests in flight for the served runners
    threads: int = 2  # intra-op threads of the in-process runtimes (the cores of this machine)
    photo: str = "astronaut.png"
    layout_cases: tuple[tuple[str, int], ...] = ()  # served image step layouts compared (instances x threads)


# ---------------------------------------------------------------------------------------------------------------
# Runners
# ---------------------------------------------------------------------------------------------------------------


class Runner:
    name = ""
    label = ""

    def run(self, n: int) -> float:
        """Process ``n`` images; returns wall seconds."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class TorchRunner(Runner):
    name, label = "torch", "PyTorch eager (in-process)"

    def __init__(self, desc: ModelDescriptor, frame: np.ndarray, threads: int):
        import torch
        from stylize_build.export import ServingWrapper
        from stylize_build.weights.loaders import load_weights

        torch.set_num_threads(threads)
        net, _ = load_weights(desc, None)
        self.torch = torch
        self.model = ServingWrapper(net=net.eval(), desc=desc).eval()
        self.x = torch.from_numpy(frame[None])

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            for _ in range(n):
                self.model(self.x)
        return time.perf_counter() - t0


class OrtRunner(Runner):
    def __init__(
        self, name: str, label: str, model: Path | bytes, desc: ModelDescriptor, frame: np.ndarray, threads: int
    ):
        from stylize.engine.ort_runner import ort_session

        self.name, self.label = name, label
        self.session = ort_session(model, threads=threads, inter_threads=1)
        self.feed = {desc.net_input.name: frame[None]}
        self.out = [desc.net_output.name]

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.session.run(self.out, self.feed)
        return time.perf_counter() - t0


def _split(n: int, k: int) -> list[int]:
    """``n`` images over ``k`` workers, as evenly as possible."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


class ParallelOrtRunner(Runner):
    """``streams`` ONNX Runtime sessions of ``threads`` intra-op threads each, one Python thread per session (ONNX
    Runtime releases the GIL): the in-process counterpart of the served layout (image step instances x threads)."""

    def __init__(
        self,
        name: str,
        label: str,
        model: Path,
        desc: ModelDescriptor,
        frame: np.ndarray,
        *,
        streams: int,
        threads: int,
    ):
        self.name, self.label = name, label
        self.runners = [OrtRunner(name, label, model, desc, frame, threads) for _ in range(streams)]
        self.pool = cf.ThreadPoolExecutor(max_workers=streams)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for f in [self.pool.submit(r.run, c) for r, c in zip(self.runners, _split(n, len(self.runners))) if c]:
            f.result()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.pool.shutdown()


class OvRunner(Runner):
    """OpenVINO in-process, compiled as the server compiles it (stylize.engine.ov_runner.compile_network): ``streams``
    streams sharing ``threads`` threads, one infer request per stream, each run from its own Python thread (OpenVINO
    releases the GIL). ``streams`` x 1 thread is the in-process counterpart of the served CPU layout (the image
    step's instances, one thread each). Refuses a precision this CPU would not run (OpenVINO turns bf16 into f32)."""

    def __init__(
        self,
        name: str,
        label: str,
        model: Path,
        desc: ModelDescriptor,
        frame: np.ndarray,
        *,
        precision: str,
        threads: int,
        streams: int = 1,
    ):
        from stylize.engine.ov_runner import CompileSettings, compile_network

        self.name, self.label = name, label
        self.built = compile_network(
            model,
            CompileSettings(
                precision=precision, threads=threads, streams=streams, hint="LATENCY" if streams == 1 else "THROUGHPUT"
            ),
        )
        if self.built.precision != precision:
            raise BenchError(f"OpenVINO runs {self.built.precision} on this CPU when asked for {precision}")
        self.requests = [self.built.compiled.create_infer_request() for _ in range(streams)]
        self.feed = {desc.net_input.name: frame[None]}
        self.pool = cf.ThreadPoolExecutor(max_workers=streams) if streams > 1 else None

    def _loop(self, request, count: int) -> None:
        for _ in range(count):
            request.infer(self.feed, share_inputs=True)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        if self.pool is None:
            self._loop(self.requests[0], n)
        else:
            for f in [
                self.pool.submit(self._loop, r, c) for r, c in zip(self.requests, _split(n, len(self.requests))) if c
            ]:
                f.result()
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


class ServedRunner(Runner):
    """``in_flight`` worker threads, one gRPC connection each, each sending its next request when the last returns."""

    def __init__(
        self,
        name: str,
        label: str,
        url: str,
        model: str,
        inputs: Callable[[], list],
        output: str,
        in_flight: int,
        check: Callable[[Any], None],
    ):
        import tritonclient.grpc as grpcclient

        self.name, self.label, self.model, self.output = name, label, model, output
        self.clients = [grpcclient.InferenceServerClient(url=url) for _ in range(in_flight)]
        self.inputs = [inputs() for _ in range(in_flight)]
        self.outputs = [[grpcclient.InferRequestedOutput(output)] for _ in range(in_flight)]
        self.pool = cf.ThreadPoolExecutor(max_workers=in_flight)
        self.check = check
        self.checked = False

    def _worker(self, i: int, count: int) -> None:
        for _ in range(count):
            result = self.clients[i].infer(self.model, self.inputs[i], outputs=self.outputs[i], client_timeout=600)
            if not self.checked:
                self.check(result.as_numpy(self.output))
                self.checked = True

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        futures = [self.pool.submit(self._worker, i, c) for i, c in enumerate(_split(n, len(self.clients))) if c]
        for f in futures:
            f.result()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.pool.shutdown()
        for c in self.clients:
            c.close()


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "PNG")
    return buf.getvalue()


def _encoded_inputs(data: bytes) -> Callable[[], list]:
    import tritonclient.grpc as grpcclient

    def make() -> list:
        t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        return [t]

    return make


def _frame_inputs(desc: ModelDescriptor, frame: np.ndarray) -> Callable[[], list]:
    import tritonclient.grpc as grpcclient

    def make() -> list:
        t = grpcclient.InferInput(desc.net_input.name, [1, *frame.shape], "UINT8")
        t.set_data_from_numpy(frame[None])
        return [t]

    return make


def _check_png(desc: ModelDescriptor, h: int, w: int) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        from PIL import Image

        data = out.reshape(-1)[0]
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (w * desc.scale, h * desc.scale):
                raise BenchError(f"{desc.id}: served output is {im.size}, expected {(w * desc.scale, h * desc.scale)}")

    return check


def _check_frame(desc: ModelDescriptor, h: int, w: int) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        if tuple(out.shape[1:3]) != (h * desc.scale, w * desc.scale):
            raise BenchError(
                f"{desc.id}: served network output {out.shape}, expected {h * desc.scale}x{w * desc.scale}"
            )

    return check


# ---------------------------------------------------------------------------------------------------------------
# Server statistics: where a served request's time goes
# ---------------------------------------------------------------------------------------------------------------


def _stats(client, model: str) -> dict[str, float]:
    s = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"]
    tot = {"count": 0.0, "request_ns": 0.0, "queue_ns": 0.0, "compute_ns": 0.0, "inferences": 0.0, "executions": 0.0}
    for m in s:
        tot["inferences"] += float(m.get("inference_count", 0))
        tot["executions"] += float(m.get("execution_count", 0))
        inf = m.get("inference_stats", {})
        tot["count"] += float(inf.get("success", {}).get("count", 0))
        tot["request_ns"] += float(inf.get("success", {}).get("ns", 0))
        tot["queue_ns"] += float(inf.get("queue", {}).get("ns", 0))
        tot["compute_ns"] += sum(
            float(inf.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output")
        )
    return tot


def _settled_stats(
    client,
    names: tuple[str, ...],
    before: dict[str, dict[str, float]],
    per_request: tuple[str | None, ...],
    sent: int,
    timeout: float = 5.0,
) -> dict[str, dict[str, float]]:
    """Statistics after ``sent`` requests, once Triton has booked them all.

    Triton books a request's statistics when it completes, which can be just after the client has its response: read
    too early, the ensemble's count misses the last request while the network it called already has it, and per-request
    means come out wrong. Poll (briefly) until every model in ``per_request`` has counted all ``sent`` requests."""
    deadline = time.perf_counter() + timeout
    while True:
        after = {m: _stats(client, m) for m in names}
        if (
            all(after[m]["count"] - before[m]["count"] >= sent for m in per_request if m)
            or time.perf_counter() > deadline
        ):
            return after
        time.sleep(0.01)


def _quiet_stats(client, names: tuple[str, ...], timeout: float = 2.0) -> dict[str, dict[str, float]]:
    """Statistics once nothing more is being booked (a warm-up's last request can be booked after it returned)."""
    deadline = time.perf_counter() + timeout
    last = {m: _stats(client, m) for m in names}
    while time.perf_counter() < deadline:
        time.sleep(0.05)
        now = {m: _stats(client, m) for m in names}
        if all(now[m]["count"] == last[m]["count"] for m in names):
            return now
        last = now
    return last


def _step_network_seconds(metrics_url: str | None, step: str) -> float | None:
    """Seconds the image step ``step`` spent in its network so far (its stylize_image_network_seconds histogram):
    where the step runs the network in its own process, Triton's statistics cannot separate the two."""
    if not metrics_url:
        return None
    import re
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(
        r'^stylize_image_network_seconds_sum\{[^}]*model="' + re.escape(step) + r'"[^}]*\} (\S+)$', text, re.MULTILINE
    )
    return float(m.group(1)) if m else None


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


@dataclass
class Breakdown:
    """Mean ms per served request (2 in flight): from Triton's per-model statistics over the measured rounds."""

    request_ms: float  # the ensemble's server-side time
    step_ms: float  # python step's own work (decode, tiling, encode): its compute minus the network calls
    network_ms: float  # network model compute
    queue_ms: float  # queue time summed over the step and the network
    step_model: str
    network_model: str
    network_batch: float = 1.0  # images per network execution (dynamic batching; compute is per execution)


def breakdown(
    deltas: dict[str, dict[str, float]],
    ensemble: str,
    step: str | None,
    net: str,
    *,
    step_network_s: float | None = None,
) -> Breakdown | None:
    """Per-request means. ``step_network_s``: the step's own network seconds over the same requests (from its metrics)
    when it runs the network in its process; the network model then sees none of these requests."""
    e = deltas.get(ensemble)
    n = deltas.get(net)
    if not e or not e["count"]:
        return None
    count = e["count"]
    s = deltas.get(step) if step else None
    step_compute = s["compute_ns"] if s else 0.0
    if s and step_network_s is not None and (not n or not n["count"]):
        network_ns = step_network_s * 1e9
        return Breakdown(
            request_ms=e["request_ns"] / count / 1e6,
            step_ms=max(step_compute - network_ns, 0.0) / count / 1e6,
            network_ms=network_ns / count / 1e6,
            queue_ms=s["queue_ns"] / count / 1e6,
            step_model=step or "",
            network_model=f"{net} (in the step's process)",
            network_batch=1.0,
        )
    if not n:
        return None
    nested = n["request_ns"] if s and step else 0.0  # BLS: the step's compute contains the network's request time
    return Breakdown(
        request_ms=e["request_ns"] / count / 1e6,
        step_ms=max(step_compute - nested, 0.0) / count / 1e6,
        network_ms=n["compute_ns"] / count / 1e6,
        queue_ms=((s["queue_ns"] if s else 0.0) + n["queue_ns"]) / count / 1e6,
        step_model=step or "",
        network_model=net,
        network_batch=n["inferences"] / n["executions"] if n.get("executions") else 1.0,
    )


# ---------------------------------------------------------------------------------------------------------------
# A case
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class RunnerResult:
    name: str
    label: str
    seconds_per_image: list[float] = field(default_factory=list)  # one per round
    error: str | None = None

    @property
    def images_per_s(self) -> float | None:
        """Best round: on a shared machine interference only ever adds time, so the fastest round is the closest to
        what the runner costs alone."""
        return 1.0 / min(self.seconds_per_image) if self.seconds_per_image else None


@dataclass
class StepProfile:
    """The image step's own work on this case's PNG, in-process and alone (no server, no other request): what the
    served path adds to the network per request (ms, best of ``reps``)."""

    decode_ms: float
    network_ms: float  # the same graph through ONNX Runtime inside the step's pipeline
    encode_ms: float  # resize to the output size, recompose, encode (PNG)
    output_bytes: int
    reps: int

    @property
    def step_ms(self) -> float:
        return self.decode_ms + self.encode_ms


def step_profile(
    desc: ModelDescriptor,
    png: bytes,
    onnx_path: Path,
    threads: int,
    reps: int = 3,
    *,
    runtime: str = "onnxruntime",
    precision: str = "fp32",
) -> StepProfile:
    """Run the image step's pipeline (stylize.engine.pipeline.process) with its network on ``runtime`` (the
    step's own code: steps/network.open_network)."""
    from stylize.contract.step import StepConfig
    from stylize.engine.network import open_network
    from stylize.engine.pipeline import Options, process

    run = open_network(
        onnx_path,
        runtime=runtime,
        precision=precision,
        threads=threads,
        input_name=desc.net_input.name,
        output_name=desc.net_output.name,
    )

    config = StepConfig.from_descriptor(desc, tiles_per_call=CPU_TILES_PER_CALL)  # as the CPU repository's step
    best = None
    out = b""
    for _ in range(reps + 1):  # the first call warms the session up
        out, rep = process(png, config, Options(), run)
        times = (rep.decode_seconds, rep.network_seconds, rep.encode_seconds)
        if best is None or sum(times) < sum(best):
            best = times
    return StepProfile(
        decode_ms=best[0] * 1e3, network_ms=best[1] * 1e3, encode_ms=best[2] * 1e3, output_bytes=len(out), reps=reps
    )


@dataclass
class CaseResult:
    model: str
    side: int
    weights: str
    gflop_per_image: float
    images_per_round: int
    runners: dict[str, RunnerResult]
    int8_quality: dict | None = None
    breakdown: dict[str, Breakdown] = field(default_factory=dict)  # served runner -> breakdown
    load_average: list[list[float]] = field(default_factory=list)  # per round
    notes: list[str] = field(default_factory=list)
    step: StepProfile | None = None
    served_layout: dict = field(default_factory=dict)  # the repository's image step: runtime, precision, layout
    int8_served_quality: dict | None = None  # the INT8 quality measured in the served runtime (manifest)

    def ratio(self, a: str, b: str) -> tuple[float, float, float] | None:
        """(median, min, max) over rounds of throughput(a) / throughput(b) measured in the same round."""
        ra, rb = self.runners.get(a), self.runners.get(b)
        if not ra or not rb or not ra.seconds_per_image or not rb.seconds_per_image:
            return None
        rs = [tb / ta for ta, tb in zip(ra.seconds_per_image, rb.seconds_per_image)]
        return statistics.median(rs), min(rs), max(rs)

    def best_ratio(self, a: str, b: str) -> float | None:
        """throughput(a) / throughput(b) of each runner's fastest round (the headline: see RunnerResult)."""
        ra, rb = self.runners.get(a), self.runners.get(b)
        if not ra or not rb or not ra.seconds_per_image or not rb.seconds_per_image:
            return None
        return min(rb.seconds_per_image) / min(ra.seconds_per_image)

    def gflops(self, runner: str) -> float | None:
        r = self.runners.get(runner)
        return None if not r or not r.images_per_s else self.gflop_per_image * r.images_per_s


def _newest(repo: Path, model: str) -> tuple[Path, dict] | None:
    versions = existing_versions(repo / model)
    if not versions:
        return None
    v = max(versions)
    return repo / model / str(v) / ONNX_FILE, versions[v]


def run_case(
    desc: ModelDescriptor,
    side: int,
    settings: BenchSettings,
    url: str | None,
    *,
    log: Callable[[str], None],
    metrics_url: str | None = None,
    served_ort: str | None = None,
) -> CaseResult:
    """``served_ort``: the name of this case's image ensemble served with ONNX Runtime in the step (a variant the
    benchmark added next to the repository's models), or None."""
    import onnx
    from stylize_build.graph_passes import rewrite_prelu

    from stylize.engine.photos import real_photo_crop

    from .flops import count_flops

    repo = settings.repository
    fp32 = _newest(repo, desc.net_model)
    if fp32 is None:
        raise BenchError(f"{desc.id}: no {desc.net_model} in {repo} (run `stylize build`)")
    int8 = _newest(repo, desc.int8_model)
    side -= side % desc.network.size_multiple
    frame = real_photo_crop(side, side, name=settings.photo)
    gflop = count_flops(fp32[0], desc, side, side) / 1e9
    result = CaseResult(
        model=desc.id,
        side=side,
        weights=fp32[1].get("weights", {}).get("status", "?"),
        gflop_per_image=gflop,
        images_per_round=0,
        runners={},
        int8_quality=int8[1].get("quality") if int8 else None,
    )
    if int8:  # measured by the build in the runtime it serves with (int8.served_quality); newest first
        served_quality = int8[1].get("served_quality", {})
        result.int8_served_quality = next(iter(sorted(served_quality.items(), reverse=True)), (None, None))[1]

    runners: list[Runner] = []
    wanted = settings.runners

    def add(name: str, make: Callable[[], Runner]) -> None:
        if name not in wanted:
            return
        try:
            runners.append(make())
        except Exception as e:  # noqa: BLE001 - a runner that cannot start is reported, the others still run
            result.runners[name] = RunnerResult(name, name, error=f"{type(e).__name__}: {e}")
            log(f"  {name}: not run ({e})")

    add("torch", lambda: TorchRunner(desc, frame, settings.threads))
    add("ort", lambda: OrtRunner("ort", "ONNX Runtime fp32 (in-process)", fp32[0], desc, frame, settings.threads))
    if settings.threads > 1:  # the served CPU layout: the step's instances, one thread each
        add(
            "ort_streams",
            lambda: ParallelOrtRunner(
                "ort_streams",
                f"ONNX Runtime fp32 (in-process, {settings.threads} sessions x 1 thread)",
                fp32[0],
                desc,
                frame,
                streams=settings.threads,
                threads=1,
            ),
        )
    graph = onnx.load(str(fp32[0]))
    if "ort_prelu" in wanted and rewrite_prelu(graph):
        add(
            "ort_prelu",
            lambda: OrtRunner(
                "ort_prelu",
                "ONNX Runtime fp32, PRelu rewritten (in-process)",
                graph.SerializeToString(),
                desc,
                frame,
                settings.threads,
            ),
        )
    if int8:
        add(
            "ort_int8",
            lambda: OrtRunner("ort_int8", "ONNX Runtime INT8 (in-process)", int8[0], desc, frame, settings.threads),
        )
    elif any(n in wanted for n in ("ort_int8", "served_int8")):
        result.notes.append(f"no {desc.int8_model} in the repository: build it with `stylize build --int8`")
    # OpenVINO in-process: fp32, bf16, and the served precision in the served layout (the step's instances as streams
    # of its threads) and on the INT8 file
    served = served_step(repo, desc)
    step, step_instances = served if served else (None, settings.threads)
    precision = step.net_precision if step is not None and step.net_runtime == "openvino" else "fp32"
    per = step.net_threads if step is not None else 1
    result.served_layout = {
        "runtime": step.net_runtime if step else "?",
        "precision": precision,
        "instances": step_instances,
        "threads": per,
    }
    ov = f"OpenVINO {{}} (in-process, {settings.threads} threads)"
    add(
        "ov",
        lambda: OvRunner("ov", ov.format("fp32"), fp32[0], desc, frame, precision="fp32", threads=settings.threads),
    )
    add(
        "ov_bf16",
        lambda: OvRunner(
            "ov_bf16", ov.format("bf16"), fp32[0], desc, frame, precision="bf16", threads=settings.threads
        ),
    )
    if step_instances > 1:
        add(
            "ov_streams",
            lambda: OvRunner(
                "ov_streams",
                f"OpenVINO {precision} (in-process, served layout: {step_instances} streams x {per} thread)",
                fp32[0],
                desc,
                frame,
                precision=precision,
                threads=step_instances * per,
                streams=step_instances,
            ),
        )
    if int8:
        add(
            "ov_int8",
            lambda: OvRunner(
                "ov_int8",
                f"OpenVINO INT8 ({precision} float parts, in-process)",
                int8[0],
                desc,
                frame,
                precision=precision,
                threads=settings.threads,
            ),
        )
    if url:
        png = _png(frame)
        add(
            "served",
            lambda: ServedRunner(
                "served",
                f"served ensemble {desc.id} (gRPC, PNG in/out, {settings.in_flight} in flight)",
                url,
                desc.id,
                _encoded_inputs(png),
                ENCODED_RESULT.name,
                settings.in_flight,
                _check_png(desc, side, side),
            ),
        )
        add(
            "served_net",
            lambda: ServedRunner(
                "served_net",
                f"served network {desc.net_model} (gRPC, raw uint8, {settings.in_flight} in flight)",
                url,
                desc.net_model,
                _frame_inputs(desc, frame),
                desc.net_output.name,
                settings.in_flight,
                _check_frame(desc, side, side),
            ),
        )
        if int8:
            add(
                "served_int8",
                lambda: ServedRunner(
                    "served_int8",
                    f"served INT8 ensemble {desc.int8_ensemble} (gRPC, PNG in/out, {settings.in_flight} in flight)",
                    url,
                    desc.int8_ensemble,
                    _encoded_inputs(png),
                    ENCODED_RESULT.name,
                    settings.in_flight,
                    _check_png(desc, side, side),
                ),
            )
        if served_ort:
            add(
                "served_ort",
                lambda: ServedRunner(
                    "served_ort",
                    f"served ensemble with ONNX Runtime fp32 in the step ({served_ort}, same server, "
                    f"PNG in/out, {settings.in_flight} in flight)",
                    url,
                    served_ort,
                    _encoded_inputs(png),
                    ENCODED_RESULT.name,
                    settings.in_flight,
                    _check_png(desc, side, side),
                ),
            )
        elif "served_ort" in wanted:
            result.notes.append("served_ort: only when the benchmark starts its own server (it adds the variant)")
    try:
        # warm-up (sessions, arenas, first-call costs, the server's first BLS call), and the size of a round
        t_ref = None
        for r in list(runners):
            try:
                t = r.run(settings.in_flight if isinstance(r, ServedRunner) else 1)
            except Exception as e:  # noqa: BLE001 - e.g. a model the server has not loaded: report, go on
                result.runners[r.name] = RunnerResult(r.name, r.label, error=f"{type(e).__name__}: {e}"[:500])
                log(f"  {r.name}: failed in warm-up ({result.runners[r.name].error})")
                runners.remove(r)
                r.close()
                continue
            if r.name == "ort":
                t_ref = t
        t_ref = t_ref or 1.0
        n = max(settings.in_flight, min(settings.max_images, math.ceil(settings.seconds_per_round / t_ref)))
        n += (-n) % settings.in_flight  # whole waves of requests in flight
        result.images_per_round = n
        for r in runners:
            result.runners[r.name] = RunnerResult(r.name, r.label)
        stats_client = None
        before: dict[str, dict[str, float]] = {}
        # the raw network path too: its network compute per request, next to the ensemble's (same model)
        step_names = {"served": desc.image_model, "served_int8": desc.int8_image_model, "served_net": None}
        ens_names = {"served": desc.id, "served_int8": desc.int8_ensemble, "served_net": desc.net_model}
        net_names = {"served": desc.net_model, "served_int8": desc.int8_model, "served_net": desc.net_model}
        deltas: dict[str, dict[str, dict[str, float]]] = {"served": {}, "served_int8": {}, "served_net": {}}
        step_network: dict[str, float | None] = {"served": 0.0, "served_int8": 0.0, "served_net": None}
        if url:
            import tritonclient.grpc as grpcclient

            stats_client = grpcclient.InferenceServerClient(url=url)
        t_case = time.perf_counter()
        rnd = 0
        while rnd < settings.rounds or (
            rnd < settings.max_rounds and time.perf_counter() - t_case < settings.case_seconds
        ):
            order = runners[rnd % len(runners) :] + runners[: rnd % len(runners)]
            result.load_average.append([round(x, 2) for x in os.getloadavg()])
            for r in order:
                if stats_client and r.name in deltas:
                    names = tuple(
                        dict.fromkeys(m for m in (ens_names[r.name], step_names[r.name], net_names[r.name]) if m)
                    )
                    before = _quiet_stats(stats_client, names)
                    net_s0 = _step_network_seconds(metrics_url, step_names[r.name]) if step_names[r.name] else None
                t = r.run(n)
                if stats_client and r.name in deltas:
                    after = _settled_stats(stats_client, names, before, (ens_names[r.name], step_names[r.name]), n)
                    if step_network[r.name] is not None:
                        net_s1 = _step_network_seconds(metrics_url, step_names[r.name])
                        step_network[r.name] = (
                            None if net_s0 is None or net_s1 is None else step_network[r.name] + net_s1 - net_s0
                        )
                    for m in names:
                        d = _delta(after[m], before[m])
                        acc = deltas[r.name].setdefault(m, {k: 0.0 for k in d})
                        for k, v in d.items():
                            acc[k] += v
                result.runners[r.name].seconds_per_image.append(t / n)
            log(
                f"  round {rnd + 1}: "
                + ", ".join(f"{r.name} {result.runners[r.name].seconds_per_image[-1]:.3f} s/img" for r in runners)
            )
            rnd += 1
        for name, d in deltas.items():
            b = breakdown(d, ens_names[name], step_names[name], net_names[name], step_network_s=step_network[name])
            if b:
                result.breakdown[name] = b
        if "served" in result.runners:
            try:
                in_step = result.served_layout.get("runtime") in ("openvino", "onnxruntime")
                result.step = step_profile(
                    desc,
                    _png(frame),
                    fp32[0],
                    settings.threads,
                    runtime=result.served_layout["runtime"] if in_step else "onnxruntime",
                    precision=result.served_layout.get("precision", "fp32"),
                )
            except Exception as e:  # noqa: BLE001 - the profile is extra information, never a reason to fail
                result.notes.append(f"step profile failed: {type(e).__name__}: {e}")
        if stats_client:
            stats_client.close()
    finally:
        for r in runners:
            r.close()
    return result


# ---------------------------------------------------------------------------------------------------------------
# Instance / thread layouts of the served network
# ---------------------------------------------------------------------------------------------------------------

DEFAULT_LAYOUTS: tuple[tuple[int, int], ...] = ((1, 2), (2, 1))  # (instances, intra-op threads) of the image step
LAYOUT_CASES: tuple[tuple[str, int], ...] = (("animevideo_x4", 128), ("esrgan_anime_x4", 128))


@dataclass
class LayoutResult:
    model: str
    side: int
    images_per_round: int
    layouts: dict[str, list[float]]  # "instances x threads" -> seconds per image, one per round

    def ratio(self, a: str, b: str) -> tuple[float, float, float] | None:
        ra, rb = self.layouts.get(a), self.layouts.get(b)
        if not ra or not rb:
            return None
        rs = [tb / ta for ta, tb in zip(ra, rb)]
        return statistics.median(rs), min(rs), max(rs)

    def best_ratio(self, a: str, b: str) -> float | None:
        ra, rb = self.layouts.get(a), self.layouts.get(b)
        return min(rb) / min(ra) if ra and rb else None


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One way of serving ``desc``'s image ensemble, next to others in the same repository (one server measures them
    all, side by side): its image step's instances x threads and runtime (``net_runtime`` "triton": BLS to the
    network, which ``net_layout`` (instances, threads) gives a model of its own), in ``precision``."""

    instances: int
    threads: int
    net_runtime: str  # openvino | onnxruntime (in the step's process) | triton (BLS)
    precision: str = "fp32"
    net_layout: tuple[int, int] | None = None
    net_backend: str = "openvino"  # the network model's backend when net_layout gives it one
    int8: bool = False


def add_variant(source: Path, target: Path, desc: ModelDescriptor, name: str, variant: Variant) -> str:
    """Write the models of one variant into ``target``: ensemble ``name`` -> request_check -> ``name``_cached ->
    ``name``_image (the step, configured as ``variant``) -> the network (``source``'s, or ``name``_net with ``net_layout``: its version
    folders symlinked). Returns the ensemble's name. Everything else comes from ``source`` by symlink."""
    import shutil

    from stylize_build import pbtxt

    net = desc.int8_model if variant.int8 else desc.net_model
    versions = existing_versions(source / net)
    if not versions:
        raise BenchError(f"{net}: no version in {source}")
    status = versions[max(versions)].get("weights", {}).get("status", "?")
    for model in (REQUEST_CHECK_MODEL, net):
        if not (target / model).exists():
            target.mkdir(parents=True, exist_ok=True)
            (target / model).symlink_to((source / model).resolve(), target_is_directory=True)
    step, step_net = triton_name(name, "image"), net
    if variant.net_layout:
        step_net = triton_name(name, "net")
        (target / step_net).mkdir(parents=True, exist_ok=True)
        for v in versions:
            link = target / step_net / str(v)
            if not link.exists():
                link.symlink_to((source / net / str(v)).resolve(), target_is_directory=True)
        (target / step_net / "config.pbtxt").write_text(
            pbtxt.net_config(
                desc,
                weights_status=status,
                instances=variant.net_layout[0],
                threads=variant.net_layout[1],
                model_name=step_net,
                runtime=variant.net_backend,
                precision=variant.precision,
            )
        )
    (target / step / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / desc.image_model / "1" / "model.py", target / step / "1" / "model.py")
    (target / step / "config.pbtxt").write_text(
        pbtxt.image_config(
            desc,
            weights_status=status,
            net_model=step_net,
            name=step,
            instances=variant.instances,
            threads=variant.instances * variant.threads,
            net_runtime=variant.net_runtime,
            precision=variant.precision,
        )
    )
    cached = triton_name(name, "cached")
    for model, config in (
        (cached, pbtxt.cached_config(desc, name=cached, image_model=step, weights_status=status)),
        (name, pbtxt.ensemble_config(desc, weights_status=status, name=name, cached_model=cached, net_model=step_net)),
    ):
        (target / model / "1").mkdir(parents=True, exist_ok=True)
        (target / model / "config.pbtxt").write_text(config)
    return name


def mirror_repository(source: Path, target: Path) -> Path:
    """``target`` with a symlink to every model of ``source``: variants can then be added next to them."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_dir() and not item.name.startswith(".") and not (target / item.name).exists():
            (target / item.name).symlink_to(item.resolve(), target_is_directory=True)
    return target


def served_step(repository: Path, desc: ModelDescriptor, *, int8: bool = False):
    """The image step's settings as the repository serves them (its config.pbtxt), or None without one."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from stylize.contract.step import StepConfig

    path = repository / (desc.int8_image_model if int8 else desc.image_model) / "config.pbtxt"
    if not path.is_file():
        return None
    cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
    step = StepConfig.from_parameters({k: v.string_value for k, v in cfg.parameters.items()})
    return step, sum(g.count or 1 for g in cfg.instance_group) or 1


def run_layouts(
    desc: ModelDescriptor,
    side: int,
    settings: BenchSettings,
    *,
    layouts: Sequence[tuple[int, int]] = DEFAULT_LAYOUTS,
    work_dir: Path,
    log: Callable[[str], None],
) -> LayoutResult:
    """One server with one variant of the image ensemble per layout (:func:`add_variant`: the step's instances x
    threads, the runtime and precision the repository serves), measured round-robin with ``in_flight`` requests."""
    from stylize.engine.photos import real_photo_crop
    from stylize.server.launcher import start_local

    side -= side % desc.network.size_multiple
    png = _png(real_photo_crop(side, side, name=settings.photo))
    served = served_step(settings.repository, desc)
    runtime = served[0].net_runtime if served and served[0].net_runtime != "triton" else "openvino"
    precision = served[0].net_precision if served else "fp32"
    repo = work_dir / f"{desc.id}-layouts"
    names = {}
    for inst, thr in layouts:
        if inst * thr > settings.threads:
            raise BenchError(f"layout {inst}x{thr} exceeds the {settings.threads} cores")
        names[f"{inst} x {thr}"] = add_variant(
            settings.repository,
            repo,
            desc,
            f"{desc.id}_{inst}x{thr}",
            Variant(instances=inst, threads=thr, net_runtime=runtime, precision=precision),
        )
    runners: dict[str, ServedRunner] = {}
    server = start_local(repo)
    try:
        for key, model in names.items():
            runners[key] = ServedRunner(
                "served",
                f"served {key}",
                server.grpc_url,
                model,
                _encoded_inputs(png),
                ENCODED_RESULT.name,
                settings.in_flight,
                _check_png(desc, side, side),
            )
        t = min(r.run(settings.in_flight) for r in runners.values())  # warm-up, and the size of a round
        n = max(
            settings.in_flight, min(settings.max_images, math.ceil(settings.seconds_per_round * settings.in_flight / t))
        )
        n += (-n) % settings.in_flight
        result = LayoutResult(desc.id, side, n, {k: [] for k in runners})
        keys = list(runners)
        for rnd in range(settings.rounds):
            for k in keys[rnd % len(keys) :] + keys[: rnd % len(keys)]:
                result.layouts[k].append(runners[k].run(n) / n)
            log(f"  layouts round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s/img" for k, v in result.layouts.items()))
        return result
    finally:
        for r in runners.values():
            r.close()
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    started: str
    command: str
    settings: dict
    machine: dict
    versions: dict
    peak: dict
    layout: dict  # model -> instances / threads as served
    cases: list[CaseResult]
    server: str
    seconds: float = 0.0
    layouts: list[LayoutResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _machine() -> dict:
    from stylize.loadtest.runner import machine

    return machine()


def _versions() -> dict:
    import onnxruntime
    import openvino
    import torch

    from stylize.contract.provenance import git_commit
    from stylize.engine.ov_runner import cpu_capabilities

    return {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "stylize": git_commit(short=True),
        "openvino": openvino.__version__.split("-")[0],
        "openvino_capabilities": list(cpu_capabilities()),
        "cpu_isa": _cpu_isa(),
    }


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpu_isa() -> list[str] | None:
    """Which of the matrix-multiply extensions that decide int8 and bf16 speed this CPU has (None: unknown)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    have = set(flags.split(":", 1)[1].split())
    return [f for f in _ISA if f in have]


def _layout(url: str, descs: Sequence[ModelDescriptor], admin_key: str | None) -> dict:
    """Instances and threads from the model configs (an admin API: ``admin_key``, stylize.contract.access)."""
    import tritonclient.grpc as grpcclient

    from stylize.contract.access import grpc_headers
    from stylize.loadtest.runner import model_layout

    out = {}
    client = grpcclient.InferenceServerClient(url=url)
    try:
        out["triton"] = client.get_server_metadata(as_json=True).get("version", "?")
        for d in descs:
            for name in (d.image_model, d.net_model, d.int8_image_model, d.int8_model):
                try:
                    lay = model_layout(client, name, grpc_headers(admin_key))
                    out[name] = {"kind": lay.kind, "instances": lay.instances, "threads": lay.intra_op_threads}
                except Exception:  # noqa: BLE001 - a model that is not loaded has no layout
                    pass
    finally:
        client.close()
    return out


def run_bench(
    settings: BenchSettings, *, command: str = "", log: Callable[[str], None] = lambda s: None
) -> BenchResult:
    from .flops import machine_peak

    t0 = time.perf_counter()
    descs = []
    for model, _ in settings.cases:
        if model not in REGISTRY:
            raise BenchError(f"unknown model {model!r}")
        if REGISTRY[model].window:
            raise BenchError(f"{model}: windowed video models are not part of this benchmark")
        descs.append(REGISTRY[model])
    server = None
    url = settings.url
    started = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    import tempfile

    variants_dir = None
    served_ort: dict[str, str] = {}
    try:
        if url is None and any(r.startswith("served") for r in settings.runners):
            from stylize.server.launcher import start_local

            serve = settings.repository
            if "served_ort" in settings.runners:
                # one server for both runtimes: the repository's models, and next to them each case's image
                # ensemble with ONNX Runtime in the step (the layout an --cpu-runtime onnxruntime build serves)
                from stylize_build.pbtxt import IMAGE_STEP_INSTANCES

                variants_dir = Path(tempfile.mkdtemp(prefix="stylize-bench-"))
                serve = mirror_repository(settings.repository, variants_dir / "repository")
                inst = max(1, min(IMAGE_STEP_INSTANCES, settings.threads))
                for d in {d.id: d for d in descs}.values():
                    served_ort[d.id] = add_variant(
                        settings.repository,
                        serve,
                        d,
                        f"{d.id}_ort",
                        Variant(instances=inst, threads=max(1, settings.threads // inst), net_runtime="onnxruntime"),
                    )
            log(f"starting a local server on {settings.repository} ...")
            server = start_local(serve)
            url = server.grpc_url
            log(f"server ready at {url}")
        # the image steps' own metrics (network time when they run the network in their process)
        metrics_url = (
            server.metrics_url if server else (f"http://{url.rsplit(':', 1)[0]}:8002/metrics" if url else None)
        )
        served_by = f"local server started by the benchmark ({settings.repository})" if server else (url or "none")
        log("measuring the GEMM peak (numpy and ONNX Runtime, fp32 and int8) ...")
        peak = asdict(machine_peak(threads=settings.threads))
        if url:
            from stylize.sdk.connection import default_admin_key

            layout = _layout(url, descs, server.admin_key if server else default_admin_key())
        else:
            layout = {}
        cases = []
        for model, side in settings.cases:
            log(f"{model} at {side}x{side}:")
            cases.append(
                run_case(
                    REGISTRY[model],
                    side,
                    settings,
                    url,
                    log=log,
                    metrics_url=metrics_url,
                    served_ort=served_ort.get(model),
                )
            )
            # the peak again between cases: on a shared machine the quietest moment gives the best estimate
            again = asdict(machine_peak(threads=settings.threads, reps=3))
            peak = {k: max(peak[k], again[k]) if isinstance(peak[k], float) else peak[k] for k in peak}
        layouts = []
        if settings.layout_cases:
            if server is not None:  # the layout servers are measured alone
                server.stop()
                server = None
            with tempfile.TemporaryDirectory(prefix="stylize-layouts-") as tmp:
                for model, side in settings.layout_cases:
                    log(f"{model} at {side}x{side}: served image step layouts")
                    layouts.append(run_layouts(REGISTRY[model], side, settings, work_dir=Path(tmp), log=log))
        peak_after = asdict(machine_peak(threads=settings.threads))
        peak = {k: max(peak[k], peak_after[k]) if isinstance(peak[k], float) else peak[k] for k in peak}
    finally:
        if server is not None:
            server.stop()
        if variants_dir is not None:
            import shutil

            shutil.rmtree(variants_dir, ignore_errors=True)
    return BenchResult(
        started=started,
        command=command,
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        machine=_machine(),
        versions=_versions(),
        peak=peak,
        layout=layout,
        cases=cases,
        server=served_by,
        seconds=round(time.perf_counter() - t0, 1),
        layouts=layouts,
    )


__all__ = [
    "DEFAULT_CASES",
    "QUICK_CASES",
    "BenchSettings",
    "BenchResult",
    "CaseResult",
    "RunnerResult",
    "Breakdown",
    "BenchError",
    "run_bench",
    "run_case",
    "breakdown",
    "StepProfile",
    "step_profile",
    "LayoutResult",
    "run_layouts",
    "DEFAULT_LAYOUTS",
    "LAYOUT_CASES",
    "OvRunner",
    "Variant",
    "add_variant",
    "mirror_repository",
    "served_step",
    "TARGET_SERVED_VS_ORT",
    "TARGET_SERVED_VS_TORCH",
    "TARGET_INT8_SPEEDUP",
    "TARGET_INT8_LOSS_DB",
    "TARGET_SERVED_VS_SERVED_ORT",
    "TARGET_SERVED_VS_INPROCESS",
    "TARGET_OV_INT8_VS_SERVED_ORT",
    "TARGET_OV_INT8_CASES",
]
