"""The experiments behind the measured sections of docs/*.md, each a module run on its own::

    python -m stylize.loadtest.experiments.soak              # docs/soak.md (and loadtest/results/soak/)
    python -m stylize.loadtest.experiments.tiling_bench      # docs/tiling.md
    python -m stylize.loadtest.experiments.video_bench PART  # docs/video.md (loadtest/results/video_bench/)
    python -m stylize.loadtest.experiments.openvino_startup  # docs/performance.md: start-up and the model cache
    python -m stylize.loadtest.experiments.server_memory     # docs/performance.md: memory
    python -m stylize.loadtest.experiments.step_runtime_ab   # docs/performance.md: layout of the image step
    python -m stylize.loadtest.experiments.version_check_cost # docs/performance.md: the step's version check

They read the built repository and write their reports where the docs expect them: paths are taken from the source
checkout (:data:`ROOT`), so they run from any folder of it.
"""

from __future__ import annotations

from pathlib import Path

from stylize.loadtest import project_root

# The source checkout (pyproject.toml, loadtest/, docs/, model_repository/); outside one, the current folder.
ROOT: Path = project_root() or Path.cwd()

__all__ = ["ROOT"]
