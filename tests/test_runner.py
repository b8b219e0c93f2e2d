"""run_all.py: notebook selection, parameters, failures, timings and the index page."""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from marsrover import reporting, runner


def _write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    notebook = new_notebook(cells=[new_markdown_cell(f"# {path.stem}")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tagged = new_code_cell(parameters)
    tagged.metadata["tags"] = ["parameters"]
    notebook.cells += [tagged, *(new_code_cell(source) for source in cells)]
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def toy_notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _write_notebook(folder / "01_first.ipynb", 'profile = "x"\nepochs = 0',
                    "print(f'first ran with {profile} and {epochs} epochs')")
    _write_notebook(folder / "02_second.ipynb", 'output_dir = None',
                    "x = 1", "raise ValueError('the second notebook breaks here')", "print('never')")
    _write_notebook(folder / "03_third.ipynb", 'seed = 0', "print('third')")
    (folder / "README.ipynb").write_text("{}")  # not numbered: not part of the study
    return folder


def test_notebooks_are_found_in_numeric_order_and_selected_by_number(toy_notebooks):
    found = runner.discover_notebooks(toy_notebooks)
    assert [nb.name for nb in found] == ["01_first.ipynb", "02_second.ipynb", "03_third.ipynb"]
    assert [nb.name for nb in runner.select_notebooks(found, only=["3"])] == ["03_third.ipynb"]
    assert [nb.name[:2] for nb in runner.select_notebooks(found, start="02")] == ["02", "03"]
    with pytest.raises(SystemExit, match="no notebook matches"):
        runner.select_notebooks(found, only=["07"])


def test_a_notebook_receives_only_the_parameters_it_declares(toy_notebooks):
    values = {"profile": "smoke", "epochs": 1, "seed": 42, "output_dir": "/x"}
    assert runner.notebook_parameters(toy_notebooks / "01_first.ipynb", values) == {"profile": "smoke", "epochs": 1}


def test_a_failing_notebook_stops_the_run_names_the_cell_and_keeps_the_partial_notebook(toy_notebooks, tmp_path, capsys):
    out = tmp_path / "report"
    runs = runner.run_study("smoke", output_dir=out, notebooks_dir=toy_notebooks)
    assert [run.status for run in runs] == ["ok", "failed", "not run"]
    assert "02_second.ipynb: cell" in runs[1].error and "ValueError: the second notebook breaks here" in runs[1].error
    assert "FAILED 02_second.ipynb" in capsys.readouterr().err
    executed_first = nbformat.read(out / "01_first.ipynb", as_version=4)
    assert "first ran with smoke and 1 epochs" in json.dumps(executed_first.cells[-1].outputs)
    partial = nbformat.read(out / "02_second.ipynb", as_version=4)
    assert any(output.get("ename") == "ValueError" for cell in partial.cells for output in cell.get("outputs", []))
    assert (out / "02_second.html").stat().st_size > 1000 and not (out / "03_third.ipynb").exists()
    log = json.loads((out / "run_log.json").read_text())
    assert [entry["status"] for entry in log["notebooks"]] == ["ok", "failed"]
    assert "The run failed" in (out / "index.html").read_text()


def test_main_exits_non_zero_when_a_notebook_fails(toy_notebooks, tmp_path, monkeypatch):
    monkeypatch.setattr(runner.config, "NOTEBOOKS_DIR", toy_notebooks)
    assert runner.main(["--profile", "smoke", "--output-dir", str(tmp_path / "r"), "--only", "01"]) == 0
    assert runner.main(["--profile", "smoke", "--output-dir", str(tmp_path / "r"), "--from", "02"]) == 1


def test_a_partial_rerun_keeps_earlier_entries_and_merges_timings_into_metrics(tmp_path):
    reporting.save_metrics(tmp_path, {"headline": "m", "models": {}})
    reporting.write_run_log(tmp_path, {"notebooks": [
        {"name": "01_a.ipynb", "status": "ok", "seconds": 3.0}, {"name": "02_b.ipynb", "status": "ok", "seconds": 5.0}]})
    merged = reporting.write_run_log(tmp_path, {"notebooks": [{"name": "02_b.ipynb", "status": "ok", "seconds": 7.0}]})
    assert [(run["name"], run["seconds"]) for run in merged["notebooks"]] == [("01_a.ipynb", 3.0), ("02_b.ipynb", 7.0)]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["notebook_seconds"] == {"01_a.ipynb": 3.0, "02_b.ipynb": 7.0}
    reporting.save_metrics(tmp_path, {"headline": "m2", "models": {}})
    assert json.loads((tmp_path / "metrics.json").read_text())["notebook_seconds"]["02_b.ipynb"] == 7.0
