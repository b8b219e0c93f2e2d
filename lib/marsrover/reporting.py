"""The report's front page and the machine-readable records beside it.

Under ``reports/<profile>/``: the executed notebooks and their HTML, ``figures/``, ``metrics.json``
(written by notebook 06), ``run_log.json`` (written by every ``run_all.py`` run: wall time and status
of each notebook) and ``index.html``, which links them and shows the headline metrics.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import jinja2

from . import atomic, config
from .config import CHART_SUFFIX, PHOTO_SUFFIX

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
    atomic.write_text(path, json.dumps(payload, indent=2, default=str))


def write_run_log(output_dir: Path, log: dict) -> dict:
    """Record this run's timings and return the log merged with earlier runs in this folder.

    A partial rerun (``--only``/``--from``) keeps the earlier entries of the notebooks it skipped,
    so the log always describes every notebook of the report. The wall time of each notebook is
    also merged into ``metrics.json``.
    """
    output_dir = Path(output_dir)
    path = output_dir / RUN_LOG_FILE
    earlier = load_json(path)
    merged = {run["name"]: run for run in earlier.get("notebooks", [])}
    rerun = {run["name"]: run for run in log["notebooks"] if run["status"] != "not run"}
    merged.update(rerun)
    notebooks = [merged[name] for name in sorted(merged)]
    # A partial rerun keeps the start of the first run this report was built from (which an entry of every
    # notebook may since have replaced) and adds its own: the page shows both.
    partial = rerun and any(name not in rerun for name in merged) and earlier.get("started")
    started = {"started": earlier["started"], "this_run_started": log.get("started")} if partial else {}
    # The study's wall time is that of its notebooks, also when some were rerun separately.
    peaks = [run["peak_rss_gib"] for run in notebooks if run.get("peak_rss_gib") is not None]
    log = {**log, **started, "notebooks": notebooks, "this_run_seconds": log.get("total_seconds"),
           "total_seconds": round(sum(run["seconds"] for run in notebooks), 2),
           "this_run_peak_rss_gib": log.get("peak_rss_gib"),
           "peak_rss_gib": max(peaks) if peaks else log.get("peak_rss_gib")}
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
<p class="note">Profile <b>{{ profile }}</b> · {% if commits|length > 1 %}the notebooks ran at {{ commits|length }} commits, the
latest run's <code>{{ commit }}</code> (table below){% if metrics.commit %}; the models were scored at <code>{{ metrics.commit }}</code>{% endif %}{% else %}commit
<code>{{ commit }}</code>{% endif %} · run started {{ started }}{% if this_run_started %} (last rerun of part of it {{ this_run_started }}){% endif %} ·
total {{ "%.1f"|format(total_seconds / 60) }} min</p>
{% if failed %}<p class="failed">The run failed: {{ failed }}</p>{% endif %}

<h2>Headline</h2>
{% if rows %}
<p>Headline model: <b>{{ metrics.headline or "–" }}</b> (chosen on the validation split; the test split is scored once){{ trained }}.
{% if headline_n is not none %}Test split: {{ headline_n }} images.{% endif %}
{% if card %}The <a href="{{ card }}">model card</a> gives its intended use and limits, and the study's choices made after
earlier runs' test scores had been seen.{% endif %}</p>
<table><tr><th>model</th>{% for split in ["val", "test"] %}<th>{{ split }} accuracy</th><th>{{ split }} balanced accuracy</th>{% endfor %}</tr>
{% for row in rows %}<tr{% if row.baseline %} class="note"{% endif %}><td>{{ row.name }}{% if row.headline %} ★{% endif %}</td>
{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for note in notes %}<p class="note"><sup>{{ loop.index }}</sup> {{ note[0]|upper }}{{ note[1:] }}.</p>{% endfor %}
{% for run, reason in (metrics.skipped or {}).items() %}<p class="note">Not in the table: <b>{{ run }}</b> was skipped. {{ reason }}</p>{% endfor %}
{% else %}<p class="note">No metrics yet: notebook 06 has not run in this folder.</p>{% endif %}
{% for figure, caption in figures %}<figure><img src="{{ figure }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>{% endfor %}

<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>commit</th><th>CPU</th><th>files</th></tr>
{% for run in notebooks %}<tr><td>{{ run.name }}</td><td class="{{ run.status.replace(' ', '-') }}">{{ run.status }}</td>
<td>{{ "%.1f s"|format(run.seconds) }}</td><td><code>{{ run.commit or "–" }}</code></td><td>{{ run.cpu or "–" }}</td><td>{% if run.outputs %}<a href="{{ run.outputs.html }}">HTML</a> ·
<a href="{{ run.outputs.notebook }}">ipynb</a>{% endif %}</td></tr>
{% endfor %}</table>
<p class="note">Regenerate with <code>{{ regenerate }}</code>.</p>
</body></html>
""")


def _how_trained(metrics: dict) -> str:
    """``": refit on train+val, 128 px, 6 epochs (how chosen)"`` for the headline, from what metrics.json has."""
    scores = metrics.get("models", {}).get(metrics.get("headline"), {})
    if scores.get("members"):
        return f": the average of {', '.join(scores['members'])} ({scores.get('kind')})"
    parts = [scores.get("kind"), scores.get("image_size") and f"{scores['image_size']} px",
             scores.get("epochs") and f"{scores['epochs']} epochs"]
    text = ", ".join(str(part) for part in parts if part)
    if text and scores.get("epochs_chosen_by"):
        text += f"\n({scores['epochs_chosen_by']})"
    return f": {text}" if text else ""


def _note_mark(note: str | None, notes: list[str]) -> str:
    """A footnote mark for ``note`` (added to ``notes`` the first time): each distinct note is numbered once."""
    if not note:
        return ""
    if note not in notes:
        notes.append(note)
    return f"<sup>{notes.index(note) + 1}</sup>"


def _score_table(metrics: dict) -> tuple[list[dict], list[str]]:
    """The index page's table rows (runs, then baselines) and their footnotes.

    A missing split or score shows as "–". A score with a ``note`` (e.g. a refit's validation score,
    which is on its own training data) gets a footnote mark; each distinct note is listed once.
    """
    rows, notes = [], []
    for baseline, group in ((False, metrics.get("models", {})), (True, metrics.get("baselines", {}))):
        for name, scores in group.items():
            cells = []
            for split in ("val", "test"):
                values = scores.get(split) or {}
                mark = _note_mark(values.get("note"), notes)
                cells += [_pct(values.get("accuracy")) + mark, _pct(values.get("balanced_accuracy")) + mark]
            rows.append({"name": name, "headline": name == metrics.get("headline"), "baseline": baseline,
                         "cells": cells})
    return rows, notes


def write_index(output_dir: Path, log: dict) -> Path:
    """``index.html``: the headline metrics, the key figures and links to every notebook."""
    output_dir = Path(output_dir)
    figures = [(f"figures/{name}{suffix}", caption) for name, caption in HEADLINE_FIGURES.items()
               for suffix in (CHART_SUFFIX, PHOTO_SUFFIX) if (output_dir / "figures" / f"{name}{suffix}").exists()]
    failed = next((run["error"] for run in log["notebooks"] if run["status"] == "failed"), "")
    metrics = load_json(output_dir / METRICS_FILE)
    models = metrics.get("models", {})
    rows, notes = _score_table(metrics) if models else ([], [])
    page = _INDEX_TEMPLATE.render(
        metrics=metrics, figures=figures, failed=failed, notes=notes, trained=_how_trained(metrics), rows=rows,
        headline_n=((models.get(metrics.get("headline")) or {}).get("test") or {}).get("n"),
        commits=sorted({run["commit"] for run in log["notebooks"] if run.get("commit")}),
        card=MODEL_CARD_FILE if (output_dir / MODEL_CARD_FILE).exists() else None,
        regenerate=regenerate_command(log["profile"], output_dir), **log,
    )
    path = output_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def regenerate_command(profile: str, output_dir: Path) -> str:
    """The ``run_all.py`` command that writes this report again, into the same folder."""
    from .config import REPORTS_DIR, display_path

    command = f"python run_all.py --profile {profile}"
    if Path(output_dir).resolve() != (REPORTS_DIR / profile).resolve():
        command += f" --output-dir {display_path(output_dir)}"
    return command


