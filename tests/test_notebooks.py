"""The notebooks as files: numbered, thin, parameterised by the profiles, ready for Colab."""

import json

import nbformat
import papermill
import pytest

from marsrover import config
from marsrover.profiles import PROFILES
from marsrover.runner import discover_notebooks

NOTEBOOKS = discover_notebooks()
STAGES = ["acquisition", "labeling", "augmentation", "model", "training", "error_analysis", "new_images"]
# Presentation and interactive settings: the same in every profile, so they live in the notebooks alone.
NOTEBOOK_ONLY_PARAMETERS = {
    "data_dir", "output_dir", "augmentations", "examples", "images_per_class", "example_images", "gallery_images",
    "confidence_threshold", "twin_max_distance", "labels_csv", "interactive", "label_folder", "images_dir",
    "sample_size", "model_path", "low", "high",
}


def test_the_study_has_its_numbered_stages_in_order():
    names = [nb.stem for nb in NOTEBOOKS]
    assert names == [f"{n:02d}_{stage}" for n, stage in enumerate(STAGES, start=1)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_opens_with_badge_then_colab_setup_then_parameters(path):
    notebook = nbformat.read(path, as_version=4)
    cells = notebook.cells
    assert cells[0].cell_type == "markdown"
    assert f"colab.research.google.com/github/{config.GITHUB_REPO}/blob/main/notebooks/{path.name}" in cells[0].source
    setup = next(cell for cell in cells if cell.cell_type == "code")
    assert '"google.colab" in sys.modules' in setup.source and "Not on Colab" in setup.source
    assert "run_all.py --profile gpu" in setup.source  # a badge opens the smoke values: say where the GPU study is
    tagged = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and cells.index(tagged[0]) > cells.index(setup)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_colab_setup_installs_the_versions_pyproject_pins(path):
    import re
    import tomllib

    project = tomllib.loads((config.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"])
    setup = next(cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")
    installed = re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', setup.source)
    assert installed and set(installed) <= pinned, set(installed) - pinned


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs: clear them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameter_defaults_are_the_smoke_profile(path):
    declared = papermill.inspect_notebook(str(path))
    smoke = {"profile": "smoke", **PROFILES["smoke"]}
    for name, info in declared.items():
        if name in smoke:
            assert json.loads(json.dumps(eval(info["default"]))) == smoke[name], f"{path.name}: {name}"
        else:
            assert name in NOTEBOOK_ONLY_PARAMETERS, f"{path.name} declares {name}, which no profile sets"


def test_every_profile_key_reaches_some_notebook():
    declared = set().union(*(papermill.inspect_notebook(str(nb)) for nb in NOTEBOOKS))
    for profile in PROFILES.values():
        assert set(profile) <= declared


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_stay_thin(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert "def " not in cell.source, f"{path.name}: functions belong in the marsrover package"
            assert "/work/" not in cell.source and "../data" not in cell.source, f"{path.name}: hard-coded path"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_cell_that_ends_by_saving_a_figure_does_not_echo_its_path(path):
    # save_fig returns the file's path; echoed under the figure it shows one machine's folders in the report
    import ast

    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code" or not cell.source.strip() or cell.source.lstrip().startswith(("%", "!")):
            continue
        last = ast.parse(cell.source).body[-1]
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and ast.unparse(last.value.func) == "save_fig":
            assert cell.source.rstrip().endswith(";"), f"{path.name}: end `{ast.unparse(last)}` with ';'"
