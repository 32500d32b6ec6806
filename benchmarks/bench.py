#!/usr/bin/env python
"""Benchmarks of mixseg-lite: how fast it trains, how much memory it needs, what AMP buys.

Parts (``--only`` picks some, comma-separated; ``make bench`` runs all but ``gpu``):

* ``step``: time and peak memory of one CPU training step of :class:`DualBranchUNet` (the full
  ``kl_ent`` loss: supervised CE, partial CE, KL, entropy) on 8x1x128x128 batches, widths 8 and
  16, depths 3 and 4 (the notebooks' models).
* ``paper``: the paper's network (dual-decoder UNet, widths 64..1024) on 2x1x256x256 batches, one
  training step in float32 and in bfloat16 autocast; and whether a fixed short training on the
  simulated cardiac data reaches the same test Dice in bfloat16 as in float32 (mean ± std over
  ``--dice-seeds`` training seeds per precision; a single pair differs by seed noise alone).
* ``versus``: one training step of our dual-branch network against a plain re-implementation of
  the authors' (``benchmarks/authors_unet.py``: valid convolutions, BatchNorm, widths 64..1024,
  decoders ending at 68x68) on 2x1x256x256, side by side: ms/step, GFLOP/step (counted by
  ``torch.utils.flop_counter``), GFLOP/s and its ratio to the authors' network, float32 and
  bfloat16 autocast, with each memory format. Our network decodes at full resolution, about four
  times the arithmetic, so GFLOP/s is the fair comparison.
* ``compile``: the sweeps' workload (dual-branch UNet, width 8, depth 3, 16x1x64x64, the kl_ent
  loss, 1 thread) in eager mode and under ``torch.compile``, side by side in one run: the first
  step (compilation included) with an empty and with a filled inductor cache, ms/step after it,
  GFLOP/step (counted in eager mode), GFLOP/s and its share of one core's FP32 peak (an estimate:
  clock x FLOP/cycle of the vector unit), and the steps after which compiling pays back. The
  numbers behind :func:`mixseg_lite.hardware.choose_compile`.
* ``throughput``: slices per second and peak memory of ``train_mixed`` end to end on the CPU.
* ``notebooks``: wall time and the kernel's peak memory of every ``notebooks/NN_*.py``, each
  executed with papermill (via jupytext) into a temporary folder.
* ``data``: seconds to generate one brain-phantom subject (``mixseg_lite.data.phantom``, four
  contrasts) at 64x64, 96x96 and 128x128 with 24 slices, after the one-off template load (timed
  on its own), wall clock and CPU time.
* ``gpu`` (``--gpu``): the ACDC-size configuration (simulated cardiac volumes, 256x256, 100
  patients x 2 phases x 10 slices, widths 64..1024) on CUDA: slices per second, maximum GPU memory
  and the AMP speed-up. Prints a message and skips when no CUDA device is present.

Every case runs in a fresh subprocess, so peak memory (``ru_maxrss``) never accumulates from one
case to the next; notebooks run in a wrapper process whose only child is the kernel, whose peak
is read with ``getrusage(RUSAGE_CHILDREN)``. Timings depend on what else the machine runs: each
row records the load average, and timings on a busy machine are pessimistic. Results are printed
as tables and merged into ``benchmarks/results.json`` (one entry per part; parts not run keep
their previous entry). ``--tiny`` runs every part on tiny settings, to check the script works.

Examples::

    python benchmarks/bench.py                      # step, paper, versus, throughput, notebooks, data
    python benchmarks/bench.py --only data          # brain-phantom generation time
    python benchmarks/bench.py --only step,paper
    python benchmarks/bench.py --only compile        # eager vs torch.compile on the sweep workload
    python benchmarks/bench.py --gpu                 # the four parts and the GPU part
    python benchmarks/bench.py --only gpu
    python benchmarks/bench.py --tiny --only notebooks --notebooks "00_*"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mixseg_lite.results import format_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results.json"
PARTS = ("step", "paper", "versus", "compile", "throughput", "notebooks", "data", "gpu")
DEFAULT_PARTS = ("step", "paper", "versus", "compile", "throughput", "notebooks", "data")
RESULT_MARKER = "BENCH_RESULT "
DICE_TOLERANCE = 0.02  # |Dice(bf16) - Dice(fp32)| up to this counts as unchanged


# ============================================================================ measurement helpers

def _peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    """Peak resident memory of this process (or of its largest finished child) in MB."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