MODEL_CARD_FILE = "MODEL_CARD.md"
README_BEGIN = "<!-- results:begin (written by run_all.py --profile full from reports/full/metrics.json) -->"
README_END = "<!-- results:end -->"


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _with_ci(scores: dict, key: str) -> str:
    pair = scores.get("ci95", {}).get(key)
    return _pct(scores.get(key)) + (f" ({_pct(pair[0])}–{_pct(pair[1])})" if pair else "")


def _training_cost(splits: dict) -> str:
    if splits.get("members"):  # an average trains nothing; its models' rows have their cost
        return f"average of {len(splits['members'])} runs"
    seconds = splits.get("train_seconds")
    if seconds is None:
        return "–"
    return f"{splits.get('epochs')} in {seconds / 60:.1f} min"


def training_minutes(report_dir: Path) -> dict[str, dict]:
    """Where notebook 05's training time went, from its records: ``{group: {"minutes", "runs"}}``, one group per
    model family (its train-only, random-split, forward and refit runs together), then the ablations and the
    seed repeats of ``improved``. Averages (their models' records count) and records without a training time
    (skipped models) count nothing."""
    from .ablation import is_repeat, load_records
    from .profiles import ALL_MODELS

    report_dir = Path(report_dir)
    models = [(record.get("config", {}).get("model", path.stem), path.stem, record)
              for folder in ("runs", SELECTION_RUNS) for path in sorted((report_dir / folder).glob("*.json"))
              for record in [load_json(path)]]
    models.sort(key=lambda item: (ALL_MODELS.index(item[0]) if item[0] in ALL_MODELS else len(ALL_MODELS), item[1]))
    variants = [(REPEATS_GROUP if is_repeat(name) else ABLATIONS_GROUP, name, record)
                for name, record in load_records(report_dir).items()]
    groups: dict[str, dict] = {}
    for group, name, record in models + variants:  # the study's models in its order, then the ablations
        if record.get("train_seconds") is None or record.get("config", {}).get("members"):
            continue  # an average's record sums its models' seconds, which their own records already count
        entry = groups.setdefault(group, {"minutes": 0.0, "runs": []})
        entry["minutes"] += record["train_seconds"] / 60
        entry["runs"].append(name)
    return groups


ABLATIONS_GROUP, REPEATS_GROUP = "ablations", "seed repeats of improved"
SELECTION_RUNS = "selection"  # notebook 05's records of runs that only choose a setting; never scored on test


def budget_sentence(run_log: dict, notebooks: list[str] | None = None) -> str:
    """Whether the report's wall time is inside its profile's budget (``budget_minutes`` in its log); empty
    when the profile has none, a notebook of the report did not finish, or the report lacks one of
    ``notebooks`` (the study's, by file name: a part of the study says nothing of the budget). The time judged
    is the one the README gives, the sum of every notebook's latest run (rendering each to HTML adds seconds,
    not minutes)."""
    budget = run_log.get("budget_minutes")
    ran = {run.get("name") for run in run_log.get("notebooks", [])}
    if (budget is None or any(run.get("status") != "ok" for run in run_log.get("notebooks", []))
            or not ran.issuperset(notebooks or [])):
        return ""
    minutes = run_log["total_seconds"] / 60
    verdict = "inside" if minutes <= budget else "over"
    return f"That is {verdict} the profile's budget of {budget:g} minutes."


def time_markdown(report_dir: Path, run_log: dict) -> str:
    """A paragraph on where the run's time went (:func:`training_minutes`) and what it would have taken
    without the ablations and seed repeats; empty when the run has no training records."""
    groups = training_minutes(report_dir)
    if not groups:
        return ""
    parts = []
    for group, entry in groups.items():
        count = len(entry["runs"])
        if group in (ABLATIONS_GROUP, REPEATS_GROUP):
            named = group if count > 1 else {ABLATIONS_GROUP: "ablation", REPEATS_GROUP: "seed repeat of improved"}[group]
            parts.append(f"the {count} {named}: {entry['minutes']:.1f}")
        else:
            parts.append(f"`{group}`: {entry['minutes']:.1f} ({count} run{'s' if count > 1 else ''}: "
                         f"{', '.join(entry['runs'])})")
    total = run_log["total_seconds"] / 60
    optional = sum(groups.get(group, {}).get("minutes", 0.0) for group in (ABLATIONS_GROUP, REPEATS_GROUP))
    text = (f"Training time in this run, in minutes, from notebook 05's records: {'; '.join(parts)}; "
            f"{sum(entry['minutes'] for entry in groups.values()):.1f} in all, of the profile's {total:.1f}.")
    if optional:
        text += (f" Without the ablations and seed repeats the profile would have taken about "
                 f"{total - optional:.0f} minutes.")
    return text


# The figures others published, each a footnoted row above the runs: metrics.json key, row, trained on, footnote.
CLAIM_ROWS = (
    ("seed_claim", "seed claim (blog)", "random 80/20 split",
     "the seed blog's own figures, on its random 80/20 split: not scores on this study's official test split"),
    ("quick_cnn_claim", "quick CNN claim (brief)", "train only",
     "the study brief's figures for a quick batch-norm + global-pooling CNN fitted on train at 128 px, on the "
     "official test split; `quick_cnn` is this study's reading of it"),
)


MAJORITY = "majority class"  # the baseline row of always giving the evaluated split's commonest label
TARGETS = {"accuracy": 0.98, "balanced_accuracy": 0.97}  # issue 3: the improved model, official test split
REFIT_SUFFIX = "_refit"  # a run refitted on train+val is named after its train-only run plus this
PREDICTIONS_DIR = "predictions"  # notebook 06's <run>_test.csv: every test image with its P(Surface)
TRAINING_COVERAGE_FILE = "training_coverage.json"  # notebook 01's record of what training covers (study.training_coverage)


def runs_built_on(metrics: dict, model: str) -> list[str]:
    """The runs of ``model``: the model itself, its refit and every average that includes either."""
    return [run for run, splits in metrics.get("models", {}).items()
            if {model, model + REFIT_SUFFIX} & set(splits.get("members") or [run])]


def _scores_named(test: dict, keys) -> str:
    """``"72.6% accuracy and 79.2% balanced accuracy"``."""
    return _words([f"{_pct(test[key])} {key.replace('_', ' ')}" for key in keys])


def _against(value: float, other: float) -> str:
    return "level with" if round(value, 4) == round(other, 4) else "below" if value < other else "above"


def _verdict(test: dict, targets: dict[str, float]) -> str:
    """Which targets a run's test scores reach."""
    missed = [key for key, target in targets.items() if test[key] < target]
    if not missed:
        return "reached" if len(targets) == 1 else "every target reached"

    def short(key: str) -> str:  # e.g. 0.9696 shows as 97.0%, the target's own figure
        return f" (just short: {100 * test[key]:.2f}%)" if _pct(test[key]) == _pct(targets[key]) else ""

    if len(missed) == len(targets) and not any(short(key) for key in missed):
        return "missed" if len(targets) == 1 else "every target missed"
    return _words([f"{key.replace('_', ' ')} missed{short(key)}" for key in missed])


def seed_runs(runs: dict) -> list[str]:
    """The seed models' train-only runs among ``runs`` (``metrics["models"]``), not averages that include one."""
    return [run for run, splits in runs.items()
            if run.startswith("seed_") and splits.get("kind") == "train only" and not splits.get("members")]


def _seed_sentence(metrics: dict, model: str) -> str:
    """``model`` against the seed models' train-only runs (not averages that include one), on test accuracy."""
    runs = metrics["models"]
    seeds = seed_runs(runs)
    if not seeds:
        return ""
    accuracy = runs[model]["test"]["accuracy"]
    places = {run: _against(accuracy, runs[run]["test"]["accuracy"]) for run in seeds}
    text = (f"Trained on train alone like `{model}`, {_words([f'`{run}`' for run in seeds])} "
            f"score{'s' if len(seeds) == 1 else ''} {_words([_pct(runs[run]['test']['accuracy']) for run in seeds])} "
            "test accuracy")
    if len(set(places.values())) == 1:
        everyone = "it" if len(seeds) == 1 else "both" if len(seeds) == 2 else f"all {len(seeds)}"
        return f"{text}: `{model}` is {places[seeds[0]]} {everyone}."
    return f"{text}: `{model}` is " + _words([f"{place} {_words([f'`{run}`' for run in seeds if places[run] == place])}"
                                              for place in dict.fromkeys(places.values())]) + "."


