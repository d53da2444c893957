"""Variable-length batches: a padding ``collate_fn``, a length-bucketed batch sampler, padding stats.

- ``SequenceDataset``: variable-length token sequences (1-D LongTensors) with their labels.
- ``pad_collate``: the ``collate_fn`` that zero-pads a list of ``(sequence, label)`` pairs to
  the longest sequence *of the batch* (not of the data set).
- ``BucketBatchSampler``: groups samples whose lengths fall in the same bucket, so a batch pads
  to nearly its own length; every sample appears exactly once per epoch, samples are shuffled
  inside each bucket and the batches are shuffled across buckets (seeded by a generator).
- ``quantile_boundaries``: bucket edges that split the lengths into equally populated buckets.
- ``padding_tokens`` / ``padding_fraction``: the padding in a list of batches (count, share).
- ``sequence_loader``: a DataLoader of padded batches, random (one bucket) or bucketed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from helpers.data import PAD, CharVocab

Lengths = Sequence[int] | np.ndarray | torch.Tensor


def _as_lengths(lengths: Lengths) -> np.ndarray:
    array = np.asarray(lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError("lengths must be a non-empty 1-D sequence of integers.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"lengths must be integers, got dtype {array.dtype}.")
    if array.min() < 1:
        raise ValueError(f"every length must be >= 1, got a minimum of {array.min()}.")
    return array.astype(np.int64)


class SequenceDataset(Dataset):
    """Variable-length token sequences (1-D LongTensors, no padding) and their integer labels."""

    def __init__(self, sequences: Sequence[torch.Tensor], labels: Sequence[int] | torch.Tensor):
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels.")
        if any(seq.ndim != 1 or len(seq) == 0 for seq in sequences):
            raise ValueError("every sequence must be a non-empty 1-D tensor.")
        self.sequences = list(sequences)
        if isinstance(labels, torch.Tensor):
            self.labels = labels.detach().to(torch.long).cpu().clone()
        else:
            self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], labels: Sequence[int], vocab: CharVocab
    ) -> SequenceDataset:
        """Encode ``texts`` character by character with ``vocab`` (no padding, no truncation)."""
        return cls([torch.tensor(vocab.encode(text), dtype=torch.long) for text in texts], labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> SequenceDataset:
        """A new dataset holding the samples at ``indices`` (in that order)."""
        return SequenceDataset(
            [self.sequences[int(i)] for i in indices], self.labels[np.asarray(indices)]
        )

    @property
    def lengths(self) -> np.ndarray:
        """The length of every sequence, as an int64 array."""
        return np.array([len(seq) for seq in self.sequences], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sequences[index], self.labels[index]


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor | int]], padding_value: int = PAD
) -> tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn``: pad the batch's sequences to its longest one → ``(B, L_max)``, labels ``(B,)``.

    Use ``functools.partial(pad_collate, padding_value=...)`` for another padding index.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate got an empty batch.")
    sequences, labels = zip(*batch, strict=True)
    padded = nn.utils.rnn.pad_sequence(
        list(sequences), batch_first=True, padding_value=padding_value
    )
    return padded, torch.as_tensor(labels, dtype=torch.long)


def quantile_boundaries(lengths: Lengths, n_buckets: int) -> list[int]:
    """Upper edges of (at most) ``n_buckets`` buckets holding about equally many samples.

    Bucket ``k`` holds the lengths in ``(edges[k-1], edges[k]]``; lengths above the last edge
    form the last bucket. Ties collapse edges, so fewer buckets may result.
    """
    array = _as_lengths(lengths)
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}.")
    quantiles = np.quantile(array, np.arange(1, n_buckets) / n_buckets, method="higher")
    return sorted({int(q) for q in quantiles if q < array.max()})


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose lengths share a bucket; pass it as ``DataLoader(batch_sampler=...)``.

    ``boundaries`` are the buckets' upper edges (sorted, increasing): bucket ``k`` holds lengths in
    ``(boundaries[k-1], boundaries[k]]`` and lengths above the last edge form one more bucket.
    ``None`` gives one bucket per distinct length (no padding at all, but more partial batches).

    Each epoch: the indices of every bucket are shuffled and cut into batches of ``batch_size``
    (a bucket's last batch may be smaller, or is dropped with ``drop_last``), then all batches
    are shuffled together, so consecutive steps see different lengths. ``generator`` makes the
    order reproducible; successive epochs draw new orders from it. ``shuffle=False`` yields the
    buckets in order of length, each in index order.
    """

    def __init__(
        self,
        lengths: Lengths,
        batch_size: int,
        boundaries: Sequence[int] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.lengths = _as_lengths(lengths)
        if boundaries is None:
            edges = np.unique(self.lengths)[:-1]
        else:
            edges = np.asarray(list(boundaries), dtype=np.int64)
            if len(edges) and np.any(np.diff(edges) <= 0):
                raise ValueError(f"boundaries must be strictly increasing, got {list(boundaries)}.")
        self.boundaries = [int(e) for e in edges]
        self.bucket_of = np.searchsorted(edges, self.lengths, side="left")
        self.buckets = [np.flatnonzero(self.bucket_of == b) for b in range(len(edges) + 1)]
        self.buckets = [b for b in self.buckets if len(b)]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator

    def __len__(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return sum(rounding(len(bucket) / self.batch_size) for bucket in self.buckets)

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if self.shuffle and generator is None:
            generator = torch.Generator()
            generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        batches: list[list[int]] = []
        for bucket in self.buckets:
            if self.shuffle:
                bucket = bucket[torch.randperm(len(bucket), generator=generator).numpy()]
            for start in range(0, len(bucket), self.batch_size):
                batch = bucket[start : start + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch.tolist())
        if self.shuffle:
            order = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in order]
        yield from batches


def _token_counts(lengths: Lengths, batches: Iterable[Sequence[int]]) -> tuple[int, int]:
    """(real tokens, slots in the padded tensors) summed over ``batches``."""
    array = _as_lengths(lengths)
    real = slots = 0
    for batch in batches:
        batch_lengths = array[np.asarray(batch, dtype=np.int64)]
        if len(batch_lengths) == 0:
            raise ValueError("got an empty batch.")
        real += int(batch_lengths.sum())
        slots += len(batch_lengths) * int(batch_lengths.max())
    if slots == 0:
        raise ValueError("got no batches.")
    return real, slots


def padding_tokens(lengths: Lengths, batches: Iterable[Sequence[int]]) -> int:
    """Number of padding tokens when each batch is padded to its longest sequence."""
    real, slots = _token_counts(lengths, batches)
    return slots - real


def padding_fraction(lengths: Lengths, batches: Iterable[Sequence[int]]) -> float:
    """Share of padding in the padded batch tensors: ``1 - Σ len / Σ (batch size × longest)``."""
    real, slots = _token_counts(lengths, batches)
    return 1.0 - real / slots


def sequence_loader(
    dataset: SequenceDataset,
    batch_size: int,
    n_buckets: int | None = 8,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader of zero-padded ``(tokens, labels)`` batches over ``dataset``.

    ``n_buckets=1`` is plain random batching (one bucket: shuffle, cut, shuffle the batches);
    ``n_buckets=k`` uses ``k`` equally populated length buckets (``quantile_boundaries``);
    ``None`` one bucket per distinct length. The order depends on ``seed`` alone.
    """
    lengths = dataset.lengths
    boundaries = None if n_buckets is None else quantile_boundaries(lengths, n_buckets)
    sampler = BucketBatchSampler(
        lengths,
        batch_size,
        boundaries,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate)