def _current_rss_mb() -> float | None:
    """Resident memory now, in MB (psutil if installed, else /proc; None when neither works)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device, enabled: bool):
    """Mixed precision as train_mixed does it: float16 on CUDA, bfloat16 elsewhere."""
    from contextlib import nullcontext

    import torch

    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


# ============================================================================ cases (run in children)

def case_step(spec: dict) -> dict:
    """One training step of the dual-branch UNet with the whole kl_ent loss, timed ``steps`` times."""
    import torch

    from mixseg_lite import UNLABELLED
    from mixseg_lite.losses import entropy_loss, kl_distillation, partial_cross_entropy, supervised_loss
    from mixseg_lite.models import DualBranchUNet, count_parameters

    device = torch.device(spec.get("device", "cpu"))
    torch.manual_seed(0)
    batch, size, classes = spec["batch"], spec["size"], 4
    baseline = _current_rss_mb()
    model = DualBranchUNet(1, classes, spec["base_width"], spec["depth"]).to(device)
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=spec.get("amp", False) and device.type == "cuda")
    images = torch.rand(batch, 1, size, size, device=device)
    labels = torch.randint(0, classes, (batch, size, size), device=device)
    weak = torch.where(torch.rand(batch, size, size, device=device) < 0.97, UNLABELLED, labels)
    n_full = batch // 2  # half D_s, half D_w, as in a train_mixed batch
    autocast = _autocast(device, spec.get("amp", False))

    def step() -> float:
        with autocast:
            teacher, student = model(images)
            teacher, student = teacher.float(), student.float()
            loss = (supervised_loss(teacher[:n_full], labels[:n_full]) + partial_cross_entropy(student, weak)
                    + kl_distillation(student, teacher, 1.0) + 0.1 * entropy_loss(student[n_full:]))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        return float(loss)  # waits for the device

    for _ in range(spec.get("warmup", 1)):
        step()
    seconds = []
    for _ in range(spec["steps"]):
        started = time.perf_counter()
        step()
        _synchronize(device)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"parameters_m": round(count_parameters(model) / 1e6, 2), "step_ms": round(1000 * median, 1),
            "step_ms_min": round(1000 * min(seconds), 1), "slices_per_s": round(batch / median, 1),
            "baseline_rss_mb": None if baseline is None else round(baseline), "peak_rss_mb": round(_peak_rss_mb())}


def _cardiac_splits(spec: dict):
    from mixseg_lite.data.cardiac_sim import make_cardiac_volumes
    from mixseg_lite.data.slices import split_volumes

    volumes = make_cardiac_volumes(spec["n_volumes"], spec["n_slices"], spec["size"], seed=0)
    n = len(volumes)
    sizes = {"full": max(1, n // 8), "val": max(1, n // 8), "test": max(1, n // 4)}
    sizes["weak"] = n - sum(sizes.values())
    return split_volumes(volumes, sizes, seed=0)


def case_dice(spec: dict) -> dict:
    """A fixed short training on simulated hearts, float32 or bfloat16 autocast; test Dice per branch."""
    from mixseg_lite.train.mixed import evaluate_mixed, train_mixed

    splits = _cardiac_splits(spec)
    started = time.perf_counter()
    result = train_mixed(splits["full"], splits["weak"], None, method="kl_ent", epochs=spec["epochs"],
                         base_width=spec["base_width"], depth=spec["depth"], batch_size=spec["batch"],
                         amp=spec["amp"], device=spec.get("device", "cpu"), progress=False,
                         seed=spec.get("seed", 0))
    seconds = time.perf_counter() - started
    rows = {row["branch"]: row for row in evaluate_mixed(result, splits["test"])}
    return {"train_s": round(seconds, 1), "dice_teacher": round(rows["teacher"]["dice"], 4),
            "dice_student": round(rows["student"]["dice"], 4), "peak_rss_mb": round(_peak_rss_mb())}


def case_throughput(spec: dict) -> dict:
    """train_mixed end to end: slices per second (D_s and D_w slices both count) and peak memory."""
    from mixseg_lite.data.slices import SliceDataset
    from mixseg_lite.train.mixed import train_mixed

    splits = _cardiac_splits(spec)
    baseline = _current_rss_mb()
    # Building the weak labels happens inside train_mixed too; timed alone to report both rates.
    started = time.perf_counter()
    SliceDataset(splits["full"], weak_kind="seeds")
    SliceDataset(splits["weak"], weak_kind="seeds", weak_seed=1)
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    train_mixed(splits["full"], splits["weak"], None, method="kl_ent", epochs=spec["epochs"],
                base_width=spec["base_width"], depth=spec["depth"], batch_size=spec["batch"],
                device="cpu", amp=spec.get("amp", False), progress=False, seed=0)
    total_s = time.perf_counter() - started
    steps = spec["epochs"] * math.ceil(sum(v.num_slices for v in splits["weak"]) / spec["batch"])
    slices = steps * 2 * spec["batch"]
    return {"slices": slices, "train_s": round(total_s, 2), "prepare_s": round(prepare_s, 2),
            "slices_per_s": round(slices / max(total_s - prepare_s, 1e-9), 1),
            "slices_per_s_end_to_end": round(slices / total_s, 1),
            "baseline_rss_mb": None if baseline is None else round(baseline), "peak_rss_mb": round(_peak_rss_mb())}


def case_notebook(spec: dict) -> dict:
    """Execute one notebook source with papermill into a temporary folder; this process's only
    child is the kernel, so RUSAGE_CHILDREN gives the kernel's peak memory."""
    from mixseg_lite.notebooks import execute_notebook

    with tempfile.TemporaryDirectory(prefix="mixseg-bench-") as out:
        started = time.perf_counter()
        error = None
        try:
            execute_notebook(spec["path"], out, parameters=spec.get("parameters") or {})
        except Exception as exc:  # noqa: BLE001 - report, do not stop the other notebooks
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 1), "kernel_peak_rss_mb": round(_peak_rss_mb(resource.RUSAGE_CHILDREN)),
            "error": error}


