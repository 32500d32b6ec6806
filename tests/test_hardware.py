"""The machine a number came from, and the thread cap notebooks honour."""

from __future__ import annotations

import json

import torch

from mixseg_lite.hardware import CPU_FLAGS, machine_info, machine_summary
from mixseg_lite.results import write_metrics
from mixseg_lite.runtime import setup_notebook, thread_count


def test_machine_info_names_instruction_sets_threads_and_versions():
    info = machine_info()
    assert set(CPU_FLAGS) <= set(info)
    assert all(isinstance(info[name], bool) for name in CPU_FLAGS)
    assert info["threads"] == torch.get_num_threads() and info["torch"] == torch.__version__
    assert info["torch_cpu_capability"] in {"default", "AVX2", "AVX512", "VSX", "ZVECTOR", "SVE256", "SVE128", "NEON"} \
        or isinstance(info["torch_cpu_capability"], str)
    json.dumps(info)  # JSON-friendly


def test_machine_summary_mentions_kernel_limits(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    line = machine_summary()
    assert "ONEDNN_MAX_CPU_ISA=SSE41" in line and "torch thread" in line


def test_metrics_json_records_the_machine(tmp_path):
    path = write_metrics(tmp_path, [{"method": "kl", "dice": 0.5}], {"seed": 0})
    record = json.loads(path.read_text())
    assert record["machine"]["threads"] >= 1 and "avx2" in record["machine"]
    assert "speed" not in record
    speed = {"kl": {"compile": True, "compile_reason": "pays back", "channels_last": False}}
    record = json.loads(write_metrics(tmp_path, [{"method": "kl", "dice": 0.5}], {"seed": 0}, speed=speed).read_text())
    assert record["speed"] == speed and record["rows"] == [{"method": "kl", "dice": 0.5}]


def test_thread_count_is_capped_by_omp_num_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_count(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_count(2) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert thread_count(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "nonsense")
    assert thread_count(3) == 3


def test_setup_notebook_prints_the_machine(capsys, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        setup_notebook(seed=0, num_threads=2)
        assert torch.get_num_threads() == 1
        assert "numbers below come from:" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_speed_options_left_to_the_hardware_are_resolved_with_a_reason():
    import torch

    from mixseg_lite.hardware import bf16_autocast_is_fast, choose_channels_last
    from mixseg_lite.train.mixed import MixedConfig, resolve_speed

    cpu = torch.device("cpu")
    config, speed = resolve_speed(MixedConfig(amp="auto"), cpu)
    assert (config.channels_last, config.amp) == (choose_channels_last(cpu)[0], bf16_autocast_is_fast(cpu)[0])
    assert speed["channels_last_reason"] and speed["amp_reason"]
    config, speed = resolve_speed(MixedConfig(channels_last=True, amp=False), cpu)
    assert config.channels_last is True and config.amp is False and speed["channels_last_reason"] == "set in the config"
    # CUDA's choice does not need a GPU to be stated
    assert choose_channels_last(torch.device("cuda"))[0] is True and bf16_autocast_is_fast(torch.device("cuda"))[0]


def test_a_limited_kernel_path_chooses_contiguous(monkeypatch):
    import torch

    from mixseg_lite.hardware import choose_channels_last

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert choose_channels_last(torch.device("cpu"))[0] is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    layout, reason = choose_channels_last(torch.device("cpu"))
    assert layout is False and "SSE41" in reason
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert choose_channels_last(torch.device("cpu"))[0] is False


def test_compile_only_where_the_planned_steps_pay_it_back(monkeypatch):
    import shutil

    from mixseg_lite import hardware
    from mixseg_lite.hardware import COMPILE_BREAK_EVEN_STEPS, choose_compile, compiled_once

    monkeypatch.setattr(hardware, "_compiled_in_process", set())
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: True)
    cpu = torch.device("cpu")
    cold = COMPILE_BREAK_EVEN_STEPS["cold"]
    assert choose_compile(cpu, cold - 1, "net")[0] is False
    wanted, why = choose_compile(cpu, cold, "net")
    assert wanted is True and str(cold) in why
    # once this process has compiled the network, a short training compiles too
    warm = COMPILE_BREAK_EVEN_STEPS["in_process"]
    assert warm < cold and choose_compile(cpu, warm, "net")[0] is False
    compiled_once("net")
    wanted, why = choose_compile(cpu, warm, "net")
    assert wanted is True and "already compiled in this process" in why
    assert choose_compile(cpu, warm, "another net")[0] is False
    # never where it cannot or was not measured
    assert choose_compile(torch.device("mps"), 10**9)[0] is False
    monkeypatch.setattr(shutil, "which", lambda name: None)
    wanted, why = choose_compile(cpu, 10**9, "net")
    assert wanted is False and "C++ compiler" in why
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    assert "not supported" in choose_compile(cpu, 10**9, "net")[1]
