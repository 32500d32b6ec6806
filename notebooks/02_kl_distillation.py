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
# 1. Write down the mixed-supervision objective of Liu et al. (2023), equations (1)-(4): a teacher
#    trained on a few full masks, a student trained on seeds, KL distillation and entropy.
# 2. See live what KL distillation buys: a student trained on seeds alone calls too much
#    foreground; the same student pulled towards the teacher learns the shapes.
# 3. Measure how hard each loss term pulls on the student (its gradient share, equation (5)) and
#    explain with it why entropy changes nothing under our recipe and matters under the authors'
#    script at its defaults.
# 4. Read the paper's claims from committed 5-seed sweeps (paired differences), never from one run.
# 5. Write the KL term (3), the gradient shares (5), a paired 95% interval and its verdict yourself:
#    exercises 2.1-2.4, checked at once (about 55 minutes).
#
# **Reading time:** about 25 minutes. **Run time:** about 30 s on a 2-core CPU without AVX-512
# (default parameters; a slow laptop may take twice as long).
#
# **Data:** a *simulated* cardiac short-axis MRI dataset (`mixseg_lite.data.cardiac_sim`), not
# ACDC: 64x64 slices with RV cavity, myocardium and LV cavity. Every number below is measured on
# simulated images.
#
# **Paper:** B. Liu, C. Desrosiers, I. Ben Ayed, J. Dolz, "Segmentation with mixed supervision:
# Confidence maximization helps knowledge distillation", *Medical Image Analysis* 2023
# ([arXiv 2109.10902](https://arxiv.org/abs/2109.10902)). Every term is defined in the
# [glossary](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/glossary.md); every multi-seed
# table is in [the reproduction report](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/reproduction.md).

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
dataset = "simulated_cardiac"  # "simulated_cardiac_lv" (binary LV, the authors' task) or "atlas" (real); see notebook 04
image_size = 64
n_volumes = 24
n_slices = 8
split_sizes = None  # None: the dataset's default (simulated cardiac: 1 full, 12 weak, 4 val, 7 test volumes)
weak_kind = "seeds"
# The rows trained live (section 4). The committed sweeps train all seven rows (lower_bound, weak_only,
# kl, ent, kl_ent, pseudo, upper_bound) over 5 seeds.
methods = ["lower_bound", "weak_only", "kl", "kl_ent"]
# "ours", "authors_defaults" (the authors' script at its argparse defaults: every committed authors'
# row, all at learning_rate 1e-3) or "authors" (the same script with its README's command).
recipe = "ours"
epochs = 6  # teaching budget; the sweeps train ours for 40 epochs and the authors' recipe for 60
batch_size = 8
# None: the recipe's value. Setting one of these overrides the recipe for that field only.
learning_rate = None
lambda_kd = None
lambda_ent = None
temperature = None
ramp_up_epochs = None
norm = None
dice_weight = None
class_balance = None
pseudo_threshold = None
recipe_overrides = {}  # any other recipe field of MixedConfig, e.g. {"detach_teacher": False}
base_width = 8
depth = 3
# Recipes whose losses are compared on the live KL + entropy network (section 5).
share_recipes = ["ours", "authors_defaults"]
assert_orderings = True  # sweeps over seeds set False to record every run, whatever its ordering

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import mixseg_lite
from mixseg_lite.claims import MIXED_CLAIMS
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.losses.mixed import entropy_loss, kl_distillation, partial_cross_entropy
from mixseg_lite.parameters import check_parameters
from mixseg_lite.plotting import class_legend, method_colour, show_overlay, show_predictions
from mixseg_lite.results import committed_results, format_table, write_metrics
from mixseg_lite.stats import read_results, settle
from mixseg_lite.train import DATASETS, RECIPES, MixedConfig, load_dataset, predict_volumes, run_mixed_ablation
from mixseg_lite.train.mixed import check_recipe_overrides, recipe_gradient_shares

# Every parameter above, checked here (a bad value stops with one line naming it) and recorded
# in metrics.json.
params = check_parameters(globals())
device = mixseg_lite.setup_notebook(seed, num_threads)
RECIPE_NAMES = {"ours": "our recipe", "authors_defaults": "authors' script (defaults)",
                "authors": "authors' script (README command)"}
NAMES = {"lower_bound": "lower bound", "weak_only": "seeds only", "kl": "KL", "kl_ent": "KL + entropy",
         "ent": "entropy", "pseudo": "KL + pseudo-masks", "upper_bound": "upper bound"}
TERMS = {"weak": ("partial CE (2)", method_colour("weak_only")), "kd": ("KL (3)", method_colour("kl")),
         "ent": ("entropy (4)", method_colour("ent"))}

