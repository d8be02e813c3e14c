"""Video benchmark behind docs/video.md: the animevideo networks at 360p / 480p, BasicVSR's window trade-off on a
real-photo pan with ground truth, BasicVSR's memory with spatial tiles, and a live run. Every part runs on real
servers started here (tritonserver, the project's default CPU runtime: OpenVINO fp32 on this CPU, which has no bf16),
on a repository of symlinks to the built models (so memory is the model under test), one part at a time:

    python -m stylize.loadtest.experiments.video_bench anime    # animevideo_x2 / x4 at 640x360 and 854x480
                                                                # (stylize video, file mode)
    python -m stylize.loadtest.experiments.video_bench windows  # basicvsr_x4, windows 3/5/7/9/15 (builds the
                                                                # missing ones first)
    python -m stylize.loadtest.experiments.video_bench memory   # basicvsr_x4: one 7-frame window tile at the
                                                                # default tile (256²)
    python -m stylize.loadtest.experiments.video_bench hd       # basicvsr_x4: one 7-frame window of a real-photo
                                                                # clip at 854x480 and 1280x720 through stylize
                                                                # video's tiled windows (measures what `memory`
                                                                # projects)
    python -m stylize.loadtest.experiments.video_bench live     # stylize video --live on a FIFO fed by ffmpeg -re
    python -m stylize.loadtest.experiments.video_bench doc      # docs/video.md's measured section from the saved
                                                                # JSON, no measuring

Each part writes ``loadtest/results/video_bench/<part>.json`` (``--out``); ``doc`` renders the table between the
markers in docs/video.md and the plots in docs/video/. Window variants of BasicVSR are built with
``stylize build basicvsr_x4 --window T --fp32 -o loadtest/results/video_bench/repo_wT`` (the served w7 is the main
repository's).

Windows are used exactly as `stylize video` uses them (stylize.sdk.video.plan_windows, margin T // 3: each frame is
kept from one window, with that many context frames on each side where the clip allows), one request at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stylize.loadtest.experiments import ROOT

OUT = ROOT / "loadtest" / "results" / "video_bench"
DOC = ROOT / "docs" / "video.md"
PLOTS = ROOT / "docs" / "video"
WINDOWS = (3, 5, 7, 9, 15)
MARK_BEGIN, MARK_END = "<!-- video_bench:begin -->", "<!-- video_bench:end -->"


def machine() -> dict:
    import openvino

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "runtime": f"openvino {openvino.get_version()} fp32",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def subset(names: dict[str, Path], into: Path) -> Path:
    """A repository of symlinks: model name -> its built folder."""
    into.mkdir(parents=True, exist_ok=True)
    for name, folder in names.items():
        (into / name).symlink_to(folder.resolve(), target_is_directory=True)
    return into


def photo_clip(path: Path, width: int, height: int, frames: int, rate: int = 25) -> Path:
    """A real photo (skimage's astronaut) panning 2 px per frame, H.264, made by the ffmpeg binary."""
    from stylize.engine.photos import photo_path

    side = 2 * max(width, height)
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-loop",
            "1",
            "-framerate",
            str(rate),
            "-i",
            str(photo_path("astronaut.png")),
            "-frames:v",
            str(frames),
            "-vf",
            f"scale={side}:{side},crop={width}:{height}:x='n*2':y='n'",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 1) if len(values) else 0.0


# ---- parts ------------------------------------------------------------------------------------------------------


