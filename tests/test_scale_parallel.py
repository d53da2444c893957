"""helpers.scale.zero and helpers.scale.ddp_hooks on 2 real gloo ranks: ZeRO-1, ZeRO-2,
ZeroRedundancyOptimizer and FSDP2 equal DDP + Adam; hook-DDP (per parameter, bucketed, async)
equals DistributedDataParallel; removing the communication breaks both. The second job also
runs the all-reduce timer of helpers.scale.comm_model, through helpers.scale.jobs.several."""

from __future__ import annotations

import pytest

from helpers.parallel.launch import launch
from helpers.scale import comm_model as cm
from helpers.scale import ddp_hooks as dh
from helpers.scale import zero
from helpers.scale.jobs import several
from helpers.scale.recompute import ModelSpec

pytestmark = [pytest.mark.timeout(180), pytest.mark.multiprocess]
SPEC = ModelSpec(vocab=16, width=32, heads=4, n_blocks=2, max_len=16)


@pytest.mark.multiprocess
def test_zero_stages_equal_ddp_and_shard_the_state():
    ranks = launch(
        zero.zero_demo,
        2,
        zero.ZeroJob(spec=SPEC, batch=4, seq=12, steps=3),
        device="cpu",
        threads_per_worker=1,
        echo=False,
    )
    psi = ranks[0]["psi"]
    for r in ranks:
        v = r["variants"]
        for name in ("zero1", "zero2", "torch_zero_redundancy", "fsdp2"):
            assert v[name]["max_abs_diff"] <= 1e-6, name
        assert v["zero1_no_allgather"]["max_abs_diff"] > 1e-4  # negative control
        ddp_state = v["ddp"]["optimizer_bytes"]
        assert ddp_state == 8 * psi + 4 * len(list(SPEC.build().parameters()))
        shard = 4 * ((psi + 1) // 2)
        assert v["zero1"]["optimizer_bytes"] == v["zero2"]["optimizer_bytes"] == 2 * shard
        assert abs(v["zero1"]["optimizer_bytes"] / ddp_state - 0.5) < 0.05
        assert v["zero1"]["grad_bytes"] == 2 * shard and v["zero2"]["grad_bytes"] == shard
        # both stages first copy every .grad into a full flat buffer: 4Ψ of grads + 2 shards
        for name in ("zero1", "zero2"):
            assert v[name]["grad_peak_bytes"] == 4 * psi + 2 * shard, name
        assert v["fsdp2"]["param_bytes"] < 0.6 * v["ddp"]["param_bytes"]
        assert v["ddp"]["volume_psi"] == pytest.approx(2.0)
        assert v["zero1"]["volume_psi"] == pytest.approx(3.0, abs=1e-3)
        assert v["zero2"]["volume_psi"] == pytest.approx(2.0, abs=1e-3)
        assert set(v["zero2"]["step_collectives"]) == {"_reduce_scatter_base_", "_allgather_base_"}


def test_assign_buckets():
    assert dh.assign_buckets([4, 4, 4, 4], None) == [[3], [2], [1], [0]]
    assert dh.assign_buckets([4, 4, 4, 4], 8) == [[3, 2], [1, 0]]
    assert dh.assign_buckets([4, 4, 4], 8) == [[2, 1], [0]]
    assert dh.assign_buckets([100, 1, 1], 8) == [[2, 1, 0]]
    assert dh.assign_buckets([1, 1, 100], 8) == [[2], [1, 0]]
    with pytest.raises(ValueError):
        dh.assign_buckets([1], 0)


@pytest.mark.multiprocess
def test_hook_ddp_equals_ddp_and_allreduce_timings_in_one_job():
    job = dh.HookJob(spec=SPEC, batch=4, seq=12, steps=3)
    both = launch(
        several,
        2,
        [(dh.hook_ddp_equivalence, (job,)), (cm.time_allreduce, ([64, 4096], 2, 1))],
        device="cpu",
        threads_per_worker=1,
        echo=False,
    )
    ranks = [b[0] for b in both]
    timings = both[0][1]
    assert [t["bytes"] for t in timings] == [64, 4096]
    assert all(0 < t["best_s"] <= t["median_s"] < 5 for t in timings)
    for r in ranks:
        modes = r["modes"]
        for name in ("per-parameter", "bucketed", "bucketed async"):
            assert modes[name]["max_abs_diff"] <= 1e-6, name
            assert modes[name]["rank_spread"] == 0.0, name
        assert modes["per-parameter"]["allreduces_per_step"] == r["n_params"]
        assert modes["bucketed"]["allreduces_per_step"] < r["n_params"]
        control = modes["no all-reduce (control)"]
        assert control["max_abs_diff"] > 1e-4 and control["rank_spread"] > 1e-4
        assert control["allreduces_per_step"] == 0


def test_hook_ddp_on_one_rank_keeps_gradients_and_refuses_unused_parameters(tmp_path):
    import torch
    import torch.distributed as dist
    from torch import nn

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        reference = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        reference.load_state_dict(model.state_dict())
        hooked = dh.HookDDP(model, bucket_bytes=64, async_op=True)
        x = torch.randn(5, 4)
        model(x).square().sum().backward()
        hooked.finish()
        reference(x).square().sum().backward()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)  # one rank: the average is the gradient itself
        hooked.remove()
        partly_used = nn.ModuleDict({"used": nn.Linear(4, 2), "unused": nn.Linear(4, 2)})
        hooked = dh.HookDDP(partly_used)
        partly_used["used"](x).sum().backward()
        with pytest.raises(RuntimeError, match="received no gradient"):
            hooked.finish()
    finally:
        dist.destroy_process_group()
