"""A small GRU encoder–decoder, a synthetic reversal task and teacher-forcing schedules.

- ``reversal_data``: random digit strings and their reversals (+ EOS), padded: the classic toy
  task where a sequence-to-sequence model must carry the whole input in its state.
- ``Seq2Seq``: embedding → GRU encoder (packed) → GRU-cell decoder, one token at a time. At each
  decoding step every sequence independently takes the true previous token with probability
  ``teacher_forcing`` and its own previous prediction otherwise (Bengio et al., 2015).
- ``teacher_forcing_schedule``: constant, linear, exponential and inverse-sigmoid decays.
- ``train_seq2seq`` / ``decode_accuracy``: a fixed number of Adam steps; exact-match and token
  accuracy measured by **free-running** greedy decoding (no target given to the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL = 3
Schedule = Callable[[int], float]


def reversal_data(
    n: int, min_len: int, max_len: int, n_symbols: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random strings of ``n_symbols`` digits, lengths uniform in ``[min_len, max_len]``.

    Returns ``src`` ``(n, max_len)`` and ``tgt`` ``(n, max_len + 1)``: the reversed string
    followed by ``EOS``, both padded with ``PAD``. Digit ``d`` is token ``FIRST_SYMBOL + d``.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}.")
    if n < 1 or n_symbols < 2:
        raise ValueError(f"need n >= 1 and n_symbols >= 2, got {n}, {n_symbols}.")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    src = np.full((n, max_len), PAD, dtype=np.int64)
    tgt = np.full((n, max_len + 1), PAD, dtype=np.int64)
    for row, length in enumerate(lengths):
        digits = FIRST_SYMBOL + rng.integers(0, n_symbols, size=length)
        src[row, :length] = digits
        tgt[row, :length] = digits[::-1]
        tgt[row, length] = EOS
    return torch.from_numpy(src), torch.from_numpy(tgt)


class Seq2Seq(nn.Module):
    """GRU encoder–decoder without attention; the encoder's last state starts the decoder."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.encoder = nn.GRU(embed_dim, hidden, batch_first=True)
        self.decoder = nn.GRUCell(embed_dim, hidden)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """The encoder's hidden state after each sequence's last real token: ``(B, hidden)``."""
        lengths = (src != PAD).sum(dim=1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        return self.encoder(packed)[1][-1]

    def forward(
        self,
        src: torch.Tensor,
        tgt: torch.Tensor | None = None,
        teacher_forcing: float = 1.0,
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab)``; ``T = tgt.shape[1]``, or ``steps`` when decoding freely.

        Step ``t`` is fed BOS (t = 0), else ``tgt[:, t-1]`` with probability ``teacher_forcing``
        (drawn per sequence and step, from ``generator``) or the model's previous argmax.
        ``tgt=None`` (or ``teacher_forcing=0``) is free-running greedy decoding.
        """
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {teacher_forcing}.")
        if tgt is not None:
            n_steps = tgt.shape[1]
        elif steps is not None:
            n_steps = steps
        else:
            raise ValueError("give tgt (training) or steps (free-running decoding).")
        hidden = self.encode(src)
        token = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        logits = []
        for t in range(n_steps):
            hidden = self.decoder(self.embed(token), hidden)
            step_logits = self.out(hidden)
            logits.append(step_logits)
            token = step_logits.argmax(dim=-1)
            if tgt is not None and teacher_forcing > 0.0:
                draw = torch.rand(src.shape[0], generator=generator).to(src.device)
                token = torch.where(draw < teacher_forcing, tgt[:, t], token)
        return torch.stack(logits, dim=1)


def teacher_forcing_schedule(
    name: str, total_steps: int, start: float = 1.0, end: float = 0.0, k: float | None = None
) -> Schedule:
    """The teacher-forcing ratio at each training step, by name.

    - ``constant``: ``start`` throughout;
    - ``linear``: ``start`` → ``end`` linearly over ``total_steps``;
    - ``exponential``: ``start · (end/start)^(step/total)`` (``end`` > 0 needed; 0 → 0.01);
    - ``inverse_sigmoid``: Bengio et al. (2015), ``k / (k + exp(step / k))`` rescaled to
      ``[end, start]``; ``k`` defaults to the value that puts the midpoint at half the steps.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if not (0.0 <= end <= 1.0 and 0.0 <= start <= 1.0):
        raise ValueError(f"start and end must be in [0, 1], got {start}, {end}.")

    def linear(step: int) -> float:
        return start + (end - start) * min(1.0, step / total_steps)

    def exponential(step: int) -> float:
        floor = max(end, 0.01)
        return start * (floor / start) ** min(1.0, step / total_steps)

    if k is None:  # k / (k + exp(x/k)) = 1/2 at x = k·ln k; solve k·ln k = total/2
        k = max(1.0 + 1e-9, _solve_k(total_steps / 2))

    def inverse_sigmoid(step: int) -> float:
        value = k / (k + math.exp(min(step / k, 700.0)))
        return end + (start - end) * value

    schedules: dict[str, Schedule] = {
        "constant": lambda step: start,
        "linear": linear,
        "exponential": exponential,
        "inverse_sigmoid": inverse_sigmoid,
    }
    if name not in schedules:
        raise ValueError(f"Unknown schedule {name!r}; known: {', '.join(schedules)}.")
    return schedules[name]


def _solve_k(midpoint: float) -> float:
    """The ``k > 1`` with ``k · ln k = midpoint`` (bisection)."""
    low, high = 1.0, max(2.0, midpoint)
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if mid * math.log(mid) < midpoint else (low, mid)
    return (low + high) / 2


def sequence_loss(logits: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the target's real tokens (EOS included, padding ignored)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=PAD)


def decode_accuracy(
    model: Seq2Seq, src: torch.Tensor, tgt: torch.Tensor, teacher_forcing: float = 0.0
) -> dict[str, float]:
    """Exact-match rate and per-token accuracy of greedy decoding against ``tgt``.

    ``teacher_forcing=0`` (the default) is **free-running**: the decoder is fed its own previous
    predictions, as at inference. ``teacher_forcing=1`` feeds the true previous tokens (what the
    training loss sees). A sequence is exact when every real target token, EOS included, is right.
    """
    model.eval()
    with torch.no_grad():
        if teacher_forcing > 0.0:
            logits = model(src, tgt, teacher_forcing=teacher_forcing)
        else:
            logits = model(src, steps=tgt.shape[1])
    model.train()
    real = tgt != PAD
    correct = (logits.argmax(dim=-1) == tgt) & real
    return {
        "exact_match": float((correct.sum(1) == real.sum(1)).float().mean()),
        "token_accuracy": float(correct.sum() / real.sum()),
    }


@dataclass
class Seq2SeqRun:
    """What ``train_seq2seq`` returns: per-evaluation history and the final free-running scores."""

    history: list[dict[str, float]]
    exact_match: float
    token_accuracy: float


def train_seq2seq(
    model: Seq2Seq,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    schedule: Schedule,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    eval_every: int | None = None,
    max_grad_norm: float = 1.0,
) -> Seq2SeqRun:
    """Adam for ``steps`` steps on random batches of ``train``, teacher forcing from ``schedule``.

    Every ``eval_every`` steps (and at the end) it logs the step's teacher-forcing ratio and
    training loss, the free-running exact match and token accuracy on ``test``, and the token
    accuracy with full teacher forcing (the gap between the two is the exposure-bias cost).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}.")
    device = next(model.parameters()).device
    src, tgt = (t.to(device) for t in train)
    test = cast("tuple[torch.Tensor, torch.Tensor]", tuple(t.to(device) for t in test))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    eval_every = eval_every or steps
    history: list[dict[str, float]] = []
    model.train()
    for step in range(1, steps + 1):
        ratio = schedule(step - 1)
        batch = torch.randint(len(src), (batch_size,), generator=generator).to(device)
        logits = model(src[batch], tgt[batch], teacher_forcing=ratio, generator=generator)
        loss = sequence_loss(logits, tgt[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            free = decode_accuracy(model, *test)
            forced = decode_accuracy(model, *test, teacher_forcing=1.0)
            history.append(
                {
                    "step": step,
                    "teacher_forcing": ratio,
                    "train_loss": loss.item(),
                    "exact_match": free["exact_match"],
                    "token_accuracy": free["token_accuracy"],
                    "forced_token_accuracy": forced["token_accuracy"],
                }
            )
    return Seq2SeqRun(history, history[-1]["exact_match"], history[-1]["token_accuracy"])