# %% [markdown]
# ## 1. The method in five equations
#
# One network with a shared encoder and two decoders trains on **D_s**, a few images with full masks,
# and **D_w**, many images with weak labels, here *seeds* (each structure eroded to a small blob;
# background is never labelled). The **teacher** decoder learns from D_s alone, the **student** from
# the seeds and from the teacher. With $p^t_i$, $p^s_i$ the softmax of the teacher's and the
# student's logits $z^t_i$, $z^s_i$ at pixel $i$:
#
# $$\mathcal{L} = \mathcal{L}_s(p^t; D_s) + \lambda_w\,\mathcal{L}_{pCE}(p^s; D_s \cup D_w)
#   + \lambda_{kd}\,\mathcal{L}_{KL}(p^t, p^s) + \lambda_{ent}\,\mathcal{L}_H(p^s) \tag{1}$$
#
# $\mathcal{L}_s$ is the teacher's cross-entropy on the full masks. The student's terms: **partial
# cross-entropy** over the labelled pixels $\Omega_L$, **KL distillation** from teacher to student at
# temperature $T$, and the mean **entropy** of the student:
#
# $$\mathcal{L}_{pCE} = -\frac{1}{|\Omega_L|}\sum_{i \in \Omega_L} \log p^s_{i,y_i} \tag{2}$$
#
# $$\mathcal{L}_{KL} = \frac{T^2}{|\Omega|}\sum_{i \in \Omega}\sum_k p^t_{ik}(T)\,
#   \log\frac{p^t_{ik}(T)}{p^s_{ik}(T)}, \qquad p(T) = \mathrm{softmax}(z / T) \tag{3}$$
#
# $$\mathcal{L}_H = -\frac{1}{|\Omega|}\sum_{i \in \Omega}\sum_k p^s_{ik} \log p^s_{ik} \tag{4}$$
#
# Equation (1) combines the three terms Liu et al. name in their abstract: cross-entropy over the
# labelled pixels, KL carrying the teacher's predictions to the student, and Shannon entropy on the
# less-supervised images to make the student confident. The numbering is ours; $T$, the weights
# $\lambda$ and the images each term sees are a *recipe*'s choices (section 3). Entropy alone is
# smallest when every pixel is one class with certainty; KL ties that confidence to the teacher.
#
# How hard a term pulls on the student is not its weight but its **gradient share**:
#
# $$s_j = \frac{\lVert \partial(\lambda_j \mathcal{L}_j) / \partial z^s \rVert}
#   {\sum_{k \in \{pCE,\,KL,\,H\}} \lVert \partial(\lambda_k \mathcal{L}_k) / \partial z^s \rVert} \tag{5}$$

# %%
# NBVAL_CHECK_OUTPUT
# Equations (2)-(4) on a 2-pixel, 3-class example in float64: the same digits on every machine.
student = torch.tensor([[[[2.0, 0.1]], [[0.5, 0.2]], [[-1.0, 0.0]]]], dtype=torch.float64, requires_grad=True)
teacher = torch.tensor([[[[1.0, -0.5]], [[1.5, 0.0]], [[-2.0, 1.0]]]], dtype=torch.float64, requires_grad=True)
seeds = torch.tensor([[[0, mixseg_lite.UNLABELLED]]])  # pixel 1 labelled class 0, pixel 2 unlabelled
print(f"(2) partial CE = {partial_cross_entropy(student, seeds).item():.4f} "
      f"= -log p_s(class 0) at pixel 1 = {-student.log_softmax(1)[0, 0, 0, 0].item():.4f}")
for t in (1.0, 2.0):
    print(f"(3) KL at T = {t:g}: {kl_distillation(student, teacher, t).item():.4f};",
          f"KL of the student to itself: {kl_distillation(student, student, t).item():.4f}")
kl_distillation(student, teacher).backward()
print("(3) gradient reaching the teacher through KL:", teacher.grad)
student.grad = None
entropy_loss(student).backward()
p = student.detach().softmax(1)
h = -(p * p.log()).sum(1, keepdim=True)
print(f"(4) entropy = {entropy_loss(student).item():.4f}; autograd gradient equals -p (log p + H) / |Omega|:",
      torch.allclose(student.grad, -p * (p.log() + h) / 2))

# %% [markdown]
# KL sends no gradient to the teacher in our recipe (it is *detached*). The entropy gradient
# $-p_k(\log p_k + H)$ vanishes for a uniform and for a one-hot prediction: entropy pushes hardest on
# pixels that are already fairly confident.

# %% [markdown]
# ### Exercise 2.1 · KL distillation with a temperature (medium)
#
# Write equation (3) as our recipe trains it. `my_kl_distillation(student_logits, teacher_logits,
# temperature)` takes the student's and the teacher's logits, two float64 tensors of shape
# `(B, C, H, W)`, and the temperature $T$ (a float). It returns a scalar tensor: $T^2$ times
# $\mathrm{KL}(p^t(T) \,\|\, p^s(T))$, summed over the classes and averaged over the pixels (and the
# batch). The gradient must reach the student's logits and never the teacher's (the teacher is
# detached). The check also prints the student's gradient norm at $T$ = 1, 2, 4, 8 with and without
# the factor $T^2$: which of the two keeps the scale of the gradient as $T$ grows?
#
# *Hint:* `(z / T).log_softmax(dim=1)` gives $\log p(T)$ without NaN; `teacher_logits.detach()`
# cuts the teacher out of the graph; sum over `dim=1`, then `.mean()`.

