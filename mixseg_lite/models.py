"""2-D UNets: a plain one, and the dual-branch one of mixed supervision (shared encoder, two decoders).

Shapes: input ``(B, C_in, H, W)`` with ``H`` and ``W`` divisible by ``2 ** (depth - 1)``;
output logits ``(B, num_classes, H, W)``. Level ``i`` has ``base_width * 2**i`` channels, so
``depth=5, base_width=64`` gives the 64..1024 widths of the original UNet and of the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from mixseg_lite.errors import InputError

NORMS = ("batch", "instance", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise InputError(f"unknown normalisation {kind!r}; choose one of {NORMS}")


class ConvBlock(nn.Sequential):
    """(3x3 conv -> norm -> ReLU) twice."""

    def __init__(self, in_ch: int, out_ch: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias), _norm(norm, out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias), _norm(norm, out_ch), nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """Contracting path; returns the feature map of every level, finest first."""

    def __init__(self, in_channels: int, widths: list[int], norm: str):
        super().__init__()
        chans = [in_channels] + widths
        self.blocks = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], norm) for i in range(len(widths)))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            features.append(x)
        return features


class Decoder(nn.Module):
    """Expanding path with skip connections, ending in a 1x1 conv to class logits."""

    def __init__(self, widths: list[int], num_classes: int, norm: str, head_bias: bool = True):
        super().__init__()
        rev = widths[::-1]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(rev[i], rev[i + 1], 2, stride=2) for i in range(len(rev) - 1))
        self.blocks = nn.ModuleList(ConvBlock(2 * rev[i + 1], rev[i + 1], norm) for i in range(len(rev) - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 1, bias=head_bias)

    def features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The last feature map before the 1x1 head, ``(B, widths[0], H, W)``."""
        x = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(features[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return x

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(features))


def _widths(base_width: int, depth: int) -> list[int]:
    if depth < 1 or base_width < 1:
        raise InputError(f"UNet needs depth >= 1 and base_width >= 1, got depth={depth}, base_width={base_width}")
    return [base_width * 2**i for i in range(depth)]


def _check_input(x: torch.Tensor, in_channels: int, depth: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise InputError(f"expected a batch (B, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InputError("empty batch: nothing to segment")
    factor = 2 ** (depth - 1)
    if x.shape[-1] % factor or x.shape[-2] % factor:
        raise InputError(f"image size {tuple(x.shape[-2:])} must be divisible by {factor} for depth {depth}")


class UNet(nn.Module):
    """Plain 2-D UNet: ``forward(x: (B, C_in, H, W)) -> logits (B, num_classes, H, W)``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_width: int = 16, depth: int = 4,
                 norm: str = "batch", head_bias: bool = True):
        super().__init__()
        widths = _widths(base_width, depth)
        self.in_channels, self.depth = in_channels, depth
        self.encoder = Encoder(in_channels, widths, norm)
        self.decoder = Decoder(widths, num_classes, norm, head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, self.depth)
        return self.decoder(self.encoder(x))


class DualBranchUNet(nn.Module):
    """One shared encoder, a teacher decoder and a student decoder (mixed supervision, REFERENCE A).

    ``forward(x: (B, C_in, H, W)) -> (teacher_logits, student_logits)``, each ``(B, num_classes, H, W)``.
    The teacher decoder learns from full masks only; the student from weak labels, the teacher's
    (detached) predictions and its own entropy. Both share every encoder weight.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_width: int = 16, depth: int = 4,
                 norm: str = "batch"):
        super().__init__()
        widths = _widths(base_width, depth)
        self.in_channels, self.depth = in_channels, depth
        self.encoder = Encoder(in_channels, widths, norm)
        self.teacher = Decoder(widths, num_classes, norm)
        self.student = Decoder(widths, num_classes, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_input(x, self.in_channels, self.depth)
        features = self.encoder(x)
        return self.teacher(features), self.student(features)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher branch only (skips the student decoder when it is not being trained)."""
        _check_input(x, self.in_channels, self.depth)
        return self.teacher(self.encoder(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
