"""stylize demo (what `make run` does): start the server, stylize/upscale real photos with every model, stop.

The photos come from the scikit-image wheel (real files, nothing downloaded). Outputs go to ./outputs/.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stylize.commands.infer import side_by_side_path
from stylize.contract.fileio import write_atomic
from stylize.engine.photos import bicubic_resize, pan_sequence, psnr

# (model id, photo, input side): the heavy 23-block ESRGAN gets a small input so the demo stays quick on a CPU
DEMO = (
    ("animeganv2", "astronaut.png", 512),
    ("esrgan_x4", "astronaut.png", 128),
    ("esrgan_anime_x4", "coffee.png", 128),
    ("animevideo_x2", "chelsea.png", 160),
    ("animevideo_x3", "chelsea.png", 160),
    ("animevideo_x4", "chelsea.png", 160),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the repository and run every model on real photos (make run)")
    p.add_argument(
        "--model-repository", type=Path, default=Path(os.environ.get("STYLIZE_MODEL_REPOSITORY", "model_repository"))
    )
    p.add_argument("-o", "--output", type=Path, default=Path(os.environ.get("STYLIZE_OUTPUT", "outputs")))
    p.add_argument("--keep-serving", action="store_true", help="keep the server running after the demo")
    p.add_argument("--grpc-port", type=int, default=None)
    p.add_argument("--http-port", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=None)
    p.set_defaults(func=run)


def _input(photo: str, side: int) -> Image.Image:
    from stylize.engine.photos import photo_path

    with Image.open(photo_path(photo)) as im:
        im = im.convert("RGB")
        scale = side / max(im.size)
        return im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)


def run(args: argparse.Namespace) -> int:
    from stylize.contract.descriptors import REGISTRY
    from stylize.sdk.client import StylizeClient
    from stylize.server.errors import ServerError
    from stylize.server.launcher import TritonServer
    from stylize.server.settings import ServerSettings

    settings = ServerSettings.from_env(
        model_repository=args.model_repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
    )
    server = TritonServer(settings)
    print(f"starting tritonserver on {settings.model_repository} ...", flush=True)
    t0 = time.monotonic()
    try:
        server.start()
        server.wait_ready()
    except ServerError as e:
        print(f"the server did not start: {e}", file=sys.stderr)
        server.stop()
        return 1
    try:
        print(
            f"ready in {time.monotonic() - t0:.1f} s  gRPC {server.grpc_url}  HTTP {server.http_url}  "
            f"metrics {server.metrics_url}\n"
        )
        args.output.mkdir(parents=True, exist_ok=True)
        with StylizeClient(url=server.grpc_url, admin_key=server.admin_key) as client:
            print(f"{'model':<16} {'weights':<10} {'input':>9} -> {'output':>9} {'seconds':>8}  file")
            status = {m.id: m for m in client.models()}
            for model_id, photo, side in DEMO:
                img = _input(photo, side)
                t = time.monotonic()
                out = client.infer(img, model_id)
                dt = time.monotonic() - t
                path = args.output / f"{Path(photo).stem}_{model_id}.png"
                side_by_side = side_by_side_path(path)
                out.save(path)
                _side_by_side(img, out).save(side_by_side)
                weights = getattr(status.get(model_id), "weights", "?")
                print(
                    f"{model_id:<16} {weights:<10} {img.width:>4}x{img.height:<4} -> "
                    f"{out.width:>4}x{out.height:<4} {dt:8.2f}  {path}"
                )
            # BasicVSR: a camera pan over a real photo, downscaled x1/4 (the ground truth is known), through a
            # 7-frame window as raw uint8 frames; the side-by-side is bicubic | BasicVSR | ground truth
            desc = REGISTRY["basicvsr_x4"]
            truth = pan_sequence(desc.window, 256, name="astronaut.png")
            frames = bicubic_resize(truth, 1 / desc.scale)
            t = time.monotonic()
            up = client.infer_frames(frames, "basicvsr_x4")
            dt = time.monotonic() - t
            c = desc.window // 2
            path = args.output / "astronaut_basicvsr_x4_centre_frame.png"
            write_atomic(path, _png(up[c]))
            bicubic = bicubic_resize(frames[c : c + 1], desc.scale)[0]
            strip = np.concatenate([bicubic, up[c], truth[c]], axis=1)
            write_atomic(args.output / "astronaut_basicvsr_x4_side_by_side.png", _png(strip))
            weights = getattr(status.get("basicvsr_x4"), "weights", "?")
            print(
                f"{'basicvsr_x4':<16} {weights:<10} {desc.window}x64x64  -> {up.shape[0]}x{up.shape[1]}x"
                f"{up.shape[2]} {dt:8.2f}  {path}  (PSNR vs ground truth {psnr(up[c], truth[c]):.1f} dB, "
                f"bicubic {psnr(bicubic, truth[c]):.1f} dB)"
            )
        print(f"\noutputs in {args.output.resolve()}/ (each with a *_side_by_side.png)")
        if any(getattr(m, "weights", "") == "untrained" for m in status.values()):
            print(
                "note: models marked 'untrained' run a seeded initialisation: their trained weights are not on PyPI. "
                "Put the file in a folder and set STYLIZE_WEIGHTS_DIR to it, or `stylize build --weights ID=FILE` "
                "(`stylize build --list-weights` lists what each model can use)."
            )
        if args.keep_serving:
            print("\nserving; Ctrl-C stops", flush=True)
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            try:
                while server.is_running():
                    time.sleep(1)
            except KeyboardInterrupt:
                print("draining and stopping ...", flush=True)
    finally:
        server.stop()
    return 0


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _side_by_side(a: Image.Image, b: Image.Image) -> Image.Image:
    a = a.resize(b.size, Image.NEAREST) if a.size != b.size else a
    canvas = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return canvas
