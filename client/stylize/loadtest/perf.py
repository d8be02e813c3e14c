"""perf_analyzer: find it, feed it real photos, run one load level, read what it measured.

The binary is the one inside the ``tritonclient==2.51.0`` wheel (``<venv>/bin/perf_analyzer``; newer wheels need a
newer glibc). It needs Debian's ``libb64-0d`` and ``libcudart.so.12`` even without a GPU; the latter comes from the
PyPI wheel ``nvidia-cuda-runtime-cu12`` (the ``loadtest`` extra), whose ``lib/`` goes on ``LD_LIBRARY_PATH``.

Input data (``--input-data``): real photo crops. Ensembles get the encoded bytes; a BYTES tensor's raw form on the
wire is each element prefixed with its length (uint32, little endian), and ``{"b64": ...}`` is that raw form, so the
prefix is part of what is encoded (without it the server reads the first 4 bytes of the PNG as a length). Network
models get uint8 frames (raw bytes, with their shape).
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stylize.engine.photos import load_rgb

from .scenarios import Scenario

PERF_ANALYZER_ENV = "STYLIZE_PERF_ANALYZER"


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer is missing or cannot start (missing shared libraries); the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------------------
# The binary and its environment
# ---------------------------------------------------------------------------------------------------------------


def cuda_runtime_lib() -> Path | None:
    """``lib/`` of the nvidia-cuda-runtime-cu12 wheel (libcudart.so.12), found without importing it."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        lib = Path(loc) / "lib"
        if any(lib.glob("libcudart.so.12*")):
            return lib
    return None


def find_perf_analyzer() -> Path:
    """``$STYLIZE_PERF_ANALYZER``, else the one next to this interpreter (the venv's), else PATH."""
    explicit = os.environ.get(PERF_ANALYZER_ENV)
    candidates = [Path(explicit)] if explicit else [Path(sys.executable).parent / "perf_analyzer"]
    if not explicit and shutil.which("perf_analyzer"):
        candidates.append(Path(shutil.which("perf_analyzer")))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise PerfAnalyzerUnavailable(
        "perf_analyzer not found: install the load-test extra (pip install 'stylize[loadtest]', which brings "
        f"tritonclient[all]==2.51.0 and its perf_analyzer), or set {PERF_ANALYZER_ENV}"
    )


def perf_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    lib = cuda_runtime_lib()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def perf_analyzer_version(binary: Path | None = None) -> str:
    """Checks that the binary starts; returns its version line (e.g. 'perf_analyzer 2.51.0' or the wheel's)."""
    binary = binary or find_perf_analyzer()
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=perf_environment()
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PerfAnalyzerUnavailable(f"{binary} does not start: {e}") from None
    text = (out.stdout + out.stderr).strip()
    missing = re.search(r"error while loading shared libraries: (\S+?):", text)
    if missing:
        lib = missing.group(1)
        fix = (
            "apt-get install libb64-0d"
            if "b64" in lib
            else "pip install nvidia-cuda-runtime-cu12==12.9.79 (the loadtest extra)"
            if "cudart" in lib
            else "install the library"
        )
        raise PerfAnalyzerUnavailable(f"{binary} cannot load {lib}: {fix}")
    match = re.search(r"(\d+\.\d+\.\d+)", text)
    if out.returncode != 0 and not match:
        raise PerfAnalyzerUnavailable(f"{binary} --version failed: {text[-500:]}")
    return f"perf_analyzer {match.group(1)}" if match else text.splitlines()[0] if text else "perf_analyzer"


# ---------------------------------------------------------------------------------------------------------------
# Input data from real photos
# ---------------------------------------------------------------------------------------------------------------


