"""helpers.generative (gan, theory, evaluation) against closed forms, references and invariants (Goodfellow et al., 2014)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.generative.evaluation import (
    choose_parzen_sigma,
    classifier_diversity,
    mode_coverage,
    parzen_log_likelihood,
    ring_centres,
    sample_ring,
    tile_images,
    within_class_spread,
)
from helpers.generative.gan import (
    MLP,
    algorithm1_step,
    discriminator_loss,
    generator_loss,
    make_optimizer,
    train_discriminator,
    train_gan,
    train_generator_only,
    value_function,
)
from helpers.generative.theory import (
    LOG4,
    gaussian_pdf,
    js_divergence,
    kl_divergence,
    optimal_discriminator,
    value_on_grid,
    virtual_training_criterion,
)
from helpers.models import mlp

X = np.linspace(-12, 12, 24001)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
DX = X[1] - X[0]


def normalised(density):
    """The identity C = -log 4 + 2 JSD needs densities that integrate to 1 on the grid."""
    return density / (density.sum() * DX)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


# ---- Proposition 1: the optimal discriminator ------------------------------------------------


def test_optimal_discriminator_is_a_logistic_function_for_equal_variance_gaussians():
    # log p_data - log p_g = ((mu1 - mu2) x - (mu1^2 - mu2^2) / 2) / sigma^2 for N(mu, sigma^2)
    mu1, mu2, sigma = 0.5, 2.0, 0.8
    d_star = optimal_discriminator(gaussian_pdf(X, mu1, sigma), gaussian_pdf(X, mu2, sigma))
    logit = ((mu1 - mu2) * X - (mu1**2 - mu2**2) / 2) / sigma**2
    mask = np.abs(X) < 6
    np.testing.assert_allclose(d_star[mask], sigmoid(logit[mask]), rtol=1e-9, atol=1e-12)


def test_optimal_discriminator_is_one_half_when_the_distributions_agree_and_where_both_vanish():
    p = gaussian_pdf(X, 1.0, 1.3)
    np.testing.assert_allclose(optimal_discriminator(p, p), 0.5)
    assert optimal_discriminator(np.array([0.0, 1.0]), np.array([0.0, 0.0])).tolist() == [0.5, 1.0]


def test_optimal_discriminator_maximises_the_value_function():
    p, q = gaussian_pdf(X, 0.0, 1.0), 0.5 * gaussian_pdf(X, 2.5, 0.7) + 0.5 * gaussian_pdf(X, -3, 1)
    d_star = optimal_discriminator(p, q)
    best = value_on_grid(d_star, p, q, DX)
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = np.clip(d_star + rng.normal(0, 0.05, size=X.shape), 1e-6, 1 - 1e-6)
        assert value_on_grid(other, p, q, DX) < best
    assert value_on_grid(np.full_like(X, 0.5), p, q, DX) == pytest.approx(-LOG4, abs=1e-6)


def test_trained_discriminator_reaches_d_star_within_tolerance():
    """Proposition 1 numerically: D trained with G fixed lands within 0.02 (weighted) of D*."""
    torch.manual_seed(0)
    discriminator = MLP(1, 1, hidden=32)
    train_discriminator(
        discriminator,
        lambda m: 1.0 + 0.6 * torch.randn(m, 1),
        lambda m: -0.5 + 1.2 * torch.randn(m, 1),
        steps=600,
        batch_size=512,
        lr=1e-2,
    )
    grid = np.linspace(-5, 5, 1001)
    p, q = gaussian_pdf(grid, 1.0, 0.6), gaussian_pdf(grid, -0.5, 1.2)
    with torch.no_grad():
        d = torch.sigmoid(discriminator(torch.tensor(grid, dtype=torch.float32)[:, None]))
    error = np.abs(d.numpy()[:, 0] - optimal_discriminator(p, q))
    mixture = (p + q) / 2
    assert float((error * mixture).sum() * (grid[1] - grid[0])) < 0.02
    assert error[mixture > 0.01].max() < 0.1


# ---- Theorem 1: C(G) = -log 4 + 2 JSD --------------------------------------------------------


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.3, 1.0), (2.0, 0.5), (4.0, 2.0), (8.0, 1.0)])
def test_virtual_training_criterion_equals_minus_log4_plus_twice_jsd(mu, sigma):
    p, q = normalised(gaussian_pdf(X, 0.0, 1.0)), normalised(gaussian_pdf(X, mu, sigma))
    c = virtual_training_criterion(p, q, DX)
    assert c == pytest.approx(-LOG4 + 2 * js_divergence(p, q, DX), abs=1e-9)
    assert -LOG4 - 1e-9 <= c <= 1e-9


def test_criterion_is_minus_log4_at_the_optimum_and_zero_for_disjoint_supports():
    p = gaussian_pdf(X, 0.3, 0.9)
    assert virtual_training_criterion(p, p, DX) == pytest.approx(-LOG4, abs=1e-6)
    assert js_divergence(p, p, DX) == pytest.approx(0.0, abs=1e-12)
    left, right = (X < 0).astype(float) * (X > -1), (X > 2).astype(float) * (X < 3)
    left, right = normalised(left), normalised(right)
    assert js_divergence(left, right, DX) == pytest.approx(math.log(2), abs=1e-9)
    assert virtual_training_criterion(left, right, DX) == pytest.approx(0.0, abs=1e-9)


def entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_jsd_matches_the_entropy_form_on_random_pmfs_and_identity_holds():
    # an independent formula: JSD(p || q) = H((p + q) / 2) - (H(p) + H(q)) / 2
    rng = np.random.default_rng(1)
    for _ in range(10):
        p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(7) * 0.3)
        jsd = js_divergence(p, q)
        assert jsd == pytest.approx(entropy((p + q) / 2) - (entropy(p) + entropy(q)) / 2, rel=1e-9)
        assert virtual_training_criterion(p, q) == pytest.approx(-LOG4 + 2 * jsd, abs=1e-12)


def test_kl_divergence_of_gaussians_matches_closed_form_and_is_infinite_off_support():
    m1, s1, m2, s2 = 0.5, 0.8, -1.0, 1.5
    closed = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    kl = kl_divergence(gaussian_pdf(X, m1, s1), gaussian_pdf(X, m2, s2), DX)
    assert kl == pytest.approx(closed, rel=1e-6)
    assert kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == math.inf
    with pytest.raises(ValueError):
        kl_divergence(np.array([0.5, 0.5]), np.array([1.0]))


# ---- losses -----------------------------------------------------------------------------------


def test_value_function_is_minus_binary_cross_entropy():
    real, fake = torch.randn(50), torch.randn(60)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected = torch.log(d_real).mean() + torch.log(1 - d_fake).mean()
    assert value_function(real, fake).item() == pytest.approx(expected.item(), rel=1e-5)
    bce = F.binary_cross_entropy_with_logits
    assert discriminator_loss(real, fake).item() == pytest.approx(
        (bce(real, torch.ones(50)) + bce(fake, torch.zeros(60))).item(), rel=1e-5
    )


def test_generator_losses_values_and_gradients_with_respect_to_the_logit():
    logits = torch.linspace(-6, 6, 25, requires_grad=True)
    d = torch.sigmoid(logits).detach()
    sat = generator_loss(logits, "saturating")
    assert sat.item() == pytest.approx(torch.log(1 - d).mean().item(), rel=1e-5)
    (grad_sat,) = torch.autograd.grad(sat, logits)
    ns = generator_loss(logits, "non_saturating")
    assert ns.item() == pytest.approx(-torch.log(d).mean().item(), rel=1e-5)
    (grad_ns,) = torch.autograd.grad(ns, logits)
    n = len(logits)
    torch.testing.assert_close(grad_sat, -d / n)
    torch.testing.assert_close(grad_ns, -(1 - d) / n)


def test_non_saturating_gradient_is_larger_when_the_discriminator_rejects_the_fakes():
    for logit in (-8.0, -4.0, -1.0):  # D(G(z)) = 0.0003, 0.018, 0.27
        a = torch.tensor([logit], requires_grad=True)
        (g_sat,) = torch.autograd.grad(generator_loss(a, "saturating"), a)
        (g_ns,) = torch.autograd.grad(generator_loss(a, "non_saturating"), a)
        assert g_ns.abs().item() > g_sat.abs().item()
    a = torch.tensor([-8.0], requires_grad=True)
    (g_sat,) = torch.autograd.grad(generator_loss(a, "saturating"), a)
    assert g_sat.abs().item() < 1e-3  # saturated


def test_unknown_names_raise_value_errors_listing_the_known_ones():
    with pytest.raises(ValueError, match="non_saturating"):
        generator_loss(torch.zeros(3), "minimax")
    with pytest.raises(ValueError, match="sgd"):
        make_optimizer(MLP(1, 1), "rmsprop", 0.1)
    with pytest.raises(ValueError, match="leaky_relu"):
        MLP(1, 1, activation="swish")
    with pytest.raises(ValueError, match="sigmoid"):
        MLP(1, 1, output="softmax")


# ---- Algorithm 1 -------------------------------------------------------------------------------


def _counting_setup(k):
    torch.manual_seed(0)
    generator, discriminator = MLP(2, 2, hidden=8), MLP(2, 1, hidden=8)
    g_opt, d_opt = (
        make_optimizer(generator, "sgd", 0.01),
        make_optimizer(discriminator, "sgd", 0.01),
    )
    counts = {"d_step": 0, "g_step": 0, "d_forward": 0, "g_forward": 0}
    d_opt.register_step_post_hook(lambda *_: counts.__setitem__("d_step", counts["d_step"] + 1))
    g_opt.register_step_post_hook(lambda *_: counts.__setitem__("g_step", counts["g_step"] + 1))
    discriminator.register_forward_hook(
        lambda *_: counts.__setitem__("d_forward", counts["d_forward"] + 1)
    )
    generator.register_forward_hook(
        lambda *_: counts.__setitem__("g_forward", counts["g_forward"] + 1)
    )
    return generator, discriminator, g_opt, d_opt, counts


@pytest.mark.parametrize("k", [1, 3, 5])
def test_one_iteration_updates_d_k_times_then_g_once(k):
    generator, discriminator, g_opt, d_opt, counts = _counting_setup(k)
    g_before = [p.detach().clone() for p in generator.parameters()]
    stats = algorithm1_step(
        generator,
        discriminator,
        g_opt,
        d_opt,
        lambda m: torch.randn(m, 2),
        lambda m: torch.randn(m, 2),
        batch_size=16,
        k=k,
    )
    assert counts["d_step"] == k and counts["g_step"] == 1
    # one forward of D per discriminator update (real and fake together) + one for G's update
    assert counts["d_forward"] == k + 1
    assert counts["g_forward"] == k + 1
    assert stats.d_updates == k and stats.g_grad_norm > 0
    assert any(not torch.equal(a, b) for a, b in zip(g_before, generator.parameters(), strict=True))


def test_generator_does_not_move_during_the_discriminator_updates():
    generator, discriminator, g_opt, d_opt, _ = _counting_setup(1)
    g_before = [p.detach().clone() for p in generator.parameters()]
    frozen = make_optimizer(generator, "sgd", 0.0)  # G's update is a no-op: only D may change
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    algorithm1_step(
        generator,
        discriminator,
        frozen,
        d_opt,
        lambda m: torch.randn(m, 2),
        lambda m: torch.randn(m, 2),
        batch_size=16,
        k=4,
    )
    assert all(torch.equal(a, b) for a, b in zip(g_before, generator.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters(), strict=True)
    )


def test_conditional_step_feeds_labels_to_both_networks():
    torch.manual_seed(0)
    generator, discriminator = MLP(4, 3, hidden=8, n_classes=5), MLP(3, 1, hidden=8, n_classes=5)
    g_opt, d_opt = (
        make_optimizer(generator, "adam", 1e-3),
        make_optimizer(discriminator, "adam", 1e-3),
    )
    stats = algorithm1_step(
        generator,
        discriminator,
        g_opt,
        d_opt,
        lambda m: (torch.randn(m, 3), torch.randint(5, (m,))),
        lambda m: torch.randn(m, 4),
        batch_size=8,
        k=2,
    )
    assert math.isfinite(stats.d_loss) and math.isfinite(stats.g_loss)
    with pytest.raises(ValueError, match="conditional"):
        generator(torch.randn(2, 4))
    with pytest.raises(ValueError, match="unconditional"):
        MLP(3, 1)(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))


@pytest.mark.slow
def test_a_short_1d_gan_moves_the_generator_to_the_data():
    torch.manual_seed(0)
    generator, discriminator = MLP(1, 1, hidden=16), MLP(1, 1, hidden=16)
    history = train_gan(
        generator,
        discriminator,
        lambda m: 3.0 + 0.5 * torch.randn(m, 1),
        lambda m: torch.randn(m, 1),
        iterations=400,
        batch_size=64,
        lr=3e-3,
    )
    assert len(history) == 400 and history[-1]["iteration"] == 400
    with torch.no_grad():
        mean = generator(torch.randn(2000, 1)).mean().item()
    assert abs(mean - 3.0) < 0.5


def test_generator_alone_against_a_frozen_discriminator_leaves_d_untouched():
    torch.manual_seed(0)
    generator, discriminator = MLP(2, 2, hidden=8), MLP(2, 1, hidden=8)
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    losses = train_generator_only(
        generator, discriminator, lambda m: torch.randn(m, 2), steps=20, batch_size=16
    )
    assert len(losses) == 20 and losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters(), strict=True))
    assert all(p.requires_grad for p in discriminator.parameters())


# ---- ring of Gaussians and mode coverage --------------------------------------------------------


def test_ring_samples_cover_every_mode_and_collapsed_samples_cover_one():
    centres = ring_centres(8, 2.0)
    assert np.allclose(np.linalg.norm(centres, axis=1), 2.0)
    samples = sample_ring(4000, std=0.05, generator=torch.Generator().manual_seed(0))
    coverage = mode_coverage(samples, centres, std=0.05)
    assert coverage.modes_covered == 8 and coverage.high_quality_rate > 0.98
    assert coverage.counts.sum() == pytest.approx(4000 * coverage.high_quality_rate)
    collapsed = np.tile(centres[3], (500, 1))
    assert mode_coverage(collapsed, centres, std=0.05).modes_covered == 1
    far = np.zeros((500, 2))  # the centre of the ring is far from every mode
    assert mode_coverage(far, centres, std=0.05).high_quality_rate == 0.0


def test_a_few_stray_points_do_not_count_as_covering_a_mode():
    centres = ring_centres(8, 2.0)
    samples = np.concatenate([np.tile(centres[0], (995, 1)), np.tile(centres[1], (5, 1))])
    assert mode_coverage(samples, centres, std=0.05).modes_covered == 1
    assert mode_coverage(samples, centres, std=0.05, min_share=0.0).modes_covered == 2


# ---- evaluation -----------------------------------------------------------------------------------


def test_parzen_with_one_sample_is_the_gaussian_density():
    sample, point, sigma = torch.tensor([[0.2, -0.1, 0.4]]), torch.tensor([[1.0, 0.5, 0.0]]), 0.7
    expected = -((point - sample) ** 2).sum() / (2 * sigma**2) - 1.5 * math.log(
        2 * math.pi * sigma**2
    )
    assert parzen_log_likelihood(sample, point, sigma).item() == pytest.approx(expected.item())


def test_parzen_estimate_approaches_the_true_density_and_cross_validation_picks_a_sensible_sigma():
    torch.manual_seed(0)
    samples, points = torch.randn(20000, 1), torch.linspace(-1.0, 1.0, 5)[:, None]
    sigma = 0.2
    estimate = parzen_log_likelihood(samples, points, sigma)
    # in expectation the Parzen estimate is p convolved with the kernel: N(0, 1 + sigma^2)
    var = 1 + sigma**2
    smoothed = -0.5 * points[:, 0].double() ** 2 / var - 0.5 * math.log(2 * math.pi * var)
    torch.testing.assert_close(estimate, smoothed, atol=0.04, rtol=0)
    sigma, scores = choose_parzen_sigma(torch.randn(500, 1), torch.randn(500, 1), [0.01, 0.3, 5.0])
    assert sigma == 0.3 and len(scores) == 3


def test_classifier_diversity_extremes():
    eye = np.eye(10)
    balanced = classifier_diversity(np.tile(eye, (10, 1)))
    assert balanced["classes_seen"] == 10 and balanced["largest_class_share"] == pytest.approx(0.1)
    assert balanced["class_entropy"] == pytest.approx(math.log(10))
    assert balanced["classifier_score"] == pytest.approx(10, rel=1e-6)
    collapsed = classifier_diversity(np.tile(eye[3], (50, 1)))
    assert collapsed["classes_seen"] == 1 and collapsed["classifier_score"] == pytest.approx(1.0)
    unsure = classifier_diversity(np.full((40, 10), 0.1))
    assert unsure["classifier_score"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        classifier_diversity(np.ones((3, 4)))


def test_tile_images_places_each_image():
    images = np.arange(3 * 64, dtype=float).reshape(3, 64)
    canvas = tile_images(images, ncols=2)
    assert canvas.shape == (17, 17)
    np.testing.assert_array_equal(canvas[9:17, 0:8], images[2].reshape(8, 8))
    assert np.isnan(canvas[9:, 9:]).all()


# ---- the shared MLP and within-class spread ------------------------------------------------------


def test_gan_mlp_has_the_layers_of_the_course_mlp_plus_its_output():
    torch.manual_seed(0)
    gan_net = MLP(5, 3, hidden=7, n_hidden=2, activation="leaky_relu", output="sigmoid")
    torch.manual_seed(0)
    course_net = mlp(5, 3, hidden=7, depth=2, activation="leaky_relu")
    x = torch.randn(4, 5)
    assert [type(m) for m in gan_net.net][:-1] == [type(m) for m in course_net]
    assert torch.allclose(gan_net(x), torch.sigmoid(course_net(x)))


def test_within_class_spread_matches_brute_force_pairwise_distances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    c = rng.integers(0, 3, size=40)
    c[:2] = 3  # class 3: exactly two samples
    spread = within_class_spread(x, c, 5)
    for k in range(4):
        members = x[c == k]
        pairs = [np.linalg.norm(a - b) for i, a in enumerate(members) for b in members[i + 1 :]]
        assert spread[k] == pytest.approx(np.mean(pairs), rel=1e-9)
    assert np.isnan(spread[4]), "an empty class has no spread"
    collapsed = np.repeat(x[:1], 10, axis=0)
    assert within_class_spread(collapsed, np.zeros(10, dtype=int), 1)[0] == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="classes must lie"):
        within_class_spread(x, np.full(40, 7), 5)
