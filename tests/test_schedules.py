import math

import pytest
import torch

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


def hf_linear(step: int, warmup: int, total: int) -> float:
    # Closed form as written in Hugging Face's get_linear_schedule_with_warmup.
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / (total - warmup))


def cosine_closed_form(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1 - min_ratio) * (1 + math.cos(math.pi * progress)) / 2


def noam_closed_form(step: int, d_model: int, warmup: int) -> float:
    step = max(step, 1)
    return d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)


@pytest.mark.parametrize("base_lr", [1.0, 3e-4])
def test_linear_warmup_decay_matches_its_closed_form(base_lr):
    lrs = trace_lr(lambda opt: linear_warmup_linear_decay(opt, 100, 800), STEPS, base_lr=base_lr)
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(base_lr * hf_linear(step, 100, 800), abs=1e-9)
    assert lrs[100] == pytest.approx(base_lr) and lrs[800] == 0.0 and lrs[-1] == 0.0


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_warmup_cosine_matches_its_closed_form(min_ratio):
    lrs = trace_lr(lambda opt: linear_warmup_cosine(opt, 50, 600, min_ratio), STEPS, base_lr=2.0)
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(2.0 * cosine_closed_form(step, 50, 600, min_ratio), abs=1e-9)
    assert lrs[325] == pytest.approx(2.0 * (min_ratio + (1 - min_ratio) / 2), abs=1e-9)


def test_noam_matches_its_closed_form_and_peaks_at_warmup():
    lrs = trace_lr(lambda opt: noam(opt, d_model=512, warmup_steps=4000), 8000)
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(noam_closed_form(step, 512, 4000), abs=1e-9)
    assert max(range(8000), key=lrs.__getitem__) == 4000
    assert lrs[4000] == pytest.approx((512 * 4000) ** -0.5, abs=1e-12)


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
