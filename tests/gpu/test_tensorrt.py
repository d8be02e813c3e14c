"""TensorRT plans on a real GPU. Skipped, with the reason, on machines without an NVIDIA GPU and TensorRT."""

from __future__ import annotations

import pytest
from stylize.contract.descriptors import REGISTRY

pytestmark = pytest.mark.gpu


def _gpu_reason() -> str | None:
    from stylize_build.tensorrt import GPUUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except GPUUnavailable as e:
        return str(e)
    return None


REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"needs an NVIDIA GPU with TensorRT: {REASON}")


@needs_gpu
@pytest.mark.parametrize("model_id", ["animevideo_x4", "esrgan_anime_x4"])
def test_plan_builds_and_matches_onnxruntime(tmp_path, model_id):
    import json

    import tensorrt as trt
    from stylize_build.repository import BuildSettings, build_repository
    from stylize_build.tensorrt import FP16_PARITY_ATOL, build_plans, current_target

    desc = REGISTRY[model_id]
    settings = BuildSettings(repository=tmp_path / "repo")
    build_repository([desc], settings)
    results = build_plans([desc], settings)
    assert results.built == [(desc.trt_model, 1)] and not results.failed
    gpu = current_target(trt)
    plan = settings.repository / desc.trt_model / "1" / gpu.plan_file
    assert plan.stat().st_size > 0
    manifest = json.loads((plan.parent / "manifest.json").read_text())
    assert manifest["plans"][gpu.plan_file]["trt_parity_max_abs"] <= FP16_PARITY_ATOL  # at batch 2
    assert f'key: "{gpu.cc}"' in (settings.repository / desc.trt_model / "config.pbtxt").read_text()
    assert build_plans([desc], settings).built == [(desc.trt_model, 1)]  # up to date: not rebuilt


def test_profiles_cover_the_descriptor_sizes():
    """Runs everywhere: the optimization profile is derived from the descriptor, not typed."""
    from stylize_build.tensorrt import profile_for

    for desc in REGISTRY.values():
        p = profile_for(desc)
        assert p.min[0] == 1 and p.max[0] == desc.serving.max_batch_size
        assert all(lo <= opt <= hi for lo, opt, hi in zip(p.min, p.opt, p.max))
        assert p.min[-3] >= desc.network.min_size and p.min[-1] == 3
        if desc.window:
            assert p.min[1] == p.max[1] == desc.window
