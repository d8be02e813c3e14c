"""The pod's /dev/shm is sized from a measurement: k8s/capacity/shm-usage.json (python -m stylize_k8s.shm_usage
--measure, a real tritonserver with the Deployment's flags driven with the worst requests the step limits admit).
These tests read that file and check that the manifests, the memory arithmetic and the doc are derived from it, and
that the measured worst request is one the image step admits."""

from __future__ import annotations

import json

import pytest
from k8s_helpers import flag, one, render, server_container
from stylize_k8s import shm_usage as shm

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="module")
def report():
    return json.loads(shm.REPORT.read_text())


def test_the_measurement_covers_every_python_stub_of_the_pod(report):
    """Every python model instance the pod runs (request_check, both instances of each image step) was measured in
    every phase; the peak phase grew the image steps' regions beyond their start size."""
    from stylize.contract import descriptors

    pod = {s["instance"] for s in report["stubs"] if s["backend"] == "python"}
    images = [d for d in descriptors.MODELS if not d.window]
    expected = {f"{d.image_model}_0_{i}" for d in images for i in range(2)} | {f"{descriptors.REQUEST_CHECK_MODEL}_0_0"}
    assert pod == expected
    start = report["flags"]["shm-default-byte-size"]
    for s in report["stubs"]:
        if s["backend"] == "python":
            assert set(s["bytes"]) >= {"idle", "warm", "peak"}, s
            assert s["bytes"]["idle"] <= s["bytes"]["warm"] <= s["bytes"]["peak"], s  # regions never shrink
            assert s["bytes"]["peak"] > start, s
    assert report["phases"]["peak"]["python"] == sum(
        s["bytes"]["peak"] for s in report["stubs"] if s["backend"] == "python"
    )


def test_the_deployment_is_derived_from_the_measurement(report):
    assert shm.mismatches(report) == [], "run: python -m stylize_k8s.shm_usage --write-doc, then set the manifests"
    derived = shm.derive(report)
    assert derived["size_limit_bytes"] >= derived["worst_bytes"] * (1 + shm.MARGIN)
    for kustomization in ("overlays/cpu", "overlays/gpu", "overlays/cpu-objectstore"):
        dep = one(render(kustomization), "Deployment", "triton")
        spec = dep["spec"]["template"]["spec"]
        c = server_container(dep)
        dshm = next(
            v
            for v in spec["volumes"]
            if v["name"] == next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm")
        )
        assert shm.quantity_bytes(dshm["emptyDir"]["sizeLimit"]) == derived["size_limit_bytes"], kustomization
        shm_flags = dict(
            f.split(",", 1)[1].split("=") for f in flag(c["args"], "backend-config") if f.startswith("python,shm-")
        )
        assert {k: int(v) for k, v in shm_flags.items()} == report["flags"], kustomization


def test_the_cpu_pods_memory_counts_a_full_dev_shm(report):
    """/dev/shm is memory-backed (charged to the container): the CPU pod's worst case counts the dshm sizeLimit this
    measurement derives (the whole sum: tests/k8s/test_memory_budget_manifest.py, python -m
    stylize_k8s.memory_budget)."""
    from stylize_k8s import memory_budget

    assert memory_budget.worst_case().shm_mib * 2**20 == shm.derive(report)["size_limit_bytes"]


def test_the_measured_worst_request_is_admitted_by_the_step():
    """The peak request: a PNG of exactly max_bytes (a private chunk the decoder skips) that the step decodes, at
    the outscale that makes the output exactly max_output_pixels."""
    import numpy as np
    from stylize.contract.step import MAX_OUTSCALE, Limits
    from stylize.engine.imaging import decode

    lim = Limits()
    side = -(-int(lim.max_output_pixels**0.5) // int(MAX_OUTSCALE))
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    data = shm.padded_png(pixels, lim.max_bytes)
    assert len(data) == lim.max_bytes
    pic = decode(data, limits=lim)
    assert pic.size == (side, side) and np.array_equal(pic.color, pixels)
    assert (side * MAX_OUTSCALE) ** 2 == lim.max_output_pixels
    rgba = np.random.default_rng(1).integers(0, 1 << 16, (side, side, 4), dtype=np.uint16)
    pic16 = decode(shm.padded_png16(rgba, lim.max_bytes), limits=lim)
    assert pic16.bits == 16 and pic16.alpha is not None and pic16.alpha.dtype == np.uint16
