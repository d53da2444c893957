"""Number formats against their closed forms; the non-finite detector names the right layer."""

import math
import time

import pytest
import torch
from torch import nn

from helpers.precision.numerics import (
    NonFiniteDetector,
    cast_report,
    first_nonfinite,
    format_facts,
    format_table,
    nonfinite_gradients,
    precision_trial,
    resolve_dtype,
)
from helpers.timing import compare_seconds, seconds_per_call, torch_threads

LAYOUTS = {"fp32": (8, 23), "fp16": (5, 10), "bf16": (8, 7)}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_format_facts_match_the_ieee_closed_forms(name):
    e, m = LAYOUTS[name]
    facts = format_facts(name)
    bias = 2 ** (e - 1) - 1
    assert (facts.exponent_bits, facts.mantissa_bits) == (e, m)
    assert facts.bits == 1 + e + m
    assert facts.max == (2 - 2.0**-m) * 2.0**bias
    assert facts.smallest_normal == 2.0 ** (1 - bias)
    assert facts.smallest_subnormal == 2.0 ** (1 - bias - m)
    assert facts.eps == 2.0**-m
    assert facts.exp_overflow_at == pytest.approx(math.log(facts.max))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_format_facts_agree_with_what_casting_does(name):
    dtype, facts = resolve_dtype(name), format_facts(name)
    to = lambda v: torch.tensor([v], dtype=torch.float64).to(dtype).item()  # noqa: E731
    assert to(facts.max) == facts.max
    assert math.isinf(to(facts.max * (1 + facts.eps)))  # rounds up past the largest value
    assert to(facts.smallest_subnormal) == facts.smallest_subnormal
    assert to(facts.smallest_subnormal / 4) == 0.0  # underflow
    assert to(1 + facts.eps) > 1 and to(1 + facts.eps / 4) == 1  # precision
    x = torch.tensor([facts.exp_overflow_at - 0.05, facts.exp_overflow_at + 0.05], dtype=dtype)
    assert torch.isfinite(torch.exp(x[0])) and torch.isinf(torch.exp(x[1]))


def test_fp16_numbers_everyone_quotes():
    fp16 = format_facts(torch.float16)
    assert fp16.max == 65504.0
    assert fp16.smallest_normal == pytest.approx(6.103515625e-05)
    assert fp16.smallest_subnormal == pytest.approx(5.960464477539063e-08)
    table = format_table()
    assert list(table.index) == ["fp32", "fp16", "bf16"]
    assert table.loc["bf16", "max"] > 3e38 and table.loc["bf16", "eps"] == 2.0**-7


def test_unknown_formats_are_clear_errors():
    with pytest.raises(ValueError, match="known names"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="Unsupported dtype"):
        resolve_dtype(torch.int32)
    assert resolve_dtype("HALF") is torch.float16


def test_cast_report_counts_overflow_underflow_and_subnormals():
    values = torch.tensor([7e4, 1e-9, 1e-6, 1.0, -2.0])
    report = cast_report(values, "fp16")
    assert report["overflow"] == pytest.approx(1 / 5)
    assert report["underflow"] == pytest.approx(1 / 5)
    assert report["subnormal"] == pytest.approx(1 / 5)  # 1e-6 < 6.1e-5 but > 6e-8
    bf16 = cast_report(values, "bf16")
    assert bf16["overflow"] == bf16["underflow"] == bf16["subnormal"] == 0
    assert 0 < bf16["median_relative_error"] <= 2.0**-8
    with pytest.raises(ValueError):
        cast_report(torch.tensor([math.nan]), "fp16")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.after = nn.Linear(4, 4)

    def forward(self, x):
        return self.after(torch.relu(self.inner(x)))


