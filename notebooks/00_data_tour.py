# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · A tour of the data: simulated hearts and brains, a real atlas, weak labels
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mixseg-lite/mixseg-lite/blob/main/notebooks/00_data_tour.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/mixseg-lite/mixseg-lite/main?labpath=notebooks%2F00_data_tour.ipynb)
#
# **Learning goals**
# 1. Know every dataset the other notebooks use: what it shows, how big it is, how rare each
#    class is, and which ones are *simulated* and which one is *real*.
# 2. Read every kind of weak label (seeds, scribbles, boxes, points, image tags): which pixels it
#    labels, and what it says about the background.
# 3. Predict what the seeds of Liu et al. look like at a given resolution: when a structure is
#    too thin for 10 erosions, and what is left of it then.
# 4. Browse volumes slice by slice and contrast by contrast.
#
# **Reading time:** about 15 minutes. **Run time:** about 10 s on a 2-core CPU without AVX-512
# at the default parameters.
#
# **Data:** generated on the fly (simulated cardiac and brain MRI: drawn, not scanned), a brain
# phantom (simulated tumours and MR contrasts on the real anatomy of the ICBM152 template, from
# the `nilearn` package), the Colin27 brain with its AAL atlas from the Debian package
# `mricron-data` (real), and optionally a public dataset you downloaded yourself (`data_dir`).
#
# Terms in *italics* on first use are defined in the
# [glossary](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/glossary.md).

# %%
# NBVAL_IGNORE_OUTPUT
# On Colab only: fetch and install mixseg-lite (Binder and local installs already have it).
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    REPOSITORY_URL = "https://github.com/mixseg-lite/mixseg-lite"  # = mixseg_lite.REPOSITORY_URL (a test checks it)
    if subprocess.run(["git", "clone", "--depth", "1", REPOSITORY_URL, "/content/mixseg-lite"]).returncode != 0:
        sys.exit(f"could not clone {REPOSITORY_URL}: check that this Colab runtime is online (Runtime > "
                 "Restart), or upload the repository to /content/mixseg-lite and run this cell again")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/mixseg-lite"], check=True)
    # The real atlas dataset (Colin27 + AAL) ships in the Debian package mricron-data.
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "mricron-data"], check=True)
    os.chdir("/content/mixseg-lite/notebooks")

# %% tags=["parameters"]
seed = 0
num_threads = 2
output_dir = "outputs/00_data_tour"
image_size = 64
cardiac_volumes = 6
cardiac_slices = 8
brain_volumes = 4
brain_slices = 16
brain_modalities = ["T1", "T2", "FLAIR"]  # procedural brains
phantom_modalities = ["T1", "T1ce", "T2", "FLAIR"]  # the phantom (any of these)
weak_seed = 0
# Widgets: None detects a live Jupyter front end; True draws static figures (batch runs set it:
# `papermill -p static_figures True`, `mixseg-lite run` and `sweep`); False forces widgets.
static_figures = None
# A public dataset you downloaded, in its distributed layout; None skips that section.
data_dir = None
public_dataset = "acdc"  # the layout of data_dir: acdc, brats, decathlon (any task) or decathlon_prostate
max_cases = 4  # cases of the public dataset to load for the tour

# %%
import importlib.util

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from scipy import ndimage

import mixseg_lite
from mixseg_lite.data.atlas import DEFAULT_GROUPS, atlas_split, load_atlas
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.parameters import check_parameters
from mixseg_lite.plotting import class_legend, draw_structure_boxes, show_overlay
from mixseg_lite.results import format_table, write_metrics
from mixseg_lite.weak import WEAK_KINDS, image_tags, make_weak_label
from mixseg_lite.widgets import WEAK_BACKGROUND_COLOUR, browse_volume, compose_slice

# Every parameter above, checked here (a bad value stops with one line naming it) and recorded
# in metrics.json.
params = check_parameters(globals())
device = mixseg_lite.setup_notebook(seed, num_threads)
summaries = []  # one row per dataset for metrics.json


