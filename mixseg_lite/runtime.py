"""Reproducibility and device choice, shared by notebooks, training and the command line."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; any other string is used as given."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_notebook(seed: int = 0, num_threads: int = 2, device: str = "auto") -> torch.device:
    """Everything a notebook does first: seeds, a fixed thread count, the device.

    A fixed thread count keeps floating-point reductions in the same order from run to run,
    so the rounded results that nbval compares are reproducible on the same kind of machine.
    """
    torch.set_num_threads(num_threads)
    seed_everything(seed)
    return pick_device(device)

