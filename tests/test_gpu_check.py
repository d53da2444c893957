"""`make gpu-check` on a CPU machine: what it would run for 0, 1 and 2 GPUs, its report and exit
status, and every check's code run on the CPU at small sizes (on a GPU only the device changes)."""

import pytest
import torch

from course import gpu_check


def names(gpus: int) -> dict[str, bool]:
    return {check.name: runnable for check, runnable in gpu_check.plan(gpus)}


def test_plan_for_zero_one_and_two_gpus():
    assert not any(names(0).values()), "nothing runs without a GPU"
    one = names(1)
    assert [n for n, ok in one.items() if not ok] == ["DDP, world size 2 (NCCL all-reduce)"]
    assert all(names(2).values())
    assert all(c.needs_gpus in (1, 2) for c in gpu_check.CHECKS)


def fake(name: str, needs: int, result):
    def run(device, small):
        if isinstance(result, Exception):
            raise result
        return result

    return gpu_check.Check(name, needs, "a fake path", run)


def test_failures_are_reported_and_the_rest_still_runs(tmp_path):
    checks = (
        fake("a", 1, {"x": 1}),
        fake("b", 1, AssertionError("b is off by 2.0")),
        fake("c", 1, {"y": 2}),
        fake("d", 2, {"z": 3}),
    )
    outcomes = gpu_check.run_checks(torch.device("cpu"), 1, checks)
    assert [(o.name, o.status) for o in outcomes] == [
        ("a", "passed"),
        ("b", "failed"),
        ("c", "passed"),
        ("d", "not run"),
    ]
    assert "needs 2 GPUs, 1 visible" in outcomes[3].detail
    assert gpu_check.exit_status(outcomes, 1) == 1
    assert gpu_check.exit_status(outcomes[:1] + outcomes[2:], 1) == 0, "not run is not a failure"
    report = gpu_check.write_report(outcomes, "1 × test GPU", tmp_path / "report.md").read_text()
    assert "| b | failed |" in report and "b is off by 2.0" in report
    assert "| d | not run |" in report and "| d | passed |" not in report


def test_time_limit_marks_the_rest_not_run_and_fails():
    checks = (fake("a", 1, {}), fake("b", 1, {}))
    outcomes = gpu_check.run_checks(torch.device("cpu"), 1, checks, time_limit_s=-1)
    assert {o.status for o in outcomes} == {"not run"}
    assert gpu_check.exit_status(outcomes, 1) == 1


def test_no_gpu_says_so_and_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert gpu_check.main([]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize(
    "check", [c for c in gpu_check.CHECKS if c.needs_gpus == 1], ids=lambda c: c.name
)
def test_every_single_gpu_check_runs_on_the_cpu(check, one_torch_thread):
    if "DDP" in check.name:
        pytest.importorskip("torch.distributed")
    figures = check.run(torch.device("cpu"), True)
    assert isinstance(figures, dict) and figures