# %%
# EXERCISE 2.1
from mixseg_lite.exercises import todo


def my_kl_distillation(student_logits, teacher_logits, temperature):
    """T^2 mean over pixels of KL(p_t(T) || p_s(T)): two (B, C, H, W) logits -> scalar, teacher detached."""
    # BEGIN SOLUTION
    log_p_t = (teacher_logits.detach() / temperature).log_softmax(dim=1)
    log_p_s = (student_logits / temperature).log_softmax(dim=1)
    return temperature**2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_kl_distillation

check_kl_distillation(my_kl_distillation)

# %% [markdown]
# ## 2. Data: full masks for one volume, seeds for the rest

# %%
splits = load_dataset(dataset, image_size=image_size, seed=seed, split=split_sizes,
                      n_volumes=n_volumes, n_slices=n_slices)
volumes = [v for group in splits.values() for v in group]
weak_view = SliceDataset(splits["weak"][:1], weak_kind=weak_kind, weak_seed=seed)
z = 2
class_names = splits["full"][0].class_names
fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.0))
show_overlay(axes[0], weak_view.images[z, 0].numpy(), None, len(class_names), title="image (simulated)")
show_overlay(axes[1], weak_view.images[z, 0].numpy(), weak_view.labels[z].numpy(), len(class_names),
             title="full mask (only D_s has one)")
show_overlay(axes[2], weak_view.images[z, 0].numpy(), weak_view.weak[z].numpy(), len(class_names),
             title=f"weak label: {weak_kind} (D_w)")
fig.suptitle(f"One D_w slice of the {dataset.replace('_', ' ')} data: its full mask, and what its weak label keeps",
             fontsize=9, y=1.03)
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
# Fewer than one pixel in a hundred of a D_w slice carries a label, and none of them is background.
#
# ## 3. Two recipes
#
# The paper leaves most training choices open; its authors' training script (`main.py` of
# josedolz/MSL-student-becomes-master at commit 68b98c2) fixes them, quirks included. Two presets
# reproduce it: `MixedConfig(recipe="authors")`, the script run with the command its README gives
# for the main experiments, and `recipe="authors_defaults"`, the same script at its argparse
# defaults. The committed sweeps in `results/` ran both; the curves of section 5 are
# `authors_defaults`. `recipe="ours"` is this package's recipe. The table gives the fields of
# equations (1)-(4) and of the batch on which they differ; the others (teacher loss, normalisation,
# optimiser, schedule) and our reasons are in
# [docs/recipes.md](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/recipes.md).

# %%
# NBVAL_CHECK_OUTPUT
FIELDS = {  # recipe field: what it sets, in words
    "lambda_w": "weight of partial CE in (1)",
    "weak_loss": "pooled: (2) over D_s and D_w; per_set: sum of (2) per set",
    "lambda_kd": "weight of KL in (1)",
    "temperature": "T of (3)",
    "kd_on": "images KL sees: all = D_s and D_w; full = D_s",
    "kd_form": "standard = (3); authors = KL(student||teacher), softmax(p/T)",
    "detach_teacher": "True: KL moves the student only; False: the teacher too",
    "lambda_ent": "weight of entropy in (1)",
    "ramp_up_epochs": "epochs over which entropy's weight grows from 0",
    "entropy_on": "images entropy sees: weak = D_w; all = D_s and D_w",
    "entropy_form": "pixel = (4); authors = (4) / classes, D_s 3 times",
    "duplicate_full_batch": "True: each step feeds the D_s batch twice",
    "weak_batch_multiple": "D_w slices per step = this x batch_size",
    "lr": "learning rate",
}
RECIPE_COLUMNS = ["ours", "authors", "authors_defaults"]
recipe_rows = [{"field": name, "what it sets": words,
                **{r: f"{RECIPES[r][name]:g}" if isinstance(RECIPES[r][name], float) else str(RECIPES[r][name])
                   for r in RECIPE_COLUMNS}}
               for name, words in FIELDS.items()]
recipe_rows[-1]["authors_defaults"] += " (results/: 0.001)"
print(format_table(recipe_rows, ["field", "what it sets", *RECIPE_COLUMNS]))

# %% [markdown]
# **The learning rate.** The script trains at 1e-4 (for 600 epochs, about 4,200 steps, with its
# README's command). Every authors' result in `results/` and every authors' curve below is trained
# at **1e-3** instead (at 1e-4 the lower bound still rises after 1,800 steps; at 1e-3 every row
# flattens within 45 epochs, and the ablation sweep trains 60).
#
# Does the faster rate cause what goes wrong under the authors' recipe? On the binary LV task
# (`dataset="simulated_cardiac_lv"`, the authors' own task) its KL and KL + entropy students
# collapse at 1e-3: their best validation epoch is among the first few. The committed curves of
# their command at **1e-4** for its 4,200 steps (seed 0, validation volumes; *collapse*: the first
# epoch after the best at which the 3-epoch running mean falls below half the best):

