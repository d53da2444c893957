"""helpers.scale.comm_model: the α–β fit recovers α and B from synthetic ring timings."""

from __future__ import annotations

import pytest
import torch

from helpers.scale import comm_model as cm


@pytest.mark.parametrize("world", [2, 4, 8])
def test_fit_recovers_alpha_and_bandwidth(world):
    truth = cm.AlphaBeta(alpha_s=30e-6, bandwidth=2e9)
    sizes = [2.0**k for k in range(10, 25)]
    noise = torch.Generator().manual_seed(world)
    times = [
        cm.predict_allreduce_s(n, world, truth)
        * (1 + 0.01 * torch.randn(1, generator=noise).item())
        for n in sizes
    ]
    fit = cm.fit_alpha_beta(sizes, times, world)
    assert fit.bandwidth == pytest.approx(truth.bandwidth, rel=0.03)
    assert fit.alpha_s == pytest.approx(truth.alpha_s, rel=0.2)
    exact = cm.fit_alpha_beta(
        sizes, [cm.predict_allreduce_s(n, world, truth) for n in sizes], world
    )
    assert exact.alpha_s == pytest.approx(truth.alpha_s, rel=1e-6)
    assert exact.bandwidth == pytest.approx(truth.bandwidth, rel=1e-6)


def test_ring_volume_and_bad_input():
    assert cm.ring_bytes_per_rank(100.0, 2) == 100.0
    assert cm.ring_bytes_per_rank(100.0, 8) == 175.0
    assert cm.predict_allreduce_s(1e9, 1, cm.AlphaBeta(1e-5, 1e9)) == 0.0
    with pytest.raises(ValueError, match="at least two"):
        cm.fit_alpha_beta([1.0], [1.0], 2)
    with pytest.raises(ValueError, match="do not grow"):
        cm.fit_alpha_beta([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2)
