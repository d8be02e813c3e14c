"""The networks, one module each, and an explicit registry keyed by the descriptors' ``network.arch`` strings.

Spandrel-style: the state_dict is the config. ``detect_arch`` names the architecture from its keys and
``infer_arch_params`` derives the constructor arguments from tensor shapes, so a checkpoint can be checked against
a descriptor before any loading happens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .animegan import AnimeGANv2Generator
from .basicvsr import BasicVSR
from .rrdbnet import RRDBNet
from .srvgg import SRVGGNetCompact

if TYPE_CHECKING:
    from stylize.contract.descriptors import ModelDescriptor

__all__ = [
    "ArchSpec",
    "ArchRegistry",
    "ArchDetectionError",
    "REGISTRY",
    "build_network",
    "detect_arch",
    "infer_arch_params",
    "AnimeGANv2Generator",
    "RRDBNet",
    "SRVGGNetCompact",
    "BasicVSR",
]

StateDict = Mapping[str, torch.Tensor]


class ArchDetectionError(ValueError):
    """A state_dict matches no registered architecture, or its hyperparameters cannot be derived."""


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its constructor, how to recognise its state_dict, and how to read its hyperparameters.

    Calling the spec constructs the network: ``REGISTRY["RRDBNet"](num_block=6)``.
    """

    name: str
    factory: Callable[..., nn.Module]
    detect: Callable[[StateDict], bool]
    infer_params: Callable[[StateDict], dict[str, Any]]

    def __call__(self, **params: Any) -> nn.Module:
        return self.factory(**params)


class ArchRegistry(Mapping[str, ArchSpec]):
    """Explicit registry; refuses a second registration under the same name."""

    def __init__(self) -> None:
        self._specs: dict[str, ArchSpec] = {}

    def register(self, spec: ArchSpec) -> ArchSpec:
        if spec.name in self._specs:
            raise ValueError(f"architecture {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> ArchSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"unknown architecture {name!r}; known: {', '.join(self._specs)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


# ---- key-based detection and shape-based hyperparameters ------------------------------------------------------


def _indices(state: StateDict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.fullmatch(k))})


def _require(state: StateDict, *keys: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ArchDetectionError(f"state_dict lacks {missing}")


def _is_animegan(state: StateDict) -> bool:
    return "block_a.0.1.weight" in state and "out_layer.0.weight" in state


def _animegan_params(state: StateDict) -> dict[str, Any]:
    _require(state, "block_a.0.1.weight", "out_layer.0.weight")
    # Fixed layers. ``upsample`` has no tensor, so a state_dict cannot show it: a plain checkpoint gets the
    # descriptor's (the port's align_corners); the TFLite importer reads it from the file's resize ops.
    return {}


def _is_rrdbnet(state: StateDict) -> bool:
    return "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state and "conv_up1.weight" in state


def _rrdbnet_params(state: StateDict) -> dict[str, Any]:
    _require(state, "conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight")
    num_out_ch = state["conv_last.weight"].shape[0]
    first_in = state["conv_first.weight"].shape[1]
    # x2 / x1 models pixel-unshuffle the input: conv_first sees 4x / 16x the channels (input channels == output's).
    unshuffle = first_in / num_out_ch
    scale = {1.0: 4, 4.0: 2, 16.0: 1}.get(unshuffle)
    if scale is None:
        raise ArchDetectionError(f"RRDBNet: conv_first takes {first_in} channels for {num_out_ch} output channels")
    return {
        "num_in_ch": num_out_ch,
        "num_out_ch": num_out_ch,
        "scale": scale,
        "num_feat": state["conv_first.weight"].shape[0],
        "num_block": len(_indices(state, r"body\.(\d+)\.rdb1\.conv1\.weight")),
        "num_grow_ch": state["body.0.rdb1.conv1.weight"].shape[0],
    }


def _is_srvgg(state: StateDict) -> bool:
    return "body.0.weight" in state and "body.0.bias" in state and "conv_first.weight" not in state


def _srvgg_params(state: StateDict) -> dict[str, Any]:
    _require(state, "body.0.weight")
    convs = [i for i in _indices(state, r"body\.(\d+)\.weight") if state[f"body.{i}.weight"].dim() == 4]
    last = state[f"body.{convs[-1]}.weight"]
    num_in_ch = state["body.0.weight"].shape[1]
    upscale = math.isqrt(last.shape[0] // num_in_ch)
    if upscale * upscale * num_in_ch != last.shape[0]:
        raise ArchDetectionError(f"SRVGGNetCompact: last conv has {last.shape[0]} outputs for {num_in_ch} channels")
    if "body.1.weight" not in state:
        # ReLU and LeakyReLU have no parameters: the checkpoint cannot tell them apart.
        raise ArchDetectionError("SRVGGNetCompact without PReLU weights: activation type is ambiguous")
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": num_in_ch,
        "num_feat": state["body.0.weight"].shape[0],
        "num_conv": len(convs) - 2,
        "upscale": upscale,
        "act_type": "prelu",
    }


def _is_basicvsr(state: StateDict) -> bool:
    return (
        "spynet.basic_module.0.basic_module.0.weight" in state
        and "backward_trunk.main.0.weight" in state
        and "fusion.weight" in state
    )


def _basicvsr_params(state: StateDict) -> dict[str, Any]:
    _require(state, "fusion.weight", "backward_trunk.main.0.weight")
    return {
        "num_feat": state["fusion.weight"].shape[0],
        "num_block": len(_indices(state, r"backward_trunk\.main\.2\.(\d+)\.conv1\.weight")),
    }


REGISTRY = ArchRegistry()
REGISTRY.register(ArchSpec("AnimeGANv2", AnimeGANv2Generator, _is_animegan, _animegan_params))
REGISTRY.register(ArchSpec("RRDBNet", RRDBNet, _is_rrdbnet, _rrdbnet_params))
REGISTRY.register(ArchSpec("SRVGGNetCompact", SRVGGNetCompact, _is_srvgg, _srvgg_params))
REGISTRY.register(ArchSpec("BasicVSR", BasicVSR, _is_basicvsr, _basicvsr_params))


def detect_arch(state_dict: StateDict) -> str:
    """The registered architecture whose keys ``state_dict`` has; exactly one must match."""
    hits = [name for name, spec in REGISTRY.items() if spec.detect(state_dict)]
    if len(hits) != 1:
        sample = ", ".join(list(state_dict)[:5])
        raise ArchDetectionError(f"state_dict matches {hits or 'no'} architecture(s) (first keys: {sample})")
    return hits[0]


def infer_arch_params(state_dict: StateDict, arch: str | None = None) -> dict[str, Any]:
    """Constructor keyword arguments read from tensor shapes (``arch`` defaults to ``detect_arch``)."""
    return REGISTRY[arch or detect_arch(state_dict)].infer_params(state_dict)


def build_network(desc: ModelDescriptor) -> nn.Module:
    """The descriptor's network with fresh (PyTorch/BasicSR default) weights, in eval mode."""
    net = REGISTRY[desc.network.arch](**dict(desc.network.params))
    return net.eval()
