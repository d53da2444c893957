"""The course's one set of small reusable models: an MLP builder, a character GRU and a tiny
Transformer classifier."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from helpers.data import PAD

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
}


def choose(name: str, options: Mapping[str, Any], what: str) -> Any:
    """``options[name]``, or a ``ValueError`` that lists the valid names: the course's one
    "choose by name" rule."""
    if name not in options:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {sorted(options)}.")
    return options[name]


def mlp(
    n_inputs: int,
    n_outputs: int,
    hidden: int = 64,
    depth: int = 1,
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """The course's one MLP: ``depth`` hidden layers of ``hidden`` units, then a linear output.

    Each hidden layer is ``Linear -> activation [-> Dropout]``. ``depth=0`` is a single linear
    layer (softmax regression).
    """
    if min(n_inputs, n_outputs, hidden) < 1 or depth < 0:
        raise ValueError("mlp needs n_inputs, n_outputs, hidden >= 1 and depth >= 0.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}.")
    make_activation = choose(activation, ACTIVATIONS, "activation")
    layers: list[nn.Module] = []
    width = n_inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), make_activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


class GRUClassifier(nn.Module):
    """Embedding → GRU → the hidden state at each sequence's last real token → linear."""

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int = 32, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(dim=1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, last_hidden = self.gru(packed)
        return self.head(last_hidden[-1])


class TransformerClassifier(nn.Module):
    """Token + learned position embeddings → ``nn.TransformerEncoder`` → mean over real tokens.

    ``norm_first=False`` is the original post-LN layout of Vaswani et al. (2017), the one that
    needs learning-rate warmup; ``norm_first=True`` is the pre-LN variant (Xiong et al., 2020).
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        max_len: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.1,
        norm_first: bool = False,
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=2 * d_model,
            dropout=dropout,
            batch_first=True,
            norm_first=norm_first,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == PAD
        hidden = self.embed(tokens) + self.position[: tokens.shape[1]]
        hidden = self.encoder(hidden, src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).float()
        return self.head((hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0))
