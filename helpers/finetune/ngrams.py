"""Character n-gram features of short texts (surnames): a fixed vocabulary and presence vectors.

A bag of character n-grams (with ``^``/``$`` marking the start and end of the text) is the
classic cheap representation of names and words: ``"Kim"`` → ``^, K, i, m, $, ^K, Ki, im, m$,
^Ki, Kim, im$``. The vocabulary is fixed once from training texts, like a tokenizer that ships
with a pretrained model; n-grams outside it are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

START, END = "^", "$"


def char_ngrams(text: str, orders: Sequence[int] = (1, 2, 3)) -> list[str]:
    """All character n-grams of ``^text$`` for each n in ``orders`` (with repeats, in order)."""
    if not orders or min(orders) < 1:
        raise ValueError(f"orders must be positive n-gram lengths, got {tuple(orders)}.")
    marked = f"{START}{text}{END}"
    return [marked[i : i + n] for n in orders for i in range(len(marked) - n + 1)]


@dataclass(frozen=True)
class NgramVocab:
    """The ``max_size`` most frequent n-grams of some texts; index = position in ``grams``."""

    grams: tuple[str, ...]
    orders: tuple[int, ...] = (1, 2, 3)

    @classmethod
    def from_texts(
        cls, texts: Iterable[str], max_size: int, orders: Sequence[int] = (1, 2, 3)
    ) -> NgramVocab:
        """Count in how many texts each n-gram occurs; keep the ``max_size`` most frequent.

        Ties are broken alphabetically, so the vocabulary depends on the texts alone, not on
        their order.
        """
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}.")
        counts = Counter(gram for text in texts for gram in set(char_ngrams(text, orders)))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(tuple(gram for gram, _ in ranked[:max_size]), tuple(orders))

    def __len__(self) -> int:
        return len(self.grams)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """A ``(len(texts), len(self))`` float32 tensor: 1 where the text contains the n-gram."""
        index = {gram: i for i, gram in enumerate(self.grams)}
        features = np.zeros((len(texts), len(self.grams)), dtype=np.float32)
        for row, text in enumerate(texts):
            columns = [index[g] for g in char_ngrams(text, self.orders) if g in index]
            features[row, columns] = 1.0
        return torch.from_numpy(features)
