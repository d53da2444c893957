"""Cart-pole balancing, vectorised in torch: thousands of episodes in one batch.

The equations of motion and constants are those of Barto, Sutton & Anderson (1983), as in
Gym/Gymnasium's ``CartPole-v1`` (Florian, 2007, corrected; explicit Euler, 0.02 s steps): a
pole of half-length 0.5 m and mass 0.1 kg on a 1 kg cart, pushed left or right with 10 N.
An episode ends when the pole leans more than 12 degrees or the cart leaves [-2.4, 2.4] m; the
return is the number of steps survived, counting the failing one, at most ``horizon`` (500
in ``CartPole-v1``, which counts as solved at a mean return of 475).

Policies are small fixed-topology networks ``4 -> hidden (tanh) -> 1`` whose weights are one
flat vector (``hidden = 0``: a linear policy); the action is "push right" when the output is
positive. :class:`CartPoleFitness` evaluates a whole population of such vectors at once — the
fitness of neuroevolution and evolution strategies in notebook 08. The return is a step
count of a bang-bang controller: piecewise constant in the weights, so its gradient is zero
almost everywhere and gradient descent has nothing to follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
FORCE = 10.0
TAU = 0.02
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
OBS_DIM = 4


def physics_step(state: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
    """One Euler step of the cart-pole; ``state[..., :] = (x, x_dot, theta, theta_dot)``."""
    x, x_dot, theta, theta_dot = state.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (
        HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS)
    )
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    return torch.stack(
        [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ],
        dim=-1,
    )


def failed(state: torch.Tensor) -> torch.Tensor:
    """Whether the pole has fallen (|theta| > 12 degrees) or the cart left the track."""
    return (state[..., 0].abs() > X_LIMIT) | (state[..., 2].abs() > THETA_LIMIT)


def n_params(hidden: int) -> int:
    """Length of the flat weight vector of a ``4 -> hidden -> 1`` policy (``hidden=0``: linear)."""
    if hidden < 0:
        raise ValueError(f"hidden must be >= 0, got {hidden}.")
    return OBS_DIM + 1 if hidden == 0 else OBS_DIM * hidden + hidden + hidden + 1


def policy_output(params: torch.Tensor, obs: torch.Tensor, hidden: int) -> torch.Tensor:
    """Outputs of P policies on their observations: params (P, n_params), obs (P, E, 4) -> (P, E)."""
    if params.shape[-1] != n_params(hidden):
        raise ValueError(
            f"hidden={hidden} needs {n_params(hidden)} parameters, got {params.shape[-1]}."
        )
    if hidden == 0:
        weight, bias = params[:, :OBS_DIM], params[:, OBS_DIM:]
        return torch.baddbmm(bias[:, :, None], obs, weight[:, :, None]).squeeze(-1)
    pop = params.shape[0]
    w1_end = OBS_DIM * hidden
    w1 = params[:, :w1_end].reshape(pop, hidden, OBS_DIM)
    b1 = params[:, w1_end : w1_end + hidden]
    w2 = params[:, w1_end + hidden : w1_end + 2 * hidden]
    b2 = params[:, -1:]
    h = torch.tanh(torch.baddbmm(b1[:, None, :], obs, w1.transpose(1, 2)))
    return torch.baddbmm(b2[:, :, None], h, w2[:, :, None]).squeeze(-1)


def initial_states(
    episodes: int, seed: int, scale: float = 0.05, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``episodes`` start states, each component uniform in [-scale, scale] (Gym: 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    return (scale * (2 * torch.rand(episodes, OBS_DIM, generator=generator) - 1)).to(device)


def episode_returns(
    params: torch.Tensor, hidden: int, starts: torch.Tensor, horizon: int = 500
) -> torch.Tensor:
    """Steps survived by each of P policies from each start state: (P, n_params) -> (P, E).

    Every policy is run from the same ``starts`` (common random numbers: the comparison between
    individuals is not blurred by luck of the draw). Finished episodes keep being simulated but
    stop counting; the loop ends early once every episode has failed.
    """
    pop, episodes = params.shape[0], starts.shape[0]
    state = starts.to(params.device, params.dtype).expand(pop, episodes, OBS_DIM).clone()
    alive = torch.ones(pop, episodes, dtype=torch.bool, device=params.device)
    returns = torch.zeros(pop, episodes, device=params.device)
    for _ in range(horizon):
        push = policy_output(params, state, hidden) > 0
        force = torch.where(push, FORCE, -FORCE)
        state = physics_step(state, force)
        returns += alive
        alive &= ~failed(state)
        if not alive.any():
            break
    return returns


@dataclass(frozen=True)
class CartPoleFitness:
    """Mean return over ``episodes`` fixed start states (seeded by ``seed``, each component
    uniform in [-start_scale, start_scale]): a deterministic, picklable fitness function for a
    population of flat policy vectors.

    ``vectorised=False`` runs the individuals one after another, as a simulator that takes one
    policy at a time would (e.g. one Gym environment per process); the result is the same.
    """

    hidden: int = 4
    episodes: int = 5
    horizon: int = 500
    seed: int = 0
    start_scale: float = 0.05
    vectorised: bool = True

    @property
    def dim(self) -> int:
        """The genome length (number of policy parameters)."""
        return n_params(self.hidden)

    def __call__(self, population: torch.Tensor) -> torch.Tensor:
        starts = initial_states(self.episodes, self.seed, self.start_scale, population.device)
        if self.vectorised:
            return episode_returns(population, self.hidden, starts, self.horizon).mean(dim=1)
        return torch.cat(
            [
                episode_returns(individual[None], self.hidden, starts, self.horizon)
                for individual in population
            ]
        ).mean(dim=1)
