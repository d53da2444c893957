import pytest

from helpers import report


def test_record_without_runner_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv(report.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert report.record("answer", 42) is None
    assert list(tmp_path.iterdir()) == []


def test_record_appends_and_last_value_wins(monkeypatch, tmp_path):
    target = tmp_path / "results.jsonl"
    monkeypatch.setenv(report.RESULTS_ENV, str(target))
    report.record("flag", True)
    report.record("f1", 0.912345678)
    report.record("f1", 0.5)
    assert report.read_results(target) == {"flag": True, "f1": 0.5}
    assert report.read_results(tmp_path / "absent.jsonl") == {}


def test_record_rejects_non_scalars():
    with pytest.raises(TypeError, match="bool, int, float or str"):
        report.record("tensor", [1, 2])
