import shutil

import pytest

from helpers import data


def test_digits_load_and_match_their_checksum():
    pixels, labels = data.load_digits()
    assert pixels.shape == (1797, 64)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert set(labels.tolist()) == set(range(10))


def test_surnames_are_naturally_imbalanced():
    frame = data.load_surnames()
    counts = frame["country"].value_counts()
    assert list(frame.columns) == ["surname", "country"]
    assert counts.max() / counts.min() >= 20
    assert frame["surname"].str.len().min() > 0


@pytest.fixture
def data_copy(tmp_path):
    for name in ("SHA256SUMS", "digits.csv"):
        shutil.copy(data.DATA_DIR / name, tmp_path / name)
    return tmp_path


def test_corrupt_file_gives_a_clear_error(data_copy):
    with (data_copy / "digits.csv").open("a") as handle:
        handle.write("0\n")
    with pytest.raises(
        data.DataFileError, match=r"digits\.csv does not match its checksum.*make_datasets"
    ):
        data.load_digits(data_copy)


def test_missing_file_gives_a_clear_error(data_copy):
    (data_copy / "digits.csv").unlink()
    with pytest.raises(data.DataFileError, match=r"digits\.csv is missing.*make_datasets"):
        data.load_digits(data_copy)


def test_unlisted_file_gives_a_clear_error(data_copy):
    sums = data_copy / "SHA256SUMS"
    sums.write_text(
        "".join(line + "\n" for line in sums.read_text().splitlines() if "surnames" not in line)
    )
    with pytest.raises(data.DataFileError, match="not listed"):
        data.load_surnames(data_copy)


def test_digits_loaders_are_stratified_and_reproducible():
    train_a, val_a = data.digits_loaders(batch_size=32, seed=3)
    train_b, _ = data.digits_loaders(batch_size=32, seed=3)
    first_a = next(iter(train_a))[1].tolist()
    assert first_a == next(iter(train_b))[1].tolist()
    n_train, n_val = len(train_a.dataset), len(val_a.dataset)
    assert n_train + n_val == 1797
    val_labels = val_a.dataset.tensors[1]
    assert val_labels.bincount().min() >= 40  # each digit is ~10% of 450
    with pytest.raises(ValueError, match="val_fraction"):
        data.split_indices(10, 1.5, seed=0)


@pytest.mark.parametrize(
    "length,window,horizon,stride",
    [
        (20, 5, 1, 1),
        (20, 5, 3, 2),
        (21, 5, 3, 2),
        (10, 4, 6, 3),
        (10, 9, 1, 1),
        (100, 12, 4, 7),
        (8, 1, 1, 8),
    ],
)
def test_sliding_windows_match_brute_force(length, window, horizon, stride):
    import numpy as np

    series = np.arange(length, dtype=np.float32) * 10
    starts = [s for s in range(0, length, stride) if s + window + horizon <= length]  # brute force
    dataset = data.SlidingWindowDataset(series, window, horizon, stride)
    assert len(dataset) == len(starts) == data.n_windows(length, window, horizon, stride)
    for index, start in ((0, starts[0]), (len(dataset) - 1, starts[-1]), (-1, starts[-1])):
        inputs, target = dataset[index]
        assert inputs.tolist() == series[start : start + window].tolist()
        assert target.tolist() == series[start + window : start + window + horizon].tolist()
    assert [x[0].item() for x, _ in dataset] == [series[s] for s in starts]
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]


def test_sliding_windows_bad_input_is_a_clear_error():
    import numpy as np

    with pytest.raises(ValueError, match="at least 6 steps"):
        data.SlidingWindowDataset(np.zeros(5), window=4, horizon=2)
    with pytest.raises(ValueError, match=">= 1"):
        data.SlidingWindowDataset(np.zeros(50), window=4, stride=0)
    multi = data.SlidingWindowDataset(np.zeros((30, 3)), window=4, horizon=2, stride=5)
    assert [tuple(t.shape) for t in multi[0]] == [(4, 3), (2, 3)]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_noisy_index_workers_share_its_rng_until_reseeded():
    """Spawned workers import NoisyIndex; only seed_worker_and_dataset gives them distinct owned RNGs."""
    import torch
    from torch.utils.data import DataLoader

    from helpers.data import NoisyIndex, seed_worker_and_dataset
    from helpers.seed import seed_worker

    def draws(init):
        loader = DataLoader(
            NoisyIndex(seed=0),
            batch_size=2,
            num_workers=2,
            worker_init_fn=init,
            generator=torch.Generator().manual_seed(0),
            multiprocessing_context="spawn",
        )
        return torch.cat(list(loader))  # batches 0, 2 from worker 0; 1, 3 from worker 1

    plain, fixed = draws(seed_worker), draws(seed_worker_and_dataset)
    assert plain[:, 0].tolist() == list(range(8))
    assert torch.equal(plain[0:2, 2], plain[2:4, 2])  # the same copied RNG in both workers
    assert not torch.equal(fixed[0:2, 2], fixed[2:4, 2])
    assert torch.equal(fixed, draws(seed_worker_and_dataset))  # reproducible from the seed
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        seed_worker_and_dataset(0)
    with pytest.raises(ValueError):
        NoisyIndex(length=0)
