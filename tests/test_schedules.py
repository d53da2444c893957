import math

import pytest
import torch
from torch.optim import lr_scheduler

from helpers.schedules import lr as schedules
from helpers.schedules.lr import (
    SCHEDULER_NAMES,
    build_scheduler,
    linear_warmup_cosine,
    linear_warmup_linear_decay,
    noam,
    trace_lr,
)

STEPS = 1000


TINY = 1e-9  # PyTorch's LinearLR refuses start_factor=0; a warmup from 1e-9 x base is 0 to 1e-9


def pytorch_trace(make, steps: int, base_lr: float = 1.0) -> list[float]:
    """LRs used at each step by a PyTorch scheduler, stepped after each optimizer step (by hand,
    not through ``trace_lr``, so the reference does not share code with what it checks)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def linear_warmup(optimizer, warmup: int):
    return lr_scheduler.LinearLR(optimizer, start_factor=TINY, end_factor=1.0, total_iters=warmup)


@pytest.mark.parametrize("base_lr", [1.0, 3e-4])
def test_linear_warmup_decay_equals_pytorch_linearlr_chain(base_lr):
    warmup, total = 100, 800
    reference = pytorch_trace(
        lambda opt: lr_scheduler.SequentialLR(
            opt,
            [
                linear_warmup(opt, warmup),
                lr_scheduler.LinearLR(
                    opt, start_factor=1.0, end_factor=0.0, total_iters=total - warmup
                ),
            ],
            milestones=[warmup],
        ),
        STEPS,
        base_lr,
    )
    lrs = trace_lr(
        lambda opt: linear_warmup_linear_decay(opt, warmup, total), STEPS, base_lr=base_lr
    )
    assert lrs == pytest.approx(reference, abs=2 * TINY * base_lr + 1e-12)
    assert lrs[warmup] == pytest.approx(base_lr) and lrs[total] == 0.0 and lrs[-1] == 0.0


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_warmup_cosine_equals_pytorch_linearlr_then_cosineannealinglr(min_ratio):
    warmup, total, base_lr = 50, 600, 2.0
    reference = pytorch_trace(
        lambda opt: lr_scheduler.SequentialLR(
            opt,
            [
                linear_warmup(opt, warmup),
                lr_scheduler.CosineAnnealingLR(
                    opt, T_max=total - warmup, eta_min=min_ratio * base_lr
                ),
            ],
            milestones=[warmup],
        ),
        total + 1,
        base_lr,
    )
    lrs = trace_lr(
        lambda opt: linear_warmup_cosine(opt, warmup, total, min_ratio), STEPS, base_lr=base_lr
    )
    # PyTorch's cosine rises again after T_max (it is periodic); ours stays at the floor
    assert lrs[: total + 1] == pytest.approx(reference, abs=1e-6)
    assert lrs[total:] == pytest.approx([min_ratio * base_lr] * (STEPS - total), abs=1e-12)


def test_noam_reproduces_the_transformer_papers_numbers():
    # Vaswani et al. (2017), Section 5.3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    # with d_model = 512 and warmup_steps = 4000: the peak, at step 4000, is 512^-0.5 * 4000^-0.5.
    lrs = trace_lr(lambda opt: noam(opt, d_model=512, warmup_steps=4000), 16001)
    assert max(range(len(lrs)), key=lrs.__getitem__) == 4000
    assert lrs[4000] == pytest.approx(6.9877e-4, rel=1e-4)  # ~7.0e-4
    assert lrs[2000] == pytest.approx(lrs[4000] / 2, rel=1e-9), (
        "linear warmup: half-way, half the peak"
    )
    assert lrs[16000] == pytest.approx(lrs[4000] / 2, rel=1e-9), (
        "inverse sqrt: 4x the steps, half the LR"
    )
    assert lrs[0] == lrs[1] == pytest.approx(1.7469e-7, rel=1e-4), "step 0 counts as step 1"


def test_named_pytorch_schedulers_are_pytorchs_own():
    steps, base_lr = 200, 0.1
    cosine = trace_lr(lambda opt: build_scheduler("CosineAnnealingLR", opt, steps), steps, base_lr)
    closed = [base_lr * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert cosine == pytest.approx(closed, abs=1e-9)
    step = trace_lr(lambda opt: build_scheduler("StepLR", opt, steps), steps, base_lr)
    assert step == pytest.approx(
        pytorch_trace(
            lambda opt: lr_scheduler.StepLR(opt, step_size=steps // 4, gamma=0.5), steps, base_lr
        )
    )


def test_resumed_scheduler_reproduces_the_uninterrupted_sequence():
    def fresh():
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        return optimizer, linear_warmup_cosine(optimizer, 20, 200)

    optimizer, scheduler = fresh()
    uninterrupted = []
    for _ in range(200):
        uninterrupted.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()

    optimizer, scheduler = fresh()
    resumed = []
    for _ in range(77):
        resumed.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    optimizer, scheduler = fresh()
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    for _ in range(77, 200):
        resumed.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert resumed == uninterrupted


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_named_scheduler_traces_finite_positive_lrs(name):
    lrs = trace_lr(lambda opt: build_scheduler(name, opt, 200), 200, base_lr=0.1)
    assert len(lrs) == 200
    assert all(math.isfinite(lr) and lr >= 0 for lr in lrs)
    assert max(lrs) <= 0.1 + 1e-12 or name == "Noam"
    assert len(set(round(lr, 12) for lr in lrs)) > 1, "a schedule must change the LR"


def test_plateau_scheduler_cuts_the_lr_once_the_loss_stops_improving():
    lrs = trace_lr(lambda opt: build_scheduler("ReduceLROnPlateau", opt, 200), 200, base_lr=0.1)
    assert lrs[30] == 0.1, "still improving: no cut"
    assert lrs[-1] < 0.1, "plateau: the LR was cut"


def test_unknown_scheduler_name_lists_the_known_ones():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Unknown scheduler 'cosine'.*CosineAnnealingLR"):
        build_scheduler("cosine", optimizer, 100)


def test_bad_step_counts_are_clear_errors():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        linear_warmup_linear_decay(optimizer, 100, 100)
    with pytest.raises(ValueError, match="warmup_steps"):
        noam(optimizer, 64, 0)
    assert schedules.linear_warmup_linear_decay_factor(0, 0, 10) == 1.0
