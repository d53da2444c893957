import os

import pytest
import torch

from helpers import checkpoints
from helpers.checkpoints import load_checkpoint, save_checkpoint


def test_round_trip_keeps_tensors_and_config(tmp_path):
    model = torch.nn.Linear(3, 2)
    path = save_checkpoint(
        {"model": model.state_dict(), "config": {"lr": 0.1}, "epoch": 4},
        tmp_path / "ckpt" / "best.pt",
    )
    state = load_checkpoint(path)
    restored = torch.nn.Linear(3, 2)
    restored.load_state_dict(state["model"])
    assert torch.equal(restored.weight, model.weight)
    assert state["epoch"] == 4
    assert (tmp_path / "ckpt" / "best.config.json").read_text().strip().startswith("{")


class NotAllowed:
    pass


def test_load_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": NotAllowed()}, path)
    with pytest.raises(Exception, match="(?i)weights_only"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def crash_midway(obj, handle):
        handle.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"], "no temporary file may be left behind"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