def photo_crop(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random h x w crop of a real photo (the photo is upscaled first if it is smaller than the crop)."""
    from PIL import Image

    img = load_rgb(name)
    H, W = img.shape[:2]
    if H < h or W < w:
        f = max(h / H, w / W)
        img = np.asarray(Image.fromarray(img).resize((max(w, round(W * f)), max(h, round(H * f))), Image.BICUBIC))
        H, W = img.shape[:2]
    top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return np.ascontiguousarray(img[top : top + h, left : left + w])


def encode(frame: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(frame).save(buf, "JPEG", quality=90)
    else:
        Image.fromarray(frame).save(buf, "PNG")
    return buf.getvalue()


def bytes_element(data: bytes) -> bytes:
    """One element of a BYTES tensor in Triton's raw form: uint32 little-endian length, then the bytes."""
    return struct.pack("<I", len(data)) + data


def input_data(scenario: Scenario, *, seed: int = 0, stacked: bool = False) -> dict[str, Any]:
    """perf_analyzer's --input-data document for a scenario: one entry per crop (it cycles through them).

    ``stacked``: the network does not batch in Triton's sense (max_batch_size 0: the OpenVINO networks), its first
    dim is the batch; each entry then carries ``scenario.batch`` crops stacked, sent with ``-b 1``."""
    d = scenario.descriptor
    h, w = scenario.input.size
    rng = np.random.default_rng(seed)
    entries = []
    for photo in scenario.input.photos:
        for _ in range(scenario.input.crops):
            if scenario.is_ensemble:
                raw = bytes_element(encode(photo_crop(photo, h, w, rng), scenario.input.format))
                entries.append({d.ensemble_input.name: {"b64": base64.b64encode(raw).decode(), "shape": [1]}})
            else:
                if d.window:  # a short pan across the photo, like the export's sample input
                    big = photo_crop(photo, h + 2 * d.window, w + 3 * d.window, rng)
                    frames = np.stack([big[2 * t : 2 * t + h, 3 * t : 3 * t + w] for t in range(d.window)])
                else:
                    frames = photo_crop(photo, h, w, rng)
                entries.append(frames)
    if not scenario.is_ensemble:
        if stacked:  # a batch's crops in one entry: the 1st with the next batch - 1 (cycling)
            entries = [
                np.stack([entries[(i + k) % len(entries)] for k in range(scenario.batch)]) for i in range(len(entries))
            ]
        entries = [
            {
                d.net_input.name: {
                    "b64": base64.b64encode(np.ascontiguousarray(f).tobytes()).decode(),
                    "shape": list(f.shape),
                }
            }
            for f in entries
        ]
    return {"data": entries}


# ---------------------------------------------------------------------------------------------------------------
# One load level
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelStats:
    """Server-side averages per request of one model (from perf_analyzer's server statistics)."""

    request_us: float
    queue_us: float
    compute_us: float  # compute input + infer + output
    count: int


@dataclass
class Level:
    value: float  # concurrency or request rate
    status: str  # ok | unstable | error
    message: str = ""
    infer_per_s: float | None = None  # inferences (images) per second
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    client_send_us: float | None = None
    network_us: float | None = None  # network + server send/recv
    client_recv_us: float | None = None
    server: ModelStats | None = None  # the model under test
    composing: dict[str, ModelStats] = field(default_factory=dict)  # ensemble steps and BLS callees
    cache_hits: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def queue_us(self) -> float | None:
        """Queue time of a request summed over every model it went through (composing models, else its own)."""
        if self.composing:
            return sum(m.queue_us for m in self.composing.values())
        return self.server.queue_us if self.server else None

    @property
    def busy_us(self) -> float | None:
        """Server time of a request that is not queueing (the denominator of the HPA's queue/compute metric)."""
        if self.server is None or self.queue_us is None:
            return None
        return max(self.server.request_us - self.queue_us, 0.0)

    def latency(self, percentile: int) -> float | None:
        return {50: self.p50_ms, 90: self.p90_ms, 95: self.p95_ms, 99: self.p99_ms}[percentile]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["queue_us"] = self.queue_us
        d["busy_us"] = self.busy_us
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Level":
        d = dict(d)
        d.pop("queue_us", None)
        d.pop("busy_us", None)
        server = d.pop("server", None)
        composing = d.pop("composing", {}) or {}
        return cls(
            **d,
            server=ModelStats(**server) if server else None,
            composing={k: ModelStats(**v) for k, v in composing.items()},
        )


_UNSTABLE = re.compile(r"Failed to obtain stable measurement", re.IGNORECASE)
_ERROR = re.compile(r"(Thread \[\d+\] had error: .*|error: .*|Failed to .*)", re.IGNORECASE)


def command(
    binary: Path,
    scenario: Scenario,
    level: float,
    *,
    url: str,
    data_file: Path,
    csv_file: Path,
    bls_models: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    stacked: bool = False,
) -> list[str]:
    """perf_analyzer's command line: over gRPC, or over HTTP with ``headers`` (``url`` is then the HTTP endpoint).

    perf_analyzer reads the model config first, an admin API of our servers (stylize.contract.access); its -H headers go on
    HTTP requests only (2.51: "ignored for GRPC requests", and its gRPC config read was refused), so a server that
    restricts the config is load-tested over HTTP with the admin header.
    """
    cmd = [
        str(binary),
        "-m",
        scenario.triton_model,
        "-u",
        url,
        "-i",
        "http" if headers else "grpc",
        "--input-data",
        str(data_file),
        "-b",
        str(1 if stacked else scenario.batch),
        "--percentile",
        str(scenario.percentile),
        "-s",
        str(scenario.stability_percent),
        "-r",
        str(scenario.max_trials),
        "-f",
        str(csv_file),
        "--verbose-csv",
        "-v",
    ]  # -v: every pass goes into the log (why unstable)
    if scenario.mode == "concurrency":
        c = int(level)
        cmd += ["--concurrency-range", f"{c}:{c}"]
    else:
        cmd += ["--request-rate-range", f"{level}:{level}", "--request-distribution", scenario.distribution]
    if scenario.request_count:
        cmd += ["--measurement-mode", "count_windows", "--measurement-request-count", str(scenario.request_count)]
    else:
        cmd += ["--measurement-mode", "time_windows", "-p", str(scenario.measurement_ms)]
    if bls_models:
        cmd += ["--bls-composing-models", ",".join(bls_models)]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}:{value}"]
    return cmd


