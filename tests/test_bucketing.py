import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from helpers.data import PAD, CharVocab, encode_padded
from helpers.sequences.bucketing import (
    BucketBatchSampler,
    SequenceDataset,
    pad_collate,
    padding_fraction,
    padding_tokens,
    quantile_boundaries,
    sequence_loader,
)


def skewed_lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Long-tailed lengths like names or sentences: most short, a few long."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(2.0, 0.4, size=n)), 1, 60).astype(np.int64)


def bucket_index(length: int, boundaries: list[int]) -> int:
    """Reference: bucket k holds (boundaries[k-1], boundaries[k]]; above the last edge, one more."""
    return sum(length > edge for edge in boundaries)


def epoch(sampler) -> list[list[int]]:
    return [list(batch) for batch in sampler]


@pytest.mark.parametrize("boundaries", [None, [5, 8, 12], [100], []])
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_every_sample_exactly_once_per_epoch(boundaries, batch_size):
    lengths = skewed_lengths(503)
    sampler = BucketBatchSampler(
        lengths, batch_size, boundaries, generator=torch.Generator().manual_seed(0)
    )
    for _ in range(2):  # two epochs from the same sampler
        batches = epoch(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(lengths)))
        assert len(batches) == len(sampler)
        assert all(1 <= len(batch) <= batch_size for batch in batches)


@pytest.mark.parametrize("boundaries", [None, [5, 8, 12], [7]])
def test_batches_are_homogeneous_in_length(boundaries):
    lengths = skewed_lengths(800)
    sampler = BucketBatchSampler(
        lengths, 16, boundaries, generator=torch.Generator().manual_seed(1)
    )
    for batch in sampler:
        batch_lengths = lengths[batch]
        if boundaries is None:  # one bucket per distinct length: no padding at all
            assert len(set(batch_lengths.tolist())) == 1
        else:
            assert len({bucket_index(int(n), boundaries) for n in batch_lengths}) == 1
    if boundaries is None:
        assert padding_fraction(lengths, sampler) == 0.0


def test_drop_last_drops_only_each_buckets_partial_batch():
    lengths = np.array([3] * 10 + [9] * 7)
    sampler = BucketBatchSampler(
        lengths, 4, drop_last=True, generator=torch.Generator().manual_seed(0)
    )
    batches = epoch(sampler)
    assert [len(b) for b in batches] == [4] * 3 and len(sampler) == 3  # 10 → 2 batches, 7 → 1
    flat = [i for batch in batches for i in batch]
    assert len(set(flat)) == len(flat) == 12


def test_same_seed_same_order_and_new_order_each_epoch():
    lengths = skewed_lengths(400)

    def make(seed):
        return BucketBatchSampler(
            lengths, 8, [6, 8, 10], generator=torch.Generator().manual_seed(seed)
        )

    first, again = make(0), make(0)
    epoch1, epoch1_again = epoch(first), epoch(again)
    assert epoch1 == epoch1_again, "a seeded generator makes the epoch reproducible"
    assert epoch(first) != epoch1, "the next epoch draws a new order"
    assert epoch(make(1)) != epoch1, "another seed, another order"


def test_batches_are_shuffled_across_buckets_and_within_buckets():
    lengths = np.repeat([2, 4, 6, 8], 64)  # four buckets of 64 samples, 8 batches each
    sampler = BucketBatchSampler(lengths, 8, generator=torch.Generator().manual_seed(0))
    batches = epoch(sampler)
    bucket_sequence = [int(lengths[b[0]]) for b in batches]
    assert bucket_sequence != sorted(bucket_sequence), "batch order must mix the buckets"
    # the buckets interleave: far more bucket changes between consecutive batches than 3
    changes = sum(a != b for a, b in zip(bucket_sequence, bucket_sequence[1:], strict=False))
    assert changes > 10
    # within a bucket the samples are shuffled, not taken in index order
    assert any(b != sorted(b) for b in batches)
    # over many seeds the first batch comes from every bucket
    firsts = {
        int(
            lengths[
                next(
                    iter(BucketBatchSampler(lengths, 8, generator=torch.Generator().manual_seed(s)))
                )[0]
            ]
        )
        for s in range(40)
    }
    assert firsts == {2, 4, 6, 8}


def test_no_shuffle_yields_buckets_in_length_order():
    lengths = np.array([5, 1, 5, 3, 1, 3])
    sampler = BucketBatchSampler(lengths, 2, shuffle=False)
    assert epoch(sampler) == [[1, 4], [3, 5], [0, 2]]
    assert epoch(sampler) == epoch(sampler)


def test_padding_fraction_closed_form_and_random_batches():
    lengths = [1, 2, 3, 4]
    # padded tensors: 2 x 2 and 2 x 4 = 12 slots for 10 real tokens
    assert padding_fraction(lengths, [[0, 1], [2, 3]]) == pytest.approx(1 - 10 / 12)
    assert padding_fraction(lengths, [[0, 3], [1, 2]]) == pytest.approx(1 - 10 / 14)
    assert padding_fraction(lengths, [[0], [1], [2], [3]]) == 0.0
    assert padding_tokens(lengths, [[0, 3], [1, 2]]) == 4  # (4-1) + (3-2)
    # bucketing removes most of the padding of random batches on skewed lengths
    skewed = skewed_lengths(2000)
    random_batches = list(
        BatchSampler(
            RandomSampler(range(2000), generator=torch.Generator().manual_seed(0)), 64, False
        )
    )
    bucketed = BucketBatchSampler(
        skewed, 64, quantile_boundaries(skewed, 8), generator=torch.Generator().manual_seed(0)
    )
    assert padding_fraction(skewed, bucketed) < 0.5 * padding_fraction(skewed, random_batches)
    with pytest.raises(ValueError, match="empty"):
        padding_fraction(lengths, [[]])


