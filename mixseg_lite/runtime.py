"""Reproducibility and device choice, shared by notebooks, training and the command line."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for run-to-run identical results on CUDA (on CPU they already are, for a fixed
    thread count): cuDNN autotuning off (it may pick another kernel per run), deterministic cuDNN
    kernels, and deterministic algorithms where torch has them (``warn_only``: a warning, not an
    error, for operations without one; ``CUBLAS_WORKSPACE_CONFIG`` as cuBLAS requires).

    Cost: cuDNN then uses fixed, sometimes slower convolution kernels (typically 10-30% per step
    for a UNet; more with ``channels_last``), and some scatter/index operations run slower.
    ``enabled=False`` restores torch's defaults.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = bool(enabled)
    torch.use_deterministic_algorithms(bool(enabled), warn_only=True)


def available_devices() -> list[str]:
    """Device names this machine can run on: ``cpu``, plus ``cuda`` / ``cuda:N`` and ``mps`` when present."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; any other name must be available here
    (:func:`available_devices`), or an :class:`~mixseg_lite.InputError` says which are."""
    from mixseg_lite.errors import InputError

    if device != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"device {device!r} is not a device name; choose auto or one of "
                             f"{', '.join(available_devices())}") from None
        if chosen.type != "cpu" and str(chosen) not in available_devices():
            raise InputError(f"device {device!r} is not available on this machine; choose auto or one of "
                             f"{', '.join(available_devices())}")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def thread_count(requested: int) -> int:
    """``requested``, capped by ``OMP_NUM_THREADS`` when that is set (a shared machine, or CI
    imitating a one-thread machine, must be able to lower every notebook's thread count)."""
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(requested, int(cap))) if cap.isdigit() and int(cap) > 0 else max(1, requested)


def setup_notebook(seed: int = 0, num_threads: int = 2, device: str = "auto", quiet: bool = False) -> torch.device:
    """Everything a notebook does first: seeds, a fixed thread count, the device; then it prints
    the machine the notebook's numbers come from (CPU instruction sets, threads, versions).

    A fixed thread count keeps floating-point reductions in the same order from run to run on
    one machine. Another CPU, thread count or library version changes training results in the
    last digits, and training amplifies that: notebooks therefore check only outputs that are
    the same everywhere (see CONTRIBUTING.md) and print trained scores for reading.
    """
    from mixseg_lite.hardware import machine_summary

    torch.set_num_threads(thread_count(num_threads))
    seed_everything(seed)
    chosen = pick_device(device)
    if not quiet:
        print(f"numbers below come from: {machine_summary()}; device {chosen}")
    return chosen