def _shown(cmd: Sequence[str], headers: Mapping[str, str] | None) -> str:
    """The command for the logs, header values (the admin key) left out."""
    text = " ".join(cmd)
    for value in (headers or {}).values():
        text = text.replace(value, "<redacted>")
    return text


def _num(row: Mapping[str, str], key: str) -> float | None:
    v = row.get(key)
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


_BLOCK_HEAD = re.compile(r"^\s{2}(\S+), version: (\d+)\s*$", re.MULTILINE)
_QTY = re.compile(r"(overhead|queue|compute input|compute infer|compute output) (\d+) usec")


def _stats(block: str) -> ModelStats | None:
    req = re.search(r"Avg request latency: (\d+) usec", block)
    count = re.search(r"Inference count: (\d+)", block)
    if not req:
        return None
    q: dict[str, float] = {}
    for name, value in _QTY.findall(block):
        q.setdefault(name, float(value))  # first occurrence: the cache-miss line repeats nothing we need
    compute = sum(q.get(k, 0.0) for k in ("compute input", "compute infer", "compute output"))
    return ModelStats(
        request_us=float(req.group(1)),
        queue_us=q.get("queue", 0.0),
        compute_us=compute,
        count=int(count.group(1)) if count else 0,
    )


def parse_stdout(text: str) -> tuple[ModelStats | None, dict[str, ModelStats], int]:
    """(server stats of the model under test, stats per composing model, cache hits) from perf_analyzer's report."""
    server_part, _, composing_part = text.partition("Composing models:")
    server_block = server_part[server_part.rfind("Server:") :] if "Server:" in server_part else ""
    top = _stats(server_block)
    hits = re.search(r"Cache hit count: (\d+)", server_block)
    composing: dict[str, ModelStats] = {}
    if composing_part:
        composing_part = composing_part.split("Inferences/Second vs.")[0]
        heads = list(_BLOCK_HEAD.finditer(composing_part))
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(composing_part)
            st = _stats(composing_part[m.end() : end])
            if st is not None:
                composing[m.group(1)] = st
    return top, composing, int(hits.group(1)) if hits else 0


