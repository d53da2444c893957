import pytest
import torch
from torch import nn

from helpers.finetune.recipes import (
    ResidualMLP,
    blocks_of,
    count_parameters,
    freeze_by_ratio,
    group_table,
    is_no_decay,
    layerwise_param_groups,
    set_dropout,
)
from helpers.models import TransformerClassifier

BASE_LR, DECAY, HEAD_MULT, WD = 1e-3, 0.9, 2.0, 0.1


def mlp(n_blocks: int = 3, **kwargs) -> ResidualMLP:
    torch.manual_seed(0)
    return ResidualMLP(n_inputs=12, n_classes=5, width=8, n_blocks=n_blocks, **kwargs)


def transformer(n_layers: int = 3) -> TransformerClassifier:
    torch.manual_seed(0)
    return TransformerClassifier(
        vocab_size=20, n_classes=4, max_len=6, d_model=8, n_heads=2, n_layers=n_layers
    )


def expected_depth(name: str, model: nn.Module) -> int | str:
    """The block a parameter belongs to, read off its name independently of the helper."""
    parts = name.split(".")
    if parts[0] == "head":
        return "head"
    if isinstance(model, ResidualMLP):
        n = len(model.blocks)
        return {"stem": 0, "norm": n}.get(
            parts[0], int(parts[1]) + 1 if parts[0] == "blocks" else -1
        )
    if parts[0] in ("embed", "position"):
        return 0
    return int(parts[2]) + 1  # encoder.layers.<i>.…


def per_parameter(groups) -> dict[int, tuple[float, float]]:
    seen: dict[int, tuple[float, float]] = {}
    for group in groups:
        for param in group["params"]:
            assert id(param) not in seen, "a parameter sits in two groups"
            seen[id(param)] = (group["lr"], group["weight_decay"])
    return seen


@pytest.mark.parametrize("make", [mlp, transformer], ids=["ResidualMLP", "TransformerClassifier"])
def test_groups_cover_every_parameter_once_with_the_intended_lr_and_decay(make):
    model = make()
    blocks, head = blocks_of(model)
    groups = layerwise_param_groups(
        model, blocks, head, BASE_LR, layer_decay=DECAY, head_lr_mult=HEAD_MULT, weight_decay=WD
    )
    seen = per_parameter(groups)
    named = dict(model.named_parameters())
    assert set(seen) == {id(p) for p in named.values()}
    n_blocks = len(blocks)
    for name, param in named.items():
        lr, wd = seen[id(param)]
        depth = expected_depth(name, model)
        want_lr = (
            BASE_LR * HEAD_MULT if depth == "head" else BASE_LR * DECAY ** (n_blocks - 1 - depth)
        )
        assert lr == pytest.approx(want_lr, rel=1e-12), name
        # In these models the no-decay parameters are exactly the 1-D ones (biases, norm gains).
        assert wd == (0.0 if param.ndim == 1 else WD), name
    assert max(g["lr"] for g in groups) == pytest.approx(BASE_LR * HEAD_MULT)
    assert len(groups) <= 2 * (n_blocks + 1)
    # The groups are valid optimizer input and a step changes every parameter.
    optimizer = torch.optim.AdamW(groups, lr=123.0)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]


def test_transformer_norms_and_attention_biases_get_no_decay():
    model = transformer(n_layers=2)
    groups = layerwise_param_groups(model, *blocks_of(model), BASE_LR, weight_decay=WD)
    table = group_table(model, groups).set_index("parameter")
    for i in range(2):
        for name in ("norm1.weight", "norm2.weight", "self_attn.in_proj_bias", "linear1.bias"):
            assert table.loc[f"encoder.layers.{i}.{name}", "weight_decay"] == 0.0
        assert table.loc[f"encoder.layers.{i}.self_attn.in_proj_weight", "weight_decay"] == WD
    assert table.loc["position", "weight_decay"] == WD
    assert table["numel"].sum() == count_parameters(model)