def case_phantom(spec: dict) -> dict:
    """Brain-phantom subjects with all four contrasts: the template load, the first subject at this
    size (it also averages the template over the voxel size, cached afterwards), then the mean
    per subject over ``n_volumes`` more."""
    from mixseg_lite.data import phantom

    started = time.perf_counter()
    phantom._template(str(phantom.template_files()["t1"].parent))
    template_s = time.perf_counter() - started
    shape = (spec["n_slices"], spec["size"])
    started = time.perf_counter()
    phantom.make_phantom_volumes(1, *shape, modalities=phantom.MODALITIES, seed=0)
    first_s = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    volumes = phantom.make_phantom_volumes(spec["n_volumes"], *shape, modalities=phantom.MODALITIES, seed=1)
    n = len(volumes)
    return {"template_s": round(template_s, 2), "first_subject_s": round(first_s, 2),
            "subject_s": round((time.perf_counter() - started) / n, 3),
            "subject_cpu_s": round((time.process_time() - cpu) / n, 3),
            "with_tumour": sum(v.meta["has_tumour"] for v in volumes), "peak_rss_mb": round(_peak_rss_mb())}


def case_gpu(spec: dict) -> dict:
    """ACDC-size training with train_mixed on ``spec["device"]``; the setup cost (weak labels,
    model, cudnn autotuning) is removed by timing two runs that differ only in their step count."""
    import torch

    from mixseg_lite.data.cache import load_volumes
    from mixseg_lite.data.slices import split_volumes
    from mixseg_lite.train.mixed import train_mixed

    device = torch.device(spec["device"])
    volumes = load_volumes(Path(spec["data"]))
    n = len(volumes)
    full = max(1, round(0.05 * n))  # 10 of 200: the paper's 5 fully labelled patients, both phases
    splits = split_volumes(volumes, {"full": full, "weak": n - full}, seed=0)
    options = dict(method="kl_ent", epochs=1, base_width=spec["base_width"], depth=spec["depth"],
                   batch_size=spec["batch"], amp=spec["amp"], channels_last=spec["channels_last"],
                   device=str(device), progress=False, seed=0)
    # An untimed first run pays the one-off costs (CUDA context, kernel selection, allocator growth).
    train_mixed(splits["full"], splits["weak"], None, steps_per_epoch=1, **options)
    timings = {}
    for steps in (spec["steps_short"], spec["steps_long"]):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _synchronize(device)
        started = time.perf_counter()
        train_mixed(splits["full"], splits["weak"], None, steps_per_epoch=steps, **options)
        _synchronize(device)
        timings[steps] = time.perf_counter() - started
    step_s = (timings[spec["steps_long"]] - timings[spec["steps_short"]]) / (spec["steps_long"] - spec["steps_short"])
    if step_s <= 0:
        return {"error": "the longer run was not slower: too few steps to separate the setup time (raise --gpu-steps)"}
    weak_slices = sum(v.num_slices for v in splits["weak"])
    epoch_steps = math.ceil(weak_slices / spec["batch"])
    return {"volumes": n, "weak_slices": weak_slices, "step_ms": round(1000 * step_s, 1),
            "slices_per_s": round(2 * spec["batch"] / step_s, 1), "epoch_s_estimate": round(epoch_steps * step_s, 1),
            "setup_s": round(timings[spec["steps_short"]] - spec["steps_short"] * step_s, 1),
            "max_gpu_memory_gb": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                  if device.type == "cuda" else None),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
            "peak_rss_mb": round(_peak_rss_mb())}


