"""The volume browser: static figure when headless, live widgets when a frontend is attached."""

import types

import numpy as np
import pytest
from matplotlib.figure import Figure

from mixseg_lite import UNLABELLED, InputError
from mixseg_lite.data.volume import Volume
from mixseg_lite.widgets import (STATIC_ENV_VAR, browse_volume, compose_slice, default_slices,
                                 has_live_frontend, use_static)


@pytest.fixture
def volume():
    """Two modalities, 6 slices of 16x16; a square of class 1 on slices 1..4, class 2 on 2..3."""
    rng = np.random.default_rng(0)
    label = np.zeros((6, 16, 16), dtype=np.int64)
    label[1:5, 4:12, 4:12] = 1
    label[2:4, 6:10, 6:10] = 2
    image = rng.normal(size=(2, 6, 16, 16)).astype(np.float32) + label
    return Volume(image, label, (5.0, 1.0, 1.0), "toy", ("T1", "T2"), ("background", "outer", "inner"))


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(STATIC_ENV_VAR, raising=False)


def test_plain_python_is_headless():
    assert has_live_frontend() is False
    assert use_static() is True


def test_static_path_returns_a_grid_per_modality_plus_weak(volume):
    figure = browse_volume(volume, weak="seeds", num_slices=3)
    assert isinstance(figure, Figure)
    images = [ax for ax in figure.axes if ax.images]
    assert len(images) == (2 + 1) * 3  # T1, T2, T1 + weak; three slices each
    titles = [ax.get_title() for ax in images]
    assert titles[0].startswith("T1 · z=") and titles[3].startswith("T2 · z=") and "weak" in titles[6]
    figure.savefig(__import__("io").BytesIO(), format="png")  # renders without a pyplot backend


def test_static_slices_default_to_foreground_and_can_be_chosen(volume):
    assert default_slices(volume, 3) == [1, 3, 4]  # spread over slices 1..4
    figure = browse_volume(volume, static=True, slices=[0, 5])
    assert [ax.get_title() for ax in figure.axes if ax.images][:2] == ["T1 · z=0", "T1 · z=5"]
    with pytest.raises(InputError, match="outside 0..5"):
        browse_volume(volume, static=True, slices=[6])


def test_env_var_forces_either_path(volume, monkeypatch):
    monkeypatch.setenv(STATIC_ENV_VAR, "1")
    assert isinstance(browse_volume(volume, static=None), Figure)
    monkeypatch.setenv(STATIC_ENV_VAR, "0")
    assert not use_static()
    assert not isinstance(browse_volume(volume), Figure)
    assert use_static(True)  # the argument wins over the variable
    monkeypatch.setenv(STATIC_ENV_VAR, "maybe")
    with pytest.raises(InputError, match=STATIC_ENV_VAR):
        use_static()


def test_interactive_path_builds_widgets_and_redraws(volume):
    import ipywidgets as widgets

    browser = browse_volume(volume, weak="scribbles", static=False)
    assert isinstance(browser, widgets.VBox)
    assert browser.slice_slider.max == 5 and browser.modality_dropdown.options == ("T1", "T2")
    assert browser.overlay_toggle.options == ("none", "label", "weak")
    first = browser.view.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    browser.slice_slider.value = 3
    after_slice = browser.view.value
    browser.modality_dropdown.value = "T2"
    after_modality = browser.view.value
    browser.overlay_toggle.value = "weak"
    after_overlay = browser.view.value
    assert len({first, after_slice, after_modality, after_overlay}) == 4


def test_interactive_without_weak_offers_no_weak_overlay(volume):
    browser = browse_volume(volume, static=False, modality="T2", overlay="none")
    assert browser.overlay_toggle.options == ("none", "label")
    assert browser.modality_dropdown.value == "T2" and browser.overlay_toggle.value == "none"
    with pytest.raises(InputError, match="missing modality"):
        browse_volume(volume, static=False, modality="FLAIR")