def test_decay_everything_when_asked():
    model = mlp()
    groups = layerwise_param_groups(
        model, *blocks_of(model), BASE_LR, weight_decay=WD, decay_norm_and_bias=True
    )
    assert all(g["weight_decay"] == WD for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out():
    model = mlp(n_blocks=3)
    blocks, head = blocks_of(model)
    freeze_by_ratio(blocks, 0.5)  # stem and blocks[0] frozen
    groups = layerwise_param_groups(model, blocks, head, BASE_LR)
    ids = set(per_parameter(groups))
    assert ids == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(
        not n.startswith(("stem", "blocks.0.")) for n in group_table(model, groups)["parameter"]
    )


def test_bad_block_lists_are_refused():
    model = mlp(n_blocks=2)
    blocks, head = blocks_of(model)
    with pytest.raises(ValueError, match="in no block"):
        layerwise_param_groups(model, blocks[1:], head, BASE_LR)
    with pytest.raises(ValueError, match="in both"):
        layerwise_param_groups(model, blocks, [head, model.stem], BASE_LR)
    with pytest.raises(ValueError, match="not the model's"):
        layerwise_param_groups(model, [*blocks, [nn.Linear(2, 2)]], head, BASE_LR)
    with pytest.raises(ValueError, match="layer_decay"):
        layerwise_param_groups(model, blocks, head, BASE_LR, layer_decay=1.5)
    with pytest.raises(ValueError, match="ResidualMLP"):
        blocks_of(nn.Sequential(nn.Linear(2, 2)))


def test_is_no_decay_by_module_type():
    assert is_no_decay(nn.LayerNorm(3), "weight") and is_no_decay(nn.BatchNorm1d(3), "weight")
    assert is_no_decay(nn.Linear(2, 2), "bias") and not is_no_decay(nn.Linear(2, 2), "weight")
    assert is_no_decay(nn.MultiheadAttention(4, 2), "in_proj_bias")
    assert not is_no_decay(nn.Embedding(3, 2), "weight")


def block_sizes(n_inputs: int, width: int, n_blocks: int, n_classes: int, expansion: int = 2):
    """Closed-form parameter counts of ResidualMLP's blocks (as blocks_of groups them) and head."""
    block = (
        2 * width
        + (width * expansion * width + expansion * width)
        + (expansion * width * width + width)
    )
    sizes = [n_inputs * width + width] + [block] * n_blocks
    sizes[-1] += 2 * width  # the final LayerNorm travels with the top block
    return sizes, width * n_classes + n_classes


@pytest.mark.parametrize(
    "ratio, n_frozen", [(0.0, 0), (0.25, 1), (0.3, 1), (0.5, 2), (0.75, 3), (0.99, 3), (1.0, 4)]
)
def test_freeze_by_ratio_freezes_the_bottom_fraction(ratio, n_frozen):
    model = mlp(n_blocks=3)
    blocks, _ = blocks_of(model)
    assert freeze_by_ratio(blocks, ratio) == n_frozen
    for index, block in enumerate(blocks):
        flags = (
            {p.requires_grad for part in block for p in part.parameters()}
            if index
            else {p.requires_grad for p in model.stem.parameters()}
        )
        assert flags == {index >= n_frozen}
    sizes, head = block_sizes(12, 8, 3, 5)
    assert count_parameters(model, trainable_only=False) == sum(sizes) + head
    assert count_parameters(model) == sum(sizes[n_frozen:]) + head
    assert all(p.requires_grad for p in model.head.parameters())


def test_freezing_again_with_a_lower_ratio_unfreezes():
    model = mlp(n_blocks=3)
    blocks, _ = blocks_of(model)
    freeze_by_ratio(blocks, 1.0)
    freeze_by_ratio(blocks, 0.0)
    assert count_parameters(model) == count_parameters(model, trainable_only=False)
    with pytest.raises(ValueError, match="ratio"):
        freeze_by_ratio(blocks, 1.5)


@pytest.mark.slow
def test_frozen_blocks_do_not_change_in_training():
    model = mlp(n_blocks=2)
    blocks, head = blocks_of(model)
    assert freeze_by_ratio(blocks, 2 / 3) == 2  # of [stem], [blocks.0], [blocks.1, norm]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(layerwise_param_groups(model, blocks, head, 1e-2))
    loss = nn.functional.cross_entropy(model(torch.randn(6, 12)), torch.arange(6) % 5)
    loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param)
        assert changed == (not name.startswith(("stem", "blocks.0."))), name


def test_set_dropout_reaches_attention_too():
    model = transformer(n_layers=2)
    assert set_dropout(model, 0.3) == 2 * 3 + 2  # 3 nn.Dropout + 1 attention per layer
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, nn.Dropout))
    assert all(m.dropout == 0.3 for m in model.modules() if isinstance(m, nn.MultiheadAttention))
    set_dropout(model, 0.0)
    tokens = torch.randint(2, 20, (4, 6))
    with torch.no_grad():
        train_out = model.train()(tokens)
        eval_out = model.eval()(tokens)
    torch.testing.assert_close(train_out, eval_out)
    with pytest.raises(ValueError):
        set_dropout(model, 1.0)
