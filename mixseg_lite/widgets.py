"""Browse a volume slice by slice: live widgets in Jupyter, a static figure everywhere else.

:func:`browse_volume` builds an ipywidgets browser (slice slider, modality dropdown, overlay
toggle) when a live Jupyter frontend is attached, and otherwise returns a static matplotlib
figure: a grid of a few slices per modality. Widgets need a frontend to render them; an executed
notebook (papermill, nbval, nbconvert), a plain ``python`` script or a terminal IPython would
only print ``VBox(...)``, and a notebook twin stored with widget state goes stale, so those get
the figure.

How a live frontend is detected (:func:`has_live_frontend`): there must be an IPython *kernel*
(not a terminal shell), and the request being executed must allow stdin. Interactive frontends
(JupyterLab, classic Notebook, VS Code, Colab) send ``allow_stdin=True`` with every cell, while
headless executors (nbclient, and so papermill and nbconvert; nbval) send ``False``, because
nobody is there to type an answer, and nobody is there to move a slider either. Voila executes
headlessly but renders widgets, so it is recognised by the ``SERVER_SOFTWARE`` variable it sets.
``$MIXSEG_STATIC_WIDGETS`` (``1``/``0``) or the ``static`` argument override the detection, e.g.
``MIXSEG_STATIC_WIDGETS=1`` in ``jupyter console`` or Spyder, which allow stdin but draw no widgets.
Notebooks pass their ``static_figures`` parameter as ``static``, so a batch run says it explicitly
(``papermill -p static_figures True``, which ``mixseg-lite run`` and ``sweep`` set; ``build``
leaves the parameter at None so the committed twins stay interactive for students).

Works with ipywidgets 7 (Colab ships 7 and renders 8 poorly) and 8: only widgets and traits
both versions have are used.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np

from mixseg_lite import UNLABELLED
from mixseg_lite.data.volume import Volume
from mixseg_lite.errors import InputError, check_choice, check_label_values

STATIC_ENV_VAR = "MIXSEG_STATIC_WIDGETS"
"""``1``/``true`` forces the static figure, ``0``/``false`` forces widgets; unset: detect."""

OVERLAYS = ("none", "label", "weak")
"""What can be drawn over the image: nothing, the full label map, or the weak mask."""

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_OVERLAY_ALPHA = 0.55
# Labelled background is information in a weak mask (boxes, scribbles, points): a purple tint no
# foreground class uses, strong enough to see on a bright image.
WEAK_BACKGROUND_COLOUR = "#7B3294"
_WEAK_BACKGROUND_RGBA = (0.482, 0.196, 0.580, 0.5)


# ----------------------------------------------------------------------------- detection

def has_live_frontend() -> bool:
    """True when a Jupyter frontend that can render widgets is attached to this process."""
    if "IPython" not in sys.modules:  # nothing imported IPython: certainly no kernel
        return False
    from IPython import get_ipython

    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:  # plain python or terminal IPython
        return False
    if "google.colab" in sys.modules:
        return True
    if os.environ.get("SERVER_SOFTWARE", "").lower().startswith("voila"):
        return True
    # The request being executed, through ipykernel's public Kernel.get_parent (the header and
    # content of the message that runs this cell): frontends that can answer input() allow stdin.
    try:
        parent = kernel.get_parent("shell")
    except TypeError:  # ipykernel 6.0-6.x before the channel argument
        parent = kernel.get_parent()
    except Exception:  # noqa: BLE001 - a kernel without get_parent: assume headless
        return False
    return bool((parent or {}).get("content", {}).get("allow_stdin", False))


def use_static(static: bool | None = None) -> bool:
    """Whether :func:`browse_volume` should draw a static figure.

    ``static`` wins when given; then ``$MIXSEG_STATIC_WIDGETS``; then :func:`has_live_frontend`.
    """
    if static is not None:
        return bool(static)
    value = os.environ.get(STATIC_ENV_VAR, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value:
        raise InputError(f"${STATIC_ENV_VAR}={os.environ[STATIC_ENV_VAR]!r}: use 1 (static figure) "
                         "or 0 (live widgets), or unset it to detect")
    return not has_live_frontend()


# ----------------------------------------------------------------------------- drawing

def _rgba(hex_colour: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    return to_rgba(hex_colour)


def class_colours(num_classes: int) -> np.ndarray:
    """``(num_classes, 4)`` RGBA colours of the label overlays (class 0 transparent)."""
    from mixseg_lite.plotting import CLASS_COLOURS

    colours = [_rgba(c) for c in (CLASS_COLOURS * (num_classes // len(CLASS_COLOURS) + 1))[:num_classes]]
    table = np.array(colours, dtype=float)
    table[1:, 3] = _OVERLAY_ALPHA
    table[0] = 0.0
    return table


def compose_slice(image: np.ndarray, mask: np.ndarray | None, num_classes: int, window: tuple[float, float],
                  weak: bool = False) -> np.ndarray:
    """RGB ``(H, W, 3)`` float image: the grey slice, windowed to ``window``, with ``mask`` blended on top.

    Class 0 is left clear in a full label map; in a weak mask (``weak=True``) pixels labelled
    background get a purple tint (:data:`WEAK_BACKGROUND_COLOUR`), because "labelled background"
    is information there;
    :data:`mixseg_lite.UNLABELLED` pixels stay clear in both.
    """
    low, high = window
    grey = np.clip((np.asarray(image, dtype=float) - low) / max(high - low, 1e-12), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if mask is None:
        return rgb
    colours = class_colours(num_classes)
    if weak:
        colours[0] = _WEAK_BACKGROUND_RGBA
    mask = np.asarray(mask)
    overlay = np.zeros(mask.shape + (4,))
    labelled = mask != UNLABELLED
    overlay[labelled] = colours[np.clip(mask[labelled], 0, num_classes - 1)]
    alpha = overlay[..., 3:]
    return rgb * (1 - alpha) + overlay[..., :3] * alpha


def intensity_window(channel: np.ndarray) -> tuple[float, float]:
    """Display range of one modality ``(Z, H, W)``: its 1st and 99th percentiles.

    One window per modality (not per slice) so slices of a volume are shown on the same scale,
    and a few very bright voxels do not turn everything else dark.
    """
    low, high = np.percentile(channel, [1, 99])
    if high <= low:
        low, high = float(channel.min()), float(channel.max()) + 1e-6
    return float(low), float(high)


def default_slices(volume: Volume, count: int) -> list[int]:
    """``count`` slice indices spread evenly over the slices that hold foreground (all if none)."""
    candidates = np.arange(volume.num_slices)
    if volume.label is not None:
        with_foreground = np.flatnonzero((volume.label > 0).any(axis=(1, 2)))
        if with_foreground.size:
            candidates = with_foreground
    picks = np.unique(np.round(np.linspace(0, len(candidates) - 1, min(count, len(candidates)))).astype(int))
    return [int(candidates[p]) for p in picks]


def _weak_mask(volume: Volume, weak, weak_seed: int) -> np.ndarray | None:
    """The weak mask to show: ``None``, a kind name (generated here) or a ``(Z, H, W)`` array."""
    if weak is None:
        return None
    if isinstance(weak, str):
        from mixseg_lite.weak import WEAK_KINDS, make_weak_label

        check_choice(weak, WEAK_KINDS, "weak-label kind", volume.case_id)
        if volume.label is None:
            raise InputError(f"{volume.case_id}: weak labels are derived from a label map, and this volume has none")
        return make_weak_label(volume.label, weak, seed=weak_seed, num_classes=volume.num_classes)
    mask = np.asarray(weak)
    if mask.shape != volume.image.shape[1:]:
        raise InputError(f"{volume.case_id}: weak mask shape {mask.shape} differs from the volume's "
                         f"(Z, H, W) = {volume.image.shape[1:]}")
    check_label_values(mask, volume.num_classes, f"{volume.case_id} weak mask", allow_unlabelled=True)
    return mask


def _legend_entries(volume: Volume, weak_mask=None) -> list[tuple[str, tuple[float, ...]]]:
    """Legend of the overlays: each foreground class, then the purple of *labelled* background
    when ``weak_mask`` labels some background (unlabelled pixels stay untinted)."""
    colours = class_colours(volume.num_classes)
    entries = [(name, tuple(colours[c, :3])) for c, name in enumerate(volume.class_names) if c > 0]
    if weak_mask is not None and (np.asarray(weak_mask) == 0).any():
        entries.append(("labelled background (weak label)", _WEAK_BACKGROUND_RGBA[:3]))
    return entries


def _weak_caption(weak_kind: str | None, weak_mask) -> str:
    """What the weak row shows: its kind, and what its tints mean."""
    kind = f"{weak_kind} weak label" if weak_kind else "weak label"
    parts = ["class colour = labelled pixel of that class"]
    if (np.asarray(weak_mask) == 0).any():
        parts.append("purple = pixel labelled background")
    parts.append("no tint = unlabelled")
    if weak_kind == "boxes":
        parts.append("box outline colour = the class inside")
    return f"{kind}: " + "; ".join(parts)


def _paint_box_outlines(picture: np.ndarray, label_slice: np.ndarray, num_classes: int) -> np.ndarray:
    """``picture`` (RGB) with each structure's tight box outlined, one pixel wide, in its class colour."""
    from mixseg_lite.plotting import structure_boxes

    colours = class_colours(num_classes)
    picture = picture.copy()
    for class_index, row0, col0, row1, col1 in structure_boxes(label_slice):
        colour = colours[class_index, :3]
        picture[[row0, row1], col0:col1 + 1] = colour
        picture[row0:row1 + 1, [col0, col1]] = colour
    return picture


