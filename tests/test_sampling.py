"""Long-tail subsets, the balanced sampler, undersampling, the tensor loader and logit adjustment."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from helpers.imbalance.sampling import (
    adjust_logits,
    balanced_sampler,
    long_tail_indices,
    oversampling_weights,
    tensor_loader,
    tune_tau,
    undersample_indices,
)

IMBALANCED = np.repeat(np.arange(5), [500, 200, 50, 20, 5])  # 100:1


def test_long_tail_has_the_requested_ratio_and_profile():
    labels = np.repeat(np.arange(10), 100)
    keep = long_tail_indices(labels, imbalance_ratio=50, seed=0)
    counts = np.bincount(labels[keep], minlength=10)
    assert counts[0] == 100 and counts[-1] == 2  # 100 / 50
    assert (np.diff(counts) <= 0).all(), "class sizes fall from head to tail"
    expected = np.maximum(1, np.round(100 * 50.0 ** (-np.arange(10) / 9))).astype(int)
    np.testing.assert_array_equal(counts, expected)
    assert len(np.unique(keep)) == len(keep) and np.all(np.diff(keep) > 0)


def test_long_tail_balanced_seeded_and_validated():
    labels = np.repeat(np.arange(3), [40, 50, 60])
    assert np.bincount(labels[long_tail_indices(labels, 1, seed=0)]).tolist() == [40, 40, 40]
    a = long_tail_indices(labels, 10, seed=1)
    np.testing.assert_array_equal(a, long_tail_indices(labels, 10, seed=1))
    assert not np.array_equal(a, long_tail_indices(labels, 10, seed=2))
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tail_indices(labels, 0.5, seed=0)
    with pytest.raises(ValueError, match="max_per_class"):
        long_tail_indices(labels, 2, seed=0, max_per_class=45)


def test_oversampling_weights_give_every_class_equal_mass():
    weights = oversampling_weights(IMBALANCED)
    mass = np.bincount(IMBALANCED, weights=weights.numpy())
    np.testing.assert_allclose(mass, np.ones(5))
    np.testing.assert_allclose(oversampling_weights(IMBALANCED, power=0.0).numpy(), 1.0)


def test_balanced_sampler_draws_classes_near_uniformly():
    generator = torch.Generator().manual_seed(0)
    sampler = balanced_sampler(IMBALANCED, num_samples=20_000, generator=generator)
    drawn = np.bincount(IMBALANCED[list(sampler)], minlength=5)
    assert drawn.sum() == 20_000
    np.testing.assert_allclose(drawn / drawn.sum(), np.full(5, 0.2), atol=0.015)
    assert chisquare(drawn).pvalue > 1e-3, f"drawn frequencies {drawn} are not uniform"
    # the original data would give the tail class 5/775 of the draws, not a fifth
    default = balanced_sampler(IMBALANCED, generator=generator)
    assert len(list(default)) == len(IMBALANCED)


def test_balanced_sampler_is_reproducible_with_a_generator():
    first = list(balanced_sampler(IMBALANCED, generator=torch.Generator().manual_seed(3)))
    second = list(balanced_sampler(IMBALANCED, generator=torch.Generator().manual_seed(3)))
    assert first == second


def test_undersampling_balances_to_the_smallest_class():
    keep = undersample_indices(IMBALANCED, seed=0)
    assert np.bincount(IMBALANCED[keep]).tolist() == [5] * 5
    assert len(np.unique(keep)) == len(keep)
    capped = undersample_indices(IMBALANCED, seed=0, per_class=30)
    assert np.bincount(IMBALANCED[capped]).tolist() == [30, 30, 30, 20, 5]
    with pytest.raises(ValueError, match="per_class"):
        undersample_indices(IMBALANCED, seed=0, per_class=0)


def test_undersampling_agrees_with_imbalanced_learn_counts():
    imblearn = pytest.importorskip("imblearn.under_sampling")
    sampler = imblearn.RandomUnderSampler(random_state=0)
    _, resampled = sampler.fit_resample(np.zeros((len(IMBALANCED), 1)), IMBALANCED)
    ours = IMBALANCED[undersample_indices(IMBALANCED, seed=0)]
    assert np.bincount(resampled).tolist() == np.bincount(ours).tolist()


def test_tensor_loader_batches_shuffle_and_sampler():
    inputs = torch.arange(10, dtype=torch.float32)[:, None]
    labels = torch.arange(10)
    ordered = tensor_loader(inputs, labels, batch_size=4, shuffle=False)
    batches = list(ordered)
    assert len(ordered) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), labels)
    assert torch.equal(batches[0][0][:, 0], inputs[:4, 0])
    shuffled = tensor_loader(inputs, labels, 4, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([b[1] for b in shuffled])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    sampled = tensor_loader(inputs, labels, 5, sampler=[9, 9, 9, 0, 1, 2])
    assert torch.cat([b[1] for b in sampled]).tolist() == [9, 9, 9, 0, 1, 2]
    with pytest.raises(ValueError, match="length"):
        tensor_loader(inputs, labels[:5], 4)


def test_adjust_logits_subtracts_tau_log_prior():
    counts = np.array([90, 9, 1])
    logits = torch.zeros(2, 3)
    adjusted = adjust_logits(logits, counts, tau=1.0)
    expected = -torch.log(torch.tensor([0.9, 0.09, 0.01]))
    torch.testing.assert_close(adjusted[0], expected)
    # equal logits now favour the rarest class
    assert adjusted.argmax(1).tolist() == [2, 2]
    torch.testing.assert_close(adjust_logits(logits, counts, tau=0.0), logits)
    with pytest.raises(ValueError, match="classes"):
        adjust_logits(torch.zeros(2, 4), counts)


def test_tune_tau_recovers_the_prior_shift():
    # a "model" whose logits are log p(x|y) + log prior: the best correction removes the prior
    rng = np.random.default_rng(0)
    counts = np.array([900, 90, 10])
    labels = rng.choice(3, size=3000, p=counts / counts.sum())
    likelihood = torch.tensor(rng.normal(0, 1.0, (3000, 3)), dtype=torch.float32)
    likelihood[torch.arange(3000), torch.from_numpy(labels)] += 2.0
    logits = likelihood + torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float32))
    best, scores = tune_tau(logits, labels, counts)
    assert set(scores) == {0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    assert scores[best] == max(scores.values())
    assert best > 0.0 and scores[best] > scores[0.0] + 0.05