def _points(value: float) -> str:
    points = round(100 * value, 1)
    return "0.0" if points == 0 else f"{points:+.1f}".replace("-", "−")


def _known(value) -> bool:
    return value is not None and math.isfinite(value)


def _paired_sentence(metrics: dict, model: str) -> str:
    """How firm the comparisons above are: ``metrics["test_differences"]`` (runs scored before it have none).
    An interval that holds 0, or that could not be drawn, leaves the order open."""
    paired = metrics.get("test_differences", {})
    if paired.get("model") != model or not paired.get("against"):
        return ""
    unit = paired.get("unit", "image")
    shown, open_orders = [], []
    for other, result in paired["against"].items():
        low, high = result.get("ci95") or (None, None)
        name = (f"always answering {paired.get('majority_answer', 'the majority label')}" if other == MAJORITY
                else f"`{other}`")
        difference = f"{_points(result['difference'])} points" if _known(result.get("difference")) else "no figure"
        interval = f"{_points(low)} to {_points(high)}" if _known(low) and _known(high) else "no interval"
        shown.append(f"{name} {difference} ({interval})")
        if not (_known(low) and _known(high)) or low <= 0 <= high:
            open_orders.append(name)
    if not open_orders:
        verdict = (" No interval holds 0 (for these trained models: another training seed could land elsewhere, "
                   "which this check does not cover).")
    elif len(open_orders) == 1:
        verdict = (f" The interval for {open_orders[0]} holds 0 or could not be drawn: that order could be chance "
                   f"in which {unit}s the test split holds.")
    else:
        verdict = (f" The intervals for {_words(open_orders)} hold 0 or could not be drawn: those orders could be "
                   f"chance in which {unit}s the test split holds.")
    return (f"How firm that order is: `{model}`'s test accuracy minus each of the others', with a 95% interval "
            f"from a paired bootstrap resampling whole {unit}s: {_words(shown)}.{verdict}")


def targets_markdown(metrics: dict, model: str = "improved", targets: dict[str, float] = TARGETS) -> str:
    """The targets in words, from ``metrics.json``: what ``model``'s runs scored on test against them, against
    always giving the majority answer and against the seed models' train-only runs, and the best test figures
    that any run of the study reached. Empty when ``model`` was not scored."""
    runs = metrics.get("models", {})
    if model not in runs:
        return ""
    wanted = _words([f"{_pct(target)} {key.replace('_', ' ')}" for key, target in targets.items()])
    lines = [f"**The targets.** The study asks `{model}` for at least {wanted} on the official test split."]
    for run in runs_built_on(metrics, model):
        lines.append(f"`{run}` ({runs[run].get('kind')}) scores {_scores_named(runs[run]['test'], targets)}: "
                     f"{_verdict(runs[run]['test'], targets)}.")
    own_test, own_val = runs[model]["test"], runs[model]["val"]
    majority = metrics.get("baselines", {}).get(MAJORITY, {}).get("test", {})
    if majority.get("accuracy") is not None:
        lines.append(f"`{model}`'s test accuracy is {_against(own_test['accuracy'], majority['accuracy'])} the "
                     f"{_pct(majority['accuracy'])} of always answering {majority.get('answer', 'the majority label')}.")
    if seeds := _seed_sentence(metrics, model):
        lines.append(seeds)
    if paired := _paired_sentence(metrics, model):
        lines.append(paired)
    if own_val.get("note") is None and own_val["accuracy"] > own_test["accuracy"]:  # a note: val was trained on
        lines.append(f"On validation `{model}` scored {_pct(own_val['accuracy'])} accuracy: it lost "
                     f"{100 * (own_val['accuracy'] - own_test['accuracy']):.1f} points between the validation sols "
                     "and the test sols.")
    best = {key: max(runs, key=lambda run: runs[run]["test"][key]) for key in targets}
    for run in dict.fromkeys(best.values()):
        keys = [key for key, chosen in best.items() if chosen == run]
        members = runs[run].get("members")
        lines.append(f"The best test {_words([key.replace('_', ' ') for key in keys])} of any run: `{run}` "
                     f"({runs[run].get('kind')}{', the headline' if run == metrics.get('headline') else ''}"
                     f"{', an average of ' + _words([f'`{member}`' for member in members]) if members else ''}), "
                     f"{_scores_named(runs[run]['test'], targets)}.")
    return " ".join(lines)


def load_training_coverage(report_dir: Path | None) -> list[dict]:
    """Notebook 01's ``training_coverage.json`` in ``report_dir``; empty when it is not there."""
    return (load_json(Path(report_dir) / TRAINING_COVERAGE_FILE) or []) if report_dir is not None else []


def _coverage_view(views: list[dict], training: str, evaluated: str = "test") -> dict | None:
    return next((view for view in views if (view["training"], view["evaluated"]) == (training, evaluated)), None)


def _rare_groups_words(view: dict, shown: int = 3) -> str:
    """``"wheel · Mastcam left (156 test images, 4 in train), ..."``: the largest rarely trained groups."""
    groups = view["groups"]
    named = [f"*{group['group']}* ({group['n']} {view['evaluated']} images, {group['trained_on']} in "
             f"{view['training']})" for group in groups[:shown]]
    more = len(groups) - shown
    return ", ".join(named) + (f" and {more} smaller group{'s' if more > 1 else ''}" if more > 0 else "")


def _rare_accuracy_words(metrics: dict, run: str) -> str:
    """``"`improved` got 62.6% of its 721 rarely trained test images right and 84.9% of the other 584 (on
    validation, ...)"``: each split's counts are the run's own, from the images it was scored on."""
    splits = metrics.get("models", {}).get(run, {})

    def parts(split: str) -> tuple[str, str] | None:
        coverage = splits.get(split, {}).get("by_training_coverage")
        if not coverage or coverage["rare"]["accuracy"] is None or coverage["rest"]["accuracy"] is None:
            return None
        rare, rest = coverage["rare"], coverage["rest"]
        return f"{_pct(rare['accuracy'])} of its {rare['n']}", f"{_pct(rest['accuracy'])} of the other {rest['n']}"

    if (test := parts("test")) is None:
        return ""
    val = parts("val")
    return (f"`{run}` got {test[0]} rarely trained test images right and {test[1]}"
            + (f" (on validation, {val[0]} and {val[1]})" if val else ""))


def coverage_markdown(views: list[dict], metrics: dict | None = None, target: float = TARGETS["accuracy"]) -> str:
    """What the test split asks of a model, from notebook 01's ``training_coverage.json``: the share of its
    images whose group (MSL class x instrument) training barely holds, and the accuracy on them that
    ``target`` needs; with ``metrics``, what ``improved`` and the headline got on them. Empty without views."""
    from .evaluation import accuracy_needed_on_rare

    train_only, refit = _coverage_view(views, "train"), _coverage_view(views, "train+val")
    if train_only is None or not train_only["n"]:
        return ""

    def needed(view: dict) -> str:
        return _pct(accuracy_needed_on_rare(target, view["share"]))

    scored = ((metrics or {}).get("models", {}).get((metrics or {}).get("headline"), {}).get("test") or {}).get("n")
    sample = (f"In the whole data set (notebook 01 counts every image; this run scored a sample of {scored} test "
              "images), " if scored is not None and scored != train_only["n"] else "")
    lines = [f"**What the test split asks.** {sample}{train_only['rare']} of the test split's {train_only['n']} images "
             f"({_pct(train_only['share'])}) are of an MSL class × instrument group with fewer than "
             f"{train_only['fewer_than']} images in train"]
    if train_only["rare"]:
        lines[0] += (f": {_rare_groups_words(train_only)}. Even with every other test image right, a model trained on "
                     f"train alone reaches {_pct(target)} test accuracy only if it gets at least {needed(train_only)} "
                     "of these right.")
    else:
        lines[0] += "."
    if (val := _coverage_view(views, "train", "val")) is not None and val["n"]:
        lines.append(f"Validation, which chooses every model, has {val['rare']} of its {val['n']} images "
                     f"({_pct(val['share'])}) in groups as rare in train, against the test split's "
                     f"{_pct(train_only['share'])}.")
    if refit is not None and refit["rare"]:
        lines.append(f"For a refit on train+val, {refit['rare']} test images ({_pct(refit['share'])}) are of such "
                     f"groups, and on the same terms it needs at least {needed(refit)} of them right.")
    if metrics:
        runs = list(dict.fromkeys(["improved", "improved" + REFIT_SUFFIX, metrics.get("headline", "")]))
        if said := [words for run in runs if (words := _rare_accuracy_words(metrics, run))]:
            lines.append(f"In this run, {'; '.join(said)}.")
    return " ".join(lines)


