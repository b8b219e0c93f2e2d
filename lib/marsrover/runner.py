"""Execute the numbered notebooks with papermill and render the study as HTML (``run_all.py``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import config, reporting
from .console import without_tensorflow_startup_lines
from .provenance import code_commit, cpu_description, cpu_label, git_commit, has_native_bfloat16
from .profiles import BUDGET_MINUTES, PROFILES, get_profile

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"


def discover_notebooks(notebooks_dir: Path | None = None) -> list[Path]:
    """The study's notebooks (``notebooks/NN_*.ipynb``) in numeric order."""
    return sorted(Path(notebooks_dir or config.NOTEBOOKS_DIR).glob(NOTEBOOK_GLOB))


def select_notebooks(notebooks: list[Path], *, only: list[str] | None = None,
                     start: str | None = None) -> list[Path]:
    """Filter by number or name prefix: ``only=["05"]`` or ``start="03"`` (that one and later)."""
    def matches(path: Path, key: str) -> bool:
        return path.name.startswith(key) or path.stem == key or path.name[:2] == key.zfill(2)

    if only:
        chosen = [nb for nb in notebooks if any(matches(nb, key) for key in only)]
        unknown = [key for key in only if not any(matches(nb, key) for nb in notebooks)]
        if unknown:
            raise SystemExit(f"--only: no notebook matches {unknown}; have {[nb.name for nb in notebooks]}")
        return chosen
    if start:
        positions = [i for i, nb in enumerate(notebooks) if matches(nb, start)]
        if not positions:
            raise SystemExit(f"--from: no notebook matches {start!r}; have {[nb.name for nb in notebooks]}")
        return notebooks[positions[0]:]
    return notebooks


def notebook_parameters(notebook: Path, values: dict) -> dict:
    """The subset of ``values`` that the notebook's ``parameters`` cell declares."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    return {name: values[name] for name in declared if name in values}


def path_for_notebook(path: str | os.PathLike, notebook_dir: Path) -> str:
    """``path`` as a notebook in ``notebook_dir`` is given it: relative to that folder when both lie in the
    project (papermill starts each kernel there), so that the executed notebook, committed and opened
    elsewhere, names no folder of the machine that ran it; absolute when either lies outside."""
    path, notebook_dir = Path(path).resolve(), Path(notebook_dir).resolve()
    if not (path.is_relative_to(config.PROJECT_ROOT) and notebook_dir.is_relative_to(config.PROJECT_ROOT)):
        return str(path)
    return os.path.relpath(path, notebook_dir)


def tidy_executed_notebook(executed: Path):
    """Make an executed notebook fit to commit: papermill's record of where it came from and went,
    relative to the project (see :func:`path_for_notebook`), and no TensorFlow start-up lines on stderr.
    Returns the tidied notebook, to be rendered without reading it again."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key) and Path(record[key]).is_absolute():  # a tidied one is relative to the project already
            record[key] = config.display_path(record[key])
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                kept = without_tensorflow_startup_lines(output.text)
                if not kept:
                    continue
                output.text = kept
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs
    nbformat.write(notebook, executed)
    return notebook


def render_html(executed: Path, notebook=None) -> Path:
    """The executed notebook (``notebook``, its contents when already read) as one self-contained HTML file
    beside it."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(notebook if notebook is not None else nbformat.read(executed, as_version=4))
    html_path = executed.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def peak_kernel_rss_gib() -> float:
    """The largest resident memory of any finished child process so far: the notebook kernels."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3)  # KiB on Linux


