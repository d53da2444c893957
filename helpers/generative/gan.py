"""Goodfellow et al. (2014), *Generative Adversarial Nets*, in small tested pieces.

- networks: ``MLP`` (optionally conditioned on a class label), used for both G and D; D returns
  a *logit* ``a`` with ``D(x) = sigmoid(a)``, so ``log D = logsigmoid(a)`` and
  ``log(1 - D) = logsigmoid(-a)`` stay finite;
- the value function ``V(D, G)``, the discriminator loss and the two generator losses
  (``"saturating"``: minimise ``log(1 - D(G(z)))`` as in Eq. 1 and Algorithm 1;
  ``"non_saturating"``: minimise ``-log D(G(z))``, the paper's practical advice in Section 3);
- ``algorithm1_step``: Algorithm 1 plainly, k discriminator updates then one generator update;
- theory on a grid: ``optimal_discriminator`` (Proposition 1), ``virtual_training_criterion``
  ``C(G)``, ``kl_divergence`` and ``js_divergence`` (Theorem 1: ``C(G) = -log 4 + 2 JSD``);
- a 2-D ring of Gaussians with ``mode_coverage`` (modes covered, high-quality sample rate);
- ``train_discriminator`` (Proposition 1's setting) and ``train_generator_only`` (the paper's
  "Helvetica scenario": G trained against a frozen D collapses onto D's favourite points);
- evaluation: ``parzen_log_likelihood`` (the paper's Gaussian Parzen-window estimate) and
  ``classifier_diversity`` (class coverage and an Inception-score-like figure from a classifier);
  ``tile_images`` lays out flat 8x8 images for plotting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GENERATOR_LOSSES: tuple[str, ...] = ("saturating", "non_saturating")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
}
OUTPUTS: dict[str, Callable[[], nn.Module]] = {
    "none": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}
LOG4: float = math.log(4.0)

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """A multilayer perceptron ``in_dim -> hidden x n_hidden -> out_dim``.

    With ``n_classes > 0`` the label is one-hot encoded and concatenated to the input (the
    conditional GAN of Mirza & Osindero, 2014). A discriminator is an ``MLP`` with ``out_dim=1``
    returning one logit per sample, shape ``(N, 1)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 128,
        n_hidden: int = 2,
        activation: str = "relu",
        output: str = "none",
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}.")
        if output not in OUTPUTS:
            raise ValueError(f"Unknown output {output!r}; known: {sorted(OUTPUTS)}.")
        if min(in_dim, out_dim, hidden) < 1 or n_hidden < 1 or n_classes < 0:
            raise ValueError("in_dim, out_dim, hidden and n_hidden must be >= 1, n_classes >= 0.")
        self.n_classes = n_classes
        layers: list[nn.Module] = []
        width = in_dim + n_classes
        for _ in range(n_hidden):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers += [nn.Linear(width, out_dim), OUTPUTS[output]()]
        self.net = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            if labels is None:
                raise ValueError("This network is conditional: pass the class labels too.")
            inputs = torch.cat([inputs, F.one_hot(labels, self.n_classes).to(inputs.dtype)], 1)
        elif labels is not None:
            raise ValueError("This network is unconditional (n_classes=0) but labels were given.")
        return self.net(inputs)


# --------------------------------------------------------------------------------------------
# Value function and losses (all on discriminator logits)
# --------------------------------------------------------------------------------------------


