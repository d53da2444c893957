import math

import pytest
import torch

from helpers.sequences.seq2seq import (
    BOS,
    EOS,
    FIRST_SYMBOL,
    PAD,
    Seq2Seq,
    decode_accuracy,
    reversal_data,
    sequence_loss,
    teacher_forcing_schedule,
    train_seq2seq,
)


def test_reversal_data_targets_are_reversed_sources_with_eos():
    src, tgt = reversal_data(50, 2, 6, n_symbols=5, seed=0)
    assert src.shape == (50, 6) and tgt.shape == (50, 7)
    for row in range(50):
        length = int((src[row] != PAD).sum())
        assert 2 <= length <= 6
        digits = src[row, :length]
        assert ((digits >= FIRST_SYMBOL) & (digits < FIRST_SYMBOL + 5)).all()
        assert (src[row, length:] == PAD).all()
        assert tgt[row, :length].tolist() == digits.flip(0).tolist()
        assert tgt[row, length] == EOS and (tgt[row, length + 1 :] == PAD).all()
    again, _ = reversal_data(50, 2, 6, n_symbols=5, seed=0)
    assert torch.equal(src, again)
    with pytest.raises(ValueError):
        reversal_data(10, 4, 3, 5, seed=0)


def test_schedules_endpoints_and_shapes():
    total = 1000
    constant = teacher_forcing_schedule("constant", total, start=0.9)
    assert constant(0) == constant(999) == 0.9
    linear = teacher_forcing_schedule("linear", total, start=1.0, end=0.5)
    assert linear(0) == 1.0 and linear(500) == pytest.approx(0.75) and linear(total) == 0.5
    assert linear(2 * total) == 0.5, "held at the end value after total_steps"
    exponential = teacher_forcing_schedule("exponential", total, start=1.0, end=0.1)
    assert exponential(0) == 1.0 and exponential(total) == pytest.approx(0.1)
    assert exponential(500) == pytest.approx(math.sqrt(0.1))
    sigmoid = teacher_forcing_schedule("inverse_sigmoid", total)
    values = [sigmoid(s) for s in range(0, total + 1, 50)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False)), "monotone decay"
    assert values[0] > 0.9 and values[-1] < 0.1
    assert sigmoid(total // 2) == pytest.approx(0.5, abs=0.01), "midpoint at half the steps"
    k = 10.0  # Bengio et al. (2015): k / (k + exp(i / k))
    bengio = teacher_forcing_schedule("inverse_sigmoid", total, k=k)
    assert bengio(30) == pytest.approx(k / (k + math.exp(3.0)))
    rescaled = teacher_forcing_schedule("inverse_sigmoid", total, start=0.9, end=0.2, k=k)
    assert rescaled(30) == pytest.approx(0.2 + 0.7 * k / (k + math.exp(3.0)))
    with pytest.raises(ValueError, match="known: constant, linear"):
        teacher_forcing_schedule("cosine", total)


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    model = Seq2Seq(vocab_size=8).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, PAD, PAD]])
    with torch.no_grad():
        assert torch.allclose(model.encode(short), model.encode(padded), atol=1e-6)


def test_full_teacher_forcing_feeds_the_targets_and_zero_feeds_predictions():
    torch.manual_seed(0)
    model = Seq2Seq(vocab_size=8, embed_dim=6, hidden=10).eval()
    src, tgt = reversal_data(5, 2, 4, n_symbols=5, seed=1)
    with torch.no_grad():
        forced = model(src, tgt, teacher_forcing=1.0)
        # reference: decoder inputs are BOS then the shifted targets
        hidden = model.encode(src)
        inputs = torch.cat([torch.full((5, 1), BOS), tgt[:, :-1]], dim=1)
        reference = []
        for t in range(tgt.shape[1]):
            hidden = model.decoder(model.embed(inputs[:, t]), hidden)
            reference.append(model.out(hidden))
        assert torch.allclose(forced, torch.stack(reference, dim=1), atol=1e-6)
        free = model(src, steps=tgt.shape[1])
        assert torch.allclose(model(src, tgt, teacher_forcing=0.0), free)
        assert free.shape == (5, tgt.shape[1], 8)
    with pytest.raises(ValueError, match="teacher_forcing"):
        model(src, tgt, teacher_forcing=1.5)


def test_sequence_loss_ignores_padding():
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 3] = logits[0, 1, EOS] = 10.0
    tgt = torch.tensor([[3, EOS, PAD]])
    assert sequence_loss(logits, tgt) < 1e-3


@pytest.mark.slow
def test_training_learns_short_reversals_by_free_running_decoding(one_torch_thread):
    torch.manual_seed(0)
    train = reversal_data(400, 1, 3, n_symbols=3, seed=0)
    test = reversal_data(200, 1, 3, n_symbols=3, seed=1)
    model = Seq2Seq(vocab_size=FIRST_SYMBOL + 3, embed_dim=8, hidden=32)
    before = decode_accuracy(model, *test)
    run = train_seq2seq(
        model,
        train,
        test,
        teacher_forcing_schedule("constant", 200),
        steps=200,
        batch_size=32,
        lr=1e-2,
        seed=0,
        eval_every=100,
    )
    assert [h["step"] for h in run.history] == [100, 200]
    assert run.exact_match > 0.9 > before["exact_match"]
    assert 0.0 <= run.token_accuracy <= 1.0
    assert run.history[-1]["forced_token_accuracy"] >= run.token_accuracy - 0.05