def machine_notice(profile: str, recorded: Path, cpu: dict[str, object] | None = None,
                   gpus: int | None = None) -> str | None:
    """A warning before a run of ``profile`` that cannot repeat the record it will replace (``recorded``,
    a metrics.json): the profile trains in bfloat16 on a CPU that has it natively and no GPU, and the record's
    machine and this one (``cpu``, :func:`provenance.cpu_description`'s form; ``gpus``, default: NVIDIA GPUs
    the driver lists) differ there, so its runs compute in another precision here: other scores, and another
    training time. None when nothing needs saying."""
    if not get_profile(profile).get("cpu_bfloat16"):
        return None
    try:
        record = reporting.load_json(recorded)  # {} when there is none
    except (OSError, ValueError):
        return None
    then, now = record.get("cpu") or {}, cpu if cpu is not None else cpu_description()
    if not then.get("flags") and not then.get("model_name"):
        return None  # a record from before CPUs were described: nothing to compare
    gpus = _gpus_listed() if gpus is None else gpus
    bfloat16_then = has_native_bfloat16(then) and not record.get("gpus")
    bfloat16_now = has_native_bfloat16(now) and not gpus
    if bfloat16_then == bfloat16_now:
        return None

    def described(cpu: dict, cores, gpus) -> str:
        bfloat16 = "native bfloat16" if has_native_bfloat16(cpu) else "no native bfloat16"
        return f"{cpu.get('model_name', 'an unnamed CPU')} ({cores} cores, {bfloat16}{f', {gpus} GPU' if gpus else ''})"

    seconds = sum((record.get("notebook_seconds") or {}).values())
    took = f", in {seconds / 60:.0f} minutes" if seconds else ""
    return (f"Note: {config.display_path(recorded)} was recorded at commit {record.get('commit', '?')} on "
            f"{described(then, record.get('cpu_count', '?'), record.get('gpus'))}{took}, training in "
            f"{'bfloat16' if bfloat16_then else 'float32'}. Here: {described(now, os.cpu_count(), gpus)}, "
            f"training in {'bfloat16' if bfloat16_now else 'float32'}. So the scores of profile {profile!r} "
            "will not repeat the recorded ones, and its training time will differ too: "
            f"`python run_all.py --profile {profile} --estimate` times it here first, without running the study.")


def _gpus_listed() -> int:
    """NVIDIA GPUs the driver lists (without starting TensorFlow, which notebook 05 asks itself)."""
    folder = Path("/proc/driver/nvidia/gpus")
    return len(list(folder.iterdir())) if folder.is_dir() else 0


@dataclass
class NotebookRun:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    error: str = ""
    peak_rss_gib: float = 0.0  # the largest kernel so far in this run (the OS reports a running maximum)
    commit: str = ""  # HEAD when its kernel started: the code it imported
    cpu: str = ""  # provenance.cpu_label: a partial rerun may run on another machine than the rest
    outputs: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def kernel_transport():
    """papermill's settings for how it talks to one kernel: over Unix sockets where there are any.

    A kernel on TCP (ipykernel's default) listens on local ports without encryption and warns so before every
    notebook. The sockets go in a fresh folder only this user may enter (not the notebooks' folder, where
    papermill starts the kernel: it may be read-only, a mount that holds no sockets, or shared by two runs),
    removed when the kernel is done. Windows has no such sockets: TCP there.
    """
    if os.name != "posix":
        yield {}
        return
    from traitlets.config import Config

    parent = tempfile.gettempdir()
    if len(parent) > 60 and os.path.isdir("/tmp"):  # a socket's path stops at 104 bytes on macOS
        parent = "/tmp"
    # mode 0700; a cleanup error must not hide how the notebook ended
    with tempfile.TemporaryDirectory(prefix="marsrover-kernel-", dir=parent, ignore_cleanup_errors=True) as folder:
        yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": str(Path(folder) / "kernel")}})}


@contextlib.contextmanager
def kernel_stderr():
    """papermill's setting for where a kernel's own stderr goes: a file, printed (less TensorFlow's start-up
    lines, :func:`console.without_tensorflow_startup_lines`) once the notebook is done, crashed or not.

    The kernel echoes to its stderr whatever a cell's C++ or subprocess writes there, and TensorFlow's start-up
    lines come on top, several times a notebook on a machine without a GPU. So the console of a run shows only
    what may matter, after each notebook rather than as it comes.
    """
    from jupyter_client import AsyncKernelManager  # nbclient's default

    with tempfile.TemporaryDirectory(prefix="marsrover-stderr-", ignore_cleanup_errors=True) as folder:
        log_path = Path(folder) / "kernel-stderr.log"

        class KernelWithStderrLog(AsyncKernelManager):
            async def _async_launch_kernel(self, kernel_cmd, **kw):
                with open(log_path, "ab") as log:  # the kernel process holds its own copy
                    return await super()._async_launch_kernel(kernel_cmd, **{**kw, "stderr": log})

        try:
            yield {"kernel_manager_class": KernelWithStderrLog}
        finally:
            if log_path.exists():
                sys.stderr.write(without_tensorflow_startup_lines(
                    log_path.read_text(encoding="utf-8", errors="replace")))
                sys.stderr.flush()


