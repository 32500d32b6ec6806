"""A BrainWeb-style multi-contrast brain phantom with tumours, on real anatomy (ICBM152 2009a).

Everything here is *simulated*, but the anatomy is real: the ICBM152 2009a nonlinear symmetric
template (grey- and white-matter probability maps and a skull-stripped T1, 1 mm) that ships inside
the nilearn wheel (REFERENCE E). MR physics turns the tissue maps into contrasts, as the BrainWeb
simulator does:

- **Tissue maps.** mask = T1 > 0.2 max with its holes filled; CSF = mask - GM - WM; background =
  1 - mask. Every voxel holds the *fractions* of each tissue (a fuzzy, partial-volume model).
- **Subjects.** The template is one population average of 152 brains, so *every subject drawn here
  is that same average brain, warped*: a random affine (rotation, anisotropic scale, shift) and a
  smooth random elastic warp (a few mm) make the subjects differ in pose, size and shape, not in
  anatomy.
- **Tumour** (in :data:`tumour_probability` of the subjects): centred in deep white matter
  (gliomas grow there), a necrotic core inside an enhancing rim a few mm thick, and oedema that
  spreads along white matter: a diffusion from the core whose conductivity is high in white
  matter, low in grey matter and about zero in CSF, so it follows the white-matter tracts and
  spares cortex and ventricles. The core pushes the surrounding tissue outwards (mass effect: a
  volume-preserving radial displacement that fades with distance). Slices above and below the
  tumour, and the tumour-free subjects, are negatives for image tags.
- **Contrasts** T1, T1ce (T1 after gadolinium: the enhancing rim's T1 shortened), T2 and FLAIR
  from the spin-echo and inversion-recovery signal equations (:func:`spin_echo_signal`,
  :func:`flair_signal`) with each tissue's T1, T2 and proton density (:data:`RELAXATION`, sources
  beside each value); FLAIR inverts at the time that nulls CSF (:func:`csf_null_inversion_time`).
  A voxel's signal is the fraction-weighted sum of its tissues' signals, S = sum_k f_k S_k. Then a
  smooth multiplicative bias field (about +-10 %), Rician noise, skull stripping (0 outside the
  brain, as in BraTS) and a per-volume normalisation.
- **Labels** are exact (the simulation's ground truth): a voxel is tumour where tumour tissue
  fills at least half of it; BraTS-style compartments necrotic core, oedema, enhancing tumour, or
  the whole tumour as one class (the CAM task), or core and oedema (:data:`LABEL_SETS`).

What stays unrealistic (say it where the data is shown): one averaged anatomy, no vessels, dura
or choroid plexus, no tissue texture, idealised spin-echo physics, exact labels.

Geometry: axial slices through MNI z in :data:`AXIAL_RANGE_MM`; rows run anterior (top) to
posterior, columns patient right to left (radiological), as in :mod:`mixseg_lite.data.brain_sim`.
Every random draw is made in millimetres on grids that do not depend on ``size`` or ``n_slices``,
so a seed gives the same subject at any resolution. The tissue map in ``Volume.meta["tissue"]``
uses the tissue indices of :mod:`mixseg_lite.data.brain_sim` (no scalp or skull here).

Requires nilearn installed (its wheel holds the template; nilearn itself is never imported).

Licence of the template (the MNI notice; it applies to the template files and to every volume
derived from them, including the volumes this module returns):

    Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
    Institute, McGill University. Permission to use, copy, modify, and distribute this software
    and its documentation for any purpose and without fee is hereby granted, provided that the
    above copyright notice appear in all copies. The authors and McGill University make no
    representations about the suitability of this software for any purpose. It is provided "as
    is" without express or implied warranty. The authors are not responsible for any data loss,
    equipment damage, property loss, or injury to subjects or patients resulting from the use or
    misuse of this software package.

Template references: V. S. Fonov, A. C. Evans, R. C. McKinstry, C. R. Almli, D. L. Collins,
"Unbiased nonlinear average age-appropriate brain templates from birth to adulthood", NeuroImage
47 (Suppl. 1), S102, 2009; V. S. Fonov et al., "Unbiased average age-appropriate atlases for
pediatric studies", NeuroImage 54(1), 313-327, 2011. See also ``mixseg_lite/data/NOTICE``.
"""

from __future__ import annotations

import functools
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from scipy import ndimage

from mixseg_lite.data.brain_sim import (BACKGROUND, CSF, ENHANCING, GREY, LABEL_SETS as _SIM_LABEL_SETS,
                                        NECROSIS, NORMALISATIONS, OEDEMA, TISSUE_NAMES, WHITE, _normalise)
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice

__all__ = ["make_phantom_volumes", "spin_echo_signal", "flair_signal", "csf_null_inversion_time",
           "tissue_signals", "template_files", "RELAXATION", "SEQUENCES", "MODALITIES", "LABEL_SETS",
           "TISSUE_NAMES", "MNI_NOTICE"]

