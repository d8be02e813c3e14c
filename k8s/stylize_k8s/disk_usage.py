"""What the server pod writes to disk that is not memory-backed, measured: the ephemeral-storage figures of the
manifests (requests, limits, emptyDir sizeLimits) cite this file's report.

    python -m stylize_k8s.disk_usage --measure   # compile, sum, write k8s/capacity/disk-usage.json (minutes)
    python -m stylize_k8s.disk_usage             # print the report

Two things are measured, on the built repository (``--model-repository``, default ``model_repository``):

* **the OpenVINO model cache** of a CPU pod. Each image step whose ``net_runtime`` is ``openvino`` compiles its
  network in its own process through ov_runner's model cache, ``$HOME/.cache/stylize/openvino`` (HOME is the pod's
  /tmp emptyDir, which outlives container restarts). The measurement compiles, into an empty cache folder and with
  the step's own settings (``stylize.engine.network.open_network``: the step's ``net_threads`` and
  ``net_precision``), every version of that network which Triton serves by the network model's ``version_policy``
  (a request's NET_VERSION opens any of them), and sums the files the cache holds afterwards. Both instances of a
  step compile with the same settings and share one blob. The ``<id>_net`` models (``backend: "openvino"``) run on
  this project's Python-based OpenVINO backend in the CPU pod too (k8s/image/Dockerfile, target server-cpu), which
  compiles through the same cache with the settings of its config (``OvModelConfig.compile_settings``): every
  version Triton serves of each is compiled and counted as well. GPU pods' steps call their TensorRT plan by BLS
  and compile nothing.
* **the model repository**: the bytes of its files, which the object-store variant's init container copies into
  the pod (components/model-sync).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from stylize_k8s import K8S, ROOT

REPORT = K8S / "capacity" / "disk-usage.json"
COMMAND = "python -m stylize_k8s.disk_usage --measure"


def _params(config_text: str) -> dict[str, str]:
    return dict(
        re.findall(r'parameters\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', config_text)
    )


def served_versions(repository: Path, model: str) -> list[int]:
    """The versions Triton serves of ``model`` by its config's ``version_policy`` (Triton's default: the newest)."""
    from stylize.engine.network import model_versions

    on_disk = model_versions(repository, model)
    text = (repository / model / "config.pbtxt").read_text()
    if re.search(r"version_policy\s*:\s*\{\s*all\s*:", text):
        return on_disk
    specific = re.search(r"version_policy\s*:\s*\{\s*specific\s*:\s*\{\s*versions\s*:\s*\[([^\]]*)\]", text)
    if specific:
        wanted = {int(v) for v in re.findall(r"\d+", specific.group(1))}
        return [v for v in on_disk if v in wanted]
    latest = re.search(r"version_policy\s*:\s*\{\s*latest\s*:\s*\{\s*num_versions\s*:\s*(\d+)", text)
    return on_disk[: int(latest.group(1)) if latest else 1]


def in_process_networks(repository: Path) -> list[dict]:
    """Every (image step, served version of its network) that a CPU pod's steps compile with OpenVINO."""
    out = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        params = _params(config.read_text())
        if params.get("net_runtime") != "openvino" or not params.get("net_model"):
            continue
        net = params["net_model"]
        for version in served_versions(repository, net):
            out.append(
                {
                    "step": config.parent.name,
                    "network": net,
                    "version": version,
                    "threads": int(params.get("net_threads") or 1),
                    "precision": params.get("net_precision") or "fp32",
                }
            )
    return out


def backend_networks(repository: Path) -> list[dict]:
    """Every (network model on the OpenVINO backend, served version): what the pod's Python-based backend compiles."""
    out = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        if not re.search(r'^backend:\s*"openvino"', config.read_text(), re.M):
            continue
        for version in served_versions(repository, config.parent.name):
            out.append({"model": config.parent.name, "version": version, "backend": "openvino"})
    return out


def _backend_settings(config: Path, cache: Path):
    """The compile settings the Python-based backend derives from this config.pbtxt (as Triton hands it over)."""
    from google.protobuf import json_format, text_format
    from stylize.engine.ov_runner import OvModelConfig
    from tritonclient.grpc import model_config_pb2

    proto = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    parsed = OvModelConfig.from_triton(json_format.MessageToDict(proto, preserving_proto_field_name=True))
    return parsed.compile_settings(cache_dir=cache), parsed.model_filename


def _files_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(repository: Path) -> dict:
    from stylize.contract.descriptors import FRAME_IN, FRAME_OUT
    from stylize.engine.network import open_network
    from stylize.engine.ov_runner import compile_network

    t0 = time.monotonic()
    networks = in_process_networks(repository)
    with tempfile.TemporaryDirectory(prefix="ov-cache-") as tmp:
        cache = Path(tmp)
        for n in networks:
            before = _files_bytes(cache)
            path = repository / n["network"] / str(n["version"]) / "model.onnx"
            open_network(
                path,
                runtime="openvino",
                input_name=FRAME_IN.name,
                output_name=FRAME_OUT.name,
                threads=n["threads"],
                precision=n["precision"],
                cache_dir=cache,
            )
            n["cache_bytes_added"] = _files_bytes(cache) - before
            print(f"{n['step']}: {n['network']} v{n['version']} +{n['cache_bytes_added'] / 2**20:.1f} MiB", flush=True)
        backends = backend_networks(repository)
        for n in backends:
            before = _files_bytes(cache)
            settings, filename = _backend_settings(repository / n["model"] / "config.pbtxt", cache)
            compile_network(repository / n["model"] / str(n["version"]) / filename, settings)
            n["threads"], n["precision"] = settings.threads, settings.precision
            n["cache_bytes_added"] = _files_bytes(cache) - before
            print(
                f"{n['model']} v{n['version']} (backend openvino) +{n['cache_bytes_added'] / 2**20:.1f} MiB", flush=True
            )
        cache_bytes = _files_bytes(cache)
        blobs = len(list(cache.glob("*.blob")))
    import openvino as ov

    return {
        "command": COMMAND,
        "measured_at": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, OpenVINO {ov.get_version()}",
        "repository": str(repository.relative_to(ROOT) if repository.is_relative_to(ROOT) else repository),
        "duration_s": round(time.monotonic() - t0),
        "openvino_cache": {"bytes": cache_bytes, "blobs": blobs, "networks": networks, "backend_models": backends},
        "model_repository": {
            "bytes": _files_bytes(repository),
            "files": sum(1 for p in repository.rglob("*") if p.is_file()),
        },
    }


def load(report: Path = REPORT) -> dict:
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="compile the steps' networks and write the report")
    ap.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args(argv)
    if args.measure:
        report = measure(args.model_repository.resolve())
        args.report.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.report}")
    report = load(args.report)
    mib = 2**20
    print(
        f"OpenVINO model cache: {report['openvino_cache']['bytes'] / mib:.1f} MiB "
        f"({report['openvino_cache']['blobs']} blobs); model repository: "
        f"{report['model_repository']['bytes'] / mib:.1f} MiB ({report['model_repository']['files']} files)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
