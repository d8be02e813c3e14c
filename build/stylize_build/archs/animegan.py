"""AnimeGANv2 generator, as in the PyTorch port bryandlee/animegan2-pytorch (``model.py``, MIT).

Module names and nesting follow the port so that its published plain state_dicts (``face_paint_512_v2.pt``,
``celeba_distill.pt``, ``paprika.pt``, ...) load with ``strict=True``: keys such as ``block_a.0.1.weight`` (block a,
first ConvNormLReLU, its Conv2d). 2,143,552 parameters. Input and output are RGB in [-1, 1], NCHW.

The two bilinear upsamplings are an architecture parameter, since the weights were trained with one of two
coordinate rules and the state_dict cannot tell which: ``"align_corners"`` (the port's, for the PyTorch-trained
checkpoints) or ``"tf_legacy"`` (TensorFlow's legacy ``ResizeBilinear``, which the original TensorFlow generator and
its TFLite conversions were trained with; see ``weights/tflite.py`` and docs/weights.md).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "AnimeGANv2Generator",
    "ConvNormLReLU",
    "InvertedResBlock",
    "PARAMETER_COUNT",
    "UPSAMPLE_MODES",
    "UpsampleMode",
    "resize_bilinear_tf_legacy",
]

PARAMETER_COUNT = 2_143_552

UpsampleMode = Literal["align_corners", "tf_legacy"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(UpsampleMode)


def resize_bilinear_tf_legacy(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of an NCHW tensor to ``size`` as TensorFlow's legacy ``ResizeBilinear`` does it
    (``align_corners=False, half_pixel_centers=False``; ONNX Resize's ``asymmetric`` coordinates): output index
    ``i`` reads input coordinate ``i * in / out``, the upper neighbour clamped to the last row/column.

    PyTorch has no such mode (its ``align_corners=False`` is half-pixel), but an identity gives it exactly:
    ``align_corners=True`` from ``in + 1`` to ``out + 1`` maps ``i`` to ``i * in / out``; the extra input row and
    column, replicated edge pixels, are TF's clamp; the extra output row and column are cropped. Why this form:
    it exports as Pad (edge) + the same Resize as the ``align_corners`` mode + Slice, which ONNX Runtime and
    TensorRT run natively; the same rule written as index arithmetic + Gathers ran 7x slower in ONNX Runtime.
    """
    h, w = size[0], size[1]
    padded = F.pad(x, (0, 1, 0, 1), mode="replicate")
    out = F.interpolate(padded, size=(h + 1, w + 1), mode="bilinear", align_corners=True)
    return out[:, :, :h, :w]


class ConvNormLReLU(nn.Sequential):
    """Reflection pad -> conv (no padding of its own) -> GroupNorm(1 group, affine) -> LeakyReLU(0.2).

    Indices inside the Sequential (0 pad, 1 conv, 2 norm, 3 act) are part of the checkpoint key names.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=0, groups=groups, bias=bias),
            nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2-style block: 1x1 expand, 3x3 depthwise, 1x1 project + GroupNorm; residual when shapes agree."""

    def __init__(self, in_ch: int, out_ch: int, *, expansion_ratio: float = 2) -> None:
        super().__init__()
        self.use_res_connect = in_ch == out_ch
        bottleneck = int(round(in_ch * expansion_ratio))
        layers: list[nn.Module] = []
        if expansion_ratio != 1:
            layers.append(ConvNormLReLU(in_ch, bottleneck, kernel_size=1, padding=0))
        layers.append(ConvNormLReLU(bottleneck, bottleneck, groups=bottleneck, bias=True))  # depthwise
        layers.append(nn.Conv2d(bottleneck, out_ch, kernel_size=1, padding=0, bias=False))  # pointwise
        layers.append(nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_res_connect else out


class AnimeGANv2Generator(nn.Module):
    """Encoder (two stride-2 stages), inverted residual trunk, two bilinear upsamplings, 1x1 conv + tanh.

    The upsamplings go to the *saved* sizes (half size after block_a, then the input size), so any input side
    works, odd ones included. ``upsample`` picks their coordinate rule: ``"align_corners"`` (default: the port's,
    ``F.interpolate(..., align_corners=True)``) or ``"tf_legacy"`` (:func:`resize_bilinear_tf_legacy`). It has no
    parameters: the state_dict is the same for both.
    """

    def __init__(self, *, upsample: UpsampleMode = "align_corners") -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.upsample = upsample
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(64, 128, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(128, 128),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256, expansion_ratio=2),
            InvertedResBlock(256, 256, expansion_ratio=2),
            InvertedResBlock(256, 256, expansion_ratio=2),
            InvertedResBlock(256, 256, expansion_ratio=2),
            ConvNormLReLU(256, 128),
        )
        self.block_d = nn.Sequential(
            ConvNormLReLU(128, 128),
            ConvNormLReLU(128, 128),
        )
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0, bias=False),
            nn.Tanh(),
        )

    def extra_repr(self) -> str:
        return f"upsample={self.upsample!r}"

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample == "tf_legacy":
            return resize_bilinear_tf_legacy(x, size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block_a(x)
        half_size = out.shape[-2:]
        out = self.block_b(out)
        out = self.block_c(out)
        out = self._resize(out, half_size)
        out = self.block_d(out)
        out = self._resize(out, x.shape[-2:])
        out = self.block_e(out)
        return self.out_layer(out)
