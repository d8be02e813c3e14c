"""Capture two real /metrics scrapes of a Triton server whose models have very different traffic.

The repository mirrors the real one's structure, generated from the descriptors: for every model an ensemble
``<id>`` over its steps (``desc.triton_models``). An image ensemble runs the shared request check, then its image
step (``desc.image_model``), which calls the network model through BLS, as the GPU step does (the deployed CPU
step runs the network in its own process; docs/k8s.md says what BLS does to the HPA metric); otherwise the steps
are chained (video: the network only). Every model is a tiny
python model that sleeps for a fixed time (cheap stand-ins for decode / network / encode, so that the capture runs
in seconds on 2 cores). Traffic, for ``--seconds`` seconds:

* ``animevideo_x4``: light network (8 ms), 6 clients back to back: its network queues heavily;
* ``esrgan_x4``: heavy network (150 ms), one client with pauses: no queue;
* ``esrgan_anime_x4``: 40 ms network, one client with pauses: no queue;
* every other model: loaded, idle.

The network of ``esrgan_x4`` has the response cache on (its requests repeat, so all but the first hit). The server runs with
the metric and cache flags of k8s/base (summaries on, local cache), so the scrape holds every family the adapter rules
and the dashboard read.

    python -m stylize_k8s.capture_queue_metrics --out tests/k8s/data

writes ``triton-queue-t0.prom``, ``triton-queue-t1.prom`` and ``triton-queue.json`` (elapsed seconds, Triton
version, scenario). Needs the embedded server of ``nvidia-pytriton`` (the ``server`` extra) and ``tritonclient``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from stylize.contract import descriptors

STEP_MS = {"pre": 1.0, "post": 1.0}
NET_MS = {"animevideo_x4": 8.0, "esrgan_x4": 150.0, "esrgan_anime_x4": 40.0}  # others: 20 ms, never called
CLIENTS = {"animevideo_x4": (6, 0.0), "esrgan_x4": (1, 0.3), "esrgan_anime_x4": (1, 0.4)}  # (threads, pause s)

SLEEP_MODEL = """import json, time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sleep_s = float(json.loads(args["model_config"])["parameters"]["sleep_ms"]["string_value"]) / 1000

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            time.sleep(self.sleep_s)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x + 1)]))
        return out
"""

IO = (
    'input [ { name: "X", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
    'output [ { name: "Y", data_type: TYPE_FP32, dims: [ 1 ] } ]\n'
)


BLS_MODEL = '''import json, time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Decode (sleep), the network through BLS, encode (sleep): the shape of the real image step."""

    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        self.sleep_s = float(params["sleep_ms"]["string_value"]) / 1000 / 2
        self.net = params["net"]["string_value"]

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            time.sleep(self.sleep_s)
            resp = pb_utils.InferenceRequest(model_name=self.net, requested_output_names=["Y"],
                                             inputs=[pb_utils.Tensor("X", x)]).exec()
            if resp.has_error():
                raise pb_utils.TritonModelException(resp.error().message())
            y = pb_utils.get_output_tensor_by_name(resp, "Y").as_numpy()
            time.sleep(self.sleep_s)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", y + 1)]))
        return out
