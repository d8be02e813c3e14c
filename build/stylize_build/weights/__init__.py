"""Weight import: ncnn .param/.bin pairs (``ncnn``), AnimeGANv2 TFLite files (``tflite``) and PyTorch checkpoints
(``loaders``) onto the networks of ``stylize_build.archs``. The error types live here so all importers share one
hierarchy."""

from __future__ import annotations

__all__ = ["WeightsError", "WeightImportError", "CheckpointError"]


class WeightsError(Exception):
    """Weights could not be turned into a network that matches its descriptor."""


class WeightImportError(WeightsError):
    """An ncnn model pair or a TFLite file is malformed or does not describe the expected architecture."""


class CheckpointError(WeightsError):
    """A PyTorch checkpoint cannot be read, or its keys/shapes do not match the network (strict loading)."""
