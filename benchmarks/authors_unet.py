"""A plain re-implementation of the authors' network, for speed comparisons only (``make bench``).

The mixed-supervision script (REFERENCE A.1) trains the original UNet of Ronneberger et al. with a
second decoder: valid (unpadded) 3x3 convolutions, BatchNorm, ReLU, 2x2 max-pooling, widths
64..1024, transposed-convolution upsampling with the skip connections centre-cropped to fit. On a
256x256 slice the encoder shrinks to 8x8 and the decoders stop at 68x68; the logits are resized
bilinearly to 256x256. Our :class:`mixseg_lite.models.DualBranchUNet` pads every convolution and
decodes at full resolution, so it does about four times the arithmetic per step: the benchmark
compares FLOP throughput (GFLOP/s), not only milliseconds per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    """(valid 3x3 conv -> BatchNorm -> ReLU) twice: each conv trims one pixel per side."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(out_ch, out_ch, 3, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def _centre_crop(skip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    top, left = (skip.shape[-2] - size[0]) // 2, (skip.shape[-1] - size[1]) // 2
    return skip[..., top:top + size[0], left:left + size[1]]


class _Decoder(nn.Module):
    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        ups, blocks = [], []
        for i in range(len(widths) - 1, 0, -1):
            ups.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2))
            blocks.append(_block(2 * widths[i - 1], widths[i - 1]))
        self.ups, self.blocks = nn.ModuleList(ups), nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(features[:-1])):
            x = up(x)
            x = block(torch.cat([_centre_crop(skip, x.shape[-2:]), x], dim=1))
        return F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)


class AuthorsDualUNet(nn.Module):
    """``forward(x: (B, C_in, H, W)) -> (teacher_logits, student_logits)``, each ``(B, K, H, W)``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_width: int = 64, depth: int = 5):
        super().__init__()
        widths = [base_width * 2**i for i in range(depth)]
        chans = [in_channels, *widths]
        self.encoder = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.teacher, self.student = _Decoder(widths, num_classes), _Decoder(widths, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size, features = tuple(x.shape[-2:]), []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if i else x)
            features.append(x)
        return self.teacher(features, size), self.student(features, size)
