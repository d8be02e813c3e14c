"""How much of the pod's /dev/shm the python steps use, measured; and the dshm emptyDir's sizeLimit derived from it.

    python -m stylize_k8s.shm_usage --measure   # start the server, drive it, write k8s/capacity/shm-usage.json
                                                # (~15 min)
    python -m stylize_k8s.shm_usage             # the derivation from that file, and the docs/k8s.md section
    python -m stylize_k8s.shm_usage --write-doc # rewrite the section of docs/k8s.md between its markers
    python -m stylize_k8s.shm_usage --check     # exit 1 if k8s/base/deployment.yaml or docs/k8s.md disagree

The measurement starts the real tritonserver through the project's launcher with the Deployment's flags
(k8s/base/deployment.yaml: the python backend's ``shm-default-byte-size`` / ``shm-growth-byte-size``, the response
cache, the rest; the launcher picks the ports and the backend directory) on the built repository with every model,
and samples every shared-memory region the server's processes name (``triton_python_backend_shm_region_*``: one per
python stub, which the backend grows by ``shm-growth-byte-size`` when a request does not fit and never shrinks;
``triton_openvino_backend_shm_region_*``: the stubs of the Python-based OpenVINO backend this machine runs, which
the pod does not have) every 0.2 s:

* idle: loaded (warm-up requests included), nothing sent;
* warm: every image model, two requests at once (both instances of its step) of a real 256x256 photo, default
  options; one raw frame to every network, one window to the window model;
* peak: every image model, two at once, the request that needs the most shared memory the step's limits admit: a
  PNG of exactly ``max_bytes`` (noise pixels, the rest a private ancillary chunk the decoder skips), at an
  ``outscale`` that makes the output exactly ``max_output_pixels`` (8192x8192 from 512x512, outscale 16), PNG out.
  The step's region holds the input and the encoded output at once; the request-check step's holds the input;
* dense: two at once, animevideo_x2 at its largest admitted input (4096x4096 noise) and its own scale (x2 ->
  8192x8192, the output cap): no interpolation after the network (measured: its PNG compressed no worse than the
  peak drive's);
* rgba16 (one request, one model): the same with a 16-bit RGBA input, so that the output PNG has 8 bytes a pixel,
  the largest output the limits admit; measured to say what the sizeLimit does not cover (see the report).

The pod runs Triton's native OpenVINO backend (no stubs, no shared memory) and python stubs for ``request_check``
and the image steps only; a region never shrinks, so a pod that has served such requests for a while holds every
stub at its largest region at once, whatever the concurrency (a sequential drive measures it as well as a
concurrent one). How large an image step's region grows depends on how well the output PNG compresses, which is
the content's doing, not the model's: every image step admits the same bytes in and pixels out. So every image
step counts at the largest region any image step reached, and request_check at its own. (python_backend r24.10
shm_manager.cc: when a request does not fit, the region grows by ``shm-growth-byte-size`` x (request / growth +
1), with boost's ``truncate``, which reserves the blocks: every measured size is 4 MiB + a multiple of 64 MiB.) An
incompressible 8-bit output at the cap (a PNG of 192 MiB or more, which no drive produced) would take a region to
:data:`INCOMPRESSIBLE_REGION` by that rule; the report says how far the sizeLimit is from 12 of those. sizeLimit = that sum x (1 + :data:`MARGIN`), rounded up to :data:`ROUND`.

Not covered, and said in the report: 16-bit RGBA outputs (8 bytes a pixel; the rgba16 phase) and batches (the
ensembles take up to 4 images a request, each within the limits). A request that does not fit in the emptyDir
fails alone with INTERNAL "Failed to increase the shared memory pool size" and the server keeps serving (seen on
2.51: the growth reserves the blocks, so a full tmpfs is an error, not a SIGBUS).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import io
import json
import math
import os
import platform
import re
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

from stylize.contract import descriptors

from stylize_k8s import K8S, ROOT

REPORT = K8S / "capacity" / "shm-usage.json"
DEPLOYMENT = K8S / "base" / "deployment.yaml"
CPU_RESOURCES = K8S / "overlays" / "cpu" / "resources.yaml"
DOC = ROOT / "docs" / "k8s.md"
DOC_BEGIN = "<!-- shm-usage:begin (python -m stylize_k8s.shm_usage --write-doc) -->"
DOC_END = "<!-- shm-usage:end -->"

# Margin over the measured worst: the allocator's fragmentation when a stub has held requests of other sizes than
# the measured ones (the content is already at its bound: every image step is counted at the largest region, which
# is an incompressible 8-bit output). An assumption, not measured.
MARGIN = 0.10
ROUND = 256 << 20
MIB = 1 << 20
# flags the launcher sets from its own settings (the Deployment's values are passed through those settings)
OWNED = (
    "model-repository",
    "http-port",
    "grpc-port",
    "metrics-port",
    "strict-readiness",
    "exit-timeout-secs",
    "log-verbose",
    "cache-config",
    "http-restricted-api",
    "grpc-restricted-protocol",
)
REGION = re.compile(r"^triton_(\w+?)_backend_shm_region_")
PHASES = ("idle", "warm", "peak", "dense", "rgba16")
SIZED = ("idle", "warm", "peak", "dense")  # the phases the sizeLimit covers
# by the growth rule above, not measured: 4 MiB + 128 MiB for a 64 MiB input + 256 MiB for a >= 192 MiB output
INCOMPRESSIBLE_REGION = (4 + 128 + 256) * MIB


# ---- the Deployment ---------------------------------------------------------------------------------------------


def deployment_container(path: Path = DEPLOYMENT) -> tuple[dict, dict]:
    import yaml

    dep = yaml.safe_load(path.read_text())
    spec = dep["spec"]["template"]["spec"]
    return spec, next(c for c in spec["containers"] if c["name"] == "triton")


def deployed_size_limit(path: Path = DEPLOYMENT) -> int:
    spec, c = deployment_container(path)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
    vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return quantity_bytes(vol["emptyDir"]["sizeLimit"])


def quantity_bytes(q: str | int) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"unsupported quantity {q!r}")
    mult = {
        None: 1,
        "Ki": 1 << 10,
        "Mi": 1 << 20,
        "Gi": 1 << 30,
        "Ti": 1 << 40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }[m.group(2)]
    return int(m.group(1)) * mult


def quantity(n: int) -> str:
    return f"{n >> 30}Gi" if n % (1 << 30) == 0 else f"{n >> 20}Mi"


# ---- the derivation -----------------------------------------------------------------------------------------------


def _largest(stub: dict) -> int:
    return max(stub["bytes"][p] for p in SIZED if p in stub["bytes"])


def derive(report: dict) -> dict:
    """The pod's worst /dev/shm from the measured regions: every image step's stub at the largest region an image
    step reached, request_check's at its own (the module's docstring says why)."""
    pod = [s for s in report["stubs"] if s["backend"] == "python"]
    images = [s for s in pod if s["model"] != descriptors.REQUEST_CHECK_MODEL]
    per_image = max(_largest(s) for s in images)
    worst = per_image * len(images) + sum(_largest(s) for s in pod if s not in images)
    rgba = [s["bytes"]["rgba16"] - _largest(s) for s in pod if "rgba16" in s["bytes"]]
    size_limit = math.ceil(worst * (1 + MARGIN) / ROUND) * ROUND
    return {
        "python_stubs": len(pod),
        "image_stubs": len(images),
        "per_image_stub_bytes": per_image,
        "worst_bytes": worst,
        "margin": MARGIN,
        "size_limit_bytes": size_limit,
        "size_limit": quantity(size_limit),
        "rgba16_extra_bytes": max(rgba) if rgba else None,
    }


def mismatches(report: dict) -> list[str]:
    want = derive(report)
    out = []
    if deployed_size_limit() != want["size_limit_bytes"]:
        out.append(
            f"k8s/base/deployment.yaml: dshm sizeLimit {quantity(deployed_size_limit())}, the measurement "
            f"gives {want['size_limit']}"
        )
    _, c = deployment_container()
    for key in ("shm-default-byte-size", "shm-growth-byte-size"):
        if f"--backend-config=python,{key}={report['flags'][key]}" not in c["args"]:
            out.append(f"k8s/base/deployment.yaml: python {key} differs from the measured {report['flags'][key]}")
    if CPU_RESOURCES.exists() and f"/dev/shm ({want['size_limit']}," not in CPU_RESOURCES.read_text():
        out.append(
            f"k8s/overlays/cpu/resources.yaml: its memory comment must count /dev/shm ({want['size_limit']}, "
            "...) as measured"
        )
    text = DOC.read_text()
    if DOC_BEGIN not in text or text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip() != doc_section(report).strip():
        out.append("docs/k8s.md: the /dev/shm section differs (python -m stylize_k8s.shm_usage --write-doc)")
    return out


def _mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB"


def doc_section(report: dict) -> str:
    d = derive(report)
    ph = report["phases"]
    req = report["requests"]
    lines = [
        f"Measured {report['measured_at']} with `{report['command']}` (Triton {report['triton']}, the Deployment's "
        f"python backend flags: {report['flags']['shm-default-byte-size'] // MIB} MiB per stub, growing by "
        f"{report['flags']['shm-growth-byte-size'] // MIB} MiB; every model of the built repository; "
        f"`k8s/capacity/shm-usage.json`). Sizes are the regions' file sizes, all of it allocated (the growth "
        "reserves the blocks: on a full tmpfs it fails with ENOSPC); they never shrink.",
        "",
        "| phase | python stubs (the pod's) | OpenVINO Python-based backend (this machine only) |",
        "|---|---|---|",
    ]
    for p in PHASES:
        if p in ph:
            lines.append(f"| {p} | {_mib(ph[p]['python'])} | {_mib(ph[p]['openvino'])} |")
    per_model: dict[str, list[int]] = {}
    for s in report["stubs"]:
        if s["backend"] == "python":
            per_model.setdefault(s["model"], []).append(_largest(s))
    lines += [
        "",
        f"Warm: {req['warm']}. Peak: {req['peak']}. Dense: {req.get('dense', 'not run')}. Largest region per "
        "stub: "
        + ", ".join(f"{m} {' + '.join(_mib(b) for b in sorted(v))}" for m, v in sorted(per_model.items()))
        + ".",
        "",
        f"**sizeLimit {d['size_limit']}** = {d['image_stubs']} image-step stubs x {_mib(d['per_image_stub_bytes'])} "
        f"(the largest region of any image step: how far a region grows is the output's compressibility, the "
        f"content's doing, and every step admits the same bytes in and pixels out) + request_check's, "
        f"{_mib(d['worst_bytes'])} in all, x {1 + d['margin']:.2f} (margin for fragmentation; an assumption), "
        f"rounded up to {ROUND // MIB} MiB.",
    ]
    if d["rgba16_extra_bytes"] is not None:
        bound = d["worst_bytes"] + d["image_stubs"] * (INCOMPRESSIBLE_REGION - d["per_image_stub_bytes"])
        lines += [
            "",
            f"Not covered: an incompressible 8-bit output at the cap (a PNG of 192 MiB or more; the noise "
            f"drives' PNGs compressed below it) would take a step's region to {_mib(INCOMPRESSIBLE_REGION)} "
            f"by the backend's growth rule (computed, not measured): {_mib(bound)} for the pod, "
            f"{_mib(bound - d['size_limit_bytes'])} over the sizeLimit. {req['rgba16'][0].upper()}"
            f"{req['rgba16'][1:]} grew that step's region by a further "
            f"{_mib(d['rgba16_extra_bytes'])} (8 bytes a pixel out); batches (up to 4 images a request) "
            "multiply a step's need. Every step instance holding such requests at once would need more than "
            "any pod's memory. A request that does not fit in the emptyDir fails alone (INTERNAL \"Failed to "
            'increase the shared memory pool size ... No space left on device": seen on 2.51 with a full '
            "tmpfs) and the server keeps serving.",
        ]
    return "\n".join(lines)


def write_doc(report: dict) -> None:
    text = DOC.read_text()
    if DOC_BEGIN not in text:
        raise SystemExit(f"docs/k8s.md has no {DOC_BEGIN!r} marker")
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    DOC.write_text(f"{head}{DOC_BEGIN}\n{doc_section(report)}\n{DOC_END}{tail}")


# ---- the measurement ----------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def padded_png(pixels, size: int) -> bytes:
    """A PNG of ``pixels`` that is exactly ``size`` bytes: a private ancillary chunk (``paDd``, which decoders
    skip) after the header carries the rest."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=1)
    png = buf.getvalue()
    pad = size - len(png) - 12
    if pad < 0:
        raise ValueError(f"the PNG is {len(png)} bytes, more than {size}")
    return png[:33] + _chunk(b"paDd", b"\0" * pad) + png[33:]  # 33: signature + IHDR