'''

CACHED = descriptors.get("esrgan_x4").net_model


def _python_model(repo: Path, name: str, sleep_ms: float, *, bls_net: str | None = None) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(BLS_MODEL if bls_net else SLEEP_MODEL)
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n{IO}'
        "instance_group [ { count: 1, kind: KIND_CPU } ]\n"
        + ("response_cache { enable: true }\n" if name == CACHED else "")
        + f'parameters {{ key: "sleep_ms", value: {{ string_value: "{sleep_ms}" }} }}\n'
        + (f'parameters {{ key: "net", value: {{ string_value: "{bls_net}" }} }}\n' if bls_net else "")
    )


def _ensemble(repo: Path, name: str, steps: list[str]) -> None:
    tensors = ["X"] + [f"t{i}" for i in range(len(steps) - 1)] + ["Y"]
    body = ",\n".join(
        f'  {{ model_name: "{s}", model_version: -1, input_map {{ key: "X", value: "{tensors[i]}" }}, '
        f'output_map {{ key: "Y", value: "{tensors[i + 1]}" }} }}'
        for i, s in enumerate(steps)
    )
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 0\n{IO}ensemble_scheduling {{ step [\n{body}\n] }}\n'
    )


def build_repository(repo: Path, model_ids: list[str] | None = None) -> None:
    """The stand-in repository: every descriptor (default) or only ``model_ids``."""
    for d in descriptors.MODELS:
        if model_ids is not None and d.id not in model_ids:
            continue
        steps = [n for n in d.triton_models if n != d.id]
        net_ms = NET_MS.get(d.id, 20.0)
        image = getattr(d, "image_model", None)
        if image in steps:  # request_check (shared), then the image step, which calls the network through BLS
            if not (repo / descriptors.REQUEST_CHECK_MODEL).exists():
                _python_model(repo, descriptors.REQUEST_CHECK_MODEL, 0.0)
            _python_model(repo, d.net_model, net_ms)
            _python_model(repo, image, STEP_MS["pre"] + STEP_MS["post"], bls_net=d.net_model)
            _ensemble(repo, d.id, [descriptors.REQUEST_CHECK_MODEL, image])
            continue
        for n in steps:
            kind = "net" if n == d.net_model else ("pre" if n == steps[0] else "post")
            _python_model(repo, n, net_ms if kind == "net" else STEP_MS[kind])
        _ensemble(repo, d.id, steps)


def _pytriton_server() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nvidia-pytriton is not installed (the `server` extra)")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def backend_dir(tmp: Path, server: Path) -> Path:
    """The python backend next to the stub of this interpreter (symlinks keep the stubs' relative RPATH working)."""
    py = tmp / "backends" / "python"
    py.mkdir(parents=True)
    for f in (server / "backends" / "python").iterdir():
        if f.is_file():
            (py / f.name).symlink_to(f)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    (py / "triton_python_backend_stub").symlink_to(server / "python_backend_stubs" / ver / "triton_python_backend_stub")
    return tmp / "backends"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def capture(out: Path, seconds: float) -> None:
    import numpy as np
    import tritonclient.http as http

    server = _pytriton_server()
    tmp = Path(tempfile.mkdtemp(prefix="stylize-capture-"))
    proc = None
    try:
        repo = tmp / "repo"
        build_repository(repo)
        http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        log = open(tmp / "server.log", "w")
        proc = subprocess.Popen(
            [
                str(server / "bin" / "tritonserver"),
                f"--model-repository={repo}",
                f"--backend-directory={backend_dir(tmp, server)}",
                f"--http-port={http_port}",
                f"--grpc-port={grpc_port}",
                f"--metrics-port={metrics_port}",
                "--allow-gpu-metrics=false",
                "--strict-readiness=true",
                "--metrics-config=summary_latencies=true",
                f"--cache-directory={server / 'caches'}",
                "--cache-config=local,size=16777216",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not become ready; log: {tmp / 'server.log'}")
                time.sleep(0.5)

        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        version = json.loads(_get(f"http://127.0.0.1:{http_port}/v2"))["version"]
        t0_text, t0 = _get(metrics_url), time.monotonic()
        stop = t0 + seconds

        def client(model: str, pause: float) -> None:
            c = http.InferenceServerClient(f"127.0.0.1:{http_port}")
            x = http.InferInput("X", [1], "FP32")
            x.set_data_from_numpy(np.zeros(1, np.float32))
            while time.monotonic() < stop:
                c.infer(model, [x])
                if pause:
                    time.sleep(pause)

        threads = [threading.Thread(target=client, args=(m, p)) for m, (n, p) in CLIENTS.items() for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t1_text, t1 = _get(metrics_url), time.monotonic()

        out.mkdir(parents=True, exist_ok=True)
        (out / "triton-queue-t0.prom").write_text(t0_text)
        (out / "triton-queue-t1.prom").write_text(t1_text)
        (out / "triton-queue.json").write_text(
            json.dumps(
                {
                    "seconds": round(t1 - t0, 3),
                    "triton_version": version,
                    "net_ms": NET_MS,
                    "step_ms": STEP_MS,
                    "response_cache": [CACHED],
                    "clients": {m: {"threads": n, "pause_s": p} for m, (n, p) in CLIENTS.items()},
                    "captured_by": "python -m stylize_k8s.capture_queue_metrics",
                },
                indent=2,
            )
            + "\n"
        )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    capture(args.out, args.seconds)
    print(f"wrote {args.out}/triton-queue-t0.prom, triton-queue-t1.prom, triton-queue.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
