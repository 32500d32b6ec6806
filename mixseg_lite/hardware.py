"""What machine a number came from: CPU instruction sets, kernel path, threads, versions.

Training results change with the CPU's instruction set (oneDNN and ATen pick different kernels
for AVX2, AVX-512, AVX512-BF16 and AMX), with the thread count and with library versions. Every
notebook prints :func:`machine_summary` and every ``metrics.json`` carries :func:`machine_info`,
so a table can always be traced to the hardware that produced it.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

import torch

# /proc/cpuinfo flag names of the instruction sets that change PyTorch's CPU kernels.
CPU_FLAGS = {"avx2": "avx2", "avx512": "avx512f", "avx512_bf16": "avx512_bf16", "amx": "amx_tile"}
# Environment variables that restrict the kernel path (CI uses them to imitate another machine).
KERNEL_ENVIRONMENT = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")


@lru_cache(maxsize=1)
def _cpu_flags_and_model() -> tuple[frozenset[str], str]:
    """Flags and model name from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return frozenset(), platform.processor() or platform.machine()
    flags, model = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return frozenset(flags), model or platform.machine()


def cpu_features() -> dict[str, bool]:
    """``{"avx2", "avx512", "avx512_bf16", "amx"}`` -> present on this CPU (False when unknown)."""
    flags, _ = _cpu_flags_and_model()
    return {name: flag in flags for name, flag in CPU_FLAGS.items()}