def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Minibatch estimate of ``V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]`` (Eq. 1)."""
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``-V(D, G)``: D *ascends* V, so its optimiser *descends* this (binary cross-entropy)."""
    return -value_function(real_logits, fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss on ``D(G(z)) = sigmoid(fake_logits)``.

    ``"saturating"``: ``mean log(1 - D(G(z)))`` (Eq. 1, minimised by G);
    ``"non_saturating"``: ``-mean log D(G(z))`` (Section 3: same fixed point, strong early
    gradients). With respect to the logit ``a`` their per-sample gradients are ``-D`` and
    ``-(1 - D)``: the saturating one vanishes exactly when D confidently rejects the fakes.
    """
    if kind == "saturating":
        return F.logsigmoid(-fake_logits).mean()
    if kind == "non_saturating":
        return -F.logsigmoid(fake_logits).mean()
    raise ValueError(f"Unknown generator loss {kind!r}; known: {list(GENERATOR_LOSSES)}.")


# --------------------------------------------------------------------------------------------
# Algorithm 1
# --------------------------------------------------------------------------------------------


@dataclass
class StepStats:
    """What one iteration of Algorithm 1 did."""

    d_loss: float  # -V(D, G) on the last discriminator minibatch
    g_loss: float
    d_real: float  # mean D(x) on the last discriminator minibatch
    d_fake: float  # mean D(G(z)) seen by the generator update
    d_updates: int
    g_grad_norm: float  # L2 norm of the generator's gradient in its update


def _split(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, tuple | list):
        return batch[0], batch[1]
    return batch, None


def _grad_norm(module: nn.Module) -> float:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def algorithm1_step(
    generator: nn.Module,
    discriminator: nn.Module,
    g_optimizer: torch.optim.Optimizer,
    d_optimizer: torch.optim.Optimizer,
    sample_data: Callable[[int], Batch],
    sample_noise: Callable[[int], torch.Tensor],
    batch_size: int,
    k: int = 1,
    loss: str = "non_saturating",
) -> StepStats:
    """One training iteration of Algorithm 1: ``k`` updates of D, then one update of G.

    ``sample_data(m)`` returns ``m`` data points ``x`` (or ``(x, y)`` for a conditional GAN, whose
    labels then condition both networks; the generator's labels come from a fresh data batch,
    i.e. from the data's label distribution); ``sample_noise(m)`` returns ``m`` draws from p_z.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}.")
    if loss not in GENERATOR_LOSSES:
        raise ValueError(f"Unknown generator loss {loss!r}; known: {list(GENERATOR_LOSSES)}.")
    generator.train()
    discriminator.train()
    d_loss = real_logits = torch.zeros(1)
    y: torch.Tensor | None = None
    for _ in range(k):
        x, y = _split(sample_data(batch_size))
        z = sample_noise(batch_size)
        with torch.no_grad():
            fake = generator(z) if y is None else generator(z, y)
        # one forward pass over real and fake together; the first m logits are the real ones
        logits = discriminator(torch.cat([x, fake])) if y is None else \
            discriminator(torch.cat([x, fake]), torch.cat([y, y]))
        real_logits, fake_logits = logits[:batch_size], logits[batch_size:]
        d_loss = discriminator_loss(real_logits, fake_logits)
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()
    if y is not None:
        _, y = _split(sample_data(batch_size))  # conditional: labels from the data's p(y)
    z = sample_noise(batch_size)
    fake = generator(z) if y is None else generator(z, y)
    fake_logits = discriminator(fake) if y is None else discriminator(fake, y)
    g_loss = generator_loss(fake_logits, loss)
    g_optimizer.zero_grad(set_to_none=True)
    g_loss.backward()  # also fills D's .grad; the next D update clears it first
    g_norm = _grad_norm(generator)
    g_optimizer.step()
    return StepStats(
        d_loss=d_loss.item(),
        g_loss=g_loss.item(),
        d_real=torch.sigmoid(real_logits.detach()).mean().item(),
        d_fake=torch.sigmoid(fake_logits.detach()).mean().item(),
        d_updates=k,
        g_grad_norm=g_norm,
    )


def train_discriminator(
    discriminator: nn.Module,
    sample_data: Callable[[int], torch.Tensor],
    sample_fake: Callable[[int], torch.Tensor],
    steps: int,
    batch_size: int = 512,
    lr: float = 3e-3,
) -> list[float]:
    """Train D alone (G fixed: ``sample_fake`` draws G(z)) by ascending V; returns -V per step.

    This is the inner loop of Algorithm 1 run to convergence, the setting of Proposition 1.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}.")
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr)
    # cosine decay to 0 averages out the minibatch noise, so D settles close to D*
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    discriminator.train()
    losses = []
    for _ in range(steps):
        x, fake = sample_data(batch_size), sample_fake(batch_size).detach()
        loss = discriminator_loss(discriminator(x), discriminator(fake))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def train_generator_only(
    generator: nn.Module,
    discriminator: nn.Module,
    sample_noise: Callable[[int], torch.Tensor],
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    loss: str = "non_saturating",
) -> list[float]:
    """Update G alone against a *frozen* D (the paper's "Helvetica scenario", Section 6).

    Algorithm 1 never does this; it shows what happens when G is trained too much without
    updating D: G moves its mass to wherever D is currently highest. Returns G's loss per step.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}.")
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    frozen = [p.requires_grad for p in discriminator.parameters()]
    for p in discriminator.parameters():
        p.requires_grad_(False)
    losses = []
    try:
        for _ in range(steps):
            g_loss = generator_loss(discriminator(generator(sample_noise(batch_size))), loss)
            optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            optimizer.step()
            losses.append(g_loss.item())
    finally:
        for p, flag in zip(discriminator.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    return losses


OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


def make_optimizer(
    module: nn.Module,
    name: str,
    lr: float,
    betas: tuple[float, float] = (0.5, 0.999),
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam (with ``betas``) or SGD with ``momentum`` over ``module``'s parameters."""
    if name == "adam":
        return torch.optim.Adam(module.parameters(), lr=lr, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum)
    raise ValueError(f"Unknown optimizer {name!r}; known: {list(OPTIMIZERS)}.")


def train_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    sample_data: Callable[[int], Batch],
    sample_noise: Callable[[int], torch.Tensor],
    iterations: int,
    batch_size: int = 128,
    k: int = 1,
    loss: str = "non_saturating",
    lr: float = 2e-4,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.5, 0.999),
    momentum: float = 0.9,
    callback: Callable[[int], None] | None = None,
    every: int = 0,
) -> list[dict[str, float]]:
    """Run ``iterations`` of Algorithm 1; returns one dict of :class:`StepStats` per iteration.

    ``optimizer="adam"`` uses Adam with ``betas`` (DCGAN's ``(0.5, 0.999)`` by default, Radford
    et al., 2016); ``"sgd"`` uses SGD with ``momentum``, as the paper did. ``callback(i)`` runs
    after iteration ``i`` when ``every`` divides ``i`` (and after the last iteration).
    """
    g_opt, d_opt = (make_optimizer(net, optimizer, lr, betas, momentum)
                    for net in (generator, discriminator))
    history: list[dict[str, float]] = []
    for i in range(1, iterations + 1):
        stats = algorithm1_step(generator, discriminator, g_opt, d_opt, sample_data, sample_noise,
                                batch_size, k=k, loss=loss)
        history.append({"iteration": i, **stats.__dict__})
        if callback is not None and every and (i % every == 0 or i == iterations):
            callback(i)
    return history


# --------------------------------------------------------------------------------------------
# Theory on a grid: Proposition 1 and Theorem 1
# --------------------------------------------------------------------------------------------


def gaussian_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Density of N(mean, std^2) at ``x``."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def _densities(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}.")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("densities must be non-negative.")
    return p, q


def optimal_discriminator(p_data: np.ndarray, p_g: np.ndarray) -> np.ndarray:
    """Proposition 1: ``D*(x) = p_data(x) / (p_data(x) + p_g(x))``.

    Where both densities are 0 every D is optimal; we return 1/2 there.
    """
    p, q = _densities(p_data, p_g)
    total = p + q
    return np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def _expect_log(weights: np.ndarray, values: np.ndarray, dx: float) -> float:
    """``sum weights * log(values) * dx`` with the convention 0 * log(anything) = 0."""
    mask = weights > 0
    return float(np.sum(weights[mask] * np.log(values[mask])) * dx)


def kl_divergence(p: np.ndarray, q: np.ndarray, dx: float = 1.0) -> float:
    """``KL(p || q)`` in nats for densities on a grid with spacing ``dx`` (``dx=1``: pmfs)."""
    p, q = _densities(p, q)
    if ((p > 0) & (q == 0)).any():
        return math.inf
    ratio = np.divide(p, q, out=np.ones_like(p), where=p > 0)
    return _expect_log(p, ratio, dx)


def js_divergence(p: np.ndarray, q: np.ndarray, dx: float = 1.0) -> float:
    """``JSD(p || q) = KL(p || m)/2 + KL(q || m)/2`` with ``m = (p + q)/2``; in [0, log 2].

    Theorem 1's identity ``C(G) = -log 4 + 2 JSD`` assumes ``p`` and ``q`` integrate to 1 on the
    grid (``sum * dx == 1``); normalise densities cut off by a finite grid first.
    """
    p, q = _densities(p, q)
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m, dx) + 0.5 * kl_divergence(q, m, dx)


def value_on_grid(d: np.ndarray, p_data: np.ndarray, p_g: np.ndarray, dx: float = 1.0) -> float:
    """``V(G, D) = ∫ p_data log D + p_g log(1 - D) dx`` for discriminator values ``d`` on a grid."""
    p, q = _densities(p_data, p_g)
    d = np.asarray(d, dtype=np.float64)
    return _expect_log(p, d, dx) + _expect_log(q, 1.0 - d, dx)


def virtual_training_criterion(p_data: np.ndarray, p_g: np.ndarray, dx: float = 1.0) -> float:
    """``C(G) = max_D V(G, D) = V(G, D*)``, computed from D* directly (no JSD involved).

    ``1 - D*`` is evaluated as ``p_g / (p_data + p_g)`` so it does not round to 0 where
    ``p_data >> p_g``.
    """
    p, q = _densities(p_data, p_g)
    total = p + q
    one_minus = np.divide(q, total, out=np.full_like(q, 0.5), where=total > 0)
    return _expect_log(p, optimal_discriminator(p, q), dx) + _expect_log(q, one_minus, dx)


# --------------------------------------------------------------------------------------------
# 2-D ring of Gaussians and mode coverage
# --------------------------------------------------------------------------------------------


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> np.ndarray:
    """The ``(n_modes, 2)`` centres spaced evenly on a circle of ``radius``."""
    if n_modes < 1 or radius <= 0:
        raise ValueError(f"need n_modes >= 1 and radius > 0, got {n_modes}, {radius}.")
    angles = 2 * np.pi * np.arange(n_modes) / n_modes
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def sample_ring(
    n: int,
    n_modes: int = 8,
    radius: float = 2.0,
    std: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` points from an equal-weight mixture of ``n_modes`` Gaussians (``std``) on a ring."""
    centres = torch.as_tensor(ring_centres(n_modes, radius), dtype=torch.float32)
    modes = torch.randint(n_modes, (n,), generator=generator)
    return centres[modes] + std * torch.randn(n, 2, generator=generator)


@dataclass
class ModeCoverage:
    """Mode coverage of 2-D samples on a mixture with known centres."""

    modes_covered: int
    high_quality_rate: float  # share of samples within ``n_std`` stds of their nearest centre
    counts: np.ndarray  # high-quality samples per mode


def mode_coverage(
    samples: np.ndarray | torch.Tensor,
    centres: np.ndarray,
    std: float,
    n_std: float = 3.0,
    min_share: float = 0.1,
) -> ModeCoverage:
    """Metz et al. (2017)-style coverage: high-quality = within ``n_std * std`` of a centre.

    A mode counts as covered when it holds at least ``min_share`` of its fair share of the
    samples (``min_share * n / n_modes`` high-quality samples, and at least one), so a few
    stray points do not count as covering it.
    """
    x = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples,
                   dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != centres.shape[1] or len(x) == 0:
        raise ValueError(f"samples must be (n, {centres.shape[1]}) with n >= 1, got {x.shape}.")
    distances = np.linalg.norm(x[:, None, :] - centres[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    good = distances[np.arange(len(x)), nearest] <= n_std * std
    counts = np.bincount(nearest[good], minlength=len(centres))
    threshold = max(1.0, min_share * len(x) / len(centres))
    return ModeCoverage(int((counts >= threshold).sum()), float(good.mean()), counts)


# --------------------------------------------------------------------------------------------
# Evaluation: Parzen windows and a classifier-based diversity check
# --------------------------------------------------------------------------------------------


def parzen_log_likelihood(
    samples: torch.Tensor, points: torch.Tensor, sigma: float, chunk: int = 512
) -> torch.Tensor:
    """Per-point log-likelihood under a Gaussian Parzen window fitted to ``samples``.

    ``log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log n - (d/2) log(2 pi sigma^2)``,
    the estimate the paper reports (Section 5, Table 1), in nats.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}.")
    samples, points = samples.double(), points.double()
    n, d = samples.shape
    const = math.log(n) + 0.5 * d * math.log(2 * math.pi * sigma**2)
    out = [
        torch.logsumexp(-torch.cdist(block, samples).pow(2) / (2 * sigma**2), dim=1) - const
        for block in points.split(chunk)
    ]
    return torch.cat(out)


def choose_parzen_sigma(
    samples: torch.Tensor, validation: torch.Tensor, sigmas: Sequence[float]
) -> tuple[float, list[float]]:
    """The ``sigma`` with the best mean validation log-likelihood (the paper's cross-validation)."""
    if len(sigmas) == 0:
        raise ValueError("sigmas must not be empty.")
    scores = [float(parzen_log_likelihood(samples, validation, s).mean()) for s in sigmas]
    return float(sigmas[int(np.argmax(scores))]), scores


def classifier_diversity(probs: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Diversity of generated samples seen through a classifier's ``(n, C)`` class probabilities.

    ``classes_seen``: classes predicted (argmax) for at least 1% of the samples;
    ``class_entropy``: entropy (nats) of the predicted-class histogram, log C when balanced;
    ``largest_class_share``: share of the most predicted class (1/C when balanced);
    ``classifier_score``: ``exp(E_x KL(p(y|x) || p(y)))`` — the Inception Score's formula with
    this classifier; between 1 (one class, or unsure) and C (confident and balanced).
    """
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs,
                   dtype=np.float64)
    if p.ndim != 2 or len(p) == 0 or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be an (n, C) array whose rows sum to 1.")
    n, c = p.shape
    share = np.bincount(p.argmax(1), minlength=c) / n
    nz = share[share > 0]
    marginal = p.mean(0)
    eps = 1e-12
    kl = np.sum(p * (np.log(p + eps) - np.log(marginal + eps)), axis=1)
    return {
        "classes_seen": int((share >= 0.01).sum()),
        "class_entropy": float(abs((nz * np.log(nz)).sum())),
        "largest_class_share": float(share.max()),
        "classifier_score": float(np.exp(kl.mean())),
    }


def tile_images(images: np.ndarray | torch.Tensor, ncols: int, side: int = 8, pad: int = 1) -> np.ndarray:
    """Arrange flat ``(n, side*side)`` images into one 2-D array, ``ncols`` per row, for imshow."""
    x = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    if x.ndim != 2 or x.shape[1] != side * side or ncols < 1:
        raise ValueError(f"images must be (n, {side * side}) and ncols >= 1, got {x.shape}, {ncols}.")
    nrows = -(-len(x) // ncols)
    step = side + pad
    canvas = np.full((nrows * step - pad, ncols * step - pad), np.nan)
    for i, image in enumerate(x):
        r, c = divmod(i, ncols)
        canvas[r * step:r * step + side, c * step:c * step + side] = image.reshape(side, side)
    return canvas
