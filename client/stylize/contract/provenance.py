"""Where a result came from: the commit of this checkout (the build writes it into every manifest, the benchmarks and
load tests into their reports)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(*, short: bool = False) -> str:
    """The commit of the source tree this package runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