def cpu_and_architecture(cpu_model: str | None, architecture: str) -> str:
    """``"AMD EPYC (x86_64)"``, or the architecture alone where the CPU model is not known."""
    return f"{cpu_model} ({architecture})" if cpu_model else architecture


def interval_caveat(split_scores: dict) -> str:
    """A sentence on intervals that resampled single images (older records): too narrow for this split."""
    if not split_scores.get("ci95") or split_scores.get("ci95_unit", "image") != "image":
        return ""
    return ("Intervals that resample single images are too narrow here: one sol's images are often frames of one "
            "scene, so they are not independent draws (notebook 06 of a newer run resamples whole sols).")


def interval_words(split_scores: dict) -> str:
    """What a split's 95% bootstrap intervals resampled, in words (``ci95_unit``; records older than it
    resampled images); "no intervals" when it has none."""
    if not split_scores.get("ci95"):
        return "no intervals"
    unit = split_scores.get("ci95_unit", "image")
    if unit == "image":
        return "95% bootstrap intervals, resampling images"
    clusters = split_scores.get("ci95_clusters")
    return f"95% bootstrap intervals, resampling whole {unit}s{f' ({clusters} in this split)' if clusters else ''}"


def headline_markdown(metrics: dict) -> str:
    """Why a refit is the headline rather than the train-only run validation chose, and where its number
    of epochs came from; empty when the headline is not a refit."""
    headline, chosen, runs = metrics.get("headline", ""), metrics.get("best_on_val"), metrics.get("models", {})
    if not chosen or headline != chosen + REFIT_SUFFIX or headline not in runs:
        return ""
    text = (f"**Why a refit is the headline.** Validation chose `{chosen}`, trained on train alone. The rule, set "
            f"before any test score, then puts its refit on train+val in its place: the refit has also trained on "
            f"the validation sols, which lie nearer the test split's and, like them, are mostly MAHLI. Both are "
            f"reported")
    if chosen in runs:
        text += f"; trained on train alone, `{chosen}` scores {_scores_named(runs[chosen]['test'], TARGETS)} on test"
    epochs_by: dict[str, list[str]] = {}
    for member in runs[headline].get("members") or [headline]:
        if how := runs.get(member, {}).get("epochs_chosen_by"):
            epochs_by.setdefault(how, []).append(member)
    sources = "; ".join((f"for {_words([f'`{member}`' for member in members])}, " if runs[headline].get("members")
                         else "") + f"the {how}" for how, members in epochs_by.items())
    if sources:
        text += f". Epochs of the refit: {sources}"
    return text + "."


def results_markdown(metrics: dict, run_log: dict | None = None, report_dir: Path | None = None,
                     notebooks: list[str] | None = None) -> str:
    """The study's results as a Markdown table, from ``metrics.json`` (and the run log's timing; with
    ``report_dir``, where the training time went; with ``notebooks``, the study's, whether the log covers
    them all, as a verdict on the budget needs)."""
    headline_test = metrics["models"][metrics["headline"]]["test"]
    lines = [
        f"Profile `{metrics.get('profile')}`, commit `{metrics.get('commit')}`; headline model "
        f"**{metrics['headline']}** (selection: {metrics.get('selection', 'validation')}). "
        f"Test split: official, by sol. In brackets: {interval_words(headline_test)}."
        + (f" {caveat}" if (caveat := interval_caveat(headline_test)) else ""),
        "",
        "| run | trained on | val accuracy | val balanced acc. | test accuracy | test balanced acc. | test ROC-AUC "
        "| epochs, training time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    notes: list[str] = []
    for key, label, trained_on, note in CLAIM_ROWS:
        if claim := metrics.get(key):
            mark = _note_mark(note, notes)
            claimed = [claim.get(split, {}).get(score) for split in ("val", "test")
                       for score in ("accuracy", "balanced_accuracy")]
            cells = " | ".join("–" if value is None else f"{_pct(value)}{mark}" for value in claimed)
            lines.append(f"| {label} | {trained_on} | {cells} | – | – |")
    for run, splits in metrics["models"].items():
        star = " ★" if run == metrics["headline"] else ""
        mark = _note_mark(splits["val"].get("note"), notes)
        lines.append(f"| {run}{star} | {splits.get('kind', '')} | {_pct(splits['val']['accuracy'])}{mark} | "
                     f"{_pct(splits['val']['balanced_accuracy'])}{mark} | {_with_ci(splits['test'], 'accuracy')} | "
                     f"{_with_ci(splits['test'], 'balanced_accuracy')} | {_pct(splits['test'].get('roc_auc'))} | "
                     f"{_training_cost(splits)} |")
    for name, splits in metrics.get("baselines", {}).items():
        lines.append(f"| {name} ({splits['test'].get('answer', '')}) | – | {_pct(splits['val']['accuracy'])} | "
                     f"{_pct(splits['val']['balanced_accuracy'])} | {_pct(splits['test']['accuracy'])} | "
                     f"{_pct(splits['test']['balanced_accuracy'])} | – | – |")
    if notes:
        lines.append("\n" + "\n\n".join(f"<sup>{number}</sup> {note[0].upper()}{note[1:]}."
                                       for number, note in enumerate(notes, 1)))
    if why := headline_markdown(metrics):
        lines.append(f"\n{why}")
    if targets := targets_markdown(metrics):
        lines.append(f"\n{targets}")
    if asked := coverage_markdown(load_training_coverage(report_dir), metrics):
        lines.append(f"\n{asked}")
    for run, reason in metrics.get("skipped", {}).items():
        lines.append(f"\n`{run}` was skipped: {reason}{'' if reason.endswith('.') else '.'}")
    if behind := behind_profile_sentence(metrics, report_dir):
        lines.append(f"\n**Older than the profile.** {behind}")
    if run_log:
        # a run older than its profile is judged for what it did, not for what the profile now asks
        took = "This run took" if behind else "The whole profile took"
        budget = budget_sentence(run_log, notebooks)
        budget = budget[:-1] + ", for what this run did." if behind and budget else budget
        # the CPU type decides the seeded runs' last bits
        machine = cpu_and_architecture(metrics.get("cpu", {}).get("model_name"),
                                       metrics.get("processor") or "this machine")
        lines.append(f"\n{took} {run_log['total_seconds'] / 60:.0f} minutes on "
                     f"{machine} with {metrics.get('cpu_count')} CPU cores "
                     f"({metrics.get('platform', '')}), peak kernel memory {run_log.get('peak_rss_gib')} GiB."
                     + (f" {budget}" if budget else "")
                     + (f" {elsewhere}" if (elsewhere := run_elsewhere_sentence(run_log, metrics)) else "")
                     + (f" {policy}" if (policy := numeric_policy_sentence(metrics)) else ""))
        if report_dir is not None and (breakdown := time_markdown(report_dir, run_log)):
            lines.append(f"\n{breakdown}")
    return "\n".join(lines)


def behind_profile_sentence(metrics: dict, report_dir: Path | None) -> str:
    """What the run's profile, as the code now defines it, asks for and the run's records lack (a report run
    before the profile grew): runs of its models, refits, ablations and seed repeats; empty when none is missing,
    the profile is unknown or there is no report folder to look in."""
    from .ablation import repeat_name
    from .profiles import PROFILES

    settings = PROFILES.get(metrics.get("profile"))
    if settings is None or report_dir is None:
        return ""
    scored = set(metrics.get("models", {})) | set(metrics.get("skipped", {}))
    recorded = {path.stem for path in (Path(report_dir) / "ablations").glob("*.json")}
    lacking = [f"a run of `{model}`" for model in settings["models"] if model not in scored]
    lacking += [f"the refit of `{name}`" for name in ("+".join(sorted(name.split("+"))) for name in settings["refit"])
                if name != "best_on_val" and f"{name}{REFIT_SUFFIX}" not in scored]  # an average's name, as saved
    lacking += [f"the ablation `{name}`" for name in settings["ablations"] if name not in recorded]
    lacking += [f"the seed repeat at seed {seed}" for seed in settings["seed_repeats"]
                if seed != settings["seed"] and repeat_name(seed) not in recorded]  # the run's own seed: not repeated
    if not lacking:
        return ""
    profile = metrics["profile"]
    return (f"The `{profile}` profile, as the code now defines it, also asks for what this run's records lack: "
            f"{', '.join(lacking[:-1]) + ' and ' if len(lacking) > 1 else ''}{lacking[-1]}. Rerunning the whole "
            f"profile (`python run_all.py --profile {profile}`, every run trained again) produces "
            f"{'them' if len(lacking) > 1 else 'it'}.")


def run_elsewhere_sentence(run_log: dict, metrics: dict) -> str:
    """Which notebooks last ran on another CPU than the one that scored the models (metrics.json's), as a
    partial rerun can; empty when none did, or when the log does not say (entries from before it did)."""
    from .provenance import cpu_label

    scored_on = cpu_label(metrics.get("cpu") or {})
    by_cpu: dict[str, list[dict]] = {}
    for run in run_log.get("notebooks", []):
        if scored_on and run.get("cpu") and run["cpu"] != scored_on:
            by_cpu.setdefault(run["cpu"], []).append(run)
    parts = []
    for cpu, runs in by_cpu.items():
        named = ", ".join(f"{run['name'].split('_')[0]} ({duration(run['seconds'])})" for run in runs)
        parts.append(f"notebook{'s' if len(runs) > 1 else ''} {named} last ran on {cpu}")
    return f"Of that time, {'; '.join(parts)}." if parts else ""


def numeric_policy_sentence(metrics: dict) -> str:
    """The Keras dtype policies the scored runs trained under (the CPU decides it in the ``full`` profile);
    empty when the runs did not record one."""
    policies: dict[str, list[str]] = {}
    trained = {run: scores for run, scores in metrics.get("models", {}).items() if not scores.get("members")}
    for run, scores in trained.items():  # an average trained nothing itself
        if scores.get("numeric_policy"):
            policies.setdefault(scores["numeric_policy"], []).append(run)
    if len(policies) == 1:
        unrecorded = [run for run, scores in trained.items() if not scores.get("numeric_policy")]
        return (f"{'Every run' if not unrecorded else 'Every run that recorded one'} trained under Keras' "
                f"`{next(iter(policies))}` dtype policy.")
    return ("The runs trained under Keras' dtype policies " + "; ".join(
        f"`{policy}` ({', '.join(runs)})" for policy, runs in policies.items()) + ".") if policies else ""


def duration(seconds: float) -> str:
    """``"42 s"`` under two minutes, else ``"7 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def replace_section(path: Path, begin: str, end: str, body: str) -> bool:
    """Replace the text between the ``begin`` and ``end`` marker lines of ``path``; False if absent."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}", encoding="utf-8")
    return True


