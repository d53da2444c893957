"""Class weights, focal loss, logit adjustment and one-vs-rest losses against closed forms."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers.imbalance.losses import (
    LOSS_NAMES,
    FocalLoss,
    LogitAdjustedLoss,
    class_counts,
    class_weights,
    focal_loss,
    log_priors,
    logit_adjusted_cross_entropy,
    make_loss,
    one_vs_rest_bce,
)


def random_batch(n: int = 64, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=generator) * 3, torch.randint(
        0, k, (n,), generator=generator
    )


def test_class_counts_and_errors():
    assert class_counts([0, 2, 2, 2], n_classes=4).tolist() == [1, 0, 3, 0]
    assert class_counts(torch.tensor([1, 1, 0])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="out of range"):
        class_counts([0, 5], n_classes=3)
    with pytest.raises(ValueError, match=">= 0"):
        class_counts([-1, 0])
    with pytest.raises(ValueError, match="integers"):
        class_counts(np.array([0.0, 1.0]))


def test_class_weights_closed_form_and_equal_class_totals():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    weights = class_weights(labels)
    # n / (k * n_c) = 100 / (3 * [60, 30, 10])
    np.testing.assert_allclose(weights.numpy(), [100 / 180, 100 / 90, 100 / 30], rtol=1e-6)
    # every class carries the same total weight n / k
    np.testing.assert_allclose(weights.numpy() * [60, 30, 10], [100 / 3] * 3, rtol=1e-6)
    assert weights.dtype == torch.float32
    np.testing.assert_allclose(
        class_weights(labels, power=0.5).numpy(), weights.numpy() ** 0.5, rtol=1e-6
    )
    np.testing.assert_allclose(class_weights(labels, power=0.0).numpy(), [1, 1, 1])


def test_class_weights_match_scikit_learn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.random.default_rng(0).choice(4, size=500, p=[0.7, 0.2, 0.07, 0.03])
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    np.testing.assert_allclose(class_weights(labels).numpy(), expected, rtol=1e-6)


def test_class_weights_refuse_an_empty_class():
    with pytest.raises(ValueError, match=r"\[1\]"):
        class_weights([0, 0, 2], n_classes=3)


@pytest.mark.parametrize("use_weight", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(use_weight):
    logits, targets = random_batch()
    weight = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.25]) if use_weight else None
    for reduction in ("mean", "sum", "none"):
        expected = F.cross_entropy(logits, targets, weight=weight, reduction=reduction)
        actual = focal_loss(logits, targets, gamma=0.0, weight=weight, reduction=reduction)
        torch.testing.assert_close(actual, expected)
    module = FocalLoss(gamma=0.0, weight=weight)
    torch.testing.assert_close(
        module(logits, targets), F.cross_entropy(logits, targets, weight=weight)
    )


def test_focal_gradient_with_gamma_zero_matches_cross_entropy():
    logits, targets = random_batch()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    focal_loss(a, targets, gamma=0.0).backward()
    F.cross_entropy(b, targets).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_focal_is_cross_entropy_times_the_modulating_factor():
    logits, targets = random_batch()
    gamma = 2.0
    ce = F.cross_entropy(logits, targets, reduction="none")
    p_true = torch.softmax(logits, 1).gather(1, targets[:, None]).squeeze(1)
    expected = (1 - p_true) ** gamma * ce
    torch.testing.assert_close(focal_loss(logits, targets, gamma, reduction="none"), expected)


def test_focal_down_weights_easy_examples_most():
    # two-class logits giving p_true = 0.9 (easy) and 0.1 (hard)
    targets = torch.tensor([0, 0])
    logits = torch.tensor([[math.log(9.0), 0.0], [0.0, math.log(9.0)]])
    ce = F.cross_entropy(logits, targets, reduction="none")
    fl = focal_loss(logits, targets, gamma=2.0, reduction="none")
    ratio = fl / ce
    torch.testing.assert_close(ratio, torch.tensor([0.1**2, 0.9**2]))
    assert ratio[0] < ratio[1], "the easy example keeps a smaller share of its loss"
    assert (fl <= ce + 1e-7).all(), "focal loss never exceeds cross-entropy"
    # larger gamma shrinks the easy example's loss further
    assert focal_loss(logits[:1], targets[:1], gamma=5.0) < focal_loss(
        logits[:1], targets[:1], gamma=2.0
    )


def test_focal_is_stable_for_confident_logits():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([0, 0]), gamma=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_focal_rejects_bad_arguments():
    logits, targets = random_batch()
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, targets, gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="expected logits"):
        focal_loss(logits[0], targets)


def test_logit_adjusted_loss_is_cross_entropy_of_shifted_logits():
    logits, targets = random_batch()
    counts = np.array([50, 20, 10, 5, 1])
    prior = torch.tensor(np.log(counts / counts.sum()), dtype=torch.float32)
    torch.testing.assert_close(log_priors(counts), prior)
    expected = F.cross_entropy(logits + 0.5 * prior, targets)
    torch.testing.assert_close(
        logit_adjusted_cross_entropy(logits, targets, prior, tau=0.5), expected
    )
    torch.testing.assert_close(LogitAdjustedLoss(counts, tau=0.5)(logits, targets), expected)
    # tau = 0 is plain cross-entropy
    torch.testing.assert_close(
        LogitAdjustedLoss(counts, tau=0.0)(logits, targets), F.cross_entropy(logits, targets)
    )


def test_one_vs_rest_equals_independent_binary_losses():
    logits, targets = random_batch(n=32, k=4)
    per_class = [
        F.binary_cross_entropy_with_logits(logits[:, c], (targets == c).float(), reduction="sum")
        for c in range(4)
    ]
    torch.testing.assert_close(one_vs_rest_bce(logits, targets), sum(per_class) / 32)
    # the gradient of logit c only depends on class c's binary problem
    a = logits.clone().requires_grad_()
    one_vs_rest_bce(a, targets).backward()
    expected = (torch.sigmoid(logits) - F.one_hot(targets, 4).float()) / 32
    torch.testing.assert_close(a.grad, expected)


def test_make_loss_builds_each_loss_and_rejects_unknown_names():
    logits, targets = random_batch()
    labels = targets.numpy()
    for name in LOSS_NAMES:
        loss = make_loss(name, labels, n_classes=5)
        assert isinstance(loss, nn.Module)
        assert torch.isfinite(loss(logits, targets))
    weighted = make_loss("weighted_ce", labels, n_classes=5)
    torch.testing.assert_close(weighted.weight, class_weights(labels, 5))
    smoothing = make_loss("label_smoothing", labels, smoothing=0.2)
    assert smoothing.label_smoothing == 0.2
    with pytest.raises(ValueError, match="focal"):
        make_loss("focus", labels)
