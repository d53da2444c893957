"""helpers.scale.anatomy: bytes per parameter and ZeRO's table against the paper, the activation
formula against Korthikanti et al. and against the bytes autograd really saves."""

from __future__ import annotations

import pytest
import torch

from helpers.precision.memory import activation_bytes
from helpers.scale import anatomy as an
from helpers.scale.recompute import Block, ModelSpec


def test_bytes_per_parameter_recipes():
    recipes = an.PRECISION_RECIPES
    assert recipes["fp32 + Adam"].total == 16
    assert recipes["bf16/fp16 mixed + Adam"].total == 16  # ZeRO: 2 + 2 + K, K = 12
    assert recipes["bf16/fp16 mixed + Adam"].k == 12
    assert recipes["bf16 mixed + Adam + fp32 grad accumulation"].total == 20  # Ultra-Scale Playbook


def test_zero_table_matches_rajbhandari_figure_1():
    # Ψ = 7.5 B parameters, N_d = 64 GPUs, K = 12: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB
    expected = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}
    for stage, gb in expected.items():
        assert round(an.zero_model_state_bytes(7.5e9, 64, stage) / 1e9, 1) == gb
    assert an.zero_model_state_bytes(7.5e9, 1, 3) == an.zero_model_state_bytes(7.5e9, 1, 0)
    with pytest.raises(ValueError, match="stage"):
        an.zero_model_state_bytes(1e9, 8, 4)
    assert [an.zero_communication_volume(s) for s in an.ZERO_STAGES] == [2.0, 2.0, 2.0, 3.0]


def test_activation_formula_is_korthikanti_with_16_bit_and_dropout():
    for s, b, h, a in [(2048, 1, 4096, 32), (512, 4, 1024, 16)]:
        paper = s * b * h * (34 + 5 * a * s / h)
        assert an.block_activation_bytes(s, b, h, a) == pytest.approx(paper)


@pytest.mark.parametrize("shape", [(1, 16, 32, 4), (2, 16, 32, 4), (1, 32, 32, 4), (1, 16, 64, 8)])
def test_activation_formula_equals_saved_tensor_bytes(shape, one_torch_thread):
    b, s, h, a = shape
    torch.manual_seed(0)
    block = Block(h, a)
    x = torch.randn(b, s, h, requires_grad=True)
    measured = activation_bytes(block, x)
    assert measured == an.block_activation_bytes(
        s, b, h, a, value_bytes=4, dropout=False, small_terms=True
    )


def test_counted_model_states_are_exact(one_torch_thread):
    spec = ModelSpec(vocab=16, width=32, heads=4, n_blocks=3, max_len=8)
    model = spec.build()
    psi = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.blocks.parameters()) == 3 * an.block_parameters(32)
    assert an.parameter_bytes(model) == 4 * psi and an.gradient_bytes(model) == 0
    opt = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 8, dtype=torch.long)).sum().backward()
    opt.step()
    assert an.gradient_bytes(model) == 4 * psi
    n_tensors = len(list(model.parameters()))
    assert an.optimizer_state_bytes(opt) == 8 * psi + 4 * n_tensors  # two moments + step counters
