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
# 2. See every kind of weak label (seeds, scribbles, boxes, points, image tags) that can be derived
#    from a full mask, and what each one tells the network about the background.
# 3. Browse volumes slice by slice and modality by modality (live widgets in Jupyter; a static
#    grid when the notebook runs headless).
#
# **Time to run:** about 15 s on a 2-core CPU without AVX-512 at the default parameters.
#
# **Data:** generated on the fly (simulated cardiac and brain MRI), the Colin27 brain with its
# AAL atlas from the Debian package `mricron-data` (real), and optionally a public dataset you
# downloaded yourself (`data_dir`).

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
brain_modalities = ["T1", "T2", "FLAIR"]
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

import mixseg_lite
from mixseg_lite.data.atlas import DEFAULT_GROUPS, atlas_split, load_atlas
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.parameters import check_parameters
from mixseg_lite.plotting import class_legend, show_overlay
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
    print(format_table([{"class": c, "pixel fraction": float(f)} for c, f in zip(first.class_names, frequencies)],
                       ["class", "pixel fraction"], digits=4))
    return row


# %% [markdown]
# ## 1. Simulated cardiac MRI (a stand-in for ACDC)
#
# Short-axis cine-MRI stacks drawn procedurally: *simulated*, no patient data. Each volume runs
# from the base of the heart towards the apex with thick slices (8-10 mm, as in ACDC), so the
# structures shrink and the last slices hold little or no heart. Labels follow ACDC: RV cavity,
# myocardium, LV cavity. RV and LV blood have the same brightness and are told apart only by
# shape and position; fat, stomach and aorta are bright distractors labelled background.

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
    show_overlay(axes[1, column], volume.image[0, z], volume.label[z], volume.num_classes, "labels")
fig.suptitle(f"Simulated cardiac volume {volume.case_id}: slices from base to apex, and their labels", fontsize=10)
fig.tight_layout()
class_legend(fig, volume.class_names, loc="lower center", ncol=volume.num_classes - 1)
fig.subplots_adjust(bottom=0.1)

# %% [markdown]
# ## 2. Weak labels, derived from the full masks
#
# Every weak label is computed deterministically from a full mask and a seed, and never lies:
# wherever it labels a pixel, the full mask has that class. It only hides information.
#
# * `seeds`: the setting of the mixed-supervision paper: each structure eroded 10 times, leaving
#   a blob deep inside it. No background pixel is labelled.
# * `scribbles`: a stroke along the middle of each structure, plus background strokes around it.
# * `boxes`: everything outside the tight boxes is background; the inside is unlabelled.
# * `points`: a few clicks per class, background included.
# * `full`: the full mask (the upper bound).
# * image-level **tags**: only which classes appear in the slice (the CAM notebook's setting).

# %%
z = int(np.argmax([(volume.label[k] > 0).sum() for k in range(volume.num_slices)]))
weak = {kind: make_weak_label(volume.label[z], kind, seed=weak_seed, num_classes=volume.num_classes)
        for kind in WEAK_KINDS}
window = (float(volume.image[0].min()), float(volume.image[0].max()))  # as the full-mask panel
fig, axes = plt.subplots(1, len(WEAK_KINDS) + 1, figsize=(2.2 * (len(WEAK_KINDS) + 1), 2.6))
show_overlay(axes[0], volume.image[0, z], volume.label[z], volume.num_classes, "full mask")
for ax, (kind, mask) in zip(axes[1:], weak.items()):
    # Labelled background is tinted white: for boxes, scribbles and points it is information.
    ax.imshow(compose_slice(volume.image[0, z], mask, volume.num_classes, window, weak=True))
    ax.set_title(kind, fontsize=9)
    ax.set_axis_off()
fig.suptitle("The weak labels of one slice: coloured pixels carry a label, the rest are unlabelled", fontsize=9)
fig.tight_layout()
class_legend(fig, ("labelled background", *volume.class_names[1:]), loc="lower center", ncol=volume.num_classes,
             colours=[WEAK_BACKGROUND_COLOUR])
fig.subplots_adjust(bottom=0.14)

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
print("image tags per slice (classes present, background excluded):")
for k in range(volume.num_slices):
    print(f"  z={k}: {[name for name, present in zip(volume.class_names[1:], tags[k, 1:]) if present]}")

# %% [markdown]
# ## 3. Simulated multi-contrast brain MRI with tumours (a stand-in for BraTS)
#
# No package ships two or more real, co-registered MRI contrasts with labels, so the cross-modal
# method is taught on *simulated* brains: one anatomy per volume shown in several contrasts (T1,
# T2, FLAIR), a tumour with necrotic core, enhancing rim and oedema in most volumes, bias field
# and Rician noise per contrast. The label is the whole tumour.

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

# %%
if brains:
    brain = max(brains, key=lambda v: int(v.label.sum()))
    z_brain = int(np.argmax(brain.label.sum(axis=(1, 2))))
    fig, axes = plt.subplots(1, len(brain.modalities) + 1, figsize=(2.4 * (len(brain.modalities) + 1), 2.6))
    for ax, (m, name) in zip(axes, enumerate(brain.modalities)):
        show_overlay(ax, brain.image[m, z_brain], None, brain.num_classes, f"{name} (simulated)")
    show_overlay(axes[-1], brain.image[-1, z_brain], brain.label[z_brain], brain.num_classes, "whole tumour")
    fig.suptitle(f"{brain.case_id}, slice {z_brain}: one anatomy, several contrasts", fontsize=10)
    fig.tight_layout()

# %% [markdown]
# ## 4. A real brain with real labels: Colin27 and the AAL atlas
#
# This one is **real**: Colin27 is one person's T1-weighted MRI (27 scans averaged), and the AAL
# atlas was drawn by hand on that same brain. Grouping AAL regions gives six deep structures:
# caudate, putamen, pallidum, thalamus, hippocampus and amygdala (left and right together).
#
# There is only **one subject**, so "volumes" are contiguous *blocks* of 4 axial slices, with 2
# slices dropped between neighbouring blocks (adjacent 1-mm slices look almost the same; without
# the gap a test score would partly measure memorisation). The split deals blocks out so every
# group spans the whole height of the brain, because which structures a slice contains depends
# mostly on its height: image-level tags here correlate with slice position.

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
# `browse_volume` gives a slice slider, a modality menu and an overlay toggle (nothing, labels, or
# a weak mask) when a live Jupyter frontend is attached. When the notebook runs headless
# (papermill, nbval, a script), with the parameter `static_figures = True` or with
# `MIXSEG_STATIC_WIDGETS=1`, it returns a static grid of a few slices per modality instead, so
# executed copies of this notebook still show something.

# %%
# NBVAL_IGNORE_OUTPUT
browse_volume(brains[0] if brains else cardiac[0], weak="boxes", num_slices=4, static=static_figures)

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

# %%
# NBVAL_CHECK_OUTPUT
path = write_metrics(output_dir, summaries, params)
print(format_table(summaries, ["method", "volumes", "slices", "foreground_fraction", "positive_slice_fraction"]))
