import copy

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.data import digits_loaders
from helpers.seed import seed_everything
from helpers.training import TIMING_COLUMNS, evaluate, fit, train_one_epoch


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def toy_data(n: int = 64, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 64, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    )


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_over_k_micro_batches_equals_one_big_batch(k):
    data = toy_data(64)
    big, small = mlp(), mlp()
    opt_big = torch.optim.SGD(big.parameters(), lr=0.5, momentum=0.9)
    opt_small = torch.optim.SGD(small.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        train_one_epoch(
            big,
            DataLoader(data, batch_size=32),
            opt_big,
            torch.device("cpu"),
            nn.CrossEntropyLoss(),
        )
        train_one_epoch(
            small,
            DataLoader(data, batch_size=32 // k),
            opt_small,
            torch.device("cpu"),
            nn.CrossEntropyLoss(),
            accumulation_steps=k,
        )
    assert max_param_diff(big, small) <= 1e-6
    # Without accumulation the small batches take k times more steps and end elsewhere.
    plain = mlp()
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.5, momentum=0.9)
    train_one_epoch(
        plain,
        DataLoader(data, batch_size=32 // k),
        opt_plain,
        torch.device("cpu"),
        nn.CrossEntropyLoss(),
    )
    assert max_param_diff(big, plain) > 1e-3


def test_accumulation_is_exact_with_a_short_last_micro_batch():
    data = toy_data(20)  # micro-batches of 8, 8 and 4 accumulated = one batch of 20
    big, small = mlp(), mlp()
    opt_big = torch.optim.SGD(big.parameters(), lr=0.5)
    opt_small = torch.optim.SGD(small.parameters(), lr=0.5)
    train_one_epoch(
        big, DataLoader(data, batch_size=20), opt_big, torch.device("cpu"), nn.CrossEntropyLoss()
    )
    train_one_epoch(
        small,
        DataLoader(data, batch_size=8),
        opt_small,
        torch.device("cpu"),
        nn.CrossEntropyLoss(),
        accumulation_steps=3,
    )
    assert max_param_diff(big, small) <= 1e-6


def test_clipping_bounds_the_update_and_reports_the_raw_norm():
    data = toy_data(32)
    model = mlp()
    before = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = train_one_epoch(
        model,
        DataLoader(data, batch_size=32),
        optimizer,
        torch.device("cpu"),
        lambda out, y: 100 * nn.functional.cross_entropy(out, y),
        max_grad_norm=0.5,
    )
    step = torch.sqrt(
        sum(
            ((p - q) ** 2).sum()
            for p, q in zip(model.parameters(), before.parameters(), strict=True)
        )
    )
    assert stats["grad_norm"] > 0.5, "the reported norm is the one before clipping"
    assert step.item() == pytest.approx(0.5, rel=1e-4), "SGD with lr=1 moves by the clipped norm"


def test_empty_loader_is_a_clear_error():
    empty = DataLoader(TensorDataset(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)))
    model = mlp()
    with pytest.raises(ValueError, match="yields no batches"):
        fit(model, empty, empty, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, empty)


def test_evaluate_matches_sklearn():
    data = toy_data(100, seed=1)
    model = mlp(seed=2)
    metrics = evaluate(model, DataLoader(data, batch_size=7))
    with torch.no_grad():
        logits = model(data.tensors[0])
    predictions = logits.argmax(1).numpy()
    labels = data.tensors[1].numpy()
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predictions == labels)))
    assert metrics["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(
        f1_score(labels, predictions, average="weighted")
    )
    assert metrics["loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, data.tensors[1]).item(), rel=1e-5
    )


def test_evaluate_restores_nothing_but_uses_eval_mode():
    model = nn.Sequential(nn.Linear(64, 10), nn.Dropout(0.9))
    data = DataLoader(toy_data(16), batch_size=16)
    assert evaluate(model, data) == evaluate(model, data), "dropout must be off in evaluation"
    assert not model.training


@pytest.mark.slow
def test_fit_learns_the_digits_and_checkpoints_the_best_epoch(tmp_path):
    seed_everything(0)
    train, val = digits_loaders(batch_size=64, seed=0)
    model = mlp()
    result = fit(
        model,
        train,
        val,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        epochs=6,
        checkpoint_dir=tmp_path,
        config={"lr": 1e-2},
        show_progress=False,
    )
    best = max(row["val_macro_f1"] for row in result.history)
    assert best > 0.9
    assert result.best_score == best
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert state["epoch"] == result.best_epoch
    assert state["config"] == {"lr": 1e-2}
    reloaded = mlp(seed=99)
    reloaded.load_state_dict(state["model"])
    assert evaluate(reloaded, val)["macro_f1"] == pytest.approx(best)


def test_resume_gives_the_identical_result(tmp_path):
    def run(epochs: int, resume: bool, folder) -> nn.Module:
        seed_everything(1)
        train, val = digits_loaders(batch_size=32, seed=1, n_train=256)
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        fit(
            model,
            train,
            val,
            optimizer,
            epochs,
            scheduler=scheduler,
            checkpoint_dir=folder,
            resume=resume,
            show_progress=False,
        )
        return model

    straight = run(4, False, tmp_path / "straight")
    run(2, False, tmp_path / "split")
    resumed = run(4, True, tmp_path / "split")
    assert max_param_diff(straight, resumed) == 0.0
    history = torch.load(tmp_path / "split" / "last.pt", weights_only=True)["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


def test_early_stopping_stops_after_patience_epochs():
    seed_everything(0)
    train, val = digits_loaders(batch_size=64, seed=0, n_train=64)
    model = mlp()
    # lr=0 never improves after epoch 1, so training stops at epoch 1 + patience.
    result = fit(
        model,
        train,
        val,
        torch.optim.SGD(model.parameters(), lr=0.0),
        epochs=20,
        monitor="loss",
        patience=3,
        show_progress=False,
    )
    assert result.stopped_early
    assert len(result.history) == 4
    assert result.best_epoch == 1


def test_bad_arguments_are_clear_errors(tmp_path):
    train, val = digits_loaders(batch_size=64, seed=0, n_train=64)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="Unknown monitor"):
        fit(model, train, val, optimizer, 1, monitor="f2")
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        fit(model, train, val, optimizer, 1, resume=True)
    with pytest.raises(ValueError, match="accumulation_steps"):
        train_one_epoch(
            model,
            train,
            optimizer,
            torch.device("cpu"),
            nn.CrossEntropyLoss(),
            accumulation_steps=0,
        )
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        fit(model, train, val, optimizer, 1, checkpoint_dir=tmp_path, resume=True)


