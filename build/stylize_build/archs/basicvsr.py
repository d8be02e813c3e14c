"""BasicVSR (Chan et al., CVPR 2021) with SPyNet flow, BasicSR flavour (``basicsr/archs/basicvsr_arch.py``,
``spynet_arch.py``, ``arch_util.flow_warp``; Apache-2.0). Video x4 super-resolution.

Key names are BasicSR's (``spynet.basic_module.N.basic_module.M.weight``, ``spynet.mean``, ``spynet.std``,
``backward_trunk.main.0.weight``, ``backward_trunk.main.2.K.conv1.weight``, ``fusion``, ``upconv1``, ``upconv2``,
``conv_hr``, ``conv_last``). Input (B, T, 3, H, W) RGB in [0, 1]; output (B, T, 3, 4H, 4W).

Written to export to ONNX with dynamic H and W (and a fixed T: the frame loops unroll). Same numbers as BasicSR,
but no Python arithmetic on sizes that a tracer would freeze:
- SPyNet's resize to a multiple of 32 computes the target size with integer ops on the shape
  (``(h + 31) // 32 * 32``), and the flow rescale multiplies by ``w / w32`` computed the same way.
- BasicSR's pyramid pads an upsampled flow by one row/column when a level's side is odd. Inputs to the pyramid are
  multiples of 32, so every level is exactly twice the one above it and the only level that can be odd is the
  coarsest one, where the flow is all zeros (padding zeros with zeros). So the branch is dropped, not approximated.
- flow_warp's ``max(w - 1, 1)`` is taken on a tensor (the last value of the ``arange``), not on a Python int.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .rrdbnet import scaled_kaiming_

__all__ = ["BasicVSR", "SpyNet", "ConvResidualBlocks", "ResidualBlockNoBN", "flow_warp"]

SPYNET_LEVELS = 6
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def flow_warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    *,
    interp_mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Warp ``x`` (N, C, H, W) by ``flow`` (N, H, W, 2) given in pixels (x then y), as BasicSR's flow_warp."""
    gx = torch.arange(x.shape[3], dtype=x.dtype, device=x.device)
    gy = torch.arange(x.shape[2], dtype=x.dtype, device=x.device)
    # max(side - 1, 1) as tensors: the last grid value is side - 1.
    den_x = gx[-1:].clamp(min=1.0)
    den_y = gy[-1:].clamp(min=1.0)
    vx = 2.0 * (gx.view(1, 1, -1) + flow[..., 0]) / den_x - 1.0
    vy = 2.0 * (gy.view(1, -1, 1) + flow[..., 1]) / den_y - 1.0
    grid = torch.stack((vx, vy), dim=3)
    return F.grid_sample(x, grid, mode=interp_mode, padding_mode=padding_mode, align_corners=align_corners)


class _SpyBasicModule(nn.Module):
    """One pyramid level: five 7x7 convs on [ref, warped supp, flow] (8 channels) predicting a flow residual."""

    def __init__(self) -> None:
        super().__init__()
        chans = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
            layers.append(nn.Conv2d(cin, cout, kernel_size=7, stride=1, padding=3))
            if i < len(chans) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SPyNet optical flow (Ranjan & Black), 6 levels; ``forward(ref, supp)`` -> flow (N, 2, H, W) in pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(_SpyBasicModule() for _ in range(SPYNET_LEVELS))
        # Persistent, as in BasicSR, so the checkpoint keys spynet.mean / spynet.std exist.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _process(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            refs.insert(0, F.avg_pool2d(refs[0], kernel_size=2, stride=2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], kernel_size=2, stride=2, count_include_pad=False))

        flow = torch.zeros_like(refs[0][:, :2])
        for level in range(SPYNET_LEVELS):
            if level == 0:
                up = flow  # BasicSR upsamples and replicate-pads a zero flow here: still zeros
            else:
                # Sides double exactly (see module docstring), so size= equals BasicSR's scale_factor=2.
                up = F.interpolate(flow, size=refs[level].shape[-2:], mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), interp_mode="bilinear", padding_mode="border")
            flow = self.basic_module[level](torch.cat([refs[level], warped, up], 1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        h32 = (h + 31) // 32 * 32
        w32 = (w + 31) // 32 * 32
        ref = F.interpolate(ref, size=(h32, w32), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h32, w32), mode="bilinear", align_corners=False)
        flow = F.interpolate(self._process(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([flow[:, :1] * (w / w32), flow[:, 1:] * (h / h32)], dim=1)


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with identity skip (res_scale 1), BasicSR init (kaiming x 0.1)."""

    def __init__(self, *, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        scaled_kaiming_([self.conv1, self.conv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class ConvResidualBlocks(nn.Module):
    def __init__(self, *, num_in_ch: int, num_out_ch: int, num_block: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(num_in_ch, num_out_ch, 3, 1, 1, bias=True),
            nn.LeakyReLU(negative_slope=0.1, inplace=True),
            nn.Sequential(*(ResidualBlockNoBN(num_feat=num_out_ch) for _ in range(num_block))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class BasicVSR(nn.Module):
    """Bidirectional recurrent propagation with SPyNet alignment; x4 only (as BasicSR)."""

    scale = 4

    def __init__(self, *, num_feat: int = 64, num_block: int = 15) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.backward_trunk = ConvResidualBlocks(num_in_ch=num_feat + 3, num_out_ch=num_feat, num_block=num_block)
        self.forward_trunk = ConvResidualBlocks(num_in_ch=num_feat + 3, num_out_ch=num_feat, num_block=num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0, bias=True)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1, bias=True)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1, bias=True)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

    def _flows(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x_1 = x[:, :-1].flatten(0, 1)
        x_2 = x[:, 1:].flatten(0, 1)
        flows_backward = self.spynet(x_1, x_2).unflatten(0, (-1, n - 1))
        flows_forward = self.spynet(x_2, x_1).unflatten(0, (-1, n - 1))
        return flows_forward, flows_backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"BasicVSR expects (B, T, 3, H, W), got {tuple(x.shape)}")
        # unbind gives a Python list even under the TorchScript tracer (where x.shape[1] is a traced tensor), so the
        # frame loops unroll without tracer warnings: the window T is fixed per exported graph.
        frames = x.unbind(1)
        n = len(frames)
        flows_forward, flows_backward = self._flows(x, n)

        outs: list[torch.Tensor] = []
        feat_prop = torch.zeros_like(frames[0][:, :1]).expand(-1, self.num_feat, -1, -1)
        for i in range(n - 1, -1, -1):
            if i < n - 1:
                feat_prop = flow_warp(feat_prop, flows_backward[:, i].permute(0, 2, 3, 1))
            feat_prop = self.backward_trunk(torch.cat([frames[i], feat_prop], dim=1))
            outs.insert(0, feat_prop)

        feat_prop = torch.zeros_like(feat_prop)
        for i in range(n):
            x_i = frames[i]
            if i > 0:
                feat_prop = flow_warp(feat_prop, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            feat_prop = self.forward_trunk(torch.cat([x_i, feat_prop], dim=1))

            out = self.lrelu(self.fusion(torch.cat([outs[i], feat_prop], dim=1)))
            out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
            outs[i] = out + F.interpolate(x_i, scale_factor=4, mode="bilinear", align_corners=False)
        return torch.stack(outs, dim=1)
