"""The served model's artifact: train the course GRU on surnames, save it with its config and
vocabulary in one atomic checkpoint, load it back with ``weights_only=True``, and predict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers.checkpoints import load_checkpoint, save_checkpoint
from helpers.data import CharVocab, encode_padded, load_surnames, split_indices
from helpers.models import GRUClassifier
from helpers.seed import seed_everything
from helpers.training import fit

FORMAT = "surname-gru/1"


@dataclass(frozen=True)
class TrainedClassifier:
    """A trained model with everything needed to serve it."""

    model: GRUClassifier
    vocab: CharVocab
    classes: tuple[str, ...]
    config: dict[str, Any]
    val_accuracy: float


def train_surname_classifier(
    hidden: int = 64,
    embed_dim: int = 32,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 3e-3,
    max_len: int = 24,
    seed: int = 0,
) -> TrainedClassifier:
    """Train ``GRUClassifier`` on surnames → country (stratified 80/20 split, Adam, ``fit``)."""
    frame = load_surnames()
    classes = tuple(sorted(frame["country"].unique()))
    labels = np.array([classes.index(c) for c in frame["country"]], dtype=np.int64)
    train_idx, val_idx = split_indices(len(frame), 0.2, seed, stratify=labels)
    texts = frame["surname"].tolist()
    vocab = CharVocab.from_texts(texts[i] for i in train_idx)
    tokens, _ = encode_padded(texts, vocab, max_len)
    targets = torch.from_numpy(labels)
    generator = seed_everything(seed)
    train = DataLoader(
        TensorDataset(tokens[train_idx], targets[train_idx]),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
    )
    val = DataLoader(TensorDataset(tokens[val_idx], targets[val_idx]), batch_size=512)
    model = GRUClassifier(len(vocab), len(classes), embed_dim=embed_dim, hidden=hidden)
    result = fit(
        model,
        train,
        val,
        torch.optim.Adam(model.parameters(), lr=lr),
        epochs,
        monitor="accuracy",
        keep_best=True,
        show_progress=False,
    )
    config = {
        "format": FORMAT,
        "embed_dim": embed_dim,
        "hidden": hidden,
        "max_len": max_len,
        "epochs": epochs,
        "seed": seed,
    }
    assert result.best_score is not None, "fit ran at least one epoch"
    return TrainedClassifier(model.eval(), vocab, classes, config, float(result.best_score))


def save_artifact(trained: TrainedClassifier, path: str | Path, version: str) -> Path:
    """Write the model, its config, vocabulary, class names and version (atomic write)."""
    config = dict(
        trained.config,
        version=version,
        vocab_chars=list(trained.vocab.chars),
        classes=list(trained.classes),
        val_accuracy=trained.val_accuracy,
    )
    return save_checkpoint({"model": trained.model.state_dict(), "config": config}, path)


class Predictor:
    """Text in, top-k classes out: the model, its vocabulary and its input limit, in one place."""

    def __init__(
        self,
        model: torch.nn.Module,
        vocab: CharVocab,
        classes: Sequence[str],
        max_len: int,
        version: str,
        device: torch.device | str = "cpu",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab, self.classes, self.max_len, self.version = (
            vocab,
            tuple(classes),
            max_len,
            version,
        )
        self.known = frozenset(vocab.chars)

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of ``text`` the model never saw in training, in order of first appearance."""
        return list(dict.fromkeys(ch for ch in text if ch not in self.known))

    def probabilities(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities, shape ``(len(texts), n_classes)``, on the CPU."""
        if not texts:
            raise ValueError("probabilities needs at least one text.")
        longest = max(len(t) for t in texts)
        if longest > self.max_len:
            raise ValueError(f"A text has {longest} characters; the limit is {self.max_len}.")
        tokens, _ = encode_padded(texts, self.vocab, longest)
        with torch.inference_mode():
            logits = self.model(tokens.to(self.device))
        return torch.softmax(logits.float(), dim=-1).cpu()

    def predict(self, texts: Sequence[str], top_k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``top_k`` (class, probability) pairs of each text, most probable first."""
        if not 1 <= top_k <= len(self.classes):
            raise ValueError(f"top_k must be in [1, {len(self.classes)}], got {top_k}.")
        values, indices = self.probabilities(texts).topk(top_k, dim=-1)
        return [
            [(self.classes[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
            for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> Predictor:
    """Rebuild the model from an artifact written by :func:`save_artifact` (``weights_only=True``)."""
    state = load_checkpoint(path, map_location="cpu")
    config = state.get("config") or {}
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} artifact (format={config.get('format')!r}).")
    vocab = CharVocab(tuple(config["vocab_chars"]))
    model = GRUClassifier(
        len(vocab), len(config["classes"]), embed_dim=config["embed_dim"], hidden=config["hidden"]
    )
    model.load_state_dict(state["model"])
    return Predictor(model, vocab, config["classes"], config["max_len"], config["version"], device)


def widen(trained: TrainedClassifier, hidden: int) -> TrainedClassifier:
    """The same classifier with ``hidden`` GRU units: the trained units are copied and the new
    ones get all-zero weights and biases, so they stay at 0 forever (gates 0.5, candidate
    tanh(0) = 0) and feed nothing — identical predictions, the compute cost of a wider model.
    A stand-in for a production-size model that would take minutes to train here."""
    small = trained.model
    assert isinstance(small, GRUClassifier), "widen copies a GRUClassifier"
    old = small.gru.hidden_size
    if hidden < old:
        raise ValueError(f"widen needs hidden >= {old}, got {hidden}.")
    wide = GRUClassifier(
        small.embed.num_embeddings,
        small.head.out_features,
        embed_dim=small.embed.embedding_dim,
        hidden=hidden,
    )
    with torch.no_grad():
        for p in wide.parameters():
            p.zero_()
        wide.embed.weight.copy_(small.embed.weight)
        for gate in range(3):  # PyTorch stacks the reset, update and new gates: rows [r; z; n]
            rows_old, rows_new = (
                slice(gate * old, (gate + 1) * old),
                slice(gate * hidden, gate * hidden + old),
            )
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                target: torch.Tensor = getattr(wide.gru, name)
                source: torch.Tensor = getattr(small.gru, name)
                if name == "weight_hh_l0":  # hidden-to-hidden: only the trained units' columns
                    target[rows_new, :old] = source[rows_old]
                else:
                    target[rows_new] = source[rows_old]
        wide.head.weight[:, :old] = small.head.weight
        wide.head.bias.copy_(small.head.bias)
    config = dict(trained.config, hidden=hidden, trained_hidden=old)
    return TrainedClassifier(
        wide.eval(), trained.vocab, trained.classes, config, trained.val_accuracy
    )


def untrained_artifact(
    path: str | Path,
    texts: Sequence[str],
    classes: Sequence[str],
    hidden: int = 16,
    max_len: int = 24,
    seed: int = 0,
    version: str = "test",
) -> Path:
    """A small randomly initialised artifact (for tests of the serving code, not for answers)."""
    torch.manual_seed(seed)
    vocab = CharVocab.from_texts(texts)
    model = GRUClassifier(len(vocab), len(classes), embed_dim=8, hidden=hidden).eval()
    config = {
        "format": FORMAT,
        "embed_dim": 8,
        "hidden": hidden,
        "max_len": max_len,
        "epochs": 0,
        "seed": seed,
    }
    return save_artifact(
        TrainedClassifier(model, vocab, tuple(classes), config, float("nan")), path, version
    )
