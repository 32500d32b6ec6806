"""Weak labels derived deterministically from a full mask and a seed (REFERENCE section A).

Every generator turns a full integer mask into a *weak mask* of the same shape and dtype int64,
where each pixel is either a class index or :data:`mixseg_lite.UNLABELLED` (255, ignored by the
partial losses). Weak labels never lie: wherever a weak mask carries a class, the full mask has
that same class. They only hide information, by leaving pixels unlabelled.

Kinds (:data:`WEAK_KINDS`), what each models, and what it says about background:

- ``seeds``: the paper's setting, a small blob deep inside each structure (the structure eroded
  10 times). Background is never labelled.
- ``scribbles``: an annotator drawing one stroke along the middle of each structure, and strokes
  in the background around the foreground.
- ``boxes``: an annotator drawing a tight box around each structure; everything outside every
  box is labelled background, the inside of boxes is unlabelled.
- ``points``: a few clicks per class (background included), optionally grown into small discs.
- ``full``: the full mask itself (upper bound, fully labelled images).

Image-level tags (which classes appear in a slice) come from :func:`image_tags`.

Structures are the connected components of one class, with 8-connectivity (the 3x3 full
structuring element of the erosion), so two pieces that touch only at a corner are one structure.
A useful consequence: pieces of one class never share a 3x3 neighbourhood, so 3x3 operations
(erosion, thinning) on a whole class act on each structure independently.

All generators work on 2-D ``(H, W)`` slices; :func:`make_weak_label` also takes ``(Z, H, W)``
volumes and processes them slice by slice, slice ``z`` with a seed derived from ``(seed, z)``.
"""

from __future__ import annotations

from collections import deque
from numbers import Integral, Real

import numpy as np
from scipy import ndimage

from mixseg_lite import UNLABELLED
from mixseg_lite.errors import InputError, check_choice, check_label_values

WEAK_KINDS = ("seeds", "scribbles", "boxes", "points", "full")
"""Names accepted by :func:`make_weak_label`."""

# Single source of the options each kind takes and their defaults; the public generators'
# signatures use the same defaults (tests keep the two in step).
_OPTION_DEFAULTS = {
    "seeds": {"iterations": 10},
    "scribbles": {"fraction": 0.5, "background_margin": 5},
    "boxes": {"inner_seed": False},
    "points": {"points_per_class": 5, "radius": 0},
    "full": {},
}

_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)


# --------------------------------------------------------------------------- public API


def make_weak_label(mask, kind: str, seed: int = 0, num_classes: int | None = None,
                    **options) -> np.ndarray:
    """Weak mask of ``kind`` derived from the full ``mask``.

    Args:
        mask: full integer mask ``(H, W)`` or ``(Z, H, W)`` with classes ``0..num_classes-1``
            (0 is background).
        kind: one of :data:`WEAK_KINDS`.
        seed: non-negative integer; for a 3-D mask slice ``z`` uses the seed
            ``SeedSequence([seed, z]).generate_state(1)[0]`` so slices differ but stay
            reproducible. Ignored by the deterministic kinds (``seeds``, ``boxes``, ``full``).
        num_classes: number of classes; defaults to ``mask.max() + 1``.
        **options: options of the kind's generator: ``iterations`` (seeds), ``fraction`` and
            ``background_margin`` (scribbles), ``inner_seed`` (boxes), ``points_per_class`` and
            ``radius`` (points); see :func:`eroded_seeds`, :func:`scribbles`, :func:`boxes`,
            :func:`random_points`.

    Returns:
        int64 array of ``mask``'s shape: a class index where labelled (always equal to
        ``mask`` there), :data:`mixseg_lite.UNLABELLED` elsewhere.

    Raises:
        InputError: unknown kind or option, bad option value or seed, mask not 2-D/3-D,
            label values outside ``0..num_classes-1``.
    """
    check_choice(kind, WEAK_KINDS, "weak kind", "make_weak_label")
    options = _checked_options(kind, options, "make_weak_label")
    seed = _checked_seed(seed, "make_weak_label")
    full = _checked_full_mask(mask, "make_weak_label", ndims=(2, 3), num_classes=num_classes)
    generate = _GENERATORS[kind]
    if full.ndim == 2:
        return generate(full, seed, **options)
    return np.stack([generate(full[z], _slice_seed(seed, z), **options) for z in range(full.shape[0])])


