"""helpers.evolution.cartpole against a scalar transcription of the equations, symmetry and known policies."""

import math

import pytest
import torch
from torch import nn

from helpers.evolution.cartpole import (
    CartPoleFitness,
    episode_returns,
    failed,
    initial_states,
    n_params,
    physics_step,
    policy_output,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_step(x, x_dot, theta, theta_dot, force):
    """Barto, Sutton & Anderson (1983) as written in Gym's CartPoleEnv.step (Euler), in scalars."""
    gravity, masscart, masspole, length, tau = 9.8, 1.0, 0.1, 0.5, 0.02
    total_mass, polemass_length = masspole + masscart, masspole * length
    costheta, sintheta = math.cos(theta), math.sin(theta)
    temp = (force + polemass_length * theta_dot**2 * sintheta) / total_mass
    thetaacc = (gravity * sintheta - costheta * temp) / (
        length * (4.0 / 3.0 - masspole * costheta**2 / total_mass))
    xacc = temp - polemass_length * thetaacc * costheta / total_mass
    return (x + tau * x_dot, x_dot + tau * xacc, theta + tau * theta_dot, theta_dot + tau * thetaacc)


def test_physics_step_matches_the_scalar_equations():
    generator = torch.Generator().manual_seed(0)
    states = (torch.rand(50, 4, generator=generator, dtype=torch.float64) - 0.5) * 2
    forces = torch.where(torch.rand(50, generator=generator) < 0.5, 10.0, -10.0).double()
    batched = physics_step(states, forces)
    for state, force, new in zip(states.tolist(), forces.tolist(), batched.tolist(), strict=True):
        assert new == pytest.approx(reference_step(*state, force), abs=1e-12)


def test_physics_upright_rest_is_an_equilibrium_and_mirroring_is_a_symmetry():
    assert torch.equal(physics_step(torch.zeros(1, 4), torch.zeros(1)), torch.zeros(1, 4))
    state = torch.tensor([[0.1, -0.2, 0.05, 0.3]], dtype=torch.float64)
    force = torch.tensor([10.0], dtype=torch.float64)
    assert torch.allclose(physics_step(-state, -force), -physics_step(state, force), atol=1e-12)
    # a pole leaning right with no force falls further right
    leaning = physics_step(torch.tensor([[0.0, 0.0, 0.1, 0.0]]), torch.zeros(1))
    assert leaning[0, 3] > 0


def test_failure_thresholds():
    limit = 12 * 2 * math.pi / 360
    states = torch.tensor([[0, 0, 0, 0], [2.41, 0, 0, 0], [0, 0, -limit - 1e-4, 0],
                           [2.39, 5, limit - 1e-4, 5]])
    assert failed(states).tolist() == [False, True, True, False]


def test_policy_output_equals_the_same_network_built_from_nn_modules():
    hidden = 5
    params = torch.randn(3, n_params(hidden), generator=torch.Generator().manual_seed(1))
    obs = torch.randn(3, 7, 4, generator=torch.Generator().manual_seed(2))
    out = policy_output(params, obs, hidden)
    for i in range(3):
        net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.utils.vector_to_parameters(params[i], net.parameters())  # weight1, bias1, weight2, bias2
        assert torch.allclose(out[i], net(obs[i]).squeeze(-1), atol=1e-6)
    linear = policy_output(params[:, :5], obs, hidden=0)
    assert torch.allclose(linear, (obs @ params[:, :4, None]).squeeze(-1) + params[:, 4:5], atol=1e-6)
    assert n_params(0) == 5 and n_params(4) == 25
    with pytest.raises(ValueError, match="parameters"):
        policy_output(params, obs, hidden=4)


def test_known_policies():
    starts = initial_states(20, seed=0)
    assert starts.abs().max() <= 0.05
    push_right = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    assert episode_returns(push_right, 0, starts, 500).max() < 30, "a constant push falls at once"
    balance = torch.tensor([[0.0, 0.0, 1.0, 0.5, 0.0]])  # push toward the lean, damped
    assert torch.equal(episode_returns(balance, 0, starts, 500), torch.full((1, 20), 500.0))
    assert torch.equal(episode_returns(balance, 0, starts, 37), torch.full((1, 20), 37.0))


def test_vectorised_and_one_at_a_time_fitness_agree_and_are_deterministic():
    population = torch.randn(12, n_params(3), generator=torch.Generator().manual_seed(3))
    vectorised = CartPoleFitness(hidden=3, episodes=4, horizon=200)
    looped = CartPoleFitness(hidden=3, episodes=4, horizon=200, vectorised=False)
    values = vectorised(population)
    assert torch.equal(values, looped(population))
    assert torch.equal(values, vectorised(population))
    assert ((values >= 1) & (values <= 200)).all()
    assert vectorised.dim == n_params(3)


def test_wider_start_states_are_harder():
    balance = torch.tensor([[0.0, 0.0, 1.0, 0.5, 0.0]])
    easy = CartPoleFitness(hidden=0, episodes=30, start_scale=0.05)(balance)
    hard = CartPoleFitness(hidden=0, episodes=30, start_scale=0.3)(balance)
    assert hard < easy