# ----------------------------------------------------------------------------- the browser

def browse_volume(volume: Volume, weak=None, *, static: bool | None = None, slices: list[int] | None = None,
                  num_slices: int = 4, modality: str | None = None, overlay: str = "label",
                  weak_seed: int = 0, origin: str = "upper", panel_inches: float = 2.0):
    """A slice/modality browser for ``volume``, or a static grid of slices when no frontend is live.

    Args:
        volume: the :class:`~mixseg_lite.data.volume.Volume` to show.
        weak: optional weak mask: a kind of :data:`mixseg_lite.weak.WEAK_KINDS` (derived from the
            label map with ``weak_seed``) or a ``(Z, H, W)`` array with
            :data:`mixseg_lite.UNLABELLED` where unlabelled.
        static: ``True`` forces the figure, ``False`` the widgets; ``None`` decides with
            :func:`use_static` (``$MIXSEG_STATIC_WIDGETS``, then frontend detection).
        slices: slice indices of the static grid; default ``num_slices`` slices spread over the
            slices with foreground (:func:`default_slices`).
        modality: modality shown first by the widgets (default the first).
        overlay: first overlay of the widgets, one of :data:`OVERLAYS`.
        origin: ``"upper"`` (row 0 at the top) or ``"lower"`` (e.g. the RAS atlas: anterior up).
        panel_inches: size of one panel of the static figure.

    Returns:
        Static: a :class:`matplotlib.figure.Figure` (not registered with pyplot, so it is shown
        once, as the cell's value, and never leaks) with one row per modality (label overlay)
        plus a row with the weak mask when ``weak`` is given, and one column per slice.
        Interactive: an ``ipywidgets.VBox`` to display; its controls are attributes
        ``slice_slider``, ``modality_dropdown``, ``overlay_toggle`` and the picture ``view``
        (an ``ipywidgets.Image`` holding PNG bytes, redrawn on every change).
    """
    if not isinstance(volume, Volume):
        raise InputError(f"browse_volume needs a Volume, got {type(volume).__name__}")
    if origin not in ("upper", "lower"):
        raise InputError(f"{volume.case_id}: origin must be 'upper' or 'lower', got {origin!r}")
    weak_mask = _weak_mask(volume, weak, weak_seed)
    weak_kind = weak if isinstance(weak, str) else None
    windows = {name: intensity_window(volume.image[m]) for m, name in enumerate(volume.modalities)}
    if use_static(static):
        return _static_figure(volume, weak_mask, windows, slices, num_slices, origin, panel_inches, weak_kind)
    return _widget_browser(volume, weak_mask, windows, modality, overlay, origin, weak_kind)


