"""The side-by-side experiment behind the CPU step's net_runtime: its variant repositories say what they claim."""

from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from stylize.descriptors import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: loadtest/ is not installed
from loadtest.step_runtime_ab import VARIANTS  # noqa: E402
from stylize_build.bench import layout_repository  # noqa: E402


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_variant_repositories_rewrite_only_the_step_runtime_and_layouts(model_repository, tmp_path):
    desc = REGISTRY["animevideo_x4"]
    for name, (runtime, inst, thr, net_layout) in VARIANTS.items():
        repo = layout_repository(model_repository, tmp_path / name.replace(" ", "_"), desc, instances=inst,
                                 threads=thr, net_runtime=runtime, net_layout=net_layout)
        step = _config(repo / desc.image_model / "config.pbtxt")
        assert step.parameters["net_runtime"].string_value == runtime
        assert (step.instance_group[0].count, int(step.parameters["net_threads"].string_value)) == (inst, thr)
        net = _config(repo / desc.net_model / "config.pbtxt")
        if net_layout:
            assert (net.instance_group[0].count, int(net.parameters["intra_op_thread_count"].string_value)) \
                == net_layout
        else:  # untouched: the built config, a symlink to the repository's file
            assert (repo / desc.net_model / "config.pbtxt").resolve() \
                == (model_repository / desc.net_model / "config.pbtxt").resolve()
        assert (repo / desc.id / "config.pbtxt").resolve() == (model_repository / desc.id / "config.pbtxt").resolve()
        assert (repo / desc.net_model / "1" / "model.onnx").is_file()


def test_memory_mirror_rewrites_only_the_image_steps_for_bls(model_repository, tmp_path):
    from loadtest.server_memory import mirror

    repo = mirror(model_repository, tmp_path / "bls", bls=True)
    desc = REGISTRY["animevideo_x2"]
    assert not any("_int8" in p.name for p in repo.iterdir())
    assert _config(repo / desc.image_model / "config.pbtxt").parameters["net_runtime"].string_value == "triton"
    assert (repo / desc.net_model).is_symlink() and (repo / desc.id).is_symlink()
    built = mirror(model_repository, tmp_path / "built", bls=False)
    assert _config(built / desc.image_model / "config.pbtxt").parameters["net_runtime"].string_value == "onnxruntime"
