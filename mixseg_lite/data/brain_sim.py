"""Simulated multi-modal brain MRI volumes with tumours: an offline stand-in for BraTS.

Everything here is *simulated*: procedurally drawn anatomy, no patient data. No package ships two
or more real co-registered MRI contrasts with labels (REFERENCE D), so the cross-modal method of
REFERENCE B is taught on this. What it mimics:

- one anatomy per volume, shared by every contrast (co-registered by construction): scalp fat,
  skull, subarachnoid CSF, folded cortex (grey matter) with sulci, white matter, the
  interhemispheric fissure and the lateral ventricles; head size, in-plane rotation and position
  vary per volume;
- a tumour in most volumes: an irregular blob with a necrotic centre and an enhancing rim (together
  the *core*) inside a larger irregular oedema; its size, shape and position vary along every
  axis, so the slice index does not give the tag away; some volumes have no tumour, and slices
  above and below the tumour are tumour-free;
- contrasts with the relative tissue intensities of real MRI (:data:`TISSUE_INTENSITY`): on T1 the
  core is dark and white matter is brighter than grey matter; on T2 CSF is brightest and oedema is
  bright; FLAIR is T2 with CSF suppressed, so oedema is the brightest tissue; T1ce is T1 plus a
  bright enhancing rim;
- per contrast: partial-volume blur (scanner point-spread and voxel averaging), a smooth
  multiplicative bias field, Rician noise, then a per-volume z-score (default) or min-max
  normalisation.

The anatomy is defined in millimetres on a fixed field of view and only then rasterised, so a seed
gives the same head at any ``size``; only the pixel size changes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice

FIELD_OF_VIEW_MM = 220.0
"""In-plane field of view; the pixel size is ``FIELD_OF_VIEW_MM / size``."""

AXIAL_RANGE_MM = (-40.0, 72.0)
"""Axial extent of the stack relative to the head centre: from the skull base region to the vertex."""

# Tissue indices of the internal tissue map (not the label map).
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, OEDEMA, NECROSIS, ENHANCING = range(9)
TISSUE_NAMES = ("background", "scalp", "skull", "CSF", "grey matter", "white matter", "oedema",
                "necrosis", "enhancing rim")
"""Names of the tissue indices stored in ``Volume.meta["tissue"]``."""

TISSUE_INTENSITY = {
    #        bg    scalp skull  CSF   GM    WM    oedema necrosis enhancing
    "T1":    (0.0, 0.90, 0.08, 0.18, 0.52, 0.75, 0.38, 0.15, 0.45),
    "T1ce":  (0.0, 0.90, 0.08, 0.18, 0.52, 0.75, 0.38, 0.15, 1.00),
    "T2":    (0.0, 0.55, 0.05, 1.00, 0.62, 0.42, 0.85, 0.95, 0.60),
    "FLAIR": (0.0, 0.50, 0.05, 0.10, 0.58, 0.44, 0.95, 0.35, 0.70),
}
"""Relative mean intensity of each tissue per contrast, before bias field and noise.

Values follow the usual appearance of clinical scans (arbitrary units, only ratios matter):
T1: fat > WM > GM > oedema > CSF, necrosis; T2: CSF > necrosis > oedema > GM > WM;
FLAIR: oedema brightest, CSF suppressed; T1ce: as T1 with the enhancing rim brightest.
"""

MODALITIES = tuple(TISSUE_INTENSITY)

LABEL_SETS = {
    "whole": ("background", "tumour"),
    "core_oedema": ("background", "core", "oedema"),
}
"""``labels`` argument of :func:`make_brain_volumes` -> class names. ``"whole"`` is the whole
tumour (core + oedema) as one class; ``"core_oedema"`` separates the core (necrosis + enhancing
rim) from the oedema."""

NORMALISATIONS = ("zscore", "minmax")

_PSF_MM = 1.5  # scanner point-spread: tissue edges look partial-volumed as in real scans
_VOXEL_AVERAGING = 0.4  # in voxels: a voxel integrates the signal over its extent, so thin sulci fade
_TISSUE_JITTER = 0.04  # per volume, per tissue, per contrast relative intensity change (scanner variation)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``sigma_vox``.

    Drawn on a grid coarsened by up to ``sigma_vox / 2`` per axis and upsampled linearly:
    the same smoothness as filtering at full resolution, at a fraction of the cost for wide fields.
    """
    shape = np.asarray(shape)
    step = np.maximum(np.asarray(sigma_vox, dtype=float) / 2.0, 1.0)
    coarse = np.maximum(np.ceil(shape / step).astype(int), 2)
    sigma_coarse = np.asarray(sigma_vox, dtype=float) * coarse / shape
    field = ndimage.gaussian_filter(rng.standard_normal(tuple(coarse)), sigma_coarse, mode="wrap")
    if tuple(coarse) != tuple(shape):
        field = ndimage.zoom(field, shape / coarse, order=1, mode="nearest")
    return (field - field.mean()) / (field.std() + 1e-12)


