"""Spatial transforms pi of REFERENCE B, applied with identical parameters to images and maps.

The equivariance losses compare ``pi(M(x))`` (transform the class activation maps of the image)
with ``M(pi(x))`` (the maps of the transformed image); that only means something when the very
same ``pi`` acts on both, so a :class:`Transform` is a small frozen record of its parameters and
``apply`` is a pure function of them. One transform is drawn per batch with
:func:`sample_transform` from a ``torch.Generator``, so training stays reproducible.

Kinds:

=============  ============================================  ========================================
kind           parameters                                    inverse
=============  ============================================  ========================================
``identity``   none                                          exact
``hflip``      mirror left-right (last axis)                 exact (itself)
``vflip``      mirror top-bottom (second-last axis)          exact (itself)
``rot90``      ``k`` quarter turns counter-clockwise         exact (``-k``); needs ``H == W``
``translate``  ``shift = (dy, dx)``, fractions of H and W,   not exact: pixels shifted out of the
               rounded to whole pixels, zero fill            frame are lost (the inverse zero-fills)
``rescale``    ``scale`` about the centre, output the same   not exact: interpolation blurs, and
               size (crop when > 1, zero pad when < 1)       zooming in crops the border
=============  ============================================  ========================================

Whole-pixel shifts keep translation free of interpolation, so a mask and an image stay aligned
pixel for pixel. Rescaling interpolates bilinearly for floating tensors (images, maps) and by
nearest neighbour for integer or boolean tensors (label masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mixseg_lite.errors import InputError, check_choice

KINDS = ("identity", "hflip", "vflip", "rot90", "translate", "rescale")
RANDOM_KINDS = ("hflip", "vflip", "rot90", "translate", "rescale")
"""Kinds drawn by default by :func:`sample_transform` (REFERENCE B: flips, k*90 rotations,
translation up to 30 %, rescale)."""

EXACT_KINDS = ("identity", "hflip", "vflip", "rot90")


@dataclass(frozen=True)
class Transform:
    """One spatial transform with fixed parameters.

    Attributes:
        kind: one of :data:`KINDS`.
        k: quarter turns for ``rot90`` (counter-clockwise, as ``torch.rot90``).
        shift: ``(dy, dx)`` for ``translate``, as fractions of ``(H, W)``; positive moves content
            down / right.
        scale: zoom factor for ``rescale``; > 1 enlarges the content.
    """

    kind: str = "identity"
    k: int = 0
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self.kind, KINDS, "transform kind")
        if self.kind == "rescale" and not self.scale > 0:
            raise InputError(f"rescale factor must be positive, got {self.scale}")

    @property
    def exact(self) -> bool:
        """True when ``inverse().apply(apply(x)) == x`` holds exactly."""
        return self.kind in EXACT_KINDS

    def inverse(self) -> "Transform":
        """The transform undoing this one (exact for flips and rot90 only, see the module table)."""
        if self.kind == "rot90":
            return Transform("rot90", k=(-self.k) % 4)
        if self.kind == "translate":
            return Transform("translate", shift=(-self.shift[0], -self.shift[1]))
        if self.kind == "rescale":
            return Transform("rescale", scale=1.0 / self.scale)
        return self

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform ``x`` of shape ``(B, C, H, W)`` (any dtype); returns the same shape."""
        if x.ndim != 4:
            raise InputError(f"transform {self.kind}: expected (B, C, H, W), got shape {tuple(x.shape)}")
        if self.kind == "hflip":
            return x.flip(-1)
        if self.kind == "vflip":
            return x.flip(-2)
        if self.kind == "rot90":
            if x.shape[-1] != x.shape[-2]:
                raise InputError(f"rot90 needs square images to keep the shape, got {tuple(x.shape[-2:])}")
            return torch.rot90(x, self.k, dims=(-2, -1))
        if self.kind == "translate":
            return _translate(x, round(self.shift[0] * x.shape[-2]), round(self.shift[1] * x.shape[-1]))
        if self.kind == "rescale":
            return _rescale(x, self.scale)
        return x

    def valid_mask(self, height: int, width: int, device=None) -> torch.Tensor:
        """``(1, 1, H, W)`` float mask, 1 where ``apply`` shows image content and 0 in zero-filled
        borders; equivariance losses compare maps only there."""
        ones = torch.ones(1, 1, height, width, device=device)
        return (self.apply(ones) > 0.5).float()


def _translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift by whole pixels, filling uncovered pixels with zeros."""
    H, W = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= H or abs(dx) >= W:
        return out
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[..., max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def _rescale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Zoom about the centre by ``scale``; crop (zoom in) or zero-pad (zoom out) back to ``(H, W)``."""
    H, W = x.shape[-2:]
    h, w = max(1, round(H * scale)), max(1, round(W * scale))
    if (h, w) == (H, W):
        return x
    floating = x.is_floating_point()
    source = x if floating else x.float()
    if floating:
        resized = F.interpolate(source, size=(h, w), mode="bilinear", align_corners=False)
    else:
        resized = F.interpolate(source, size=(h, w), mode="nearest")
    out = torch.zeros_like(source)
    # Centre the resized content in the output frame; crop whatever overhangs.
    top, left = (H - h) // 2, (W - w) // 2
    src_top, src_left = max(-top, 0), max(-left, 0)
    dst_top, dst_left = max(top, 0), max(left, 0)
    rows, cols = min(h - src_top, H - dst_top), min(w - src_left, W - dst_left)
    out[..., dst_top:dst_top + rows, dst_left:dst_left + cols] = \
        resized[..., src_top:src_top + rows, src_left:src_left + cols]
    return out if floating else out.to(x.dtype)


def sample_transform(generator: torch.Generator, kinds=RANDOM_KINDS, max_shift: float = 0.3,
                     scale_range: tuple[float, float] = (0.7, 1.3)) -> Transform:
    """Draw one transform: a kind uniformly from ``kinds``, then its parameters.

    Args:
        generator: CPU ``torch.Generator``; the draw depends on it only.
        kinds: kinds to choose from (subset of :data:`KINDS`).
        max_shift: largest translation as a fraction of the image side (REFERENCE B: 30 %);
            ``dy`` and ``dx`` are drawn independently from ``[-max_shift, max_shift]``.
        scale_range: ``(low, high)`` of the rescale factor, drawn uniformly (our choice; the
            paper does not give it).

    ``rot90`` draws ``k`` from {1, 2, 3} so the transform is never the identity.
    """
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise InputError(f"transform kinds {kinds} must be a non-empty subset of {KINDS}")
    if not 0.0 <= max_shift < 1.0:
        raise InputError(f"max_shift {max_shift} must be in [0, 1)")
    if not 0.0 < scale_range[0] <= scale_range[1]:
        raise InputError(f"scale_range {scale_range} must be (low, high) with 0 < low <= high")
    u = torch.rand(3, generator=generator).tolist()  # always 3 draws, so the stream stays aligned
    kind = kinds[int(torch.randint(len(kinds), (1,), generator=generator))]
    if kind == "rot90":
        return Transform("rot90", k=1 + min(int(u[0] * 3), 2))
    if kind == "translate":
        return Transform("translate", shift=((2 * u[1] - 1) * max_shift, (2 * u[2] - 1) * max_shift))
    if kind == "rescale":
        return Transform("rescale", scale=scale_range[0] + u[0] * (scale_range[1] - scale_range[0]))
    return Transform(kind)
