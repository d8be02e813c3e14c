"""Weight import: ncnn .param/.bin pairs (``ncnn``) and PyTorch checkpoints (``loaders``) onto the networks of
``stylize_build.archs``. The error types live here so both importers share one hierarchy."""

from __future__ import annotations

__all__ = ["WeightsError", "WeightImportError", "CheckpointError"]


class WeightsError(Exception):
    """Weights could not be turned into a network that matches its descriptor."""


class WeightImportError(WeightsError):
    """An ncnn model pair is malformed or does not describe the expected architecture."""


class CheckpointError(WeightsError):
    """A PyTorch checkpoint cannot be read, or its keys/shapes do not match the network (strict loading)."""
