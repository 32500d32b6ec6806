"""mixseg-lite: medical image segmentation with mixed and weak supervision, for teaching.

The library holds everything two notebooks need; the notebooks in ``notebooks/`` teach with it.
"""

UNLABELLED = 255
"""Label value of pixels that carry no label in a weak mask (ignored by partial losses)."""

__version__ = "0.1.0"

REPOSITORY = "mixseg-lite/mixseg-lite"
"""GitHub ``owner/name`` of the project: the one place the Colab cells, the Colab and Binder
badges and the README take it from (``tests/test_notebook_pairs.py`` checks that they do)."""
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"

from mixseg_lite.errors import InputError  # noqa: E402

_RUNTIME = {"pick_device", "seed_everything", "setup_notebook"}
__all__ = ["UNLABELLED", "InputError", *sorted(_RUNTIME)]


def __getattr__(name: str):
    # torch is imported only when needed, so the command line starts fast.
    if name in _RUNTIME:
        from mixseg_lite import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'mixseg_lite' has no attribute {name!r}")
