"""Figures shared by the notebooks: label overlays, prediction grids, training curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from mixseg_lite import UNLABELLED

# Background transparent; foreground classes in colour-blind friendly hues (Okabe-Ito).
CLASS_COLOURS = ["#00000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"]


# One colour per method across every figure (tab10 order), so a method never changes colour
# between panels or notebooks; unknown names get the remaining colours in order of appearance.
METHOD_COLOURS = {
    "lower_bound": "#7f7f7f", "weak_only": "#8c564b", "kl": "#1f77b4", "ent": "#d62728", "kl_ent": "#2ca02c",
    "pseudo": "#ff7f0e", "upper_bound": "#000000", "mean_teacher": "#17becf", "cps": "#bcbd22",
    "cam": "#7f7f7f", "cam_er": "#1f77b4", "cam_er_cmer": "#ff7f0e", "cam_er_cmer_kl": "#2ca02c",
    "supervised": "#000000", "empty": "#d62728",
}
_SPARE_COLOURS = ["#9467bd", "#e377c2", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5"]
_NAMED = len(METHOD_COLOURS)


def method_colour(name: str) -> str:
    """The colour of a method (its name before any space: "kl_ent student" -> "kl_ent")."""
    key = name.split()[0]
    if key not in METHOD_COLOURS:  # the next spare colour, kept for the rest of the session
        METHOD_COLOURS[key] = _SPARE_COLOURS[(len(METHOD_COLOURS) - _NAMED) % len(_SPARE_COLOURS)]
    return METHOD_COLOURS[key]


def class_legend(target, class_names, fontsize: int = 8, colours: list[str] | None = None, **kwargs):
    """Legend of the foreground classes' overlay colours on an Axes or a Figure.

    ``class_names[0]`` is the background and gets no entry, unless ``colours`` gives the first
    entries' colours (e.g. the tint of *labelled* background in a weak mask).
    """
    palette = list(label_cmap(len(class_names)).colors)
    shown = list(range(1, len(class_names)))
    if colours:
        palette[:len(colours)] = colours
        shown = list(range(len(class_names)))
    handles = [Patch(facecolor=palette[k], edgecolor="none", label=class_names[k]) for k in shown]
    return target.legend(handles=handles, fontsize=fontsize, frameon=False, **kwargs)


def label_cmap(num_classes: int) -> ListedColormap:
    """Colour map for integer masks: class 0 transparent, others distinct colours."""
    colours = (CLASS_COLOURS * (num_classes // len(CLASS_COLOURS) + 1))[:num_classes]
    return ListedColormap(colours)


def show_overlay(ax, image: np.ndarray, mask: np.ndarray | None = None, num_classes: int = 4,
                 title: str | None = None, alpha: float = 0.55) -> None:
    """Draw a grey image ``(H, W)`` with an integer mask ``(H, W)`` on top; unlabelled pixels clear."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    if mask is not None:
        shown = np.ma.masked_where((mask == 0) | (mask == UNLABELLED), mask)
        ax.imshow(shown, cmap=label_cmap(num_classes), vmin=0, vmax=num_classes - 1,
                  alpha=alpha, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def show_predictions(volume, predictions: dict[str, np.ndarray], slices: list[int], title: str | None = None):
    """Grid: one row per slice; columns = image, ground truth, then each named prediction ``(Z, H, W)``."""
    names = ["image", "ground truth"] + list(predictions)
    fig, axes = plt.subplots(len(slices), len(names), figsize=(1.9 * len(names), 1.9 * len(slices)),
                             squeeze=False)
    for row, z in zip(axes, slices):
        image = volume.image[0, z]
        show_overlay(row[0], image, None, volume.num_classes, "image" if z == slices[0] else None)
        show_overlay(row[1], image, volume.label[z], volume.num_classes, "ground truth" if z == slices[0] else None)
        for ax, (name, pred) in zip(row[2:], predictions.items()):
            show_overlay(ax, image, pred[z], volume.num_classes, name if z == slices[0] else None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    class_legend(fig, volume.class_names, loc="lower center", ncol=max(1, volume.num_classes - 1),
                 bbox_to_anchor=(0.5, -0.02))
    fig.subplots_adjust(bottom=0.06 + 0.12 / len(slices))
    return fig


def plot_curves(logs: dict[str, list[dict]], key: str, ylabel: str | None = None, ax=None):
    """One line per run: ``logs[name]`` is a per-epoch list of dicts holding ``key``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for name, log in logs.items():
        epochs = [r["epoch"] for r in log if key in r]
        ax.plot(epochs, [r[key] for r in log if key in r], label=name, marker=".", color=method_colour(name))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or key)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_seed_curves(rows: list[dict], key: str, ax=None, label_key: str = "method"):
    """Committed per-epoch curves (e.g. ``results/mixed_convergence_cardiac.csv``): for each
    ``label_key`` value, the mean of ``key`` over seeds per epoch, with the seeds' range shaded.
    Rows without a number in ``key`` are skipped."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    curves: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        try:
            value = float(row[key])
        except (KeyError, TypeError, ValueError):
            continue
        curves.setdefault(str(row[label_key]), {}).setdefault(int(row["epoch"]), []).append(value)
    for name, by_epoch in curves.items():
        epochs = sorted(by_epoch)
        values = [by_epoch[e] for e in epochs]
        colour = method_colour(name)
        ax.plot(epochs, [np.mean(v) for v in values], label=name, color=colour)
        if max(len(v) for v in values) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax
