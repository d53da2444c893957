"""helpers.parallel stages, pipeline_schedules, sendrecv and pipeline: splitting, schedules, the bubble
and its overhead model, and the pipelines run for real (gloo)."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
import torch

from helpers.parallel import pipeline as pl
from helpers.parallel import pipeline_results as pr
from helpers.parallel import pipeline_schedules as ps
from helpers.parallel import sendrecv as sr
from helpers.parallel import stages as st
from helpers.parallel.launch import launch

pytestmark = pytest.mark.timeout(90)


# ------------------------------------------------------------------ splitting


@pytest.mark.parametrize("cuts", [[10], [3, 12], [1, 2, 3]])
def test_split_stages_run_one_after_another_equal_the_model(cuts):
    torch.manual_seed(0)
    model = st.make_mini_alexnet(classes=10, channels=8)
    x = torch.randn(4, 3, 32, 32)
    h = x
    stages = st.split_sequential(model, cuts)
    assert len(stages) == len(cuts) + 1
    assert sum(len(s) for s in stages) == len(model)
    for stage in stages:
        h = stage(h)
    assert torch.equal(h, model(x))
    assert stages[0][0] is model[0], "stages share the model's modules, no copies"


@pytest.mark.parametrize("bad", [[0], [19], [5, 5], [6, 4]])
def test_split_rejects_empty_stages(bad):
    with pytest.raises(ValueError, match="strictly increasing"):
        st.split_sequential(st.make_mini_alexnet(channels=4), bad)


def test_activation_shapes_follow_the_stages():
    model = st.make_mini_alexnet(channels=8)
    stages = st.split_sequential(model, [3, 6, 14])
    assert st.activation_shapes(stages, (3, 32, 32)) == [(8, 16, 16), (16, 8, 8), (16 * 16,), (10,)]


def test_even_cuts_and_stage_costs():
    assert st.even_cuts(8, 2) == [4]
    assert st.even_cuts(9, 3) == [3, 6]
    assert st.stage_costs([1, 2, 3, 4], [1, 3]) == [1.0, 5.0, 4.0]
    with pytest.raises(ValueError):
        st.even_cuts(2, 3)


def brute_force_best(costs, n_stages):
    return min(
        max(st.stage_costs(costs, cuts))
        for cuts in combinations(range(1, len(costs)), n_stages - 1)
    )


@pytest.mark.parametrize("seed", range(5))
def test_balanced_cuts_minimise_the_slowest_stage(seed):
    rng = random.Random(seed)
    costs = [rng.uniform(0.1, 5.0) for _ in range(rng.randint(4, 9))]
    for n_stages in (2, 3):
        cuts = st.balanced_cuts(costs, n_stages)
        assert len(cuts) == n_stages - 1
        assert max(st.stage_costs(costs, cuts)) == pytest.approx(brute_force_best(costs, n_stages))


def test_balanced_cuts_known_case_and_errors():
    assert st.balanced_cuts([8, 1, 1, 1, 1], 2) == [1]  # one heavy layer alone
    assert st.balanced_cuts([1, 1, 1, 1], 2) == [2]
    with pytest.raises(ValueError):
        st.balanced_cuts([1, 2], 3)
    with pytest.raises(ValueError):
        st.balanced_cuts([1, -2], 2)


def test_profile_layers_times_every_layer():
    model = st.make_mini_alexnet(channels=4)
    rows = st.profile_layers(model, torch.randn(2, 3, 32, 32), repeats=1)
    assert [r["index"] for r in rows] == list(range(len(model)))
    assert rows[0]["layer"] == "Conv2d 3->4 5x5" and rows[0]["params"] == 3 * 4 * 25 + 4
    assert all(r["seconds"] > 0 for r in rows)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    assert all(p.grad is None for p in model.parameters()), "profiling leaves no gradients behind"


# ------------------------------------------------------------------ schedules and the bubble


def test_theoretical_bubble():
    assert ps.theoretical_bubble(2, 1) == 0.5
    assert ps.theoretical_bubble(2, 8) == pytest.approx(1 / 9)
    assert ps.theoretical_bubble(4, 4) == pytest.approx(3 / 7)
    assert ps.theoretical_bubble(1, 5) == 0.0
    for bad in [(0, 1), (2, 0), (2.0, 4), (True, 4)]:
        with pytest.raises(ValueError):
            ps.theoretical_bubble(*bad)


def ops(text):
    return [ps.Op(t[0], int(t[1:])) for t in text.split()]


def test_gpipe_order():
    assert ps.gpipe_order(1, 2, 3) == ops("F0 F1 F2 B0 B1 B2")
    assert ps.gpipe_order(0, 2, 1) == ops("F0 B0"), "m = 1 is the naive split"


def test_one_f_one_b_order_matches_torch_schedule1f1b():
    # the orders torch 2.13's Schedule1F1B runs (recorded in pipeline_equivalence, see below)
    assert ps.one_f_one_b_order(0, 2, 4) == ops("F0 F1 B0 F2 B1 F3 B2 B3")
    assert ps.one_f_one_b_order(1, 2, 4) == ops("F0 B0 F1 B1 F2 B2 F3 B3")
    assert ps.one_f_one_b_order(0, 4, 2) == ops("F0 F1 B0 B1")
    with pytest.raises(ValueError):
        ps.one_f_one_b_order(2, 2, 4)


@pytest.mark.parametrize("p,m", [(2, 1), (2, 8), (3, 5), (4, 16)])
def test_every_microbatch_once_forward_before_backward(p, m):
    for name in ps.SCHEDULES:
        for stage in range(p):
            order = ps.schedule_order(name, stage, p, m)
            assert sorted(map(str, order)) == sorted(
                [f"F{i}" for i in range(m)] + [f"B{i}" for i in range(m)]
            )
            assert all(order.index(ps.Op("F", i)) < order.index(ps.Op("B", i)) for i in range(m))


@pytest.mark.parametrize("p,m", [(2, 8), (4, 3), (4, 16)])
def test_activations_held_gpipe_m_versus_1f1b_p_minus_stage(p, m):
    for stage in range(p):
        assert ps.peak_in_flight(ps.gpipe_order(stage, p, m)) == m
        assert ps.peak_in_flight(ps.one_f_one_b_order(stage, p, m)) == min(m, p - stage)


def test_unknown_schedule_lists_the_known_ones():
    with pytest.raises(ValueError, match="gpipe, 1f1b"):
        ps.schedule_order("interleaved", 0, 2, 2)


@pytest.mark.parametrize("p,m,tf,tb", [(2, 1, 1, 2), (2, 8, 1, 2), (3, 4, 1.5, 1), (4, 16, 1, 2)])
def test_simulated_gpipe_and_1f1b_bubbles_equal_the_formula(p, m, tf, tb):
    for name in ps.SCHEDULES:
        intervals = ps.simulate(name, p, m, tf, tb)
        assert len(intervals) == 2 * p * m
        assert ps.bubble_fraction(intervals) == pytest.approx(ps.theoretical_bubble(p, m))
        makespan = max(i.end for i in intervals)
        assert makespan == pytest.approx((m + p - 1) * (tf + tb))


def test_simulated_naive_split_has_one_stage_busy_at_a_time():
    intervals = sorted(ps.simulate("gpipe", 3, 1, 1.0, 2.0), key=lambda i: i.start)
    assert [(i.rank, i.kind) for i in intervals] == [
        (0, "F"),
        (1, "F"),
        (2, "F"),
        (2, "B"),
        (1, "B"),
        (0, "B"),
    ]
    assert all(a.end <= b.start for a, b in zip(intervals, intervals[1:], strict=False))
    assert ps.busy_fractions(intervals) == pytest.approx([1 / 3] * 3)
    assert ps.parallel_time(intervals) == 0.0


def test_parallel_time_counts_overlap_of_two_or_more_ranks():
    intervals = [
        ps.Interval(0, "F", 0, 0.0, 4.0),
        ps.Interval(1, "F", 0, 1.0, 2.0),
        ps.Interval(1, "F", 1, 3.0, 6.0),
        ps.Interval(2, "F", 0, 3.5, 5.0),
    ]
    assert ps.parallel_time(intervals) == pytest.approx(1.0 + 1.0 + 1.0)  # [1,2], [3,4], [4,5]
    gpipe = ps.simulate("gpipe", 2, 4, 1.0, 2.0)
    assert ps.parallel_time(gpipe) == pytest.approx(3 * 1.0 + 3 * 2.0)  # F1-F3 and B0-B2 overlap


def test_imbalanced_stages_and_communication_add_idle_time():
    balanced = ps.bubble_fraction(ps.simulate("gpipe", 2, 8, 1.0, 2.0))
    slow_stage = ps.bubble_fraction(ps.simulate("gpipe", 2, 8, [1.0, 2.0], [2.0, 4.0]))
    with_comm = ps.bubble_fraction(ps.simulate("gpipe", 2, 8, 1.0, 2.0, t_comm=0.5))
    # stage 1 twice as slow: it runs 8 x (2 + 4) = 48 of a 1 + 48 + 2 = 51 step; stage 0 runs 24
    assert slow_stage == pytest.approx(1 - (24 + 48) / (2 * 51))
    # each of the two pipeline hops (fill and drain) adds its latency to the step
    assert max(i.end for i in ps.simulate("gpipe", 2, 8, 1.0, 2.0, t_comm=0.5)) == pytest.approx(
        9 * 3 + 2 * 0.5
    )
    assert balanced < with_comm < slow_stage


@pytest.mark.parametrize("p,m", [(2, 1), (2, 8), (3, 5)])
def test_per_op_overhead_and_hops_add_to_the_ideal_step_in_closed_form(p, m):
    # balanced stages: every slot lasts overhead + compute, and only the fill and the drain
    # pay the hop, so the step is (m + p - 1)(tf + of + tb + ob) + 2 (p - 1) t_comm
    tf, tb, of, ob, hop = 1.0, 2.0, 0.25, 0.5, 0.3
    timeline = ps.simulate(
        "gpipe", p, m, tf, tb, t_comm=hop, overhead_forward=of, overhead_backward=ob
    )
    makespan = max(i.end for i in timeline)
    assert makespan == pytest.approx((m + p - 1) * (tf + of + tb + ob) + 2 * (p - 1) * hop)
    assert all(i.duration == pytest.approx(tf if i.kind == "F" else tb) for i in timeline)
    busy = p * m * (tf + tb)
    assert ps.bubble_fraction(timeline, p, (0.0, makespan)) == pytest.approx(
        1 - busy / (p * makespan)
    )


@pytest.mark.parametrize("p,m", [(2, 8), (3, 4), (2, 1)])
def test_overhead_model_recovers_a_known_timeline(p, m):
    tf, tb = [1.0, 1.2, 0.9][:p], [2.0, 2.5, 1.8][:p]
    of, ob, hop = (0.1, 0.2, 0.05) if m > 1 else (0.0, 0.0, 0.05)
    timeline = ps.simulate(
        "gpipe", p, m, tf, tb, t_comm=hop, overhead_forward=of, overhead_backward=ob
    )
    model = ps.gpipe_overhead_model(timeline, p, m, t0=0.0)
    assert model["forward_overhead_s"] == pytest.approx(of)
    assert model["backward_overhead_s"] == pytest.approx(ob)
    assert model["hop_s"] == pytest.approx(hop)
    assert model["predicted_step_s"] == pytest.approx(model["measured_step_s"])
    assert model["predicted_bubble"] == pytest.approx(model["measured_bubble"])
    assert model["ideal_bubble"] == pytest.approx((p - 1) / (m + p - 1))


def test_overhead_model_of_an_ideal_timeline_is_the_formula_and_it_refuses_other_orders():
    ideal = ps.gpipe_overhead_model(ps.simulate("gpipe", 2, 8, 1.0, 2.0), 2, 8, t0=0.0)
    assert ideal["forward_overhead_s"] == ideal["backward_overhead_s"] == ideal["hop_s"] == 0.0
    assert ideal["predicted_bubble"] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="GPipe order"):
        ps.gpipe_overhead_model(ps.simulate("1f1b", 2, 8, 1.0, 2.0), 2, 8)


def test_simulated_orders_that_wait_for_each_other_are_a_deadlock_error():
    f0, b0 = ps.Op("F", 0), ps.Op("B", 0)
    with pytest.raises(ValueError, match="deadlock"):
        ps.simulate_orders([[b0, f0], [f0, b0]])  # stage 0 wants B0 before its own F0


def test_busy_fractions_of_a_hand_made_timeline():
    intervals = [
        ps.Interval(0, "F", 0, 0.0, 1.0),
        ps.Interval(1, "F", 0, 1.0, 2.0),
        ps.Interval(1, "B", 0, 2.0, 4.0),
        ps.Interval(0, "B", 0, 4.0, 6.0),
    ]
    assert ps.busy_fractions(intervals) == pytest.approx([0.5, 0.5])
    assert ps.bubble_fraction(intervals) == pytest.approx(0.5)
    assert ps.busy_fractions(intervals, span=(-2.0, 6.0)) == pytest.approx([3 / 8, 3 / 8])
    assert ps.busy_fractions(intervals, n_ranks=3) == pytest.approx([0.5, 0.5, 0.0])
    with pytest.raises(ValueError):
        ps.bubble_fraction([])


def test_timeline_frame_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intervals = ps.simulate("1f1b", 2, 4, 1.0, 2.0)
    frame = ps.timeline_frame(intervals)
    assert len(frame) == 16 and frame["start_ms"].min() == 0.0
    fig, ax = plt.subplots()
    ps.plot_timeline(intervals, ax, "1F1B", unit=1.0)
    assert len(ax.patches) == 16
    plt.close(fig)


def test_typical_steps_keep_the_median_step_its_speedup_and_error():
    def step(m, repeat, slow, rank):  # repeat 1 runs 3x slower (another program took the core)
        return {
            "schedule": "gpipe",
            "m": m,
            "repeat": repeat,
            "rank": rank,
            "t0": 0.0,
            "intervals": [
                i for i in ps.simulate("gpipe", 2, m, slow / m, 2 * slow / m) if i.rank == rank
            ],
            "peak_bytes": 0,
            "peak_in_flight": m,
        }

    rows = [
        [step(m, repeat, slow, r) for m in (1, 8) for repeat, slow in enumerate((1.0, 3.0, 1.1))]
        for r in (0, 1)
    ]
    steps = pr.summarize_steps(rows, batch=64)
    assert len(steps) == 6 and steps["bubble"].tolist() == pytest.approx([0.5] * 3 + [1 / 9] * 3)
    table = pr.typical_steps(steps).set_index("m")
    assert table.loc[8, "bubble_error"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc[1, "step_s"] == pytest.approx(2 * 3 * 1.1), "the median of 1, 1.1, 3"
    assert table.loc[8, "speedup_vs_naive"] == pytest.approx(6.0 / (9 * 3 / 8))
    fastest = pr.typical_steps(steps, "fastest").set_index("m")
    assert fastest.loc[1, "step_s"] == pytest.approx(6.0)
    intervals, _ = pr.representative_step(rows, "gpipe", 1)
    assert max(i.end for i in intervals) == pytest.approx(6.6)
    with pytest.raises(ValueError):
        pr.typical_steps(steps, "mean")


# ------------------------------------------------------------------ for real, on two processes


@pytest.mark.multiprocess
def test_every_pipeline_equals_the_unsplit_model():
    """Three stages (a middle one both receives and sends), five ways, against one process."""
    job = pl.PipelineJob(model="alexnet", width=8, batch=18, n_micro=3, cuts=(4, 10))
    ranks = launch(
        pl.pipeline_equivalence,
        3,
        job,
        device="cpu",
        threads_per_worker=1,
        oversubscribe=True,
        echo=False,
    )
    methods = ranks[-1]["methods"]
    assert set(methods) == {
        "naive split (send/recv)",
        "hand-written GPipe",
        "hand-written 1F1B",
        "torch ScheduleGPipe",
        "torch Schedule1F1B",
    }
    for name in methods:
        assert abs(methods[name]["loss"] - ranks[-1]["reference_loss"]) <= 1e-6, name
        assert max(r["methods"][name]["grad_diff"] for r in ranks) <= 1e-6, name
        assert ranks[0]["methods"][name]["loss"] is None, "only the last stage has the loss"
    for rank in range(3):
        recorded = ranks[rank]["methods"]
        assert recorded["torch ScheduleGPipe"]["order"] == list(
            map(str, ps.gpipe_order(rank, 3, 3))
        )
        assert recorded["torch Schedule1F1B"]["order"] == list(
            map(str, ps.one_f_one_b_order(rank, 3, 3))
        )
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
    recorder = sr.Recorder(0)
    xs, ys = list(x.chunk(4)), list(y.chunk(4))
    loss = sr.run_schedule(
        model,
        ps.schedule_order(schedule, 0, 1, 4),
        rank=0,
        n_stages=1,
        sizes=[3] * 4,
        in_shape=(),
        out_shape=(10,),
        inputs=xs,
        targets=ys,
        loss_fn=torch.nn.functional.cross_entropy,
        recorder=recorder,
    )
    assert loss == pytest.approx(full_loss.item(), abs=1e-6)
    for p, ref in zip(model.parameters(), reference, strict=True):
        assert torch.allclose(p.grad, ref, atol=1e-6, rtol=0)
    assert [f"{i.kind}{i.microbatch}" for i in recorder.intervals] == list(
        map(str, ps.schedule_order(schedule, 0, 1, 4))
    )
    assert recorder.peak_in_flight == ps.peak_in_flight(ps.schedule_order(schedule, 0, 1, 4))
    assert recorder.peak_bytes > 0 and not recorder.held
    with pytest.raises(ValueError, match="input micro-batches"):
        sr.run_schedule(
            model,
            [],
            rank=0,
            n_stages=1,
            sizes=[3] * 4,
            in_shape=(),
            out_shape=(10,),
            inputs=None,
            targets=ys,
            loss_fn=torch.nn.functional.cross_entropy,
        )


def test_recorder_counts_activation_bytes_once_and_skips_parameters():
    layer = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    recorder = sr.Recorder(0)
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


@pytest.mark.multiprocess
def test_measured_steps_have_the_shape_of_their_schedule():
    job = pl.PipelineJob(
        model="stack",
        width=32,
        blocks_per_stage=1,
        batch=32,
        schedules=("gpipe", "1f1b", "torch-gpipe", "torch-1f1b"),
        micro_batches=(1, 4),
        warmup=1,
        repeats=2,
    )
    ranks = launch(pl.measure_pipeline, 2, job, device="cpu", threads_per_worker=1, echo=False)
    steps = pr.summarize_steps(ranks, job.batch)
    # torch's 1F1B needs m >= p: no m = 1 row for it
    assert sorted(set(zip(steps["schedule"], steps["m"], strict=True))) == sorted(
        [
            ("gpipe", 1),
            ("gpipe", 4),
            ("1f1b", 1),
            ("1f1b", 4),
            ("torch-gpipe", 1),
            ("torch-gpipe", 4),
            ("torch-1f1b", 4),
        ]
    )
    assert len(steps) == 7 * 2
    assert steps["bubble"].between(0, 1).all() and (steps["step_s"] > 0).all()
    for row in ranks[0]:
        ops_seen = [ps.Op(i.kind, i.microbatch) for i in row["intervals"]]
        expected = ps.schedule_order(row["schedule"].removeprefix("torch-"), 0, 2, row["m"])
        assert ops_seen == expected
        assert row["peak_in_flight"] == ps.peak_in_flight(expected)
    for rank_rows in ranks:  # a rank never does two things at once
        for row in rank_rows:
            spans = sorted((i.start, i.end) for i in row["intervals"])
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    intervals, t0 = pr.representative_step(ranks, "gpipe", 4)
    assert len(intervals) == 2 * 2 * 4 and t0 <= min(i.start for i in intervals)
    table = pr.overhead_table(ranks, ["gpipe", "torch-gpipe"], 2).set_index(["schedule", "m"])
    assert len(table) == 4 and (table["predicted_step_s"] > 0).all()
    # the model adds time to the ideal, never removes it
    assert (table["predicted_bubble"] >= table["ideal_bubble"] - 0.05).all()


def test_workers_refuse_bad_jobs_before_starting():
    with pytest.raises(ValueError, match="known: gpipe, 1f1b, torch-gpipe, torch-1f1b"):
        pl.measure_pipeline(0, 2, pl.PipelineJob(schedules=("zero-bubble",)))
    with pytest.raises(ValueError, match=r"does not split into \[3\] equal"):
        pl.measure_pipeline(0, 2, pl.PipelineJob(batch=32, micro_batches=(1, 2, 3)))
    with pytest.raises(ValueError, match="does not split"):
        pl.pipeline_equivalence(0, 2, pl.PipelineJob(batch=30, n_micro=4))
    with pytest.raises(ValueError, match="1F1B needs"):
        pl.pipeline_equivalence(0, 4, pl.PipelineJob(batch=32, n_micro=2))