class LogLayer(nn.Module):
    """Produces NaN itself (log of negative numbers) from a finite child output."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return torch.log(self.linear(x) - 1e3)


def test_detector_names_the_layer_that_overflows_in_fp16_not_the_ones_downstream():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight.fill_(300.0)  # 8 inputs * 300 * x ~ 100 -> beyond 65504
        model[0].weight.abs_()
        model[0].bias.fill_(1.0)
    x = torch.full((3, 4), 100.0)
    assert first_nonfinite(model, x) is None  # fine in fp32
    event = first_nonfinite(model.half(), x.half())
    assert event is not None and event.module == "2" and event.module_type == "Linear"
    assert event.inputs_finite and event.kind == "inf" and event.infs > 0
    assert "'2'" in str(event)


def test_detector_names_the_innermost_producer():
    model = nn.Sequential(nn.Linear(4, 4), Block())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(1.0)  # the block gets ones: 4 * 1e38 + 1e38 > 3.4e38 = fp32 max
        model[1].inner.weight.fill_(1e38)
        model[1].inner.bias.fill_(1e38)
    event = first_nonfinite(model, torch.ones(2, 4))
    assert event.module == "1.inner"  # not "1" nor "1.after", which only carry it on
    logs = nn.Sequential(nn.Linear(4, 4), LogLayer(), nn.Linear(4, 2))
    event = first_nonfinite(logs, torch.ones(2, 4))
    assert event.module == "1" and event.module_type == "LogLayer" and event.kind == "nan"


def test_detector_reports_a_non_finite_input_and_removes_its_hooks():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    x = torch.ones(2, 4)
    x[0, 0] = math.nan
    with NonFiniteDetector(model) as detector:
        model(x)
    assert detector.first.module == "0" and not detector.first.inputs_finite
    assert all(not m._forward_hooks for m in model.modules())
    detector.reset()
    assert detector.first is None and detector.events == []


def test_nonfinite_gradients_lists_the_bad_parameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model(torch.ones(1, 2)).sum().backward()
    assert nonfinite_gradients(model) == []
    model[1].bias.grad.fill_(math.inf)
    assert nonfinite_gradients(model) == ["1.bias"]


def _tiny_data(n=64):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 8, generator=generator)
    return x, (x.sum(1) > 4).long()


def _tiny_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )


@pytest.mark.slow
def test_precision_trial_fp16_at_a_huge_lr_hits_inf_where_fp32_stays_finite():
    x, y = _tiny_data()
    fp16 = precision_trial(_tiny_model(0), x, y, dtype="fp16", lr=30.0, batch_size=32, steps=20)
    fp32 = precision_trial(_tiny_model(0), x, y, dtype="fp32", lr=30.0, batch_size=32, steps=20)
    assert fp16["nonfinite_step"] is not None and fp16["culprit"] in {"0", "2", "4"}
    assert fp32["nonfinite_step"] is None and fp32["max_abs_activation"] > 65504
    calm = precision_trial(_tiny_model(0), x, y, dtype="fp16", lr=1e-2, batch_size=32, steps=30)
    assert calm["nonfinite_step"] is None and calm["accuracy"] > 0.7
    again = precision_trial(_tiny_model(0), x, y, dtype="fp16", lr=1e-2, batch_size=32, steps=30)
    assert again == calm  # same seed, same run


def test_seconds_per_call_counts_calls_and_threads_are_restored():
    calls = []
    seconds = seconds_per_call(lambda: calls.append(1), repeats=3, number=4, warmup=2)
    assert len(calls) == 2 + 3 * 4 and seconds >= 0
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with torch_threads(0):
            pass


def test_compare_seconds_interleaves_and_ranks():
    order = []
    times = compare_seconds(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")},
        repeats=2,
        number=1,
        warmup=0,
    )
    assert order == ["a", "b", "a", "b"] and set(times) == {"a", "b"}
    slow = compare_seconds(
        {"fast": lambda: None, "slow": lambda: time.sleep(0.002)}, repeats=2, number=2, warmup=1
    )
    assert slow["slow"] > slow["fast"] and slow["slow"] >= 0.002
