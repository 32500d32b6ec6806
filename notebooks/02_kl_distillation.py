# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Teacher-to-student KL distillation under mixed supervision
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mixseg-lite/mixseg-lite/blob/main/notebooks/02_kl_distillation.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/mixseg-lite/mixseg-lite/main?labpath=notebooks%2F02_kl_distillation.ipynb)
#
# **Learning goals**
# 1. Set up mixed supervision: a few fully labelled volumes (`D_s`) and many weakly labelled ones
#    (`D_w`, seeds eroded from each structure), one shared encoder, a teacher and a student decoder.
# 2. Reproduce the ablation of Liu et al. (MedIA 2023): lower bound, weak only, + KL, + entropy,
#    + KL + entropy (the method), KL + pseudo-masks, upper bound; teacher and student separately.
# 3. Evaluate the right way: predictions restacked into 3-D volumes, Dice and HD95 **in mm** per
#    volume and class (the original code reported HD95 in voxels), mean (std) over volumes.
# 4. Check which of the paper's claims hold on our data, and say so when one does not.
#
# **Time to run:** about 55 s on a 2-core CPU at the default parameters (measured on one without
# AVX-512; faster with it). The full ablation over 5 seeds is committed in `results/` and shown below.
#
# **Data:** a *simulated* cardiac short-axis MRI dataset (`mixseg_lite.data.cardiac_sim`), not ACDC;
# notebook 04 trains on real data when you have it.

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
output_dir = "outputs/02_kl_distillation"
dataset = "simulated_cardiac"  # or "atlas" (real, Debian package mricron-data); see notebook 04 for more
image_size = 64
n_volumes = 22
n_slices = 8
split_sizes = {"full": 3, "weak": 10, "val": 3, "test": 6}  # None: the dataset's default split
weak_kind = "seeds"
# The live run trains four rows; the committed sweep has all seven (lower_bound, weak_only, kl, ent,
# kl_ent, pseudo, upper_bound) over 5 seeds.
methods = ["lower_bound", "weak_only", "kl", "kl_ent"]
epochs = 6
batch_size = 8
learning_rate = 0.005
base_width = 8
depth = 3
# Our choices (the paper does not publish them): loss weights, KL temperature, pseudo-mask threshold,
# ramp-up of the entropy weight, and GroupNorm (BatchNorm's running statistics lag the shared encoder).
lambda_kd = 10.0
lambda_ent = 0.1
temperature = 1.0
pseudo_threshold = None
ramp_up_epochs = 4
norm = "group"
# Teacher loss: cross-entropy plus dice_weight times soft Dice.
dice_weight = 1.0
# Cross-entropy class weights (1 / class frequency) ** class_balance; 0 is plain cross-entropy.
# Without them the teacher left the RV or the myocardium unpredicted for 20+ epochs on some seeds.
class_balance = 0.5
assert_orderings = True  # sweeps over seeds set False to record every run, whatever its ordering

# %%
import matplotlib.pyplot as plt
import numpy as np

import mixseg_lite
from mixseg_lite.claims import MIXED_CLAIMS
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.plotting import class_legend, plot_curves, show_overlay, show_predictions
from mixseg_lite.report import committed_tables
from mixseg_lite.results import format_table, write_metrics
from mixseg_lite.train import DATASETS, MixedConfig, load_dataset, predict_volumes, run_mixed_ablation

device = mixseg_lite.setup_notebook(seed, num_threads)
params = {k: v for k, v in globals().items() if k in {
    "seed", "num_threads", "output_dir", "dataset", "image_size", "n_volumes", "n_slices", "split_sizes", "weak_kind",
    "methods", "epochs", "batch_size", "learning_rate", "base_width", "depth", "lambda_kd", "lambda_ent",
    "temperature", "pseudo_threshold", "ramp_up_epochs", "norm", "dice_weight", "class_balance", "assert_orderings"}}