# %%
# NBVAL_CHECK_OUTPUT
# Read from a committed file, so it prints the same on every machine.
from mixseg_lite.reproduction import lv_curve_summaries

lv_file = committed_results("mixed_convergence_cardiac_lv")
lv_rows = [{**c, "row": f"{NAMES.get(c['method'], c['method'])} {c['branch']}", "collapse": c["collapse"] or "never"}
           for c in lv_curve_summaries(lv_file.parents[1])]
print("binary LV, epochs of 12 steps (results/mixed_convergence_cardiac_lv.csv)")
print(format_table(lv_rows, ["row", "recipe", "lr", "seed", "epochs", "best epoch", "best val Dice", "last val Dice",
                             "collapse"]))

# %% [markdown]
# On seed 0 both students peak at epoch 4 with Dice 0.14 and end near 0.05: they never learn the
# LV. Their teachers, which receive KL's gradient in this recipe (`detach_teacher=False`), reach
# 0.32 by epoch 16 and lose it by epoch 34, a tenth of the way through the steps, while the same
# teacher trained alone (lower bound) reaches 0.76. One seed shows when, not how often. The same
# rows trained on 5 seeds at both rates (test volumes; *last < half of best*: seeds whose
# last-epoch Dice is below half the Dice of their best validation epoch):

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.reproduction import lv_collapse_rows

print("binary LV, the authors' command, test 3-D Dice (results/mixed_ablation_cardiac_lv.csv)")
print(format_table(lv_collapse_rows(lv_file.parents[1]), ["lr", "row", "epochs", "seeds", "best epoch",
                                                          "Dice, best epoch", "Dice, last epoch", "last < half of best"]))

# %% [markdown]
# **Answer: the failure does not go away at 1e-4, and it does not come later.** On 5 seeds the
# students' best validation epoch is still early (16-18 of 350 on average, 19-22 of 60 at 1e-3, in
# epochs of the same 12 steps), and their best Dice (0.16-0.17) stays far below the lower bound's
# (0.65): "student > lower bound" is *opposite* at both rates. The slower rate does not help them
# either: every row's difference, 1e-4 minus 1e-3, is negative, though none is resolved at 5 seeds
# (the report, section 1.1). So the rate is not the cause. A likelier one (one diagnostic seed in
# docs/recipes.md): with only foreground seeds as weak labels, calling every pixel foreground lowers
# both partial CE and entropy, and the undetached KL pulls the teacher along.
#
# ## 4. Live run: what KL distillation buys
#
# Four rows with the same network, data, optimiser and steps; only the loss changes. **Lower
# bound**: the teacher on D_s alone. **Seeds only**: the student with partial CE (2). **KL**: adds
# (3). **KL + entropy**: adds (4), the method. Six epochs of 12 steps under our recipe, a teaching
# budget (the sweeps train 40).
#
# **Which weights are tested.** After every epoch both branches are scored on the 4 validation
# volumes. Each row keeps the weights of its best epoch on the validation Dice of its *reported*
# branch (the student; the teacher for the lower bound) and tests both branches with them (`dice`,
# `best_epoch`); `dice_last` tests the last epoch's weights.

# %%
# NBVAL_IGNORE_OUTPUT
check_recipe_overrides(recipe_overrides)
config = MixedConfig(recipe=recipe, epochs=epochs, batch_size=batch_size, lr=learning_rate, lambda_kd=lambda_kd,
                     lambda_ent=lambda_ent, temperature=temperature, pseudo_threshold=pseudo_threshold,
                     weak_kind=weak_kind, base_width=base_width, depth=depth, norm=norm,
                     ramp_up_epochs=ramp_up_epochs, dice_weight=dice_weight,
                     class_balance=class_balance, seed=seed, **recipe_overrides)
rows, results = run_mixed_ablation(methods, splits["full"], splits["weak"], splits["test"], config,
                                   val=splits["val"])

# %%
# NBVAL_IGNORE_OUTPUT
# Scores of models trained here: printed for reading, not compared by nbval (they change in the
# last digits with the CPU's instruction set and thread count, and training amplifies that).
recipe_name = RECIPE_NAMES.get(recipe, recipe)
print(f"{recipe_name}, {epochs} epochs, seed {seed}: test 3-D Dice and HD95 (mm), mean over "
      f"{len(splits['test'])} volumes and the classes {', '.join(class_names[1:])}")