def update_readme(readme: Path, metrics: dict, run_log: dict | None = None, report_dir: Path | None = None,
                  notebooks: list[str] | None = None) -> bool:
    """Replace the README's results section with :func:`results_markdown`."""
    return replace_section(readme, README_BEGIN, README_END, results_markdown(metrics, run_log, report_dir, notebooks))


def _error_groups_markdown(test: dict) -> str:
    """The model card's bullet on the MSL class and instrument with most test errors, beside its training support."""
    groups = [group for group in test.get("largest_error_groups", []) if group["errors"]]
    if not groups:
        return ""
    rows = "\n".join(f"  | {g['group']} | {g['n']} | {g['errors']} ({_pct(g['share_of_errors'])}) | {g['trained_on']} |"
                     for g in groups)
    return ("- **Where its test errors are**, by MSL class and instrument, beside the images of each it was trained on\n"
            "  (notebook 06 has the whole table):\n\n"
            "  | class · instrument | test images | errors (share of all) | trained on |\n"
            f"  | --- | --- | --- | --- |\n{rows}\n")


def _loss_weighting_markdown(scores: dict, evidence: dict | None = None) -> str:
    """How the headline's training loss answered the instrument shortcut, from its run's configuration,
    and whether the ablations could tell the group weighting from plain cross-entropy (``evidence``)."""
    if scores.get("member_loss_weighting"):  # an average of runs
        weighting = {"instrument x label groups": "weighted over instrument × label groups",
                     "labels": "balanced over the labels only", "none": "unweighted"}
        losses = "; ".join(f"{member}: {weighting.get(how, how)}"
                           for member, how in scores["member_loss_weighting"].items())
        grouped = "instrument x label groups" in scores["member_loss_weighting"].values()
        text = (f" Its models' training losses ({losses}): only weighting over instrument × label groups "
                "is aimed at that shortcut, and none removes it.")
    elif scores.get("group_weights"):
        weights = ", ".join(f"{group} {weight:.2f}" for group, weight in
                            sorted(scores["group_weights"].items(), key=lambda item: -item[1]))
        grouped = True
        text = (" Its training loss weighted each instrument × label group of the images it was fitted on "
                f"against that shortcut ({weights}), which does not remove it.")
    elif scores.get("class_weight"):
        return " Its training loss balanced the two labels only, which leaves that shortcut open."
    else:
        return " Its training loss was not weighted, which leaves that shortcut open."
    from .ablation import HELPS, HURTS, NO_SCORE, PLACE_WORDS

    plain = {variant["variant"]: variant for variant in (evidence or {}).get("variants", [])}.get("unweighted_loss")
    if grouped and plain and plain["reading"] not in (HELPS, NO_SCORE):
        best, settled = PLACE_WORDS[plain["best_against_seeds"]], PLACE_WORDS[plain["settled_against_seeds"]]
        last = f"the mean of its last {evidence['settled_epochs']} epochs"
        places = (f"{best} the range of `improved`'s seeds on both its best epoch and {last}" if best == settled else
                  f"{best} the range of `improved`'s seeds on its best epoch, and {settled} it on {last}")
        verdict = ("a hint that the group weighting does worse than plain cross-entropy" if plain["reading"] == HURTS
                   else "the group weighting is not shown to beat plain cross-entropy beyond seed noise")
        text += (f" On validation, though, plain cross-entropy (`unweighted_loss`) lies {places} (see *How firm the "
                 f"design is*): {verdict}.")
    return text


def design_evidence(report_dir: Path) -> dict | None:
    """Notebook 05's seed repeats and ablations of ``improved``, read from the report folder
    (``runs/improved.json``, ``ablations/``); None without them."""
    from .ablation import BASE_MODEL, load_records, seed_evidence

    base_path = Path(report_dir) / "runs" / f"{BASE_MODEL}.json"
    if not base_path.exists() or "history" not in (base := load_json(base_path)):
        return None
    return seed_evidence(base, load_records(report_dir))


def _words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _score(value: float) -> str:
    return "diverged" if value != value else f"{value:.3f}"  # NaN: the run has no score


