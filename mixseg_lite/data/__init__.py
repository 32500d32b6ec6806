"""Datasets: simulated volumes, NIfTI loaders, the real atlas, and 2-D slice views of them."""

from mixseg_lite.data.volume import Volume

__all__ = ["Volume"]