print(format_table([{**r, "row": NAMES.get(r["method"], r["method"])} for r in rows],
                   ["row", "branch", "dice", "dice_last", "best_epoch", "hd95_mm"]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
for ax, branch in zip(axes, ("teacher", "student")):
    for method, result in results.items():
        if branch in result.branches:
            ax.plot([r["epoch"] for r in result.log], [r[f"val_dice_{branch}"] for r in result.log], marker=".",
                    color=method_colour(method), label=NAMES.get(method, method),
                    linestyle="--" if method == "kl_ent" else "-")
    ax.set_title(f"{branch} branch" + (" (rows that train it)" if branch == "student" else ""), fontsize=9)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_ylabel("validation Dice (3-D, mean over classes)")
axes[0].set_ylim(0, 1)
fig.suptitle(f"Validation Dice after each epoch, this run ({recipe_name}, seed {seed})", fontsize=10)
fig.tight_layout()

# %%
test_volume = splits["test"][0]
shown = {}
for method in ("lower_bound", "weak_only", "kl", "kl_ent"):
    if method in results:
        branch = results[method].branches[-1]
        shown[f"{NAMES[method]}\n({branch})"] = predict_volumes(results[method].model, [test_volume])[branch][0]
fig = show_predictions(test_volume, shown, slices=[1, test_volume.num_slices // 2],
                       title=f"Predictions on one {dataset.replace('_', ' ')} test volume, this run")

# %% [markdown]
# **Reading the run** (numbers change with the seed and the machine; claims are settled in section 6).
#
# - **Seeds only** fails: its student stays far below the others (on some seeds it peaks in the first
#   epochs, then falls). Its only labels are foreground seeds, so partial CE (2) is smallest when every
#   pixel is foreground, and its predictions spread over the background.
# - **KL** rescues it: pulled towards the teacher's predictions on every pixel, the student learns
#   the background and the shapes. Six epochs are far from its end: trained to convergence (section
#   6) the KL student reaches about 0.92.
# - The teacher's curve changes with the row: the encoder is shared, so the student's losses move
#   the teacher's features too.
# - **KL + entropy** (dashed) follows **KL**: the two are identical in epoch 1, where entropy's
#   weight is still 0, and then differ by no more than seed noise. Section 5 shows why.
#
# ## 5. Entropy: drowned under our recipe, heard under the authors' defaults
#
# Entropy's weight is 0.1 against KL's 10 in our recipe, 1 against 20 in `authors_defaults` (and
# against 50 in `authors`). A weight alone says little: what moves the student is each term's
# [gradient share](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/glossary.md#gradient-share) (5).

# %% [markdown]
# ### Exercise 2.2 · Gradient shares of the loss terms (medium)
#
# Write equation (5). `my_gradient_shares(terms, logits)` takes a dict of weighted loss terms,
# `{"weak": ..., "kd": ..., "ent": ...}` (scalar tensors $\lambda_j \mathcal{L}_j$: partial CE, KL
# and entropy, all computed from the same student logits), and those logits, a float64 tensor
# `(B, C, H, W)` that requires grad. It returns a dict with the same keys: each term's share $s_j$, a
# float, the shares adding up to 1. The check builds the terms of one fixed batch at
# $\lambda_{kd} = 1$, $\lambda_{ent} = 0.1$ and names the term whose share is below 0.1 (drowned).
#
# *Hint:* `torch.autograd.grad(term, logits, retain_graph=True)[0]` is one term's gradient (it
# leaves `logits.grad` alone, so the terms do not add up); `.norm()` is its L2 norm.

# %%
# EXERCISE 2.2
import torch

from mixseg_lite.exercises import todo


def my_gradient_shares(terms, logits):
    """{name: scalar term} and the (B, C, H, W) logits -> {name: ||d term / d logits|| / sum of the norms}."""
    # BEGIN SOLUTION
    norms = {name: float(torch.autograd.grad(term, logits, retain_graph=True)[0].norm())
             for name, term in terms.items()}
    return {name: norm / sum(norms.values()) for name, norm in norms.items()}
    # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_gradient_shares

check_gradient_shares(my_gradient_shares)

# %% [markdown]
# The lesson measures shares with the package's own `mixseg_lite.train.mixed.gradient_shares`. Left:
# the shares the training log records on the first step of each epoch. Right: the trained KL +
# entropy network and the same images, with each recipe's loss (1) at full weight
# (`recipe_gradient_shares`).

# %%
# NBVAL_IGNORE_OUTPUT
share_method = "kl_ent" if "kl_ent" in results else None
if share_method is None:
    print("add 'kl_ent' to methods to measure the gradient shares of the KL + entropy student")
else:
    live_log = results[share_method].log
    same_network = {name: recipe_gradient_shares(results[share_method].model, splits["full"], splits["weak"], name,
                                                 batch_size=batch_size, seed=seed, weak_kind=weak_kind)
                    for name in share_recipes}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for term, (label, colour) in TERMS.items():
        measured = [(r["epoch"], r[f"share_{term}"]) for r in live_log if r.get(f"share_{term}", 0.0) > 0]
        axes[0].plot(*zip(*measured), marker="o", color=colour, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylim(1e-4, 10)
    axes[0].set_xlabel("epoch (entropy's weight is 0 in epoch 1 of a ramp-up)")
    axes[0].set_ylabel("share of the pull on the student logits")
    axes[0].set_title(f"This run: KL + entropy student, {recipe_name},\nfirst step of each epoch", fontsize=9)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].grid(alpha=0.3, which="both")
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    width = 0.8 / len(TERMS)
    for k, (term, (label, colour)) in enumerate(TERMS.items()):
        x = np.arange(len(share_recipes)) + (k - 1) * width
        values = [same_network[name].get(term, 0.0) for name in share_recipes]
        axes[1].bar(x, values, width, color=colour, label=label)
        for xi, value in zip(x, values):
            axes[1].text(xi, value * 1.15, f"{value:.3f}" if value >= 1e-3 else f"{value:.0e}", ha="center",
                         va="bottom", fontsize=7)
    axes[1].set_xticks(range(len(share_recipes)), share_recipes, fontsize=8)
    axes[1].set_xlabel("recipe whose loss (1) is applied")
    axes[1].set_title("The same trained network and images:\neach recipe's loss (1) at full weight", fontsize=9)
    axes[1].grid(axis="y", alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="upper center", ncol=len(TERMS))
    fig.suptitle(f"Gradient shares, equation (5): how hard each term pulls on the student (seed {seed})", fontsize=10)
    fig.tight_layout()
    for name, shares in same_network.items():
        ratio = shares["kd"] / shares["ent"]
        print(f"loss of {name!r}, this network: KL pulls {ratio:.{0 if ratio >= 10 else 1}f} times as hard as entropy",
              f"(shares: partial CE {shares['weak']:.3f}, KL {shares['kd']:.3f}, entropy {shares['ent']:.3f})")

# %% [markdown]
# Under our loss entropy carries about 1% of the pull or less and KL about half: the KL + entropy
# student is the KL student plus a term too weak to move it. The ramp-up does not hide it: in the
# last epoch entropy has its full weight. On the same network, the loss of `authors_defaults` gives
# entropy about ten times that share and KL a fraction of ours: there, entropy pulls about as hard
# as KL (within a factor of two). (A fifth of the pull under our recipe does not make entropy beat
# KL either: the balance sweep in the reproduction report.)
#
# **The authors' script does not fit the live budget**: at its defaults its steps cost about 1.8
# times ours (D_s is fed twice, `duplicate_full_batch`), and its two students separate only after
# about 7 epochs, the gap growing until about epoch 30. The committed curves show it (seed 0,
# validation volumes); exploration 1 runs it live.

# %%
curves = read_results(committed_results("mixed_convergence_cardiac"))
panels = [("ours", "0.005", "our recipe (lr 0.005)"), ("authors_defaults", "0.001", "authors_defaults (lr 0.001)")]
# The budget each recipe is trained for in the committed ablation sweep (its `epochs` column).
budgets = {r["recipe"]: int(r["epochs"]) for r in read_results(committed_results("mixed_ablation_cardiac"))}
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for ax, (name, lr, title) in zip(axes, panels):
    for method in ("kl", "kl_ent"):
        curve = [r for r in curves if r["recipe"] == name and r["lr"] == lr and r["method"] == method]
        ax.plot([int(r["epoch"]) for r in curve], [float(r["val_dice"]) for r in curve], color=method_colour(method),
                linestyle="--" if method == "kl_ent" else "-", label=f"{NAMES[method]} (committed)")
    if name == recipe and dataset == "simulated_cardiac":
        for method in ("kl", "kl_ent"):
            if method in results:
                log = results[method].log
                ax.plot([r["epoch"] for r in log], [r["val_dice_student"] for r in log], "o", markersize=4,
                        color=method_colour(method), label=f"{NAMES[method]} (this run, seed {seed})")
    ax.axvline(budgets[name], color="black", linewidth=0.8, linestyle=":")
    ax.text(budgets[name], 0.96, f"sweep budget: {budgets[name]} epochs ", fontsize=7, ha="right", va="top")
    ax.set_title(f"{title}: student", fontsize=9)
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
for ax in axes[:2]:
    ax.set_ylabel("validation Dice (3-D, mean over classes)")
for name, lr, title in panels:
    curve = [r for r in curves if r["recipe"] == name and r["lr"] == lr and r["method"] == "kl_ent" and r["share_ent"]]
    curve = [r for r in curve if float(r["share_ent"]) > 0]  # weight 0 in the first epoch of a ramp-up
    axes[2].plot([int(r["epoch"]) for r in curve], [float(r["share_ent"]) for r in curve],
                 color=method_colour("ent"), linestyle="-" if name == "ours" else ":", label=title)
axes[2].set_yscale("log")
axes[2].set_ylim(1e-4, 1.5)
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("entropy's share of the pull")
axes[2].set_title("KL + entropy student: entropy's share, eq. (5)", fontsize=9)
axes[2].grid(alpha=0.3, which="both")
axes[2].legend(fontsize=7, loc="lower right")
fig.suptitle("Committed curves of the default simulated cardiac task, seed 0 (validation volumes): "
             "KL against KL + entropy under each recipe", fontsize=10)
fig.tight_layout()

# %% [markdown]
# Under `authors_defaults` entropy's share grows from about 1% to most of the pull as the student
# grows confident, and KL + entropy leaves KL behind (best validation Dice 0.46 against 0.20). KL
# alone does little there: the script applies it to D_s only, on softmax outputs passed through a
# second softmax, which flattens both distributions. Under ours the two curves are one.
#
# ## 6. Which of the paper's claims hold here?
#
# One run cannot tell: rows a few hundredths apart swap places with the seed. The committed sweep
# trains every row to convergence on 5 seeds (new volumes, split and weights each), our recipe's
# rows and the authors' command on 10. Rows of one seed
# are *paired*, so a claim is judged on the per-seed differences: their mean, its 95% t interval
# ([glossary](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/glossary.md#paired-difference-and-95-interval)),
# the seeds won, and a [verdict](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/glossary.md#verdict):
# *holds*, *opposite*, *no effect within ±0.02* (Dice) or *not resolved at n seeds*. Read from a
# file, the table is the same everywhere.

# %%
# NBVAL_CHECK_OUTPUT
LESSON_CLAIMS = ["KL rescues the seed-only student", "KL+Ent > KL (student)", "KL+Ent > Ent (student)",
                 "student > lower bound (KL+Ent)"]
sweep = read_results(committed_results("mixed_ablation_cardiac"))
claims = [claim for name in LESSON_CLAIMS for claim in MIXED_CLAIMS if claim.name == name]
verdicts = [{"recipe": name, **difference.as_row()} for name in ("ours", "authors", "authors_defaults")
            for difference in settle([r for r in sweep if r["recipe"] == name], claims, "mixed_ablation_cardiac")]
print("results/mixed_ablation_cardiac.csv (default simulated cardiac task, ours 40 epochs and the authors'",
      "command 60 epochs at lr 0.001 on 10 seeds, authors_defaults 60 epochs on 5): student test Dice, paired by seed")
print(format_table(verdicts, ["claim", "recipe", "better", "worse", "difference", "95% CI", "wins", "verdict"]))

# %% [markdown]
# - **KL rescues the seed-only student** under every recipe (+0.72 Dice ours, +0.12 the authors'
#   command, +0.09 `authors_defaults`).
# - **KL + entropy beats KL** under the authors' script, with its command (+0.12, all 10 seeds) and
#   at its defaults (+0.22, every seed), not under ours: there the 10-seed interval lies inside
#   ±0.02, *no effect* (section 5 shows why entropy barely acts). **KL + entropy beats entropy**
#   under all three: entropy alone collapses.
# - **The student beats the lower bound** under ours (+0.17, every seed). Under the authors'
#   command it is the *opposite* on 10 seeds: the student ends 0.14 below the teacher trained
#   alone, above it on 1 seed of 10. At the script's defaults (5 seeds) the interval contains 0
#   and spans more than 0.3: not resolved.
#
# The other claims, the binary LV task, the real atlas, the balance sweep and the semi-supervised
# baselines (Mean Teacher, CPS; their rows' branch "teacher" is the one trained decoder, not Mean
# Teacher's averaged copy) are in [the reproduction report](https://github.com/mixseg-lite/mixseg-lite/blob/main/docs/reproduction.md).
# These are 64x64 simulated slices and a UNet of width 8, not the paper's 256x256 ACDC: a claim that
# fails here fails under this recipe and setting, not in general.

# %% [markdown]
# ### Exercise 2.3 · A paired 95% interval by hand (medium)
#
# One claim of the paper is not in the table: *the student beats its teacher* (claim "student >
# teacher (KL+Ent)", our recipe). The check reads the test Dice of the KL + entropy row on the sweep's
# first 5 seeds (0-4) from `results/mixed_ablation_cardiac.csv` and calls
# `my_paired_interval(better, worse)` with two lists of
# floats in the same seed order: the student's Dice (`better`) and the teacher's (`worse`). Return
# the tuple `(mean, low, high)`: the mean $\bar d$ of the per-seed differences $d_s$ = better$_s$ -
# worse$_s$ and its 95% t interval $\bar d \pm t_{0.975,\,n-1}\,\mathrm{sd}(d)/\sqrt{n}$, with the
# sample standard deviation ($n - 1$ in its denominator). The check also prints the unpaired interval
# of the same rows: how much wider is it, and why?
#
# *Hint:* `statistics.fmean`, `statistics.stdev` (the sample sd) and `scipy.stats.t.ppf(0.975, n - 1)`.

# %%
# EXERCISE 2.3
import math
import statistics

from scipy import stats as scipy_stats

from mixseg_lite.exercises import todo


def my_paired_interval(better, worse):
    """Per-seed lists of the better and the worse row -> (mean, low, high) of the paired differences."""
    # BEGIN SOLUTION
    d = [b - w for b, w in zip(better, worse)]
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
    return statistics.fmean(d), statistics.fmean(d) - half, statistics.fmean(d) + half
    # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_paired_interval

check_paired_interval(my_paired_interval)

# %% [markdown]
# ### Exercise 2.4 · The verdict of an interval (easy)
#
# Write `my_verdict(low, high, n, delta)`: the verdict of a 95% interval `[low, high]` of a paired
# difference over `n` seeds. `delta` is the smallest difference that matters, fixed before the runs
# (0.02 for Dice, `mixseg_lite.stats.DELTAS`), or `None` for a metric without one. Return one of four
# strings, testing in this order:
#
# 1. `"holds"` when the whole interval lies above 0;
# 2. `"opposite"` when it lies below 0;
# 3. `f"no effect within ±{delta:g}"` when it lies inside `[-delta, +delta]` (never when `delta` is None);
# 4. `f"not resolved at {n} seeds"` otherwise: more seeds are needed.
#
# The check judges 9 intervals, then gives the verdict of exercise 2.3's interval: what do 5 wins
# out of 5 seeds say there, and what do all 10 committed seeds say?
#
# *Hint:* the direction comes first: an interval above 0 that also lies inside ±delta is a small
# effect that holds. `f"{0.02:g}"` writes `0.02`.

# %%
# EXERCISE 2.4
from mixseg_lite.exercises import todo


def my_verdict(low, high, n, delta):
    """A 95% interval [low, high] over n seeds, delta (or None) -> one of the four verdicts."""
    # BEGIN SOLUTION
    if low > 0:
        return "holds"
    if high < 0:
        return "opposite"
    if delta is not None and -delta <= low and high <= delta:
        return f"no effect within ±{delta:g}"
    return f"not resolved at {n} seeds"
    # END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
from mixseg_lite.exercises import check_verdict

check_verdict(my_verdict)

# %% [markdown]
# **Checks of this run.** Only orderings far outside the noise are asserted. Over the 5 committed
# seeds of this notebook's defaults (`results/teaching_profiles.csv`) the KL and KL + entropy
# students beat seeds only by 0.45-0.63 Dice; we assert a third of the smallest gap (0.15), at that
# profile only. KL + entropy against KL lies within the noise and is not asserted.

# %%
dice = {(r["method"], r["branch"]): r["dice"] for r in rows}
write_metrics(output_dir, [{k: v for k, v in r.items() if k != "per_class"} for r in rows], params,
              speed={method: result.speed for method, result in results.items()})
teaching_profile = recipe == "ours" and epochs == 6 and dataset == "simulated_cardiac"
if assert_orderings and teaching_profile and {"kl_ent", "weak_only"} <= set(methods):
    assert dice[("kl_ent", "student")] > dice[("weak_only", "student")] + 0.15, "KL must lift the seed-only student"
if assert_orderings and teaching_profile and {"kl", "weak_only"} <= set(methods):
    assert dice[("kl", "student")] > dice[("weak_only", "student")] + 0.15, "KL must lift the seed-only student"

# %% [markdown]
# ## Summary
#
# **What you saw.** A student trained on seeds alone spreads its foreground over the image; KL from a
# teacher that saw one fully labelled volume makes it segment. Entropy moved the student by no more
# than seed noise: under our weights it carries about 1% of the pull or less, while the loss of the
# authors' script at its defaults gives it about ten times that share on the same network, and
# there the committed KL and KL + entropy curves separate.
#
# **What it means.** "Entropy helps distillation" holds under the authors' script at its defaults
# (`authors_defaults`, +0.22 Dice, 5 seeds) and has no effect within ±0.02 under ours (10 seeds),
# where KL already gives the student a target on every pixel. Read a loss weight through its gradient share, and a claim with its recipe.
#
# **What to try next.**
# 1. The authors' effect, live: `recipe="authors_defaults"`, `learning_rate=1e-3`, `epochs=12`,
#    `methods=["kl", "kl_ent"]` (about a minute more). The students stay together for about 6 epochs,
#    then KL + entropy pulls ahead (validation Dice at epoch 12, seed 0: about 0.26 against 0.11;
#    seed 1: 0.38 against 0.30).
# 2. Give entropy weight under our recipe: `lambda_ent=1.0` or `10.0`, and watch its share in
#    section 5 rise (the committed balance sweep measured 6% and 23% at convergence). Over 5 seeds
#    neither setting beats KL alone (the reproduction report, balance sweep).
# 3. The authors' documented command: `share_recipes=["ours", "authors_defaults", "authors"]`. Its KL
#    weight 50 and D_w batch of 40 slices take part of the pull back from entropy (seeds 0 and 1: KL
#    about 0.3, entropy 0.05-0.09).
