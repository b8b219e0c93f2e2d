"""environment.yml (conda) and pyproject.toml (pip) pin the same versions."""

import re
import tomllib

from marsrover import config

PIP_TO_CONDA = {}  # pip and conda-forge use the same names for every pinned package


def _pip_pins():
    project = tomllib.loads((config.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = {}
    for requirement in requirements:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][^;\s]*)", requirement).groups()
        pins[PIP_TO_CONDA.get(name.lower(), name.lower())] = version
    return pins


def _conda_pins():
    pins, in_dependencies = {}, False
    for line in (config.PROJECT_ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_dependencies = True
        match = re.fullmatch(r"  - ([A-Za-z0-9_.-]+)=([0-9][^\s#]*)\s*", line)
        if in_dependencies and match:
            pins[match[1].lower()] = match[2]
    return pins


def test_every_pip_dependency_is_pinned_exactly():
    assert len(_pip_pins()) >= 15


def test_conda_environment_pins_the_same_versions_as_pip():
    conda = _conda_pins()
    conda.pop("python")
    assert conda == _pip_pins()


def test_conda_environment_installs_the_package_itself():
    assert "      - -e ." in (config.PROJECT_ROOT / "environment.yml").read_text().splitlines()


def test_every_library_the_package_imports_is_pinned():
    import ast
    import sys
    from importlib.metadata import packages_distributions

    imported = set()
    for source in (config.PROJECT_ROOT / "lib" / "marsrover").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"marsrover"}
    distributions = packages_distributions()
    project = tomllib.loads((config.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    installed_with_the_package = {re.match(r"[A-Za-z0-9_.-]+", requirement)[0].lower()
                                  for requirement in project["dependencies"]}  # not the dev extras
    unpinned = {module for module in third_party
                if not {name.lower() for name in distributions.get(module, [module])} & installed_with_the_package}
    assert not unpinned, f"imported by lib/marsrover but not pinned in pyproject.toml: {sorted(unpinned)}"
