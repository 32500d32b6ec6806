"""HD95 against an independent brute-force reference of MONAI's definition.

MONAI's ``compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)`` takes as the
surface of a mask the voxels removed by scipy's ``binary_erosion`` with its default structure
(face connectivity) and ``border_value=0``; measures, for each surface voxel of one mask, the
Euclidean distance in mm to the nearest surface voxel of the other (``distance_transform_edt``
with ``sampling=spacing``); and returns the larger of the two directed 95th percentiles
(``torch.quantile``, linear interpolation).

The reference below uses neither morphology nor a distance transform: the surface is found by
looking at the ``2 * ndim`` face neighbours of every voxel, and distances are all pairwise
distances between the two surfaces. It only suits small arrays, which is all the tests need.
"""

import itertools

import numpy as np
import pytest

from mixseg_lite.metrics import hd95


def reference_surface(mask: np.ndarray, full_connectivity: bool = False) -> np.ndarray:
    """Mask voxels with a neighbour outside the mask or outside the array.

    Face neighbours only (MONAI), or all ``3**ndim - 1`` neighbours with ``full_connectivity``
    (the definition the package used before, kept to show that the cases below tell them apart).
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)  # outside the array is background
    if full_connectivity:
        offsets = [o for o in itertools.product((-1, 0, 1), repeat=mask.ndim) if any(o)]
    else:
        offsets = [tuple(sign if k == axis else 0 for k in range(mask.ndim))
                   for axis in range(mask.ndim) for sign in (-1, 1)]
    surface = np.zeros_like(mask)
    for offset in offsets:
        neighbour = padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))]
        surface |= mask & ~neighbour
    return surface


def reference_hd95(pred, target, spacing, full_connectivity: bool = False) -> float:
    """Brute-force HD95 in mm of two non-empty masks: all pairwise surface distances."""
    spacing = np.asarray(spacing, dtype=float)
    points_p = np.argwhere(reference_surface(pred, full_connectivity)) * spacing
    points_t = np.argwhere(reference_surface(target, full_connectivity)) * spacing
    distances = np.sqrt(((points_p[:, None, :] - points_t[None, :, :]) ** 2).sum(axis=-1))
    return float(max(np.percentile(distances.min(axis=1), 95),
                     np.percentile(distances.min(axis=0), 95)))


def random_blob(rng: np.random.Generator, shape) -> np.ndarray:
    """A union of random ellipsoids (some crossing the array border) with a few voxels flipped."""
    grid = np.indices(shape).astype(float)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        centre = rng.uniform(-1.0, np.asarray(shape, dtype=float))  # may sit on or off the border
        radii = rng.uniform(0.6, np.maximum(1.0, np.asarray(shape) / 2.5))
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
        mask |= inside
    flips = rng.random(shape) < 0.03
    return mask ^ flips


def special_masks_3d(shape=(7, 12, 12)) -> list[np.ndarray]:
    """Single voxels, thin lines and planes, diagonal staircases, masks filling the border."""
    masks = []
    single = np.zeros(shape, dtype=bool)
    single[3, 5, 6] = True
    masks.append(single)
    corner = np.zeros(shape, dtype=bool)
    corner[0, 0, 0] = True
    masks.append(corner)
    line = np.zeros(shape, dtype=bool)
    line[2, 4, 1:11] = True
    masks.append(line)
    plane = np.zeros(shape, dtype=bool)
    plane[:, 6, :] = True  # one voxel thick, touching four faces of the array
    masks.append(plane)
    diagonal = np.zeros(shape, dtype=bool)
    for k in range(min(shape)):
        diagonal[k, k, k] = True
    masks.append(diagonal)
    z, y, x = np.indices(shape)
    masks.append(y + x <= 9)  # staircase faces: face and full connectivity disagree there
    masks.append(np.abs(y - 6) + np.abs(x - 5) + np.abs(z - 3) <= 4)  # octahedron
    masks.append(np.ones(shape, dtype=bool))  # whole array: its surface is the array border
    hollow = np.ones(shape, dtype=bool)
    hollow[2:5, 3:9, 3:9] = False  # a cavity: its wall is surface too
    masks.append(hollow)
    return masks


SPACINGS_3D = [(5.0, 1.5, 1.5), (1.0, 1.0, 1.0), (2.5, 0.7, 1.3)]


def random_cases_3d(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers((5, 8, 8), (9, 15, 15)))
        pred = random_blob(rng, shape)
        # Targets: an independent blob, or a perturbed copy of the prediction (the realistic case).
        target = random_blob(rng, shape) if i % 2 else pred ^ (rng.random(shape) < 0.08)
        if not pred.any() or not target.any():
            pred[0, 0, 0] = target[-1, -1, -1] = True
        cases.append((pred, target, SPACINGS_3D[i % len(SPACINGS_3D)]))
    return cases


def special_cases_3d():
    masks = special_masks_3d()
    rng = np.random.default_rng(1)
    cases = [(a, b, (5.0, 1.5, 1.5)) for a, b in itertools.combinations(masks, 2)]
    cases += [(m, random_blob(rng, m.shape), (2.5, 0.7, 1.3)) for m in masks]
    return cases


def random_cases_2d(n: int = 20, seed: int = 2):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers((8, 8), (24, 24)))
        pred = random_blob(rng, shape)
        target = random_blob(rng, shape) if i % 2 else pred ^ (rng.random(shape) < 0.1)
        if not pred.any() or not target.any():
            pred[0, 0] = target[-1, -1] = True
        spacing = ((1.0, 1.0), (2.0, 0.5), (0.8, 1.7))[i % 3]
        cases.append((pred, target, spacing))
    y, x = np.indices((12, 12))
    triangle, diamond = x + y <= 10, np.abs(y - 6) + np.abs(x - 5) <= 4
    single = np.zeros((12, 12), dtype=bool)
    single[11, 0] = True
    cases += [(triangle, diamond, (1.0, 1.0)), (diamond, single, (2.0, 0.5)),
              (np.ones((12, 12), dtype=bool), diamond, (1.0, 3.0)), (triangle, single, (1.0, 1.0))]
    return cases


@pytest.mark.parametrize("pred, target, spacing", random_cases_3d() + special_cases_3d())
def test_hd95_matches_brute_force_reference_3d(pred, target, spacing):
    expected = reference_hd95(pred, target, spacing)
    assert hd95(pred, target, spacing) == pytest.approx(expected, rel=0, abs=1e-9)
    assert hd95(target, pred, spacing) == pytest.approx(expected, rel=0, abs=1e-9)


@pytest.mark.parametrize("pred, target, spacing", random_cases_2d())
def test_hd95_matches_brute_force_reference_2d(pred, target, spacing):
    expected = reference_hd95(pred, target, spacing)
    assert hd95(pred, target, spacing) == pytest.approx(expected, rel=0, abs=1e-9)


def test_cases_tell_face_from_full_connectivity():
    # Guard on the test itself: the surface definition matters on these cases, so a return to
    # full connectivity (or any other surface) would fail the comparisons above.
    cases = random_cases_3d() + special_cases_3d()
    differs = [abs(reference_hd95(p, t, s) - reference_hd95(p, t, s, full_connectivity=True)) > 1e-6
               for p, t, s in cases]
    assert sum(differs) >= 15  # 21 of the 69 cases with these seeds


def test_reference_surface_by_hand():
    # A filled 3x3 square in a 5x5 array: its 8 ring pixels are surface either way. A plus sign:
    # the centre has all 4 face neighbours inside (interior), but its diagonal ones are outside.
    square = np.zeros((5, 5), dtype=bool)
    square[1:4, 1:4] = True
    ring = square.copy()
    ring[2, 2] = False
    assert (reference_surface(square) == ring).all()
    plus = np.zeros((5, 5), dtype=bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    arms = plus.copy()
    arms[2, 2] = False
    assert (reference_surface(plus) == arms).all()
    assert (reference_surface(plus, full_connectivity=True) == plus).all()
    # On the array border, the outside of the array counts as background.
    border = np.ones((3, 3), dtype=bool)
    border[1, 1] = False
    assert (reference_surface(np.ones((3, 3), dtype=bool)) == border).all()


def test_hd95_two_single_voxels_by_hand():
    # Each single voxel is its own surface, so HD95 is the distance between their centres:
    # 3 slices of 5 mm and 2 rows of 1.5 mm apart -> sqrt(15^2 + 3^2) mm.
    spacing = (5.0, 1.5, 1.5)
    pred = np.zeros((6, 8, 8), dtype=bool)
    target = np.zeros((6, 8, 8), dtype=bool)
    pred[1, 2, 3] = True
    target[4, 0, 3] = True
    assert hd95(pred, target, spacing) == pytest.approx(np.sqrt(234.0), rel=0, abs=1e-12)
    assert reference_hd95(pred, target, spacing) == pytest.approx(np.sqrt(234.0), rel=0, abs=1e-12)
