"""helpers.parallel.sharding: tensor parallelism and FSDP2 proved equal to one process (gloo, 2 ranks),
with Adam, whose state FSDP shards."""

from __future__ import annotations

import pytest
import torch

from helpers.parallel import sharding as sh
from helpers.parallel.launch import launch

pytestmark = pytest.mark.timeout(90)


def test_block_mlp_shapes_and_plan():
    job = sh.ShardingJob(in_features=5, dim=8, hidden=32, n_blocks=3, classes=4)
    model = sh.make_block_mlp(job)
    assert model(torch.randn(2, 5)).shape == (2, 4)
    plan = sh.tensor_parallel_plan(model)
    assert sorted(plan) == sorted(f"blocks.{i}.{j}" for i in range(3) for j in (0, 2))
    assert type(plan["blocks.0.0"]).__name__ == "ColwiseParallel"
    assert type(plan["blocks.2.2"]).__name__ == "RowwiseParallel"
    assert (
        sh.parameter_bytes(model)
        == sh.full_parameter_bytes(model)
        == 4 * sum(p.numel() for p in model.parameters())
    )


def test_optimizer_state_bytes_counts_adams_moments_not_its_step():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    assert sh.optimizer_state_bytes(opt) == 0  # no state before the first step
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    assert sh.optimizer_state_bytes(opt) == 2 * 4 * (4 * 3 + 3)


def test_collective_counter_ignores_ordinary_ops():
    with sh.CollectiveCounter() as counter:
        (torch.randn(3, 3) @ torch.randn(3, 3)).sum()
    assert counter.summary() == {}


def test_fsdp_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="does not split evenly"):
        sh.fsdp_equivalence(0, 3, sh.ShardingJob(batch=16))


@pytest.mark.multiprocess
def test_tensor_parallel_and_fsdp_equal_one_process():
    job = sh.ShardingJob(in_features=12, dim=16, hidden=64, n_blocks=2, batch=8, steps=2)
    ranks = launch(sh.sharding_demo, 2, job, device="cpu", threads_per_worker=1, echo=False)
    for rank in ranks:
        for kind in ("tensor_parallel", "fsdp"):
            res = rank[kind]
            # Adam divides each gradient by its running size: rounding in a gradient near zero
            # grows in its update, so the parameters are held to 1e-5
            assert (
                res["loss_diff"] <= 1e-6 and res["grad_diff"] <= 1e-6 and res["param_diff"] <= 1e-5
            ), kind
            assert res["losses"][1] < res["losses"][0], "the steps train"
            # Adam keeps two moments per parameter, in the parameters' dtype
            assert res["full_optimizer_state_bytes"] == 2 * res["full_param_bytes"], kind
    tp, fsdp = ranks[0]["tensor_parallel"], ranks[0]["fsdp"]
    full = tp["full_param_bytes"]
    replicated = 4 * ((12 * 16 + 16) + (16 * 10 + 10) + 2 * 16)  # embed, head, row-wise biases
    assert tp["param_bytes"] == replicated + (full - replicated) // 2
    # one all-reduce of the (batch x dim) activations per block, forward and backward
    assert tp["forward_collectives"] == {"all_reduce": (2, 2 * 8 * 16 * 4)}
    assert tp["backward_collectives"] == {"all_reduce": (2, 2 * 8 * 16 * 4)}
    assert sum(r["fsdp"]["param_bytes"] for r in ranks) == full  # sizes here split evenly
    # FSDP shards the optimizer state with the parameters: each rank holds 1/W of Adam's moments
    assert [r["fsdp"]["optimizer_state_bytes"] for r in ranks] == [full, full]  # 2 x full / 2 ranks
    assert tp["optimizer_state_bytes"] == 2 * tp["param_bytes"]
    assert fsdp["param_bytes"] < fsdp["peak_forward_param_bytes"] < full
    assert set(fsdp["forward_collectives"]) == {"_allgather_base_"}
    assert fsdp["backward_collectives"]["_reduce_scatter_base_"] == (3, full)
    assert all(p == "(Shard(dim=0),)" for p in fsdp["placements"].values())