def _image_limits(repo: Path, desc) -> dict[str, int]:
    text = (repo / desc.image_model / "config.pbtxt").read_text()
    return {
        k: int(re.search(rf'key: "{k}" value: {{ string_value: "(\d+)" }}', text).group(1))
        for k in ("max_bytes", "max_output_pixels", "max_pixels", "max_side")
    }


class Sampler(threading.Thread):
    """Every 0.2 s: the size of each region the server's processes name (a stub's command line carries its
    region and its instance name)."""

    def __init__(self, pid: int, shm_dir: Path = Path("/dev/shm")):
        super().__init__(daemon=True)
        self.pid, self.shm_dir = pid, shm_dir
        self.phase = "idle"
        self.stubs: dict[str, dict] = {}  # region -> {instance, model, backend, bytes: {phase: max}, blocks: ...}
        self.totals: dict[str, dict[str, int]] = {}
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def _tree(self) -> list[int]:
        kids: dict[int, list[int]] = {}
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    stat = (p / "stat").read_text()
                    kids.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(p.name))
                except (OSError, ValueError):
                    pass
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += kids.get(pid, [])
        return out

    def sample(self) -> None:
        seen: dict[str, tuple[str, str, int, int]] = {}
        for pid in self._tree():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if len(args) < 9 or not args[0].endswith("triton_python_backend_stub") or not REGION.match(args[2]):
                continue
            try:
                st = (self.shm_dir / args[2]).stat()
            except OSError:
                continue
            seen[args[2]] = (args[8], REGION.match(args[2]).group(1), st.st_size, st.st_blocks * 512)
        with self._lock:
            totals = self.totals.setdefault(self.phase, {})
            for backend in ("python", "openvino"):
                for what, i in (("bytes", 2), ("allocated", 3)):
                    key = f"{backend}_{what}"
                    totals[key] = max(totals.get(key, 0), sum(v[i] for v in seen.values() if v[1] == backend))
            for region, (instance, backend, size, blocks) in seen.items():
                s = self.stubs.setdefault(
                    region, {"instance": instance, "backend": backend, "bytes": {}, "allocated": {}}
                )
                s["bytes"][self.phase] = max(s["bytes"].get(self.phase, 0), size)
                s["allocated"][self.phase] = max(s["allocated"].get(self.phase, 0), blocks)

    def run(self) -> None:
        while not self._halt.wait(0.2):
            self.sample()

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase
        self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def _instance_model(instance: str) -> str:
    return re.sub(r"_\d+_\d+$", "", instance)


