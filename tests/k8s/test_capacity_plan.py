"""docs/capacity.md is generated from measured numbers only: the generator refuses without them, computes the
tables from them, labels GPU assumptions, and the committed doc is either the method only or up to date."""

from __future__ import annotations

import json
import math
import re

import pytest
from k8s_helpers import ROOT, one, render
from k8s_helpers import TEST_CAPACITY_RESULTS as TEST_RESULTS
from stylize_k8s import plan
from stylize_k8s import simulate as sim

pytestmark = pytest.mark.k8s

SHORT = {"steady": 1800, "diurnal": 7200, "burst": 1800}  # shorter runs keep the test fast


@pytest.fixture(scope="module")
def hpas():
    return (
        sim.HpaSpec.from_manifest(one(render("overlays/cpu"), "HorizontalPodAutoscaler")),
        sim.HpaSpec.from_manifest(one(render("overlays/gpu"), "HorizontalPodAutoscaler")),
    )


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "capacity.json"
    path.write_text(json.dumps(TEST_RESULTS))
    return path


def test_refuses_without_measured_numbers(tmp_path, capsys):
    out = tmp_path / "capacity.md"
    assert plan.main(["--out", str(out)]) == 2
    assert plan.main(["--results", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert not out.exists() and not (tmp_path / "capacity").exists()
    assert "computed only from measurements" in capsys.readouterr().err


def _row(text: str, first_cell: str, table_header: str) -> list[str]:
    section = text[text.index(table_header) :]
    line = next(l for l in section.splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_tables_come_from_the_numbers(results_file, tmp_path, hpas):
    cpu, gpu = hpas
    text = plan.render(
        results_file, figures=tmp_path / "capacity", rps=[1, 10, 100, 1000], cpu_hpa=cpu, gpu_hpa=gpu, durations=SHORT
    )
    assert text.startswith(plan.MARKER)
    # pods for N req/s = ceil(N / throughput at the SLO): esrgan_x4 7.5 req/s/pod, animevideo_x4 90 req/s/pod
    esr = _row(text, "esrgan_x4", "### Pods needed")
    assert esr[1:] == ["1", "2", str(math.ceil(100 / 7.5)), f"{math.ceil(1000 / 7.5)} (> max)"]
    av = _row(text, "animevideo_x4", "### Pods needed")
    assert av[1:] == ["1", "1", "2", str(math.ceil(1000 / 90))]
    per_pod = _row(text, "esrgan_x4", "### Per pod")
    assert per_pod[3:6] == ["8.00", "7.50", "2"]  # saturation, at SLO, parallelism
    # the simulation table has a row per shape and per target, with its figure
    assert len(re.findall(r"^\| (steady|diurnal|burst) \| ", text, re.M)) in (3, 6)
    for fig in re.findall(r"\]\((capacity/[^)]+\.png)\)", text):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"
    # the input travels with the doc, so the doc can be regenerated and checked
    assert json.loads((tmp_path / "capacity" / "capacity-input.json").read_text()) == TEST_RESULTS
    # no GPU input: the GPU section states the method only, no number
    gpu_part = text[text.index("## GPU pods") : text.index("## Method")]
    assert "No GPU numbers" in gpu_part and not re.search(r"\d+ req/s", gpu_part)


def test_gpu_assumptions_are_labelled_and_used(results_file, tmp_path, hpas):
    cpu, gpu = hpas
    assumptions = tmp_path / "gpu.json"
    assumptions.write_text(
        json.dumps({"source": "test input", "gpu": "a GPU", "models": {"esrgan_x4": {"speedup": 10, "why": "test"}}})
    )
    tiny = {"steady": 600, "burst": 600}  # the simulations are tested above; here only the GPU arithmetic
    text = plan.render(
        results_file,
        figures=tmp_path / "capacity",
        rps=[1000],
        cpu_hpa=cpu,
        gpu_hpa=gpu,
        gpu_assumptions=assumptions,
        durations=tiny,
        write=False,
    )
    assert "## GPU pods (ASSUMED, not measured)" in text
    gpu_part = text[text.index("## GPU pods computed from the assumptions") :]
    # 10x the CPU pod: every point meets the SLO once its latency is divided by 10, so the at-SLO throughput is
    # the saturation one, 80 req/s; the GPU overlay's maxReplicas is 8
    assert _row(gpu_part, "esrgan_x4", "### Pods needed")[1] == f"{math.ceil(1000 / 80)} (> max)"
    assumptions.write_text(json.dumps({"source": "x", "models": {"esrgan_x4": {"speedup": 10}}}))
    with pytest.raises(plan.PlanInputError, match="why"):
        plan.render(
            results_file,
            figures=tmp_path / "c2",
            rps=[1],
            cpu_hpa=cpu,
            gpu_hpa=gpu,
            gpu_assumptions=assumptions,
            durations=tiny,
            write=False,
        )


def test_refuses_results_of_a_pod_unlike_the_overlays_unless_scaled(tmp_path, hpas, capsys):
    """Per-pod numbers hold for the pod size they were measured on: a 2-CPU measurement is not a plan for the
    overlay's 4-CPU pod, unless the plan is told to scale it, and then it says so and scales throughput only."""
    cpu, gpu = hpas
    deployed = plan.overlay_pod("cpu")
    assert (plan.cpu_count(deployed["cpu"]), plan.memory_bytes(deployed["memory"])) == (4, 28 * 2**30)
    small = json.loads(json.dumps(TEST_RESULTS))
    small["pod"] = {"kind": "cpu", "cpu": "2", "memory": "23.5Gi"}
    path = tmp_path / "small.json"
    path.write_text(json.dumps(small))
    tiny = {"steady": 600}
    with pytest.raises(plan.PlanInputError, match="cpu 2, memory 23.5Gi.*cpu 4, memory 28Gi"):
        plan.render(
            path,
            figures=tmp_path / "c",
            rps=[10],
            cpu_hpa=cpu,
            gpu_hpa=gpu,
            durations=tiny,
            write=False,
            cpu_pod=deployed,
        )
    out = tmp_path / "capacity.md"
    assert plan.main(["--results", str(path), "--out", str(out)]) == 2  # the command line refuses too
    assert not out.exists() and plan.SCALE_FLAG in capsys.readouterr().err
    text = plan.render(
        path,
        figures=tmp_path / "c",
        rps=[10],
        cpu_hpa=cpu,
        gpu_hpa=gpu,
        durations=tiny,
        write=False,
        cpu_pod=deployed,
        scale_to_pod=True,
    )
    assert "**SCALED, not measured at this size**" in text and plan.SCALE_FLAG in text
    assert "cpu 2, memory 23.5Gi" in text and "cpu 4, memory 28Gi" in text
    assert _row(text, "esrgan_x4", "### Per pod")[3:6] == ["16.00", "15.00", "4"]  # 2x throughput, same latency
    # the measured pod size itself needs no flag
    same = plan.render(
        path,
        figures=tmp_path / "c",
        rps=[10],
        cpu_hpa=cpu,
        gpu_hpa=gpu,
        durations=tiny,
        write=False,
        cpu_pod={"overlay": "cpu", "cpu": "2000m", "memory": "23.5Gi"},
    )
    assert "as deployed (overlays/cpu) and as measured" in same and "SCALED" not in same


def test_target_decision_follows_the_simulations():
    keep = plan.target_decision(0.5, 0.6, {"steady": (0.0, 0.0), "burst": (0.083, 0.097)})
    assert "Keep the deployed target" in keep and "burst 8.30% -> 9.70%" in keep
    assert "Apply the recommendation" in plan.target_decision(0.5, 0.6, {"steady": (0.01, 0.0), "burst": (0.1, 0.1)})


@pytest.mark.slow
def test_committed_doc_is_method_only_or_generated_and_current(hpas):
    doc = ROOT / "docs" / "capacity.md"
    text = doc.read_text()
    assert "python -m stylize_k8s.plan --results" in text
    if not text.startswith(plan.MARKER):
        # no measured numbers yet: the doc holds the method and the command, and no capacity figure
        assert "req/s/pod" not in text and "Pods needed" not in text
        assert not re.search(r"^\|.*\d", text, re.M), "a table with numbers in a doc nobody generated"
        return
    inputs = ROOT / "docs" / "capacity" / "capacity-input.json"
    cpu, gpu = hpas
    kwargs = {}
    if (ROOT / "docs/capacity/gpu-assumptions.json").is_file():
        kwargs["gpu_assumptions"] = ROOT / "docs/capacity/gpu-assumptions.json"
    if (ROOT / "docs/capacity/capacity-gpu-input.json").is_file():
        kwargs["gpu_results"] = ROOT / "docs/capacity/capacity-gpu-input.json"
    regenerate = next(line for line in text.splitlines() if line.startswith("Regenerate:"))
    regenerated = plan.render(
        inputs,
        figures=ROOT / "docs" / "capacity",
        rps=list(plan.DEFAULT_RPS),
        cpu_hpa=cpu,
        gpu_hpa=gpu,
        write=False,
        cpu_pod=plan.overlay_pod("cpu"),
        scale_to_pod=plan.SCALE_FLAG in regenerate,
        **kwargs,
    )
    assert regenerated == text, "docs/capacity.md is stale: re-run python -m stylize_k8s.plan"
    # ... and it describes the deployed pod: as measured, or scaled to it in so many words
    deployed = plan.overlay_pod("cpu")
    assert (
        f"Pod: cpu {deployed['cpu']}, memory {deployed['memory']}, as deployed" in text
        or f"the deployed pod (overlays/cpu) has cpu {deployed['cpu']}, memory {deployed['memory']}" in text
    )