def summarize_volumes(name, volumes):
    """Counts and class frequencies of a list of volumes, printed rounded and kept for metrics.json."""
    labels = np.concatenate([v.label.reshape(-1) for v in volumes])
    frequencies = np.bincount(labels, minlength=volumes[0].num_classes) / labels.size
    positive = np.concatenate([(v.label > 0).any(axis=(1, 2)) for v in volumes])
    row = {"method": name, "volumes": len(volumes), "slices": int(sum(v.num_slices for v in volumes)),
           "foreground_fraction": float(1 - frequencies[0]), "positive_slice_fraction": float(positive.mean())}
    summaries.append(row)
    first = volumes[0]
    print(f"{name}: {row['volumes']} volumes, {row['slices']} slices of {first.image.shape[2]}x{first.image.shape[3]}, "
          f"modalities {list(first.modalities)}")
    print(f"spacing (z, y, x) of {first.case_id}: {tuple(round(s, 2) for s in first.spacing)} mm")
    print(f"slices with foreground: {row['positive_slice_fraction']:.3f}")
    print("pixel fraction per class: " + ", ".join(f"{c} {f:.4f}" for c, f in zip(first.class_names, frequencies)))
    return row


# %% [markdown]
# ## 1. Simulated cardiac MRI (a stand-in for ACDC)
#
# Short-axis cine-MRI stacks drawn procedurally: *simulated*, no patient data. Each volume runs
# from the base of the heart towards the apex with thick slices (8-10 mm, as in ACDC), so the
# structures shrink and the last slices hold little or no heart. Labels follow ACDC: RV cavity,
# myocardium, LV cavity. RV and LV blood have the same brightness and are told apart only by
# shape and position. Fat, stomach and aorta are bright distractors labelled background.
#
# Notice how rare the foreground is: a network that predicts background everywhere is right on
# about 93% of the pixels, which is why the notebooks score with Dice, not pixel accuracy.

# %%
# NBVAL_CHECK_OUTPUT
cardiac = make_cardiac_volumes(cardiac_volumes, cardiac_slices, image_size, seed=seed)
cardiac_row = summarize_volumes("simulated_cardiac", cardiac)
assert cardiac_row["slices"] == cardiac_volumes * cardiac_slices and 0.0 < cardiac_row["foreground_fraction"] < 0.2

