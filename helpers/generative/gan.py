"""Goodfellow et al. (2014), *Generative Adversarial Nets*: the networks, losses and Algorithm 1.

- networks: ``MLP`` (optionally conditioned on a class label), used for both G and D: the
  course's one MLP (``helpers.models.mlp``) plus an optional output activation and label input;
  D returns a *logit* ``a`` with ``D(x) = sigmoid(a)``, so ``log D = logsigmoid(a)`` and
  ``log(1 - D) = logsigmoid(-a)`` stay finite;
- the value function ``V(D, G)``, the discriminator loss and the two generator losses
  (``"saturating"``: minimise ``log(1 - D(G(z)))`` as in Eq. 1 and Algorithm 1;
  ``"non_saturating"``: minimise ``-log D(G(z))``, the paper's practical advice in Section 3);
- ``algorithm1_step``: Algorithm 1 plainly, k discriminator updates then one generator update,
  and ``train_gan`` that repeats it;
- ``train_discriminator`` (Proposition 1's setting) and ``train_generator_only`` (the paper's
  "Helvetica scenario": G trained against a frozen D collapses onto D's favourite points).

The theory on a grid lives in ``helpers.generative.theory``, the evaluation (mode coverage,
Parzen windows, diversity) in ``helpers.generative.evaluation``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers.models import ACTIVATIONS, choose, mlp

GENERATOR_LOSSES: tuple[str, ...] = ("saturating", "non_saturating")
OUTPUTS: dict[str, Callable[[], nn.Module]] = {
    "none": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """``helpers.models.mlp`` (``in_dim -> hidden x n_hidden -> out_dim``) with an output activation.

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
        choose(activation, ACTIVATIONS, "activation")
        make_output = choose(output, OUTPUTS, "output")
        if min(in_dim, out_dim, hidden) < 1 or n_hidden < 1 or n_classes < 0:
            raise ValueError("in_dim, out_dim, hidden and n_hidden must be >= 1, n_classes >= 0.")
        self.n_classes = n_classes
        body = mlp(
            in_dim + n_classes, out_dim, hidden=hidden, depth=n_hidden, activation=activation
        )
        self.net = nn.Sequential(*body, make_output())

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
        logits = (
            discriminator(torch.cat([x, fake]))
            if y is None
            else discriminator(torch.cat([x, fake]), torch.cat([y, y]))
        )
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
    g_opt, d_opt = (
        make_optimizer(net, optimizer, lr, betas, momentum) for net in (generator, discriminator)
    )
    history: list[dict[str, float]] = []
    for i in range(1, iterations + 1):
        stats = algorithm1_step(
            generator,
            discriminator,
            g_opt,
            d_opt,
            sample_data,
            sample_noise,
            batch_size,
            k=k,
            loss=loss,
        )
        history.append({"iteration": i, **stats.__dict__})
        if callback is not None and every and (i % every == 0 or i == iterations):
            callback(i)
    return history