def machine_info() -> dict:
    """A JSON-friendly record of the machine and software a result was computed on."""
    _, model = _cpu_flags_and_model()
    info = {
        "cpu": model,
        **cpu_features(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": __import__("numpy").__version__,
    }
    info.update({name.lower(): os.environ[name] for name in KERNEL_ENVIRONMENT if name in os.environ})
    return info


def machine_summary(info: dict | None = None) -> str:
    """One line for logs: CPU, instruction sets present, kernel path, threads, versions."""
    info = info or machine_info()
    present = [name.upper().replace("_", "-") for name in CPU_FLAGS if info.get(name)] or ["none of AVX2/AVX-512/AMX"]
    limits = [f"{name}={info[name.lower()]}" for name in KERNEL_ENVIRONMENT if name.lower() in info]
    gpu = f", GPU {info['cuda']}" if info.get("cuda") else ""
    return (f"{info['cpu']} ({', '.join(present)}; torch kernels {info['torch_cpu_capability']}"
            f"{'; ' + ' '.join(limits) if limits else ''}), {info['threads']} torch thread(s){gpu}; "
            f"Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}")


def choose_channels_last(device) -> tuple[bool, str]:
    """Memory format for training on ``device``: ``(channels_last, why)``, for ``channels_last=None``.

    The choice follows measurements (``make bench``, part ``versus``): channels_last was made the
    default from a measurement on an AVX-512 machine, and it is the layout of cuDNN's tensor-core
    kernels on CUDA; on an AVX2-only CPU (2-core AMD EPYC, 2 threads, 2026-12-02) it made every
    training step slower: the paper-size network 19.4 s vs 13.2 s per step (2x1x256x256, GroupNorm),
    the notebooks' width-8 network 172 vs 152 ms (16x1x64x64), width 16 at 128x128 1.97 vs 1.68 s.
    The kernel path counts, not the CPU alone: ``ATEN_CPU_CAPABILITY``/``ONEDNN_MAX_CPU_ISA`` limits
    below AVX-512 choose contiguous.
    """
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return True, "CUDA: channels_last is the layout of cuDNN's tensor-core convolutions"
    if kind != "cpu":
        return False, f"{kind}: contiguous (channels_last not measured on this device)"
    capability = torch.backends.cpu.get_cpu_capability()
    onednn_limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    onednn_allows_avx512 = not onednn_limit or onednn_limit == "ALL" or "512" in onednn_limit
    if capability.startswith("AVX512") and onednn_allows_avx512:
        return True, f"CPU kernels {capability}: channels_last convolutions measured faster with AVX-512"
    return False, (f"CPU kernels {capability}{' (oneDNN limited to ' + onednn_limit + ')' if onednn_limit else ''}: "
                   "contiguous, measured faster than channels_last without AVX-512")


# Steps after which torch.compile pays back its compilation (see choose_compile). Measured by
# ``make bench``, part ``compile``, on the sweeps' workload (width 8, depth 3, 16x1x64x64, kl_ent
# loss, 1 thread; 2-core AMD EPYC with AVX-512, idle, 2026-12-06): eager 136 ms/step (28 GFLOP/s,
# a third of the core's FP32 peak), compiled 92 ms (1.5x); the first compiled step took 25 s with
# an empty inductor cache (break-even 522 steps) and 2.6 s with it filled (67 steps); a second
# network compiled in the same process about 0.4 s. "cold": nothing compiled yet in this process
# (522 rounded up, as CPUs with slower compilers or smaller gains need more); "in_process": this
# process has compiled a network of the same kind already.
COMPILE_BREAK_EVEN_STEPS = {"cold": 600, "in_process": 50}
_compiled_in_process: set[str] = set()


def choose_compile(device, planned_steps: int, key: str = "model") -> tuple[bool, str]:
    """Whether ``train_mixed`` compiles its network (``compile=None``): ``(compile, why)``.

    Compiling costs a long first step (inductor generates and builds C++ or Triton kernels) and
    then saves a share of every step; it pays only when the training is long enough
    (:data:`COMPILE_BREAK_EVEN_STEPS`, measured by ``make bench``, part ``compile``). Once a
    process has compiled a network of the same kind (``key``), recompiling one is almost free,
    so later rows of a sweep compile from a much smaller number of steps. Never on Apple's MPS
    (not measured), where dynamo is unsupported, or on a CPU without the C++ compiler inductor
    needs.
    """
    import shutil

    import torch

    kind = getattr(device, "type", str(device))
    if kind not in ("cpu", "cuda"):
        return False, f"{kind}: eager (torch.compile not measured on this device)"
    try:
        supported = torch._dynamo.is_dynamo_supported()
    except Exception:  # noqa: BLE001 - any failure here means: do not compile
        supported = False
    if not supported:
        return False, "eager: torch.compile is not supported by this Python or platform"
    if kind == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        return False, "eager: no C++ compiler found (torch.compile builds its CPU kernels with one)"
    warm = key in _compiled_in_process
    needed = COMPILE_BREAK_EVEN_STEPS["in_process" if warm else "cold"]
    if planned_steps < needed:
        return False, (f"eager: {planned_steps} steps, fewer than the {needed} after which compiling pays back"
                       f"{' (already compiled in this process)' if warm else ''}")
    return True, (f"compiled: {planned_steps} steps >= {needed}, after which compiling pays back"
                  f"{' (already compiled in this process)' if warm else ''}")


def compiled_once(key: str = "model") -> None:
    """Record that this process has compiled a network of kind ``key`` (see :func:`choose_compile`)."""
    _compiled_in_process.add(key)


def bf16_autocast_is_fast(device) -> tuple[bool, str]:
    """Whether bfloat16 autocast speeds training up on ``device``: ``(fast, why)``.

    CUDA (float16 there) and CPUs with AVX512-BF16 or AMX have native kernels; elsewhere bfloat16
    is converted to float32 around every convolution. ``amp="auto"`` uses this; ``amp=True`` on
    a CPU where it is not fast runs, with the reason in the log.
    """
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return True, "CUDA: float16 autocast with a gradient scaler"
    if kind != "cpu":
        return False, f"{kind}: autocast not measured on this device"
    features = cpu_features()
    if features["amx"] or features["avx512_bf16"]:
        return True, "CPU with " + ("AMX" if features["amx"] else "AVX512-BF16") + ": native bfloat16 kernels"
    return False, "CPU without AVX512-BF16 or AMX: bfloat16 is emulated, usually no faster than float32"