# %%
volume = cardiac[0]
shown = [0, cardiac_slices // 3, 2 * cardiac_slices // 3, cardiac_slices - 1]
fig, axes = plt.subplots(2, len(shown), figsize=(2.2 * len(shown), 4.6))
for column, z in enumerate(shown):
    show_overlay(axes[0, column], volume.image[0, z], None, volume.num_classes, f"z={z} (base → apex)")
    show_overlay(axes[1, column], volume.image[0, z], volume.label[z], volume.num_classes, f"z={z}: full mask")
fig.suptitle(f"Simulated cardiac volume {volume.case_id}: slices from base to apex (top), their labels (bottom)",
             fontsize=10)
fig.tight_layout()
class_legend(fig, volume.class_names, loc="lower center", ncol=volume.num_classes - 1)
fig.subplots_adjust(bottom=0.1)

# %% [markdown]
# ## 2. Weak labels, derived from the full masks
#
# A *weak label* is computed deterministically from a full mask and a seed, and never lies:
# wherever it labels a pixel, the full mask has that class. It only hides information, by
# leaving pixels unlabelled. In the figures below a coloured pixel carries a label; **purple
# marks pixels labelled background**; untinted pixels are unlabelled.
#
# * `seeds`: the setting of Liu et al. (mixed supervision): each structure eroded 10 times,
#   leaving a few pixels inside it (section 2b). No background pixel is labelled.
# * `scribbles`: a stroke along the middle of each structure, plus background strokes around it.
# * `boxes`: everything outside the tight box of each structure is background; the inside is
#   unlabelled. The outline's colour says which class the box holds.
# * `points`: a few clicks per class, background included.
# * `full`: the full mask (the *upper bound*'s label).
# * image-level *tags*: only which classes appear in the slice (Patel & Dolz's setting, notebook 03).

# %%
z = int(np.argmax([(volume.label[k] > 0).sum() for k in range(volume.num_slices)]))
weak = {kind: make_weak_label(volume.label[z], kind, seed=weak_seed, num_classes=volume.num_classes)
        for kind in WEAK_KINDS}
window = (float(volume.image[0].min()), float(volume.image[0].max()))  # as the full-mask panel
fig, axes = plt.subplots(1, len(WEAK_KINDS) + 1, figsize=(2.2 * (len(WEAK_KINDS) + 1), 2.7))
show_overlay(axes[0], volume.image[0, z], volume.label[z], volume.num_classes, "full mask (reference)")
for ax, (kind, mask) in zip(axes[1:], weak.items()):
    # Labelled background is tinted purple: for boxes, scribbles, points and full it is information.
    ax.imshow(compose_slice(volume.image[0, z], mask, volume.num_classes, window, weak=True))
    if kind == "boxes":  # the inside of a box is unlabelled: its outline colour names the class it holds
        draw_structure_boxes(ax, volume.label[z], volume.num_classes)
    ax.set_title(f"{kind} (weak label)" if kind != "full" else "full (as a weak label)", fontsize=9)
    ax.set_axis_off()
fig.suptitle(f"The weak labels of slice z={z} of {volume.case_id}: a class colour labels that class, purple labels "
             "background,\nno tint = unlabelled; a box's outline colour is the class inside it", fontsize=9)
fig.tight_layout(rect=(0, 0, 1, 0.97))
class_legend(fig, ("labelled background", *volume.class_names[1:]), loc="lower center", ncol=volume.num_classes,
             colours=[WEAK_BACKGROUND_COLOUR])
fig.subplots_adjust(bottom=0.14)

# %% [markdown]
# How much each kind labels, on this slice (fractions of its pixels), and the image-level tags of
# every slice of the volume: the apical slices carry fewer classes, and the last holds none.

# %%
# NBVAL_CHECK_OUTPUT
rows = []
for kind, mask in weak.items():
    labelled = mask != mixseg_lite.UNLABELLED
    assert (mask[labelled] == volume.label[z][labelled]).all(), f"{kind} contradicts the full mask"
    rows.append({"kind": kind, "labelled pixels": float(labelled.mean()),
                 "labelled background": float((mask == 0).mean()),
                 "classes seen": int(len(set(np.unique(mask[labelled])) - {0}))})
print(f"slice z={z} of {volume.case_id}; every weak label agrees with the full mask where it labels")
print(format_table(rows, ["kind", "labelled pixels", "labelled background", "classes seen"]))
tags = image_tags(volume.label, volume.num_classes)
for c, name in enumerate(volume.class_names[1:], start=1):
    print(f"tag '{name}' is on slices z = {[int(k) for k in np.flatnonzero(tags[:, c])]} of {volume.num_slices}")

# %% [markdown]
# ## 2b. Seeds: a blob deep inside, or a thin line?
#
# Seeds keep the pixels that survive $k$ erosions with a $3 \times 3$ square: those whose
# chessboard distance $d_\infty(x)$ to the outside of their structure $S$ exceeds $k$. Per
# structure,
#
# $$\text{seed}(S) = \{x \in S : d_\infty(x) > k_S\}, \qquad k_S = \min\bigl(10,\ \max_{x \in S} d_\infty(x) - 1\bigr). \tag{1}$$
#
# Ten erosions need a structure more than 20 pixels thick. A thinner one would vanish, so the
# erosion falls back to the most it survives ($k_S < 10$), leaving its innermost layer: a line
# along its middle (for a ring, a thin ring) or a single pixel.
#
# At 64x64 (3.4 mm pixels) all three cardiac structures fall back; the myocardium, whose
# innermost pixels lie 2 pixels from its edge, is eroded once and keeps a thin ring. At 256x256
# (0.86 mm; the authors' code resizes ACDC slices to 256x256) the RV and LV cavities take all 10
# erosions and keep large pieces, while the myocardium still falls back.

# %%
# NBVAL_CHECK_OUTPUT
fine = make_cardiac_volumes(1, cardiac_slices, 256, seed=seed)[0]  # the same anatomy as `volume`, at 256x256
assert fine.case_id == volume.case_id
erosion_rows = []
for shown_volume in (volume, fine):
    label = shown_volume.label[z]
    seeds = make_weak_label(label, "seeds", num_classes=shown_volume.num_classes)
    for c, name in enumerate(shown_volume.class_names[1:], start=1):
        if not (label == c).any():
            continue
        depth = ndimage.distance_transform_cdt(np.pad(label == c, 1), metric="chessboard")  # d_inf of (1)
        erosions = min(10, int(depth.max()) - 1)  # k_S of (1) (of the class's thickest structure)
        erosion_rows.append({"image": f"{label.shape[0]}x{label.shape[1]}", "class": name,
                             "thickest (d_inf, px)": int(depth.max()), "erosions k_S": erosions,
                             "seed pixels": int((seeds == c).sum()), "structure pixels": int((label == c).sum())})
print(f"slice z={z} of {volume.case_id}: pixels of {volume.spacing[1]:.2f} mm ({image_size}x{image_size}) "
      f"and {fine.spacing[1]:.2f} mm (256x256)")
print(format_table(erosion_rows, list(erosion_rows[0])))

# %%
fig, axes = plt.subplots(1, 4, figsize=(9.2, 2.7))
for column, shown_volume in enumerate((volume, fine)):
    label = shown_volume.label[z]
    rows_, cols_ = np.nonzero(label)
    margin = label.shape[0] // 16
    crop = (slice(max(rows_.min() - margin, 0), rows_.max() + margin + 1),
            slice(max(cols_.min() - margin, 0), cols_.max() + margin + 1))
    seeds = make_weak_label(label, "seeds", num_classes=shown_volume.num_classes)
    size = f"{label.shape[0]}x{label.shape[1]}"
    show_overlay(axes[2 * column], shown_volume.image[0, z][crop], label[crop], shown_volume.num_classes,
                 f"{size}: full mask")
    show_overlay(axes[2 * column + 1], shown_volume.image[0, z][crop], seeds[crop], shown_volume.num_classes,
                 f"{size}: seeds", alpha=1.0)
fig.suptitle(f"Seeds (weak label) of slice z={z}, zoomed on the heart: at 64x64 every structure is too thin for "
             "10 erosions (lines, a thin ring);\nat 256x256 the cavities keep large pieces, the myocardium only its "
             "innermost pixels",
             fontsize=9)
fig.tight_layout()
class_legend(fig, volume.class_names, loc="lower center", ncol=volume.num_classes - 1)
fig.subplots_adjust(bottom=0.1)

# %% [markdown]
# ## 3. Multi-contrast brain MRI with tumours (stand-ins for BraTS)
#
# No package ships two or more real, co-registered MRI contrasts with labels, so the
# cross-modal method of notebook 03 is taught on *simulated* brains: one anatomy per volume shown
# in several contrasts, a tumour in most volumes, and most slices without tumour, so a slice's
# tag (tumour present or not) carries information. The label of notebook 03 is the whole tumour.
# There are two simulations.
#
# **3a. Procedural brains** (`simulated_brain`): ellipses for skull, cortex, white matter and
# ventricles, a round tumour with necrotic core, enhancing rim and oedema; each contrast is a
# table of intensities per tissue, then bias field and Rician noise. Cartoons, but fast and
# fully controlled.

# %%
# NBVAL_CHECK_OUTPUT
has_brain_sim = importlib.util.find_spec("mixseg_lite.data.brain_sim") is not None
if has_brain_sim:
    from mixseg_lite.data.brain_sim import make_brain_volumes

    brains = make_brain_volumes(brain_volumes, brain_slices, image_size, modalities=tuple(brain_modalities),
                                seed=seed)
    brain_row = summarize_volumes("simulated_brain", brains)
    print(f"volumes with a tumour: {sum(v.meta['has_tumour'] for v in brains)} of {len(brains)}")
    assert brain_row["positive_slice_fraction"] < 1.0  # tumour-free slices exist: tags carry information
else:
    brains = []
    print("mixseg_lite.data.brain_sim is not available in this version: section skipped")

# %% [markdown]
# **3b. The brain phantom** (`brain_phantom`, the default of notebook 03): *real anatomy* with
# simulated tumours and simulated MR physics, as the BrainWeb simulator does it. The anatomy is
# the ICBM152 2009 template (grey-matter, white-matter and CSF maps of an average of 152 adult
# brains, shipped inside the `nilearn` package; MNI licence notice in `mixseg_lite/data/NOTICE`).
# **Every subject is that same average brain**, warped by a random affine and a smooth elastic
# deformation: subjects differ in pose, size and shape, not in anatomy. A tumour sits in white
# matter: a necrotic core, an enhancing rim a few mm thick, and oedema that spreads along white
# matter and spares cortex and CSF, pushing the tissue around it outwards (mass effect).
#
# Each contrast is computed from each tissue's relaxation times $T_1$, $T_2$ and proton density
# $\rho$ with the spin-echo signal equation (repetition time TR, echo time TE)
#
# $$S_{\mathrm{SE}} = \rho\,\big(1 - e^{-\mathrm{TR}/T_1}\big)\,e^{-\mathrm{TE}/T_2}, \tag{2}$$
#
# and FLAIR with an inversion pulse at time TI before it,
#
# $$S_{\mathrm{FLAIR}} = \rho\,\big|1 - 2e^{-\mathrm{TI}/T_1} + e^{-\mathrm{TR}/T_1}\big|\,e^{-\mathrm{TE}/T_2}, \tag{3}$$
#
# with TI chosen so that CSF gives no signal ($\mathrm{TI} = T_1^{\mathrm{CSF}}\ln 2$ when TR is
# long). A short TR makes T1 weighting (tissue with short $T_1$ bright: white matter), a long TR
# and TE make T2 weighting (long $T_2$ bright: CSF and oedema), and T1ce is T1 after a contrast
# agent that shortens $T_1$ where the blood-brain barrier leaks: the enhancing rim. A voxel that
# holds several tissues gets the mix of their signals (partial volume). The table below is what
# (2) and (3) give for each tissue, relative to white matter; the relaxation times and their
# sources are in `mixseg_lite/data/phantom.py` (`RELAXATION`).

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.data.brain_sim import TISSUE_NAMES

if importlib.util.find_spec("nilearn") is not None:
    from mixseg_lite.data.phantom import make_phantom_volumes, tissue_signals

    PHANTOM_TISSUES = ["white matter", "grey matter", "CSF", "oedema", "enhancing rim", "necrosis"]

    phantoms = make_phantom_volumes(brain_volumes, brain_slices, image_size, modalities=tuple(phantom_modalities),
                                    labels="regions", seed=seed)
    phantom_row = summarize_volumes("brain_phantom", phantoms)
    print(f"volumes with a tumour: {sum(v.meta['has_tumour'] for v in phantoms)} of {len(phantoms)}")
    signal_rows = []
    for name in phantoms[0].modalities:
        signals = tissue_signals(name)  # equation (2), or (3) for FLAIR, before bias, noise and normalisation
        white = signals[TISSUE_NAMES.index("white matter")]
        signal_rows.append({"contrast": name, **{t: signals[TISSUE_NAMES.index(t)] / white for t in PHANTOM_TISSUES}})
    print("signal of each tissue relative to white matter (1.00), from the signal equations:")
    print(format_table(signal_rows, ["contrast", *PHANTOM_TISSUES], digits=2))
else:
    phantoms = []
    print("nilearn (which ships the ICBM152 template) is not installed: phantom skipped")

# %%
# Both simulations side by side: top row the procedural brain (whole tumour tinted), bottom row
# the phantom in its contrasts with the outline of each tumour compartment (BraTS's regions).
from mixseg_lite.plotting import show_outlines

rows = [(v, kind) for v, kind in ((brains, "procedural"), (phantoms, "phantom")) if v]
if rows:
    columns = max(len(v[0].modalities) + (kind == "procedural") for v, kind in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.6 * len(rows) + 0.6), squeeze=False)
    for row_axes, (volumes, kind) in zip(axes, rows):
        shown_volume = max(volumes, key=lambda v: int((v.label > 0).sum()))
        z = int(np.argmax((shown_volume.label > 0).sum(axis=(1, 2))))
        for ax, (m, name) in zip(row_axes, enumerate(shown_volume.modalities)):
            if kind == "phantom":
                show_outlines(ax, shown_volume.image[m, z], shown_volume.label[z], shown_volume.num_classes,
                              f"phantom {shown_volume.case_id}: {name}")
            else:
                show_overlay(ax, shown_volume.image[m, z], None, shown_volume.num_classes,
                             f"procedural {shown_volume.case_id}: {name}")
        if kind == "procedural":
            last = row_axes[len(shown_volume.modalities)]
            show_overlay(last, shown_volume.image[-1, z], shown_volume.label[z], shown_volume.num_classes,
                         f"{shown_volume.modalities[-1]} + whole tumour (orange)")
        else:
            class_legend(fig, [f"{name} (outline)" for name in shown_volume.class_names], loc="lower center",
                         ncol=shown_volume.num_classes - 1)
        for ax in row_axes[len(shown_volume.modalities) + (kind == "procedural"):]:
            ax.set_axis_off()
    fig.suptitle(f"Slice with the most tumour of the volume with the largest tumour: procedural ellipses (top), "
                 f"real ICBM152 anatomy with MR physics (bottom)", fontsize=9)
    fig.tight_layout()
    fig.subplots_adjust(bottom=0.08)

