"""helpers.parallel.pipeline: splitting, schedules, the bubble, and the pipelines run for real (gloo)."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
import torch

from helpers.parallel import pipeline as pl
from helpers.parallel.launch import launch

pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------------ splitting

@pytest.mark.parametrize("cuts", [[10], [3, 12], [1, 2, 3]])
def test_split_stages_run_one_after_another_equal_the_model(cuts):
    torch.manual_seed(0)
    model = pl.make_mini_alexnet(classes=10, channels=8)
    x = torch.randn(4, 3, 32, 32)
    h = x
    stages = pl.split_sequential(model, cuts)
    assert len(stages) == len(cuts) + 1
    assert sum(len(s) for s in stages) == len(model)
    for stage in stages:
        h = stage(h)
    assert torch.equal(h, model(x))
    assert stages[0][0] is model[0], "stages share the model's modules, no copies"


@pytest.mark.parametrize("bad", [[0], [19], [5, 5], [6, 4]])
def test_split_rejects_empty_stages(bad):
    with pytest.raises(ValueError, match="strictly increasing"):
        pl.split_sequential(pl.make_mini_alexnet(channels=4), bad)


def test_activation_shapes_follow_the_stages():
    model = pl.make_mini_alexnet(channels=8)
    stages = pl.split_sequential(model, [3, 6, 14])
    assert pl.activation_shapes(stages, (3, 32, 32)) == [(8, 16, 16), (16, 8, 8), (16 * 16,), (10,)]


def test_even_cuts_and_stage_costs():
    assert pl.even_cuts(8, 2) == [4]
    assert pl.even_cuts(9, 3) == [3, 6]
    assert pl.stage_costs([1, 2, 3, 4], [1, 3]) == [1.0, 5.0, 4.0]
    with pytest.raises(ValueError):
        pl.even_cuts(2, 3)


def brute_force_best(costs, n_stages):
    return min(max(pl.stage_costs(costs, cuts)) for cuts in combinations(range(1, len(costs)), n_stages - 1))


@pytest.mark.parametrize("seed", range(5))
def test_balanced_cuts_minimise_the_slowest_stage(seed):
    rng = random.Random(seed)
    costs = [rng.uniform(0.1, 5.0) for _ in range(rng.randint(4, 9))]
    for n_stages in (2, 3):
        cuts = pl.balanced_cuts(costs, n_stages)
        assert len(cuts) == n_stages - 1
        assert max(pl.stage_costs(costs, cuts)) == pytest.approx(brute_force_best(costs, n_stages))


def test_balanced_cuts_known_case_and_errors():
    assert pl.balanced_cuts([8, 1, 1, 1, 1], 2) == [1]  # one heavy layer alone
    assert pl.balanced_cuts([1, 1, 1, 1], 2) == [2]
    with pytest.raises(ValueError):
        pl.balanced_cuts([1, 2], 3)
    with pytest.raises(ValueError):
        pl.balanced_cuts([1, -2], 2)


def test_profile_layers_times_every_layer():
    model = pl.make_mini_alexnet(channels=4)
    rows = pl.profile_layers(model, torch.randn(2, 3, 32, 32), repeats=1)
    assert [r["index"] for r in rows] == list(range(len(model)))
    assert rows[0]["layer"] == "Conv2d 3->4 5x5" and rows[0]["params"] == 3 * 4 * 25 + 4
    assert all(r["seconds"] > 0 for r in rows)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()), "profiling leaves no gradients behind"


# ------------------------------------------------------------------ schedules and the bubble

def test_theoretical_bubble():
    assert pl.theoretical_bubble(2, 1) == 0.5
    assert pl.theoretical_bubble(2, 8) == pytest.approx(1 / 9)
    assert pl.theoretical_bubble(4, 4) == pytest.approx(3 / 7)
    assert pl.theoretical_bubble(1, 5) == 0.0
    for bad in [(0, 1), (2, 0), (2.0, 4), (True, 4)]:
        with pytest.raises(ValueError):
            pl.theoretical_bubble(*bad)


def ops(text):
    return [pl.Op(t[0], int(t[1:])) for t in text.split()]


def test_gpipe_order():
    assert pl.gpipe_order(1, 2, 3) == ops("F0 F1 F2 B0 B1 B2")
    assert pl.gpipe_order(0, 2, 1) == ops("F0 B0"), "m = 1 is the naive split"


def test_one_f_one_b_order_matches_torch_schedule1f1b():
    # the orders torch 2.13's Schedule1F1B runs (recorded in pipeline_equivalence, see below)
    assert pl.one_f_one_b_order(0, 2, 4) == ops("F0 F1 B0 F2 B1 F3 B2 B3")
    assert pl.one_f_one_b_order(1, 2, 4) == ops("F0 B0 F1 B1 F2 B2 F3 B3")
    assert pl.one_f_one_b_order(0, 4, 2) == ops("F0 F1 B0 B1")
    with pytest.raises(ValueError):
        pl.one_f_one_b_order(2, 2, 4)


@pytest.mark.parametrize("p,m", [(2, 1), (2, 8), (3, 5), (4, 16)])
def test_every_microbatch_once_forward_before_backward(p, m):
    for name in pl.SCHEDULES:
        for stage in range(p):
            order = pl.schedule_order(name, stage, p, m)
            assert sorted(map(str, order)) == sorted([f"F{i}" for i in range(m)] + [f"B{i}" for i in range(m)])
            assert all(order.index(pl.Op("F", i)) < order.index(pl.Op("B", i)) for i in range(m))


@pytest.mark.parametrize("p,m", [(2, 8), (4, 3), (4, 16)])
def test_activations_held_gpipe_m_versus_1f1b_p_minus_stage(p, m):
    for stage in range(p):
        assert pl.peak_in_flight(pl.gpipe_order(stage, p, m)) == m
        assert pl.peak_in_flight(pl.one_f_one_b_order(stage, p, m)) == min(m, p - stage)


def test_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match="gpipe, 1f1b"):
        pl.schedule_order("interleaved", 0, 2, 2)


@pytest.mark.parametrize("p,m,tf,tb", [(2, 1, 1, 2), (2, 8, 1, 2), (3, 4, 1.5, 1), (4, 16, 1, 2)])
def test_simulated_gpipe_and_1f1b_bubbles_equal_the_formula(p, m, tf, tb):
    for name in pl.SCHEDULES:
        intervals = pl.simulate(name, p, m, tf, tb)
        assert len(intervals) == 2 * p * m
        assert pl.bubble_fraction(intervals) == pytest.approx(pl.theoretical_bubble(p, m))
        makespan = max(i.end for i in intervals)
        assert makespan == pytest.approx((m + p - 1) * (tf + tb))


def test_simulated_naive_split_has_one_stage_busy_at_a_time():
    intervals = sorted(pl.simulate("gpipe", 3, 1, 1.0, 2.0), key=lambda i: i.start)
    assert [(i.rank, i.kind) for i in intervals] == [(0, "F"), (1, "F"), (2, "F"), (2, "B"), (1, "B"), (0, "B")]
    assert all(a.end <= b.start for a, b in zip(intervals, intervals[1:], strict=False))
    assert pl.busy_fractions(intervals) == pytest.approx([1 / 3] * 3)
    assert pl.parallel_time(intervals) == 0.0


def test_parallel_time_counts_overlap_of_two_or_more_ranks():
    intervals = [pl.Interval(0, "F", 0, 0.0, 4.0), pl.Interval(1, "F", 0, 1.0, 2.0),
                 pl.Interval(1, "F", 1, 3.0, 6.0), pl.Interval(2, "F", 0, 3.5, 5.0)]
    assert pl.parallel_time(intervals) == pytest.approx(1.0 + 1.0 + 1.0)  # [1,2], [3,4], [4,5]
    gpipe = pl.simulate("gpipe", 2, 4, 1.0, 2.0)
    assert pl.parallel_time(gpipe) == pytest.approx(3 * 1.0 + 3 * 2.0)  # F1-F3 and B0-B2 overlap


def test_imbalanced_stages_and_communication_add_idle_time():
    balanced = pl.bubble_fraction(pl.simulate("gpipe", 2, 8, 1.0, 2.0))
    slow_stage = pl.bubble_fraction(pl.simulate("gpipe", 2, 8, [1.0, 2.0], [2.0, 4.0]))
    with_comm = pl.bubble_fraction(pl.simulate("gpipe", 2, 8, 1.0, 2.0, t_comm=0.5))
    # stage 1 twice as slow: it runs 8 x (2 + 4) = 48 of a 1 + 48 + 2 = 51 step; stage 0 runs 24
    assert slow_stage == pytest.approx(1 - (24 + 48) / (2 * 51))
    # each of the two pipeline hops (fill and drain) adds its latency to the step
    assert max(i.end for i in pl.simulate("gpipe", 2, 8, 1.0, 2.0, t_comm=0.5)) == pytest.approx(9 * 3 + 2 * 0.5)
    assert balanced < with_comm < slow_stage


def test_busy_fractions_of_a_hand_made_timeline():
    intervals = [pl.Interval(0, "F", 0, 0.0, 1.0), pl.Interval(1, "F", 0, 1.0, 2.0),
                 pl.Interval(1, "B", 0, 2.0, 4.0), pl.Interval(0, "B", 0, 4.0, 6.0)]
    assert pl.busy_fractions(intervals) == pytest.approx([0.5, 0.5])
    assert pl.bubble_fraction(intervals) == pytest.approx(0.5)
    assert pl.busy_fractions(intervals, span=(-2.0, 6.0)) == pytest.approx([3 / 8, 3 / 8])
    assert pl.busy_fractions(intervals, n_ranks=3) == pytest.approx([0.5, 0.5, 0.0])
    with pytest.raises(ValueError):
        pl.bubble_fraction([])


def test_timeline_frame_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intervals = pl.simulate("1f1b", 2, 4, 1.0, 2.0)
    frame = pl.timeline_frame(intervals)
    assert len(frame) == 16 and frame["start_ms"].min() == 0.0
    fig, ax = plt.subplots()
    pl.plot_timeline(intervals, ax, "1F1B", unit=1.0)
    assert len(ax.patches) == 16
    plt.close(fig)


def test_typical_steps_keep_the_median_step_its_speedup_and_error():
    def step(m, repeat, slow, rank):  # repeat 1 runs 3x slower (another program took the core)
        return {"schedule": "gpipe", "m": m, "repeat": repeat, "rank": rank, "t0": 0.0,
                "intervals": [i for i in pl.simulate("gpipe", 2, m, slow / m, 2 * slow / m)
                              if i.rank == rank], "peak_bytes": 0, "peak_in_flight": m}

    rows = [[step(m, repeat, slow, r) for m in (1, 8) for repeat, slow in enumerate((1.0, 3.0, 1.1))]
            for r in (0, 1)]
    steps = pl.summarize_steps(rows, batch=64)
    assert len(steps) == 6 and steps["bubble"].tolist() == pytest.approx([0.5] * 3 + [1 / 9] * 3)
    table = pl.typical_steps(steps).set_index("m")
    assert table.loc[8, "bubble_error"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc[1, "step_s"] == pytest.approx(2 * 3 * 1.1), "the median of 1, 1.1, 3"
    assert table.loc[8, "speedup_vs_naive"] == pytest.approx(6.0 / (9 * 3 / 8))
    fastest = pl.typical_steps(steps, "fastest").set_index("m")
    assert fastest.loc[1, "step_s"] == pytest.approx(6.0)
    intervals, _ = pl.representative_step(rows, "gpipe", 1)
    assert max(i.end for i in intervals) == pytest.approx(6.6)
    with pytest.raises(ValueError):
        pl.typical_steps(steps, "mean")


# ------------------------------------------------------------------ for real, on two processes

def test_every_pipeline_equals_the_unsplit_model():
    """Three stages (a middle one both receives and sends), five ways, against one process."""
    job = pl.PipelineJob(model="alexnet", width=8, batch=18, n_micro=3, cuts=(4, 10))
    ranks = launch(pl.pipeline_equivalence, 3, job, device="cpu", threads_per_worker=1,
                   oversubscribe=True, echo=False)
    methods = ranks[-1]["methods"]
    assert set(methods) == {"naive split (send/recv)", "hand-written GPipe", "hand-written 1F1B",
                            "torch ScheduleGPipe", "torch Schedule1F1B"}
    for name in methods:
        assert abs(methods[name]["loss"] - ranks[-1]["reference_loss"]) <= 1e-6, name
        assert max(r["methods"][name]["grad_diff"] for r in ranks) <= 1e-6, name
        assert ranks[0]["methods"][name]["loss"] is None, "only the last stage has the loss"
    for rank in range(3):
        recorded = ranks[rank]["methods"]
        assert recorded["torch ScheduleGPipe"]["order"] == list(map(str, pl.gpipe_order(rank, 3, 3)))
        assert recorded["torch Schedule1F1B"]["order"] == list(map(str, pl.one_f_one_b_order(rank, 3, 3)))
    assert sum(r["stage_param_bytes"] for r in ranks) == ranks[0]["model_param_bytes"]
    assert [len(r["stage_layers"]) for r in ranks] == [4, 6, 9]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_run_schedule_accumulates_microbatches_to_the_whole_batch_gradient(schedule):
    """One stage, no process group needed: m micro-batches of loss/m give the batch's gradient."""
    job = pl.PipelineJob(model="stack", width=16, blocks_per_stage=3, batch=12)
    model = pl.build_model(job, 1)
    x, y = pl.make_batch(job)
    full_loss = torch.nn.functional.cross_entropy(model(x), y)
    full_loss.backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    recorder = pl.Recorder(0)
    xs, ys = list(x.chunk(4)), list(y.chunk(4))
    loss = pl.run_schedule(model, pl.schedule_order(schedule, 0, 1, 4), rank=0, n_stages=1,
                           sizes=[3] * 4, in_shape=(), out_shape=(10,), inputs=xs, targets=ys,
                           loss_fn=torch.nn.functional.cross_entropy, recorder=recorder)
    assert loss == pytest.approx(full_loss.item(), abs=1e-6)
    for p, ref in zip(model.parameters(), reference, strict=True):
        assert torch.allclose(p.grad, ref, atol=1e-6, rtol=0)
    assert [f"{i.kind}{i.microbatch}" for i in recorder.intervals] == list(
        map(str, pl.schedule_order(schedule, 0, 1, 4)))
    assert recorder.peak_in_flight == pl.peak_in_flight(pl.schedule_order(schedule, 0, 1, 4))
    assert recorder.peak_bytes > 0 and not recorder.held
    with pytest.raises(ValueError, match="input micro-batches"):
        pl.run_schedule(model, [], rank=0, n_stages=1, sizes=[3] * 4, in_shape=(), out_shape=(10,),
                        inputs=None, targets=ys, loss_fn=torch.nn.functional.cross_entropy)


