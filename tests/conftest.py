"""Session fixtures: the built model repository and one real tritonserver serving it.

`make test` builds model_repository/ before pytest runs (idempotent); the fixture builds what is missing otherwise.
STYLIZE_TEST_REPOSITORY points the suite at another built repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from stylize.contract.descriptors import MODELS

ROOT = Path(__file__).resolve().parents[1]


def _is_built(repo: Path) -> bool:
    return all((repo / name / "config.pbtxt").is_file() for d in MODELS for name in d.triton_models)


@pytest.fixture(scope="session")
def model_repository() -> Path:
    repo = Path(os.environ.get("STYLIZE_TEST_REPOSITORY", ROOT / "model_repository"))
    if not _is_built(repo):
        from stylize_build.repository import BuildSettings, build_repository
        from stylize_build.weights.sources import default_weights_dir

        build_repository(MODELS, BuildSettings(repository=repo, weights_dir=default_weights_dir()))
    return repo


@pytest.fixture(scope="session")
def server(model_repository):
    """A real tritonserver on free loopback ports, shared by the whole session."""
    from stylize.server.launcher import start_local

    with start_local(model_repository) as s:
        yield s