def case_versus(spec: dict) -> dict:
    """One training step of our dual-branch UNet or of the authors' valid-convolution UNet
    (``benchmarks/authors_unet.py``) on the paper's 2x1x256x256 batch: ms/step, GFLOP/step counted
    by ``torch.utils.flop_counter`` (forward and backward), and GFLOP/s."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from mixseg_lite.hardware import choose_channels_last

    torch.manual_seed(0)
    device = torch.device("cpu")
    batch, size, classes = spec["batch"], spec["size"], 2
    if spec["network"] == "authors":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from authors_unet import AuthorsDualUNet

        model = AuthorsDualUNet(1, classes, spec["base_width"], spec["depth"])
    else:
        from mixseg_lite.models import DualBranchUNet

        model = DualBranchUNet(1, classes, spec["base_width"], spec["depth"], norm=spec["norm"])
    channels_last = spec["channels_last"]
    if channels_last is None:
        channels_last = choose_channels_last(device)[0]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 1, size, size).contiguous(memory_format=memory_format)
    labels = torch.randint(0, classes, (batch, size, size))
    autocast = _autocast(device, spec["amp"])

    def step() -> None:
        with autocast:
            teacher, student = model(images)
            loss = F.cross_entropy(teacher.float(), labels) + F.cross_entropy(student.float(), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    gflop = counter.get_total_flops() / 1e9
    seconds = []
    for _ in range(spec["steps"]):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    return {"channels_last": bool(channels_last), "step_ms": round(1000 * median, 1),
            "step_ms_min": round(1000 * min(seconds), 1), "gflop_per_step": round(gflop, 1),
            "gflop_per_s": round(gflop / median, 1), "peak_rss_mb": round(_peak_rss_mb())}


def case_compile(spec: dict) -> dict:
    """The sweeps' training step (the kl_ent loss on a 16-slice batch, half D_s, half D_w) in eager
    mode or compiled: the first step's seconds (compilation included), then ms/step; GFLOP/step
    counted by ``torch.utils.flop_counter`` in eager mode (compiled code does the same arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mixseg_lite import UNLABELLED
    from mixseg_lite.losses import entropy_loss, kl_distillation, partial_cross_entropy, supervised_loss
    from mixseg_lite.models import DualBranchUNet

    torch.manual_seed(0)
    batch, size, classes = spec["batch"], spec["size"], 4
    model = DualBranchUNet(1, classes, spec["base_width"], spec["depth"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 1, size, size)
    labels = torch.randint(0, classes, (batch, size, size))
    weak = torch.where(torch.rand(batch, size, size) < 0.97, UNLABELLED, labels)
    n_full = batch // 2
    forward = torch.compile(model) if spec["compiled"] else model

    def step(net) -> float:
        teacher, student = net(images)
        loss = (supervised_loss(teacher[:n_full], labels[:n_full]) + partial_cross_entropy(student, weak)
                + kl_distillation(student, teacher, 1.0) + 0.1 * entropy_loss(student[n_full:]))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    with FlopCounterMode(display=False) as counter:
        step(model)  # eager, uncompiled: the arithmetic of one step
    gflop = counter.get_total_flops() / 1e9
    started = time.perf_counter()
    step(forward)  # compiles here when compiled
    first = time.perf_counter() - started
    for _ in range(spec.get("warmup", 2)):
        step(forward)
    seconds = []
    for _ in range(spec["steps"]):
        started = time.perf_counter()
        step(forward)
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    peak, _ = fp32_peak_gflops()
    threads = torch.get_num_threads()
    return {"first_step_s": round(first, 2), "step_ms": round(1000 * median, 1),
            "step_ms_min": round(1000 * min(seconds), 1), "gflop_per_step": round(gflop, 2),
            "gflop_per_s": round(gflop / median, 1),
            "peak_share": round(gflop / median / (peak * threads), 3) if peak else None,
            "peak_rss_mb": round(_peak_rss_mb())}


def fp32_peak_gflops() -> tuple[float | None, str]:
    """One core's FP32 peak, an estimate: clock (``cpu MHz`` of /proc/cpuinfo) x FLOP per cycle
    (two FMA pipes: 2 x 2 x lanes; 8 lanes with AVX2 or on AMD's AVX-512, which splits 512-bit
    operations into two 256-bit halves on Zen 4; 16 on Intel's AVX-512). None off Linux."""
    from mixseg_lite.hardware import _cpu_flags_and_model, cpu_features

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            mhz = next(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None, "clock unknown"
    features = cpu_features()
    _, model = _cpu_flags_and_model()
    lanes = 16 if features["avx512"] and "AMD" not in model.upper() else 8 if features["avx2"] or features["avx512"] else 4
    return mhz / 1000 * 2 * 2 * lanes, f"{mhz:.0f} MHz x {2 * 2 * lanes} FLOP/cycle"


CASES = {"step": case_step, "versus": case_versus, "compile": case_compile, "dice": case_dice, "throughput": case_throughput, "notebook": case_notebook,
         "phantom": case_phantom, "gpu": case_gpu}


def run_case_here(spec: dict) -> None:
    """Child side: set the thread count, run one case, print its result as one marked JSON line."""
    import torch

    torch.set_num_threads(spec.get("threads", 2))
    load_before = _load()
    result = CASES[spec["kind"]](spec)
    result.update({"load_before": load_before, "load_after": _load()})
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ============================================================================ parent side

def run_case(spec: dict, timeout: float) -> dict:
    """Run one case in a fresh interpreter and return its result (or the error it died with)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(spec)]
    env = dict(os.environ, MIXSEG_STATIC_WIDGETS="1", PYTHONUNBUFFERED="1", **spec.get("env", {}))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
    return {"error": tail[0][:300]}


def step_specs(args) -> list[dict]:
    size, steps, warmup = (32, 2, 1) if args.tiny else (128, args.steps, 2)
    return [{"kind": "step", "label": f"base {w}, depth {d}", "base_width": w, "depth": d, "batch": 8,
             "size": size, "steps": steps, "warmup": warmup, "threads": args.threads}
            for w in (8, 16) for d in (3, 4)]


def paper_specs(args) -> list[dict]:
    # --tiny keeps the structure (5 levels) at a width and size a busy CPU finishes in seconds.
    width, size, steps = (4, 32, 1) if args.tiny else (64, 256, max(2, args.steps // 3))
    specs = [{"kind": "step", "label": f"paper UNet {'fp32' if not amp else 'bf16 autocast'}", "base_width": width,
              "depth": 5, "batch": 2, "size": size, "steps": steps, "warmup": 1, "amp": amp, "threads": args.threads}
             for amp in (False, True)]
    dice = ({"n_volumes": 6, "n_slices": 2, "size": 32, "base_width": 4, "depth": 2, "epochs": 1, "batch": 4}
            if args.tiny else {"n_volumes": 24, "n_slices": 8, "size": 64, "base_width": args.dice_width,
                               "depth": args.dice_depth, "epochs": args.dice_epochs, "batch": 8})
    # One run per precision and training seed (same data): a single pair differs by the seed noise of
    # a short training, so the check compares means against the spread over seeds.
    seeds = range(1 if args.tiny else args.dice_seeds)
    specs += [{"kind": "dice", "label": f"Dice after training, {'fp32' if not amp else 'bf16 autocast'}, seed {seed}",
               "amp": amp, "seed": seed, "threads": args.threads, **dice} for amp in (False, True) for seed in seeds]
    return specs


# (label, network, norm, channels_last (None: chosen by the hardware, our default), bfloat16 autocast)
VERSUS_ROWS = [
    ("ours, defaults (GroupNorm, format by hardware)", "ours", "group", None, False),
    ("ours, GroupNorm, channels_last", "ours", "group", True, False),
    ("ours, GroupNorm, contiguous", "ours", "group", False, False),
    ("ours, BatchNorm, contiguous", "ours", "batch", False, False),
    ("authors, BatchNorm, contiguous", "authors", "batch", False, False),
    ("authors, BatchNorm, channels_last", "authors", "batch", True, False),
    ("ours, defaults, bf16 autocast", "ours", "group", None, True),
    ("authors, BatchNorm, contiguous, bf16 autocast", "authors", "batch", False, True),
]
VERSUS_REFERENCE = {False: "authors, BatchNorm, contiguous", True: "authors, BatchNorm, contiguous, bf16 autocast"}


def versus_specs(args) -> list[dict]:
    # The paper's network and batch (widths 64..1024, 2x1x256x256); --tiny keeps 5 levels at width
    # 2 and 192x192, the smallest size both networks take (valid convolutions need >= 188).
    width, size, steps = (2, 192, 1) if args.tiny else (64, 256, max(2, args.steps // 3))
    precisions = {"fp32": False, "bf16": True}
    wanted = {precisions[p.strip()] for p in args.versus_precisions.split(",")}
    return [{"kind": "versus", "label": label, "network": network, "norm": norm, "channels_last": channels_last,
             "amp": amp, "base_width": width, "depth": 5, "batch": 2, "size": size, "steps": steps,
             "threads": args.threads} for label, network, norm, channels_last, amp in VERSUS_ROWS if amp in wanted]


def compile_specs(args, cache: Path) -> list[dict]:
    """Eager, compiled with an empty inductor cache, compiled again with it filled (a new process:
    what a second sweep run pays), eager again: side by side, so a change in load shows."""
    size, steps = (32, 3) if args.tiny else (64, max(10, args.steps))
    common = {"kind": "compile", "base_width": 8, "depth": 3, "batch": 16, "size": size, "steps": steps,
              "threads": 1, "env": {"TORCHINDUCTOR_CACHE_DIR": str(cache)}}
    return [{**common, "label": "eager", "compiled": False},
            {**common, "label": "compiled, empty cache", "compiled": True},
            {**common, "label": "compiled, cache filled", "compiled": True},
            {**common, "label": "eager, again", "compiled": False}]


def throughput_specs(args) -> list[dict]:
    if args.tiny:
        settings = [(32, 4, 2, 6, 2, 1)]
    else:
        settings = [(64, 8, 3, 24, 8, 2), (128, 16, 4, 24, 8, 1)]
    return [{"kind": "throughput", "label": f"{s}x{s}, base {w}, depth {d}", "size": s, "base_width": w, "depth": d,
             "n_volumes": n, "n_slices": z, "epochs": e, "batch": 8, "threads": args.threads}
            for s, w, d, n, z, e in settings]


def notebook_specs(args) -> list[dict]:
    pattern = args.notebooks or ("00_*.py" if args.tiny else "[0-9][0-9]_*.py")
    pattern = pattern if pattern.endswith(".py") else pattern + ".py"
    paths = sorted((ROOT / "notebooks").glob(pattern))
    return [{"kind": "notebook", "label": p.stem, "path": str(p), "threads": args.threads} for p in paths]


def data_specs(args) -> list[dict]:
    settings = [(32, 8, 2)] if args.tiny else [(64, 24, 8), (96, 24, 8), (128, 24, 8)]
    return [{"kind": "phantom", "label": f"brain phantom {s}x{s}x{z}, 4 contrasts", "size": s, "n_slices": z,
             "n_volumes": n, "threads": args.threads} for s, z, n in settings]


def gpu_specs(args, data: Path) -> list[dict]:
    if args.tiny:
        model = {"base_width": 8, "depth": 3, "batch": 4, "steps_short": 2, "steps_long": 12}
    else:
        model = {"base_width": 64, "depth": 5, "batch": 8, "steps_short": 10, "steps_long": 10 + args.gpu_steps}
    return [{"kind": "gpu", "label": label, "device": args.gpu_device, "data": str(data), "amp": amp,
             "channels_last": channels_last, "threads": args.threads, **model}
            for label, amp, channels_last in (("fp32", False, False), ("amp", True, False),
                                              ("amp + channels_last", True, True))]


def make_gpu_data(args, folder: Path) -> Path:
    """Simulate the ACDC-size dataset once and store it, so every GPU case loads it instead."""
    from mixseg_lite.data.cache import save_volumes
    from mixseg_lite.data.cardiac_sim import make_cardiac_volumes

    n_volumes, n_slices, size = (6, 4, 64) if args.tiny else (200, 10, 256)  # 100 patients x 2 phases
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    save_volumes(make_cardiac_volumes(n_volumes, n_slices, size, seed=0), folder)
    print(f"simulated {n_volumes} volumes x {n_slices} slices at {size}x{size} in {time.perf_counter() - started:.0f} s")
    return folder


def _bench_cell(value) -> str:
    """4 significant digits (whole numbers from 1000 up); '-' for a value not measured."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def format_rows(rows: list[dict], columns: list[str]) -> str:
    return format_table(rows, columns, cell=_bench_cell)


COLUMNS = {
    "step": ["label", "size", "parameters_m", "step_ms", "slices_per_s", "baseline_rss_mb", "peak_rss_mb", "load_before"],
    "paper": ["label", "size", "step_ms", "slices_per_s", "dice_teacher", "dice_student", "peak_rss_mb", "load_before"],
    "versus": ["label", "channels_last", "step_ms", "gflop_per_step", "gflop_per_s", "ratio_to_authors", "peak_rss_mb",
               "load_before"],
    "compile": ["label", "first_step_s", "step_ms", "gflop_per_step", "gflop_per_s", "peak_share", "peak_rss_mb",
                "load_before"],
    "throughput": ["label", "slices", "train_s", "prepare_s", "slices_per_s", "slices_per_s_end_to_end",
                   "peak_rss_mb", "load_before"],
    "notebooks": ["label", "wall_s", "kernel_peak_rss_mb", "error", "load_before"],
    "data": ["label", "template_s", "first_subject_s", "subject_s", "subject_cpu_s", "peak_rss_mb", "load_before"],
    "gpu": ["label", "device_name", "step_ms", "slices_per_s", "epoch_s_estimate", "max_gpu_memory_gb", "load_before"],
}


def summarize(part: str, rows: list[dict]) -> dict:
    """Derived numbers of a part: the AMP speed-ups and whether bfloat16 changed the Dice."""
    by = {row["label"]: row for row in rows}
    summary = {}
    if part == "versus":
        # GFLOP/s of each row over the authors' network's at the same precision (contiguous):
        # the networks differ in arithmetic per step, so throughput is what compares them.
        for row in rows:
            reference = by.get(VERSUS_REFERENCE[bool(row.get("amp"))], {})
            if row.get("gflop_per_s") and reference.get("gflop_per_s"):
                row["ratio_to_authors"] = round(row["gflop_per_s"] / reference["gflop_per_s"], 2)
        for amp, name in ((False, "fp32"), (True, "bf16")):
            ours = by.get(VERSUS_ROWS[0][0] if not amp else "ours, defaults, bf16 autocast", {})
            if "ratio_to_authors" in ours:
                summary[f"ours_default_gflops_ratio_{name}"] = ours["ratio_to_authors"]
        if "channels_last" in by.get(VERSUS_ROWS[0][0], {}):
            summary["default_channels_last_here"] = by[VERSUS_ROWS[0][0]]["channels_last"]
    if part == "compile":
        eager = [r["step_ms"] for r in rows if r["label"].startswith("eager") and r.get("step_ms")]
        for name, key in (("compiled, empty cache", "cold"), ("compiled, cache filled", "warm")):
            row = by.get(name, {})
            if eager and row.get("step_ms"):
                eager_ms = statistics.mean(eager)
                summary[f"speedup_{key}"] = round(eager_ms / row["step_ms"], 2)
                saved_s = (eager_ms - row["step_ms"]) / 1000
                extra_s = row["first_step_s"] - statistics.mean(
                    r["first_step_s"] for r in rows if r["label"].startswith("eager"))
                summary[f"break_even_steps_{key}"] = (math.ceil(extra_s / saved_s) if saved_s > 0 else None)
        peak, how = fp32_peak_gflops()
        summary["fp32_peak_gflops_one_core"] = f"{peak:.0f} ({how}; an estimate)" if peak else how
    if part == "paper":
        fp32, bf16 = by.get("paper UNet fp32", {}), by.get("paper UNet bf16 autocast", {})
        if fp32.get("step_ms") and bf16.get("step_ms"):
            summary["bf16_speedup"] = round(fp32["step_ms"] / bf16["step_ms"], 2)
        summary.update(_dice_summary(rows))
    if part == "gpu":
        fp32, amp = by.get("fp32", {}), by.get("amp", {})
        if fp32.get("step_ms") and amp.get("step_ms"):
            summary["amp_speedup"] = round(fp32["step_ms"] / amp["step_ms"], 2)
        if by.get("amp + channels_last", {}).get("step_ms") and fp32.get("step_ms"):
            summary["amp_channels_last_speedup"] = round(fp32["step_ms"] / by["amp + channels_last"]["step_ms"], 2)
    return summary


def _dice_summary(rows: list[dict]) -> dict:
    """Mean and std over seeds of the test Dice per precision, and whether bfloat16 changed it.

    Unchanged means every branch's mean moved by at most ``DICE_TOLERANCE`` or by at most the
    larger seed-to-seed standard deviation of the two precisions (the noise of the check itself).
    """
    groups = {precision: [row for row in rows if row["label"].startswith(f"Dice after training, {precision}")
                          and "dice_student" in row] for precision in ("fp32", "bf16")}
    if not all(groups.values()):
        return {}
    stats = {precision: {k: (statistics.mean(r[k] for r in group),
                             statistics.stdev(r[k] for r in group) if len(group) > 1 else 0.0)
                         for k in ("dice_teacher", "dice_student")} for precision, group in groups.items()}
    differences = {k: abs(stats["fp32"][k][0] - stats["bf16"][k][0]) for k in ("dice_teacher", "dice_student")}
    spread = {k: max(stats["fp32"][k][1], stats["bf16"][k][1]) for k in differences}
    return {**{f"dice_{p}": {k: f"{m:.3f} ± {sd:.3f}" for k, (m, sd) in s.items()} for p, s in stats.items()},
            "dice_seeds": len(groups["fp32"]),
            "dice_mean_abs_difference": {k: round(v, 4) for k, v in differences.items()},
            "dice_unchanged": all(differences[k] <= max(DICE_TOLERANCE, spread[k]) for k in differences),
            "dice_tolerance": DICE_TOLERANCE}


def metadata(args) -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "threads": args.threads, "tiny": args.tiny,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_part(part: str, args) -> dict | None:
    print(f"\n== {part} ==", flush=True)
    if part == "gpu":
        import torch

        if args.gpu_device == "cuda" and not torch.cuda.is_available():
            message = "no CUDA device: the GPU benchmark needs one (it measures CUDA speed and memory); skipped"
            print(message)
            return {"skipped": message, "rows": []}
        with tempfile.TemporaryDirectory(prefix="mixseg-gpu-data-") as folder:
            specs = gpu_specs(args, make_gpu_data(args, Path(folder) / "volumes"))
            rows = _run_specs(specs, args)
    else:
        with tempfile.TemporaryDirectory(prefix="mixseg-inductor-cache-") as cache:
            specs = {"step": step_specs, "paper": paper_specs, "versus": versus_specs, "throughput": throughput_specs,
                     "notebooks": notebook_specs, "data": data_specs,
                     "compile": lambda a: compile_specs(a, Path(cache))}[part](args)
            if not specs:
                print("nothing to run")
                return {"rows": []}
            rows = _run_specs(specs, args)
    summary = summarize(part, rows)  # may add derived columns (ratio_to_authors) to the rows
    print(format_rows(rows, COLUMNS[part]))
    for key, value in summary.items():
        print(f"{key}: {value}")
    return {"rows": rows, "summary": summary, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def _run_specs(specs: list[dict], args) -> list[dict]:
    rows = []
    for spec in specs:
        started = time.perf_counter()
        result = run_case(spec, args.timeout)
        row = {k: v for k, v in spec.items() if k not in ("kind", "threads", "path", "data", "env")}
        row.update(result)
        rows.append(row)
        status = f"error: {result['error']}" if result.get("error") else "ok"
        print(f"  {spec['label']}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated parts among {', '.join(PARTS)} "
                                       f"(default: {', '.join(DEFAULT_PARTS)})")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU part")
    parser.add_argument("--tiny", action="store_true", help="tiny settings: checks that every part runs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per case (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per step case")
    parser.add_argument("--dice-epochs", type=int, default=24, help="epochs of the bf16 Dice check")
    parser.add_argument("--dice-seeds", type=int, default=3, help="training seeds per precision in the bf16 Dice check")
    parser.add_argument("--dice-width", type=int, default=8, help="base width of the bf16 Dice check")
    parser.add_argument("--dice-depth", type=int, default=3, help="depth of the bf16 Dice check")
    parser.add_argument("--versus-precisions", default="fp32,bf16",
                        help="precisions of the versus part (bfloat16 is emulated without AVX512-BF16/AMX: "
                             "one step of the paper-size network took over 3 minutes on an AVX2 CPU)")
    parser.add_argument("--notebooks", help="glob of notebook sources in notebooks/, e.g. '0[0-2]_*'")
    parser.add_argument("--gpu-steps", type=int, default=40, help="timed steps per GPU case")
    parser.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # "cpu": test the GPU code path
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per case")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file (merged per part)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        run_case_here(json.loads(args.case))
        return 0
    parts = [p.strip() for p in args.only.split(",")] if args.only else list(DEFAULT_PARTS) + (["gpu"] if args.gpu else [])
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown part(s) {unknown}; choose from {PARTS}", file=sys.stderr)
        return 2
    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results = {"meta": metadata(args), "parts": dict(previous.get("parts", {}))}
    print(f"mixseg-lite benchmarks: {', '.join(parts)}; {results['meta']['cpu_count']} CPUs, "
          f"{args.threads} torch threads per case, load average {_load()}")
    failed = False
    for part in parts:
        outcome = run_part(part, args)
        results["parts"][part] = {**outcome, "meta": results["meta"]}
        failed |= any(row.get("error") for row in outcome.get("rows", []))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")  # after every part: partial runs count
    print(f"\nresults written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