def measure(
    repo: Path, *, rgba16_model: str | None, dense_model: str | None = "animevideo_x2", log: Path | None = None
) -> dict:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from stylize.contract.descriptors import ENCODED_IMAGE
    from stylize.engine.photos import real_photo_crop
    from stylize.server.launcher import start_local

    _, c = deployment_container()
    args = c["args"]
    (cache,) = [a.split("=", 1)[1] for a in args if a.startswith("--cache-config=")]
    flags = {
        k: int(v)
        for a in args
        if a.startswith("--backend-config=python,shm-")
        for k, v in [a.split(",", 1)[1].split("=")]
    }
    extra = tuple(a for a in args if not any(a.startswith(f"--{o}=") for o in OWNED))
    images = [d for d in descriptors.MODELS if not d.window and (repo / d.image_model).is_dir()]
    rng = np.random.default_rng(0)
    requests = {}

    def image_inputs(data: bytes, outscale: float | None) -> list:
        t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[data]], dtype=object))
        out = [t]
        if outscale is not None:
            o = grpcclient.InferInput("OUTSCALE", [1, 1], "FP32")
            o.set_data_from_numpy(np.array([[outscale]], np.float32))
            f = grpcclient.InferInput("OUTPUT_FORMAT", [1, 1], "BYTES")
            f.set_data_from_numpy(np.array([[b"PNG"]], dtype=object))
            out += [o, f]
        return out

    def worst(desc, rgba16: bool) -> tuple[list, str]:
        lim = _image_limits(repo, desc)
        out_side = math.isqrt(lim["max_output_pixels"])
        side = math.ceil(out_side / 16)  # outscale <= 16 (stylize.contract.step.MAX_OUTSCALE)
        assert side * side <= lim["max_pixels"] and (not lim["max_side"] or side <= lim["max_side"]), (desc.id, lim)
        if rgba16:
            pixels = rng.integers(0, 1 << 16, (side, side, 4), dtype=np.uint16)
            data = padded_png16(pixels, lim["max_bytes"])
        else:
            data = padded_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), lim["max_bytes"])
        what = (
            f"{side}x{side} {'16-bit RGBA' if rgba16 else '8-bit RGB'} noise in a PNG of {lim['max_bytes'] // MIB}"
            f" MiB (max_bytes), outscale {out_side / side:g} -> {out_side}x{out_side} PNG (max_output_pixels)"
        )
        return image_inputs(data, out_side / side), what

    started = time.monotonic()
    with start_local(
        repo,
        cache_size=int(cache.split("size=")[1]),
        extra_args=extra,
        startup_timeout=1200,
        exit_timeout=60,
        **({"log_file": log} if log else {}),
    ) as server:
        sampler = Sampler(server.pid)
        sampler.start()
        time.sleep(3)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:

            def both(model: str, inputs: list) -> None:
                with cf.ThreadPoolExecutor(2) as pool:  # two in flight: both instances of the step
                    for r in pool.map(lambda _: client.infer(model, inputs, client_timeout=3600), range(2)):
                        r.as_numpy("RESULT_BYTES")

            sampler.set_phase("warm")
            buf = io.BytesIO()
            from PIL import Image

            Image.fromarray(real_photo_crop(256, 256)).save(buf, "PNG")
            for d in images:
                both(d.id, image_inputs(buf.getvalue(), None))
                print(f"warm: {d.id}", flush=True)
            for d in descriptors.MODELS:
                if not (repo / d.net_model).is_dir():
                    continue
                if d.window:
                    frames = np.ascontiguousarray(np.stack([real_photo_crop(64, 64)] * d.window)[None])
                    t = grpcclient.InferInput("FRAMES", list(frames.shape), "UINT8")
                    t.set_data_from_numpy(frames)
                else:
                    frame = real_photo_crop(256, 256)[None]
                    t = grpcclient.InferInput("FRAME", list(frame.shape), "UINT8")
                    t.set_data_from_numpy(frame)
                client.infer(d.net_model, [t], client_timeout=3600)
            requests["warm"] = (
                "two at once per image model: a real 256x256 photo (PNG), default options; one "
                "256x256 raw frame per network, one 7x64x64 window"
            )
            sampler.set_phase("peak")
            for d in images:
                inputs, requests["peak"] = worst(d, rgba16=False)
                t0 = time.monotonic()
                both(d.id, inputs)
                print(f"peak: {d.id} {time.monotonic() - t0:.0f} s", flush=True)
            requests["peak"] = "two at once per image model: " + requests["peak"]
            if dense_model:
                sampler.set_phase("dense")
                desc = descriptors.get(dense_model)
                lim = _image_limits(repo, desc)
                side = math.isqrt(lim["max_output_pixels"]) // desc.scale
                assert side * side <= lim["max_pixels"], (dense_model, lim)
                data = padded_png(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), lim["max_bytes"])
                inputs = image_inputs(data, None)
                f = grpcclient.InferInput("OUTPUT_FORMAT", [1, 1], "BYTES")
                f.set_data_from_numpy(np.array([[b"PNG"]], dtype=object))
                t0 = time.monotonic()
                both(dense_model, inputs + [f])
                requests["dense"] = (
                    f"two at once: {dense_model}, {side}x{side} 8-bit RGB noise in a PNG of "
                    f"{lim['max_bytes'] // MIB} MiB, at its scale x{desc.scale} -> "
                    f"{side * desc.scale}x{side * desc.scale} PNG"
                )
                print(f"dense: {dense_model} {time.monotonic() - t0:.0f} s", flush=True)
            if rgba16_model:
                sampler.set_phase("rgba16")
                inputs, what = worst(descriptors.get(rgba16_model), rgba16=True)
                client.infer(rgba16_model, inputs, client_timeout=3600).as_numpy("RESULT_BYTES")
                requests["rgba16"] = f"one {rgba16_model} request of {what}"
                print(f"rgba16: {rgba16_model}", flush=True)
        sampler.stop()
    stubs = [
        {
            "instance": s["instance"],
            "model": _instance_model(s["instance"]),
            "backend": s["backend"],
            "bytes": s["bytes"],
            "allocated": s["allocated"],
        }
        for s in sorted(sampler.stubs.values(), key=lambda s: s["instance"])
    ]
    # a region never shrinks, so each phase's numbers carry the previous ones' (a stub seen in one phase only is
    # one that started late, e.g. restarted: kept as measured)
    phases = {
        p: {
            "python": t["python_bytes"],
            "openvino": t["openvino_bytes"],
            "python_allocated": t["python_allocated"],
            "openvino_allocated": t["openvino_allocated"],
        }
        for p, t in sampler.totals.items()
    }
    import tritonclient

    return {
        "command": "python -m stylize_k8s.shm_usage --measure",
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "triton": "2.51.0",
        "tritonclient": getattr(tritonclient, "__version__", "?"),
        "flags": flags,
        "duration_s": round(time.monotonic() - started),
        "requests": requests,
        "phases": phases,
        "stubs": stubs,
    }


