"""RRDBNet of ESRGAN / Real-ESRGAN, BasicSR flavour (``basicsr/archs/rrdbnet_arch.py``, Apache-2.0).

Key names are BasicSR's (``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``,
``conv_hr``, ``conv_last``); the original-ESRGAN names are translated by ``stylize_build.weights.loaders``.
Input and output are RGB in [0, 1], NCHW. Scale 4 upsamples twice by nearest x2 + conv; scales 2 and 1 first
pixel-unshuffle the input (as Real-ESRGAN x2plus does), which needs sides divisible by 2 (or 4).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RRDBNet", "RRDB", "ResidualDenseBlock"]


@torch.no_grad()
def scaled_kaiming_(modules: list[nn.Module], scale: float) -> None:
    """BasicSR's default_init_weights (kaiming normal, fan_in, times ``scale``; zero bias) in one draw per tensor.

    Residual branches start small so an untrained (seeded) network stays close to its skip connections instead of
    blowing up through 23 blocks.
    """
    for m in modules:
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, scale * math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output = conv5 * 0.2 + input."""

    def __init__(self, *, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        scaled_kaiming_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs, output = rdb3(rdb2(rdb1(x))) * 0.2 + x."""

    def __init__(self, *, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat=num_feat, num_grow_ch=num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    SCALES = (1, 2, 4)

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        if scale not in self.SCALES:
            raise ValueError(f"RRDBNet supports scales {self.SCALES}, not {scale}")
        self.scale = scale
        # x2 / x1 models see a pixel-unshuffled input (more channels, smaller sides) and still upsample x4 inside.
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat=num_feat, num_grow_ch=num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