def eroded_seeds(mask, iterations: int = 10) -> np.ndarray:
    """Seed blobs deep inside each structure: the weak labels of the paper (REFERENCE A).

    Models an annotator who marks only pixels they are sure of, far from any boundary. For each
    foreground class and each of its 8-connected structures, the structure is eroded
    ``iterations`` times with a 3x3 full structuring element (pixels outside the image count as
    outside the structure); if that would make it vanish, it is eroded as many times as it
    survives (down to 0: a structure too thin to erode is kept whole). So every structure keeps
    at least one labelled pixel.

    Background is never labelled; a slice without foreground is all UNLABELLED. Deterministic.

    Args:
        mask: full integer mask ``(H, W)``, 0 is background.
        iterations: erosions per structure, ``>= 0``.

    Returns:
        int64 ``(H, W)``: the class on seed pixels, UNLABELLED elsewhere.
    """
    full = _checked_full_mask(mask, "eroded_seeds")
    return _eroded_seeds(full, 0, **_checked_options("seeds", {"iterations": iterations}, "eroded_seeds"))


def scribbles(mask, seed: int = 0, fraction: float = 0.5, background_margin: int = 5) -> np.ndarray:
    """One thin stroke along the middle of each structure, and strokes around the foreground.

    Models an annotator scribbling roughly along the centre line of each structure and once
    around the organ in the background.

    - Foreground: the medial ridge of each 8-connected structure is approximated by Zhang-Suen
      thinning (iterative removal of boundary pixels that keep the shape connected; scipy has no
      skeletonisation), a 1-pixel-wide centre line. A contiguous piece of it is kept: starting
      from a pixel drawn with ``seed``, the ``fraction`` of skeleton pixels closest along the
      skeleton (breadth-first). Structures too small to have a skeleton (e.g. 2x2) get their
      most interior pixel, so every structure carries a label.
    - Background: the contour of the foreground grown by ``background_margin`` pixels
      (Euclidean), i.e. a ring around all structures, each closed ring partially kept the same
      way. If the ring does not fit in the image, the background's own skeleton is used; on a
      slice without foreground, the image's medial line (central row, or central column for a
      tall image).

    Args:
        mask: full integer mask ``(H, W)``, 0 is background.
        seed: non-negative integer choosing where each stroke starts.
        fraction: share of each skeleton or ring kept, in ``(0, 1]``.
        background_margin: distance in pixels between the foreground and the background ring,
            ``>= 1``.

    Returns:
        int64 ``(H, W)``: the class on scribble pixels, UNLABELLED elsewhere.
    """
    full = _checked_full_mask(mask, "scribbles")
    options = {"fraction": fraction, "background_margin": background_margin}
    return _scribbles(full, _checked_seed(seed, "scribbles"), **_checked_options("scribbles", options, "scribbles"))


def boxes(mask, inner_seed: bool = False) -> np.ndarray:
    """Tight bounding boxes around each structure.

    Models box annotation. Convention: a box says "the object is somewhere in here", not which
    of its pixels, so pixels inside any foreground box are UNLABELLED, and pixels outside every
    box are labelled background (0), which is always true since every foreground pixel lies in
    its structure's box. Overlapping boxes simply stay unlabelled. A slice without foreground
    has no box and is labelled background everywhere. Deterministic.

    Args:
        mask: full integer mask ``(H, W)``, 0 is background.
        inner_seed: also label each box's central pixel with the box's class when that pixel
            belongs to the boxed structure (a "click in the middle"; skipped for shapes such as
            rings whose centre lies outside them).

    Returns:
        int64 ``(H, W)``: 0 outside the boxes, UNLABELLED inside, optionally a class at box
        centres.
    """
    full = _checked_full_mask(mask, "boxes")
    return _boxes(full, 0, **_checked_options("boxes", {"inner_seed": inner_seed}, "boxes"))


