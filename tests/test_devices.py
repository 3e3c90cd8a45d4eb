"""The devices of the installed llama.cpp build (real ctypes calls) and the NVML notice."""

from __future__ import annotations

import sys

import pynvml
import pytest

from offgrid_nb import devices
from offgrid_nb.cli import main
from offgrid_nb.devices import CUDA_REBUILD, Device


def test_cpu_build_lists_the_cpu_alone():
    assert devices.backends() == ["CPU"]  # this machine's llama-cpp-python is CPU-only
    (cpu,) = devices.list_devices()
    assert (cpu.name, cpu.kind, cpu.backend, cpu.is_gpu, cpu.unified) == (
        "CPU", "cpu", "CPU", False, False,
    )  # fmt: skip
    assert 0 < cpu.free_bytes <= cpu.total_bytes  # free is MemAvailable, total the RAM
    assert devices.gpus(devices.list_devices()) == []


def test_hardware_table():
    df = devices.hardware()
    assert list(df["name"]) == ["CPU"]
    assert 0 < df["free_gb"][0] <= df["total_gb"][0]
    assert df.attrs["backends"] == ["CPU"]


def test_nvml_absent_says_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: not installed
    assert devices.nvml_gpus() is None
    assert devices.build_notice() is None


def test_nvml_without_a_driver_says_nothing():
    assert devices.nvml_gpus() is None  # the real pynvml finds no libnvidia-ml here
    assert devices.build_notice() is None


@pytest.fixture
def nvml_with_a_card(monkeypatch):
    """NVML that sees one card (mocked at the NVML boundary: pynvml's C-call wrappers)."""
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: "NVIDIA GeForce RTX 4090")


def test_nvidia_card_with_a_cpu_build_gets_the_rebuild_command(nvml_with_a_card, capsys):
    assert devices.nvml_gpus() == ["NVIDIA GeForce RTX 4090"]
    notice = devices.build_notice()
    assert "NVIDIA GeForce RTX 4090" in notice
    assert "cannot use them" in notice
    assert notice.endswith(CUDA_REBUILD)
    assert main(["hardware"]) == 0
    assert f"note: {notice}" in capsys.readouterr().out


def test_nvidia_card_with_a_cuda_build_needs_no_notice(nvml_with_a_card):
    cuda = Device("CUDA0", "NVIDIA GeForce RTX 4090", "gpu", "CUDA", 20 << 30, 24 << 30)
    assert devices.build_notice([cuda]) is None