def run_study(profile: str, *, output_dir: Path | None = None, only: list[str] | None = None,
              start: str | None = None, data_dir: Path | None = None,
              notebooks_dir: Path | None = None) -> list[NotebookRun]:
    """Execute the selected notebooks in order; stop at the first failure (later ones need it)."""
    import papermill

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it: TensorFlow's C++ chatter off
    output_dir = Path(output_dir or config.REPORTS_DIR / profile).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    values = {**get_profile(profile), "output_dir": str(output_dir),
              "data_dir": str(Path(data_dir).resolve()) if data_dir else None}
    notebooks = select_notebooks(discover_notebooks(notebooks_dir), only=only, start=start)
    runs = [NotebookRun(nb.name) for nb in notebooks]
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    print(f"Running {len(notebooks)} notebook(s) with profile {profile!r} into {output_dir}")
    trains = any("cpu_bfloat16" in papermill.inspect_notebook(str(nb)) for nb in notebooks)  # notebook 05
    cpu = cpu_label(cpu_description())  # recorded beside each notebook: a partial rerun may run elsewhere
    if trains and (notice := machine_notice(profile, output_dir / "metrics.json")):
        print(notice, flush=True)
    for notebook, run in zip(notebooks, runs):
        executed = output_dir / notebook.name
        print(f"--> {notebook.name}", flush=True)
        clock = time.perf_counter()
        run.commit = git_commit()
        run.cpu = cpu
        folders = {name: path_for_notebook(values[name], notebook.parent)
                   for name in ("output_dir", "data_dir") if values[name] is not None}
        try:
            with kernel_transport() as transport, kernel_stderr() as console:
                papermill.execute_notebook(
                    str(notebook), str(executed), parameters=notebook_parameters(notebook, {**values, **folders}),
                    cwd=str(notebook.parent), progress_bar=False, log_output=False, **transport, **console,
                )
            run.status = "ok"
        except papermill.PapermillExecutionError as error:
            run.status = "failed"
            run.error = (f"{notebook.name}: cell {error.cell_index} (execution count {error.exec_count}) "
                         f"raised {error.ename}: {error.evalue}")
        except Exception as error:  # kernel died, notebook unreadable, ...
            run.status = "failed"
            run.error = f"{notebook.name}: {type(error).__name__}: {error}"
        run.seconds = round(time.perf_counter() - clock, 2)
        run.peak_rss_gib = peak_kernel_rss_gib()
        if executed.exists():  # papermill keeps the partial notebook when a cell fails
            run.outputs = {"notebook": executed.name,
                           "html": render_html(executed, tidy_executed_notebook(executed)).name}
        print(f"    {run.status} in {run.seconds:.1f} s", flush=True)
        if run.status == "failed":
            print(f"FAILED {run.error}\n    partial notebook kept at {executed}", file=sys.stderr)
            break
    log = {
        "profile": profile, "started": started_at, "total_seconds": round(time.perf_counter() - started, 2),
        "notebooks": [run.__dict__ for run in runs], "commit": code_commit(), "cpu_count": os.cpu_count(),
        "peak_rss_gib": peak_kernel_rss_gib(), "budget_minutes": BUDGET_MINUTES.get(profile),
    }
    if any(run.commit not in ("", code_commit()) for run in runs):  # a commit landed during the run
        print(f"The code changed during the run (it started at {code_commit()}): each notebook's entry in "
              f"{reporting.RUN_LOG_FILE}, its run records and metrics.json name the commit it loaded",
              file=sys.stderr)
    log = reporting.write_run_log(output_dir, log)
    study = [notebook.name for notebook in discover_notebooks(notebooks_dir)]  # a budget verdict needs them all
    budget_line = reporting.budget_sentence(log, study)
    print(f"The report's notebooks took {reporting.duration(log['total_seconds'])} in all."
          + (f" {budget_line}" if budget_line else ""))
    finish_report(profile, output_dir, log, study)
    return runs