# %% [markdown]
# ## 1. Data: full masks for a few volumes, seeds for the rest
#
# Each foreground structure of a `D_w` slice is eroded 10 times with a 3x3 square (fewer when it
# would vanish), leaving a seed inside it. **Background is never labelled**: a student trained on
# seeds alone sees only foreground pixels.

# %%
splits = load_dataset(dataset, image_size=image_size, seed=seed, split=split_sizes,
                      n_volumes=n_volumes, n_slices=n_slices)
volumes = [v for group in splits.values() for v in group]
weak_view = SliceDataset(splits["weak"][:1], weak_kind=weak_kind, weak_seed=seed)
z = 2
class_names = splits["full"][0].class_names
fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0))
show_overlay(axes[0], weak_view.images[z, 0].numpy(), None, len(class_names), title=dataset.replace("_", " "))
show_overlay(axes[1], weak_view.images[z, 0].numpy(), weak_view.labels[z].numpy(), len(class_names),
             title="full mask (D_s only)")
show_overlay(axes[2], weak_view.images[z, 0].numpy(), weak_view.weak[z].numpy(), len(class_names),
             title=f"weak: {weak_kind}")
fig.suptitle("One D_w slice: what a full mask would say, and what its weak label says", fontsize=9)
fig.tight_layout()
class_legend(fig, class_names, loc="lower center", ncol=len(class_names) - 1)
fig.subplots_adjust(bottom=0.12)

# %%
# NBVAL_CHECK_OUTPUT
labelled = (weak_view.weak != mixseg_lite.UNLABELLED).float().mean().item()
print(DATASETS[dataset])
print({name: len(v) for name, v in splits.items()}, "volumes;", sum(v.num_slices for v in volumes), "slices")
print(f"fraction of D_w pixels carrying a weak label: {labelled:.3f}")

# %% [markdown]
# ## 2. The ablation
#
# All rows use the same network, data, optimiser and number of steps; only the loss changes.
# For the bounds only the teacher is trained, so only the teacher is reported.

# %%
# NBVAL_IGNORE_OUTPUT
config = MixedConfig(epochs=epochs, batch_size=batch_size, lr=learning_rate, lambda_kd=lambda_kd,
                     lambda_ent=lambda_ent, temperature=temperature, pseudo_threshold=pseudo_threshold,
                     weak_kind=weak_kind, base_width=base_width, depth=depth, norm=norm,
                     ramp_up_epochs=ramp_up_epochs, dice_weight=dice_weight,
                     class_balance=class_balance, seed=seed)
rows, results = run_mixed_ablation(methods, splits["full"], splits["weak"], splits["test"], config,
                                   val=splits["val"])

# %%
# NBVAL_IGNORE_OUTPUT
# Scores of models trained here: printed for reading, not compared by nbval (they change in the
# last digits with the CPU's instruction set and thread count, and training amplifies that).
print(f"{dataset} test volumes: 3-D Dice and HD95 (mm), mean (std) over {len(splits['test'])} volumes,",
      "averaged over", ", ".join(splits["test"][0].class_names[1:]))
print(format_table(rows, ["method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std"]))

# %%
# NBVAL_IGNORE_OUTPUT
class_rows = [{"method": r["method"], "branch": r["branch"],
               **{f"dice {c}": v["dice"] for c, v in r["per_class"].items()}} for r in rows]
print(format_table(class_rows, list(class_rows[0])))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
plot_curves({m: r.log for m, r in results.items()}, "val_dice_teacher", "validation Dice", axes[0])
plot_curves({m: r.log for m, r in results.items() if r.branches == ("teacher", "student")},
            "val_dice_student", "validation Dice", axes[1])
axes[0].set_title("teacher branch, every row (one colour per method)", fontsize=9)
axes[1].set_title("student branch, rows that train it", fontsize=9)
fig.suptitle(f"Validation Dice per epoch, this live run ({epochs} epochs, seed {seed})", fontsize=10)
fig.tight_layout()

