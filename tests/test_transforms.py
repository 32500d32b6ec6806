"""Transforms pi: exact inverses, image/mask alignment, and what equivariance looks like."""

import pytest
import torch
import torch.nn.functional as F

from mixseg_lite import InputError
from mixseg_lite.transforms import KINDS, RANDOM_KINDS, Transform, sample_transform

EXACT = [Transform("identity"), Transform("hflip"), Transform("vflip"),
         Transform("rot90", k=1), Transform("rot90", k=2), Transform("rot90", k=3)]
ALL = EXACT + [Transform("translate", shift=(0.25, -0.1)), Transform("rescale", scale=1.25),
               Transform("rescale", scale=0.75)]


def _blob(size=32, centre=(10.0, 20.0), radius=5.0):
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    return torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * radius ** 2))[None, None]


def _centroid(m):
    m = m[0, 0].float()
    yy, xx = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
    return torch.stack([(yy * m).sum() / m.sum(), (xx * m).sum() / m.sum()])


@pytest.mark.parametrize("t", EXACT, ids=str)
def test_exact_inverse(t):
    x = torch.randn(2, 3, 16, 16)
    assert t.exact
    assert torch.equal(t.inverse().apply(t.apply(x)), x)
    assert t.apply(x).shape == x.shape


def test_rot90_moves_a_pixel_counter_clockwise():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 1, 6] = 1.0  # row 1, column 6 (top right)
    y = Transform("rot90", k=1).apply(x)
    assert y[0, 0, 1, 1] == 1.0  # a quarter turn counter-clockwise moves it to the top left


def test_translate_is_inverse_inside_the_frame_only():
    t = Transform("translate", shift=(0.25, -0.125))
    x = torch.randn(1, 2, 16, 16)
    y = t.apply(x)
    assert torch.equal(y[..., 4:, :14], x[..., :12, 2:])  # 4 rows down, 2 columns left
    assert (y[..., :4, :] == 0).all() and (y[..., :, 14:] == 0).all()
    back = t.inverse().apply(y)
    assert not t.exact
    assert torch.equal(back[..., :12, 2:], x[..., :12, 2:])  # what stayed in the frame comes back
    assert (back[..., 12:, :] == 0).all() and (back[..., :, :2] == 0).all()  # the rest was lost
    assert t.valid_mask(16, 16).sum() == 12 * 14


def test_rescale_keeps_size_and_is_approximately_invertible():
    x = _blob(32, centre=(16, 16), radius=4)
    for scale in (0.8, 1.25):
        t = Transform("rescale", scale=scale)
        y = t.apply(x)
        assert y.shape == x.shape and not t.exact
        assert torch.allclose(t.inverse().apply(y), x, atol=0.05)
    # Zooming in enlarges the blob about the centre.
    assert (Transform("rescale", scale=1.5).apply(x) > 0.5).sum() > (x > 0.5).sum()


@pytest.mark.parametrize("t", ALL, ids=str)
def test_image_and_mask_stay_aligned(t):
    image = torch.cat([_blob(), 0.5 * _blob(centre=(24, 8))], dim=1)  # (1, 2, 32, 32) float
    mask = (image[:, :1] > 0.5).long()  # integer mask of the first channel
    image_t, mask_t = t.apply(image), t.apply(mask)
    assert mask_t.dtype == torch.long and set(mask_t.unique().tolist()) <= {0, 1}
    if t.kind == "rescale":
        # Bilinear image vs nearest-neighbour mask: the same place, up to a pixel.
        assert (_centroid(image_t[:, :1] > 0.5) - _centroid(mask_t)).abs().max() <= 1.0
    else:
        assert torch.equal(mask_t, (image_t[:, :1] > 0.5).long())


def _er(f, t, x):
    """Mean squared difference between pi(f(x)) and f(pi(x)) inside the valid frame."""
    valid = t.valid_mask(*x.shape[-2:])
    return float((((t.apply(f(x)) - f(t.apply(x))) ** 2) * valid).sum() / (valid.sum() * x.shape[1]))


def _symmetric_blur(x):
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    return F.conv2d(x, kernel[None, None].repeat(x.shape[1], 1, 1, 1), padding=1, groups=x.shape[1])


def _add_ramp(x):
    return x + torch.linspace(0, 1, x.shape[-1])  # depends on the column: not equivariant


@pytest.mark.parametrize("t", EXACT + [Transform("translate", shift=(0.25, -0.1))], ids=str)
def test_equivariant_functions_give_zero_er(t):
    x = torch.rand(2, 1, 32, 32)
    # A pointwise function with f(0) = 0 commutes with flips, rotations and zero-filled shifts.
    assert _er(torch.square, t, x) < 1e-12
    if t.exact:  # a symmetric kernel with zero padding commutes with the flips and rotations
        assert _er(_symmetric_blur, t, x) < 1e-12


@pytest.mark.parametrize("t", [Transform("hflip"), Transform("rot90", k=1), Transform("rescale", scale=1.25)],
                         ids=str)
def test_non_equivariant_function_gives_positive_er(t):
    # A smooth image, so that interpolation (rescale) hardly breaks the pointwise function.
    x = F.interpolate(torch.rand(2, 1, 8, 8), size=(32, 32), mode="bilinear", align_corners=False)
    assert _er(_add_ramp, t, x) > 1e-3
    assert _er(torch.square, t, x) < 0.1 * _er(_add_ramp, t, x)


def test_sample_transform_is_seeded_and_covers_kinds():
    draws = [sample_transform(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    g = torch.Generator().manual_seed(0)
    many = [sample_transform(g) for _ in range(300)]
    assert {t.kind for t in many} == set(RANDOM_KINDS)
    assert all(1 <= t.k <= 3 for t in many if t.kind == "rot90")
    assert all(max(abs(s) for s in t.shift) <= 0.3 for t in many if t.kind == "translate")
    assert all(0.7 <= t.scale <= 1.3 for t in many if t.kind == "rescale")
    only = {sample_transform(g, kinds=("hflip",)).kind for _ in range(5)}
    assert only == {"hflip"}


def test_bad_input():
    with pytest.raises(InputError, match="unknown transform kind"):
        Transform("shear")
    with pytest.raises(InputError, match="square"):
        Transform("rot90", k=1).apply(torch.zeros(1, 1, 8, 6))
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        Transform("hflip").apply(torch.zeros(8, 8))
    with pytest.raises(InputError, match="kinds"):
        sample_transform(torch.Generator(), kinds=("zoom",))
    assert set(RANDOM_KINDS) < set(KINDS)
