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
# 1. Set up mixed supervision: one fully labelled volume (`D_s`) and many weakly labelled ones
#    (`D_w`, seeds eroded from each structure), one shared encoder, a teacher and a student decoder.
# 2. Reproduce the ablation of Liu et al. (MedIA 2023): lower bound, weak only, + KL, + entropy,
#    + KL + entropy (the method), KL + pseudo-masks, upper bound; teacher and student separately;
#    under two recipes: the authors' own training script, and ours.
# 3. Train until the validation curves flatten before comparing rows, and evaluate the right way:
#    3-D Dice and HD95 **in mm** per volume and class (the original code reported HD95 in voxels).
# 4. See why a loss weight means nothing without its scale: the share of the gradient each term
#    carries decides whether entropy matters or is drowned.
# 5. Settle each of the paper's claims over 5 seeds with paired differences, and say under which
#    recipe a claim holds, fails, or cannot be decided.
#
# **Time to run:** about 65 s on a 2-core CPU at the default parameters (measured on one without
# AVX-512; faster with it). The sweeps behind the tables (both recipes, 5 seeds, trained to
# convergence) are committed in `results/` and shown below.
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
dataset = "simulated_cardiac"  # "simulated_cardiac_lv" (binary LV, the authors' task) or "atlas" (real); see notebook 04
image_size = 64
n_volumes = 24
n_slices = 8
split_sizes = None  # None: the dataset's default (simulated cardiac: 1 full, 12 weak, 4 val, 7 test volumes)
weak_kind = "seeds"
# The live run trains four rows; the committed sweeps have all seven (lower_bound, weak_only, kl, ent,
# kl_ent, pseudo, upper_bound) over 5 seeds under both recipes.
methods = ["lower_bound", "weak_only", "kl", "kl_ent"]
# "ours" or "authors" (the values and quirks of the authors' training script; section 0 lists both).
recipe = "ours"
epochs = 6  # teaching profile; the sweeps train to convergence (section 3): ours 40, authors' recipe more
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
recipe_overrides = {}  # any other recipe field of MixedConfig, e.g. {"detach_teacher": True}
base_width = 8
depth = 3
assert_orderings = True  # sweeps over seeds set False to record every run, whatever its ordering

# %%
import matplotlib.pyplot as plt
import numpy as np

import mixseg_lite
from mixseg_lite.claims import BALANCE_CLAIMS, MIXED_CLAIMS
from mixseg_lite.data.slices import SliceDataset
from mixseg_lite.parameters import check_parameters
from mixseg_lite.plotting import (class_legend, method_colour, plot_curves, plot_seed_curves, show_overlay,
                                  show_predictions)
from mixseg_lite.report import committed_tables
from mixseg_lite.results import committed_results, format_table, write_metrics
from mixseg_lite.stats import read_results
from mixseg_lite.train import (DATASETS, METHODS, RECIPES, MixedConfig, load_dataset, predict_volumes, recipe_table,
                               run_mixed_ablation)
from mixseg_lite.train.mixed import check_recipe_overrides

# Every parameter above, checked here (a bad value stops with one line naming it) and recorded
# in metrics.json.
params = check_parameters(globals())
device = mixseg_lite.setup_notebook(seed, num_threads)

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
# ## 2. Two recipes, one ablation
#
# The paper leaves most training choices open; its authors' training script existed for one commit
# (josedolz/MSL-student-becomes-master, `main.py` at 68b98c2) and fixes them. `MixedConfig(recipe=...)`
# holds both: **authors** reproduces the script, quirks included (KL computed on softmax outputs passed
# through a second softmax, from student to teacher, on `D_s` only, with the teacher *not* detached;
# entropy averaged over classes as well as pixels, over a concatenation that counts each `D_s` output
# three times; Adam at 1e-4, BatchNorm), and **ours** is the recipe this package teaches with (each
# difference measured: see sections 3-5). Every field is a parameter of `MixedConfig`, documented there.

# %%
# NBVAL_CHECK_OUTPUT
print(format_table(recipe_table(), ["field", "ours", "authors"]))

# %% [markdown]
# All rows of one run use the same network, data, optimiser and number of steps; only the loss
# changes. For the bounds only the teacher is trained, so only the teacher is reported.

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
print(f"{dataset}, recipe {recipe!r}, {epochs} epochs: test volumes, 3-D Dice (best validation epoch, and",
      f"last epoch) and HD95 (mm), mean (std) over {len(splits['test'])} volumes, averaged over",
      ", ".join(splits["test"][0].class_names[1:]))