# %% [markdown]
# Look at the phantom row with the table above: white matter is brighter than grey matter in T1
# and darker in T2; CSF (the ventricles) is bright in T2 and black in FLAIR; the oedema is bright
# in T2 and FLAIR and spreads along white matter around the tumour; only T1ce shows the
# enhancing rim. This is the cross-modal idea notebook 03 rests on: one anatomy and one tumour,
# seen differently by each contrast.
#
# **What is still unrealistic.** One averaged anatomy for every subject (no individual folding,
# atrophy or asymmetry, and averaging blurs the cortex); no vessels, dura, choroid plexus or
# tissue texture; idealised spin-echo physics with fixed relaxation times (no flow, no
# susceptibility, no coil profiles beyond a smooth bias); exact labels, where real BraTS labels
# carry the disagreement of human raters. A method that works here has passed a sanity check on
# real geometry, not a clinical test.

# %% [markdown]
# ## 4. A real brain with real labels: Colin27 and the AAL atlas
#
# This one is **real**: Colin27 is one person's T1-weighted MRI (27 scans averaged), and the AAL
# atlas was drawn by hand on that same brain. Grouping AAL regions gives six deep structures:
# caudate, putamen, pallidum, thalamus, hippocampus and amygdala (left and right together).
#
# There is only **one subject**, so "volumes" are contiguous *blocks* of 4 axial slices, with 2
# slices dropped between neighbouring blocks: adjacent 1-mm slices look almost the same, and
# without the gap a test score would partly measure memorisation. The split deals blocks out so
# every group spans the whole height of the brain, because which structures a slice contains
# depends mostly on its height.

