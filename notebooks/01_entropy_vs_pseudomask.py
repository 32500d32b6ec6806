# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Entropy minimisation and pseudo-masks
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/mixseg-lite/mixseg-lite/blob/main/notebooks/01_entropy_vs_pseudomask.ipynb)
# [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/mixseg-lite/mixseg-lite/main?labpath=notebooks%2F01_entropy_vs_pseudomask.ipynb)
#
# **Learning goals**
# 1. Show that cross-entropy against a network's own argmax (a *pseudo-mask*) is the
#    *min-entropy* $-\log\max_k p_k$, a lower bound of the Shannon entropy, and that both are
#    minimised exactly at one-hot predictions.
# 2. Derive both gradients with respect to the logits, check them against autograd, and see why
#    pseudo-masks push hardest on the most uncertain pixels while entropy pushes them least.
# 3. Train the mixed-supervision student (Liu et al., MedIA 2023) with KL + entropy, with
#    KL + pseudo-masks, and with entropy but no KL, and watch the last one collapse.
#
# **Time to run:** about 45 s on a 2-core CPU at the default parameters (measured on one without
# AVX-512; faster with it).
#
# **Data:** a *simulated* cardiac short-axis MRI dataset generated on the fly
# (`mixseg_lite.data.cardiac_sim`); no download.

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
    os.chdir("/content/mixseg-lite/notebooks")

# %% tags=["parameters"]
seed = 0
num_threads = 2
output_dir = "outputs/01_entropy_vs_pseudomask"
image_size = 64
n_volumes = 22
n_slices = 8
split_sizes = {"full": 3, "weak": 10, "val": 3, "test": 6}
weak_kind = "seeds"
epochs = 6
batch_size = 8
learning_rate = 0.005
base_width = 8
depth = 3
# Our choices (the paper does not publish them): loss weights, KL temperature, ramp-up of the
# entropy weight, and GroupNorm (BatchNorm's running statistics lag the shared encoder).
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

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import mixseg_lite
from mixseg_lite.claims import ENTROPY_CLAIMS
from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
from mixseg_lite.data.slices import split_volumes
from mixseg_lite.losses import entropy_loss, pixel_entropy, pseudo_mask_loss
from mixseg_lite.parameters import check_parameters
from mixseg_lite.plotting import show_predictions
from mixseg_lite.report import committed_tables
from mixseg_lite.results import format_table, write_metrics
from mixseg_lite.train import MixedConfig, predict_volumes, run_mixed_ablation

# Every parameter above, checked here (a bad value stops with one line naming it) and recorded
# in metrics.json.
params = check_parameters(globals())
device = mixseg_lite.setup_notebook(seed, num_threads)

# %% [markdown]
# ## 1. Two ways to make a prediction confident
#
# For a pixel with class probabilities $p = \mathrm{softmax}(z)$:
#
# * **Shannon entropy** $H(p) = -\sum_k p_k \log p_k$.
# * **Pseudo-mask cross-entropy**: take the label $\hat y = \arg\max_k p_k$ as if it were true
#   (and do not differentiate through the argmax): $\mathrm{CE}(p, \hat y) = -\log p_{\hat y} =
#   -\log \max_k p_k$. This is the *min-entropy* $H_\infty(p)$.
#
# Since $\log p_k \le \log \max_j p_j$ for every $k$, averaging with weights $p_k$ gives
# $H(p) = -\sum_k p_k \log p_k \ge -\log \max_k p_k = H_\infty(p) \ge 0$, and both are $0$
# exactly when $p$ is one-hot. So *pseudo-masks minimise a lower bound of the entropy*: same
# minimisers, different paths. The path is decided by the gradients:
#
# * Entropy: $\dfrac{\partial H}{\partial z_k} = -p_k\,(\log p_k + H)$.
# * Pseudo-mask CE: $\dfrac{\partial H_\infty}{\partial z_k} = p_k - [k = \hat y]$.
#
# We check both against autograd on random logits.

