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


def show_outlines(ax, image: np.ndarray, mask: np.ndarray, num_classes: int, title: str | None = None,
                  linewidth: float = 0.9) -> None:
    """Draw a grey image ``(H, W)`` with the outline of each class of an integer mask ``(H, W)`` in
    its overlay colour (:func:`class_legend` names them), so the image under the label stays
    visible. An outline runs along the pixel edges where the class starts (a contour of the
    class's indicator at 0.5)."""
    ax.imshow(image, cmap="gray", interpolation="nearest")
    colours = label_cmap(num_classes).colors
    for k in range(1, num_classes):
        present = mask == k
        if present.any():
            ax.contour(present.astype(float), levels=[0.5], colors=[colours[k]], linewidths=linewidth)
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
        # Each row is one slice: say which, left of the row (axes are off, so no ylabel).
        row[0].text(-0.06, 0.5, f"slice z={z}", transform=row[0].transAxes, rotation=90, ha="right", va="center",
                    fontsize=8)
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


def plot_method_bars(rows: list[dict], key: str, ax=None, label_key: str = "method", group_key: str = "modality",
                     ylabel: str | None = None, names: dict[str, str] | None = None,
                     legend_kwargs: dict | None = None):
    """One bar per row of ``rows`` (e.g. one per method and modality) showing ``row[key]``, in the
    colour of its method (:func:`method_colour` of ``row[label_key]``), with one legend entry per
    method. Tick labels read ``method`` over ``group`` (the group is left out when it is missing
    or "-", e.g. the empty-mask baseline's modality); ``names`` renames methods on ticks and in
    the legend (``{"empty": "empty masks"}``); ``legend_kwargs`` go to ``ax.legend`` (e.g. ``loc``,
    ``ncols``). Returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    names = names or {}
    shown = [names.get(str(row[label_key]), str(row[label_key])) for row in rows]
    ticks = [name if str(row.get(group_key, "-")) in ("-", "", "None") else f"{name}\n{row[group_key]}"
             for name, row in zip(shown, rows)]
    colours = [method_colour(str(row[label_key])) for row in rows]
    x = np.arange(len(rows))
    ax.bar(x, [float(row[key]) for row in rows], 0.7, color=colours)
    ax.set_xticks(x, ticks, fontsize=7)
    ax.set_ylabel(ylabel or key.replace("_", " "))
    handles = [Patch(facecolor=colour, label=name) for name, colour in dict(zip(shown, colours)).items()]
    ax.legend(handles=handles, **{"fontsize": 7, "frameon": False, **(legend_kwargs or {})})
    ax.grid(axis="y", alpha=0.3)
    return ax


def structure_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """The tight boxes of a 2-D label map ``(H, W)``, as :func:`mixseg_lite.weak.boxes` draws them:
    one per 8-connected structure of each foreground class, ``(class_index, row0, col0, row1, col1)``
    with inclusive pixel bounds, in class order."""
    from scipy import ndimage

    mask = np.asarray(mask)
    found = []
    for class_index in sorted(int(c) for c in np.unique(mask) if c != 0 and c != UNLABELLED):
        components, _ = ndimage.label(mask == class_index, structure=np.ones((3, 3), dtype=bool))
        for rows, cols in ndimage.find_objects(components):
            found.append((class_index, rows.start, cols.start, rows.stop - 1, cols.stop - 1))
    return found


def draw_structure_boxes(ax, mask: np.ndarray, num_classes: int, linewidth: float = 1.2) -> list:
    """Outline each structure's tight box (:func:`structure_boxes`) on ``ax`` in the overlay colour
    of the class inside it, so a box weak label says which class it holds. Pixel edges are drawn
    (a box around pixels r0..r1 spans r0 - 0.5 .. r1 + 0.5), in data coordinates, so the outline
    follows the image whatever its ``origin``. Returns the rectangles."""
    from matplotlib.patches import Rectangle

    colours = label_cmap(num_classes).colors
    patches = []
    for class_index, row0, col0, row1, col1 in structure_boxes(mask):
        rectangle = Rectangle((col0 - 0.5, row0 - 0.5), col1 - col0 + 1, row1 - row0 + 1, fill=False,
                              edgecolor=colours[class_index], linewidth=linewidth)
        ax.add_patch(rectangle)
        patches.append(rectangle)
    return patches