def _grid_mm(n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Voxel centre coordinates in mm, each broadcastable to ``(Z, H, W)``, and the spacing."""
    pixel = FIELD_OF_VIEW_MM / size
    z_lo, z_hi = AXIAL_RANGE_MM
    slice_mm = (z_hi - z_lo) / n_slices
    z = z_lo + (np.arange(n_slices) + 0.5) * slice_mm
    y = -FIELD_OF_VIEW_MM / 2 + (np.arange(size) + 0.5) * pixel  # rows: anterior (top) to posterior
    x = -FIELD_OF_VIEW_MM / 2 + (np.arange(size) + 0.5) * pixel  # columns: right to left (radiological)
    return z[:, None, None], y[None, :, None], x[None, None, :], (slice_mm, pixel, pixel)


def _anatomy(rng: np.random.Generator, n_slices: int, size: int):
    """Draw one head. Returns the tissue map ``(Z, H, W)`` int, head-frame coordinates and spacing."""
    z, y, x, spacing = _grid_mm(n_slices, size)
    sigma_vox = np.array([12.0 / spacing[0], 12.0 / spacing[1], 12.0 / spacing[2]])

    # Head pose: small in-plane rotation and shift; coordinates below are in the head's own frame.
    angle = np.deg2rad(rng.uniform(-10, 10))
    shift_y, shift_x = rng.uniform(-6, 6, size=2)
    yy = np.cos(angle) * (y - shift_y) - np.sin(angle) * (x - shift_x)
    xx = np.sin(angle) * (y - shift_y) + np.cos(angle) * (x - shift_x)
    zz = np.broadcast_to(z, (n_slices, size, size))
    yy, xx = np.broadcast_to(yy, zz.shape), np.broadcast_to(xx, zz.shape)

    # Head: an ellipsoid, longer front to back; r = 1 on the scalp surface.
    scale = rng.uniform(0.9, 1.05)
    radii = scale * np.array([100.0, 92.0, 74.0])  # (z, y, x) in mm
    r = np.sqrt((zz / radii[0]) ** 2 + (yy / radii[1]) ** 2 + (xx / radii[2]) ** 2)

    # Layers at fixed thickness in mm, using the radial distance measured along the ellipsoid.
    depth_mm = (1.0 - r) * radii.min()  # ~ distance below the scalp surface
    folding = _smooth_field(rng, zz.shape, sigma_vox * 0.33)
    sulci = _smooth_field(rng, zz.shape, sigma_vox * 0.3)
    tissue = np.zeros(zz.shape, dtype=np.int64)
    tissue[depth_mm > 0] = SCALP
    tissue[depth_mm > 5.0] = SKULL
    tissue[depth_mm > 11.0] = CSF
    tissue[depth_mm > 13.5] = GREY
    # The grey-white boundary undulates (gyri): white matter starts 4-12 mm below the cortex surface.
    white_depth = 20.0 + 3.5 * folding
    tissue[depth_mm > white_depth] = WHITE
    # Sulci: CSF clefts from the surface into the cortex where a second smooth field crosses zero.
    tissue[(depth_mm > 13.5) & (depth_mm < white_depth + 2.0) & (np.abs(sulci) < 0.15)] = CSF
    # Deep grey matter: thalamus and lentiform nucleus on each side of the ventricles.
    for side in (-1.0, 1.0):
        thalamus = ((xx - side * 11.0) / 9.0) ** 2 + ((yy - 12.0) / 13.0) ** 2 + ((zz - 2.0) / 12.0) ** 2
        lentiform = ((xx - side * 24.0) / 6.0) ** 2 + ((yy + 4.0) / 16.0) ** 2 + ((zz - 4.0) / 11.0) ** 2
        tissue[(thalamus < 1.0) | (lentiform < 1.0)] = GREY
    # Interhemispheric fissure: a CSF sheet in the midline, except where the corpus callosum bridges.
    bridge = (np.abs(yy) < 28) & (zz > 5) & (zz < 25)
    tissue[(np.abs(xx) < 1.6) & (depth_mm > 11.0) & ~bridge] = CSF
    # Lateral ventricles: two banana-shaped ellipsoids beside the midline, widest at the front.
    for side in (-1.0, 1.0):
        centre_x = side * (8.0 + 0.05 * yy)
        v = ((xx - centre_x) / (6.0 - 0.05 * yy)) ** 2 + ((yy + 2.0) / 30.0) ** 2 + ((zz - 14.0) / 12.0) ** 2
        tissue[v < 1.0] = CSF
    brain = depth_mm > 13.5
    return tissue, (zz, yy, xx), brain, spacing


def _insert_tumour(rng: np.random.Generator, tissue: np.ndarray, coords, brain: np.ndarray,
                   spacing) -> dict:
    """Paint oedema, necrosis and enhancing rim into ``tissue`` in place; return its description."""
    zz, yy, xx = coords
    # Centre on any white-matter voxel (gliomas grow in the white matter), so every axis varies.
    candidates = np.argwhere(tissue == WHITE)
    centre_vox = candidates[rng.integers(len(candidates))]
    centre = np.array([zz[tuple(centre_vox)], yy[tuple(centre_vox)], xx[tuple(centre_vox)]])
    core_radius = rng.uniform(7.0, 17.0)
    axes = core_radius * rng.uniform(0.7, 1.3, size=3)  # anisotropic core, mm
    oedema_factor = rng.uniform(1.4, 2.1)
    # Random 3-D orientation via a random rotation matrix (QR of a Gaussian matrix).
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    offsets = np.stack([zz - centre[0], yy - centre[1], xx - centre[2]], axis=-1) @ q
    rho = np.sqrt(((offsets / axes) ** 2).sum(-1))  # 1 on the (smooth) core surface
    sigma_vox = np.array([6.0 / spacing[0], 6.0 / spacing[1], 6.0 / spacing[2]])
    # Irregular borders: modulate the radius with smooth noise, more for the infiltrating oedema.
    rho_core = rho + 0.18 * _smooth_field(rng, rho.shape, sigma_vox)
    rho_oedema = rho + 0.30 * _smooth_field(rng, rho.shape, sigma_vox * 1.5)
    # Tumour grows in brain parenchyma; the oedema follows white matter, stopping at CSF and cortex.
    in_brain = brain & (tissue != CSF)
    oedema = in_brain & (rho_oedema < oedema_factor) & ((tissue == WHITE) | (rho_oedema < 0.8 * oedema_factor))
    core = in_brain & (rho_core < 1.0)
    necrotic_fraction = rng.uniform(0.3, 0.7)
    tissue[oedema] = OEDEMA
    tissue[core] = ENHANCING
    tissue[core & (rho_core < necrotic_fraction)] = NECROSIS
    return {"centre_mm": centre.round(1).tolist(), "core_radius_mm": round(float(core_radius), 1),
            "oedema_factor": round(float(oedema_factor), 2)}


def _contrast(rng: np.random.Generator, tissue: np.ndarray, modality: str, spacing, noise: float,
              bias: float) -> np.ndarray:
    """Render one contrast of a tissue map: intensities, blur, bias field, Rician noise."""
    levels = np.asarray(TISSUE_INTENSITY[modality])
    levels = levels * (1.0 + _TISSUE_JITTER * rng.standard_normal(levels.shape))
    image = levels[tissue]
    # Within-tissue texture (a few percent), so tissues are not perfectly flat.
    texture_sigma = np.array([3.0 / spacing[0], 3.0 / spacing[1], 3.0 / spacing[2]])
    image = image * (1.0 + 0.04 * _smooth_field(rng, tissue.shape, texture_sigma))
    image = ndimage.gaussian_filter(image, np.hypot(_PSF_MM / np.asarray(spacing), _VOXEL_AVERAGING))
    # Smooth multiplicative bias field (coil sensitivity), different per contrast.
    bias_sigma = np.array([60.0 / spacing[0], 60.0 / spacing[1], 60.0 / spacing[2]])
    image = image * np.exp(bias * _smooth_field(rng, tissue.shape, bias_sigma))
    # Rician noise: magnitude of a complex signal with Gaussian noise on both channels.
    real = image + noise * rng.standard_normal(image.shape)
    imag = noise * rng.standard_normal(image.shape)
    return np.sqrt(real ** 2 + imag ** 2)


def _normalise(image: np.ndarray, head: np.ndarray, how: str) -> np.ndarray:
    """Per volume and contrast; statistics come from the head voxels (skull-stripping style)."""
    if how == "zscore":
        values = image[head]
        return (image - values.mean()) / (values.std() + 1e-8)
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo + 1e-8), 0.0, 1.0)


def make_brain_volumes(n_volumes: int = 16, n_slices: int = 24, size: int = 64,
                       modalities=("T1", "T2", "FLAIR"), seed: int = 0, labels: str = "whole",
                       tumour_probability: float = 0.8, noise: float = 0.03, bias: float = 0.12,
                       normalisation: str = "zscore") -> list[Volume]:
    """Simulated multi-contrast brain MRI volumes with tumour labels (a stand-in for BraTS).

    Args:
        n_volumes: number of simulated patients.
        n_slices: axial slices per volume, covering :data:`AXIAL_RANGE_MM` (skull base to vertex),
            so the slice thickness is ``112 / n_slices`` mm.
        size: in-plane size ``H = W`` in pixels (>= 32); the anatomy in mm does not depend on it.
        modalities: contrasts to render, any of :data:`MODALITIES` (``"T1"``, ``"T2"``,
            ``"FLAIR"``, ``"T1ce"``), at least one; all show the same anatomy.
        seed: volume ``i`` depends only on ``(seed, i)``, so the first volumes are the same
            whatever ``n_volumes`` is.
        labels: ``"whole"`` -> classes ``("background", "tumour")`` (whole tumour);
            ``"core_oedema"`` -> ``("background", "core", "oedema")``.
        tumour_probability: chance that a volume has a tumour (the others are tumour-free).
        noise: Rician noise level relative to the brightest tissue (about 1).
        bias: standard deviation of the log bias field.
        normalisation: ``"zscore"`` (default): per volume and contrast, subtract the mean and
            divide by the standard deviation of the voxels inside the head; ``"minmax"``: per
            volume and contrast, scale the 0.5-99.5 percentile range to [0, 1] and clip.

    Returns:
        ``n_volumes`` :class:`Volume` objects with ``case_id`` ``"simbrain_000"``, ...; image
        float32 ``(len(modalities), n_slices, size, size)``, label int64
        ``(n_slices, size, size)``, spacing ``(z, y, x)`` mm, and ``meta`` with
        ``{"simulated": True, "has_tumour", "tumour", "normalisation", "tissue"}``, where
        ``"tissue"`` is the uint8 tissue map ``(n_slices, size, size)`` indexing
        :data:`TISSUE_NAMES` (the simulation's ground truth, for checks and figures).
    """
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in TISSUE_INTENSITY]
    if unknown or not modalities:
        raise InputError(f"simulated brain: unknown modalities {unknown or modalities}; choose from {MODALITIES}")
    if len(set(modalities)) != len(modalities):
        raise InputError(f"simulated brain: repeated modality in {modalities}")
    check_choice(labels, LABEL_SETS, "label set", "simulated brain")
    check_choice(normalisation, NORMALISATIONS, "normalisation", "simulated brain")
    if size < 32 or n_slices < 1 or n_volumes < 1:
        raise InputError(f"simulated brain: need size >= 32, n_slices >= 1, n_volumes >= 1; "
                         f"got size={size}, n_slices={n_slices}, n_volumes={n_volumes}")
    if not 0.0 <= tumour_probability <= 1.0:
        raise InputError(f"simulated brain: tumour_probability {tumour_probability} is not in [0, 1]")

    volumes = []
    for i in range(n_volumes):
        rng = np.random.default_rng([seed, i])
        tissue, coords, brain, spacing = _anatomy(rng, n_slices, size)
        has_tumour = bool(rng.random() < tumour_probability)
        tumour = _insert_tumour(rng, tissue, coords, brain, spacing) if has_tumour else None
        head = tissue != BACKGROUND
        image = np.stack([_normalise(_contrast(rng, tissue, m, spacing, noise, bias), head, normalisation)
                          for m in modalities]).astype(np.float32)
        core = (tissue == NECROSIS) | (tissue == ENHANCING)
        if labels == "whole":
            label = (core | (tissue == OEDEMA)).astype(np.int64)
        else:
            label = np.where(core, 1, np.where(tissue == OEDEMA, 2, 0)).astype(np.int64)
        volumes.append(Volume(
            image=image, label=label, spacing=tuple(float(s) for s in spacing), case_id=f"simbrain_{i:03d}",
            modalities=modalities, class_names=LABEL_SETS[labels],
            meta={"simulated": True, "source": "mixseg_lite.data.brain_sim (simulated)",
                  "has_tumour": has_tumour, "tumour": tumour, "normalisation": normalisation,
                  "tissue": tissue.astype(np.uint8)},
        ))
    return volumes
