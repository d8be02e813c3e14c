"""The load-test report: markdown (machine, versions, server layout, SLO pass/fail per scenario) and PNG plots
(throughput vs latency, latency percentiles, where a request's time goes). matplotlib runs headless (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .perf import Level
from .runner import IN_STEP_NETWORK, RunResult, ScenarioResult


def _f(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _lowest(r: ScenarioResult) -> Level | None:
    ok = r.ok_levels
    return min(ok, key=lambda lv: lv.value) if ok else None


def plot(run_result: RunResult, plots_dir: Path) -> list[Path]:
    """Write the PNG plots; returns their paths (none when nothing succeeded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    measured = [r for r in run_result.results if r.ok_levels]
    conc = [r for r in measured if r.scenario.mode == "concurrency" and len(r.ok_levels) > 1]
    rate = [r for r in measured if r.scenario.mode == "request_rate"]

    if conc:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for r in conc:
            lv = sorted(r.ok_levels, key=lambda x: x.value)
            ax.plot([x.infer_per_s for x in lv], [x.p95_ms for x in lv], marker="o", label=r.scenario.name)
            for x in lv:
                ax.annotate(
                    f"c{x.value:g}", (x.infer_per_s, x.p95_ms), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        ax.set_xlabel("throughput (images/s)")
        ax.set_ylabel("p95 latency (ms)")
        ax.set_yscale("log")
        ax.set_title("Throughput vs p95 latency (concurrency sweeps; cN = requests in flight)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = plots_dir / "throughput_latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if rate:
        fig, ax = plt.subplots(figsize=(9, 5))
        for r in rate:
            lv = sorted(r.ok_levels, key=lambda x: x.value)
            (line,) = ax.plot([x.value for x in lv], [x.p95_ms for x in lv], marker="o", label=f"{r.scenario.name} p95")
            ax.plot(
                [x.value for x in lv],
                [x.p50_ms for x in lv],
                marker=".",
                linestyle="--",
                color=line.get_color(),
                label=f"{r.scenario.name} p50",
            )
        ax.set_xlabel("offered load (requests/s, Poisson arrivals)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title("Latency vs offered request rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots_dir / "rate_latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if measured:
        import numpy as np

        names = [r.scenario.name for r in measured]
        lows = [_lowest(r) for r in measured]
        pct = {p: [lv.latency(p) or 0.0 for lv in lows] for p in (50, 90, 95, 99)}
        y = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(names)))
        for i, p in enumerate((50, 90, 95, 99)):
            ax.barh(y + (i - 1.5) * 0.2, pct[p], height=0.2, label=f"p{p}")
        ax.set_yticks(
            y, [f"{n} ({r.scenario.mode[0]}{_lowest(r).value:g})" for n, r in zip(names, measured)], fontsize=7
        )
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_title("Latency percentiles at the lowest load of each scenario")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots_dir / "latency_percentiles.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        # where the time of one request goes (lowest load: no queueing from the load itself)
        fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(names)))
        parts = [r.breakdown(lv) for r, lv in zip(measured, lows)]
        left = np.zeros(len(names))
        keys = ("network", IN_STEP_NETWORK, "python steps", "queue", "transport", "client")
        for key in (k for k in keys if any(k in p for p in parts)):
            values = np.array([p.get(key, 0.0) for p in parts])
            ax.barh(y, values, left=left, label=key)
            left += values
        ax.set_yticks(y, names, fontsize=7)
        ax.set_xlabel("ms per request (averages)")
        ax.set_title("Where a request's time goes (lowest load)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = plots_dir / "time_breakdown.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _protocol(run_result: RunResult) -> str:
    if run_result.protocol == "http":
        return "HTTP (the model config is an admin API: perf_analyzer sends the admin key over HTTP only)"
    return "gRPC"


def markdown(run_result: RunResult, plots: Sequence[Path], *, relative_to: Path) -> str:
    m, v = run_result.machine, run_result.versions
    lines = [
        f"# Load test report ({run_result.started})",
        "",
        f"Reproduce: `{run_result.command}`" if run_result.command else "",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores available, {m['memory_gib']} GiB |",
        f"| OS | {m['os']} (kernel {m['kernel']}), Python {m['python']} |",
        f"| Load average (1, 5, 15 min) | before {run_result.load_average.get('before')}, "
        f"after {run_result.load_average.get('after')} (the machine is shared: numbers are noisy) |",
        f"| Triton | {v['triton']} at {run_result.url} (gRPC) |",
        f"| Load generator | {v['perf_analyzer']} (tritonclient {v['tritonclient']}) over {_protocol(run_result)}, "
        "one run per level |",
        f"| stylize | {v['stylize']} |",
    ]
    if run_result.startup_s is not None:
        lines.append(f"| Server start-up (start -> ready, all models) | {run_result.startup_s:.1f} s |")
    lines += [
        "",
        "## Server layout (from the model configs)",
        "",
        "| model | kind | instances | intra-op threads | steps |",
        "|---|---|---|---|---|",
    ]
    for name, lay in sorted(run_result.layouts.items()):
        lines.append(
            f"| {name} | {lay.kind} | {lay.instances if not lay.steps else '–'} | "
            f"{lay.intra_op_threads or '–'} | "
            f"{' → '.join(lay.steps) or '–'} |"
        )

    lines += [
        "",
        "## Summary",
        "",
        "| scenario | model | input | levels | best img/s | p95 at lowest load (ms) | SLO p95 | verdict | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in run_result.results:
        sc = r.scenario
        ok = r.ok_levels
        best = max((lv.infer_per_s or 0 for lv in ok), default=None)
        low = _lowest(r)
        verdict = r.slo_verdict() or "–"
        unstable = sum(1 for lv in r.levels if lv.status == "unstable")
        err = len(r.errors)
        lines.append(
            f"| {sc.name} | {sc.triton_model} | {sc.input_label} | {len(ok)}/{len(sc.levels)} ok"
            f"{f', {unstable} unstable' if unstable else ''} | {_f(best, 2)} | {_f(low.p95_ms if low else None)} | "
            f"{_f(sc.slo_p95_ms) if sc.slo_p95_ms else '–'} | {verdict} | {err or ''} |"
        )

    for r in run_result.results:
        sc = r.scenario
        lines += [
            "",
            f"### {sc.name}",
            "",
            f"`{sc.triton_model}` ({sc.variant}), input {sc.input_label} from "
            f"{', '.join(sc.input.photos)} ({sc.input.crops} crop(s) each), {sc.mode} sweep, "
            f"p{sc.percentile} stabilisation, "
            + (f"windows of ≥ {sc.request_count} requests" if sc.request_count else f"{sc.measurement_ms} ms windows")
            + f"; set `{sc.set}`.",
        ]
        if r.error:
            lines += ["", f"**Not run:** {r.error}"]
            continue
        lines += [
            "",
            f"| {sc.mode} | img/s | p50 ms | p90 ms | p95 ms | p99 ms | queue ms | server ms | SLO | status |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for lv in r.levels:
            if not lv.ok:
                lines.append(f"| {lv.value:g} | | | | | | | | | {lv.status}: {lv.message} |")
                continue
            slo = "–"
            if sc.slo_p95_ms is not None:
                slo = "pass" if lv.p95_ms <= sc.slo_p95_ms else "FAIL"
            lines.append(
                f"| {lv.value:g} | {_f(lv.infer_per_s, 2)} | {_f(lv.p50_ms)} | {_f(lv.p90_ms)} | {_f(lv.p95_ms)} | "
                f"{_f(lv.p99_ms)} | {_f((lv.queue_us or 0) / 1000, 1)} | "
                f"{_f(lv.server.request_us / 1000 if lv.server else None)} | {slo} | ok"
                + (f", {lv.cache_hits} cache hits (result reuse: not a compute measurement)" if lv.cache_hits else "")
                + " |"
            )
        low = _lowest(r)
        if low and low.composing:
            parts = ", ".join(
                f"{k} queue {s.queue_us / 1000:.1f} + compute {s.compute_us / 1000:.1f} ms"
                for k, s in low.composing.items()
            )
            lines += ["", f"Per model at {sc.mode} {low.value:g} (server side, per request): {parts}."]
        if low:
            b = r.breakdown(low)
            lines += [
                "",
                f"Where the time goes at {sc.mode} {low.value:g} (ms per request): "
                + ", ".join(f"{k} {v:.1f}" for k, v in b.items())
                + ".",
            ]
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            lines.append(f"![{p.stem}]({p.relative_to(relative_to).as_posix()})")
            lines.append("")
    errors = run_result.errors
    lines += ["", "## Errors", ""] + ([f"- {e}" for e in errors] if errors else ["None."])
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write_report(run_result: RunResult, out_dir: Path) -> Path:
    plots = plot(run_result, out_dir / "plots")
    path = out_dir / "report.md"
    path.write_text(markdown(run_result, plots, relative_to=out_dir))
    return path


__all__ = ["plot", "markdown", "write_report"]
