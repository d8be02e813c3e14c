"""`stylize build --trt` routes a model to its TensorRT plan only once the plan exists.

TensorRT cannot run on any machine of this project, so the plan builder is replaced by a stand-in that reports one
plan built and one failed: what is checked is the repository the real ONNX build and the routing leave behind.
"""

from __future__ import annotations

import pytest
from stylize.contract.descriptors import REGISTRY

pytestmark = pytest.mark.export

BUILT, FAILED = REGISTRY["animevideo_x2"], REGISTRY["animevideo_x4"]


def test_a_failed_plan_leaves_its_model_on_cpu_and_the_built_one_is_routed(tmp_path, monkeypatch):
    from stylize.commands import build as build_command
    from stylize_build import tensorrt
    from stylize_build.repository import BuildSettings, build_repository

    settings = BuildSettings(repository=tmp_path / "repo")
    build_repository([BUILT, FAILED], settings)

    def plans(descs, settings, log):
        assert all("_trt" not in (settings.repository / d.id / "config.pbtxt").read_text() for d in descs), (
            "an ensemble was routed to a plan before the plans were built"
        )
        return tensorrt.PlanResults(built=[(BUILT.trt_model, 1)], failed={FAILED.id: "RuntimeError: parse failed"})

    monkeypatch.setattr(tensorrt, "build_plans", plans)
    failed = build_command._build_and_route_plans([BUILT, FAILED], settings)
    assert failed == {FAILED.id: "RuntimeError: parse failed"}
    repo = settings.repository
    assert f'model_name: "{BUILT.image_model}"' in (repo / BUILT.cached_model / "config.pbtxt").read_text()
    assert f'string_value: "{BUILT.trt_model}"' in (repo / BUILT.image_model / "config.pbtxt").read_text()
    for name in (FAILED.id, FAILED.image_model):  # still the CPU route
        assert FAILED.trt_model not in (repo / name / "config.pbtxt").read_text()
    assert f'string_value: "{FAILED.net_model}"' in (repo / FAILED.image_model / "config.pbtxt").read_text()