def test_recorder_counts_activation_bytes_once_and_skips_parameters():
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    recorder = pl.Recorder(0)
    x = torch.randn(5, 8)
    with recorder.saving(0, list(layer.parameters())):
        out = layer(x)
    # saved: x (by Linear 1), the ReLU output (by ReLU and by Linear 2, counted once);
    # Linear 1's pre-activation is not saved, the weights are parameters
    assert recorder.held == {0: 2 * 5 * 8 * 4}
    with recorder.saving(1, list(layer.parameters())):
        layer(x)
    assert recorder.peak_bytes == 2 * 2 * 5 * 8 * 4 and recorder.peak_in_flight == 2
    recorder.release(0)
    assert recorder.held == {1: 2 * 5 * 8 * 4}
    out.sum().backward()


def test_measured_steps_have_the_shape_of_their_schedule():
    job = pl.PipelineJob(model="stack", width=32, blocks_per_stage=1, batch=32,
                         schedules=("gpipe", "1f1b", "torch-gpipe", "torch-1f1b"),
                         micro_batches=(1, 4), warmup=1, repeats=2)
    ranks = launch(pl.measure_pipeline, 2, job, device="cpu", threads_per_worker=1, echo=False)
    steps = pl.summarize_steps(ranks, job.batch)
    # torch's 1F1B needs m >= p: no m = 1 row for it
    assert sorted(set(zip(steps["schedule"], steps["m"], strict=True))) == sorted(
        [("gpipe", 1), ("gpipe", 4), ("1f1b", 1), ("1f1b", 4), ("torch-gpipe", 1),
         ("torch-gpipe", 4), ("torch-1f1b", 4)])
    assert len(steps) == 7 * 2
    assert steps["bubble"].between(0, 1).all() and (steps["step_s"] > 0).all()
    for row in ranks[0]:
        ops_seen = [pl.Op(i.kind, i.microbatch) for i in row["intervals"]]
        expected = pl.schedule_order(row["schedule"].removeprefix("torch-"), 0, 2, row["m"])
        assert ops_seen == expected
        assert row["peak_in_flight"] == pl.peak_in_flight(expected)
    for rank_rows in ranks:  # a rank never does two things at once
        for row in rank_rows:
            spans = sorted((i.start, i.end) for i in row["intervals"])
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    intervals, t0 = pl.representative_step(ranks, "gpipe", 4)
    assert len(intervals) == 2 * 2 * 4 and t0 <= min(i.start for i in intervals)


def test_workers_refuse_bad_jobs_before_starting():
    with pytest.raises(ValueError, match="known: gpipe, 1f1b, torch-gpipe, torch-1f1b"):
        pl.measure_pipeline(0, 2, pl.PipelineJob(schedules=("zero-bubble",)))
    with pytest.raises(ValueError, match=r"does not split into \[3\] equal"):
        pl.measure_pipeline(0, 2, pl.PipelineJob(batch=32, micro_batches=(1, 2, 3)))
    with pytest.raises(ValueError, match="does not split"):
        pl.pipeline_equivalence(0, 2, pl.PipelineJob(batch=30, n_micro=4))
    with pytest.raises(ValueError, match="1F1B needs"):
        pl.pipeline_equivalence(0, 4, pl.PipelineJob(batch=32, n_micro=2))
