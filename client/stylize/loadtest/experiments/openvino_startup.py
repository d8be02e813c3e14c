"""Start-up of a server whose CPU networks run on OpenVINO: cold (an empty model cache), warm (the cache of the cold
start: a restart) and, for comparison, the same repository with ONNX Runtime; then the first request at an input
shape the server has not seen (OpenVINO compiles a dynamic-shape model once and its kernels per new shape).

    python -m stylize.loadtest.experiments.openvino_startup  # the built repository; ~3 server starts
    python -m stylize.loadtest.experiments.openvino_startup --skip-ort --models animevideo_x4 esrgan_anime_x4

One server at a time, on a repository of symlinks to the built models (``--skip-ort`` leaves out the ONNX Runtime
start, whose repository has the CPU networks' and image steps' configs rewritten by the config writer). The model
cache is a fresh temporary folder (``STYLIZE_OV_CACHE``). Prints the numbers; writes nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY
from stylize.engine.ov_runner import OV_CACHE_ENV
from stylize.engine.photos import real_photo_crop
from stylize.server.launcher import start_local


def mirror(source: Path, target: Path, models: list[str], *, runtime: str | None = None) -> Path:
    """Symlinks to ``source``'s models of ``models`` (ids); ``runtime``: rewrite the networks' and image steps'
    configs for that CPU runtime (fp32), else keep the built ones."""
    from stylize_build import pbtxt

    target.mkdir(parents=True, exist_ok=True)
    for model_id in models:
        desc = REGISTRY[model_id]
        for name in desc.triton_models:
            if (target / name).exists():
                continue
            # the ensemble too for a windowed model: it follows its network's batching (pbtxt.ensemble_config)
            rewrite = runtime and name in (desc.net_model, desc.image_model, *([desc.id] if desc.window else []))
            if not rewrite:
                (target / name).symlink_to((source / name).resolve(), target_is_directory=True)
                continue
            (target / name).mkdir()
            for item in (source / name).iterdir():
                if item.name != "config.pbtxt":
                    (target / name / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
            status = "real"
            text = (
                pbtxt.net_config(desc, weights_status=status, threads=2, runtime=runtime)
                if name == desc.net_model
                else pbtxt.ensemble_config(desc, weights_status=status, runtime=runtime)
                if name == desc.id
                else pbtxt.image_config(desc, weights_status=status, net_runtime=runtime)
            )
            (target / name / "config.pbtxt").write_text(text)
    return target


def _png(side_h: int, side_w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(real_photo_crop(side_h, side_w)).save(buf, "PNG")
    return buf.getvalue()


def _timed_start(repo: Path, env: dict[str, str]) -> tuple[float, object]:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        t0 = time.perf_counter()
        server = start_local(repo, startup_timeout=1200)
        return time.perf_counter() - t0, server
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compile_seconds(log_path: Path) -> tuple[float, int]:
    """(sum of the compile seconds, models compiled) that the OpenVINO backends and steps logged ("compiled in")."""
    import re

    found = [float(m) for m in re.findall(r"compiled in ([0-9.]+) s", log_path.read_text(errors="replace"))]
    return sum(found), len(found)


def first_requests(url: str, model_id: str, shapes: list[tuple[int, int]]) -> list[tuple[str, float, float]]:
    """(shape, first request s, second request s) at each new shape, in order."""
    import tritonclient.grpc as grpcclient

    out = []
    with grpcclient.InferenceServerClient(url) as client:
        for h, w in shapes:
            t = grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")
            t.set_data_from_numpy(np.array([[_png(h, w)]], dtype=np.object_))
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                client.infer(
                    model_id, [t], outputs=[grpcclient.InferRequestedOutput(ENCODED_RESULT.name)], client_timeout=600
                )
                times.append(time.perf_counter() - t0)
            out.append((f"{h}x{w}", *times))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument("--models", nargs="*", default=[d.id for d in REGISTRY.values()])
    p.add_argument("--skip-ort", action="store_true")
    p.add_argument("--probe", default="animevideo_x4", help="image ensemble for the first-request-at-a-shape probe")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stylize-startup-") as tmp:
        repo = mirror(args.model_repository, Path(tmp) / "openvino", args.models)
        cache = Path(tmp) / "cache"
        rows = []
        for label in ("cold (empty cache)", "warm (the cold start's cache)"):
            seconds, server = _timed_start(repo, {OV_CACHE_ENV: str(cache)})
            try:
                size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 1e6
                compiled, count = compile_seconds(server.log_path)
                rows.append((label, seconds, size))
                print(
                    f"openvino {label}: ready in {seconds:.1f} s, cache {size:.0f} MB; {count} compiled models "
                    f"(backends and steps) took {compiled:.1f} s together",
                    flush=True,
                )
                if label.startswith("warm") and args.probe in args.models:
                    for shape, first, second in first_requests(
                        server.grpc_url, args.probe, [(96, 96), (128, 128), (200, 136), (128, 128)]
                    ):
                        print(
                            f"  {args.probe} first request at {shape}: {first * 1e3:.0f} ms, then "
                            f"{second * 1e3:.0f} ms",
                            flush=True,
                        )
            finally:
                server.stop()
        if not args.skip_ort:
            ort = mirror(args.model_repository, Path(tmp) / "onnxruntime", args.models, runtime="onnxruntime")
            seconds, server = _timed_start(ort, {OV_CACHE_ENV: "off"})
            server.stop()
            print(f"onnxruntime: ready in {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