MNI_NOTICE = (
    "Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological "
    "Institute, McGill University. Permission to use, copy, modify, and distribute this software "
    "and its documentation for any purpose and without fee is hereby granted, provided that the "
    "above copyright notice appear in all copies. The authors and McGill University make no "
    "representations about the suitability of this software for any purpose. It is provided \"as "
    "is\" without express or implied warranty. The authors are not responsible for any data loss, "
    "equipment damage, property loss, or injury to subjects or patients resulting from the use or "
    "misuse of this software package."
)
"""The MNI licence notice of the ICBM152 template, as in the module docstring and
``mixseg_lite/data/NOTICE`` (keep it with any file derived from the template)."""

TEMPLATE_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
"""The template files inside the nilearn package, under ``nilearn/datasets/data/``."""

FIELD_OF_VIEW_MM = 200.0
"""In-plane field of view (the skull-stripped brain is about 145 x 180 mm); pixel = FOV / size."""

FIELD_CENTRE_MM = (-17.0, 0.0)
"""MNI ``(y, x)`` of the image centre: the middle of the brain's bounding box."""

AXIAL_RANGE_MM = (-40.0, 72.0)
"""MNI z of the stack: from the temporal lobes and cerebellum to near the vertex."""

# ------------------------------------------------------------------ MR physics (REFERENCE E)

RELAXATION = {
    # tissue: (T1 ms, T2 ms, proton density), 3 T.
    # Wansapura, Holland, Dunn, Ball, "NMR relaxation times in the human brain at 3.0 tesla",
    # J Magn Reson Imaging 9(4), 531-538, 1999 (the ASLDRO ICBM-2009a ground truth uses the same);
    # PD of GM and WM as in BrainWeb (0.86, 0.77).
    GREY: (1330.0, 110.0, 0.86),
    WHITE: (830.0, 80.0, 0.77),
    # CSF: T1 about 4200 ms from synthetic-MRI (multi-dynamic multi-echo) studies at 3 T; CSF T2
    # varies widely with the method (about 300-1000 ms; BrainWeb uses 329 ms at 1.5 T): 1000 ms,
    # the upper end, keeps pure CSF brighter than oedema on T2 as on clinical scans. PD 1 (water).
    CSF: (4200.0, 1000.0, 1.00),
    # Tumour compartments: coarse literature estimates as collected in REFERENCE E (no single
    # source): vasogenic oedema T1 about 1300-1400 ms with a long T2 (about 200 ms); necrosis
    # fluid-like (T1 about 2800 ms, T2 about 300 ms); enhancing tumour T1 about 1600-1900 ms before
    # gadolinium (after: ENHANCING_T1_POST_GD), T2 about 100-120 ms. The PDs are assumptions:
    # oedema and necrosis hold extra water (between GM and CSF), the enhancing tumour is cellular.
    OEDEMA: (1350.0, 200.0, 0.90),
    NECROSIS: (2800.0, 300.0, 0.95),
    ENHANCING: (1600.0, 110.0, 0.86),
}
"""``(T1 ms, T2 ms, proton density)`` of each tissue at 3 T, indexed by the tissue indices of
:mod:`mixseg_lite.data.brain_sim`; sources in the source code beside each value."""

ENHANCING_T1_POST_GD = 700.0
"""T1 (ms) of the enhancing tumour after gadolinium: about 900 ms below its native T1 (REFERENCE E)."""

SEQUENCES = {
    # Sequence parameters that give textbook contrast at 3 T (REFERENCE E).
    "T1": {"kind": "spin echo", "TR": 500.0, "TE": 10.0},
    "T1ce": {"kind": "spin echo", "TR": 500.0, "TE": 10.0},  # the same sequence after gadolinium
    "T2": {"kind": "spin echo", "TR": 6000.0, "TE": 100.0},
    "FLAIR": {"kind": "inversion recovery", "TR": 9000.0, "TE": 120.0},  # TI nulls CSF
}
"""Repetition and echo times (ms) per contrast; FLAIR's inversion time is
:func:`csf_null_inversion_time` of CSF's T1 at its TR (about 2.45 s)."""

MODALITIES = tuple(SEQUENCES)

LABEL_SETS = {**_SIM_LABEL_SETS, "regions": ("background", "necrotic core", "oedema", "enhancing tumour")}
"""``labels`` argument -> class names: ``"whole"`` (whole tumour, the CAM task) and ``"core_oedema"``
as in :mod:`mixseg_lite.data.brain_sim`; ``"regions"``: BraTS's three compartments, numbered as
:func:`mixseg_lite.data.nifti.brats_label_map` ``"regions"`` numbers them (1 necrotic core,
2 oedema, 3 enhancing tumour)."""

TISSUES = (BACKGROUND, CSF, GREY, WHITE, OEDEMA, NECROSIS, ENHANCING)
"""Tissue indices present in the phantom, in the order of its fraction arrays."""

_RELAXATION_JITTER = 0.03  # per subject and tissue, log-normal change of T1 and T2 (subjects and scanners differ)
_AFFINE = {"rotation_deg": (10.0, 4.0, 4.0), "scale": (0.92, 1.08), "anisotropy": 0.04, "shift_mm": (4.0, 6.0, 6.0)}
_WARP = {"spacing_mm": 12.0, "smoothing": 1.5, "amplitude_mm": 2.5}  # elastic warp: control grid, smoothness, std
_BIAS_SMOOTHING = 4.0  # in control-grid steps (about 50 mm): bias fields vary slowly across the head
_RIM_MM = (3.5, 7.0)  # thickness of the enhancing rim
_TUMOUR_GRID_MM = 3.0  # spacing of the local grid on which the oedema diffuses
_CONDUCTIVITY = {WHITE: 1.0, GREY: 0.01, CSF: 1e-4}  # relative oedema spread: high in white matter, low in grey, ~0 in CSF
_OEDEMA_THRESHOLD = 0.1  # oedema where the diffused concentration exceeds this (irregularly modulated)
_TUMOUR_Z_MM = (-10.0, 50.0)  # tumour centres: supratentorial white matter (MNI z)


