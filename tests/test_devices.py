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


def test_describe_reports_what_the_machine_says(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 7)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        info = devices.describe(torch.device("cpu"))
    finally:
        torch.set_num_threads(previous)
    assert (info["device"], info["gpus"], info["cpu_cores"], info["torch_threads"]) == (
        "cpu",
        0,
        7,
        3,
    )
    assert (info["amp_dtype"], info["distributed_backend"], info["tensor_cores"]) == (
        "bfloat16",
        "gloo",
        False,
    )
    assert "gpu_name" not in info
    monkeypatch.setattr(devices.os, "cpu_count", lambda: None)  # os.cpu_count() may not know
    assert devices.describe(torch.device("cpu"))["cpu_cores"] == 1


def test_setup_notebook_sets_threads_seeds_and_the_seed_list(capsys):
    previous = torch.get_num_threads()
    try:
        setup = devices.setup_notebook("cpu", threads=1, seed=5, n_seeds=3)
        assert torch.get_num_threads() == 1
        first = torch.rand(1)
        torch.manual_seed(5)
        assert torch.equal(first, torch.rand(1)), "setup_notebook seeds torch with `seed`"
    finally:
        torch.set_num_threads(previous)
    assert setup.device == torch.device("cpu") and setup.seeds == (5, 6, 7)
    assert "seeds: [5, 6, 7]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="threads"):
        devices.setup_notebook("cpu", threads=0)
    with pytest.raises(ValueError, match="n_seeds"):
        devices.setup_notebook("cpu", n_seeds=0)


def test_cuda_index_beyond_the_visible_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
    assert devices.pick_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(RuntimeError, match="only 2 GPU"):
        devices.pick_device("cuda:2")
