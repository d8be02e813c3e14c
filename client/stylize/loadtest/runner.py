"""Run scenarios against a server with perf_analyzer and collect everything the report needs.

The server is any Triton serving this repository's models (``stylize serve``, a test fixture, a cluster Service);
nothing here starts one (the CLI's ``--serve`` does, and times its start-up for the capacity plan).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from stylize.contract.provenance import git_commit
from stylize.contract.step import IN_PROCESS_RUNTIMES

from .perf import Level, find_perf_analyzer, perf_analyzer_version, run_level, write_input_data
from .scenarios import Scenario

RESULTS_FORMAT = "stylize-loadtest/1"


class ServerNotReady(RuntimeError):
    """The server cannot be reached or is not ready."""


# ---------------------------------------------------------------------------------------------------------------
# Server and machine facts
# ---------------------------------------------------------------------------------------------------------------


IN_STEP_NETWORK = "python step with its network"  # breakdown key where the two share a process


@dataclass
class ModelLayout:
    name: str
    kind: str  # backend or platform
    instances: int
    intra_op_threads: int | None
    steps: list[str] = field(default_factory=list)  # ensemble steps
    max_batch_size: int = 0
    net_runtime: str | None = None  # image steps: "openvino"/"onnxruntime" (network in the step's process), "triton"


def _grpc_client(url: str):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=url)


def model_layout(client, name: str, headers: Mapping[str, str] | None = None) -> ModelLayout:
    """From the model config, an admin API (``headers``: the admin key's, stylize.contract.access)."""
    cfg = client.get_model_config(name, as_json=True, headers=headers)["config"]
    params = cfg.get("parameters", {})
    # ONNX Runtime models: intra_op_thread_count; OpenVINO: INFERENCE_NUM_THREADS over all instances; image steps
    # running the network in their process: net_threads
    ov_threads = params.get("INFERENCE_NUM_THREADS", {}).get("string_value")
    instance_count = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or 1
    threads = (
        params.get("intra_op_thread_count", {}).get("string_value")
        or (str(max(1, int(ov_threads) // instance_count)) if ov_threads else None)
        or (
            params.get("net_threads", {}).get("string_value")
            if params.get("net_runtime", {}).get("string_value") in IN_PROCESS_RUNTIMES
            else None
        )
    )
    steps = [s["model_name"] for s in cfg.get("ensemble_scheduling", {}).get("step", [])]
    instances = sum(int(g.get("count", 1)) for g in cfg.get("instance_group", [])) or (0 if steps else 1)
    return ModelLayout(
        name=name,
        kind=cfg.get("backend") or cfg.get("platform", ""),
        instances=instances,
        intra_op_threads=int(threads) if threads else None,
        steps=steps,
        max_batch_size=int(cfg.get("max_batch_size", 0)),
        net_runtime=params.get("net_runtime", {}).get("string_value"),
    )


def network_of(scenario: Scenario) -> str:
    return scenario.descriptor.variant_network(scenario.variant)


def bls_callees(scenario: Scenario, layouts: Mapping[str, ModelLayout]) -> list[str]:
    """Networks an ensemble reaches through a BLS call from its python step (not an ensemble step): perf_analyzer
    only reports their statistics when told (--bls-composing-models)."""
    if not scenario.is_ensemble:
        return []
    top = layouts.get(scenario.triton_model)
    net = network_of(scenario)
    steps = flat_steps(scenario.triton_model, layouts)
    if top is None or not steps or net in steps:
        return []
    if any(layouts[s].net_runtime in IN_PROCESS_RUNTIMES for s in steps if s in layouts):
        return []  # the step runs the network in its own process: the network model sees none of these requests
    return [net]


def flat_steps(name: str, layouts: Mapping[str, ModelLayout]) -> list[str]:
    """The models an ensemble runs, nested ensembles opened (an image ensemble: the request check, then the cached
    ensemble's image step)."""
    out: list[str] = []
    for step in layouts[name].steps if name in layouts else ():
        nested = layouts.get(step)
        out += flat_steps(step, layouts) if nested is not None and nested.steps else [step]
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    scenario: Scenario
    levels: list[Level] = field(default_factory=list)
    error: str | None = None  # the scenario could not run at all (model not ready, no perf_analyzer, ...)
    seconds: float = 0.0
    bls_models: list[str] = field(default_factory=list)  # networks called from the python step (nested time)

    def breakdown(self, lv: Level) -> dict[str, float]:
        """Mean ms per request: client, transport (gRPC + (de)serialisation), queue (all models), the network's
        compute, and the python steps' own work (decode/encode/tiling: their compute minus nested BLS calls)."""
        net = network_of(self.scenario)
        client = ((lv.client_send_us or 0) + (lv.client_recv_us or 0)) / 1000
        transport = (lv.network_us or 0) / 1000
        queue = (lv.queue_us or 0) / 1000
        if not lv.composing:
            compute = (lv.server.compute_us if lv.server else 0) / 1000
            return {"client": client, "transport": transport, "queue": queue, "network": compute, "python steps": 0.0}
        net_stats = lv.composing.get(net)
        if net_stats is None:  # a CPU image step runs the network in its own process: one compute for both
            both = sum(st.compute_us for st in lv.composing.values()) / 1000
            return {"client": client, "transport": transport, "queue": queue, IN_STEP_NETWORK: both}
        net_ms = net_stats.compute_us / 1000
        nested = sum(lv.composing[m].request_us for m in self.bls_models if m in lv.composing) / 1000
        steps = sum(st.compute_us for name, st in lv.composing.items() if name != net) / 1000 - nested
        return {
            "client": client,
            "transport": transport,
            "queue": queue,
            "network": net_ms,
            "python steps": max(steps, 0.0),
        }

    @property
    def ok_levels(self) -> list[Level]:
        return [lv for lv in self.levels if lv.ok]

    @property
    def errors(self) -> list[str]:
        out = [self.error] if self.error else []
        return out + [f"{self.scenario.mode} {lv.value:g}: {lv.message}" for lv in self.levels if lv.status == "error"]

    def slo_verdict(self) -> str | None:
        """pass (every measured level meets the p95 SLO), partial (up to ...), fail, or None without an SLO."""
        slo = self.scenario.slo_p95_ms
        if slo is None:
            return None
        ok = self.ok_levels
        if not ok:
            return "fail"
        meets = [lv for lv in ok if lv.p95_ms is not None and lv.p95_ms <= slo]
        if len(meets) == len(ok):
            return "pass"
        if not meets:
            return "fail"
        return f"partial (up to {self.scenario.mode} {max(lv.value for lv in meets):g})"

    def to_dict(self) -> dict[str, Any]:
        sc = asdict(self.scenario)
        sc["triton_model"] = self.scenario.triton_model
        sc["input_label"] = self.scenario.input_label
        return {
            "scenario": sc,
            "levels": [lv.to_dict() for lv in self.levels],
            "error": self.error,
            "seconds": self.seconds,
            "slo": self.slo_verdict(),
            "bls_models": self.bls_models,
            "breakdown_ms": [self.breakdown(lv) for lv in self.ok_levels],
        }


@dataclass
class RunResult:
    started: str
    url: str
    command: str
    machine: dict[str, Any]
    versions: dict[str, str]
    layouts: dict[str, ModelLayout]
    results: list[ScenarioResult]
    load_average: dict[str, list[float]] = field(default_factory=dict)  # before/after: how noisy the machine was
    startup_s: float | None = None  # server start -> ready, when this run started the server
    finished: str = ""
    protocol: str = "grpc"  # perf_analyzer's: "http" against a server whose model config needs the admin key

    @property
    def errors(self) -> list[str]:
        return [f"{r.scenario.name}: {e}" for r in self.results for e in r.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULTS_FORMAT,
            "started": self.started,
            "finished": self.finished,
            "url": self.url,
            "command": self.command,
            "machine": self.machine,
            "versions": self.versions,
            "layouts": {k: asdict(v) for k, v in self.layouts.items()},
            "load_average": self.load_average,
            "startup_s": self.startup_s,
            "results": [r.to_dict() for r in self.results],
            "protocol": self.protocol,
        }


def load_results(path: Path) -> RunResult:
    """A saved results.json back into objects (re-render a report without re-measuring)."""
    from .perf import Level
    from .scenarios import InputSpec

    raw = json.loads(Path(path).read_text())
    if raw.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a {RESULTS_FORMAT} file")
    results = []
    for r in raw["results"]:
        sc = dict(r["scenario"])
        sc.pop("triton_model", None)
        sc.pop("input_label", None)
        inp = sc.pop("input")
        sc["input"] = InputSpec(
            size=tuple(inp["size"]), format=inp["format"], photos=tuple(inp["photos"]), crops=inp["crops"]
        )
        for key in ("concurrency", "request_rate"):
            sc[key] = tuple(sc.get(key, ()))
        results.append(
            ScenarioResult(
                Scenario(**sc),
                [Level.from_dict(lv) for lv in r["levels"]],
                r.get("error"),
                r.get("seconds", 0.0),
                r.get("bls_models", []),
            )
        )
    return RunResult(
        started=raw["started"],
        url=raw["url"],
        command=raw["command"],
        machine=raw["machine"],
        versions=raw["versions"],
        layouts={k: ModelLayout(**v) for k, v in raw["layouts"].items()},
        results=results,
        load_average=raw.get("load_average", {}),
        startup_s=raw.get("startup_s"),
        finished=raw.get("finished", ""),
        protocol=raw.get("protocol", "grpc"),
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run(
    scenarios: Sequence[Scenario],
    *,
    url: str,
    out_dir: Path,
    command: str = "",
    startup_s: float | None = None,
    log: Callable[[str], None] = lambda s: None,
    admin_key: str | None = None,
    http_url: str | None = None,
) -> RunResult:
    """Run every level of every scenario (one perf_analyzer process per level), in order.

    ``url`` is the gRPC endpoint. With ``admin_key`` (a server that restricts its admin APIs, stylize.contract.access) the
    model configs are read with it, and perf_analyzer, which cannot send it over gRPC, measures over HTTP at
    ``http_url`` with the admin header.
    """
    if admin_key and not http_url:
        raise ValueError("with an admin key perf_analyzer runs over HTTP: give the server's http_url")
    from stylize.contract import access

    grpc_headers = access.grpc_headers(admin_key)
    pa_url, pa_headers = (http_url, access.http_headers(admin_key)) if admin_key else (url, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_dir = out_dir / "raw"
    raw_dir.mkdir(exist_ok=True)
    binary = find_perf_analyzer()
    pa_version = perf_analyzer_version(binary)
    client = _grpc_client(url)
    try:
        if not client.is_server_ready():
            raise ServerNotReady(f"{url}: server is not ready")
        meta = client.get_server_metadata(as_json=True)
    except ServerNotReady:
        raise
    except Exception as e:  # tritonclient raises InferenceServerException for every transport failure
        raise ServerNotReady(f"{url}: cannot reach the server ({e})") from None
    import tritonclient

    versions = {
        "triton": meta.get("version", "?"),
        "perf_analyzer": pa_version,
        "tritonclient": getattr(tritonclient, "__version__", "2.51.0"),
        "stylize": git_commit(short=True),
    }
    layouts: dict[str, ModelLayout] = {}
    ready: dict[str, bool] = {}
    for sc in scenarios:
        names = {sc.triton_model, network_of(sc)}
        for n in list(names):
            if n in ready:
                continue
            try:
                ready[n] = bool(client.is_model_ready(n))
                if ready[n]:
                    layouts[n] = model_layout(client, n, grpc_headers)
                    names.update(layouts[n].steps)
            except Exception:  # noqa: BLE001 - an unknown model is "not ready", reported per scenario
                ready[n] = False
        pending = list(layouts.get(sc.triton_model, ModelLayout("", "", 0, None)).steps)
        while pending:  # the steps of nested ensembles too (the one holding the response cache)
            n = pending.pop()
            if n not in layouts:
                try:
                    layouts[n] = model_layout(client, n, grpc_headers)
                    pending += layouts[n].steps
                except Exception:  # noqa: BLE001
                    pass
    client.close()

    result = RunResult(
        started=_now(),
        url=url,
        command=command,
        machine=machine(),
        versions=versions,
        layouts=layouts,
        results=[],
        startup_s=startup_s,
        protocol="http" if admin_key else "grpc",
        load_average={"before": [round(x, 2) for x in os.getloadavg()]},
    )
    for sc in scenarios:
        res = ScenarioResult(sc)
        result.results.append(res)
        if not ready.get(sc.triton_model):
            hint = " (build it: stylize build --int8)" if sc.variant.startswith("int8") else ""
            res.error = f"model {sc.triton_model} is not ready on {url}{hint}"
            log(f"{sc.name}: SKIPPED, {res.error}")
            continue
        # a network with max_batch_size 0 (OpenVINO) takes a batch as its first dim: stacked, one per request
        stacked = not sc.is_ensemble and sc.batch > 1 and layouts[sc.triton_model].max_batch_size == 0
        data_file = write_input_data(sc, raw_dir, stacked=stacked)
        bls = bls_callees(sc, layouts)
        res.bls_models = bls
        t0 = time.perf_counter()
        for level in sc.levels:
            lvl, _ = run_level(
                binary,
                sc,
                level,
                url=pa_url,
                data_file=data_file,
                work_dir=raw_dir,
                bls_models=bls,
                headers=pa_headers,
                stacked=stacked,
            )
            res.levels.append(lvl)
            if lvl.ok:
                log(
                    f"{sc.name}: {sc.mode} {level:g}: {lvl.infer_per_s:.2f} img/s, p50 {lvl.p50_ms:.0f} ms, "
                    f"p95 {lvl.p95_ms:.0f} ms ({lvl.seconds:g} s)"
                )
            else:
                log(f"{sc.name}: {sc.mode} {level:g}: {lvl.status.upper()}: {lvl.message}")
        res.seconds = round(time.perf_counter() - t0, 1)
    result.load_average["after"] = [round(x, 2) for x in os.getloadavg()]
    result.finished = _now()
    (out_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


__all__ = [
    "RESULTS_FORMAT",
    "ServerNotReady",
    "ModelLayout",
    "ScenarioResult",
    "RunResult",
    "run",
    "IN_STEP_NETWORK",
    "machine",
    "bls_callees",
    "network_of",
    "load_results",
]