# %%
test_volume = splits["test"][0]
shown = {}
for method in ("lower_bound", "weak_only", "kl", "kl_ent", "upper_bound"):
    if method in results:
        branch = results[method].branches[-1]
        shown[f"{method} ({branch})"] = predict_volumes(results[method].model, [test_volume])[branch][0]
fig = show_predictions(test_volume, shown, slices=[1, test_volume.num_slices // 2],
                       title=f"Predictions on a {dataset.replace('_', ' ')} test volume")

# %% [markdown]
# ## 3. Which of the paper's claims hold here?
#
# One run cannot tell: two rows a few hundredths apart swap places with the seed, and even with
# the machine (another CPU sums in another order, and training amplifies the difference). The
# claims are therefore settled on the committed sweep: all seven rows, 12 epochs, 5 seeds
# (`experiments/mixed_ablation_cardiac.yaml`, or `_atlas.yaml` for `dataset="atlas"`; the command
# that regenerates each file is in `results/README.md`). Each seed draws new volumes, a new split
# and new weights and trains every row on them, so the rows of one seed are *paired*; for each
# claim we take the per-seed difference, its mean and its 95% Student-t interval. The verdict is
# **holds** when the interval lies above 0, **opposite** when it lies below 0, and **not resolved
# at n seeds** when it contains 0. The table is read from a file, so it is the same everywhere.

# %%
# NBVAL_CHECK_OUTPUT
committed = {"simulated_cardiac": "mixed_ablation_cardiac", "atlas": "mixed_ablation_atlas"}
if dataset in committed:
    print(committed_tables(committed[dataset], MIXED_CLAIMS, ["method", "branch"], ["dice", "hd95_mm"]))
else:
    print(f"no committed sweep for dataset {dataset!r}: run one with `mixseg-lite sweep` (see results/README.md)")

# %% [markdown]
# **Reading the table.** Entropy without KL collapses to the seed-only student, and KL rescues
# that student by a wide margin: both hold on every seed. The paper's finer claims (KL + entropy
# above KL alone, entropy above pseudo-masks, the student above its teacher) are decided by the
# verdict column, not by one run; where it says *not resolved*, the difference is smaller than
# what 5 seeds can resolve, and where it says *opposite*, the claim fails at these settings.
# These settings differ from the paper's: 64x64 simulated slices instead of 256x256 ACDC, a UNet
# of width 8 instead of 64, 12 short epochs, and loss weights the paper does not publish (ours:
# `lambda_kd = 10`, `lambda_ent = 0.1` with a ramp-up, GroupNorm, class-balanced teacher loss).
# So a failed claim here says "not under this recipe", not "not at all".
#
# The live run above, for comparison (one seed, this machine):

# %%
# NBVAL_IGNORE_OUTPUT
dice = {(r["method"], r["branch"]): r["dice"] for r in rows}
for (method, branch), value in dice.items():
    print(f"{method:<12} {branch:<8} {value:.3f}")

# %% [markdown]
# Only orderings far outside the noise are asserted, with a tolerance taken from the 5 committed
# seeds of this notebook's default profile (`results/teaching_profiles.csv`): there the KL and the
# KL+entropy students beat the seed-only student by 0.18-0.63 Dice (smallest gap on seed 0, the
# default). We assert a third of the smallest gap (0.05), so the check holds on any machine and
# seed on which distillation works at all.

# %%
write_metrics(output_dir, [{k: r[k] for k in ("method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std")}
                           for r in rows], params)
if assert_orderings and {"kl_ent", "weak_only"} <= set(methods):
    assert dice[("kl_ent", "student")] > dice[("weak_only", "student")] + 0.05, "KL must lift the seed-only student"
if assert_orderings and {"kl", "weak_only"} <= set(methods):
    assert dice[("kl", "student")] > dice[("weak_only", "student")] + 0.05, "KL must lift the seed-only student"

