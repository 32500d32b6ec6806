"""Training loops: mixed supervision (REFERENCE A) and tag supervision with CAMs (REFERENCE B)."""

from mixseg_lite.train.mixed import METHODS, MixedConfig, train_mixed  # noqa: F401