def parse_level(
    value: float, batch: int, returncode: int, stdout: str, csv_path: Path, *, stacked: bool = False
) -> Level:
    """``stacked``: perf_analyzer counted requests of ``batch`` stacked images as one inference each."""
    rows = []
    if csv_path.is_file():
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    if returncode != 0 or not rows:
        if _UNSTABLE.search(stdout):
            return Level(
                value,
                "unstable",
                "perf_analyzer: no stable measurement (noisy machine or too short a "
                "window; raise measurement_ms / stability_percent)",
            )
        errors = [m.group(0).strip() for m in _ERROR.finditer(stdout)]
        msg = errors[0] if errors else (stdout.strip().splitlines() or ["no output"])[-1]
        return Level(value, "error", f"perf_analyzer exit {returncode}: {msg}"[:800])
    row = rows[-1]
    us = lambda k: _num(row, k)  # noqa: E731
    infer = _num(row, "Inferences/Second")
    if stacked and infer is not None:
        infer *= batch  # images per second, as for a batching model
    top, composing, hits = parse_stdout(stdout)
    if top is None:  # fall back to the CSV's aggregate server columns
        compute = sum(
            v or 0.0 for v in (us("Server Compute Input"), us("Server Compute Infer"), us("Server Compute Output"))
        )
        queue = us("Server Queue") or 0.0
        top = ModelStats(request_us=queue + compute, queue_us=queue, compute_us=compute, count=0)
    return Level(
        value=value,
        status="ok",
        infer_per_s=infer,
        requests_per_s=None if infer is None else infer / batch,
        p50_ms=_ms(us("p50 latency")),
        p90_ms=_ms(us("p90 latency")),
        p95_ms=_ms(us("p95 latency")),
        p99_ms=_ms(us("p99 latency")),
        client_send_us=us("Client Send"),
        network_us=us("Network+Server Send/Recv"),
        client_recv_us=us("Client Recv"),
        server=top,
        composing=composing,
        cache_hits=hits,
    )


def _ms(v: float | None) -> float | None:
    return None if v is None else v / 1000.0


def run_level(
    binary: Path,
    scenario: Scenario,
    level: float,
    *,
    url: str,
    data_file: Path,
    work_dir: Path,
    bls_models: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    stacked: bool = False,
) -> tuple[Level, str]:
    """Run perf_analyzer for one level; returns the parsed level and perf_analyzer's full output."""
    tag = f"{scenario.name}_{scenario.mode[0]}{level:g}"
    csv_file = work_dir / f"{tag}.csv"
    csv_file.unlink(missing_ok=True)
    cmd = command(
        binary,
        scenario,
        level,
        url=url,
        data_file=data_file,
        csv_file=csv_file,
        bls_models=bls_models,
        headers=headers,
        stacked=stacked,
    )
    t0 = time.perf_counter()
    logs = []
    for attempt in range(1 + scenario.unstable_retries):
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=scenario.timeout_s, env=perf_environment()
            )
            text, rc = out.stdout + out.stderr, out.returncode
        except subprocess.TimeoutExpired as e:
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            logs.append(text)
            (work_dir / f"{tag}.log").write_text(_shown(cmd, headers) + "\n\n" + "\n".join(logs))
            lvl = Level(level, "error", f"perf_analyzer did not finish within {scenario.timeout_s:g} s")
            lvl.seconds = round(time.perf_counter() - t0, 1)
            return lvl, text
        logs.append(f"--- attempt {attempt + 1} (exit {rc}) ---\n{text}")
        lvl = parse_level(level, scenario.batch, rc, text, csv_file, stacked=stacked)
        if lvl.status != "unstable":
            break
    (work_dir / f"{tag}.log").write_text(_shown(cmd, headers) + "\n\n" + "\n".join(logs))
    if lvl.ok and attempt:
        lvl.message = f"stable on attempt {attempt + 1}"
    lvl.seconds = round(time.perf_counter() - t0, 1)
    return lvl, text


def write_input_data(scenario: Scenario, directory: Path, *, stacked: bool = False) -> Path:
    path = directory / f"{scenario.name}.input.json"
    path.write_text(json.dumps(input_data(scenario, stacked=stacked)))
    return path


__all__ = [
    "PERF_ANALYZER_ENV",
    "PerfAnalyzerUnavailable",
    "cuda_runtime_lib",
    "find_perf_analyzer",
    "perf_environment",
    "perf_analyzer_version",
    "input_data",
    "bytes_element",
    "ModelStats",
    "Level",
    "command",
    "parse_stdout",
    "parse_level",
    "run_level",
    "write_input_data",
]