def finish_report(profile: str, output_dir: Path, log: dict, study: list[str] | None = None) -> Path:
    """The front page, and for the committed full study the model card and the README's results (whose verdict
    on the budget needs every notebook of the study, ``study``, by file name; default: ``notebooks/``'s)."""
    metrics = reporting.load_json(output_dir / reporting.METRICS_FILE)
    if profile == "full" and metrics.get("models") and all(run["status"] == "ok" for run in log["notebooks"]):
        print(f"Model card: {reporting.write_model_card(output_dir, metrics)}")  # first: the front page links it
        if output_dir == (config.REPORTS_DIR / "full").resolve():
            reporting.update_readme(config.PROJECT_ROOT / "README.md", metrics, log, output_dir,
                                    study if study is not None else [notebook.name for notebook in discover_notebooks()])
            print("README results section updated from metrics.json")
    index = reporting.write_index(output_dir, log)
    print(f"Report: {index}")
    return index


def render_only(profile: str, output_dir: Path | None = None) -> int:
    """Re-render HTML, the front page, model card and README section from an earlier run's outputs, after
    tidying its executed notebooks as a run of this code would have (:func:`tidy_executed_notebook`)."""
    output_dir = Path(output_dir or config.REPORTS_DIR / profile).resolve()
    log = reporting.load_json(output_dir / reporting.RUN_LOG_FILE)
    if not log:
        raise SystemExit(f"{output_dir / reporting.RUN_LOG_FILE} is missing: run the notebooks first")
    for run in log["notebooks"]:
        if run.get("outputs"):
            executed = output_dir / run["outputs"]["notebook"]
            render_html(executed, tidy_executed_notebook(executed))  # tidied as this code's run would have
    # Through the same merge as a run, so totals follow one rule even after partial reruns.
    log = reporting.write_run_log(output_dir, {**log, "notebooks": [], "total_seconds": log.get("this_run_seconds"),
                                               "peak_rss_gib": log.get("this_run_peak_rss_gib")})
    finish_report(profile, output_dir, log)
    return 0


def add_study_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``run_all.py``, shared with ``marsrover study``."""
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="parameter set: smoke (CI, minutes), full (the CPU study), gpu (Colab)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (e.g. 05 06)")
    which.add_argument("--from", dest="start", metavar="NN", help="run this notebook and all after it")
    parser.add_argument("--output-dir", type=Path, help="where executed notebooks and HTML go "
                        "(default: reports/<profile>)")
    parser.add_argument("--data-dir", type=Path, help="the data folder (default: data/ or $MARSROVER_DATA_DIR)")
    parser.add_argument("--render-only", action="store_true",
                        help="execute nothing: tidy the executed notebooks (relative paths, no TensorFlow start-up "
                             "lines) and re-render the HTML, index, model card and README results")
    parser.add_argument("--estimate", action="store_true",
                        help="execute nothing: time a few training steps of each kind of run here and print how "
                             "long the profile's training would take on this machine (a few minutes)")
    return parser


def run_from_arguments(args: argparse.Namespace) -> int:
    """Run (or only re-render) the study as ``args`` say; 1 when a notebook failed."""
    if args.render_only and args.estimate:
        raise SystemExit("--render-only and --estimate each run nothing but their own step: choose one")
    if args.render_only:
        return render_only(args.profile, args.output_dir)
    if args.estimate:
        from .estimate import print_estimate  # here: the runner itself needs no TensorFlow

        print_estimate(args.profile, args.data_dir, args.output_dir)
        return 0
    runs = run_study(args.profile, output_dir=args.output_dir, only=args.only, start=args.start,
                     data_dir=args.data_dir)
    return 1 if any(run.status == "failed" for run in runs) else 0


def main(argv: list[str] | None = None) -> int:
    parser = add_study_arguments(argparse.ArgumentParser(prog="run_all.py", description=__doc__))
    return run_from_arguments(parser.parse_args(argv))
