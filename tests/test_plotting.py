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
