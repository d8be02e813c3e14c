"""docs/performance.md (and its plots) from a benchmark result: every number in it comes from the run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .bench import (
    PUBLISHED_ANIMEGAN_512, TARGET_INT8_LOSS_DB, TARGET_INT8_SPEEDUP, TARGET_SERVED_VS_ORT, TARGET_SERVED_VS_TORCH,
    BenchResult, CaseResult,
)

RUNNER_ORDER = ("torch", "ort", "ort_streams", "ort_prelu", "ort_int8", "served_net", "served", "served_int8")
SHORT = {"torch": "PyTorch eager", "ort": "ORT fp32", "ort_streams": "ORT fp32, 1-thread sessions in parallel",
         "ort_prelu": "ORT fp32 PRelu-rewritten", "ort_int8": "ORT INT8",
         "served_net": "served network (raw)", "served": "served ensemble", "served_int8": "served INT8 ensemble"}


def _r(v: tuple[float, float, float] | None) -> str:
    return "–" if v is None else f"{v[0]:.2f} ({v[1]:.2f}–{v[2]:.2f})"


def _br(c, a: str, b: str) -> str:
    """Best-of-rounds ratio, then the within-round median and range."""
    best, r = c.best_ratio(a, b), c.ratio(a, b)
    if best is None:
        return "–"
    return f"**{best:.2f}** (rounds {r[0]:.2f}, {r[1]:.2f}–{r[2]:.2f})"


def _verdict(v: float | tuple[float, float, float] | None, target: float) -> str:
    if v is None:
        return "not measured"
    x = v if isinstance(v, float) else v[0]
    if x >= target:
        return "**meets**"
    short = 100 * (1 - x / target)
    return f"**misses** by {short:.0f} %" if short >= 0.95 else f"**misses** by {short:.1f} % ({x:.3f})"


def _case_name(c: CaseResult) -> str:
    return f"{c.model} {c.side}²"


def _tiling(c: CaseResult) -> tuple[str, float]:
    """Tile plan of the case's input under the descriptor's defaults: ("n x hxw", network pixels / image pixels)."""
    from stylize.descriptors import REGISTRY
    from stylize.server.steps.tiling import plan_tiles

    d = REGISTRY[c.model]
    if not d.tile_size:
        return "1 (untiled)", 1.0
    p = plan_tiles(c.side, c.side, tile=d.tile_size, overlap=d.tile_overlap, multiple=d.size_multiple,
                   batch=d.tile_batch)
    if p.count == 1:
        return "1 (untiled)", 1.0
    return (f"{p.count} x {p.tile_h}x{p.tile_w} (tile {d.tile_size}, overlap {d.tile_overlap})",
            p.count * p.tile_h * p.tile_w / (c.side * c.side))


def _why(result: BenchResult) -> list[str]:
    """One line per missed target, naming where the time goes with this run's numbers."""
    out = []
    for c in result.cases:
        name = _case_name(c)
        t = TARGET_SERVED_VS_ORT.get(c.model)
        so = c.best_ratio("served", "ort")
        if t and so and so < t:
            sn, no = c.best_ratio("served", "served_net"), c.best_ratio("served_net", "ort")
            b = c.breakdown.get("served")
            detail = []
            if no:
                detail.append(f"served network (raw frames, no python step) / ORT = {no:.2f}")
            if sn:
                detail.append(f"served ensemble / served network = {sn:.2f}")
            if b:
                detail.append(f"per request: python step own work {b.step_ms:.0f} ms, network {b.network_ms:.0f} ms, "
                              f"queues {b.queue_ms:.0f} ms")
            tiles, px = _tiling(c)
            if px > 1.01:
                detail.append(f"the step tiles this input ({tiles}): the network computes {px:.2f}x the image's "
                              f"pixels, which alone bounds served / ORT at {1 / px:.2f}")
            if c.step:
                detail.append(f"decode + resize/encode in the step, measured alone: {c.step.step_ms:.0f} ms per "
                              f"image vs {c.step.network_ms:.0f} ms of network")
            where = ("the python step path (tiling overhead, decode/encode)" if sn and no and sn < no else
                     "the network path (backend, transport, the cores shared with the server and the client)"
                     if no else "unknown")
            out.append(f"- {name}: served / ORT {so:.2f} < {t}; " + "; ".join(detail)
                       + f". The larger loss is in {where}.")
        st = c.best_ratio("served", "torch")
        ot = max((r for r in (c.best_ratio("ort", "torch"), c.best_ratio("ort_streams", "torch")) if r),
                 default=None)
        if st and st < TARGET_SERVED_VS_TORCH and ot:
            peak = result.peak.get("ort_fp32_gflops")
            tg = c.gflops("torch")
            bound = ""
            if peak and tg:
                need = TARGET_SERVED_VS_TORCH * tg / peak
                bound = (f"; PyTorch eager already runs at {tg:.0f} GFLOP/s, {100 * tg / peak:.0f} % of this run's "
                         f"fp32 GEMM peak, so {TARGET_SERVED_VS_TORCH}x it would need {100 * need:.0f} % of the "
                         "peak in fp32" + (" (beyond the machine)" if need > 1 else ""))
            out.append(f"- {name}: served / PyTorch eager {st:.2f} < {TARGET_SERVED_VS_TORCH}: ONNX Runtime "
                       f"in-process (its faster layout) is itself only {ot:.2f}x PyTorch eager on this CPU (PyTorch's "
                       f"oneDNN convolutions are as fast as ONNX Runtime's here), and serving cannot be faster than "
                       "the runtime it serves with" + bound + (
                           f"; the PRelu-rewritten graph reaches {c.best_ratio('ort_prelu', 'torch'):.2f}x"
                           if c.best_ratio("ort_prelu", "torch") else "") + (
                           f"; INT8 served reaches {c.best_ratio('served_int8', 'torch'):.2f}x"
                           if c.best_ratio("served_int8", "torch") else "") + ".")
        i8 = c.best_ratio("served_int8", "served")
        oi = c.best_ratio("ort_int8", "ort")
        if i8 and i8 < TARGET_INT8_SPEEDUP and oi:
            b = c.breakdown.get("served_int8")
            share = f"; the python step is {100 * b.step_ms / b.request_ms:.0f} % of an INT8 request" if b else ""
            out.append(f"- {name}: INT8 served / fp32 served {i8:.2f} < {TARGET_INT8_SPEEDUP}: in-process the "
                       f"INT8 graph is {oi:.2f}x the fp32 graph" + share + ".")
    return out