# ------------------------------------------------------------------ signal equations

def spin_echo_signal(pd, t1, t2, tr: float, te: float):
    """Spin-echo signal, REFERENCE E: ``S = PD (1 - 2 exp(-(TR - TE/2)/T1) + exp(-TR/T1)) exp(-TE/T2)``.

    Times in ms; arrays broadcast.
    """
    pd, t1, t2 = (np.asarray(a, dtype=float) for a in (pd, t1, t2))
    return pd * (1.0 - 2.0 * np.exp(-(tr - te / 2.0) / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def flair_signal(pd, t1, t2, tr: float, te: float, ti: float):
    """Magnitude inversion recovery (FLAIR), REFERENCE E:
    ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``. Times in ms; arrays broadcast."""
    pd, t1, t2 = (np.asarray(a, dtype=float) for a in (pd, t1, t2))
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def csf_null_inversion_time(t1: float = RELAXATION[CSF][0], tr: float = SEQUENCES["FLAIR"]["TR"]) -> float:
    """Inversion time (ms) that nulls a tissue of longitudinal relaxation ``t1`` at repetition ``tr``:
    ``TI = T1 ln(2 / (1 + exp(-TR/T1)))`` (the zero of the inversion-recovery bracket)."""
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


def tissue_signals(modality: str, relaxation: dict | None = None) -> dict[int, float]:
    """Signal of each tissue (before scaling, bias and noise) in one contrast: ``{tissue index: S}``.

    ``relaxation`` defaults to :data:`RELAXATION` (a subject's own values may differ a little);
    T1ce shortens the enhancing tumour's T1 in proportion to :data:`ENHANCING_T1_POST_GD`. The
    protocol is fixed: FLAIR inverts at :func:`csf_null_inversion_time` of the nominal CSF T1,
    so it nulls CSF exactly for the values of :data:`RELAXATION`.
    """
    check_choice(modality, MODALITIES, "modality", "brain phantom")
    relaxation = dict(RELAXATION if relaxation is None else relaxation)
    if modality == "T1ce":
        t1, t2, pd = relaxation[ENHANCING]
        relaxation[ENHANCING] = (ENHANCING_T1_POST_GD * t1 / RELAXATION[ENHANCING][0], t2, pd)
    seq = SEQUENCES[modality]
    ti = csf_null_inversion_time(RELAXATION[CSF][0], seq["TR"])
    signals = {BACKGROUND: 0.0}
    for tissue, (t1, t2, pd) in relaxation.items():
        if seq["kind"] == "spin echo":
            signals[tissue] = float(spin_echo_signal(pd, t1, t2, seq["TR"], seq["TE"]))
        else:
            signals[tissue] = float(flair_signal(pd, t1, t2, seq["TR"], seq["TE"], ti))
    return signals


# ------------------------------------------------------------------ the template

def template_files() -> dict[str, Path]:
    """Paths of the ICBM152 files in the installed nilearn wheel (nilearn is not imported)."""
    spec = find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("brain phantom: needs the ICBM152 template shipped in the nilearn wheel; "
                         "install it with `pip install nilearn` (no download at run time)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    files = {name: folder / filename for name, filename in TEMPLATE_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InputError(f"brain phantom: {missing[0]} not found; this nilearn does not ship the "
                         f"ICBM152 2009a template; install nilearn>=0.10 (`pip install -U nilearn`)")
    return files


@functools.lru_cache(maxsize=2)
def _template(folder: str) -> dict:
    """Tissue fractions ``(csf, grey, white)`` on the template grid (z, y, x), cropped to the brain."""
    import nibabel as nib

    files = {name: Path(folder) / filename for name, filename in TEMPLATE_FILES.items()}
    images = {name: nib.load(str(path)) for name, path in files.items()}
    affine = images["t1"].affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or np.any(np.diag(affine)[:3] <= 0):
        raise InputError(f"brain phantom: {files['t1']}: expected an axis-aligned RAS template, affine {affine.tolist()}")
    raw = {name: np.asanyarray(image.dataobj).transpose(2, 1, 0) for name, image in images.items()}  # -> (z, y, x)
    above = raw["t1"] > 0.2 * raw["t1"].max()
    lo, hi = [], []
    for ax in range(3):  # bounding box of the brain, with a margin: less to fill and blur
        rows = np.flatnonzero(above.any(axis=tuple(a for a in range(3) if a != ax)))
        lo.append(max(int(rows[0]) - 4, 0))
        hi.append(int(rows[-1]) + 5)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = ndimage.binary_fill_holes(above[crop])  # REFERENCE E: mask = T1 > 0.2 max, holes filled
    scale = np.float32(1.0 / 255.0) if raw["gm"].max() > 1.5 else np.float32(1.0)  # stored as 0-255
    grey = raw["gm"][crop].astype(np.float32) * scale * mask
    white = raw["wm"][crop].astype(np.float32) * scale * mask
    csf = np.clip(mask - grey - white, 0.0, 1.0)  # no CSF map in the wheel: the rest of the mask
    spacing = np.diag(affine)[:3][::-1].astype(float)  # (z, y, x) mm
    origin = affine[:3, 3][::-1] + np.array(lo) * spacing  # mm of the first voxel of the crop
    # Candidate tumour centres: deep white matter of the cerebral hemispheres, where white matter
    # still dominates when averaged over about 1 cm (every 7th such voxel).
    z_mm = origin[0] + np.arange(white.shape[0]) * spacing[0]
    slab = np.flatnonzero((z_mm >= _TUMOUR_Z_MM[0]) & (z_mm <= _TUMOUR_Z_MM[1]))
    slab = slice(int(slab[0]), int(slab[-1]) + 1)
    deep_white = ndimage.gaussian_filter(white[slab], 5.0 / spacing) > 0.7
    deep = np.argwhere(deep_white & (white[slab] > 0.9))[::7] + [slab.start, 0, 0]
    return {"fractions": np.stack([csf, grey, white]), "origin": origin, "spacing": spacing,
            "centres_mm": origin + deep * spacing}


@functools.lru_cache(maxsize=3)  # about 55 MB each: one per (image size, slice count) in use
def _blurred(folder: str, sigma_mm: tuple[float, float, float]) -> np.ndarray:
    """Template fractions averaged over a voxel of the output grid (Gaussian of the box's std)."""
    template = _template(folder)
    sigma = np.asarray(sigma_mm) / template["spacing"]
    return np.stack([ndimage.gaussian_filter(f, sigma, truncate=3.0) for f in template["fractions"]])


# ------------------------------------------------------------------ random fields and transforms
# Every grid here is a tensor product of three 1-D axes (z, y, x) in mm ("axes"), so a smooth field
# on a coarse grid is interpolated onto it separably: three small matrix products, no per-voxel lookups.

def _control_grid() -> tuple[np.ndarray, tuple[int, int, int]]:
    """Origin (mm) and shape of the fixed control grid covering every output voxel, with margin."""
    step = _WARP["spacing_mm"]
    margin = 3 * step
    lo = np.array([AXIAL_RANGE_MM[0], FIELD_CENTRE_MM[0] - FIELD_OF_VIEW_MM / 2,
                   FIELD_CENTRE_MM[1] - FIELD_OF_VIEW_MM / 2]) - margin
    hi = np.array([AXIAL_RANGE_MM[1], FIELD_CENTRE_MM[0] + FIELD_OF_VIEW_MM / 2,
                   FIELD_CENTRE_MM[1] + FIELD_OF_VIEW_MM / 2]) + margin
    return lo, tuple(int(n) for n in np.ceil((hi - lo) / step) + 1)


def _random_field(rng: np.random.Generator, shape, smoothing: float, components: int = 1) -> np.ndarray:
    """Smooth Gaussian random field(s) ``(components, *shape)`` on a grid, unit std per component.

    Filtered with periodic boundaries, so the field is stationary: as rough at the edges as inside.
    """
    fields = ndimage.gaussian_filter(rng.standard_normal((components, *shape)), (0, *np.broadcast_to(smoothing, 3)),
                                     mode="wrap")
    fields -= fields.mean(axis=(1, 2, 3), keepdims=True)
    return fields / (fields.std(axis=(1, 2, 3), keepdims=True) + 1e-12)


def _linear_weights(coords: np.ndarray, origin: float, step: float, n: int) -> np.ndarray:
    """``(len(coords), n)`` linear-interpolation weights of 1-D grid nodes; 0 outside the grid."""
    index = (np.asarray(coords, dtype=float) - origin) / step
    inside = (index >= 0.0) & (index <= n - 1.0)
    index = np.clip(index, 0.0, n - 1.0)
    low = np.minimum(np.floor(index).astype(int), max(n - 2, 0))
    frac = index - low
    weights = np.zeros((len(index), n))
    rows = np.arange(len(index))
    weights[rows, low] = (1.0 - frac) * inside
    if n > 1:
        weights[rows, low + 1] += frac * inside
    return weights


def _sample_axes(field: np.ndarray, origin, step, axes) -> np.ndarray:
    """Trilinear values of ``field`` (``(C, nz, ny, nx)`` on a grid with ``origin``, ``step`` mm) on a
    tensor grid ``axes`` = (z, y, x) mm: ``(C, len(z), len(y), len(x))``."""
    step = np.broadcast_to(step, (3,))
    wz, wy, wx = (_linear_weights(a, origin[i], step[i], field.shape[1 + i]) for i, a in enumerate(axes))
    out = np.einsum("ia,cabd->cibd", wz, field)  # the small axes first: (C, Z, ny, nx)
    return np.matmul(wy, out) @ wx.T  # (C, Z, Y, X)


def _mesh(axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three coordinates of a tensor grid, each broadcastable to ``(Z, H, W)``."""
    z, y, x = axes
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _rotation(angles_deg) -> np.ndarray:
    """Rotation matrix acting on (z, y, x) vectors: about z (in-plane), then y, then x."""
    a, b, c = np.deg2rad(angles_deg)
    about_z = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    about_x = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


class _Subject:
    """One subject's map from its own space (mm, z y x) to template space.

    template point = c0 + M (p + e(p) + m(p) - c0) + shift: an elastic displacement ``e`` (smooth
    random field) and, with a tumour, the mass-effect displacement ``m`` are added at ``p``; then a
    random affine (rotation, anisotropic scale about the brain centre ``c0``, shift).
    """

    def __init__(self, rng: np.random.Generator):
        rotation = _rotation(rng.uniform(-1, 1, 3) * np.array(_AFFINE["rotation_deg"]))
        scale = rng.uniform(*_AFFINE["scale"]) * (1.0 + _AFFINE["anisotropy"] * rng.uniform(-1, 1, 3))
        self.matrix = rotation @ np.diag(1.0 / scale)  # a larger subject samples the template more densely
        self.shift = rng.uniform(-1, 1, 3) * np.array(_AFFINE["shift_mm"])
        self.centre = np.array([(AXIAL_RANGE_MM[0] + AXIAL_RANGE_MM[1]) / 2, *FIELD_CENTRE_MM])
        self.grid_origin, shape = _control_grid()
        self.warp = _WARP["amplitude_mm"] * _random_field(rng, shape, _WARP["smoothing"], components=3)
        self.mass = None  # (centre mm, pushed radius mm, decay length mm) once a tumour is placed

    def _elastic(self, axes) -> np.ndarray:
        return _sample_axes(self.warp, self.grid_origin, _WARP["spacing_mm"], axes)

    def to_template(self, axes) -> np.ndarray:
        """Template mm ``(3, Z, H, W)`` of the subject's tensor grid ``axes``."""
        points = np.stack(np.broadcast_arrays(*_mesh(axes))) + self._elastic(axes)
        if self.mass is not None:
            centre, radius, decay = self.mass
            offset = np.stack(np.broadcast_arrays(*_mesh(axes))) - centre[:, None, None, None]
            r = np.sqrt((offset ** 2).sum(0))
            # Volume-preserving push of a ball of radius `radius`, fading over `decay` mm: the tissue
            # seen at distance r came from distance r' < r, r'^3 = r^3 - radius^3 exp(-(r/decay)^2).
            source = np.cbrt(np.maximum(r ** 3 - radius ** 3 * np.exp(-(r / decay) ** 2), 0.0))
            points += offset * (source / np.maximum(r, 1e-6) - 1.0)
        points -= self.centre[:, None, None, None]
        moved = np.einsum("ij,j...->i...", self.matrix, points)
        return moved + (self.centre + self.shift)[:, None, None, None]

    def from_template(self, point: np.ndarray) -> np.ndarray:
        """Subject mm of one template point (the affine inverted exactly, the small warp by iteration;
        used for the tumour centre, where the mass effect is zero)."""
        target = np.linalg.solve(self.matrix, point - self.centre - self.shift) + self.centre
        guess = target.copy()
        for _ in range(8):
            guess = target - self._elastic(tuple(guess[:, None]))[:, 0, 0, 0]
        return guess


def _fractions(folder: str, sigma_mm, subject: _Subject, axes) -> np.ndarray:
    """Fractions ``(csf, grey, white)`` of the subject's healthy tissue on the tensor grid ``axes``,
    from the template averaged over ``sigma_mm`` (None: the 1 mm template itself)."""
    template = _template(folder)
    maps = template["fractions"] if sigma_mm is None else _blurred(folder, sigma_mm)
    index = (subject.to_template(axes) - template["origin"][:, None, None, None]) / template["spacing"][:, None, None, None]
    return np.stack([ndimage.map_coordinates(m, index, order=1, mode="constant", cval=0.0, prefilter=False)
                     for m in maps])


# ------------------------------------------------------------------ the tumour

def _draw_tumour(rng: np.random.Generator, folder: str, subject: _Subject) -> dict:
    """Position, shape and size of a tumour (subject mm), and its irregularity fields."""
    centres = _template(folder)["centres_mm"]
    centre = subject.from_template(centres[rng.integers(len(centres))].astype(float))
    radius = rng.uniform(7.0, 17.0)  # mean core radius, mm
    axes = radius * rng.uniform(0.75, 1.25, size=3)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    rim_mm = rng.uniform(_RIM_MM[0], _RIM_MM[1])
    reach = rng.uniform(0.4, 1.2) * radius + 4.0  # oedema reach beyond the core in white matter, mm
    half = 1.3 * axes.max() + 1.5 * reach + 6.0  # the oedema stays inside the local grid
    n = int(np.ceil(2 * half / _TUMOUR_GRID_MM)) + 1
    return {"centre": centre, "radius": float(radius), "axes": axes, "rotation": rotation, "rim_mm": float(rim_mm),
            "reach": float(reach), "origin": centre - half, "n": n,
            "push": float(rng.uniform(0.75, 1.0) * radius), "decay": float(rng.uniform(2.0, 3.0) * radius),
            # unit-std smooth fields on the local grid: border irregularity of core and oedema
            "core_noise": _random_field(rng, (n, n, n), 6.0 / _TUMOUR_GRID_MM),
            "oedema_noise": _random_field(rng, (n, n, n), 8.0 / _TUMOUR_GRID_MM)[0]}


def _local_axes(tumour: dict):
    return tuple(tumour["origin"][i] + np.arange(tumour["n"]) * _TUMOUR_GRID_MM for i in range(3))


def _core_distance(tumour: dict, axes) -> np.ndarray:
    """Signed distance (mm, approximate) from the irregular core surface on ``axes``; negative inside."""
    z, y, x = _mesh(axes)
    c = tumour["centre"]
    q = tumour["rotation"].T
    scaled = [(q[i, 0] * (z - c[0]) + q[i, 1] * (y - c[1]) + q[i, 2] * (x - c[2])) / tumour["axes"][i] for i in range(3)]
    rho = np.sqrt(scaled[0] ** 2 + scaled[1] ** 2 + scaled[2] ** 2)
    rho = rho + 0.15 * _sample_axes(tumour["core_noise"], tumour["origin"], _TUMOUR_GRID_MM, axes)[0]
    return (rho - 1.0) * tumour["radius"]


def _steady_diffusion(conductivity: np.ndarray, source: np.ndarray, h: float, decay_mm: float) -> np.ndarray:
    """Steady state of du/dt = div(k grad u) - lambda u with u = 1 on ``source``; no flux at the edges.

    ``lambda = 1 / decay_mm**2`` (for k = 1 the concentration falls by e every ``decay_mm``, less
    where k is lower). The conductivity across a face is the harmonic mean of its two voxels, so
    nothing crosses into a voxel of k = 0. Solved by conjugate gradients on the free voxels
    (a symmetric positive-definite system); vectorised stencils, no matrix.
    """
    faces = []
    for ax in range(3):
        a = np.moveaxis(conductivity, ax, 0)
        faces.append(np.moveaxis(2 * a[1:] * a[:-1] / (a[1:] + a[:-1] + 1e-6), 0, ax) / (h * h))
    decay = 1.0 / decay_mm ** 2
    free = ~source

    def operator(v: np.ndarray) -> np.ndarray:  # (lambda - div k grad) v
        out = decay * v
        for ax, face in enumerate(faces):
            flux = face * np.diff(v, axis=ax)
            out[(slice(None),) * ax + (slice(None, -1),)] -= flux
            out[(slice(None),) * ax + (slice(1, None),)] += flux
        return out

    fixed = source.astype(float)
    rhs = -operator(fixed) * free  # the source's pull on its free neighbours
    v = np.zeros_like(fixed)
    residual = rhs.copy()
    direction = residual.copy()
    norm = float((residual * residual).sum())
    target = 1e-8 * norm
    for _ in range(400):
        if norm <= target:
            break
        applied = operator(direction) * free
        step = norm / float((direction * applied).sum())
        v += step * direction
        residual -= step * applied
        new_norm = float((residual * residual).sum())
        direction = residual + (new_norm / norm) * direction
        norm = new_norm
    return v + fixed


def _oedema_map(tumour: dict, folder: str, subject: _Subject) -> np.ndarray:
    """Oedema (0/1) on the tumour's local grid: fluid diffusing from the core along white matter.

    The steady state of a diffusion from the core with a loss term (:func:`_steady_diffusion`),
    whose conductivity comes from :data:`_CONDUCTIVITY` (white 1, grey 0.01, CSF and outside the
    brain 1e-4), read from the 1 mm template: it reaches about ``reach`` mm into white matter,
    hardly enters grey matter and does not cross CSF.
    Oedema is where the concentration exceeds an irregular threshold, outside CSF; the map
    includes the core (the caller subtracts it), so their shared edge has no gap.
    """
    axes = _local_axes(tumour)
    csf, grey, white = _fractions(folder, None, subject, axes)
    # A mixed voxel conducts as the fraction-weighted geometric mean of its tissues (between the
    # series and parallel bounds): a thin layer of grey matter or CSF already holds the oedema back.
    background = np.clip(1.0 - csf - grey - white, 0.0, 1.0)
    conductivity = np.exp(white * np.log(_CONDUCTIVITY[WHITE]) + grey * np.log(_CONDUCTIVITY[GREY])
                          + (csf + background) * np.log(_CONDUCTIVITY[CSF]))
    core = _core_distance(tumour, axes) < 0.0
    # In white matter around a ball of radius R, u ~ R / (R + d) exp(-d / L) at d mm from its
    # surface: choose L so that u reaches the threshold at d = reach.
    radius, reach = tumour["radius"], tumour["reach"]
    decay = reach / np.log(max(radius / ((radius + reach) * _OEDEMA_THRESHOLD), 1.5))
    u = _steady_diffusion(conductivity, core, _TUMOUR_GRID_MM, decay)
    threshold = _OEDEMA_THRESHOLD * np.exp(0.35 * tumour["oedema_noise"])
    return (((u > threshold) & (csf < 0.5)) | core).astype(np.float32)  # with the core: no gap at its edge


# ------------------------------------------------------------------ one subject

def _grid_axes(n_slices: int, size: int):
    """Output voxel centres as tensor-grid axes (z, y, x) in subject mm, and the spacing."""
    pixel = FIELD_OF_VIEW_MM / size
    slice_mm = (AXIAL_RANGE_MM[1] - AXIAL_RANGE_MM[0]) / n_slices
    z = AXIAL_RANGE_MM[0] + (np.arange(n_slices) + 0.5) * slice_mm
    y = FIELD_CENTRE_MM[0] + FIELD_OF_VIEW_MM / 2 - (np.arange(size) + 0.5) * pixel  # anterior at the top
    x = FIELD_CENTRE_MM[1] + FIELD_OF_VIEW_MM / 2 - (np.arange(size) + 0.5) * pixel  # patient right on the left
    return (z, y, x), (slice_mm, pixel, pixel)


def _phantom_subject(seed: int, index: int, folder: str, n_slices: int, size: int, tumour_probability: float):
    """Tissue fractions ``(7, Z, H, W)`` in :data:`TISSUES` order, healthy tissue map, tumour description."""
    axes, spacing = _grid_axes(n_slices, size)
    sigma_mm = tuple(round(0.29 * s * 4) / 4 for s in spacing)  # std of a box one voxel wide, 0.25 mm steps
    subject = _Subject(np.random.default_rng([seed, index, 0]))
    tumour_rng = np.random.default_rng([seed, index, 1])
    has_tumour = bool(tumour_rng.random() < tumour_probability)
    tumour = _draw_tumour(tumour_rng, folder, subject) if has_tumour else None
    if tumour is not None:
        subject.mass = (tumour["centre"], tumour["push"], tumour["decay"])
    csf, grey, white = _fractions(folder, sigma_mm, subject, axes)
    brain = np.clip(csf + grey + white, 0.0, 1.0)
    healthy = np.stack([1.0 - brain, csf, grey, white])
    description = None
    core = necrosis = oedema = np.zeros_like(brain)
    if tumour is not None:
        voxel = float(np.mean(spacing))
        distance = _core_distance(tumour, axes)
        core = np.clip(0.5 - distance / voxel, 0.0, 1.0)
        if tumour["radius"] - tumour["rim_mm"] > 1.5:
            necrosis = np.clip(0.5 - (distance + tumour["rim_mm"]) / voxel, 0.0, 1.0)
        oedema_local = _oedema_map(tumour, folder, subject)
        oedema_total = _sample_axes(oedema_local[None], tumour["origin"], _TUMOUR_GRID_MM, axes)[0]
        parenchyma = (grey + white) / np.maximum(brain, 1e-6)
        oedema = np.clip(oedema_total - core, 0.0, 1.0) * parenchyma
        description = {"centre_mm": tumour["centre"].round(1).tolist(), "core_radius_mm": round(tumour["radius"], 1),
                       "rim_mm": round(tumour["rim_mm"], 1), "oedema_reach_mm": round(tumour["reach"], 1),
                       "mass_effect_radius_mm": round(tumour["push"], 1)}
    # Within the brain, the tumour takes shares (core c, oedema o) and healthy tissue keeps 1 - c - o.
    keep = 1.0 - core - oedema
    fractions = np.stack([healthy[0], *(healthy[1:] * keep), brain * oedema, brain * necrosis,
                          brain * (core - necrosis)]).astype(np.float32)
    healthy_map = np.asarray(TISSUES[:4])[np.argmax(healthy, axis=0)]
    return fractions, healthy_map, axes, spacing, has_tumour, description


def _tissue_map(fractions: np.ndarray) -> np.ndarray:
    """Tumour tissue where tumour fills at least half the voxel, else the largest healthy fraction."""
    tumour = fractions[4:].sum(0) >= 0.5
    tissues = np.asarray(TISSUES)
    return np.where(tumour, tissues[4 + np.argmax(fractions[4:], axis=0)], tissues[np.argmax(fractions[:4], axis=0)])


def _render(rng: np.random.Generator, fractions: np.ndarray, modality: str, noise: float, bias: float,
            axes) -> np.ndarray:
    """One contrast: S = sum_k f_k S_k with per-subject relaxation times, bias field, Rician noise."""
    jitter = {t: (t1 * np.exp(_RELAXATION_JITTER * rng.standard_normal()),
                  t2 * np.exp(_RELAXATION_JITTER * rng.standard_normal()), pd)
              for t, (t1, t2, pd) in RELAXATION.items()}
    signals = tissue_signals(modality, jitter)
    levels = np.array([signals[t] for t in TISSUES], dtype=np.float32) / max(signals.values())  # brightest = 1
    image = np.einsum("k,kzyx->zyx", levels, fractions)
    origin, shape = _control_grid()
    log_bias = _sample_axes(_random_field(rng, shape, _BIAS_SMOOTHING), origin, _WARP["spacing_mm"], axes)[0]
    image *= np.exp(bias * log_bias).astype(np.float32)
    real = image + noise * rng.standard_normal(image.shape, dtype=np.float32)
    imag = noise * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real ** 2 + imag ** 2)


def make_phantom_volumes(n_volumes: int = 16, n_slices: int = 24, size: int = 64,
                         modalities=("T1", "T2", "FLAIR"), seed: int = 0, labels: str = "whole",
                         tumour_probability: float = 0.8, noise: float = 0.03, bias: float = 0.05,
                         normalisation: str = "zscore") -> list[Volume]:
    """Simulated multi-contrast brain MRI on the real ICBM152 anatomy, with tumours (see the module).

    The same interface and output as :func:`mixseg_lite.data.brain_sim.make_brain_volumes`.

    Args:
        n_volumes: number of simulated subjects (each the same template brain, warped differently).
        n_slices: axial slices, covering MNI z in :data:`AXIAL_RANGE_MM` (slice thickness
            ``112 / n_slices`` mm).
        size: in-plane size ``H = W`` (>= 32; 64 by default, 96 or 128 for finer detail); pixel
            ``200 / size`` mm. A seed gives the same subject at any size.
        modalities: any of :data:`MODALITIES` (``"T1"``, ``"T1ce"``, ``"T2"``, ``"FLAIR"``), at
            least one; all show the same anatomy and tumour.
        seed: volume ``i`` depends only on ``(seed, i)``: the first volumes are the same whatever
            ``n_volumes`` is, and the anatomy and tumour do not depend on ``modalities``.
        labels: ``"whole"`` (background, tumour), ``"core_oedema"`` (background, core, oedema) or
            ``"regions"`` (background, necrotic core, oedema, enhancing tumour): :data:`LABEL_SETS`.
        tumour_probability: chance that a subject has a tumour (the others are tumour-free).
        noise: Rician noise level relative to the brightest tissue of each contrast.
        bias: standard deviation of the log bias field (0.05: about +-10 % across the brain).
        normalisation: ``"zscore"`` over the brain voxels or ``"minmax"`` (0.5-99.5 percentiles to
            [0, 1]), per volume and contrast, as in the procedural brains.

    Returns:
        ``n_volumes`` :class:`Volume` objects, ``case_id`` ``"phantom_000"``, ...: image float32
        ``(len(modalities), n_slices, size, size)``, label int64 ``(n_slices, size, size)``,
        spacing ``(z, y, x)`` mm; ``meta`` holds ``simulated`` (True), ``source``, ``licence``,
        ``has_tumour``, ``tumour`` (centre, core radius, rim, oedema reach and mass-effect radius
        in mm, or None),
        ``normalisation``, ``tissue`` (uint8 map of tissue indices, :data:`TISSUE_NAMES`) and
        ``tissue_before_tumour`` (the same subject's healthy tissue map, after the mass effect).

    Raises:
        InputError: on a bad argument, or when nilearn (which ships the template) is not installed.
    """
    modalities = tuple([modalities] if isinstance(modalities, str) else modalities)
    unknown = [m for m in modalities if m not in SEQUENCES]
    if unknown or not modalities:
        raise InputError(f"brain phantom: unknown modalities {unknown or modalities}; choose from {MODALITIES}")
    if len(set(modalities)) != len(modalities):
        raise InputError(f"brain phantom: repeated modality in {modalities}")
    check_choice(labels, LABEL_SETS, "label set", "brain phantom")
    check_choice(normalisation, NORMALISATIONS, "normalisation", "brain phantom")
    for name, value, low in (("n_volumes", n_volumes, 1), ("n_slices", n_slices, 1), ("size", size, 32)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InputError(f"brain phantom: {name} must be an integer >= {low}, got {value!r}")
    for name, value, high in (("tumour_probability", tumour_probability, 1.0), ("noise", noise, None),
                              ("bias", bias, None)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
                or value < 0 or (high is not None and value > high):
            raise InputError(f"brain phantom: {name} must be a number >= 0{f' and <= {high}' if high else ''}, "
                             f"got {value!r}")
    folder = str(next(iter(template_files().values())).parent)

    volumes = []
    for i in range(n_volumes):
        fractions, healthy_map, axes, spacing, has_tumour, tumour = _phantom_subject(
            seed, i, folder, n_slices, size, tumour_probability)
        tissue = _tissue_map(fractions)
        brain = tissue != BACKGROUND
        channels = []
        for m in modalities:
            rng = np.random.default_rng([seed, i, 2 + MODALITIES.index(m)])
            image = _render(rng, fractions, m, noise, bias, axes)
            image[~brain] = 0.0  # skull-stripped, as BraTS
            channels.append(_normalise(image, brain, normalisation))
        if labels == "whole":
            label = np.isin(tissue, (OEDEMA, NECROSIS, ENHANCING)).astype(np.int64)
        elif labels == "core_oedema":
            label = np.select([np.isin(tissue, (NECROSIS, ENHANCING)), tissue == OEDEMA], [1, 2], 0).astype(np.int64)
        else:
            label = np.select([tissue == NECROSIS, tissue == OEDEMA, tissue == ENHANCING], [1, 2, 3], 0).astype(np.int64)
        volumes.append(Volume(
            image=np.stack(channels).astype(np.float32), label=label, spacing=tuple(float(s) for s in spacing),
            case_id=f"phantom_{i:03d}", modalities=modalities, class_names=LABEL_SETS[labels],
            meta={"simulated": True,
                  "source": "mixseg_lite.data.phantom (simulated contrasts on the ICBM152 2009a template)",
                  "licence": "ICBM152 template: MNI notice, mixseg_lite.data.phantom.MNI_NOTICE",
                  "has_tumour": has_tumour, "tumour": tumour, "normalisation": normalisation,
                  "tissue": tissue.astype(np.uint8), "tissue_before_tumour": healthy_map.astype(np.uint8)},
        ))
    return volumes