print(format_table(rows, ["method", "branch", "dice", "dice_std", "dice_last", "best_epoch", "hd95_mm", "hd95_std"]))

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
fig.suptitle(f"Validation Dice per epoch, this live run ({recipe} recipe, {epochs} epochs, seed {seed})", fontsize=10)
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
# ## 3. How long to train: until the validation curves flatten
#
# Six epochs is a teaching profile: every curve above is still rising, and rows compared before
# they converge are ranked by how fast they learn, not by where they end. The sweeps therefore
# train every row of a recipe for the same budget, chosen from the curves below (seed 0, validation
# volumes only, `experiments/mixed_convergence.py`): the budget must lie past the epoch where the
# slowest row stops rising. Each row then keeps the weights of its best validation epoch; the
# tables report the test Dice of those weights (`dice`) and of the last epoch's (`dice_last`).

# %%
curves = read_results(committed_results("mixed_convergence_cardiac"))
# The budget each recipe was trained for in the committed ablation sweep (its `epochs` column).
sweep_epochs = {r.get("recipe"): int(r["epochs"]) for r in read_results(committed_results("mixed_ablation_cardiac"))}
panels = [("ours", "0.005"), ("authors", "0.001"), ("authors", "0.0001")]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), sharey=True)
for ax, (name, lr) in zip(axes, panels):
    plot_seed_curves([r for r in curves if r["recipe"] == name and r["lr"] == lr], "val_dice", ax)
    if name in sweep_epochs and lr != "0.0001":
        ax.axvline(sweep_epochs[name], color="black", linestyle="--", linewidth=1)
        ax.text(sweep_epochs[name], 0.93, f" sweep budget: {sweep_epochs[name]} epochs", fontsize=8)
    ax.set_title(f"{name} recipe, lr {float(lr):g}" + (" (the script's rate)" if lr == "0.0001" else ""), fontsize=9)
    ax.set_ylim(0, 1)
fig.suptitle("Validation Dice per epoch of each row's reported branch (student; teacher for the lower bound),\n"
             "default simulated cardiac task, seed 0 (committed: results/mixed_convergence_cardiac.csv)", fontsize=10)
fig.tight_layout()

# %% [markdown]
# ## 4. Which of the paper's claims hold here?
#
# One run cannot tell: two rows a few hundredths apart swap places with the seed, and even with
# the machine (another CPU sums in another order, and training amplifies the difference). The
# claims are therefore settled on the committed sweeps: all seven rows under both recipes, trained
# to the budgets above, 5 seeds (`experiments/mixed_ablation_cardiac.yaml`; `_cardiac_lv.yaml` for
# the binary LV task and `_atlas.yaml` for the real atlas, with fewer rows; the command that
# regenerates each file is in `results/README.md`). Each seed draws new volumes, a new split and new
# weights and trains every row on them, so the rows of one seed are *paired*; for each claim we take
# the per-seed difference, its mean and its 95% Student-t interval. The verdict is **holds** when
# the interval lies above 0, **opposite** when it lies below 0, and **not resolved at n seeds** when
# it contains 0. The tables are read from files, so they are the same everywhere.

# %%
# NBVAL_CHECK_OUTPUT
committed = {"simulated_cardiac": "mixed_ablation_cardiac", "simulated_cardiac_lv": "mixed_ablation_cardiac_lv",
             "atlas": "mixed_ablation_atlas"}
path = committed_results(committed[dataset]) if dataset in committed else None
if path is None:
    print(f"no committed sweep for dataset {dataset!r}: run one with `mixseg-lite sweep` (see results/README.md)")
else:
    file_rows = read_results(path)
    # One table per recipe; a file from before the recipes holds our recipe only.
    recipes = list(dict.fromkeys(r["recipe"] for r in file_rows)) if "recipe" in file_rows[0] else [None]
    for name in recipes:
        print(f"== {name or 'ours'} recipe ==")
        print(committed_tables(committed[dataset], MIXED_CLAIMS, ["method", "branch"], ["dice", "dice_last"],
                               where={"recipe": name} if name else None, order=list(METHODS)))
        print()

# %% [markdown]
# The same claims on the two other tasks, under both recipes: the binary LV task of the authors'
# script (same simulated volumes, background / LV cavity) and the real atlas. They have fewer rows
# (lower bound, KL, KL + entropy), so only the claims those rows can settle appear. Run this
# notebook with `dataset="simulated_cardiac_lv"` or `"atlas"` for their full tables.

# %%
# NBVAL_CHECK_OUTPUT
for other, name in committed.items():
    if other == dataset or committed_results(name) is None:
        continue
    for recipe_name in RECIPES:
        print(f"== {other}, {recipe_name} recipe ==")
        print(committed_tables(name, MIXED_CLAIMS, ["method", "branch"], ["dice"], where={"recipe": recipe_name},
                               rows_table=False))
        print()

