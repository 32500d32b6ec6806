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
# **Time to run:** about 45 s on a 2-core CPU at the default parameters.
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

    subprocess.run(["git", "clone", "--depth", "1", "https://github.com/mixseg-lite/mixseg-lite", "/content/mixseg-lite"], check=True)
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
methods = ["lower_bound", "weak_only", "kl", "ent", "kl_ent", "pseudo", "upper_bound"]
epochs = 12
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
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.plotting import plot_curves, show_overlay, show_predictions
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
fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
show_overlay(axes[0], weak_view.images[z, 0].numpy(), None, title=dataset.replace("_", " "))
show_overlay(axes[1], weak_view.images[z, 0].numpy(), weak_view.labels[z].numpy(), title="full mask (D_s only)")
show_overlay(axes[2], weak_view.images[z, 0].numpy(), weak_view.weak[z].numpy(), title=f"weak: {weak_kind}")
fig.tight_layout()

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
# NBVAL_CHECK_OUTPUT
print(f"{dataset} test volumes: 3-D Dice and HD95 (mm), mean (std) over {len(splits['test'])} volumes,",
      "averaged over", ", ".join(splits["test"][0].class_names[1:]))
print(format_table(rows, ["method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std"]))

# %%
# NBVAL_CHECK_OUTPUT
class_rows = [{"method": r["method"], "branch": r["branch"],
               **{f"dice {c}": v["dice"] for c, v in r["per_class"].items()}} for r in rows]
print(format_table(class_rows, list(class_rows[0])))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
plot_curves({m: r.log for m, r in results.items()}, "val_dice_teacher", "validation Dice (teacher)", axes[0])
plot_curves({m: r.log for m, r in results.items() if r.branches == ("teacher", "student")},
            "val_dice_student", "validation Dice (student)", axes[1])
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
# The cell below tests each claim of the paper on this run and prints whether it holds. The
# assertions after it check only orderings that must hold for the method to be working at all
# (with tolerances); the paper's finer claims are reported, not forced. On the default run,
# read the printed verdicts: a claim printed as `False` does **not** hold on our simulated data at
# these settings, and we leave it that way rather than tune it away.

# %%
# NBVAL_CHECK_OUTPUT
dice = {(r["method"], r["branch"]): r["dice"] for r in rows}
claims = {}
if {"kl", "ent", "kl_ent"} <= set(methods):
    claims["KL+Ent student beats KL alone"] = dice[("kl_ent", "student")] > dice[("kl", "student")]
    claims["KL+Ent student beats Ent alone"] = dice[("kl_ent", "student")] > dice[("ent", "student")]
if {"ent", "weak_only"} <= set(methods):
    claims["Ent without KL collapses (no better than weak only + 0.05)"] = (
        dice[("ent", "student")] < dice[("weak_only", "student")] + 0.05)
if {"kl_ent", "pseudo"} <= set(methods):
    claims["entropy beats pseudo-masks (student)"] = dice[("kl_ent", "student")] > dice[("pseudo", "student")]
if "kl_ent" in methods:
    claims["student outperforms teacher (KL+Ent)"] = dice[("kl_ent", "student")] > dice[("kl_ent", "teacher")]
for claim, holds in claims.items():
    print(f"{claim:<60} {holds}")

# %% [markdown]
# **What we find on the simulated cardiac data at the default parameters** (the verdicts above are
# recomputed on every run and checked by nbval, so this paragraph cannot drift silently):
#
# * *Holds:* entropy minimisation without KL collapses: the student trained on foreground-only seeds
#   plus entropy is no better than the seed-only student (RV Dice near 0, far too much foreground).
#   KL + entropy is far above entropy alone.
# * *Does not hold:* KL + entropy does **not** beat KL alone, pseudo-masks do **not** lose to
#   entropy, and the student does **not** outperform the teacher. Adding entropy lowers the student
#   a little (here and on average over three seeds: README, Results), and the student losses also
#   pull the shared encoder away from the teacher, whose Dice drops below the lower bound. On the
#   real atlas (`dataset="atlas"`, same README section) the student does beat the teacher and the
#   lower bound on average over seeds.
# * Our set-up differs from the paper's: 64x64 simulated slices instead of 256x256 ACDC, a UNet of
#   width 8 instead of 64, 12 short epochs instead of a long schedule, and loss weights that the
#   paper does not publish (ours: `lambda_kd = 10`, `lambda_ent = 0.1` with a 4-epoch ramp-up,
#   GroupNorm, and class weights `class_balance = 0.5` in the teacher's cross-entropy). Try `lambda_ent`, `ramp_up_epochs`, `epochs` and `dataset="atlas"` as exercises;
#   `experiments/` sweeps them over seeds.

# %%
if assert_orderings and {"lower_bound", "upper_bound"} <= set(methods):
    assert dice[("upper_bound", "teacher")] > dice[("lower_bound", "teacher")] - 0.02, "full labels should help"
if assert_orderings and {"kl_ent", "weak_only"} <= set(methods):
    assert dice[("kl_ent", "student")] > dice[("weak_only", "student")] + 0.2, "KL must rescue the seed-only student"
if assert_orderings and {"kl", "weak_only"} <= set(methods):
    assert dice[("kl", "student")] > dice[("weak_only", "student")] + 0.2

# %%
write_metrics(output_dir, [{k: r[k] for k in ("method", "branch", "dice", "dice_std", "hd95_mm", "hd95_std")}
                           for r in rows], params)