# %%
# NBVAL_CHECK_OUTPUT
try:
    blocks = load_atlas(size=image_size)
except mixseg_lite.InputError as error:  # mricron-data not installed
    blocks = []
    print(f"atlas section skipped: {error}")
if blocks:
    atlas_row = summarize_volumes("atlas", blocks)
    atlas_splits = atlas_split(blocks, {"full": 2, "weak": 4, "val": 1, "test": 3}, seed=seed)
    for group, members in atlas_splits.items():
        print(f"{group:>5}: blocks starting at axial slices {[v.meta['slices'][0] for v in members]}")
    print("AAL regions per class:", {name: list(ids) for name, ids in DEFAULT_GROUPS.items()})
    assert len(blocks) == sum(len(m) for m in atlas_splits.values())

# %% [markdown]
# ## 5. Browsing volumes
#
# `browse_volume` gives a slice slider, a contrast menu and an overlay toggle (nothing, the full
# labels, or a weak label) when a live Jupyter front end is attached. When the notebook runs
# headless (papermill, nbval, a script), with `static_figures = True` or with
# `MIXSEG_STATIC_WIDGETS=1`, it draws a static grid instead: a few slices, one row per contrast
# with the full labels, and a bottom row with the weak label. Its title says which slices it
# shows and which weak label, and what purple means there.