# %% [markdown]
# **Reading the tables** (simulated cardiac, 5 seeds; the numbers are in the tables above).
#
# - *Under our recipe* the method does what mixed supervision promises: the KL + entropy student
#   beats the converged lower bound on every seed (about +0.17 Dice), KL rescues the seed-only
#   student, and entropy without KL collapses. But *KL + entropy beats KL alone* and *entropy beats
#   pseudo-masks* are not resolved: the differences are within 0.01 of 0, because with our weights
#   entropy carries under 1% of the pull on the student (section 5): it is drowned. *The student
#   beats its teacher* on 5 of 5 seeds by about 0.016, and the interval still touches 0: more seeds
#   would decide it.
# - *Under the authors' recipe* (learning rate 1e-3, see section 3) entropy carries about half of
#   the pull, and *KL + entropy beats KL alone* holds by a wide margin, as the paper says. *The
#   student beats its teacher* holds too, but for a reason the paper does not give: with BatchNorm,
#   a plain cross-entropy teacher and one fully labelled volume, the teacher branch collapses on
#   validation data as soon as the student trains on the shared encoder (teacher 0.1-0.2 Dice, while
#   the lower bound alone reaches 0.55). The student does not beat the lower bound there, and the
#   pseudo-mask student was still improving at the end of the budget (best epoch about 56 of 60), so
#   *entropy beats pseudo-masks* stays open under that recipe.
# - *On the other two tasks* the student beats the lower bound under our recipe again (binary LV
#   about +0.12, atlas about +0.20, every seed). Under the authors' recipe the binary LV task goes
#   the other way: its only weak labels are foreground seeds, so partial CE and entropy are both
#   smallest when every pixel is called foreground, and the undetached KL drags the teacher along;
#   the KL rows peak after about 4 epochs and then collapse (a rerun of seed 0 ends with the student
#   calling 94% of the pixels LV, which covers 2.3%). *KL + entropy beats KL alone* is not resolved
#   on either task; on the atlas every seed favours it under our recipe, so more seeds could decide it.
#
# So the verdict on a claim depends on the recipe, and each is stated with the setting it holds
# under. These are 64x64 simulated slices and a UNet of width 8, not the paper's 256x256 ACDC and
# width 64: a claim that fails here fails "under this recipe and setting", not in general.

# %% [markdown]
# ## 5. A weight means nothing without its scale: where entropy matters and where it is drowned
#
# `lambda_ent = 0.1` next to `lambda_kd = 10` says little by itself: what counts is how hard each
# term pulls on the student's logits. `mixseg_lite.train.mixed.gradient_shares` measures it: the
# norm of each term's gradient with respect to the student logits, as a share of the sum over the
# student's terms (partial CE, KL, entropy). Every training log records the shares on the first
# step of each epoch, and the sweeps keep those of the last epoch. Under our recipe KL carries about
# half of the pull and entropy about 1%; under the authors' recipe (entropy on `D_s` and `D_w`,
# averaged over classes as well, weight 1 against KL 20 on doubly-softmaxed outputs) entropy
# carries most of it. `experiments/mixed_balance_cardiac.yaml` varies `lambda_ent` against
# `lambda_kd` under our recipe (second table): entropy's share rises from 0.006 to about 0.22,
# and yet no setting is resolved against the KL-only student of the same seeds (third table, every
# difference within 0.01 and every interval about ±0.03 wide). Drowning explains why KL + entropy
# ties KL under our weights; giving entropy its share does not make it win here either.

# %%
# NBVAL_CHECK_OUTPUT
print(committed_tables("mixed_ablation_cardiac", [], ["recipe", "method"],
                       ["dice", "share_kd", "share_ent", "share_pseudo"], where={"branch": "student"}, order=list(RECIPES)))
if committed_results("mixed_balance_cardiac") is not None:
    print()
    print(committed_tables("mixed_balance_cardiac", BALANCE_CLAIMS, ["lambda_kd", "lambda_ent"],
                           ["dice", "share_weak", "share_kd", "share_ent"], where={"branch": "student"},
                           compare_with=("mixed_ablation_cardiac", {"recipe": "ours", "method": "kl"})))

# %% [markdown]
# The shares of the live run (last epoch), for comparison: the authors' recipe gives entropy a far
# larger share than ours.

# %%
# NBVAL_IGNORE_OUTPUT
print(format_table([r for r in rows if r["branch"] == "student"],
                   ["method", "branch", *sorted({k for r in rows for k in r if k.startswith("share_")})]))

