"""mixseg-lite: medical image segmentation with mixed and weak supervision, for teaching.

The library holds everything two notebooks need; the notebooks in ``notebooks/`` teach with it.
"""

UNLABELLED = 255
"""Label value of pixels that carry no label in a weak mask (ignored by partial losses)."""

__version__ = "0.1.0"

from mixseg_lite.errors import InputError  # noqa: E402
from mixseg_lite.runtime import pick_device, seed_everything, setup_notebook  # noqa: E402

__all__ = ["UNLABELLED", "InputError", "pick_device", "seed_everything", "setup_notebook"]