def test_bf16_autocast_on_cpu_trains():
    seed_everything(0)
    train, val = digits_loaders(batch_size=64, seed=0)
    model = mlp()
    result = fit(
        model,
        train,
        val,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        epochs=3,
        amp=True,
        show_progress=False,
    )
    assert result.history[-1]["val_accuracy"] > 0.85


def test_keep_best_restores_the_best_epoch_and_times_the_training_pass():
    train = DataLoader(
        toy_data(48), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    val = DataLoader(toy_data(16, seed=2), batch_size=16)
    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    result = fit(
        model, train, val, optimizer, 6, monitor="weighted_f1", keep_best=True, show_progress=False
    )
    history = result.frame()
    scores = history["val_weighted_f1"].tolist()
    assert result.best_epoch == scores.index(max(scores)) + 1 and result.best_score == max(scores)
    assert result.best_epoch < 6, (
        "pick data where the last epoch is not the best, or the test proves nothing"
    )
    assert evaluate(model, val)["weighted_f1"] == result.best_score
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in result.best_state.items())
    assert ((history["train_seconds"] > 0) & (history["train_seconds"] <= history["seconds"])).all()
    assert list(result.frame(timings=False).columns) == [
        c for c in history.columns if c not in TIMING_COLUMNS
    ]
    assert (
        fit(
            mlp(), train, val, torch.optim.AdamW(mlp().parameters()), 1, show_progress=False
        ).best_state
        is None
    )


def test_per_step_scheduler_matches_a_hand_written_loop():
    data = toy_data(48)
    val = DataLoader(toy_data(16, seed=3), batch_size=16)

    def one_cycle(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.5, total_steps=12)

    fitted = mlp()
    optimizer, scheduler = one_cycle(fitted)
    history = fit(
        fitted,
        DataLoader(data, batch_size=16),
        val,
        optimizer,
        4,
        scheduler=scheduler,
        scheduler_interval="step",
        show_progress=False,
    ).history

    by_hand = mlp()
    optimizer, scheduler = one_cycle(by_hand)
    lr_at_last_step = []
    for _ in range(4):
        for inputs, labels in DataLoader(data, batch_size=16):
            optimizer.zero_grad()
            nn.functional.cross_entropy(by_hand(inputs), labels).backward()
            lr_at_last_step_of_epoch = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
        lr_at_last_step.append(lr_at_last_step_of_epoch)
    assert max_param_diff(fitted, by_hand) <= 1e-6
    assert [row["lr"] for row in history] == pytest.approx(lr_at_last_step)
    assert len(set(lr_at_last_step)) == 4, "the schedule must move within the test"

    per_epoch = mlp()
    optimizer, scheduler = one_cycle(per_epoch)
    fit(
        per_epoch,
        DataLoader(data, batch_size=16),
        val,
        optimizer,
        4,
        scheduler=scheduler,
        show_progress=False,
    )
    assert max_param_diff(per_epoch, by_hand) > 1e-3, "stepping per epoch is another schedule"


def test_reduce_on_plateau_gets_the_validation_loss():
    train = DataLoader(
        toy_data(64), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    val = DataLoader(
        toy_data(32, seed=5), batch_size=32
    )  # random labels: validation loss soon rises
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    history = fit(
        model, train, val, optimizer, 8, scheduler=plateau, monitor="loss", show_progress=False
    ).history
    # Replay PyTorch's scheduler on the logged validation losses: its LR before each epoch's step.
    replay_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    replay = torch.optim.lr_scheduler.ReduceLROnPlateau(replay_optimizer, factor=0.5, patience=0)
    expected = []
    for row in history:
        expected.append(replay_optimizer.param_groups[0]["lr"])
        replay.step(row["val_loss"])
    assert [row["lr"] for row in history] == pytest.approx(expected)
    assert expected[-1] < expected[0] and len(set(expected)) < len(expected), (
        "the test needs epochs with and without a reduction"
    )


def test_early_stopping_rule():
    from helpers.training import EarlyStopping

    stopping = EarlyStopping("accuracy", patience=2)
    improved = [
        stopping.update(epoch, score) for epoch, score in enumerate([0.5, 0.6, 0.6, 0.55], start=1)
    ]
    assert (
        improved == [True, True, False, False] and stopping.should_stop and stopping.best_epoch == 2
    )
    lower = EarlyStopping("loss")
    assert [lower.update(e, s) for e, s in enumerate([2.0, 1.0, 1.5], start=1)] == [
        True,
        True,
        False,
    ]
    assert not lower.should_stop, "no patience: never stop"
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("loss", patience=0)


def test_resume_restores_python_and_numpy_random_state(tmp_path):
    import random

    train, val = digits_loaders(batch_size=64, seed=0, n_train=64)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, train, val, optimizer, 1, checkpoint_dir=tmp_path, show_progress=False)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    fit(model, train, val, optimizer, 1, checkpoint_dir=tmp_path, resume=True, show_progress=False)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