def padded_png16(pixels, size: int) -> bytes:
    """16-bit RGBA PNG of exactly ``size`` bytes (Pillow writes no 16-bit RGBA: written here, level-1 deflate)."""
    import numpy as np

    h, w, _ = pixels.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels.astype(">u2").view(np.uint8).reshape(h, w * 8)], 1)
    body = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
    png = b"\x89PNG\r\n\x1a\n" + body + idat + _chunk(b"IEND", b"")
    pad = size - len(png) - 12
    if pad < 0:
        raise ValueError(f"the PNG is {len(png)} bytes, more than {size}")
    return png[:33] + _chunk(b"paDd", b"\0" * pad) + png[33:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="run the measurement and write the report (minutes)")
    ap.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    ap.add_argument(
        "--rgba16-model", default="animevideo_x2", help="the model of the one 16-bit RGBA request ('' for none)"
    )
    ap.add_argument(
        "--dense-model",
        default="animevideo_x2",
        help="the model of the dense phase, one that keeps noise ('' for none)",
    )
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--log", type=Path, help="the server's log file")
    ap.add_argument("--write-doc", action="store_true", help="rewrite the docs/k8s.md section from the report")
    ap.add_argument("--check", action="store_true", help="exit 1 if the manifests or the doc disagree")
    args = ap.parse_args(argv)
    if args.measure:
        report = measure(
            args.model_repository,
            rgba16_model=args.rgba16_model or None,
            dense_model=args.dense_model or None,
            log=args.log,
        )
        args.report.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.report}")
    report = json.loads(args.report.read_text())
    if args.write_doc:
        write_doc(report)
    if args.check:
        bad = mismatches(report)
        for line in bad:
            print(line, file=sys.stderr)
        return 1 if bad else 0
    print(json.dumps(derive(report), indent=1))
    print()
    print(doc_section(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
