"""Tiling benchmark of the image ensembles: quality (tiled vs untiled), memory (peak server RSS) and the python step's
overhead. Writes ``docs/tiling.md`` (and a JSON beside it).

    python -m stylize.loadtest.experiments.tiling_bench               # everything (the 2048^2 esrgan_x4 run
                                                                      # takes ~30-60 min on 2 cores)
    python -m stylize.loadtest.experiments.tiling_bench --skip-large  # quality and overhead only (a few minutes)

What is measured, each on a real server started here on a repository of symlinks to the built models (so the memory
figure is the models under test, not the whole repository):

* tiled vs untiled: the ensemble's output (server-side tiles, feathered blending) against the same network run on the
  whole frame through its raw ``<id>_net`` path, on real photos; PSNR in dB (target >= 45);
* ``esrgan_x4`` on a 2048x2048 input (a mosaic of scikit-image's real photos): wall time and the peak resident memory
  of the server's whole process tree (tritonserver + python stubs), sampled every 0.2 s (target <= 3 GB);
* the python step's cost per request on ``animevideo_x2`` at 128x128: the ensemble (PNG in, PNG out) against the raw
  network path (uint8 frames in and out), one request at a time and two in flight.

A standalone module with a ``main()``; ``stylize bench`` can call :func:`main` (the bench command is issue 6's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from stylize.loadtest.experiments import ROOT

GB = 1024**3


# ---- inputs -----------------------------------------------------------------------------------------------------


def real_photo(name: str = "astronaut.png") -> np.ndarray:
    from PIL import Image

    from stylize.engine.photos import photo_path

    return np.asarray(Image.open(photo_path(name)).convert("RGB"))


def mosaic(side: int = 2048, cell: int = 512) -> np.ndarray:
    """A ``side``-square mosaic of real photos (scikit-image's data), each cropped/resized to ``cell``."""
    from PIL import Image

    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]
    cells = []
    for n in names:
        img = Image.fromarray(real_photo(n))
        s = min(img.size)
        cells.append(np.asarray(img.crop((0, 0, s, s)).resize((cell, cell), Image.Resampling.LANCZOS)))
    k = side // cell
    rows = [np.concatenate([cells[(r * k + c) % len(cells)] for c in range(k)], axis=1) for r in range(k)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- server -----------------------------------------------------------------------------------------------------


def subset_repository(repository: Path, model_ids: list[str], into: Path) -> Path:
    """A repository of symlinks to the built models of ``model_ids`` (ensemble, image step, network)."""
    from stylize.contract.descriptors import REGISTRY

    for mid in model_ids:
        for name in REGISTRY[mid].triton_models:
            (into / name).symlink_to((repository / name).resolve(), target_is_directory=True)
    return into


def tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over every process of the server's session (tritonserver + stubs)."""
    rss = pss = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != pid and int(entry) != pid:  # fields[3]: session id
                continue
            for line in Path(f"/proc/{entry}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue  # a process that just ended
    return rss, pss


def session_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process of the server's session, keyed by role: "server", or
    the model name of a python stub (``<model>_<group>_<instance>`` on its command line; instances summed)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != pid and int(entry) != pid:
                continue
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            role = "server"
            if int(entry) != pid:
                # python stub argv: binary, model file, shm region, shm sizes, parent pid, backend dir, ipc size,
                # then the instance name "<model>_<group>_<instance>"
                role = args[8].decode().rsplit("_", 2)[0] if len(args) > 8 else "stub"
            out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return out


class PeakMemory:
    """Samples :func:`tree_memory` in a thread; ``peak_rss``/``peak_pss`` after ``stop()``."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every = pid, every
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory(self.pid)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---- calls ------------------------------------------------------------------------------------------------------


def infer_image(client, model: str, data: bytes, **options) -> bytes:
    import tritonclient.grpc as grpcclient

    from stylize.contract.descriptors import ENCODED_IMAGE, ENCODED_RESULT, REGISTRY

    inputs = [grpcclient.InferInput(ENCODED_IMAGE.name, [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[data]], dtype=np.object_))
    by_name = {o.name: o for o in REGISTRY[model].options}
    for key, value in options.items():  # as optional inputs: part of the response-cache key
        spec = by_name[key].tensor
        t = grpcclient.InferInput(spec.name, [1, 1], spec.dtype)
        t.set_data_from_numpy(np.array([[value]], dtype=spec.numpy_dtype))
        inputs.append(t)
    result = client.infer(model, inputs, client_timeout=7200)
    return result.as_numpy(ENCODED_RESULT.name).reshape(-1)[0]


def infer_frame(client, model_id: str, frame: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    from stylize.contract.descriptors import REGISTRY

    d = REGISTRY[model_id]
    t = grpcclient.InferInput(d.net_input.name, [1, *frame.shape], "UINT8")
    t.set_data_from_numpy(frame[None])
    return client.infer(d.net_model, [t], client_timeout=7200).as_numpy(d.net_output.name)[0]


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---- measurements -----------------------------------------------------------------------------------------------


def measure_quality(client, cases: list[tuple[str, str, tuple[int, int, int], int | None]], log) -> list[dict]:
    """Ensemble (tiled) vs the raw network on the whole frame, per (model, photo, crop, tile_size)."""
    from stylize.contract.descriptors import REGISTRY
    from stylize.contract.tiling import plan_tiles

    rows = []
    for model, photo, (y, x, side), tile in cases:
        frame = np.ascontiguousarray(real_photo(photo)[y : y + side, x : x + side])
        d = REGISTRY[model]
        size = tile or (d.serving.tiling.size if d.serving.tiling else None)
        plan = plan_tiles(
            side,
            side,
            tile=size,
            overlap=d.serving.tile_overlap,
            multiple=d.network.size_multiple,
            batch=d.serving.tile_batch,
        )
        if plan.count == 1:
            raise ValueError(f"{model} {side}² with tile {size} is one network call: nothing to compare")
        t0 = time.perf_counter()
        whole = infer_frame(client, model, frame)
        t1 = time.perf_counter()
        tiled = decode_png(infer_image(client, model, png(frame), **({"tile_size": tile} if tile else {})))
        t2 = time.perf_counter()
        row = {
            "model": model,
            "photo": photo,
            "side": side,
            "tile_size": tile,
            "tiles": f"{plan.count} x {plan.tile_h}x{plan.tile_w}",
            "psnr_db": round(psnr(tiled, whole), 2),
            "max_abs": int(np.abs(tiled.astype(int) - whole).max()),
            "untiled_s": round(t1 - t0, 2),
            "tiled_s": round(t2 - t1, 2),
        }
        log(f"quality {row}")
        rows.append(row)
    return rows


def measure_overhead(client, model: str, side: int, *, repeats: int, log, server_pid: int | None = None) -> dict:
    """Python-step cost: ensemble (PNG in/out) vs raw frames, sequential and two in flight, interleaved runs."""
    frame = np.ascontiguousarray(real_photo()[100 : 100 + side, 150 : 150 + side])
    data = png(frame)
    calls: dict[str, Callable[[], object]] = {
        "raw frames": lambda: infer_frame(client, model, frame),
        "ensemble PNG": lambda: infer_image(client, model, data),
    }
    for call in calls.values():  # warm both paths
        call()
    cpu: dict[str, dict[str, float]] = {}
    if server_pid:  # CPU time per request and process: robust to other load on the machine, unlike wall time
        for name, call in calls.items():
            before = session_cpu(server_pid)
            for _ in range(repeats):
                call()
            after = session_cpu(server_pid)
            roles = ("server", f"{model}_image", f"{model}_net")  # other models' idle stubs are tick noise
            cpu[name] = {k: round(1000 * (after.get(k, 0) - before.get(k, 0)) / repeats, 2) for k in roles}
    seq: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():  # interleaved: load from other processes hits both alike
            t = time.perf_counter()
            call()
            seq[name].append(time.perf_counter() - t)
    par: dict[str, float] = {}
    with ThreadPoolExecutor(2) as pool:
        for name, call in calls.items():
            t = time.perf_counter()
            list(pool.map(lambda _: call(), range(2 * repeats)))
            par[name] = 2 * repeats / (time.perf_counter() - t)
    out = {
        "model": model,
        "side": side,
        "repeats": repeats,
        "median_ms": {k: round(1000 * statistics.median(v), 2) for k, v in seq.items()},
        "throughput_2_in_flight": {k: round(v, 2) for k, v in par.items()},
    }
    out["cpu_ms_per_request"] = cpu
    out["step_overhead_ms"] = round(out["median_ms"]["ensemble PNG"] - out["median_ms"]["raw frames"], 2)
    out["throughput_ratio"] = round(par["ensemble PNG"] / par["raw frames"], 3)
    log(f"overhead {out}")
    return out


def measure_large(client, server, model: str, side: int, log) -> dict:
    data = png(mosaic(side))
    idle_rss, idle_pss = tree_memory(server.pid)
    with PeakMemory(server.pid) as peak:
        t = time.perf_counter()
        out = infer_image(client, model, data)
        seconds = time.perf_counter() - t
    from PIL import Image

    size = Image.open(io.BytesIO(out)).size
    from stylize.contract.descriptors import REGISTRY

    d = REGISTRY[model]
    tiling = d.serving.tiling
    row = {
        "model": model,
        "tiles": f"{tiling.size if tiling else None} / {d.serving.tile_overlap}",
        "input": f"{side}x{side}",
        "output": f"{size[0]}x{size[1]}",
        "seconds": round(seconds, 1),
        "idle_rss_gb": round(idle_rss / GB, 3),
        "idle_pss_gb": round(idle_pss / GB, 3),
        "peak_rss_gb": round(peak.peak_rss / GB, 3),
        "peak_pss_gb": round(peak.peak_pss / GB, 3),
        "output_bytes": len(out),
    }
    log(f"large {row}")
    return row


def server_metrics(url: str, prefix: str = "stylize_image_") -> list[str]:
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [ln for ln in text.splitlines() if ln.startswith(prefix) and ("_sum" in ln or "_count" in ln)]


def step_means_ms(lines: list[str], model: str) -> dict[str, float]:
    """Mean decode / network / encode time per image of one image step, from its histograms' _sum and _count."""
    values: dict[str, float] = {}
    for ln in lines:
        if f'model="{model}"' in ln:
            name, value = ln.split("{")[0], float(ln.rsplit(" ", 1)[1])
            values[name] = value
    out = {}
    for part in ("decode", "network", "encode"):
        n = values.get(f"stylize_image_{part}_seconds_count", 0)
        if n:
            out[part] = round(1000 * values[f"stylize_image_{part}_seconds_sum"] / n, 2)
    return out


# ---- report -----------------------------------------------------------------------------------------------------


def write_report(results: dict, path: Path) -> None:
    from stylize.contract.descriptors import REGISTRY

    lines = [
        "# Server-side tiling: quality, memory, python-step overhead",
        "",
        "Generated by `python -m stylize.loadtest.experiments.tiling_bench` (this file is its output; the raw numbers "
        f"are in `{path.with_suffix('.json').name}`).",
        f"Machine: {results['machine']}. Timings share the machine with other work: compare within a table.",
        "",
        "## Design",
        "",
        "Each image ensemble `<id>` has one step, the python model `<id>_image`: decode (EXIF orientation, modes, "
        "16 bits, alpha kept aside) -> fixed-size tiles with overlap, sent to the network model `<id>_net` by BLS "
        "one tile per call on CPU, `tile_batch` per call on GPU (memory stays bounded) -> feathered blending "
        "(separable weights normalised to a partition of unity; the outer quarter of each overlap has ~0 weight, the "
        "middle half cross-fades) into a one-tile-high float band that is rounded out as soon as it is final -> "
        "resize (`outscale`), recompose (gray, alpha, 16 bits) -> encode.",
        "",
        "Defaults (each descriptor's `serving.tiling`: `size`, `overlap` and `batch`; `None` for a network that is "
        "never tiled. Overridable at build time and lowered per request with `tile_size`). One network call's "
        "budget is `batch x size²` pixels (that is what bounds the network's memory): an image within the budget "
        "goes whole, in one call, whatever its sides (tiling it would only add the overlap's work). A tiled image "
        "goes to the network one tile per call on CPU (a batch of 2 measured 2-15 % slower per image than two of 1 "
        "there) and `batch` tiles per call on GPU.",
        "",
        "| model | tile | overlap | budget (tiles of pixels per call) |",
        "|---|---|---|---|",
    ]
    for d in REGISTRY.values():
        if not d.window:
            t = d.serving.tiling
            lines.append(
                f"| {d.id} | {t.size if t else 'not tiled (max_side ' + str(d.serving.max_side) + ')'} | "
                f"{t.overlap if t else '-'} | {t.batch if t else '-'} |"
            )
    lines += [
        "",
        "## Tiled vs untiled (target >= 45 dB)",
        "",
        "Untiled = the same network on the whole frame through its raw `<id>_net` path; tiled = the ensemble.",
        "",
        "| model | photo crop | tile | tiles | PSNR (dB) | max abs diff | untiled s | tiled s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.get("quality", []):
        lines.append(
            f"| {r['model']} | {r['photo']} {r['side']}x{r['side']} | {r['tile_size'] or 'default'} | "
            f"{r.get('tiles', '?')} | "
            f"{r['psnr_db']} | {r['max_abs']} | {r['untiled_s']} | {r['tiled_s']} |"
        )
    runs = results.get("large_runs") or ([results["large"]] if results.get("large") else [])
    lines += ["", "## Large input: esrgan_x4 at 2048x2048 (target: server peak RSS <= 3 GB)", ""]
    if runs:
        lines += [
            "Server with only the esrgan_x4 models loaded; memory of the whole process tree (tritonserver and "
            "every python stub), sampled every 0.2 s. RSS counts shared pages once per process (an upper "
            "bound); PSS shares them out. The machine was shared with other work during these runs: the "
            "seconds are an upper bound.",
            "",
            "| tile / overlap | input | output | seconds | idle RSS GB | peak RSS GB | peak PSS GB |",
            "|---|---|---|---|---|---|---|",
        ]
        for large in runs:
            lines.append(
                f"| {large.get('tiles', 'default')} | {large['input']} | {large['output']} | "
                f"{large['seconds']} | {large['idle_rss_gb']} | {large['peak_rss_gb']} | "
                f"{large['peak_pss_gb']} |"
            )
    else:
        lines.append("Not run (`--skip-large`).")
    ov = results.get("overhead")
    if ov:
        lines += [
            "",
            f"## Python-step overhead: {ov['model']} at {ov['side']}x{ov['side']}",
            "",
            "Same network, same server: raw uint8 frames to `<id>_net` vs PNG bytes to the ensemble (decode, BLS "
            "call, encode PNG at zlib level 1). Runs interleaved.",
            "",
            "| path | median latency ms (1 in flight) | images/s (2 in flight) |",
            "|---|---|---|",
        ]
        for k in ov["median_ms"]:
            lines.append(f"| {k} | {ov['median_ms'][k]} | {ov['throughput_2_in_flight'][k]} |")
        lines += [
            "",
            f"Step overhead per request: {ov['step_overhead_ms']} ms; ensemble/raw throughput: "
            f"{ov['throughput_ratio']}.",
        ]
        if ov.get("cpu_ms_per_request"):
            lines += [
                "",
                "CPU time per request by process (ms; user + system, less sensitive to other load than wall time):",
                "",
                "| path | " + " | ".join(sorted({k for v in ov["cpu_ms_per_request"].values() for k in v})) + " |",
            ]
            roles = sorted({k for v in ov["cpu_ms_per_request"].values() for k in v})
            lines.append("|---" * (len(roles) + 1) + "|")
            for path_name, by_role in ov["cpu_ms_per_request"].items():
                lines.append(f"| {path_name} | " + " | ".join(str(by_role.get(r, 0)) for r in roles) + " |")
            cpu = ov["cpu_ms_per_request"]
            raw, ens = cpu.get("raw frames"), cpu.get("ensemble PNG")
            net = f"{ov['model']}_net"
            if raw and ens and raw.get(net):
                # the network does the same work on both paths: count it once (from the raw path) so that
                # the ratio shows what the step adds, not the noise of the network's own CPU time
                added = sum(v for k, v in ens.items() if k != net)
                ratio = (raw[net] + raw.get("server", 0)) / (raw[net] + added)
                lines += [
                    "",
                    f"CPU-bound throughput of the ensemble relative to the raw path: {ratio:.3f} (the "
                    f"step and server add {added} ms of CPU per request to the network's {raw[net]} ms). The "
                    "wall-time ratio above moves with the other load on the machine; the CPU one does not.",
                ]
        if ov.get("step_means_ms"):
            m = ov["step_means_ms"]
            lines += [
                "",
                "Inside the step, mean per image (its own histograms): "
                + ", ".join(f"{k} {v} ms" for k, v in m.items())
                + " (network = the BLS call, including the network model's queue and compute).",
            ]
    if results.get("metrics"):
        lines += ["", "## The step's own metrics after the runs", "", "```", *results["metrics"], "```"]
    lines += [
        "",
        "Reproduce: `python -m stylize.loadtest.experiments.tiling_bench` (needs the built repository: "
        "`stylize build`).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from stylize.server.launcher import start_local

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "tiling.md")
    p.add_argument("--skip-large", action="store_true", help="skip the 2048x2048 esrgan_x4 run")
    p.add_argument("--only-large", action="store_true", help="only the 2048x2048 run")
    p.add_argument("--merge", action="store_true", help="keep the parts of an earlier JSON report not run now")
    p.add_argument("--large-side", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    import tritonclient.grpc as grpcclient

    results: dict = {}
    if args.merge and args.out.with_suffix(".json").is_file():
        results = json.loads(args.out.with_suffix(".json").read_text())
    results.update(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.only_large:
            return _large(args, results, log)
        repo = subset_repository(
            args.repository, ["animevideo_x2", "animevideo_x4", "esrgan_anime_x4", "esrgan_x4"], Path(tmp)
        )
        with start_local(repo) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            results["overhead"] = measure_overhead(
                client, "animevideo_x2", 128, repeats=args.repeats, log=log, server_pid=server.pid
            )
            results["overhead"]["step_means_ms"] = step_means_ms(
                server_metrics(server.metrics_url), "animevideo_x2_image"
            )
            results["quality"] = measure_quality(
                client,
                [
                    # sides beyond one call's pixel budget (tile_batch x tile², tiling.plan_tiles), so they really tile
                    ("animevideo_x4", "astronaut.png", (0, 0, 512), 256),
                    ("animevideo_x4", "astronaut.png", (0, 0, 512), 96),
                    ("esrgan_anime_x4", "astronaut.png", (64, 96, 320), None),
                    ("esrgan_x4", "coffee.png", (40, 200, 320), None),
                ],
                log,
            )
            results["metrics"] = server_metrics(server.metrics_url)
    if args.skip_large:
        write_report(results, args.out)
        log(f"wrote {args.out}")
        return 0
    return _large(args, results, log)


def _large(args, results: dict, log) -> int:
    import tritonclient.grpc as grpcclient

    from stylize.server.launcher import start_local

    with tempfile.TemporaryDirectory() as tmp:
        repo = subset_repository(args.repository, ["esrgan_x4"], Path(tmp))
        with start_local(repo) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            results["large"] = measure_large(client, server, "esrgan_x4", args.large_side, log)
    write_report(results, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
