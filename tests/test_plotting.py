"""Shared figure helpers: one colour per method everywhere, class legends on overlays."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from mixseg_lite.data.cardiac_sim import make_cardiac_volumes  # noqa: E402
from mixseg_lite.plotting import METHOD_COLOURS, class_legend, method_colour, plot_curves, show_predictions  # noqa: E402


def test_a_method_keeps_its_colour_whatever_the_order_or_branch():
    assert method_colour("kl_ent") == method_colour("kl_ent student") == METHOD_COLOURS["kl_ent"]
    assert len({method_colour(m) for m in ("lower_bound", "weak_only", "kl", "ent", "kl_ent", "pseudo",
                                           "upper_bound")}) == 7
    first = method_colour("some_new_method")
    method_colour("another_new_method")
    assert method_colour("some_new_method") == first


def test_curves_use_the_method_colours_in_any_order():
    import matplotlib.pyplot as plt

    log = [{"epoch": 1, "d": 0.1}, {"epoch": 2, "d": 0.2}]
    for order in (["kl", "kl_ent"], ["kl_ent", "kl"]):
        ax = plot_curves({m: log for m in order}, "d")
        assert {line.get_label(): line.get_color() for line in ax.get_lines()} == {
            "kl": METHOD_COLOURS["kl"], "kl_ent": METHOD_COLOURS["kl_ent"]}
        plt.close(ax.figure)


def test_prediction_grids_carry_a_class_legend():
    import matplotlib.pyplot as plt

    volume = make_cardiac_volumes(1, 3, 32, seed=0)[0]
    fig = show_predictions(volume, {"kl student": volume.label}, slices=[1])
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert labels == list(volume.class_names[1:])
    fig2, ax = plt.subplots()
    assert [t.get_text() for t in class_legend(ax, ("bg", "a", "b")).get_texts()] == ["a", "b"]
    plt.close("all")


def test_method_bars_colour_each_bar_by_its_method_and_label_every_tick():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from mixseg_lite.plotting import plot_method_bars

    rows = [{"method": "cam", "modality": "T2", "d": 0.2}, {"method": "cam", "modality": "FLAIR", "d": 0.1},
            {"method": "cam_er", "modality": "T2", "d": 0.5}, {"method": "empty", "modality": "-", "d": 0.7}]
    ax = plot_method_bars(rows, "d", ylabel="Dice", names={"empty": "empty masks"})
    assert [to_hex(bar.get_facecolor()) for bar in ax.patches] == [
        METHOD_COLOURS["cam"], METHOD_COLOURS["cam"], METHOD_COLOURS["cam_er"], METHOD_COLOURS["empty"]]
    assert [bar.get_height() for bar in ax.patches] == [0.2, 0.1, 0.5, 0.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cam\nT2", "cam\nFLAIR", "cam_er\nT2", "empty masks"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cam", "cam_er", "empty masks"]
    assert ax.get_ylabel() == "Dice"
    plt.close(ax.figure)


def test_structure_boxes_match_the_box_weak_label_and_carry_their_class_colour():
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_hex

    from mixseg_lite import UNLABELLED
    from mixseg_lite.plotting import CLASS_COLOURS, draw_structure_boxes, show_predictions, structure_boxes
    from mixseg_lite.weak import make_weak_label

    mask = np.zeros((12, 12), dtype=np.int64)
    mask[2:5, 3:7] = 1
    mask[8:11, 1:3] = 1  # a second structure of class 1
    mask[7:9, 8:11] = 2
    boxes = structure_boxes(mask)
    assert boxes == [(1, 2, 3, 4, 6), (1, 8, 1, 10, 2), (2, 7, 8, 8, 10)]
    inside = np.zeros_like(mask, dtype=bool)
    for _, row0, col0, row1, col1 in boxes:
        inside[row0:row1 + 1, col0:col1 + 1] = True
    assert ((make_weak_label(mask, "boxes") == UNLABELLED) == inside).all()  # the same boxes as the weak label
    fig, ax = plt.subplots()
    ax.imshow(mask)
    patches = draw_structure_boxes(ax, mask, 3)
    assert [to_hex(p.get_edgecolor()) for p in patches] == [CLASS_COLOURS[k].lower() for k in (1, 1, 2)]
    assert (patches[0].get_x(), patches[0].get_y(), patches[0].get_width(), patches[0].get_height()) == (2.5, 1.5, 4, 3)
    volume = make_cardiac_volumes(1, 3, 32, seed=0)[0]
    grid = show_predictions(volume, {"kl student": volume.label}, slices=[0, 2])
    assert [t.get_text() for t in grid.axes[0].texts + grid.axes[3].texts] == ["slice z=0", "slice z=2"]
    plt.close("all")


def test_outlines_are_drawn_in_each_present_class_colour_only():
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgba

    from mixseg_lite.plotting import label_cmap, show_outlines

    mask = np.zeros((16, 16), dtype=np.int64)
    mask[3:8, 3:8] = 1
    mask[9:13, 9:14] = 3  # class 2 absent: no outline for it
    fig, ax = plt.subplots()
    show_outlines(ax, np.zeros((16, 16)), mask, num_classes=4, title="t")
    colours = label_cmap(4).colors
    drawn = [tuple(c.get_edgecolor()[0]) for c in ax.collections]
    assert drawn == [to_rgba(colours[1]), to_rgba(colours[3])]
    assert ax.get_title() == "t"
    plt.close(fig)