def _design_markdown(evidence: dict | None, side_checks: list[tuple[Path, dict]] = (), run_machine: str = "") -> str:
    """The model card's section on how far the seed repeats let the ablations speak, with ``side_checks``
    (:func:`paired_side_checks`) for the choices the run left unquestioned (its ``improved`` trained on
    ``run_machine``); empty without repeats."""
    from .ablation import HELPS, HURTS, MIXED, NO_EVIDENCE, NO_SCORE, PLACE_WORDS as places

    low, high = (evidence or {}).get("ranges", {}).get("best", (float("nan"),) * 2)
    if low != low or high != high:  # no repeat, or no seed with a score: no yardstick
        return ""
    settled_low, settled_high = evidence["ranges"]["settled"]
    last = evidence["settled_epochs"]
    study, *repeats = evidence["seeds"]
    scored = [seed["best"] for seed in evidence["seeds"] if seed["best"] == seed["best"]]
    others = [seed["best"] for seed in repeats if seed["best"] == seed["best"]]
    at_seeds = (_words([_score(seed["best"]) for seed in repeats])
                + f" at seed{'s' if len(repeats) > 1 else ''} " + _words([str(seed["seed"]) for seed in repeats]))
    rank = ""
    if len(scored) >= 3 and study["best"] == study["best"] and others:
        if study["best"] > max(others) or study["best"] < min(others):
            rank = (f" The study's run is the {'highest' if study['best'] > max(others) else 'lowest'} of the "
                    f"{len(scored)}, and the recipe was chosen on validation at its seed.")
    order = [HELPS, HURTS, MIXED, NO_EVIDENCE, NO_SCORE]
    variants = sorted(evidence["variants"],  # as the table shows them: by reading, then best score first
                      key=lambda v: (order.index(v["reading"]), -v["best"] if v["best"] == v["best"] else 0))
    rows = "\n".join(f"| {v['question']} | `{v['variant']}` | {_score(v['best'])} ({places[v['best_against_seeds']]}) | "
                     f"{_score(v['settled'])} ({places[v['settled_against_seeds']]}) | {v['reading']} |"
                     for v in variants)
    counts = {reading: sum(v["reading"] == reading for v in variants) for reading in order}
    # "Mixed" covers opposite kinds (worse on one view only, better on one view only): say which.
    mixed_kinds = Counter((places[v["best_against_seeds"]], places[v["settled_against_seeds"]])
                          for v in variants if v["reading"] == MIXED)
    mixed_detail = (" (" + "; ".join(f"{n} {best} on the best epoch and {settled} on the last {last}"
                                      for (best, settled), n in mixed_kinds.items()) + ")") if mixed_kinds else ""
    table = (f"""Each ablation changes one design choice and trains once, at the study's seed, judged on validation only.
Each of its two scores is placed below, within or above the range of `improved`'s seeds on the same view: the best
epoch (the study's selection metric) and the mean of the last {last} epochs ({settled_low:.3f} to {settled_high:.3f} over the
seeds), where a run settles. Only when both views agree is a placement read as a hint.

| the choice, and what the variant does instead | variant | best val BA | mean of last {last} | reading |
| --- | --- | --- | --- | --- |
{rows}

How often would chance alone put a variant outside? A further seed of the same recipe would land below the range
1 time in {len(scored) + 1} on either view, and above it 1 time in {len(scored) + 1}. The variants, though, train at the study's seed,
where the recipe's choices were made: a choice kept because it won at that seed puts its variant below on the
best epoch up to 2 times in {len(scored) + 1} by chance. Agreement of the two views is rarer by chance, but they read one
curve, so it is not a second, independent confirmation.
Here {counts[HELPS]} of {len(variants)} read as a hint that the choice helps, {counts[HURTS]} as a hint that it hurts, and
{counts[MIXED]} {"is" if counts[MIXED] == 1 else "are"} mixed{mixed_detail}.{" So no choice of the recipe stands out of seed noise on both views."
                                                       if not counts[HELPS] and not counts[HURTS] else ""}
""" if variants else "")
    return f"""
## How firm the design is
Notebook 05 trained `improved` (this project's own model) again with only the seed changed. Its best validation
balanced accuracy was {_score(study['best'])} at the study's seed {study['seed']}, and {at_seeds}: a range of
{low:.3f} to {high:.3f}.{rank}

{table}
The range is a rough yardstick, not a test: with {len(scored)} seeds, a further run of the same recipe lands outside it
2 times in {len(scored) + 1}.{_unquestioned_markdown(evidence)}{"".join(_side_check_markdown(path, result, run_machine)
                                                                for path, result in side_checks)}
"""


def unquestioned_in(evidence: dict | None) -> list[str]:
    """The recipe's choices that no ablation in ``evidence`` (:func:`design_evidence`) questions."""
    from .ablation import unquestioned_choices

    return unquestioned_choices([variant["variant"] for variant in (evidence or {}).get("variants", [])])


def _unquestioned_markdown(evidence: dict) -> str:
    """The recipe's choices no ablation of this run questioned (reasons, not evidence), as a sentence."""
    left = unquestioned_in(evidence)
    return (f"\n\nNo ablation of this run questions on its own {'; '.join(left)}. Notebook 04 gives reasons for the recipe; for "
            f"{'these choices' if len(left) > 1 else 'this choice'} this run holds no evidence.") if left else ""


def paired_side_checks(metrics: dict, choices: list[str],
                       side_checks_dir: Path | None = None) -> list[tuple[Path, dict]]:
    """The paired ablation side checks (``python -m marsrover.diagnostics ablation --paired``) made with the
    profile of the run that ``metrics`` scored (its profile and commit) that question one of ``choices``: each
    trained the variant and ``improved`` at the same seeds (two or more) on one machine, so they hold evidence
    the run lacks. ``side_checks_dir``: ``config.SIDE_CHECKS_DIR`` unless given."""
    from .ablation import DESIGN_CHOICES

    questioning = {name for choice in choices for name in DESIGN_CHOICES.get(choice, ())}
    found = []
    for path in sorted(Path(side_checks_dir or config.SIDE_CHECKS_DIR).glob("ablation_*_paired.json")):
        result = load_json(path)
        if (result.get("paired") and result.get("improved_ranges") and result.get("ablation") in questioning
                and (result.get("profile"), result.get("run_commit")) == (metrics.get("profile"), metrics.get("commit"))):
            found.append((path, result))
    return found


def _seeds_words(seeds: list) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {_words([str(seed) for seed in seeds])}"


def _run_machine(report_dir: Path) -> str:
    """The CPU (and numeric policy, where recorded) ``improved`` of the run in ``report_dir`` trained on."""
    from .ablation import BASE_MODEL
    from .provenance import recorded_cpu

    record = load_json(Path(report_dir) / "runs" / f"{BASE_MODEL}.json")
    policy = record.get("config", {}).get("numeric_policy")
    return recorded_cpu(record).get("model_name", "a machine not recorded") + (f" in {policy}" if policy else "")


def side_check_machine(result: dict) -> tuple[str | None, list[str]]:
    """The CPU a side check trained on (None where not recorded) and its runs' numeric policies."""
    from .provenance import recorded_cpu

    policies = sorted({run["numeric_policy"] for run in result.get("runs", {}).values() if run.get("numeric_policy")})
    return recorded_cpu(result).get("model_name"), policies