def random_points(mask, seed: int = 0, points_per_class: int = 5, radius: float = 0) -> np.ndarray:
    """A few random clicks per class, background included.

    Models point annotation. For each class present in the slice, ``points_per_class`` pixels
    (all of them when the class has fewer) are drawn uniformly without replacement with
    ``seed``. With ``radius > 0`` each click becomes a disc of that Euclidean radius, clipped to
    the clicked class's region so it never spills onto another class.

    Args:
        mask: full integer mask ``(H, W)``, 0 is background.
        seed: non-negative integer.
        points_per_class: clicks per class, ``>= 1``.
        radius: disc radius in pixels, ``>= 0`` (0: single pixels).

    Returns:
        int64 ``(H, W)``: the class on clicked pixels, UNLABELLED elsewhere.
    """
    full = _checked_full_mask(mask, "random_points")
    options = {"points_per_class": points_per_class, "radius": radius}
    return _random_points(full, _checked_seed(seed, "random_points"),
                          **_checked_options("points", options, "random_points"))


def image_tags(mask, num_classes: int) -> np.ndarray:
    """Image-level tags: which classes appear in a slice.

    Args:
        mask: full integer mask ``(H, W)`` or ``(Z, H, W)``.
        num_classes: number of classes ``C``.

    Returns:
        bool ``(C,)`` for a 2-D mask, ``(Z, C)`` for a 3-D one: True where class ``c`` has at
        least one pixel in the slice.
    """
    full = _checked_full_mask(mask, "image_tags", ndims=(2, 3), num_classes=num_classes)
    return np.stack([(full == c).any(axis=(-2, -1)) for c in range(num_classes)], axis=-1)


# --------------------------------------------------------------------------- generators
# Each takes an already validated int64 (H, W) mask, a seed and its kind's options.


def _eroded_seeds(mask: np.ndarray, seed: int, iterations: int) -> np.ndarray:
    weak = np.full(mask.shape, UNLABELLED, dtype=np.int64)
    for class_index, region, offset in _foreground_classes(mask):
        components, count = ndimage.label(region, structure=_EIGHT_CONNECTED)
        # Eroding k times with a 3x3 square removes exactly the pixels within chessboard
        # distance k of the outside, so one distance map gives every erosion depth at once and
        # "the most erosions a structure survives" is its deepest pixel's distance minus one.
        # The region carries a zero border, so the image edge counts as outside.
        depth = ndimage.distance_transform_cdt(region, metric="chessboard")
        deepest = np.asarray(ndimage.maximum(depth, components, np.arange(1, count + 1)), dtype=np.int64)
        erosions = np.minimum(iterations, deepest - 1)
        survives = region & (depth > np.concatenate([[0], erosions])[components])
        _paste(weak, survives, offset, class_index)
    return weak