# %%
# NBVAL_CHECK_OUTPUT
generator = torch.Generator().manual_seed(seed)
z = torch.randn(4, 5, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
pixel_entropy(z).sum().backward()
p = z.detach().softmax(1)
H = -(p * p.log()).sum(1, keepdim=True)
entropy_error = (z.grad - (-p * (p.log() + H))).abs().max().item()

z.grad = None
pseudo_mask_loss(z).backward()
onehot = torch.nn.functional.one_hot(p.argmax(1), 5).permute(0, 3, 1, 2)
pseudo_error = (z.grad * p[:, 0].numel() - (p - onehot)).abs().max().item()

min_entropy = -(p.max(1).values.log())
print(f"entropy gradient formula matches autograd: {entropy_error < 1e-12}")
print(f"pseudo-mask gradient formula matches autograd: {pseudo_error < 1e-12}")
print(f"min-entropy <= Shannon entropy on every pixel: {bool((min_entropy <= H[:, 0] + 1e-12).all())}")
print(f"mean min-entropy {min_entropy.mean():.3f} <= mean Shannon entropy {H.mean():.3f}")
assert entropy_error < 1e-12 and pseudo_error < 1e-12

# %% [markdown]
# ### The binary case
#
# With two classes and logit difference $z$, $p = \sigma(z)$. The entropy gradient is
# $\partial H / \partial z = -z\,p(1-p)$: zero at $p = 0.5$, largest in magnitude near
# $|z| \approx 1.54$ ($p \approx 0.82$), and vanishing again for confident pixels. The pseudo-mask
# gradient $p - [\hat y = 1]$ has magnitude $\min(p, 1 - p)$: **largest (0.5) at $p = 0.5$**.
#
# So pseudo-masks push hardest on the pixels the network is least sure about, the ones most
# likely to be wrong, and commit them to whatever side they happen to lean. Entropy leaves those
# pixels almost alone and lets another term (here the teacher's KL) decide them.

# %%
# NBVAL_CHECK_OUTPUT
logit = torch.linspace(-6, 6, 2401, dtype=torch.float64)
prob = torch.sigmoid(logit)
entropy_grad = -logit * prob * (1 - prob)
pseudo_grad = torch.minimum(prob, 1 - prob)  # magnitude of p - onehot

two_class = torch.stack([logit / 2, -logit / 2])[None, :, :, None].requires_grad_(True)
pixel_entropy(two_class).sum().backward()
autograd_dz = (two_class.grad[0, 0, :, 0] - two_class.grad[0, 1, :, 0]) / 2
assert torch.allclose(autograd_dz, entropy_grad, atol=1e-10)

peak = logit[entropy_grad.abs().argmax()].abs().item()
half = len(logit) // 2
print(f"|dH/dz| peaks at |z| = {peak:.2f} (p = {torch.sigmoid(torch.tensor(peak)).item():.3f})")
print(f"at p = 0.5: |dH/dz| = {entropy_grad[half].abs().item():.3f}, |dCE_pseudo/dz| = {pseudo_grad[half].item():.3f}")
assert abs(peak - 1.54) < 0.01

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(prob, (-(prob * prob.log() + (1 - prob) * (1 - prob).log())), label="Shannon entropy $H$")
axes[0].plot(prob, -torch.maximum(prob, 1 - prob).log(), label="min-entropy (pseudo-mask CE)")
axes[0].set_xlabel("$p$ (foreground probability)")
axes[0].set_ylabel("loss")
axes[0].legend(fontsize=8)
axes[1].plot(prob, entropy_grad.abs(), label="|dH/dz|")
axes[1].plot(prob, pseudo_grad, label="|dCE(pseudo)/dz|")
axes[1].axvline(0.5, color="grey", lw=0.5)
axes[1].set_xlabel("$p$")
axes[1].set_ylabel("gradient magnitude")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()

# %% [markdown]
# ## 2. Training: KL + entropy, KL + pseudo-masks, entropy without KL
#
# A simulated cardiac dataset: each volume has 8 short-axis slices with RV cavity, myocardium and
# LV cavity. `D_s` = 3 fully labelled volumes, `D_w` = 10 volumes whose only labels are small
# seeds eroded from each structure (background is never labelled), plus validation and test
# volumes. The dual-branch UNet has one encoder and two decoders: the teacher learns from `D_s`,
# the student from the seeds, the teacher's detached predictions (KL) and its own confidence.

# %%
volumes = make_cardiac_volumes(n_volumes, n_slices, image_size, seed=seed)
splits = split_volumes(volumes, split_sizes, seed=seed)
config = MixedConfig(epochs=epochs, batch_size=batch_size, lr=learning_rate, lambda_kd=lambda_kd,
                     lambda_ent=lambda_ent, temperature=temperature, pseudo_threshold=pseudo_threshold,
                     weak_kind=weak_kind, base_width=base_width, depth=depth, norm=norm,
                     ramp_up_epochs=ramp_up_epochs, dice_weight=dice_weight,
                     class_balance=class_balance, seed=seed)
print({name: len(v) for name, v in splits.items()}, "volumes (simulated)")

# %%
# NBVAL_IGNORE_OUTPUT
methods = ["kl_ent", "pseudo", "ent"]
rows, results = run_mixed_ablation(methods, splits["full"], splits["weak"], splits["test"], config)

# %% [markdown]
# Besides Dice and HD95 we measure what the *collapse* looks like: the fraction of test pixels
# the student calls foreground (the truth is given below) and its mean prediction entropy.

# %%
# NBVAL_IGNORE_OUTPUT
# Scores of models trained here: printed for reading, not compared by nbval (they change in the
# last digits with the CPU's instruction set and thread count, and training amplifies that).
test = splits["test"]
true_fg = float(np.mean([(v.label > 0).mean() for v in test]))
for row in rows:
    prediction = predict_volumes(results[row["method"]].model, test)[row["branch"]]
    row["foreground_fraction"] = float(np.mean([(p > 0).mean() for p in prediction]))
student_entropy = {}
for method, result in results.items():
    with torch.no_grad():
        images = torch.from_numpy(np.concatenate([v.image.transpose(1, 0, 2, 3) for v in test]))
        student_entropy[method] = entropy_loss(result.model(images)[1]).item()
for row in rows:
    row["student_entropy"] = student_entropy[row["method"]] if row["branch"] == "student" else float("nan")
print(f"true foreground fraction of the test volumes: {true_fg:.3f}")
print(format_table(rows, ["method", "branch", "dice", "hd95_mm", "foreground_fraction", "student_entropy"]))

# %%
fig = show_predictions(test[0], {f"{m} student": predict_volumes(results[m].model, test[:1])["student"][0]
                                 for m in methods}, slices=[1, 3, 5], title="Simulated test volume")

# %% [markdown]
# ## 3. What the numbers say
#
# * **Entropy without KL collapses.** The seeds label only foreground, so nothing tells the
#   student where background is: it labels (nearly) every pixel as foreground, a trivial solution
#   that the seed loss rewards. Entropy minimisation cannot rescue it, since it rewards confidence
#   in a wrong answer as much as in a right one.
# * **KL + entropy vs KL + pseudo-masks.** With the teacher's KL in place both students learn.
#   The paper reports entropy ahead of pseudo-masks. Whether that holds here is a question for
#   many seeds, not for the one run above: a single run's ordering of two close rows changes with
#   the seed, and even with the machine (another CPU sums in another order, and training
#   amplifies the difference).
#
# So the claims are settled on the committed multi-seed results: this notebook at its default
# parameters, run for 5 seeds (`mixseg-lite sweep experiments/teaching_profiles.yaml`, see
# `results/README.md`). Each seed draws new volumes, a new split and new weights, and trains every
# row on them, so the rows of a seed are paired; a claim **holds** when the 95% interval of the
# paired difference lies above 0, is **opposite** when it lies below, and is **not resolved**
# otherwise. These tables are read from a file, so they are the same on every machine.

# %%
# NBVAL_CHECK_OUTPUT
print(committed_tables("teaching_profiles", ENTROPY_CLAIMS, ["method", "branch"], ["dice", "foreground_fraction"],
                       where={"notebook": "01_entropy_vs_pseudomask"}))

# %% [markdown]
# The live run, for comparison (one seed, this machine; read it, do not conclude from it):

# %%
# NBVAL_IGNORE_OUTPUT
by = {(r["method"], r["branch"]): r for r in rows}
collapse, method, pseudo = by[("ent", "student")], by[("kl_ent", "student")], by[("pseudo", "student")]
print(f"entropy alone: foreground {collapse['foreground_fraction']:.2f} of the pixels vs true {true_fg:.2f}")
print(f"KL+entropy student Dice {method['dice']:.3f}, KL+pseudo-mask student Dice {pseudo['dice']:.3f}, "
      f"entropy-only student Dice {collapse['dice']:.3f}")

# %% [markdown]
# Only orderings far outside the noise are asserted, with tolerances taken from the 5 committed
# seeds of this profile (`results/teaching_profiles.csv`, table above): there the entropy-only
# student labelled 0.62-1.00 of the pixels foreground, at least 8 times the true fraction, and
# the KL+entropy student beat it by 0.18-0.64 Dice (smallest gap on seed 0). We assert half the
# smallest ratio (4x) and a third of the smallest gap (0.05), so the checks hold on any machine
# and seed on which the method works at all.

# %%
write_metrics(output_dir, [{k: r[k] for k in ("method", "branch", "dice", "hd95_mm", "foreground_fraction")}
                           for r in rows], params)
assert collapse["foreground_fraction"] > 4 * true_fg, "entropy without KL should over-segment"
assert method["dice"] > collapse["dice"] + 0.05, "KL + entropy should beat entropy alone"
