import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.tracking import TensorBoardLogger, read_hparams, read_scalars, run_name
from helpers.training import fit


def toy_loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 8, generator=generator), torch.randint(0, 3, (48,), generator=generator)
    return DataLoader(TensorDataset(x[:32], y[:32]), batch_size=8), DataLoader(
        TensorDataset(x[32:], y[32:]), batch_size=16
    )


def test_logger_writes_what_fit_saw_and_reads_back(tmp_path):
    train, val = toy_loaders()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    config = {"lr": 0.2, "hidden": 16, "optimizer": "SGD", "classes": ["a", "b", "c"]}
    logger = TensorBoardLogger(config, seed=3, root=tmp_path)
    result = fit(
        model,
        train,
        val,
        optimizer,
        3,
        scheduler=scheduler,
        max_grad_norm=1.0,
        logger=logger,
        show_progress=False,
    )
    assert logger.run_dir.parent == tmp_path and "seed=3" in logger.run_dir.name

    scalars = read_scalars(logger.run_dir)
    for tag in ("train_loss", "grad_norm", "lr", "val_loss", "val_macro_f1"):
        logged = scalars[scalars["tag"] == tag].sort_values("step")
        assert logged["step"].tolist() == [1, 2, 3]
        assert logged["value"].tolist() == pytest.approx(
            [row[tag] for row in result.history], rel=1e-6
        )
    assert scalars[scalars["tag"] == "lr"]["value"].tolist() == pytest.approx([0.2, 0.1, 0.05])

    hparams = read_hparams(logger.run_dir)
    assert hparams == {"lr": pytest.approx(0.2), "hidden": 16, "optimizer": "SGD", "seed": 3}
    final = scalars.set_index("tag")["value"]
    assert final["hparam/best_val_macro_f1"] == pytest.approx(result.best_score, rel=1e-6)
    assert final["hparam/val_loss"] == pytest.approx(result.history[-1]["val_loss"], rel=1e-6)


def test_rerun_replaces_the_run_and_names_differ_by_config(tmp_path):
    first = TensorBoardLogger({"lr": 0.1}, seed=0, root=tmp_path)
    first.finish({"score": 1.0})
    again = TensorBoardLogger({"lr": 0.1}, seed=0, root=tmp_path)
    again.finish({"score": 2.0})
    assert len(list(again.run_dir.glob("events.out.tfevents.*"))) == 1
    assert read_scalars(again.run_dir).set_index("tag")["value"]["hparam/score"] == 2.0
    assert run_name({"lr": 0.1}, 0) != run_name({"lr": 0.1}, 1) != run_name({"lr": 0.2}, 1)
    assert run_name({"lr": 0.1, "depth": 2}, 0, keys=["lr"]).startswith("lr=0.1_seed=0_")
    with pytest.raises(KeyError, match="not scalar"):
        run_name({"lr": 0.1}, 0, keys=["momentum"])
    with pytest.raises(FileNotFoundError, match="No TensorBoard event file"):
        read_scalars(tmp_path / "empty")