def part_anime(frames: int) -> dict:
    from stylize.sdk.client import StylizeClient
    from stylize.server.launcher import start_local

    repo = ROOT / "model_repository"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = subset({f"{m}_net": repo / f"{m}_net" for m in ("animevideo_x2", "animevideo_x4")}, tmp / "repo")
        clips = {
            name: photo_clip(tmp / f"{name}.mp4", w, h, frames)
            for name, (w, h) in {"360p": (640, 360), "480p": (854, 480)}.items()
        }
        with start_local(sub) as server, StylizeClient(url=server.grpc_url, timeout=600) as client:
            for model in ("animevideo_x2", "animevideo_x4"):
                client.infer_frames(np.zeros((64, 64, 3), np.uint8), model)  # first request outside the timing
                for size, clip in clips.items():
                    for concurrency in (1, 4):
                        r = client.upscale_video(
                            clip,
                            tmp / f"out_{model}_{size}_{concurrency}.mp4",
                            model,
                            preset="veryfast",
                            concurrency=concurrency,
                            progress=False,
                            resume=False,
                        )
                        row = {
                            "model": model,
                            "input": size,
                            "size_in": list(r.size_in),
                            "size_out": list(r.size_out),
                            "concurrency": concurrency,
                            "frames": r.frames,
                            "seconds": round(r.seconds, 2),
                            "fps": round(r.fps_end_to_end, 3),
                            "request_ms_p50": pct(r.infer_ms, 50),
                            "request_ms_p95": pct(r.infer_ms, 95),
                            "latency_ms_p50": pct(r.latency_ms, 50),
                            "latency_ms_p95": pct(r.latency_ms, 95),
                            "latency_ms_max": round(max(r.latency_ms), 1),
                        }
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    return {
        "machine": machine(),
        "frames_per_clip": frames,
        "rows": rows,
        "how": "stylize video (file mode: decode -> raw frames over gRPC -> H.264 veryfast), one clip per size "
        "of a real photo panning; request = one frame's request(s) client side (frames above 256² "
        "go in tiles); latency = decoded -> encoded",
    }


def window_repo(window: int, out: Path) -> Path:
    """The built basicvsr_x4_net folder for ``window`` frames (the main repository's for its own window)."""
    from stylize.contract.descriptors import REGISTRY

    if window == REGISTRY["basicvsr_x4"].window:
        return ROOT / "model_repository" / "basicvsr_x4_net"
    repo = out / f"repo_w{window}"
    if not (repo / "basicvsr_x4_net" / "config.pbtxt").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stylize.cli",
                "build",
                "basicvsr_x4",
                "--window",
                str(window),
                "--fp32",
                "-o",
                str(repo),
            ],
            check=True,
        )
    return repo / "basicvsr_x4_net"


