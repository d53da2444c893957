"""helpers.evolution.cartpole against Gymnasium's CartPoleEnv (the reference implementation),
symmetry and known policies.

Gymnasium (``gymnasium==1.4.0``) is a test-only dependency: the course's simulator is
vectorised torch, Gymnasium's is one NumPy environment stepped from Python.
"""

import math

import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
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


def gym_env(state):
    """A Gymnasium cart-pole set to ``state`` (x, x_dot, theta, theta_dot), float64."""
    env = CartPoleEnv()
    env.reset(seed=0)
    env.state = np.array(state, dtype=np.float64)
    return env


def test_physics_step_and_failure_match_gymnasium_along_whole_episodes():
    generator = torch.Generator().manual_seed(0)
    starts = (torch.rand(40, 4, generator=generator, dtype=torch.float64) - 0.5) * 0.4
    for start in starts:
        env, state = gym_env(start.tolist()), start[None].clone()
        actions = torch.randint(0, 2, (500,), generator=generator).tolist()
        for step, action in enumerate(actions):
            _, reward, terminated, _, _ = env.step(action)
            state = physics_step(
                state, torch.tensor([10.0 if action == 1 else -10.0], dtype=torch.float64)
            )
            np.testing.assert_allclose(state[0].numpy(), env.state, rtol=0, atol=1e-12)
            assert bool(failed(state)[0]) == terminated, f"termination differs at step {step}"
            if terminated:
                break
        assert terminated, "random pushes should topple the pole within 500 steps"


def test_episode_returns_equal_gymnasium_returns_for_the_same_policy():
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(6, n_params(0), generator=generator, dtype=torch.float64)
    params[0] = torch.tensor([0.0, 0.0, 1.0, 0.5, 0.0], dtype=torch.float64)  # a balancing policy
    starts = initial_states(3, seed=2).double()
    ours = episode_returns(params, 0, starts, horizon=200)
    for i, weights in enumerate(params.numpy()):
        for j, start in enumerate(starts.numpy()):
            env, observation, total = gym_env(start), start, 0
            for _ in range(200):
                action = int(observation @ weights[:4] + weights[4] > 0)
                observation, reward, terminated, _, _ = env.step(action)
                total += reward  # Gymnasium pays 1 per step, the failing one included
                if terminated:
                    break
            assert ours[i, j].item() == total, (i, j)
    assert ours[0].eq(200).all() and ours.min() < 200  # the controls work and a random one fails


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
    states = torch.tensor(
        [[0, 0, 0, 0], [2.41, 0, 0, 0], [0, 0, -limit - 1e-4, 0], [2.39, 5, limit - 1e-4, 5]]
    )
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
    assert torch.allclose(
        linear, (obs @ params[:, :4, None]).squeeze(-1) + params[:, 4:5], atol=1e-6
    )
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
