"""Memory readings, exact activation bytes, and the batch-size back-off under a memory cap."""

import copy
import sys
import weakref

import pytest
import torch
from torch import nn

from helpers.models import mlp
from helpers.precision import gpu_status as gpu_status_module
from helpers.precision.gpu_status import gpu_status, nvidia_smi
from helpers.precision.memory import (
    MIB,
    SavedTensorMeter,
    activation_bytes,
    memory_reading,
    track_memory,
)
from helpers.precision.oom import (
    SimulatedMemoryCap,
    capped_backoff_in_subprocess,
    find_max_batch_size,
    is_oom_error,
    mlp_training_step,
)


def cap_of(limit):
    """A simulated step that runs out of memory above ``limit`` samples (1 byte each)."""
    return SimulatedMemoryCap(cap_bytes=limit, cost=lambda batch: batch)


@pytest.mark.parametrize("start", [1, 7, 100, 512, 1000])
@pytest.mark.parametrize("limit", [1, 3, 24, 25, 99, 100, 511, 4096])
def test_backoff_returns_the_largest_batch_under_the_cap(start, limit):
    halved = find_max_batch_size(cap_of(limit), start, cleanup=None)
    expected = start
    while expected > limit:
        expected = max(1, expected // 2)
    assert halved.batch_size == expected  # the largest of start, start/2, start/4, ... that fits
    exact = find_max_batch_size(cap_of(limit), start, refine=True, cleanup=None)
    assert exact.batch_size == min(start, limit)  # the largest that fits, full stop
    assert all(ok == (size <= limit) for size, ok in exact.attempts)


def test_backoff_records_attempts_in_order():
    cleanups = []
    result = find_max_batch_size(cap_of(100), 512, cleanup=lambda: cleanups.append(1))
    assert len(cleanups) == 4  # after every attempt
    assert result.attempts == [(512, False), (256, False), (128, False), (64, True)]
    assert result.ooms == 3


def test_backoff_gives_up_below_min_size_and_checks_arguments():
    with pytest.raises(RuntimeError, match="even at batch size 4"):
        find_max_batch_size(cap_of(2), 64, min_size=4, cleanup=None)
    with pytest.raises(ValueError):
        find_max_batch_size(cap_of(2), 0)
    with pytest.raises(ValueError):
        find_max_batch_size(cap_of(2), 4, min_size=8)


def test_backoff_lets_other_errors_through():
    def broken(batch_size):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        find_max_batch_size(broken, 8)


def test_backoff_treats_allocator_messages_as_oom():
    assert is_oom_error(torch.OutOfMemoryError("x"))
    assert is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_oom_error(RuntimeError("expected scalar type Float"))
    assert not is_oom_error(ValueError("out of memory"))

    def cpu_style(batch_size):
        if batch_size > 10:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    assert find_max_batch_size(cpu_style, 40, cleanup=None).batch_size == 10


def test_the_failed_attempt_is_freed_before_the_next_one():
    refs = []

    def step(batch_size):
        if refs:  # the previous attempt's big tensor must be gone by now
            assert refs[-1]() is None, "the failed step's tensors are still alive"
        big = torch.empty(batch_size, 1024)
        refs.append(weakref.ref(big))
        if batch_size > 64:
            raise torch.OutOfMemoryError("simulated")

    assert find_max_batch_size(step, 512, cleanup=None).batch_size == 64  # no gc needed


def test_saved_tensor_meter_matches_the_closed_form():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    for batch in (1, 10, 100):
        x = torch.randn(batch, 8)
        with SavedTensorMeter(exclude=model.parameters()) as meter:
            model(x)
        # the input of the first Linear and the ReLU output (also the 2nd Linear's input)
        assert meter.bytes == batch * (8 + 16) * 4
        assert activation_bytes(model, x) == meter.bytes
        low = activation_bytes(model, x, autocast_dtype=torch.bfloat16)
        assert low == batch * (8 + 16) * 2 + 16 * 4 * 2  # bf16 copies, + the bf16 weight kept
        with torch.no_grad(), SavedTensorMeter() as nothing:
            model(x)
        assert nothing.bytes == 0


def test_saved_tensor_meter_tells_freed_graphs_from_kept_ones():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(32, 8)
    with SavedTensorMeter(exclude=model.parameters()) as with_input:
        model(x).sum().backward()
    assert with_input.bytes == 32 * (8 + 16) * 4
    assert with_input.alive_bytes == 0  # x lives on (we hold it), but no graph holds it
    per_forward = 32 * 16 * 4  # the ReLU output, once x is excluded
    with SavedTensorMeter(exclude=[*model.parameters(), x]) as trained:
        for _ in range(3):  # a training loop: every graph freed by backward
            model(x).sum().backward()
    assert trained.bytes == 3 * per_forward  # addresses reused across steps still count
    assert trained.alive_bytes == 0
    with SavedTensorMeter(exclude=[*model.parameters(), x]) as leaky:
        kept = [model(x).sum() for _ in range(3)]  # graphs kept, never backpropagated
    assert leaky.alive_bytes == leaky.bytes == 3 * per_forward
    del kept
    assert leaky.alive_bytes == 0


@pytest.mark.slow
def test_memory_reading_and_tracking_on_cpu():
    reading = memory_reading("cpu")
    assert reading.source == "process RSS" and reading.peak_bytes >= reading.current_bytes > 0
    with track_memory("cpu") as kept:
        block = torch.ones(16 * MIB // 4)  # 16 MiB, pages touched
    assert kept.growth_mib > 12
    del block
    with track_memory("cpu") as transient:
        torch.ones(32 * MIB // 4).sum()
    if transient.peak_is_exact:
        assert transient.peak_above_start_mib > 24 and transient.growth_mib < 8
    with pytest.raises(ValueError):
        memory_reading("meta")


def test_mlp_training_step_is_one_sgd_step_on_a_fresh_batch():
    torch.manual_seed(0)
    model = mlp(4, 10, hidden=16, depth=1)
    reference = copy.deepcopy(model)
    step = mlp_training_step(width=16, depth=1, n_features=4, lr=0.5, model=model)
    for batch_size in (3, 5):
        torch.manual_seed(batch_size)
        inputs, targets = torch.randn(batch_size, 4), torch.randint(0, 10, (batch_size,))
        loss = nn.functional.cross_entropy(reference(inputs), targets)
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        with torch.no_grad():  # plain SGD by hand: p <- p - lr * grad
            for parameter, grad in zip(reference.parameters(), grads, strict=True):
                parameter -= 0.5 * grad
        before = [p.detach().clone() for p in model.parameters()]
        torch.manual_seed(batch_size)  # the step draws the same batch
        step(batch_size)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        for mine, expected in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(mine, expected)
    built = mlp_training_step(width=16, depth=2, n_features=4)  # builds helpers.models.mlp
    built(2)


@pytest.mark.multiprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS needs Linux")
def test_a_real_allocation_failure_under_a_capped_address_space():
    result = capped_backoff_in_subprocess(48 * MIB, 4096, width=1024, depth=2, n_features=256)
    assert 1 <= result["batch_size"] < 4096
    assert result["attempts"][0] == (4096, False) and result["attempts"][-1][1]
    assert "allocate" in result["first_error"]


def test_gpu_status_degrades_gracefully_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    report = gpu_status()
    assert report.rows == [] and "no CUDA GPU" in report.note
    monkeypatch.setattr(gpu_status_module.shutil, "which", lambda name: None)
    smi = nvidia_smi()
    assert smi.rows == [] and "not found" in smi.note
