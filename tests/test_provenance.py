"""The commit recorded beside every result."""

import subprocess

import pytest

from marsrover import provenance
from marsrover.provenance import git_commit


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture()
def checkout(tmp_path):
    """A one-commit repository with code, a committed report and an exported model."""
    for relative in ("lib/code.py", "README.md", "reports/full/metrics.json", "models/headline.keras"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("committed\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "first")
    return tmp_path


def test_a_clean_checkout_records_the_bare_commit(checkout):
    commit = git_commit(checkout)
    assert len(commit) == 12 and not commit.endswith("-dirty")


def test_a_changed_source_file_marks_the_commit_dirty(checkout):
    (checkout / "lib/code.py").write_text("changed\n")
    assert git_commit(checkout).endswith("-dirty")


def test_the_study_rewriting_its_own_report_model_and_readme_tables_does_not_mark_it_dirty(checkout):
    (checkout / "reports/full/metrics.json").write_text("rerun\n")
    (checkout / "README.md").write_text("regenerated results table\n")
    (checkout / "models/headline.keras").unlink()
    assert not git_commit(checkout).endswith("-dirty")


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_results_name_the_commit_the_process_imported_not_a_later_one(monkeypatch):
    """A commit landing during a long run must not be credited with that run's results."""
    from marsrover import provenance

    at_import = provenance.code_commit()
    monkeypatch.setattr(provenance, "git_commit", lambda *args, **kwargs: "committed-during-the-run")
    assert provenance.code_commit() == at_import
    assert provenance.run_environment()["commit"] == at_import


def test_importing_the_package_reads_the_commit_before_any_result_exists():
    """Notebook 06 imports provenance only when it scores, an hour into a full run: too late to read HEAD."""
    import sys

    imported = subprocess.run([sys.executable, "-c", "import sys, marsrover; print('marsrover.provenance' in sys.modules)"],
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "True"


def test_the_cpu_is_described_by_model_and_the_instruction_sets_that_change_kernels():
    cpuinfo = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
               "model name\t: Intel(R) Xeon(R) Platinum 8480+\nstepping\t: 8\n"
               "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 amx_tile amx_bf16 ht\n\n"
               "processor\t: 1\nvendor_id\t: GenuineIntel\n")
    assert provenance.cpu_description(cpuinfo) == {
        "vendor": "GenuineIntel", "family": "6", "model": "143", "stepping": "8",
        "model_name": "Intel(R) Xeon(R) Platinum 8480+",
        "flags": ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}
    assert provenance.cpu_description("") == {"flags": []}
    assert "flags" in provenance.cpu_description()  # this machine's, whatever it is
