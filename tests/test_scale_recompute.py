"""helpers.scale.recompute: full and selective recomputation give the plain model's gradients
and keep less; the saved bytes of full recomputation are the blocks' inputs."""

from __future__ import annotations

import pytest

from helpers.scale import anatomy as an
from helpers.scale import recompute as rc


def test_recomputation_keeps_gradients_and_saves_memory(one_torch_thread):
    spec = rc.ModelSpec(vocab=32, width=32, heads=4, n_blocks=4, max_len=33)
    tokens = rc.random_tokens(2, 33, spec.vocab)
    loss, grads, saved = rc.gradients_and_activations(spec, "none", tokens)
    for mode in ("selective", "full"):
        loss_m, grads_m, saved_m = rc.gradients_and_activations(spec, mode, tokens)
        assert loss_m == loss
        assert max((grads_m[k] - grads[k]).abs().max().item() for k in grads) <= 1e-6, mode
        assert saved_m < saved, mode


def test_full_recompute_keeps_only_block_inputs(one_torch_thread):
    spec = rc.ModelSpec(vocab=32, width=32, heads=4, n_blocks=5, max_len=16)
    hidden = rc.random_tokens(3, 16, 32).float().unsqueeze(-1).expand(3, 16, 32).contiguous()
    plain = rc.body_activation_bytes(spec.build("none"), hidden)
    full = rc.body_activation_bytes(spec.build("full"), hidden)
    assert full == an.full_recompute_activation_bytes(16, 3, 32, 5, value_bytes=4)
    assert plain == 5 * an.block_activation_bytes(
        16, 3, 32, 4, value_bytes=4, dropout=False, small_terms=True
    )


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="recompute must be one of"):
        rc.ModelSpec().build("sometimes")