def _static_figure(volume: Volume, weak_mask, windows, slices, num_slices: int, origin: str,
                   panel_inches: float, weak_kind: str | None = None):
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    slices_were_chosen_here = slices is None
    slices = default_slices(volume, num_slices) if slices is None else [int(z) for z in slices]
    bad = [z for z in slices if not 0 <= z < volume.num_slices]
    if bad or not slices:
        raise InputError(f"{volume.case_id}: slice indices {bad or slices} outside 0..{volume.num_slices - 1}")
    rows = [(name, m, volume.label, False) for m, name in enumerate(volume.modalities)]
    if weak_mask is not None:
        rows.append((f"{volume.modalities[0]} + {weak_kind + ' (weak label)' if weak_kind else 'weak label'}", 0,
                     weak_mask, True))
    figure = Figure(figsize=(panel_inches * len(slices), panel_inches * len(rows) + 0.8), layout="constrained")
    axes = figure.subplots(len(rows), len(slices), squeeze=False)
    for (name, m, mask, is_weak), axes_row in zip(rows, axes):
        for ax, z in zip(axes_row, slices):
            picture = compose_slice(volume.image[m, z], None if mask is None else mask[z], volume.num_classes,
                                    windows[volume.modalities[m]], weak=is_weak)
            ax.imshow(picture, interpolation="nearest", origin=origin)
            if is_weak and weak_kind == "boxes" and volume.label is not None:
                from mixseg_lite.plotting import draw_structure_boxes

                draw_structure_boxes(ax, volume.label[z], volume.num_classes)
            ax.set_title(f"{name} · z={z}", fontsize=8)
            ax.set_axis_off()
    handles = [Patch(color=colour, label=name) for name, colour in _legend_entries(volume, weak_mask)]
    if volume.label is not None and handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8,
                      frameon=False)
    shown = ", ".join(map(str, slices))
    title = f"{volume.case_id}: slices z = {shown} of its {volume.num_slices}"
    if slices_were_chosen_here:
        title += " (spread over the slices with foreground)"
    if weak_mask is not None:  # wrapped to the figure's width (about 11 characters an inch at this size)
        import textwrap

        width = max(40, int(11 * panel_inches * len(slices)))
        title += "\n" + textwrap.fill(f"bottom row: {_weak_caption(weak_kind, weak_mask)}", width)
    figure.suptitle(title, fontsize=9)
    return figure


