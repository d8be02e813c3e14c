"""The side-by-side experiment behind the CPU step's net_runtime: its variant repositories say what they claim."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from stylize.contract.descriptors import REGISTRY
from stylize.contract.step import IN_PROCESS_RUNTIMES
from stylize.loadtest.experiments.step_runtime_ab import VARIANTS
from tritonclient.grpc import model_config_pb2 as mc


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_variant_repositories_rewrite_only_the_step_runtime_and_layouts(model_repository, tmp_path):
    """Each variant of the experiment is an ensemble of its own in one repository: its step says the runtime and
    layout it claims, a BLS variant has its own network model (versions linked, not copied) in that layout."""
    from stylize.loadtest.bench import add_variant
    from stylize.loadtest.experiments.step_runtime_ab import variants

    desc = REGISTRY["animevideo_x4"]
    for runtime in VARIANTS:
        repo = tmp_path / runtime
        for i, (name, variant) in enumerate(variants(runtime, "fp32", int8=False).items()):
            ensemble = add_variant(model_repository, repo, desc, f"v{i}", variant)
            step = _config(repo / f"{ensemble}_image" / "config.pbtxt")
            assert step.parameters["net_runtime"].string_value == variant.net_runtime
            assert (step.instance_group[0].count, int(step.parameters["net_threads"].string_value)) == (
                variant.instances,
                variant.threads,
            )
            ens = _config(repo / ensemble / "config.pbtxt")
            assert [s.model_name for s in ens.ensemble_scheduling.step][-1] == f"{ensemble}_cached"
            cached = _config(repo / f"{ensemble}_cached" / "config.pbtxt")  # the nested, cached ensemble
            assert [s.model_name for s in cached.ensemble_scheduling.step] == [f"{ensemble}_image"]
            if variant.net_layout:
                net = _config(repo / f"{ensemble}_net" / "config.pbtxt")
                assert net.backend == runtime and net.instance_group[0].count == variant.net_layout[0]
                assert step.parameters["net_model"].string_value == f"{ensemble}_net"
                assert (repo / f"{ensemble}_net" / "1").is_symlink()
            else:  # the built network, linked
                assert step.parameters["net_model"].string_value == desc.net_model
        assert (repo / desc.net_model).resolve() == (model_repository / desc.net_model).resolve()
        assert (repo / desc.net_model / "1" / "model.onnx").is_file()


def test_memory_mirror_rewrites_only_the_image_steps_for_bls(model_repository, tmp_path):
    from stylize.loadtest.experiments.server_memory import mirror

    repo = mirror(model_repository, tmp_path / "bls", bls=True)
    desc = REGISTRY["animevideo_x2"]
    assert not any("_int8" in p.name for p in repo.iterdir())
    assert _config(repo / desc.image_model / "config.pbtxt").parameters["net_runtime"].string_value == "triton"
    assert (repo / desc.net_model).is_symlink() and (repo / desc.id).is_symlink()
    built = mirror(model_repository, tmp_path / "built", bls=False)
    assert (
        _config(built / desc.image_model / "config.pbtxt").parameters["net_runtime"].string_value in IN_PROCESS_RUNTIMES
    )