def _side_check_markdown(path: Path, result: dict, run_machine: str) -> str:
    """A paired ablation side check as a paragraph of the model card: where it ran (beside ``run_machine``,
    where the card's run trained), each seed's difference from ``improved`` and how each seed's run reads
    against the range of ``improved``'s seeds in the check."""
    from .ablation import DESIGN_CHOICES, SETTLED_EPOCHS

    name = result["ablation"]
    choice = next(choice for choice, names in DESIGN_CHOICES.items() if name in names)
    differences = result["paired_differences"]
    seeds = [difference["seed"] for difference in differences]
    cpu, policies = side_check_machine(result)
    machine = (cpu or "a machine not recorded") + (f" in {_words(policies)}" if policies else "")
    run_dir = "" if result["run_dir"] == config.display_path(config.REPORTS_DIR / "full") else f" --run-dir {result['run_dir']}"

    def view(key: str) -> str:
        values = [difference[key] for difference in differences]
        scored = [value for value in values if value == value]  # NaN: a diverged run on either side
        mean = (f" (mean {sum(scored) / len(scored):+.3f}"
                + (f" over the {len(scored)} seeds with both scored)" if len(scored) < len(values) else ")")
                if scored else "")
        return _words([f"{value:+.3f}" if value == value else "diverged" for value in values]) + mean

    by_reading: dict[str, list] = {}
    for placed in result.get("placed", []):
        by_reading.setdefault(placed["reading"], []).append(placed["seed"])
    read = "; ".join(f"{_seeds_words(seeds_)} read{'s' if len(seeds_) == 1 else ''} as *{reading}*"
                     for reading, seeds_ in sorted(by_reading.items(), key=lambda item: -len(item[1])))
    ranges = result["improved_ranges"]
    placed = ""
    if read and all(end == end for spread in ranges.values() for end in spread):
        placed = (f" Against the range of `improved`'s seeds in the check ({ranges['best'][0]:.3f} to "
                  f"{ranges['best'][1]:.3f} on the best epoch, {ranges['settled'][0]:.3f} to {ranges['settled'][1]:.3f} "
                  f"on the last {SETTLED_EPOCHS}), placed as the table's variants are: {read}.")
    return f"""

A side check questions {choice}, outside this run: `{config.display_path(path)}` (`python -m
marsrover.diagnostics ablation {name} --seeds {' '.join(str(seed) for seed in seeds)} --paired{run_dir}`, code at
`{result.get('environment', {}).get('commit')}`, with the profile of the run at `{result.get('run_commit')}`) trained
`{name}` and `improved` at {_seeds_words(seeds)}, both on {machine}, judged on validation only. This run trained on
{run_machine}, so the check's scores compare with one another only, not with the table above. The variant minus
`improved` at the same seed: {view('best')} on the best epoch; {view('settled')} on the mean of the last
{SETTLED_EPOCHS} epochs.{placed}"""


def _groups_markdown(metrics: dict) -> str:
    """The model card's table of accuracy per instrument x label group: on validation for the train-only
    run the study chose there, and on test for the headline; empty when ``metrics.json`` has no groups."""
    chosen, headline = metrics.get("best_on_val"), metrics["headline"]
    columns = [(f"`{chosen}` on validation (the choice)", metrics["models"].get(chosen, {}).get("val", {})),
               (f"`{headline}` on test", metrics["models"][headline]["test"])]
    columns = [(title, {g["group"]: g for g in split.get("by_instrument_and_label", [])}) for title, split in columns]
    columns = [(title, groups) for title, groups in columns if groups]
    if not columns:
        return ""
    names = sorted({name for _, groups in columns for name in groups})

    def cell(group: dict | None) -> str:
        return f"{_pct(group['accuracy'])} of {group['n']}" if group else "–"

    rows = "\n".join(f"| {name} | " + " | ".join(cell(groups.get(name)) for _, groups in columns) + " |"
                     for name in names)
    return ("\n## Accuracy per instrument and label\nThe split's shift, group by group: a model can score well on "
            "balanced accuracy while it fails a whole group.\n\n"
            f"| instrument · label | {' | '.join(title for title, _ in columns)} |\n"
            f"| --- |{' --- |' * len(columns)}\n{rows}\n")


def _sol_ranges_markdown(report_dir: Path, metrics: dict) -> str:
    """The model card's table of test accuracy per 100 sols, for the headline and the train-only run validation
    chose, from their test predictions in ``predictions/``; empty without the headline's."""
    import pandas as pd

    from .evaluation import breakdown, sol_ranges

    headline = metrics["headline"]
    frames = {}
    for run in dict.fromkeys((metrics.get("best_on_val"), headline)):
        if run and (path := Path(report_dir) / PREDICTIONS_DIR / f"{run}_test.csv").is_file():
            frame = pd.read_csv(path)
            frames[run] = frame.assign(sol_range=sol_ranges(frame["sol"]))
    if headline not in frames:
        return ""
    tables = {run: breakdown(frame, "sol_range") for run, frame in frames.items()}
    spans = frames[headline].groupby("sol_range")["sol"].agg(["min", "max"])  # the sols the split has in each

    def sols(group: str) -> str:
        first, last = spans.loc[group, "min"], spans.loc[group, "max"]
        return str(first) if first == last else f"{first}–{last}"

    rows = "\n".join(f"| {sols(group)} | {int(row['n'])} | "
                     f"{_pct(row['n_rover'] / row['n'])} | "
                     + " | ".join(_pct(tables[run]["accuracy"].get(group)) for run in frames) + " |"
                     for group, row in tables[headline].iterrows())
    titles = " | ".join(f"`{run}`" + (f" ({kind})" if (kind := metrics["models"].get(run, {}).get("kind")) else "")
                        for run in frames)
    return ("\n## Accuracy by sol range\nThe split is by sol: validation's sols follow train's, and test's follow "
            "validation's. Test accuracy in groups of 100 sols (each row gives the first and last sol the test split "
            "has in it), from each run's test predictions:\n\n"
            f"| sols | test images | Rover share | {titles} |\n| --- | --- | --- |{' --- |' * len(frames)}\n{rows}\n")


def _caveats_markdown(metrics: dict) -> str:
    """The study's choices made after test scores had been seen (notebook 06 tells each), as a list."""
    headline = metrics["headline"]
    scores = metrics["models"][headline]
    caveats = [
        "the rule that sets the refit's number of epochs (forward validation, on validation sols only; a model "
        "that keeps its last epoch refits for its recipe's own epochs) replaced an earlier rule after test scores "
        "had been seen;",
        "the loss balanced over instrument × label groups was suggested by an earlier run's test errors, then "
        "chosen on validation;",
    ]
    if scores.get("members"):
        caveats.append("averaging models was tried after an earlier run's test tables had shown the seed blog "
                       "model right on Mastcam wheel frames where `improved` was wrong; validation then chose "
                       "this average by the study's rule;")
    if any(member.startswith("quick_cnn") for member in scores.get("members") or [headline]):
        caveats.append("`quick_cnn`, the study brief's quick CNN as read here, joined the study after its test "
                       "scores were known, as a reproduction of the brief's figure; validation then chose it by the "
                       "study's rule;")
    runs = [headline, *(scores.get("members") or [])]
    if any(str(metrics["models"].get(run, {}).get("batch_norm_statistics", "")).startswith("recomputed")
           for run in runs):
        caveats.append("a refit ends by recomputing batch normalisation's statistics over its fit images, a choice "
                       "made on validation only but prompted by an earlier run's test score of `quick_cnn_refit`;")
    caveats[-1] = caveats[-1].rstrip(";") + "."
    count = ["Two", "Three", "Four", "Five", "Six"][len(caveats) - 2]
    return f"{count} caveats, each stated in notebook 06:\n" + "\n".join(f"- {caveat}" for caveat in caveats)


def _refit_budget_markdown(metrics: dict) -> str:
    """Which averages the refit budget kept out of the selection where the study ran (notebook 05's record),
    and whether validation would have chosen one of them without it."""
    record = metrics.get("refit_budget") or {}
    averages, budget = record.get("averages") or {}, record.get("budget_minutes")
    if not averages or budget is None:
        return ""
    # An average named in the profile's refit is built and competes whatever it costs.
    left_out = sorted(((name, average) for name, average in averages.items()
                       if not average["competes"] and name not in metrics.get("models", {})),
                      key=lambda item: (-item[1]["val_balanced_accuracy"], item[0]))
    anyway = record.get("refitted_anyway") or []
    whose = (f"its models (less {_words([f'`{name}`' for name in anyway])}, refitted whatever won)" if anyway
             else "its models")
    rule = (f"An average of models competed for the headline only if refitting {whose} was estimated, from "
            f"their train-only runs on the machine that ran the study, to take at most {budget:g} minutes")
    if not left_out:
        return f"\n\n{rule}; {'the one average did' if len(averages) == 1 else f'all {len(averages)} did'}."

    def described(name: str, average: dict) -> str:
        minutes = average["estimated_refit_minutes"]
        cost = "unknown" if minutes is None else f"about {minutes:.0f} min"
        return f"`{name}` (validation balanced accuracy {average['val_balanced_accuracy']:.3f}, refit {cost})"

    text = (f"\n\n{rule}, so which model could be chosen depends on that machine's speed. {len(left_out)} of "
            f"{len(averages)} {'was' if len(left_out) == 1 else 'were'} left out: "
            f"{'; '.join(described(name, average) for name, average in left_out)}.")
    chosen = metrics.get("best_on_val")
    # the score the choice was made on, from notebook 05's record where it has one (rounded to 4 digits, as
    # are those it is compared with): notebook 06 scores an average through its saved model, which resizes
    # inside, so its score can differ in the last digits. A single model chosen has no entry there: its
    # validation score in notebook 06 is the one its kept epoch was chosen on.
    score = (averages.get(chosen) or {}).get("val_balanced_accuracy")
    if score is None:
        score = metrics.get("models", {}).get(chosen, {}).get("val", {}).get("balanced_accuracy")
    if score is None:
        return text
    # study.best_on_validation's order: the higher score, then the first name A-Z
    better = [name for name, average in left_out
              if (-average["val_balanced_accuracy"], name) < (-round(score, 4), chosen)]
    return text + (f" Without the budget, validation would have chosen `{better[0]}` over `{chosen}`: what that "
                   "machine could afford decided the headline." if better else
                   f" None ranked above `{chosen}`, the choice, so the budget did not change it.")


