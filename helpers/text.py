"""Character-level encoding of short texts (surnames) into padded index tensors."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

PAD, UNK = 0, 1


@dataclass(frozen=True)
class CharVocab:
    """Characters seen in training texts; index 0 is padding, 1 is unknown."""

    chars: tuple[str, ...]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharVocab:
        """Build the vocabulary from ``texts`` (sorted, so it does not depend on their order)."""
        return cls(tuple(sorted({ch for text in texts for ch in text})))

    def __len__(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str) -> list[int]:
        """Indices of the characters of ``text`` (unknown characters map to ``UNK``)."""
        index = {ch: i + 2 for i, ch in enumerate(self.chars)}
        return [index.get(ch, UNK) for ch in text]


def encode_padded(
    texts: Sequence[str], vocab: CharVocab, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts as a ``(N, max_len)`` LongTensor padded with ``PAD`` (truncated), and their lengths."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}.")
    index = {ch: i + 2 for i, ch in enumerate(vocab.chars)}
    tokens = np.full((len(texts), max_len), PAD, dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(ch, UNK) for ch in text[:max_len]]
        if not ids:
            raise ValueError(f"Text {row} is empty; every sequence needs at least one character.")
        tokens[row, : len(ids)] = ids
        lengths[row] = len(ids)
    return torch.from_numpy(tokens), torch.from_numpy(lengths)
