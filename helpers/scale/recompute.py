"""Activation recomputation (gradient checkpointing) on a small GPT-style Transformer.

The model is written out so that what autograd saves is easy to count against the activation
formula of Korthikanti et al. (2022): a pre-LN block with an explicit attention core
``softmax(mask(QK^T / sqrt(d))) V`` (no fused kernel, no dropout). ``recompute`` chooses what is
kept for the backward pass:

- ``"none"``: everything the operations save (the plain model);
- ``"full"``: only each block's input; the block's forward runs again during backward
  (``torch.utils.checkpoint`` around every block);
- ``"selective"``: everything except the attention core, the part whose saved tensors grow
  as ``s^2`` but which costs few FLOPs (Korthikanti et al.'s selective recomputation).

:func:`gradients_and_activations` runs one forward and backward and returns the loss, the
gradients and the bytes saved for backward (counted with the course's
:class:`helpers.precision.memory.SavedTensorMeter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from helpers.precision.memory import SavedTensorMeter

RECOMPUTE_MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a :class:`TransformerLM`: ``width`` h, ``heads`` a, ``n_blocks`` L."""

    vocab: int = 64
    width: int = 64
    heads: int = 4
    n_blocks: int = 2
    max_len: int = 64
    seed: int = 0

    def build(self, recompute: str = "none") -> TransformerLM:
        torch.manual_seed(self.seed)
        return TransformerLM(self, recompute)


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of ``(batch, heads, seq, head_dim)`` tensors, written out.

    Autograd saves ``q``, ``k`` (for ``QK^T``), the causal mask, the softmax output (``a s^2 b``
    values) and ``v``.
    """
    seq = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    future = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return weights @ v


class Block(nn.Module):
    """Pre-LN Transformer block: ``x + proj(attn(ln1 x))``, then ``x + fc2(gelu(fc1(ln2 x)))``."""

    def __init__(self, width: int, heads: int, selective: bool = False) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}.")
        self.heads, self.selective = heads, selective
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = (
            self.qkv(self.ln1(x)).view(b, s, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        )
        if self.selective:  # keep q, k, v; recompute the s^2 part during backward
            a = checkpoint(attention_core, q, k, v, use_reentrant=False)
        else:
            a = attention_core(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, h))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TransformerLM(nn.Module):
    """Token + position embeddings -> ``n_blocks`` blocks -> LayerNorm -> next-token logits."""

    def __init__(self, spec: ModelSpec, recompute: str = "none") -> None:
        super().__init__()
        if recompute not in RECOMPUTE_MODES:
            raise ValueError(f"recompute must be one of {RECOMPUTE_MODES}, got {recompute!r}.")
        self.recompute = recompute
        self.embed = nn.Embedding(spec.vocab, spec.width)
        self.position = nn.Parameter(0.02 * torch.randn(spec.max_len, spec.width))
        self.blocks = nn.ModuleList(
            Block(spec.width, spec.heads, recompute == "selective") for _ in range(spec.n_blocks)
        )
        self.norm = nn.LayerNorm(spec.width)
        self.head = nn.Linear(spec.width, spec.vocab)

    def body(self, h: torch.Tensor) -> torch.Tensor:
        """The blocks alone, on hidden states ``(batch, seq, width)``."""
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=False) if self.recompute == "full" else block(h)
        return h

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.body(h)))


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of ``tokens`` ``(batch, seq)``."""
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def random_tokens(batch: int, seq: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """A seeded ``(batch, seq)`` tensor of token ids (the same on every rank)."""
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def gradients_and_activations(
    spec: ModelSpec, recompute: str, tokens: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor], int]:
    """One forward + backward: ``(loss, gradients by name, bytes saved for backward)``.

    The bytes are those the meter saw during the forward (parameters excluded): what the model
    keeps between its forward and its backward.
    """
    model = spec.build(recompute).to(tokens.device)
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        loss = lm_loss(model, tokens)
    saved = meter.bytes
    loss.backward()
    grads = {
        name: cast(torch.Tensor, p.grad).detach().clone()  # backward set every .grad
        for name, p in model.named_parameters()
    }
    return loss.item(), grads, saved


def body_activation_bytes(model: TransformerLM, hidden: torch.Tensor) -> int:
    """Bytes the blocks alone save for backward on ``hidden`` ``(batch, seq, width)``."""
    hidden = hidden.detach().requires_grad_()
    with SavedTensorMeter(exclude=model.parameters()) as meter:
        out = model.body(hidden)
    del out
    return meter.bytes


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor
) -> float:
    """One optimizer step on ``tokens``; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = lm_loss(model, tokens)
    loss.backward()
    optimizer.step()
    return loss.item()
