import pytest
import torch
from torch import nn

from helpers.workflow.mechanics import LayerRecorder, ListMLP, ModuleListMLP, hook_count

SIZES = [8, 16, 12, 3]


def brute_force_parameter_count(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))  # weights + biases


def test_a_python_list_hides_the_layers_and_module_list_registers_them():
    torch.manual_seed(0)
    hidden, registered = ListMLP(SIZES), ModuleListMLP(SIZES)
    assert sum(p.numel() for p in hidden.parameters()) == 0
    assert (
        sum(p.numel() for p in registered.parameters()) == brute_force_parameter_count(SIZES) == 387
    )
    assert hidden.state_dict() == {} and len(registered.state_dict()) == 2 * (len(SIZES) - 1)
    with pytest.raises(ValueError, match="empty parameter list"):
        torch.optim.SGD(hidden.parameters(), lr=0.1)
    hidden.to(torch.float64)
    registered.to(torch.float64)
    assert hidden.layers[0].weight.dtype == torch.float32, ".to() never reaches the hidden layers"
    assert registered.layers[0].weight.dtype == torch.float64


def test_recorder_stats_match_a_manual_forward_and_leave_no_hook():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(32, 8)
    with LayerRecorder(model, gradients=True) as recorder:
        assert hook_count(model) == 3 + len(list(model.parameters()))
        model(x).sum().backward()
    assert hook_count(model) == 0
    hidden = torch.relu(model[0](x))
    relu_row = next(row for row in recorder.rows if row["layer"] == "1")
    assert relu_row["zero_share"] == pytest.approx((hidden == 0).float().mean().item())
    assert relu_row["mean"] == pytest.approx(hidden.mean().item())
    assert recorder.grad_norms["0.weight"] == pytest.approx(model[0].weight.grad.norm().item())
    assert recorder.first_nonfinite() is None


def test_recorder_finds_the_first_nonfinite_layer_and_cleans_up_after_an_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="boom"), LayerRecorder(model) as recorder:
        model(torch.ones(2, 4))
        raise RuntimeError("boom")
    assert recorder.first_nonfinite() == "2"
    assert hook_count(model) == 0