# %%
# NBVAL_IGNORE_OUTPUT
# The phantom volume with the largest tumour (the procedural one without nilearn), with box weak labels.
tumour_volumes = phantoms or brains
browse_volume(max(tumour_volumes, key=lambda v: int((v.label > 0).sum())) if tumour_volumes else cardiac[0],
              weak="boxes", num_slices=4, static=static_figures)

# %%
# NBVAL_IGNORE_OUTPUT
if blocks:
    display(browse_volume(blocks[len(blocks) // 2], weak="scribbles", num_slices=4, origin="lower",
                          static=static_figures))

# %% [markdown]
# ## 6. Your own copy of a public dataset
#
# Point `data_dir` at ACDC, BraTS or any Decathlon task folder exactly as distributed (set
# `public_dataset` to say which) and the same loaders, preprocessing and cache as notebook 04
# read it. Only `max_cases` cases are loaded here.

# %%
# NBVAL_CHECK_OUTPUT
if data_dir is None:
    public = []
    print("data_dir is None: no public dataset to show (set data_dir and public_dataset to see yours)")
else:
    from mixseg_lite.train import load_dataset

    public = load_dataset(public_dataset, data_dir, image_size, seed, split={"full": None},
                          max_cases=max_cases)["full"]
    summarize_volumes(public_dataset, public)

# %%
# NBVAL_IGNORE_OUTPUT
if public:
    display(browse_volume(public[0], weak="seeds", num_slices=4, static=static_figures))

# %% [markdown]
# Every dataset of this tour in one table (written to `metrics.json` too):

# %%
# NBVAL_CHECK_OUTPUT
path = write_metrics(output_dir, summaries, params)
print(format_table(summaries, ["method", "volumes", "slices", "foreground_fraction", "positive_slice_fraction"]))

# %% [markdown]
# ## Summary
#
# **What you saw.** Simulated hearts (foreground about 7% of the pixels), two simulated
# multi-contrast brains with the tumour on a minority of slices (procedural ellipses, and a
# phantom whose anatomy is real and whose contrasts follow the MR signal equations), one real
# brain cut into blocks.
# Five weak labels, each true where it labels, differing in what they say about the background:
# seeds nothing, boxes almost all of it. At 64x64 the seeds are lines and thin rings, because
# every structure is too thin for 10 erosions.
#
# **What it means.** A student trained on seeds alone never sees a background label, so nothing
# stops it from calling everything foreground: notebook 01 shows that collapse and how the
# teacher prevents it. Tags are informative only because many slices hold no tumour (notebook 03).
#
# **What to try next.**
# 1. Set `image_size = 128`, and predict section 2b's first rows with (1) before you run: every
#    structure is twice as thick in pixels; does any of them reach 10 erosions?
# 2. Change `weak_seed`: scribbles and points move, seeds and boxes do not (they are
#    deterministic).
# 3. Set `cardiac_slices = 12`: more slices towards the apex, so the positive-slice fraction and
#    the tags of the last slices change.
# 4. Predict from (2) what a longer echo time does to the T2 contrast between CSF and white
#    matter, then check it with `spin_echo_signal(pd, t1, t2, tr, te)` from
#    `mixseg_lite.data.phantom` and the CSF and white-matter values of its `RELAXATION`
#    (T1, T2 in ms, PD) at TR = 4000 ms and TE = 80 or 160 ms.
