"""The load-test Job's perf_analyzer command line and input file work with the real perf_analyzer of the same
release (tritonclient 2.51's binary) against a real Triton serving a model with the ensembles' tensor names."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from k8s_helpers import one, render
from stylize.contract import descriptors

pytestmark = [pytest.mark.k8s, pytest.mark.triton, pytest.mark.loadtest]

from stylize.server import launcher
from stylize.server.errors import TritonNotFoundError

ECHO = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "{out}", pb_utils.get_input_tensor_by_name(r, "{inp}").as_numpy())]) for r in requests]
"""


def _perf_analyzer() -> tuple[Path, dict]:
    exe = shutil.which("perf_analyzer") or str(Path(os.sys.executable).parent / "perf_analyzer")
    if not Path(exe).is_file():
        pytest.skip("perf_analyzer is not installed (tritonclient[all], the `loadtest` extra)")
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is not None and spec.submodule_search_locations:  # libcudart.so.12, which the binary links
        lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env.get('LD_LIBRARY_PATH', '')}"
    return Path(exe), env


@pytest.mark.slow
def test_job_command_runs_against_a_real_server(tmp_path):
    exe, env = _perf_analyzer()
    job = one(render("loadtest"), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    job_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # the admin key from the server's Secret: perf_analyzer reads the model config, an admin API (over HTTP)
    (key_ref,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == "STYLIZE_ADMIN_KEY"]
    assert key_ref == {"name": "triton-admin-key", "key": "key"}
    model = descriptors.get(job_env["MODEL"])  # the Job targets a real client-facing model
    assert model.ensemble_input == descriptors.ENCODED_IMAGE

    repo = tmp_path / "repo"
    (repo / model.id / "1").mkdir(parents=True)
    (repo / model.id / "1" / "model.py").write_text(
        ECHO.format(inp=descriptors.ENCODED_IMAGE.name, out=descriptors.ENCODED_RESULT.name)
    )
    (repo / model.id / "config.pbtxt").write_text(
        f'name: "{model.id}"\nbackend: "python"\nmax_batch_size: {model.serving.max_batch_size}\n'
        f'input [ {{ name: "{descriptors.ENCODED_IMAGE.name}", data_type: TYPE_STRING, dims: [ 1 ] }} ]\n'
        f'output [ {{ name: "{descriptors.ENCODED_RESULT.name}", data_type: TYPE_STRING, dims: [ 1 ] }} ]\n'
    )

    script = container["args"][0]
    inputs = one(render("loadtest"), "ConfigMap")["data"]["input-data.json"]
    (tmp_path / "input-data.json").write_text(inputs)
    assert json.loads(inputs)["data"][0][descriptors.ENCODED_IMAGE.name]["b64"]
    # the Job's command, with the in-cluster paths pointed here and a short measurement whose stability is not
    # judged (this machine is shared: 2 s windows of an echo model wander by more than 10 %)
    script = (
        script.replace("/inputs/input-data.json", str(tmp_path / "input-data.json"))
        .replace("/tmp/perf.csv", str(tmp_path / "perf.csv"))
        .replace("--measurement-interval 10000", "--measurement-interval 2000")
        .replace("--stability-percentage 10", "--stability-percentage 1000")
        .replace("--max-trials 10", "--max-trials 3")
        .replace("perf_analyzer ", f"{shlex.quote(str(exe))} ", 1)
    )
    try:
        server = launcher.start_local(repo)
    except TritonNotFoundError as e:  # pragma: no cover
        pytest.skip(f"no tritonserver binary: {e}")
    with server:
        assert job_env["TARGET"].endswith(":8000")  # the Service's HTTP port
        run_env = dict(
            env,
            MODEL=model.id,
            TARGET=server.http_url,
            CONCURRENCY="1:2:1",
            PERCENTILE=job_env["PERCENTILE"],
            STYLIZE_ADMIN_KEY=server.admin_key,
        )
        out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=run_env, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for flag_ in ("--measurement-interval 2000", "--stability-percentage 1000", "--max-trials 3"):
        assert flag_ in script  # every substitution above hit the Job's command
    header, *rows = (tmp_path / "perf.csv").read_text().strip().splitlines()
    # the CSV carries what the capacity file needs: throughput, latency percentiles, server queue and compute
    for column in ("Concurrency", "Inferences/Second", "p95 latency", "Server Queue", "Server Compute Infer"):
        assert column in header, column
    assert len(rows) == 2 and out.stdout.strip().endswith(rows[-1])  # the Job prints the CSV into its log