def _scribbles(mask: np.ndarray, seed: int, fraction: float, background_margin: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weak = np.full(mask.shape, UNLABELLED, dtype=np.int64)
    for class_index, region, offset in _foreground_classes(mask):
        components, count = ndimage.label(region, structure=_EIGHT_CONNECTED)
        skeleton = _thin(region)
        interior = ndimage.distance_transform_edt(region)
        for component in range(1, count + 1):
            centre_line = skeleton & (components == component)
            if not centre_line.any():
                centre_line = np.zeros_like(region)
                centre_line[ndimage.maximum_position(interior, components, component)] = True
            _paste(weak, _contiguous_piece(centre_line, fraction, rng), offset, class_index)
    for ring in _background_rings(mask, background_margin):
        weak[_contiguous_piece(ring, fraction, rng)] = 0
    return weak


def _boxes(mask: np.ndarray, seed: int, inner_seed: bool) -> np.ndarray:
    weak = np.zeros(mask.shape, dtype=np.int64)
    centres = []
    for class_index, region, offset in _foreground_classes(mask):
        components, _ = ndimage.label(region, structure=_EIGHT_CONNECTED)
        for component, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
            box = (slice(rows.start + offset[0], rows.stop + offset[0]),
                   slice(cols.start + offset[1], cols.stop + offset[1]))
            weak[box] = UNLABELLED
            centre = ((rows.start + rows.stop - 1) // 2, (cols.start + cols.stop - 1) // 2)
            if components[centre] == component:
                centres.append(((centre[0] + offset[0], centre[1] + offset[1]), class_index))
    # Centres are written after every box, so an overlapping box cannot blank them out again.
    if inner_seed:
        for centre, class_index in centres:
            weak[centre] = class_index
    return weak


def _random_points(mask: np.ndarray, seed: int, points_per_class: int, radius: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weak = np.full(mask.shape, UNLABELLED, dtype=np.int64)
    for class_index in np.unique(mask):
        candidates = np.flatnonzero(mask == class_index)
        clicked = rng.choice(candidates, size=min(points_per_class, candidates.size), replace=False)
        labelled = np.zeros(mask.size, dtype=bool)
        labelled[clicked] = True
        labelled = labelled.reshape(mask.shape)
        if radius > 0:
            near_click = ndimage.distance_transform_edt(~labelled) <= radius
            labelled = near_click & (mask == class_index)
        weak[labelled] = class_index
    return weak


def _full(mask: np.ndarray, seed: int) -> np.ndarray:
    return mask.astype(np.int64, copy=True)


_GENERATORS = {"seeds": _eroded_seeds, "scribbles": _scribbles, "boxes": _boxes,
               "points": _random_points, "full": _full}


# --------------------------------------------------------------------------- shape helpers


def _foreground_classes(mask: np.ndarray):
    """Yield ``(class_index, region, offset)`` per foreground class present.

    ``region`` is the class's bool mask cropped to its bounding box plus a 1-pixel False border
    (working on crops keeps per-slice cost proportional to the structures, not the image);
    ``offset`` is the image position of ``region[0, 0]``, which may be -1 (the border).
    """
    for class_index, bounds in enumerate(ndimage.find_objects(mask), start=1):
        if bounds is None:
            continue
        region = np.pad(mask[bounds] == class_index, 1)
        yield class_index, region, (bounds[0].start - 1, bounds[1].start - 1)


def _paste(weak: np.ndarray, pixels: np.ndarray, offset: tuple[int, int], value: int) -> None:
    """Write ``value`` into ``weak`` where the cropped bool map ``pixels`` is True."""
    rows, cols = np.nonzero(pixels)
    weak[rows + offset[0], cols + offset[1]] = value


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """Which 8-neighbourhood codes make a pixel deletable in each Zhang-Suen sub-iteration.

    A neighbourhood is coded as 8 bits P2..P9 (north, then clockwise). A pixel may go when it
    has 2..6 neighbours (not an end point, not interior) and exactly one 0->1 transition around
    it (deleting it keeps its neighbours connected); the extra products alternate between
    eating south-east and north-west boundaries, so the line ends up in the middle.
    """
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    p2, _, p4, _, p6, _, p8, _ = bits.T
    neighbours = bits.sum(axis=1)
    transitions = ((bits == 0) & (np.roll(bits, -1, axis=1) == 1)).sum(axis=1)
    removable = (neighbours >= 2) & (neighbours <= 6) & (transitions == 1)
    first = removable & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = removable & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_ZHANG_SUEN_DELETABLE = _zhang_suen_tables()
# correlate() weights that turn a bool image into each pixel's P2..P9 neighbourhood code.
_NEIGHBOUR_BITS = np.array([[128, 1, 2],
                            [64, 0, 4],
                            [32, 16, 8]], dtype=np.uint8)


def _thin(region: np.ndarray) -> np.ndarray:
    """Zhang-Suen skeleton of a bool image (1 pixel wide, subset of ``region``)."""
    skeleton = region.copy()
    changed = True
    while changed:
        changed = False
        for deletable in _ZHANG_SUEN_DELETABLE:
            codes = ndimage.correlate(skeleton.astype(np.uint8), _NEIGHBOUR_BITS, mode="constant", cval=0)
            remove = skeleton & deletable[codes]
            if remove.any():
                skeleton &= ~remove
                changed = True
    return skeleton


def _contiguous_piece(curve: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A connected piece of a thin bool curve: ``fraction`` of it around a random start pixel.

    Pixels are taken in breadth-first order along the curve (8-connected) from the start, so
    the piece is connected and grows along both directions of the curve.
    """
    pixels = list(zip(*np.nonzero(curve)))
    start = pixels[rng.integers(len(pixels))]
    on_curve = set(pixels)
    wanted = max(1, int(round(fraction * len(pixels))))
    visited, queue = {start}, deque([start])
    while queue and len(visited) < wanted:
        row, col = queue.popleft()
        for d_row in (-1, 0, 1):
            for d_col in (-1, 0, 1):
                neighbour = (row + d_row, col + d_col)
                if neighbour in on_curve and neighbour not in visited and len(visited) < wanted:
                    visited.add(neighbour)
                    queue.append(neighbour)
    piece = np.zeros_like(curve)
    rows, cols = zip(*visited)
    piece[list(rows), list(cols)] = True
    return piece


def _background_rings(mask: np.ndarray, margin: int) -> list[np.ndarray]:
    """Full-image bool curves in the background on which background scribbles are drawn."""
    background = mask == 0
    if not background.any():
        return []
    foreground = ~background
    if not foreground.any():
        medial_line = np.zeros(mask.shape, dtype=bool)
        if mask.shape[1] >= mask.shape[0]:
            medial_line[mask.shape[0] // 2, :] = True
        else:
            medial_line[:, mask.shape[1] // 2] = True
        return [medial_line]
    grown = ndimage.distance_transform_edt(background) <= margin
    # border_value=1: the image edge is not part of the ring, only the grown contour is.
    ring = grown & ~ndimage.binary_erosion(grown, _EIGHT_CONNECTED, border_value=1) & background
    if not ring.any():
        ring = _thin(background)
    pieces, count = ndimage.label(ring, structure=_EIGHT_CONNECTED)
    return [pieces == piece for piece in range(1, count + 1)]


# --------------------------------------------------------------------------- input checks


def _slice_seed(seed: int, z: int) -> int:
    return int(np.random.SeedSequence([seed, z]).generate_state(1)[0])


def _checked_full_mask(mask, source: str, ndims: tuple[int, ...] = (2,),
                       num_classes: int | None = None) -> np.ndarray:
    """``mask`` as an int64 array, or :class:`InputError` naming what is wrong with it."""
    array = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    if array.ndim not in ndims:
        wanted = " or ".join({2: "2-D (H, W)", 3: "3-D (Z, H, W)"}[n] for n in ndims)
        raise InputError(f"{source}: mask must be {wanted}, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{source}: mask of shape {array.shape} is empty")
    if array.dtype.kind == "f":
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise InputError(f"{source}: mask holds non-integer values; pass integer class labels")
    elif array.dtype.kind not in "biu":
        raise InputError(f"{source}: mask must hold integer class labels, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if num_classes is None:
        if array.max() >= UNLABELLED:
            raise InputError(f"{source}: mask holds label {int(array.max())} but {UNLABELLED} marks unlabelled "
                             f"pixels; pass a full mask with classes 0..{UNLABELLED - 1}")
        num_classes = max(int(array.max()) + 1, 1)
    elif not isinstance(num_classes, Integral) or isinstance(num_classes, bool) or not 1 <= num_classes <= UNLABELLED:
        raise InputError(f"{source}: num_classes must be an integer in 1..{UNLABELLED}, got {num_classes!r}")
    # min/max is much cheaper than the shared check's np.unique, which matters when a dataset
    # generates weak labels for thousands of slices; the shared check words the error.
    if array.min() < 0 or array.max() >= num_classes:
        check_label_values(array, int(num_classes), source=source)
    return array


def _checked_seed(seed, source: str) -> int:
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"{source}: seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _is_integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)


# option name -> (is the value acceptable, what an acceptable value is)
_OPTION_RULES = {
    "iterations": (lambda v: _is_integer(v) and v >= 0, "an integer >= 0"),
    "fraction": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "background_margin": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
    "inner_seed": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
    "points_per_class": (lambda v: _is_integer(v) and v >= 1, "an integer >= 1"),
    "radius": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}


def _checked_options(kind: str, options: dict, source: str) -> dict:
    """The kind's default options updated with ``options``, each checked."""
    defaults = _OPTION_DEFAULTS[kind]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) if defaults else "none"
        raise InputError(f"{source}: unknown option(s) {', '.join(unknown)} for weak kind {kind!r}; "
                         f"valid options: {valid}")
    checked = {**defaults, **options}
    for name, value in checked.items():
        acceptable, description = _OPTION_RULES[name]
        if not acceptable(value):
            raise InputError(f"{source}: option {name} must be {description}, got {value!r}")
    return checked