def plot(result: BenchResult, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    cases = result.cases
    names = [_case_name(c) for c in cases]
    y = np.arange(len(cases))

    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.55 * len(cases)))
    shown = [r for r in ("torch", "ort_prelu", "ort_int8", "served_net", "served", "served_int8")
             if any(c.ratio(r, "ort") for c in cases)]
    h = 0.8 / max(len(shown), 1)
    for i, r in enumerate(shown):
        best = [c.best_ratio(r, "ort") or 0 for c in cases]
        vals = [c.ratio(r, "ort") for c in cases]
        ax.barh(y + (i - (len(shown) - 1) / 2) * h, best, height=h, label=SHORT[r],
                xerr=[[max(b - v[1], 0) if v else 0 for b, v in zip(best, vals)],
                      [max(v[2] - b, 0) if v else 0 for b, v in zip(best, vals)]],
                error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("throughput relative to ONNX Runtime fp32 in-process (same graph, same input): fastest rounds; "
                  "whiskers: range of within-round ratios", fontsize=8)
    ax.set_title("Side by side, interleaved rounds")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    p = out_dir / "ratios.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.55 * len(cases)))
    shown = [r for r in ("torch", "ort", "served", "ort_int8", "served_int8") if any(c.gflops(r) for c in cases)]
    h = 0.8 / max(len(shown), 1)
    for i, r in enumerate(shown):
        ax.barh(y + (i - (len(shown) - 1) / 2) * h, [c.gflops(r) or 0 for c in cases], height=h, label=SHORT[r])
    ax.axvline(result.peak["ort_fp32_gflops"], color="k", ls="--", lw=0.8, label="fp32 GEMM peak (ORT)")
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("achieved GFLOP/s (fp32-equivalent: the network's FLOPs / time per image)", fontsize=8)
    ax.set_title("Achieved throughput vs this machine's fp32 matrix-multiply peak")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    p = out_dir / "gflops.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths


def markdown(result: BenchResult, plots: list[Path], *, doc_dir: Path, results_file: Path | None) -> str:
    m, v, peak = result.machine, result.versions, result.peak
    s = result.settings
    L: list[str] = []
    add = L.append
    add("# Performance on CPU: served vs in-process, fp32 vs INT8")
    add("")
    add(f"<!-- generated by `stylize bench` ({result.started}); regenerate, do not edit by hand -->")
    add("")
    add(f"Reproduce: `{result.command}` (about {result.seconds / 60:.0f} minutes here)." if result.command else "")
    add("")
    add("Every number below comes from one run of the benchmark on this machine. The machine is shared with other "
        "work (2 cores, load average per round in the JSON), so absolute times are noisy; the **results are the "
        "ratios**: every runner processes the same number of images of the same real photo crop "
        f"({s['photo']}) in turn, the order rotates between rounds. **Bold** ratios compare each runner's fastest "
        "round (interference from other work only ever adds time, so the fastest round is the closest to a "
        "runner's own cost); `rounds` is the median of the ratios taken within each round, over "
        f"at least {s['rounds']} rounds (range in brackets; light cases get more rounds, up to "
        f"{s.get('max_rounds', s['rounds'])}).")
    add("")
    add("## Machine")
    add("")
    add(f"- CPU: {m['cpu']}, {m['cores']} cores available, {m['memory_gib']} GiB; {m['os']}")
    add(f"- Software: PyTorch {v['torch']}, ONNX Runtime {v['onnxruntime']}, Triton {result.layout.get('triton', '?')}"
        f" (the `tritonserver` of nvidia-pytriton; ONNX models run through the project's Python-based "
        f"`onnxruntime` backend), numpy {v['numpy']}, Python {v['python']}, stylize {v['stylize']}")
    add(f"- Matrix-multiply peak, {peak['threads']} threads, {peak['n']}³ (best over the run: measured before, "
        "between and after the cases): "
        f"ONNX Runtime fp32 **{peak['ort_fp32_gflops']:.0f} GFLOP/s**, numpy fp32 {peak['numpy_fp32_gflops']:.0f} "
        f"GFLOP/s, ONNX Runtime int8 (MatMulInteger u8×s8) **{peak['ort_int8_gops']:.0f} GOP/s**")
    add(f"- Runners: in-process runtimes with {s['threads']} intra-op threads; served runners keep "
        f"{s['in_flight']} requests in flight over gRPC ({result.server}).")
    add("")

    # ---- targets -------------------------------------------------------------------------------------------
    add("## Targets")
    add("")
    add("| case | served / ORT in-process | target | | served / PyTorch eager (≥ "
        f"{TARGET_SERVED_VS_TORCH}) | | INT8 served / fp32 served (≥ {TARGET_INT8_SPEEDUP}) | INT8 PSNR loss "
        f"(≤ {TARGET_INT8_LOSS_DB} dB) | |")
    add("|---|---|---|---|---|---|---|---|---|")
    for c in result.cases:
        t = TARGET_SERVED_VS_ORT.get(c.model)
        so, st, i8 = (c.best_ratio("served", "ort"), c.best_ratio("served", "torch"),
                      c.best_ratio("served_int8", "served"))
        q = c.int8_quality or {}
        loss = q.get("loss_db")
        if not q:
            qtxt, qv = "no INT8 build", "–"
        elif not q.get("meaningful"):
            qtxt, qv = f"fidelity {q.get('fidelity_psnr_db')} dB", "meaningless: untrained weights"
        elif loss is None:
            qtxt, qv = f"fidelity {q.get('fidelity_psnr_db')} dB", "no ground truth"
        else:
            qtxt = f"{loss:.2f} dB (fidelity {q.get('fidelity_psnr_db')} dB)"
            qv = "**meets**" if loss <= TARGET_INT8_LOSS_DB else f"**misses** by {loss - TARGET_INT8_LOSS_DB:.2f} dB"
        i8v = _verdict(i8, TARGET_INT8_SPEEDUP)
        if i8 and q and not q.get("meaningful"):
            i8v += " (speed only)"
        add(f"| {_case_name(c)} | {_br(c, 'served', 'ort')} | ≥ {t} | {_verdict(so, t) if t else ''} | "
            f"{_br(c, 'served', 'torch')} | {_verdict(st, TARGET_SERVED_VS_TORCH)} | "
            f"{_br(c, 'served_int8', 'served')} {i8v} | {qtxt} | {qv} |")
    add("")
    streams = [(c, c.best_ratio("served", "ort_streams"), c.ratio("served", "ort_streams")) for c in result.cases
               if c.best_ratio("served", "ort_streams")]
    if streams:
        add(f"The target's reference, ORT in-process, is one session with {s['threads']} intra-op threads. The served "
            "CPU step runs the same file as one 1-thread session per instance, in parallel; the same layout "
            "in-process (`ort_streams`) is the stricter reference for what serving costs: served / that = "
            + ", ".join(f"{_case_name(c)} **{b:.2f}** (rounds {_r(r)})" for c, b, r in streams) + ".")
        add("")

    why = _why(result)
    if why:
        add("### Why the misses happen (from the same run's measurements)")
        add("")
        L.extend(why)
        add("")

    # ---- all runners ---------------------------------------------------------------------------------------
    add("## Throughput, every runner")
    add("")
    add("Images per second (fastest round) and achieved GFLOP/s (the network's FLOPs counted from its ONNX "
        "graph's convolutions, divided by the time per image; INT8 runs are counted with the same fp32-equivalent "
        "FLOPs). Percent: of the ONNX Runtime fp32 GEMM peak above.")
    add("")
    present = [r for r in RUNNER_ORDER if any(r in c.runners and c.runners[r].images_per_s for c in result.cases)]
    add("| case | GFLOP/image | " + " | ".join(SHORT[r] for r in present) + " |")
    add("|---|---|" + "---|" * len(present))
    for c in result.cases:
        cells = []
        for r in present:
            rr = c.runners.get(r)
            if not rr or not rr.images_per_s:
                cells.append("–" if not rr or not rr.error else "error")
                continue
            g = c.gflops(r)
            cells.append(f"{rr.images_per_s:.3g} img/s, {g:.0f} GFLOP/s ({100 * g / peak['ort_fp32_gflops']:.0f} %)")
        add(f"| {_case_name(c)} | {c.gflop_per_image:.1f} | " + " | ".join(cells) + " |")
    add("")
    errors = [(c, r) for c in result.cases for r in c.runners.values() if r.error]
    if errors:
        add("Runners that could not run: " + "; ".join(f"{_case_name(c)} {r.name}: {r.error}" for c, r in errors))
        add("")
    for p in plots:
        add(f"![{p.stem}]({p.relative_to(doc_dir).as_posix()})")
        add("")

    # ---- served path ---------------------------------------------------------------------------------------
    add("## Where a served request's time goes")
    add("")
    add("From Triton's statistics over the measured served rounds (per request, with "
        f"{s['in_flight']} in flight, so times include waiting for the cores the other request uses): the python "
        "step's own work (decode, tiling, blend, encode: its compute minus the network calls it makes), the "
        "network's compute, and queueing. Where the CPU step runs the network in its own process, the network's "
        "share is the step's own histogram (`stylize_image_network_seconds` on the metrics port) and the only "
        "queue is the step's: its instances take the requests directly. `served network (raw)` vs `ORT fp32` "
        "shows the serving overhead without the python step (transport of raw frames, the backend, one instance "
        "of 2 threads, so the second request waits in its queue); `served ensemble` vs `served network (raw)` "
        "shows what the step adds or saves.")
    add("")
    add("Network compute is per execution; `batch` is requests per execution (the CPU configs run one request "
        "per execution: a batch of 2 measured slower per image than two of 1 on this CPU).")
    add("")
    add("| case | runner | server time / request | python step own work | network compute | batch | queues | "
        "served net / ORT | served / served net |")
    add("|---|---|---|---|---|---|---|---|---|")
    for c in result.cases:
        for name, b in c.breakdown.items():
            net_runner = "served_net" if name == "served" else None
            add(f"| {_case_name(c)} | {SHORT[name]} | {b.request_ms:.0f} ms | {b.step_ms:.0f} ms "
                f"({100 * b.step_ms / b.request_ms:.0f} %) | {b.network_ms:.0f} ms | {b.network_batch:.2f} | "
                f"{b.queue_ms:.0f} ms | "
                f"{_br(c, 'served_net', 'ort') if net_runner else '–'} | "
                f"{_br(c, 'served', 'served_net') if net_runner else '–'} |")
    add("")
    steps = [c for c in result.cases if c.step]
    if steps:
        add("The image step's own work measured alone, in-process (its pipeline with ONNX Runtime as the network, one "
            "request, best of 3): on 2 cores the network already uses both, so every millisecond of decode/encode "
            "is a millisecond the network does not run, and served / ORT is at best network / (network + step).")
        add("")
        add("Tiles: the step cuts inputs larger than the descriptor's tile size into overlapping tiles (bounded "
            "memory); the network then computes more pixels than the image has, which in-process ORT on the whole "
            "image does not.")
        add("")
        add("| case | decode | network (in the step) | tiles | network pixels / image pixels | resize + encode "
            "(PNG) | output | step / network | bound on served / ORT |")
        add("|---|---|---|---|---|---|---|---|---|")
        for c in steps:
            st = c.step
            tiles, px = _tiling(c)
            bound = st.network_ms / (st.network_ms + st.step_ms) / px
            add(f"| {_case_name(c)} | {st.decode_ms:.1f} ms | {st.network_ms:.0f} ms | {tiles} | {px:.2f} | "
                f"{st.encode_ms:.1f} ms | {st.output_bytes / 1e6:.2f} MB | {100 * st.step_ms / st.network_ms:.1f} % | "
                f"{bound:.2f} |")
        add("")
    add("Served layout measured (from the model configs; instances × intra-op threads of each ONNX model ≤ "
        f"{m['cores']} cores):")
    add("")
    models = sorted(k for k in result.layout if k != "triton")
    if models:
        add("| model | kind | instances | intra-op threads |")
        add("|---|---|---|---|")
        for k in models:
            lay = result.layout[k]
            add(f"| {k} | {lay['kind']} | {lay['instances']} | {lay['threads'] or '–'} |")
        add("")

    if result.layouts:
        add("Layouts of the served image step compared in the same run (instances × intra-op threads of the "
            "network each `<id>_image` instance runs in its own process; everything else as built; one server per "
            f"layout, measured round-robin, {s['in_flight']} requests in "
            "flight, PNG in/out):")
        add("")
        add("| case | " + " | ".join(f"{k} img/s" for k in result.layouts[0].layouts) + " | ratio (2nd / 1st) |")
        add("|---|" + "---|" * (len(result.layouts[0].layouts) + 1))
        for lay in result.layouts:
            keys = list(lay.layouts)
            cells = [f"{1 / min(v):.3g}" if v else "–" for v in lay.layouts.values()]
            best = lay.best_ratio(keys[1], keys[0]) if len(keys) > 1 else None
            ratio = lay.ratio(keys[1], keys[0]) if len(keys) > 1 else None
            add(f"| {lay.model} {lay.side}² | " + " | ".join(cells)
                + (f" | **{best:.2f}** (rounds {_r(ratio)}) |" if best else " | – |"))
        add("")

    # ---- INT8 ---------------------------------------------------------------------------------------------
    add("## INT8")
    add("")
    add("ONNX Runtime static quantization (`stylize build --int8`, build/stylize_build/quantize.py): QDQ format, "
        "weights int8 symmetric per output channel, activations uint8 per tensor from MinMax calibration on crops "
        "of real photos (astronaut, chelsea, rocket); only the convolutional body is quantized (the uint8↔float "
        "head/tail and the first and last convolution stay fp32). Quality is measured at build time on held-out "
        "photos (coffee, motorcycle), never seen by the calibration: super-resolution inputs are the bicubic "
        "downscale of a crop and both outputs are scored against the crop (PSNR vs ground truth); fidelity is "
        "PSNR of INT8 vs fp32 output.")
    add("")
    add("| model | weights | fidelity (INT8 vs fp32) | fp32 PSNR vs ground truth | INT8 PSNR vs ground truth | "
        "loss | max abs diff | note |")
    add("|---|---|---|---|---|---|---|---|")
    seen = set()
    for c in result.cases:
        q = c.int8_quality
        if not q or c.model in seen:
            continue
        seen.add(c.model)
        f = lambda x: "–" if x is None else f"{x:.2f} dB"  # noqa: E731
        add(f"| {c.model} | {q.get('weights')} | {f(q.get('fidelity_psnr_db'))} | {f(q.get('fp32_psnr_db'))} | "
            f"{f(q.get('int8_psnr_db'))} | {f(q.get('loss_db'))} | {q.get('max_abs_diff')} | {q.get('note') or ''} |")
    add("")
    prelu = [(c, c.ratio("ort_prelu", "ort"), c.ratio("ort_int8", "ort_prelu")) for c in result.cases
             if c.ratio("ort_prelu", "ort")]
    if prelu:
        add("**PRelu.** ONNX Runtime 1.31 runs the per-channel `PRelu` of SRVGGNetCompact (animevideo) through a "
            "slow generic broadcast. The INT8 graphs replace it by the exact `x + (a-1)·min(x, 0)` before "
            "quantizing; the same rewrite on the fp32 graph (`ORT fp32 PRelu-rewritten`) is what the INT8 speed-up "
            "should be judged against once the fp32 export adopts it:")
        add("")
        add("| case | fp32 rewritten / fp32 | INT8 / fp32 rewritten (in-process) |")
        add("|---|---|---|")
        for c, a, b in prelu:
            add(f"| {_case_name(c)} | {_br(c, 'ort_prelu', 'ort')} | {_br(c, 'ort_int8', 'ort_prelu')} |")
        add("")

    # ---- AnimeGANv2 ---------------------------------------------------------------------------------------
    anime = [c for c in result.cases if c.model == "animeganv2"]
    if anime:
        add("## AnimeGANv2 at 512×512")
        add("")
        for c in anime:
            parts = []
            for r in ("torch", "ort", "served", "ort_int8", "served_int8"):
                rr = c.runners.get(r)
                if rr and rr.images_per_s:
                    parts.append(f"{SHORT[r]} {1 / rr.images_per_s:.2f} s/image ({c.gflops(r):.0f} GFLOP/s)")
            add(f"- {c.side}²: {c.gflop_per_image:.0f} GFLOP per image; " + "; ".join(parts) + ".")
        add(f"- Published: {PUBLISHED_ANIMEGAN_512[0]} on a {PUBLISHED_ANIMEGAN_512[1]}. In-process times are "
            "sequential latencies (one image at a time); served times are per image with "
            f"{s['in_flight']} requests in flight. Weights are untrained here (speed does not depend on them).")
        add("")

    add("## Method and limits")
    add("")
    add(f"- Images per round: chosen so the in-process fp32 ORT run takes ≥ {s['seconds_per_round']} s (at least "
        f"{s['in_flight']}, at most {s['max_images']}); every runner processes the same count in a round. "
        "Per case: " + ", ".join(f"{_case_name(c)} {c.images_per_round}" for c in result.cases) + ".")
    add("- FLOPs: convolutions only, counted from the ONNX graph at two probe sizes and scaled by area "
        "(build/stylize_build/flops.py); elementwise work is not counted.")
    add("- GPU / TensorRT: no GPU here, so no GPU numbers. On a GPU machine: `stylize build --trt` (TensorRT "
        "FP16 plans; the ensembles route to `<id>_trt`), start the server in NVIDIA's container, then run "
        "`stylize bench --url <host:8001>` and `stylize loadtest --url <host:8001>`: the in-process runners still "
        "run on the client's CPU, so compare the served runners with each other there.")
    if results_file:
        add(f"- Raw results: `{results_file.as_posix()}`.")
    add("")
    return "\n".join(L)


def write(result: BenchResult, doc: Path, *, results_file: Path | None = None) -> Path:
    plots = plot(result, doc.parent / doc.stem)
    doc.write_text(markdown(result, plots, doc_dir=doc.parent, results_file=results_file))
    return doc


def save_json(result: BenchResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


__all__ = ["plot", "markdown", "write", "save_json", "load_json"]


def load_json(path: Path) -> BenchResult:
    """A saved result back into objects (to re-render the doc without re-measuring)."""
    from .bench import Breakdown, RunnerResult

    from .bench import LayoutResult, StepProfile

    raw = json.loads(Path(path).read_text())
    raw["layouts"] = [LayoutResult(**x) for x in raw.get("layouts", [])]
    cases = []
    for c in raw.pop("cases"):
        c["runners"] = {k: RunnerResult(**r) for k, r in c["runners"].items()}
        c["breakdown"] = {k: Breakdown(**b) for k, b in c.get("breakdown", {}).items()}
        c["step"] = StepProfile(**c["step"]) if c.get("step") else None
        cases.append(CaseResult(**c))
    return BenchResult(**raw, cases=cases)
