import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from helpers.seed import seed_everything, seed_worker, use_deterministic


def draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_numbers_in_every_library():
    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


def test_generator_fixes_the_shuffle_order():
    order = [
        list(DataLoader(range(20), batch_size=20, shuffle=True, generator=seed_everything(7)))[
            0
        ].tolist()
        for _ in range(2)
    ]
    assert order[0] == order[1]
    assert sorted(order[0]) == list(range(20))


class NumpyNoise(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> float:
        return float(np.random.rand())


def worker_draws(worker_init_fn) -> list[float]:
    loader = DataLoader(
        NumpyNoise(),
        batch_size=1,
        num_workers=2,
        worker_init_fn=worker_init_fn,
        generator=torch.Generator().manual_seed(0),
    )
    return [float(x) for x in loader]


def test_seed_worker_gives_workers_distinct_reproducible_numpy_streams():
    draws = worker_draws(seed_worker)
    # Batches alternate between the two workers: 0, 1, 0, 1.
    assert draws[0] != draws[1], "workers must not share a NumPy stream"
    assert worker_draws(seed_worker) == draws, "same generator seed, same numbers"


def test_seed_worker_derives_numpy_and_random_from_the_torch_seed():
    def after_worker_init(torch_seed: int) -> tuple[float, float]:
        torch.manual_seed(torch_seed)
        np.random.seed(0)
        random.seed(0)
        seed_worker(worker_id=0)
        return float(np.random.rand()), random.random()

    assert after_worker_init(5) == after_worker_init(5)
    assert after_worker_init(5)[0] != after_worker_init(6)[0]
    assert after_worker_init(5)[1] != after_worker_init(6)[1]


def test_seed_everything_sets_no_backend_flag():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    seed_everything(0)
    after = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    assert after == before


def test_deterministic_switch():
    try:
        use_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        use_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
    finally:
        use_deterministic(False)