def _png(picture: np.ndarray, origin: str) -> bytes:
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, picture, format="png", origin=origin)
    return buffer.getvalue()


def _widget_browser(volume: Volume, weak_mask, windows, modality, overlay: str, origin: str,
                    weak_kind: str | None = None):
    import ipywidgets as widgets

    overlays = [o for o in OVERLAYS if o == "none" or (o == "label" and volume.label is not None)
                or (o == "weak" and weak_mask is not None)]
    if overlay not in OVERLAYS:
        raise InputError(f"{volume.case_id}: overlay must be one of {OVERLAYS}, got {overlay!r}")
    if modality is not None and modality not in volume.modalities:
        raise InputError(f"{volume.case_id}: missing modality {modality!r}; has {list(volume.modalities)}")
    start = default_slices(volume, 1)[0]
    slider = widgets.IntSlider(value=start, min=0, max=volume.num_slices - 1, description="slice",
                               continuous_update=True)
    dropdown = widgets.Dropdown(options=list(volume.modalities), value=modality or volume.modalities[0],
                                description="modality")
    toggle = widgets.ToggleButtons(options=overlays, value=overlay if overlay in overlays else overlays[-1],
                                   description="overlay")
    height, width = volume.image.shape[2:]
    scale = max(1, 320 // max(height, width))  # small slices are enlarged (pixels stay sharp)
    view = widgets.Image(format="png", width=width * scale, height=height * scale)
    view.layout.object_fit = "contain"
    legend = widgets.HTML(" ".join(
        f'<span style="color: rgb({int(r * 255)}, {int(g * 255)}, {int(b * 255)})">&#9632;</span> {name}'
        for name, (r, g, b) in _legend_entries(volume, weak_mask))
        + ("" if weak_mask is None else f"<br><i>weak overlay</i> = {_weak_caption(weak_kind, weak_mask)}"))

    def redraw(_change=None) -> None:
        m, z = volume.modalities.index(dropdown.value), slider.value
        mask = {"none": None, "label": None if volume.label is None else volume.label[z],
                "weak": None if weak_mask is None else weak_mask[z]}[toggle.value]
        picture = compose_slice(volume.image[m, z], mask, volume.num_classes, windows[dropdown.value],
                                weak=toggle.value == "weak")
        if toggle.value == "weak" and weak_kind == "boxes" and volume.label is not None:
            picture = _paint_box_outlines(picture, volume.label[z], volume.num_classes)
        view.value = _png(picture, origin)

    for control in (slider, dropdown, toggle):
        control.observe(redraw, names="value")
    redraw()
    title = widgets.HTML(f"<b>{volume.case_id}</b>: {volume.num_slices} slices, {height}x{width} pixels, "
                         f"spacing {tuple(round(s, 2) for s in volume.spacing)} mm")
    browser = widgets.VBox([title, widgets.HBox([slider, dropdown]), toggle, view, legend])
    browser.slice_slider, browser.modality_dropdown, browser.overlay_toggle, browser.view = slider, dropdown, toggle, view
    browser.redraw = redraw
    return browser