def test_quantile_boundaries_split_into_equal_buckets():
    lengths = np.arange(1, 101)  # 1..100
    edges = quantile_boundaries(lengths, 4)
    assert edges == sorted(edges) and len(edges) == 3
    counts = np.bincount([bucket_index(n, edges) for n in lengths])
    assert counts.tolist() == [25, 25, 25, 25] or max(counts) - min(counts) <= 2
    assert quantile_boundaries(lengths, 1) == []
    assert quantile_boundaries([4, 4, 4, 4], 3) == [], "ties collapse into one bucket"
    with pytest.raises(ValueError, match="n_buckets"):
        quantile_boundaries(lengths, 0)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler([1, 2], 0)
    with pytest.raises(ValueError, match="increasing"):
        BucketBatchSampler([1, 2], 2, boundaries=[5, 3])
    with pytest.raises(ValueError, match=">= 1"):
        BucketBatchSampler([0, 2], 2)
    with pytest.raises(ValueError, match="non-empty"):
        BucketBatchSampler([], 2)
    with pytest.raises(ValueError, match="integers"):
        BucketBatchSampler([1.5, 2.0], 2)
    with pytest.raises(ValueError, match="labels"):
        SequenceDataset([torch.tensor([2, 3])], [0, 1])


def test_pad_collate_matches_encode_padded_to_the_batch_maximum():
    texts, labels = ["Kim", "Lee", "Abramovich", "O"], [0, 1, 2, 1]
    vocab = CharVocab.from_texts(texts)
    dataset = SequenceDataset.from_texts(texts, labels, vocab)
    assert dataset.lengths.tolist() == [3, 3, 10, 1]
    tokens, ys = pad_collate([dataset[i] for i in range(4)])
    reference, _ = encode_padded(texts, vocab, max_len=10)
    assert torch.equal(tokens, reference)
    assert ys.tolist() == labels and ys.dtype == torch.long
    short, _ = pad_collate([dataset[0], dataset[3]])
    assert short.shape == (2, 3), "padded to the longest sequence of the batch, not of the data"
    assert short[1].tolist() == [dataset[3][0].item(), PAD, PAD]
    other, _ = pad_collate([dataset[0], dataset[3]], padding_value=-1)
    assert other[1, 1:].tolist() == [-1, -1]


def test_dataloader_with_bucket_sampler_pads_each_batch_to_its_own_length():
    rng = np.random.default_rng(0)
    lengths = skewed_lengths(300)
    sequences = [torch.from_numpy(rng.integers(2, 20, size=n)) for n in lengths]
    dataset = SequenceDataset(sequences, rng.integers(0, 3, size=300))
    sampler = BucketBatchSampler(
        dataset.lengths, 32, [5, 7, 9, 12], generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=pad_collate)
    seen, pad_slots, slots = 0, 0, 0
    for tokens, labels in loader:
        assert tokens.shape[0] == labels.shape[0]
        assert (tokens[:, -1] != PAD).any(), "no all-padding column"
        seen += len(labels)
        pad_slots += int((tokens == PAD).sum())
        slots += tokens.numel()
    assert seen == 300
    assert pad_slots / slots == pytest.approx(
        padding_fraction(
            lengths,
            epoch(
                BucketBatchSampler(
                    lengths, 32, [5, 7, 9, 12], generator=torch.Generator().manual_seed(0)
                )
            ),
        )
    )


def test_one_bucket_is_plain_random_batching():
    lengths = skewed_lengths(100)
    batches = epoch(
        BucketBatchSampler(lengths, 16, boundaries=[], generator=torch.Generator().manual_seed(0))
    )
    assert sorted(len(b) for b in batches) == [4] + [16] * 6, (
        "only one partial batch, like random batching"
    )
    assert len({bucket_index(int(n), []) for n in lengths}) == 1


def test_subset_and_sequence_loader():
    texts = ["ab", "abcd", "a", "abc", "abcdef", "ab"]
    vocab = CharVocab.from_texts(texts)
    dataset = SequenceDataset.from_texts(texts, [0, 1, 0, 1, 0, 1], vocab)
    part = dataset.subset([4, 0])
    assert part.lengths.tolist() == [6, 2] and part.labels.tolist() == [0, 0]
    loader = sequence_loader(dataset, batch_size=2, n_buckets=None, shuffle=False)
    shapes = [tuple(tokens.shape) for tokens, _ in loader]
    assert shapes == [(1, 1), (2, 2), (1, 3), (1, 4), (1, 6)]
    random = [
        sorted(labels.tolist()) for _, labels in sequence_loader(dataset, 4, n_buckets=1, seed=3)
    ]
    assert sum(len(b) for b in random) == 6 and len(random) == 2
    again = [
        sorted(labels.tolist()) for _, labels in sequence_loader(dataset, 4, n_buckets=1, seed=3)
    ]
    assert random == again