def part_windows(n_frames: int, side: int, windows: tuple[int, ...], out: Path) -> dict:
    from stylize.engine.photos import bicubic_resize, pan_sequence, psnr
    from stylize.sdk.client import StylizeClient
    from stylize.sdk.video import plan_windows, window_indices
    from stylize.server.launcher import start_local

    hr = pan_sequence(n_frames, side)  # truth: crops of a real photo along a path
    lr = bicubic_resize(hr, 0.25)  # what the network sees
    bicubic_db = psnr(bicubic_resize(lr, 4), hr)
    rows = []
    for T in windows:
        folder = window_repo(T, out)
        m = T // 3
        with tempfile.TemporaryDirectory() as tmp:
            sub = subset({"basicvsr_x4_net": folder}, Path(tmp) / "repo")
            with start_local(sub) as server, StylizeClient(url=server.grpc_url, timeout=900) as client:
                raw = client.raw_model("basicvsr_x4")
                assert raw.window == T, (raw.window, T)
                client.infer_frames(lr[window_indices(0, T, n_frames)], "basicvsr_x4")  # warm, untimed
                result = np.zeros_like(hr)
                times = []
                t0 = time.monotonic()
                plan = plan_windows(n_frames, T, m)
                for w in plan:
                    a = time.monotonic()
                    y = client.infer_frames(lr[window_indices(w.start, T, n_frames)], "basicvsr_x4")
                    times.append(time.monotonic() - a)
                    result[w.keep_from : w.keep_to] = y[w.keep_from - w.start : w.keep_to - w.start]
                wall = time.monotonic() - t0
        per_frame_db = [psnr(result[i], hr[i]) for i in range(n_frames)]
        row = {
            "window": T,
            "margin": m,
            "windows": len(plan),
            "frames_computed": len(plan) * T,
            "window_ms_p50": pct([t * 1000 for t in times], 50),
            "window_ms_max": round(max(times) * 1000, 1),
            "fps": round(n_frames / wall, 3),
            "psnr_db": round(psnr(result, hr), 3),
            "psnr_db_min_frame": round(min(per_frame_db), 2),
            # live: a frame kept from window [s, s+T) waits for frame s+T (the planner's look-ahead) at worst
            # T - m frames after its own, then the window's compute
            "lookahead_frames": T - m + 1,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {
        "machine": machine(),
        "frames": n_frames,
        "hr_side": side,
        "lr_side": side // 4,
        "bicubic_db": round(bicubic_db, 3),
        "rows": rows,
        "how": f"pan_sequence({n_frames}, {side}) over astronaut.png (step 2 px down, 3 right per frame), "
        f"bicubic x1/4 = input, crops = truth; windows as stylize video plans them (margin T//3), one "
        f"request at a time, untiled ({side // 4}² input); PSNR over all frames",
    }


def part_memory(side: int) -> dict:
    from stylize.contract.tiling import plan_tiles
    from stylize.engine.photos import pan_sequence
    from stylize.loadtest.experiments.tiling_bench import PeakMemory
    from stylize.sdk.client import StylizeClient
    from stylize.sdk.video import WINDOW_TILE, WINDOW_TILE_OVERLAP
    from stylize.server.launcher import start_local

    T = 7
    lr = pan_sequence(T, side)  # the input itself: real-photo crops along a path (memory and time only)
    with tempfile.TemporaryDirectory() as tmp:
        sub = subset({"basicvsr_x4_net": ROOT / "model_repository" / "basicvsr_x4_net"}, Path(tmp) / "repo")
        with start_local(sub) as server, StylizeClient(url=server.grpc_url, timeout=1800) as client:
            from stylize.loadtest.experiments.tiling_bench import tree_memory

            client.infer_frames(lr[:, :64, :64], "basicvsr_x4", tile=0)  # first request outside the timing
            idle_rss, idle_pss = tree_memory(server.pid)
            with PeakMemory(server.pid) as peak:
                a = time.monotonic()
                client.infer_frames(lr, "basicvsr_x4", tile=0)
                seconds = time.monotonic() - a
    tiles = {}
    for name, (w, h) in {"480p": (854, 480), "720p": (1280, 720)}.items():
        plan = plan_tiles(h, w, tile=WINDOW_TILE, overlap=WINDOW_TILE_OVERLAP, batch=1)
        n = len(plan.ys) * len(plan.xs)
        kept = T - 2 * (T // 3)
        tiles[name] = {
            "tiles_per_frame": n,
            "tile": [plan.tile_h, plan.tile_w],
            "projected_window_s": round(n * seconds * (plan.tile_h * plan.tile_w) / side**2, 1),
            "projected_fps": round(kept / (n * seconds * (plan.tile_h * plan.tile_w) / side**2), 4),
        }
    return {
        "machine": machine(),
        "window": T,
        "side": side,
        "seconds": round(seconds, 2),
        "idle_rss_mib": round(idle_rss / 2**20),
        "peak_rss_mib": round(peak.peak_rss / 2**20),
        "idle_pss_mib": round(idle_pss / 2**20),
        "peak_pss_mib": round(peak.peak_pss / 2**20),
        "projection": tiles,
        "how": f"one {T}x{side}x{side} window (the default tile: the largest request a tiled 480p/720p window "
        f"sends) through the server, peak RSS/PSS of tritonserver + its stubs sampled every 0.2 s; "
        f"480p/720p time = tiles x this window's time scaled by tile pixels (a projection)",
    }


class CountingClient:
    """The client, with every ``infer_frames`` call (one per tile of a tiled window) timed and its shape kept."""

    def __init__(self, client):
        self._client = client
        self.requests: list[tuple[tuple[int, ...], float]] = []

    def infer_frames(self, frames: np.ndarray, *args, **kwargs) -> np.ndarray:
        a = time.monotonic()
        y = self._client.infer_frames(frames, *args, **kwargs)
        self.requests.append((tuple(frames.shape), time.monotonic() - a))
        return y

    def __getattr__(self, name: str):
        return getattr(self._client, name)


HD_SIZES = {"480p": (854, 480), "720p": (1280, 720)}


def part_hd(sizes: tuple[str, ...], out: Path) -> dict:
    """One 7-frame window per size through ``upscale_video`` (what ``stylize video -m basicvsr_x4`` runs: the
    window tiled at the default tile), a fresh server per size, its peak RSS/PSS sampled during the run."""
    import resource

    from stylize.contract.descriptors import REGISTRY
    from stylize.loadtest.experiments.tiling_bench import PeakMemory, tree_memory
    from stylize.sdk.client import StylizeClient
    from stylize.sdk.video import WINDOW_TILE, WINDOW_TILE_OVERLAP, upscale_video
    from stylize.server.launcher import start_local

    T = REGISTRY["basicvsr_x4"].window
    margin = T // 3
    kept = T - 2 * margin  # frames a window keeps inside a long clip
    memory = out / "memory.json"
    projection = json.loads(memory.read_text()) if memory.is_file() else None
    rows = []
    for name in sizes:
        w, h = HD_SIZES[name]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sub = subset({"basicvsr_x4_net": ROOT / "model_repository" / "basicvsr_x4_net"}, tmp / "repo")
            clip = photo_clip(tmp / f"{name}.mp4", w, h, T)  # exactly one window: plan_windows(T, T, margin)
            with start_local(sub) as server, StylizeClient(url=server.grpc_url, timeout=3600) as client:
                warm = np.zeros((T, 64, 64, 3), np.uint8)
                client.infer_frames(warm, "basicvsr_x4", tile=0)  # first request outside the timing (as `memory`)
                idle_rss, idle_pss = tree_memory(server.pid)
                counting = CountingClient(client)
                with PeakMemory(server.pid) as peak:
                    r = upscale_video(
                        counting,
                        clip,
                        tmp / f"out_{name}.mp4",
                        model="basicvsr_x4",
                        preset="veryfast",
                        progress=False,
                        resume=False,
                    )
        shapes = sorted({s for s, _ in counting.requests})
        tile_s = [t for _, t in counting.requests]
        window_s = max(r.infer_ms) / 1000  # every frame of the window reports the window's (tiled) request time
        row = {
            "input": name,
            "size_in": list(r.size_in),
            "size_out": list(r.size_out),
            "frames": r.frames,
            "window": T,
            "tile": WINDOW_TILE,
            "overlap": WINDOW_TILE_OVERLAP,
            "tiles_per_frame": len(counting.requests),  # one request per tile; a tile is T frames deep
            "tile_shapes": [list(s) for s in shapes],
            "tile_s_p50": round(float(np.median(tile_s)), 2),
            "tile_s_min": round(min(tile_s), 2),
            "tile_s_max": round(max(tile_s), 2),
            "window_s": round(window_s, 1),
            "fps_kept": round(kept / window_s, 4),  # a window inside a long clip keeps T - 2*margin frames
            "kept_per_window": kept,
            "clip_seconds": round(r.seconds, 1),  # decode + the window + encode + remux of this 7-frame clip
            "clip_fps": round(r.fps_end_to_end, 4),  # this clip keeps all 7 of its window's frames (clip edges)
            "idle_rss_mib": round(idle_rss / 2**20),
            "peak_rss_mib": round(peak.peak_rss / 2**20),
            "idle_pss_mib": round(idle_pss / 2**20),
            "peak_pss_mib": round(peak.peak_pss / 2**20),
            "client_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        if projection and name in projection["projection"]:
            p = projection["projection"][name]
            row["projected"] = {
                "tiles_per_frame": p["tiles_per_frame"],
                "window_s": p["projected_window_s"],
                "fps": p["projected_fps"],
                "peak_rss_mib": projection["peak_rss_mib"],
                "peak_pss_mib": projection["peak_pss_mib"],
                "from": f"memory.json ({projection['machine']['when']}): one {T}x{projection['side']}² tile",
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {
        "machine": machine(),
        "rows": rows,
        "how": f"one {T}-frame clip per size (a real photo, skimage's astronaut scaled to twice the larger side, "
        f"panning 2 px per frame, H.264) through `stylize video -m basicvsr_x4` as a user runs it "
        f"(stylize.sdk.video.upscale_video: default tile {WINDOW_TILE}², overlap {WINDOW_TILE_OVERLAP} px, "
        f"every frame of the window cut alike, one tile per request, feathered seams; H.264 veryfast), a fresh "
        f"server per size after one untimed 7x64² request, peak RSS/PSS of tritonserver + its stubs sampled every "
        f"0.2 s during the run; window time = the tiled window's requests; frames/s = {kept} kept frames per "
        f"window (inside a long clip, margin {margin}) / window time",
    }


def part_live(seconds: float, rate: int, size: tuple[int, int], model: str) -> dict:
    from stylize.sdk.client import StylizeClient
    from stylize.sdk.video_live import stream_video
    from stylize.server.launcher import start_local

    repo = ROOT / "model_repository"
    PLOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = subset({f"{model}_net": repo / f"{model}_net"}, tmp / "repo")
        clip = photo_clip(tmp / "clip.mp4", *size, frames=int(seconds * rate), rate=rate)
        fifo = tmp / "in.fifo"
        os.mkfifo(fifo)
        with start_local(sub) as server, StylizeClient(url=server.grpc_url) as client:
            client.infer_frames(np.zeros((size[1], size[0], 3), np.uint8), model)
            writer = subprocess.Popen(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-loglevel",
                    "error",
                    "-re",
                    "-i",
                    str(clip),
                    "-c",
                    "copy",
                    "-f",
                    "mpegts",
                    "-y",
                    str(fifo),
                ]
            )
            report = stream_video(
                client, fifo, tmp / "live.ts", model=model, concurrency=2, plot_path=PLOTS / "live.png"
            )
            writer.wait()
    d = report.to_json()
    d.pop("intervals")
    return {
        "machine": machine(),
        "clip": {"size": list(size), "rate": rate, "seconds": seconds},
        "summary": report.summary(),
        "figures": report.figures(),
        "stages": report.stages(),
        "frames_in": report.frames_in,
        "frames_out": report.frames_out,
        "dropped": report.dropped,
        "first_output_s": round(report.first_output_s or 0, 3),
        "input_end_s": round(report.input_end_s or 0, 3),
        "how": "ffmpeg -re writes a real-photo clip into a FIFO as MPEG-TS; stylize video --live reads it and "
        "writes MPEG-TS; latency = decoded -> packet written",
    }


# ---- the doc ----------------------------------------------------------------------------------------------------


def plot_windows(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    ts = [r["window"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ts, [r["window_ms_p50"] / 1000 for r in rows], "o-", color="tab:orange")
    for t, r in zip(ts, rows):
        ax1.annotate(
            f"{r['window_ms_p50'] / 1000:.1f} s",
            (t, r["window_ms_p50"] / 1000),
            fontsize=8,
            textcoords="offset points",
            xytext=(-14, 7),
        )
    ax1.set_ylim(bottom=0, top=max(r["window_ms_p50"] for r in rows) / 1000 * 1.2)
    ax1.set_xlabel("window (frames)")
    ax1.set_ylabel("one window request, p50 (s)")
    ax1.set_title("latency of a window (compute, one at a time)", fontsize=10)
    ax2.plot(ts, [r["psnr_db"] for r in rows], "s-", color="tab:blue")
    for t, r in zip(ts, rows):
        ax2.annotate(
            f"{r['psnr_db']:.2f}", (t, r["psnr_db"]), fontsize=8, textcoords="offset points", xytext=(-12, -14)
        )
    dbs = [r["psnr_db"] for r in rows]
    ax2.set_ylim(min(dbs) - 0.15, max(dbs) + 0.1)
    ax2.set_xlabel("window (frames)")
    ax2.set_ylabel("PSNR vs ground truth (dB)")
    ax2.set_title(f"quality over all {data['frames']} frames (bicubic: {data['bicubic_db']:.2f} dB)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xticks(ts)
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"basicvsr_x4 (REDS4 weights) on a real-photo pan, {data['lr_side']}² -> {data['hr_side']}², "
        "OpenVINO fp32, 2 shared cores",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(out: Path) -> str:
    parts = {
        p: json.loads((out / f"{p}.json").read_text())
        for p in ("anime", "windows", "memory", "hd", "live")
        if (out / f"{p}.json").is_file()
    }
    lines = [
        MARK_BEGIN,
        "",
        "Written by `python -m stylize.loadtest.experiments.video_bench doc` from "
        "`loadtest/results/video_bench/*.json`; each part measured by "
        "`python -m stylize.loadtest.experiments.video_bench PART` on real servers (OpenVINO fp32, this "
        "2-core AMD EPYC, shared with other work while it ran).",
        "",
    ]
    if "anime" in parts:
        a = parts["anime"]
        lines += [
            f"### animevideo at 360p and 480p ({a['machine']['when']})",
            "",
            f"{a['how']}; {a['frames_per_clip']} frames per clip.",
            "",
            "| model | input | output | requests in flight | FPS | request p50 / p95 (ms) | "
            "decoded -> encoded p50 / p95 / max (ms) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in a["rows"]:
            lines.append(
                f"| {r['model']} | {r['input']} {r['size_in'][0]}x{r['size_in'][1]} | "
                f"{r['size_out'][0]}x{r['size_out'][1]} | {r['concurrency']} | {r['fps']:.3f} | "
                f"{r['request_ms_p50']:.0f} / {r['request_ms_p95']:.0f} | {r['latency_ms_p50']:.0f} / "
                f"{r['latency_ms_p95']:.0f} / {r['latency_ms_max']:.0f} |"
            )
        lines.append("")
    if "windows" in parts:
        w = parts["windows"]
        PLOTS.mkdir(parents=True, exist_ok=True)
        plot_windows(w, PLOTS / "basicvsr_windows.png")
        base = next((r for r in w["rows"] if r["window"] == 15), None)
        lines += [
            f"### BasicVSR window trade-off ({w['machine']['when']})",
            "",
            w["how"] + f"; bicubic {w['bicubic_db']:.2f} dB.",
            "",
            "| window | margin | windows | frames computed | window request p50 (ms) | vs 15 | FPS | PSNR (dB) "
            "| vs 15 (dB) | look-ahead (frames) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in w["rows"]:
            rel = f"{r['window_ms_p50'] / base['window_ms_p50']:.0%}" if base else "-"
            ddb = f"{r['psnr_db'] - base['psnr_db']:+.2f}" if base else "-"
            lines.append(
                f"| {r['window']} | {r['margin']} | {r['windows']} | {r['frames_computed']} | "
                f"{r['window_ms_p50']:.0f} | {rel} | {r['fps']:.3f} | {r['psnr_db']:.2f} | {ddb} | "
                f"{r['lookahead_frames']} |"
            )
        if base:
            verdict = []
            for r in w["rows"]:
                if r["window"] in (5, 7, 9):
                    verdict.append(
                        f"window {r['window']}: latency {1 - r['window_ms_p50'] / base['window_ms_p50']:.0%}"
                        f" lower, PSNR {base['psnr_db'] - r['psnr_db']:.2f} dB lower"
                    )
            lines += [
                "",
                'Against the claim "window 5-8 instead of 15: latency down 40 %, PSNR down only 0.3 dB": '
                + "; ".join(verdict)
                + ".",
            ]
        lines += ["", "![BasicVSR windows](video/basicvsr_windows.png)", ""]
    if "memory" in parts:
        m = parts["memory"]
        hd = {r["input"]: r for r in parts.get("hd", {}).get("rows", [])}
        lines += [
            f"### BasicVSR memory with tiles ({m['machine']['when']})",
            "",
            m["how"] + ".",
            "",
            f"- one {m['window']}x{m['side']}² window: {m['seconds']:.1f} s; server RSS idle "
            f"{m['idle_rss_mib']} MiB, peak {m['peak_rss_mib']} MiB (PSS idle {m['idle_pss_mib']}, peak "
            f"{m['peak_pss_mib']} MiB). A tiled window of any frame size sends one such tile per request, so "
            "the server's peak at 480p and 720p should be at most about this"
            + (
                " (measured on whole windows in the next section: "
                + ", ".join(f"{k} {r['peak_rss_mib']} MiB" for k, r in hd.items())
                + ")."
                if hd
                else " (measured on the tile, not on a 480p clip)."
            ),
        ]
        grow = m["peak_rss_mib"] - m["idle_rss_mib"]
        lines.append(
            f"- untiled, **projection**: the window's memory grows with its pixels (+{grow} MiB here for "
            f"7x{m['side']}²; the 7x192² figure above, +1598 MiB, scales to "
            f"+{1598 * m['side'] ** 2 / 192**2:.0f}), so a whole 480p window "
            f"would need about +{grow * 854 * 480 / m['side'] ** 2 / 1024:.0f} GiB and 720p about "
            f"+{grow * 1280 * 720 / m['side'] ** 2 / 1024:.0f} GiB: what the tiles avoid."
        )
        for name, p in m["projection"].items():
            lines.append(
                f"- {name}, **projection**: {p['tiles_per_frame']} tiles of {p['tile'][1]}x{p['tile'][0]} "
                f"per frame -> about {p['projected_window_s']:.0f} s per 7-frame window, "
                f"{p['projected_fps']:.4f} frames/s (3 frames kept per window)"
                + (
                    f"; measured: {hd[name]['window_s']:.0f} s, {hd[name]['fps_kept']:.4f} frames/s (next section)."
                    if name in hd
                    else "."
                )
            )
        lines.append("")
    if "hd" in parts:
        d = parts["hd"]
        lines += [
            f"### BasicVSR at 480p and 720p, tiled: measured ({d['machine']['when']})",
            "",
            d["how"] + ".",
            "",
            "| input | output | tiles per frame (tile, frames x h x w) | s per tile p50 (min-max) | s per 7-frame "
            "window: measured / projected | frames/s (3 kept per window): measured / projected | server RSS "
            "idle -> peak (MiB) | server PSS idle -> peak (MiB) | peak RSS projected (one 256² tile) | this 7-frame "
            "clip end to end |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in d["rows"]:
            p = r.get("projected", {})
            shapes = ", ".join("x".join(str(v) for v in s[:3]) for s in r["tile_shapes"])
            lines.append(
                f"| {r['input']} {r['size_in'][0]}x{r['size_in'][1]} | {r['size_out'][0]}x{r['size_out'][1]} | "
                f"{r['tiles_per_frame']} ({shapes}) | {r['tile_s_p50']:.1f} ({r['tile_s_min']:.1f}-"
                f"{r['tile_s_max']:.1f}) | **{r['window_s']:.0f}** / {p.get('window_s', float('nan')):.0f} | "
                f"**{r['fps_kept']:.4f}** / {p.get('fps', float('nan')):.4f} | {r['idle_rss_mib']} -> "
                f"**{r['peak_rss_mib']}** | {r['idle_pss_mib']} -> **{r['peak_pss_mib']}** | "
                f"{p.get('peak_rss_mib', '-')} | {r['clip_seconds']:.0f} s, {r['frames']} frames |"
            )
        lines += [
            "",
            "Projected = the `memory` part's figures above (one 7x256² tile, its time scaled by tile pixels), "
            "kept for comparison. Frames/s counts the 3 frames a window keeps inside a long clip (margin 2 on "
            "each side); this 7-frame clip is one window and keeps all 7 (clip edges), hence its end-to-end "
            'figure. Tiled vs untiled agreement, where both fit: the row "BasicVSR, tiled vs whole window" of '
            "the table at the top (PSNR of the tiled window against the whole one, up to 192²); a whole 480p or "
            "720p window does not fit (the projection above), so it is not compared here.",
            "",
        ]
    if "live" in parts:
        lv = parts["live"]
        f = lv["figures"]
        lines += [
            "### Live mode",
            "",
            lv["how"] + f"; clip {lv['clip']['size'][0]}x{lv['clip']['size'][1]} at "
            f"{lv['clip']['rate']} fps, {lv['clip']['seconds']} s.",
            "",
            f"- {lv['frames_out']} of {lv['frames_in']} frames written ({lv['dropped']} dropped); first packet "
            f"written {lv['first_output_s']:.2f} s after the start, input ended at {lv['input_end_s']:.2f} s.",
            f"- latency decoded -> written: p50 {f['latency_ms']['p50']:.0f} ms, p95 {f['latency_ms']['p95']:.0f}"
            f" ms, max {f['latency_ms']['max']:.0f} ms; target (2 frame intervals + one frame's compute) "
            f"{f['target_ms']:.0f} ms: p95 {'within' if f['p95_within_target'] else 'NOT within'} it.",
            f"- {f['fps_out']:.2f} frames/s out for {f['fps_in']:g} in; busy: "
            + ", ".join(f"{k} {lv['stages'][k]['busy_fraction']:.0%}" for k in ("decode", "network", "encode"))
            + f"; at least two stages busy at once for {lv['stages']['overlap']['two_stages_busy_s']:.3f} s of "
            f"the {lv['stages']['decode']['busy_s'] + lv['stages']['encode']['busy_s']:.3f} s decoding and "
            "encoding took (the stages are separate threads: a frame is encoded while the next one is in the "
            "network; at this size there is little besides the network to overlap).",
            "",
            "![live run](video/live.png)",
            "",
        ]
    lines.append(MARK_END)
    return "\n".join(lines)


def update_doc(out: Path) -> None:
    text = DOC.read_text()
    block = render(out)
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Benchmark\n\n" + block + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("anime", "windows", "memory", "hd", "live", "doc"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--frames", type=int, default=None, help="anime: frames per clip (6); windows: pan length (30)")
    p.add_argument("--side", type=int, default=None, help="windows: truth side (256); memory: input side (256)")
    p.add_argument("--window", type=int, action="append", default=None, help="windows: these only (repeatable)")
    p.add_argument("--size", action="append", choices=tuple(HD_SIZES), default=None, help="hd: these only")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "doc":
        update_doc(args.out)
        print(DOC)
        return 0
    if args.part == "anime":
        data = part_anime(args.frames or 6)
    elif args.part == "windows":
        data = part_windows(args.frames or 30, args.side or 256, tuple(args.window or WINDOWS), args.out)
        prev = args.out / "windows.json"
        if args.window and prev.is_file():  # merge: windows run one at a time keep the others' rows
            old = json.loads(prev.read_text())
            if (old["frames"], old["hr_side"]) == (data["frames"], data["hr_side"]):
                keep = [r for r in old["rows"] if r["window"] not in {r["window"] for r in data["rows"]}]
                data["rows"] = sorted(keep + data["rows"], key=lambda r: r["window"])
    elif args.part == "memory":
        data = part_memory(args.side or 256)
    elif args.part == "hd":
        data = part_hd(tuple(args.size or HD_SIZES), args.out)
        prev = args.out / "hd.json"
        if args.size and prev.is_file():  # merge: sizes run one at a time keep the others' rows
            old = json.loads(prev.read_text())
            keep = [r for r in old["rows"] if r["input"] not in {r["input"] for r in data["rows"]}]
            data["rows"] = sorted(keep + data["rows"], key=lambda r: r["size_in"][0])
    else:
        data = part_live(6.0, 5, (128, 72), "animevideo_x2")
    (args.out / f"{args.part}.json").write_text(json.dumps(data, indent=1))
    print(args.out / f"{args.part}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