def test_frontend_detection_reads_the_kernel(monkeypatch):
    import IPython

    request = {"content": {"allow_stdin": True}}
    kernel = types.SimpleNamespace(get_parent=lambda channel="shell": request)
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=kernel))
    assert has_live_frontend() is True  # JupyterLab, Notebook, VS Code: stdin allowed
    request["content"]["allow_stdin"] = False
    assert has_live_frontend() is False  # papermill / nbclient / nbval: no stdin, nobody watching
    old_kernel = types.SimpleNamespace(get_parent=lambda: {"content": {"allow_stdin": True}})
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=old_kernel))
    assert has_live_frontend() is True  # ipykernel 6 before get_parent took a channel
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=object()))
    assert has_live_frontend() is False  # an unknown kernel: headless
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.0")
    assert has_live_frontend() is True  # Voila renders widgets although it executes headlessly
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace())  # terminal IPython
    assert has_live_frontend() is False


def test_weak_mask_array_is_checked(volume):
    weak = np.full(volume.label.shape, UNLABELLED)
    weak[2, 8, 8] = 2
    assert isinstance(browse_volume(volume, weak=weak, static=True), Figure)
    with pytest.raises(InputError, match="weak mask shape"):
        browse_volume(volume, weak=weak[:3], static=True)
    with pytest.raises(InputError, match="outside the class range"):
        browse_volume(volume, weak=np.full(volume.label.shape, 7), static=True)
    with pytest.raises(InputError, match="unknown weak-label kind"):
        browse_volume(volume, weak="blobs", static=True)


def test_compose_slice_leaves_unlabelled_and_background_clear():
    image = np.linspace(0, 1, 16).reshape(4, 4)
    mask = np.array([[0, 1, UNLABELLED, 2]] * 4)
    plain = compose_slice(image, None, 3, (0.0, 1.0))
    full = compose_slice(image, mask, 3, (0.0, 1.0))
    weak = compose_slice(image, mask, 3, (0.0, 1.0), weak=True)
    assert plain.shape == (4, 4, 3) and np.allclose(plain[..., 0], image)
    assert np.allclose(full[:, [0, 2]], plain[:, [0, 2]])  # background and unlabelled untouched
    assert not np.allclose(full[:, 1], plain[:, 1])
    assert not np.allclose(weak[:, 0], plain[:, 0]) and np.allclose(weak[:, 2], plain[:, 2])


def test_static_figure_names_the_weak_kind_the_shown_slices_and_the_purple_background(volume):
    from mixseg_lite.widgets import _paint_box_outlines, class_colours

    title = " ".join(browse_volume(volume, weak="boxes", num_slices=2, static=True)._suptitle.get_text().split())
    assert "slices z = 1, 4 of its 6 (spread over the slices with foreground)" in title
    assert "boxes weak label" in title and "purple" in title and "box outline colour = the class inside" in title
    figure = browse_volume(volume, weak="boxes", slices=[1, 2], static=True)
    weak_axes = [ax for ax in figure.axes if ax.images and "boxes (weak label)" in ax.get_title()]
    assert [len(ax.patches) for ax in weak_axes] == [1, 2]  # one box per structure: class 1 alone on z=1
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["outer", "inner", "labelled background (weak label)"]
    seeds = browse_volume(volume, weak="seeds", static=True, slices=[2])  # seeds label no background
    assert [t.get_text() for t in seeds.legends[0].get_texts()] == ["outer", "inner"]
    assert "seeds weak label" in seeds._suptitle.get_text() and "purple" not in seeds._suptitle.get_text()
    assert "of its 6" in seeds._suptitle.get_text() and "spread" not in seeds._suptitle.get_text()
    picture = _paint_box_outlines(np.zeros((16, 16, 3)), volume.label[2], 3)
    assert np.allclose(picture[4, 4:12], class_colours(3)[1, :3]) and np.allclose(picture[6, 6:10], class_colours(3)[2, :3])
    assert np.allclose(picture[8, 8], 0)  # inside the boxes: untouched
