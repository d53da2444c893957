import nbformat
import pytest

from course import run as run_course
from helpers.report import RESULTS_ENV


def write_notebook(path, *sources, parameters="EPOCHS = 1\nDEVICE = 'auto'"):
    cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


def test_parameters_are_limited_to_those_the_notebook_declares(tmp_path):
    notebook = write_notebook(tmp_path / "07_demo.ipynb")
    profile = {
        "defaults": {"DEVICE": "cuda", "AMP": True},
        "notebooks": {"07_demo": {"EPOCHS": 9, "time_budget_s": 30}},
    }
    assert run_course.notebook_parameters(profile, notebook) == {"DEVICE": "cuda", "EPOCHS": 9}


@pytest.mark.kernel
@pytest.mark.slow
def test_execute_records_results_and_names_the_failing_cell(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    profile = {"defaults": {}, "notebooks": {"98_ok": {"EPOCHS": 3, "time_budget_s": 60}}}
    ok = write_notebook(
        tmp_path / "98_ok.ipynb", "from helpers.report import record\nrecord('epochs_seen', EPOCHS)"
    )
    bad = write_notebook(tmp_path / "99_bad.ipynb", "x = 1", "raise ValueError('boom')")
    passed = run_course.execute(ok, profile, tmp_path / "out")
    failed = run_course.execute(bad, profile, tmp_path / "out")
    assert passed.status == "passed" and passed.results == {"epochs_seen": 3}
    assert passed.budget_s == 60
    assert failed.status == "failed"
    assert "cell 2" in failed.error and "ValueError: boom" in failed.error
    report = run_course.write_report([passed, failed], "test", tmp_path / "out")
    text = report.read_text()
    assert "| 98_ok | passed |" in text and "epochs_seen=3" in text
    assert "| 99_bad | failed |" in text
    assert (tmp_path / "out" / "report.png").stat().st_size > 0


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(SystemExit, match="profiles are: cpu, gpu"):
        run_course.load_profile("tpu")


def test_gpu_profile_without_gpu_stops_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr("helpers.devices.gpu_count", lambda: 0)
    assert run_course.main(["--profile", "gpu"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_unknown_notebook_is_a_clear_error():
    with pytest.raises(SystemExit, match="Unknown notebook"):
        run_course.main(["--only", "42_nothing"])
