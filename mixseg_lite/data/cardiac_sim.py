"""Simulated cardiac short-axis cine-MRI volumes: an offline stand-in for ACDC.

Everything here is *simulated*: procedurally drawn shapes, no patient data. The dataset mimics
what makes ACDC hard enough to teach with: an RV cavity and an LV cavity of the same brightness
told apart only by shape and position, a dark myocardial ring, bright distractors (fat, stomach,
aorta) labelled background, structures that shrink from base to apex, apical slices without
foreground, a bias field, noise, and thick slices (anisotropic spacing).

The anatomy is defined in millimetres on a fixed :data:`FIELD_OF_VIEW_MM` and only then
rasterised, so a given seed gives the same heart at ``size`` 64, 128 or 256; only the pixel size
changes. Per volume (all drawn from the seed):

- LV cavity and epicardium are two nested half-ellipsoids along the long axis; the stack starts
  just below the base and steps one slice thickness towards the apex, so apical slices shrink,
  then show myocardium only, then nothing;
- the RV cavity is an ellipse beside the septum minus the epicardium, i.e. a crescent, ending
  before the LV apex;
- around them: torso, subcutaneous and pericardial fat, lungs, liver, stomach, descending aorta,
  spine, RV free wall and papillary muscles (image only; papillary muscles count as LV cavity,
  as in ACDC);
- appearance: bSSFP-like intensities, a smooth multiplicative bias field, blur, Gaussian or
  Rician noise, slice-to-slice jitter of heart position and intensity.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError

CARDIAC_CLASSES = ("background", "RV cavity", "myocardium", "LV cavity")
"""Class names in ACDC label order: 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity."""

RV_CAVITY, MYOCARDIUM, LV_CAVITY = 1, 2, 3

FIELD_OF_VIEW_MM = 220.0
"""In-plane field of view; the pixel size is ``FIELD_OF_VIEW_MM / size``."""

MODALITY = "cine-MRI (simulated)"

_PSF_MM = 1.2  # scanner point-spread, so edges look partial-volumed like real cine images


def make_cardiac_volumes(n_volumes: int = 24, n_slices: int = 8, size: int = 64,
                         seed: int = 0) -> list[Volume]:
    """Simulated short-axis cardiac cine-MRI volumes with ACDC-style labels.

    Args:
        n_volumes: number of simulated patients.
        n_slices: short-axis slices per volume, from base towards apex; with many slices the
            extra apical ones are empty, as in real stacks that overshoot the apex.
        size: in-plane size ``H = W`` in pixels (>= 32); the anatomy in mm does not depend on it.
        seed: volume ``i`` depends only on ``(seed, i)``, so the first volumes are the same
            whatever ``n_volumes`` is.

    Returns:
        ``n_volumes`` :class:`Volume` objects: image float32 ``(1, n_slices, size, size)``
        min-max scaled to [0, 1] per volume, label int64 ``(n_slices, size, size)`` with classes
        :data:`CARDIAC_CLASSES`, spacing ``(8..10, FOV/size, FOV/size)`` mm, case ids
        ``simcardiac_000``, ... and ``meta["simulated"] = True``.
    """
    for name, value, minimum in (("n_volumes", n_volumes, 1), ("n_slices", n_slices, 1),
                                 ("size", size, 32), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
            raise InputError(f"make_cardiac_volumes: {name} must be an integer >= {minimum}, got {value!r}")
    streams = np.random.SeedSequence(int(seed)).spawn(int(n_volumes))
    return [_simulate_volume(i, stream, int(n_slices), int(size), int(seed))
            for i, stream in enumerate(streams)]


def left_ventricle_only(volumes: list[Volume]) -> list[Volume]:
    """The binary task of the authors' script (background / LV cavity): the same images, with RV
    cavity and myocardium relabelled background. Case ids gain the suffix ``_lv``."""
    return [dataclasses.replace(v, label=(v.label == LV_CAVITY).astype(np.int64), case_id=f"{v.case_id}_lv",
                                class_names=("background", CARDIAC_CLASSES[LV_CAVITY]))
            for v in volumes]


def _simulate_volume(index: int, stream: np.random.SeedSequence, n_slices: int, size: int,
                     seed: int) -> Volume:
    anatomy_stream, noise_stream = stream.spawn(2)
    # Every anatomy/appearance draw comes from this generator in a size-independent order, and
    # only the noise samples (whose count depends on size) from the other one.
    rng = np.random.default_rng(anatomy_stream)
    pixel_mm = FIELD_OF_VIEW_MM / size
    thickness_mm = round(rng.uniform(8.0, 10.0) * 2) / 2
    depth_mm = (rng.uniform(0.0, 6.0) + thickness_mm * np.arange(n_slices))[:, None, None]
    centres = (np.arange(size) + 0.5) * pixel_mm - FIELD_OF_VIEW_MM / 2  # x right, y down
    x, y = centres[None, None, :], centres[None, :, None]

    label, heart, heart_info = _heart(rng, x, y, depth_mm)
    body = _body(rng, x, y, depth_mm, heart_info["centre_mm"])
    image, appearance = _paint(rng, label, heart, body, n_slices)
    image, noise_info = _degrade(rng, np.random.default_rng(noise_stream), image, x, y,
                                 depth_mm, pixel_mm)
    image = (image - image.min()) / (image.max() - image.min())

    meta = {"simulated": True, "seed": seed, "volume_index": index,
            "source": "simulated cardiac short-axis cine-MRI (mixseg_lite.data.cardiac_sim)",
            "field_of_view_mm": FIELD_OF_VIEW_MM, **heart_info, **appearance, **noise_info}
    return Volume(image[None].astype(np.float32), label, (thickness_mm, pixel_mm, pixel_mm),
                  f"simcardiac_{index:03d}", (MODALITY,), CARDIAC_CLASSES, meta)


def _ellipsoid_scale(depth_mm: np.ndarray, length_mm: float) -> np.ndarray:
    """In-plane shrink factor of a half-ellipsoid ``length_mm`` long, at each depth (0 past it)."""
    return np.sqrt(np.clip(1.0 - (depth_mm / length_mm) ** 2, 0.0, None))


def _inside_ellipse(u, v, semi_u, semi_v) -> np.ndarray:
    """``(u/semi_u)^2 + (v/semi_v)^2 < 1``; zero semi-axes give empty masks instead of NaNs."""
    semi_u, semi_v = np.maximum(semi_u, 1e-6), np.maximum(semi_v, 1e-6)
    return (u / semi_u) ** 2 + (v / semi_v) ** 2 < 1.0


def _rotate(x, y, centre_x, centre_y, angle):
    """Coordinates relative to a centre, in a frame rotated by ``angle`` (radians)."""
    dx, dy = x - centre_x, y - centre_y
    cos, sin = np.cos(angle), np.sin(angle)
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _heart(rng, x, y, depth_mm):
    """Label map of RV, myocardium and LV, plus image-only heart parts, all in mm geometry."""
    n_slices = depth_mm.shape[0]
    base_x, base_y = rng.normal(12.0, 7.0), rng.normal(-5.0, 7.0)
    # A tilted long axis drifts the centre from base to apex; breath-holds add jitter.
    drift = rng.normal(0.0, 5.0, size=2)
    jitter = rng.normal(0.0, 1.2, size=(2, n_slices, 1, 1))
    centre_x = base_x + drift[0] * depth_mm / 50.0 + jitter[0]
    centre_y = base_y + drift[1] * depth_mm / 50.0 + jitter[1]
    # u points from the LV towards the RV: image left and a bit up, as in short-axis views.
    angle = np.pi + rng.uniform(0.05, 0.6) + rng.normal(0.0, 0.04, size=(n_slices, 1, 1))
    u, v = _rotate(x, y, centre_x, centre_y, angle)
    rho, theta = np.hypot(u, v), np.arctan2(v, u)

    cavity_radius_mm = rng.uniform(20.0, 27.5)
    ellipticity = rng.uniform(0.0, 0.12)
    wall_mm = rng.uniform(6.0, 11.0)
    wall_harmonics = rng.uniform(0.0, [0.2, 0.12]), rng.uniform(0.0, 2 * np.pi, size=2)
    cavity_length_mm = rng.uniform(50.0, 72.0)
    epicardium_length_mm = cavity_length_mm + wall_mm * rng.uniform(0.7, 1.0)

    unit_ellipse = 1.0 / np.hypot(np.cos(theta) / (1 + ellipticity), np.sin(theta) / (1 - ellipticity))
    amplitudes, phases = wall_harmonics
    wall = wall_mm * (1 + amplitudes[0] * np.cos(theta - phases[0])
                      + amplitudes[1] * np.cos(2 * theta - phases[1]))
    cavity_scale = _ellipsoid_scale(depth_mm, cavity_length_mm)
    epicardium_scale = _ellipsoid_scale(depth_mm, epicardium_length_mm)
    lv = rho < cavity_radius_mm * unit_ellipse * cavity_scale
    epicardium_radius = (cavity_radius_mm * unit_ellipse + wall) * epicardium_scale
    heart_disc = rho < epicardium_radius

    # RV: an ellipse overlapping the septum; what lies outside the epicardium is a crescent.
    outer_mm = cavity_radius_mm + wall_mm
    rv_length_mm = cavity_length_mm * rng.uniform(0.6, 0.85)
    rv_scale = _ellipsoid_scale(depth_mm, rv_length_mm)
    rv_offset = rng.uniform(0.45, 0.65) * outer_mm * epicardium_scale
    rv_semi_u = rng.uniform(0.95, 1.2) * outer_mm * rv_scale
    rv_semi_v = rng.uniform(1.2, 1.45) * outer_mm * rv_scale
    rv_ellipse = _inside_ellipse(u - rv_offset, v, rv_semi_u, rv_semi_v)
    rv_wall_mm = rng.uniform(2.5, 4.0)
    rv_wall = (_inside_ellipse(u - rv_offset, v, rv_semi_u + rv_wall_mm, rv_semi_v + rv_wall_mm)
               & (rv_scale > 0) & ~rv_ellipse & ~heart_disc)

    label = np.zeros(lv.shape, dtype=np.int64)
    label[rv_ellipse & ~heart_disc] = RV_CAVITY
    label[heart_disc] = MYOCARDIUM
    label[lv] = LV_CAVITY
    # At coarse pixel sizes a thin wall can break; close the ring so the cavity never touches
    # anything but myocardium, as in ACDC ground truth.
    ring = ndimage.binary_dilation(label == LV_CAVITY, structure=np.ones((1, 3, 3), bool))
    label[ring & (label != LV_CAVITY)] = MYOCARDIUM

    # Papillary muscles: dark spots on the lateral side of the cavity, labelled LV as in ACDC.
    papillary = np.zeros(lv.shape, dtype=bool)
    in_mid_ventricle = (depth_mm > 0.1 * cavity_length_mm) & (depth_mm < 0.75 * cavity_length_mm)
    for side in (-1.0, 1.0):
        spot_angle = np.pi + side * rng.uniform(0.6, 1.1)
        spot_radius = rng.uniform(0.13, 0.2) * cavity_radius_mm * cavity_scale
        spot_distance = rng.uniform(0.5, 0.65) * cavity_radius_mm * cavity_scale
        papillary |= _inside_ellipse(u - spot_distance * np.cos(spot_angle),
                                     v - spot_distance * np.sin(spot_angle), spot_radius, spot_radius)
    papillary &= in_mid_ventricle & (label == LV_CAVITY)

    fat_mm, fat_angle = rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi)
    pericardial_fat = ((rho < epicardium_radius + fat_mm) & ~heart_disc & ~rv_ellipse & ~rv_wall
                       & (np.cos(theta - fat_angle) > 0.4) & (epicardium_scale > 0))

    info = {"centre_mm": (float(base_x), float(base_y)), "lv_radius_mm": float(cavity_radius_mm),
            "wall_thickness_mm": float(wall_mm), "lv_length_mm": float(cavity_length_mm)}
    return label, {"papillary": papillary, "rv_wall": rv_wall, "pericardial_fat": pericardial_fat}, info


def _body(rng, x, y, depth_mm, heart_centre):
    """Masks of the structures around the heart (all labelled background)."""
    heart_x, heart_y = heart_centre
    torso_x, torso_y = rng.normal(0.0, 4.0), rng.normal(8.0, 4.0)
    torso_semi = rng.uniform(112.0, 130.0), rng.uniform(88.0, 102.0)
    tu, tv = _rotate(x, y, torso_x, torso_y, rng.normal(0.0, 0.05))
    torso = _inside_ellipse(tu, tv, *torso_semi)
    fat_mm = rng.uniform(5.0, 14.0)
    inner = _inside_ellipse(tu, tv, torso_semi[0] - fat_mm, torso_semi[1] - fat_mm)

    def blob(centre_x, centre_y, semi_x, semi_y):
        return _inside_ellipse(x - centre_x, y - centre_y, semi_x, semi_y) & inner

    # The lungs wrap the heart laterally and posteriorly (the heart is painted over them), so
    # the epicardium borders dark lung there and similar-looking chest wall at the front.
    right_lung = blob(heart_x - rng.uniform(50.0, 65.0), heart_y + rng.uniform(10.0, 25.0),
                      rng.uniform(38.0, 48.0), rng.uniform(60.0, 75.0))
    left_lung = blob(heart_x + rng.uniform(40.0, 55.0), heart_y + rng.uniform(5.0, 20.0),
                     rng.uniform(32.0, 42.0), rng.uniform(55.0, 70.0))
    # The diaphragm rises towards the apex, so liver and stomach move up the image with depth.
    rise = rng.uniform(0.5, 0.9) * depth_mm
    liver = blob(heart_x - rng.uniform(30.0, 50.0), heart_y + rng.uniform(95.0, 115.0) - rise,
                 rng.uniform(70.0, 90.0), rng.uniform(45.0, 60.0))
    stomach = blob(heart_x + rng.uniform(45.0, 65.0), heart_y + rng.uniform(85.0, 100.0) - rise,
                   rng.uniform(18.0, 28.0), rng.uniform(14.0, 22.0)) & (rng.uniform() < 0.7)
    aorta_x = torso_x + rng.uniform(18.0, 32.0)
    aorta_radius = rng.uniform(10.0, 13.0)
    aorta = blob(aorta_x, torso_y + 0.5 * torso_semi[1], aorta_radius, aorta_radius)
    spine_x = torso_x + rng.normal(0.0, 4.0)
    spine_radius = rng.uniform(14.0, 18.0)
    spine = blob(spine_x, torso_y + 0.75 * torso_semi[1], spine_radius, spine_radius)
    return {"torso": torso, "subcutaneous_fat": torso & ~inner, "lung": left_lung | right_lung,
            "liver": liver, "stomach": stomach, "aorta": aorta, "spine": spine}


def _paint(rng, label, heart, body, n_slices):
    """bSSFP-like image: bright blood and fat, dark myocardium, very dark lungs."""
    blood = rng.uniform(0.8, 1.0)
    # Relative to blood; the same blood value for LV and RV so intensity cannot separate them.
    relative = {"torso": rng.uniform(0.25, 0.4), "subcutaneous_fat": rng.uniform(0.7, 0.95),
                "lung": rng.uniform(0.02, 0.08), "liver": rng.uniform(0.35, 0.55),
                "stomach": rng.uniform(0.5, 0.95), "aorta": rng.uniform(0.8, 1.0),
                "spine": rng.uniform(0.3, 0.5)}
    myocardium = rng.uniform(0.2, 0.38)
    fat = relative["subcutaneous_fat"]
    image = np.zeros(label.shape)
    for name, value in relative.items():
        image = np.where(body[name], value, image)  # some body masks are shared by all slices
    image[heart["pericardial_fat"]] = fat
    image[heart["rv_wall"]] = myocardium
    image[label == MYOCARDIUM] = myocardium
    image[(label == RV_CAVITY) | (label == LV_CAVITY)] = 1.0
    image[heart["papillary"]] = myocardium
    # Cine slices are acquired in separate breath-holds, so their brightness differs a little.
    image *= blood * rng.uniform(0.93, 1.07, size=(n_slices, 1, 1))
    return image, {"blood_intensity": float(blood), "myocardium_contrast": float(myocardium)}


def _degrade(rng, noise_rng, image, x, y, depth_mm, pixel_mm):
    """Bias field, blur and noise; noise samples come from ``noise_rng`` alone."""
    half = FIELD_OF_VIEW_MM / 2
    xn, yn = x / half, y / half
    zn = (depth_mm - depth_mm.mean()) / (np.ptp(depth_mm) + 1.0)
    coefficients = rng.normal(0.0, 0.12, size=6)
    log_bias = sum(c * term for c, term in zip(coefficients, (xn, yn, xn ** 2, yn ** 2, xn * yn, zn)))
    image = image * np.exp(log_bias)
    # Pixel-area averaging (~0.3 px) plus the PSF, so edges look alike at every size.
    sigma_px = np.hypot(_PSF_MM / pixel_mm, 0.3)
    image = ndimage.gaussian_filter(image, sigma=(0, sigma_px, sigma_px))

    sigma = rng.uniform(0.015, 0.07)
    rician = bool(rng.uniform() < 0.5)
    if rician:  # magnitude of complex Gaussian noise: a Rayleigh floor in the air
        image = np.hypot(image + noise_rng.normal(0.0, sigma, image.shape),
                         noise_rng.normal(0.0, sigma, image.shape))
    else:
        image = image + noise_rng.normal(0.0, sigma, image.shape)
    return image, {"noise": "rician" if rician else "gaussian", "noise_sigma": float(sigma),
                   "bias_coefficients": [float(c) for c in coefficients]}
