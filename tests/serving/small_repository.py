"""A small repository for a test's own server: some models as the build writes them *now* (configs from the config
writer, python steps from the source tree), around symlinks of the built networks. A server on it starts in seconds,
and what it serves does not depend on when model_repository/ was last built."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable

from stylize.contract.descriptors import REGISTRY, REQUEST_CHECK_MODEL
from stylize.contract.step import Limits


def step_source(step: str) -> bytes:
    return resources.files("stylize.server.triton_models").joinpath(step, "model.py").read_bytes()


def small_repository(
    model_repository: Path, repo: Path, model_ids: Iterable[str], *, limits: Limits = Limits()
) -> Path:
    from stylize_build import pbtxt

    repo.mkdir(parents=True, exist_ok=True)
    for model_id in model_ids:
        desc = REGISTRY[model_id]
        (repo / desc.net_model).symlink_to((model_repository / desc.net_model).resolve(), target_is_directory=True)
        (repo / desc.id / "1").mkdir(parents=True)
        (repo / desc.id / "config.pbtxt").write_text(pbtxt.ensemble_config(desc, weights_status="real"))
        if desc.window:
            continue
        (repo / desc.image_model / "1").mkdir(parents=True)
        (repo / desc.image_model / "config.pbtxt").write_text(
            pbtxt.image_config(desc, weights_status="real", limits=limits)
        )
        (repo / desc.image_model / "1" / "model.py").write_bytes(step_source("image"))
        (repo / desc.cached_model / "1").mkdir(parents=True)
        (repo / desc.cached_model / "config.pbtxt").write_text(
            pbtxt.cached_config(desc, name=desc.cached_model, image_model=desc.image_model, weights_status="real")
        )
        if not (repo / REQUEST_CHECK_MODEL).exists():
            (repo / REQUEST_CHECK_MODEL / "1").mkdir(parents=True)
            (repo / REQUEST_CHECK_MODEL / "config.pbtxt").write_text(pbtxt.request_check_config())
            (repo / REQUEST_CHECK_MODEL / "1" / "model.py").write_bytes(step_source("request_check"))
    return repo
