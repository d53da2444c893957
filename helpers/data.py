"""Offline datasets from ``data/``, each checked against ``data/SHA256SUMS`` before use, the
character-level encoding of short texts (surnames) into padded index tensors, and the
sliding-window view of a time series (a class DataLoader workers can import)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info

from helpers import REPO_ROOT
from helpers.seed import seed_worker

DATA_DIR: Path = REPO_ROOT / "data"
REGENERATE_HINT = "regenerate it with `python data/make_datasets.py` (see data/README.md)"


class DataFileError(RuntimeError):
    """A data file is missing, unlisted or does not match its checksum."""


def expected_checksums(data_dir: Path = DATA_DIR) -> dict[str, str]:
    """File name -> SHA-256 as listed in ``data_dir/SHA256SUMS``."""
    sums_file = data_dir / "SHA256SUMS"
    if not sums_file.is_file():
        raise DataFileError(f"Checksum list {sums_file} is missing; {REGENERATE_HINT}.")
    sums: dict[str, str] = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def verified_path(name: str, data_dir: Path = DATA_DIR) -> Path:
    """Path of ``data_dir/name`` after checking it exists and matches its listed SHA-256."""
    path = data_dir / name
    sums = expected_checksums(data_dir)
    if name not in sums:
        raise DataFileError(
            f"{name} is not listed in {data_dir / 'SHA256SUMS'}; {REGENERATE_HINT}."
        )
    if not path.is_file():
        raise DataFileError(f"Data file {path} is missing; {REGENERATE_HINT}.")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sums[name]:
        raise DataFileError(
            f"Data file {path} does not match its checksum (expected {sums[name][:12]}…, "
            f"got {actual[:12]}…): the file is corrupt or was edited; {REGENERATE_HINT}."
        )
    return path


def load_digits(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits (1797 images): pixels scaled to [0, 1] as float32 (N, 64), labels int64 (N,)."""
    frame = pd.read_csv(verified_path("digits.csv", data_dir))
    pixels = frame.drop(columns="label").to_numpy(dtype=np.float32, copy=True) / 16.0
    return pixels, frame["label"].to_numpy(dtype=np.int64, copy=True)


def load_surnames(data_dir: Path = DATA_DIR) -> pd.DataFrame:
    """Surnames with their country of origin (columns ``surname``, ``country``); imbalanced."""
    return pd.read_csv(verified_path("surnames.csv", data_dir), keep_default_na=False)


def split_indices(
    n: int, val_fraction: float, seed: int, stratify: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation index arrays (stratified by ``stratify`` when given)."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    train_idx, val_idx = train_test_split(
        np.arange(n), test_size=val_fraction, random_state=seed, stratify=stratify
    )
    return train_idx, val_idx


def digits_loaders(
    batch_size: int,
    seed: int,
    val_fraction: float = 0.25,
    n_train: int | None = None,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Train and validation DataLoaders over the digits, stratified, shuffled by ``seed`` only.

    ``n_train`` keeps only the first ``n_train`` training samples (for quick experiments).
    """
    pixels, labels = load_digits()
    train_idx, val_idx = split_indices(len(labels), val_fraction, seed, stratify=labels)
    if n_train is not None:
        train_idx = train_idx[:n_train]
    generator = torch.Generator().manual_seed(seed)

    def subset(indices: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(pixels[indices]), torch.from_numpy(labels[indices]))

    train_loader = DataLoader(
        subset(train_idx),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
    )
    val_loader = DataLoader(subset(val_idx), batch_size=256, shuffle=False)
    return train_loader, val_loader


def n_windows(length: int, window: int, horizon: int, stride: int) -> int:
    """How many (window, horizon) pairs fit in a series of ``length`` steps, starts ``stride``
    apart: ``(length - window - horizon) // stride + 1``, or 0 when not even one fits."""
    if min(window, horizon, stride) < 1:
        raise ValueError(
            f"window, horizon and stride must be >= 1, got {window}, {horizon}, {stride}."
        )
    span = window + horizon
    return 0 if length < span else (length - span) // stride + 1


class SlidingWindowDataset(Dataset):
    """Sample ``i`` of a series: inputs ``series[s : s + window]``, target
    ``series[s + window : s + window + horizon]``, with start ``s = i * stride``.

    ``series`` is ``(T,)`` or ``(T, features)``. ``read_delay_s`` sleeps that long per sample, to
    stand in for a read from disk when measuring what DataLoader workers buy.
    """

    def __init__(
        self,
        series: np.ndarray | torch.Tensor,
        window: int,
        horizon: int = 1,
        stride: int = 1,
        read_delay_s: float = 0.0,
    ) -> None:
        self.series = torch.as_tensor(np.asarray(series, dtype=np.float32))
        self.window, self.horizon, self.stride = window, horizon, stride
        self.length = n_windows(len(self.series), window, horizon, stride)
        if self.length == 0:
            raise ValueError(
                f"A series of {len(self.series)} steps holds no window of {window} + "
                f"horizon {horizon}; it needs at least {window + horizon} steps."
            )
        self.read_delay_s = read_delay_s

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"Window {index} out of range for {self.length} windows.")
        start = (index % self.length) * self.stride
        if self.read_delay_s:
            time.sleep(self.read_delay_s)
        end = start + self.window
        return self.series[start:end], self.series[end : end + self.horizon]


# Character-level text encoding: index 0 is padding, 1 is unknown.
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


class NoisyIndex(Dataset):
    """Sample i = (i, a draw from NumPy's global RNG, a draw from an RNG this Dataset owns).

    The demonstration of worker seeding (notebook 01): the owned ``self.rng`` is copied into
    every DataLoader worker with the same state. Lives here so that spawned workers can import it.
    """

    def __init__(self, seed: int = 0, length: int = 8) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}.")
        self.rng = np.random.default_rng(seed)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, np.random.randint(1000), self.rng.integers(1000)])


def seed_worker_and_dataset(worker_id: int) -> None:
    """``worker_init_fn``: :func:`helpers.seed.seed_worker`, then reseed the Dataset's own ``rng``.

    The Dataset's RNG is reseeded from this worker's torch seed, so workers draw different numbers.
    """
    seed_worker(worker_id)  # NumPy and random, from this worker's torch seed
    info = get_worker_info()
    if info is None:
        raise RuntimeError("seed_worker_and_dataset runs only inside a DataLoader worker.")
    dataset = info.dataset
    if not isinstance(dataset, NoisyIndex):
        raise TypeError(
            f"seed_worker_and_dataset reseeds a NoisyIndex, got {type(dataset).__name__}."
        )
    dataset.rng = np.random.default_rng(info.seed % 2**32)  # the Dataset's own RNG too