# %% [markdown]
# ## 6. What do the weak labels buy? Semi-supervised rows on the same split
#
# Mixed supervision needs someone to draw seeds on every `D_w` image. Semi-supervised learning uses
# the same images **without any label**: is the drawing worth it? Two baselines, written from their
# papers (`mixseg_lite.losses.semi`), train the lower bound's UNet (shared encoder + teacher
# decoder) on `D_s` with its full masks plus the unlabelled `D_w` images:
#
# - **Mean Teacher** (Tarvainen & Valpola 2017): a copy of the network whose weights are an
#   exponential moving average (decay 0.99) of the trained ones predicts each `D_w` image under input
#   noise; the trained network is pulled towards that prediction (mean squared difference of the
#   softmax outputs, weight 0.1, ramped up).
# - **Cross Pseudo Supervision** (Chen et al. 2021): two networks from different initialisations,
#   each trained on the other's hard pseudo-labels (argmax, no gradient), weight 1.5.
#
# Same split, same budget (our recipe, 40 epochs), same evaluation, 5 seeds, paired with the rows
# above (`experiments/mixed_ablation_cardiac.yaml`).

# %%
semi_rows = [r for r in read_results(committed_results("mixed_ablation_cardiac")) if r.get("recipe") == "ours"]
shown_rows = [("lower_bound", "teacher", "lower bound\n(D_s only)"), ("mean_teacher", "teacher", "Mean Teacher\n(+ D_w images)"),
              ("cps", "teacher", "CPS\n(+ D_w images)"), ("kl_ent", "student", "KL + Ent student\n(+ D_w seeds)"),
              ("upper_bound", "teacher", "upper bound\n(D_w fully labelled)")]
fig, ax = plt.subplots(figsize=(8, 3.4))
for x, (method, branch, label) in enumerate(shown_rows):
    values = [float(r["dice"]) for r in semi_rows if r["method"] == method and r["branch"] == branch]
    if values:
        ax.bar(x, np.mean(values), yerr=np.std(values, ddof=1) if len(values) > 1 else 0, capsize=4,
               color=method_colour(method), alpha=0.85)
        ax.plot([x] * len(values), values, "o", markersize=4, markerfacecolor="white", markeredgecolor="black")
ax.set_xticks(range(len(shown_rows)), [label for _, _, label in shown_rows], fontsize=8)
ax.set_ylabel("test Dice (3-D, mean over classes)")
ax.set_ylim(0, 1)
ax.set_title("No labels on D_w (semi-supervised) vs seeds on D_w (mixed): bars mean ± sd over "
             f"{len({r['seed'] for r in semi_rows})} seeds, "
             "circles the seeds\n(committed sweep, our recipe, simulated cardiac)", fontsize=9)
fig.tight_layout()

# %% [markdown]
# **Reading the figure** (verdicts in the claims table of section 4). Cross pseudo supervision
# gets most of the way without a single label on `D_w`: it beats the lower bound on every seed
# (about +0.14), and the KL + entropy student's lead over it (about +0.03, 4 of 5 seeds) is not
# resolved at 5 seeds; CPS also picked one of its last epochs on every seed (best epoch about 39 of
# 40), so a longer budget could narrow the gap further. Mean Teacher, at the weight SSL4MIS uses on
# ACDC, adds nothing over the lower bound here, and the seeds beat it clearly. So on this task the
# honest answer to "is it worth drawing seeds?" is: not clearly, once a strong semi-supervised
# baseline is trained on the same images; what would decide it is more seeds and a budget at which
# CPS has flattened too.

# %% [markdown]
# Only orderings far outside the noise are asserted, with a tolerance taken from the 5 committed
# seeds of this notebook's default profile (`results/teaching_profiles.csv`): there the KL and the
# KL + entropy students beat the seed-only student by 0.45-0.63 Dice (smallest gap on seed 0, the
# default). We assert a third of the smallest gap (0.15), so the check holds on any machine and
# seed on which distillation works at all, and only at the profile it was measured for.

# %%
dice = {(r["method"], r["branch"]): r["dice"] for r in rows}
write_metrics(output_dir, [{k: v for k, v in r.items() if k != "per_class"} for r in rows], params)
teaching_profile = recipe == "ours" and epochs == 6 and dataset == "simulated_cardiac"
if assert_orderings and teaching_profile and {"kl_ent", "weak_only"} <= set(methods):
    assert dice[("kl_ent", "student")] > dice[("weak_only", "student")] + 0.15, "KL must lift the seed-only student"
if assert_orderings and teaching_profile and {"kl", "weak_only"} <= set(methods):
    assert dice[("kl", "student")] > dice[("weak_only", "student")] + 0.15, "KL must lift the seed-only student"