def _calibration_cell(scores: dict) -> str:
    """The card's ECE: as scored, and after temperature scaling where validation was left to fit one on."""
    test = scores["test"]
    if test.get("ece") is None or test["ece"] != test["ece"]:  # none, or NaN
        return "–"
    if test.get("temperature") is None:
        why = ": validation was part of this model's training data" if "train+val" in scores.get("kind", "") else ""
        return f"{test['ece']:.3f} (no temperature scaling{why})"
    return f"{test['ece']:.3f}; {test['ece_after_temperature']:.3f} after temperature scaling (T = {test['temperature']:.2f}, fitted on validation)"


def write_model_card(report_dir: Path, metrics: dict) -> Path:
    """``MODEL_CARD.md`` beside the report: use, data, metrics with intervals, limits."""
    headline = metrics["headline"]
    scores = metrics["models"][headline]
    test = scores["test"]
    kept = test.get("at_confidence") or {}
    evidence = design_evidence(report_dir)
    side_checks = paired_side_checks(metrics, unquestioned_in(evidence)) if evidence else []
    asked = coverage_markdown(load_training_coverage(report_dir), metrics)
    paragraphs = [text for text in (headline_markdown(metrics), targets_markdown(metrics), asked) if text]
    targets = "".join(f"\n\n{text}" for text in paragraphs) + ("\n" if paragraphs else "")
    # the card's numbers that metrics.json does not hold: the data set's, fixed or counted by notebook 01
    data_counts = "under *Data* and *Limits*" + (
        f", and those under *What the test split asks* (notebook 01's `{TRAINING_COVERAGE_FILE}`)" if asked else "")
    from .provenance import code_commit

    written_by = ("" if code_commit() == metrics.get("commit")
                  else f" This card's text was written by the code at `{code_commit()}`.")
    by_sol = _sol_ranges_markdown(report_dir, metrics)
    caveat_block = f"\n{caveat}\n" if (caveat := interval_caveat(test)) else ""
    sources = "".join([", or, under *How firm the design is* and in the loss sentence under *Limits*, from its `runs/`\nand "
                       "`ablations/`" + (" (and the side checks named there)" if side_checks else "") if evidence else "",
                       f"{', and,' if evidence else ', or,'} under *Accuracy by sol range*, from its `{PREDICTIONS_DIR}/`"
                       if by_sol else ""])
    chosen_by = f" ({scores['epochs_chosen_by']})" if scores.get("epochs_chosen_by") else ""
    if scores.get("members"):
        what = (f"the average of the probabilities of {' and '.join(scores['members'])} ({scores.get('kind')}); "
                f"it takes {scores.get('image_size')} px images and resizes them for each model's own size, so a "
                "smaller model sees a resized copy, not its own decode of the image, and the average's P(Surface) differs a "
                "little from the mean of its models' P(Surface) on their own decodes (notebook 05 has each model's recipe "
                "and epochs)")
    else:
        what = f"{scores.get('kind')}, at\n{scores.get('image_size')} px, for {scores.get('epochs')} epochs{chosen_by}"
    behind = f"- **Older than the profile.** {words}\n" if (words := behind_profile_sentence(metrics, report_dir)) else ""
    card = f"""# Model card: {headline}

*Generated by `run_all.py --profile {metrics.get('profile')}` at commit `{metrics.get('commit')}`; every number
below comes from `metrics.json` in this folder{sources}, apart from the data set's fixed counts and shares
{data_counts}.{written_by}*

## Intended use
Sorting raw Mars rover camera images into **Rover** (the rover's own hardware: wheels, deck, arm, instruments,
calibration targets) and **Surface** (terrain: ground, horizon, drill holes), to filter the daily downlink for
planetary scientists and hobbyists. It is a triage aid, not a catalogue: check uncertain images (P(Surface)
between 0.2 and 0.8, the `Uncertain` folder of `marsrover sort`) by eye.

## Data
Curiosity (MSL) *Mars surface image labeled data set*, Stanboli & Wagstaff 2017 (DOI 10.5281/zenodo.1049137):
browse images (about 256 px) from Mastcam left/right and MAHLI, 25 classes mapped to two labels, official
split by sol: train 3746, validation 1640, test 1305 images. This model: {what}.

## Metrics (official test split, n = {test['n']}; {interval_words(test)})
| metric | value |
| --- | --- |
| accuracy | {_with_ci(test, 'accuracy')} |
| balanced accuracy | {_with_ci(test, 'balanced_accuracy')} |
| macro F1 | {_pct(test.get('macro_f1'))} |
| ROC-AUC | {_pct(test.get('roc_auc'))} |
| PR-AUC (Surface) | {_pct(test.get('pr_auc'))} |
| Brier score | {test.get('brier', float('nan')):.3f} |
| expected calibration error of P(Surface), 10 bins | {_calibration_cell(scores)} |
| recall Rover / Surface | {_pct(test.get('recall', {}).get('Rover'))} / {_pct(test.get('recall', {}).get('Surface'))} |
| kept at confidence ≥ {kept.get('threshold', 0.9)} (coverage, accuracy) | {_pct(kept.get('coverage'))}, {_pct(kept.get('accuracy'))} |
{caveat_block}
The majority answer ("{metrics['baselines'][MAJORITY]['test'].get('answer')}") scores
{_pct(metrics['baselines'][MAJORITY]['test']['accuracy'])} accuracy and 50% balanced accuracy on the
same split.{targets}
Every model was chosen by its validation score, every design choice an ablation questioned was judged there, and
every number of epochs was set either by validation or, for a recipe that keeps its last epoch, by that recipe; the
study's test split was scored once per final model, and no setting was chosen on a test score. But some of the ideas that validation
then judged were prompted by test scores of earlier runs, so these test figures are not a clean held-out
estimate. {_caveats_markdown(metrics)}{_refit_budget_markdown(metrics)}
{_groups_markdown(metrics)}{by_sol}{_design_markdown(evidence, side_checks, _run_machine(report_dir) if side_checks else '')}
## Limits
{behind}- **The split shifts.** Train is mostly Mastcam and about 70% Surface; validation and test are mostly MAHLI
  close-ups and the test split is 75% Rover. In train the instrument predicts the label (Mastcam frames mostly
  Surface, only 52 MAHLI Surface images).{_loss_weighting_markdown(scores, evidence)} Scores on other instruments (Navcam, Hazcam, Mars 2020's cameras)
  or other rovers are unknown; label a sample with the notebook-02 labeler and let notebook 06 score it.
- **Browse images only**: small JPEGs; full-resolution frames are resized the same way but were never tested.
- **No sun images.** The class list has a *sun* class, but no image in any split carries it: the model has
  never seen the sun, and this project's mapping (everything but drill holes, ground and horizon is Rover)
  would file such a picture under Rover.
- A random 80/20 split (the seed's protocol) overstates accuracy: see the leakage study in notebook 06.
{_error_groups_markdown(test)}"""
    path = Path(report_dir) / MODEL_CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path
