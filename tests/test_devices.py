import pytest
import torch

from helpers import devices


def test_auto_picks_cpu_without_gpu(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    assert devices.pick_device("auto") == torch.device("cpu")


def test_auto_picks_cuda_with_gpu(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
    assert devices.pick_device("auto") == torch.device("cuda")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    with pytest.raises(RuntimeError, match="only 0 GPU"):
        devices.pick_device("cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown device"):
        devices.pick_device("tpu-please")


def test_backend_and_amp_dtype_follow_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.default_backend(cpu) == "gloo"
    assert devices.default_backend(cuda) == "nccl"
    assert devices.amp_dtype(cpu) == torch.bfloat16
    assert devices.amp_dtype(cuda) == torch.float16
    assert devices.has_tensor_cores(cpu) is False


def test_describe_reports_the_machine():
    info = devices.describe(torch.device("cpu"))
    assert info["device"] == "cpu"
    assert info["distributed_backend"] == "gloo"
    assert info["cpu_cores"] >= 1
