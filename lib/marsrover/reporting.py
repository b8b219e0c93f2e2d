"""The report's front page and the machine-readable records beside it.

Under ``reports/<profile>/``: the executed notebooks and their HTML, ``figures/``, ``metrics.json``
(written by notebook 06), ``run_log.json`` (written by every ``run_all.py`` run: wall time and status
of each notebook) and ``index.html``, which links them and shows the headline metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2

METRICS_FILE = "metrics.json"
RUN_LOG_FILE = "run_log.json"
HEADLINE_FIGURES = {
    "confusion_matrix": "Confusion matrix of the headline model (test split)",
    "example_predictions": "Example predictions of the headline model (test split)",
}


def save_metrics(output_dir: Path, metrics: dict) -> Path:
    """Write ``metrics.json`` atomically, keeping the notebook timings a previous run logged."""
    path = Path(output_dir) / METRICS_FILE
    previous = load_json(path)
    if "notebook_seconds" in previous and "notebook_seconds" not in metrics:
        metrics = {**metrics, "notebook_seconds": previous["notebook_seconds"]}
    _write_json(path, metrics)
    return path


def load_json(path: Path) -> dict:
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def write_run_log(output_dir: Path, log: dict) -> dict:
    """Record this run's timings and return the log merged with earlier runs in this folder.

    A partial rerun (``--only``/``--from``) keeps the earlier entries of the notebooks it skipped,
    so the log always describes every notebook of the report. The wall time of each notebook is
    also merged into ``metrics.json``.
    """
    output_dir = Path(output_dir)
    path = output_dir / RUN_LOG_FILE
    merged = {run["name"]: run for run in load_json(path).get("notebooks", [])}
    merged.update({run["name"]: run for run in log["notebooks"] if run["status"] != "not run"})
    log = {**log, "notebooks": [merged[name] for name in sorted(merged)]}
    _write_json(path, log)
    metrics_path = output_dir / METRICS_FILE
    if metrics_path.exists():
        metrics = load_json(metrics_path)
        metrics["notebook_seconds"] = {run["name"]: run["seconds"] for run in log["notebooks"]}
        _write_json(metrics_path, metrics)
    return log


_INDEX_TEMPLATE = jinja2.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>marsrover study: {{ profile }} profile</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222 }
 table { border-collapse: collapse; margin: 1rem 0 } td, th { border: 1px solid #ccc; padding: .3rem .6rem; text-align: right }
 td:first-child, th:first-child { text-align: left } .failed { color: #b00; font-weight: bold } .ok { color: #070 }
 figure { display: inline-block; margin: 0 1.5rem 1rem 0; vertical-align: top } img { max-width: 100%; border: 1px solid #ddd }
 .note { color: #555 }
</style></head><body>
<h1>Mars rover images: Rover or Surface?</h1>
<p class="note">Profile <b>{{ profile }}</b> · commit <code>{{ commit }}</code> · run started {{ started }} ·
total {{ "%.1f"|format(total_seconds / 60) }} min</p>
{% if failed %}<p class="failed">The run failed: {{ failed }}</p>{% endif %}

<h2>Headline</h2>
{% if metrics.models %}
<p>Headline model: <b>{{ metrics.headline }}</b> (chosen on the validation split; the test split is scored once).
Test split: {{ metrics.models[metrics.headline].test.n }} images.</p>
<table><tr><th>model</th>{% for split in ["val", "test"] %}<th>{{ split }} accuracy</th><th>{{ split }} balanced accuracy</th>{% endfor %}</tr>
{% for name, scores in metrics.models.items() %}<tr><td>{{ name }}{% if name == metrics.headline %} ★{% endif %}</td>
{% for split in ["val", "test"] %}<td>{{ pct(scores[split].accuracy) }}</td><td>{{ pct(scores[split].balanced_accuracy) }}</td>{% endfor %}</tr>
{% endfor %}
{% for name, scores in metrics.get("baselines", {}).items() %}<tr class="note"><td>{{ name }}</td>
{% for split in ["val", "test"] %}<td>{{ pct(scores[split].accuracy) }}</td><td>{{ pct(scores[split].balanced_accuracy) }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% else %}<p class="note">No metrics yet: notebook 06 has not run in this folder.</p>{% endif %}
{% for figure, caption in figures %}<figure><img src="{{ figure }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>{% endfor %}

<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>files</th></tr>
{% for run in notebooks %}<tr><td>{{ run.name }}</td><td class="{{ run.status.replace(' ', '-') }}">{{ run.status }}</td>
<td>{{ "%.1f s"|format(run.seconds) }}</td><td>{% if run.outputs %}<a href="{{ run.outputs.html }}">HTML</a> ·
<a href="{{ run.outputs.notebook }}">ipynb</a>{% endif %}</td></tr>
{% endfor %}</table>
<p class="note">Regenerate with <code>python run_all.py --profile {{ profile }}</code>.</p>
</body></html>
""")


def write_index(output_dir: Path, log: dict) -> Path:
    """``index.html``: the headline metrics, the key figures and links to every notebook."""
    output_dir = Path(output_dir)
    figures = [(f"figures/{name}.png", caption) for name, caption in HEADLINE_FIGURES.items()
               if (output_dir / "figures" / f"{name}.png").exists()]
    failed = next((run["error"] for run in log["notebooks"] if run["status"] == "failed"), "")
    page = _INDEX_TEMPLATE.render(
        metrics=load_json(output_dir / METRICS_FILE), figures=figures, failed=failed,
        pct=lambda value: "–" if value is None else f"{100 * value:.1f}%", **log,
    )
    path = output_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
