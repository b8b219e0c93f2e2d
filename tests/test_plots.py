"""Figures: photographs are stored and shown as JPEG, charts as PNG, so the committed report stays small."""

import json
import os
import subprocess
import sys
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pytest
import seaborn as sns
from PIL import Image

from marsrover import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _photograph_grid():
    rng = np.random.default_rng(0)
    return plots.image_grid([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)],
                            [f"image {i}" for i in range(6)], columns=3)


def _chart():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4])
    return fig


def test_figures_drawing_images_anywhere_count_as_photographs_and_heatmaps_as_charts():
    assert plots.draws_images(_photograph_grid())
    inset = _chart()
    inset.axes[0].inset_axes([0.6, 0.6, 0.3, 0.3]).imshow(np.zeros((4, 4, 3)))
    assert plots.draws_images(inset)
    assert not plots.draws_images(_chart())
    heatmap, ax = plt.subplots()
    sns.heatmap([[5, 1], [1, 3]], annot=True, ax=ax)  # how the confusion matrices are drawn
    assert not plots.draws_images(heatmap)


def test_a_figure_of_photographs_is_saved_as_jpeg_and_a_chart_as_png(tmp_path):
    photo_path = plots.save_fig(_photograph_grid(), "samples", tmp_path)
    chart_path = plots.save_fig(_chart(), "curve", tmp_path)
    assert photo_path == tmp_path / "samples.jpg" and Image.open(photo_path).format == "JPEG"
    assert chart_path == tmp_path / "curve.png" and Image.open(chart_path).format == "PNG"


def test_saving_a_figure_replaces_its_file_in_the_other_format(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"left by an earlier version")
    (tmp_path / "curve.jpg").write_bytes(b"left by an earlier version")
    plots.save_fig(_photograph_grid(), "samples", tmp_path)
    plots.save_fig(_chart(), "curve", tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curve.png", "samples.jpg"]


def test_a_figure_that_cannot_be_saved_keeps_the_earlier_file(tmp_path, monkeypatch):
    (tmp_path / "samples.png").write_bytes(b"the earlier report's figure")
    figure = _photograph_grid()
    monkeypatch.setattr(figure, "savefig", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        plots.save_fig(figure, "samples", tmp_path)
    assert (tmp_path / "samples.png").read_bytes() == b"the earlier report's figure"


# In a kernel of its own: the inline backend resets IPython's figure formatters when it is first
# loaded, which is process-wide state, and that is the case setup_notebook must survive.
_NOTEBOOK_SESSION = textwrap.dedent("""
    import json
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell("from marsrover import plots; plots.setup_notebook()")
    shell.run_cell("import numpy as np; import matplotlib.pyplot as plt")
    formats = {}
    for name, source in {"photographs": "plots.image_grid([np.zeros((8, 8, 3), 'uint8')] * 2, ['a', 'b'])",
                         "chart": "fig, ax = plt.subplots(); ax.plot([1, 2]); fig"}.items():
        figure = shell.run_cell(source).result
        data, _ = shell.display_formatter.format(figure)
        formats[name] = sorted(key for key in data if key.startswith("image/"))
    print(json.dumps(formats))
""")


def test_notebooks_show_photographs_inline_as_jpeg_and_charts_as_png(tmp_path):
    environment = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline", "IPYTHONDIR": str(tmp_path)}
    shown = subprocess.run([sys.executable, "-c", _NOTEBOOK_SESSION], env=environment, capture_output=True,
                           text=True, check=True, timeout=120)
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == {"photographs": ["image/jpeg"], "chart": ["image/png"]}


def test_figures_of_runs_the_study_no_longer_has_are_removed_and_the_rest_kept(tmp_path):
    kept = [plots.save_fig(_chart(), "confusion_matrix", tmp_path),
            plots.save_fig(_chart(), "confusion_matrix_normalised", tmp_path),
            plots.save_fig(_chart(), "confusion_matrix_improved", tmp_path)]
    vanished = [plots.save_fig(_chart(), "confusion_matrix_seed_blog", tmp_path),
                plots.save_fig(_photograph_grid(), "confusion_matrix_old_photo", tmp_path)]
    other_family = [plots.save_fig(_chart(), "confusion_matrices_elsewhere", tmp_path),
                    plots.save_fig(_photograph_grid(), "gradcam_seed_blog", tmp_path)]
    (tmp_path / "confusion_matrix_notes.txt").write_text("not a figure")

    removed = plots.remove_stale_figures(tmp_path, "confusion_matrix", kept)

    assert sorted(removed) == sorted(vanished)
    assert all(path.exists() for path in kept + other_family)
    assert (tmp_path / "confusion_matrix_notes.txt").exists()


def test_seed_repeats_are_drawn_as_grey_dashes_behind_coloured_variants():
    histories = {"improved": {"val_balanced_accuracy": [0.8, 0.9]}, "improved, seed 1": {"val_balanced_accuracy": [0.7, 0.85]},
                 "flip_only": {"val_balanced_accuracy": [0.6, 0.8]}}
    fig = plots.validation_curves(histories, background=["improved, seed 1"])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["improved, seed 1"].get_color() == "grey" and lines["improved, seed 1"].get_linestyle() == "--"
    assert len({lines["improved"].get_color(), lines["flip_only"].get_color(), "grey"}) == 3
    assert lines["improved"].get_linewidth() > lines["flip_only"].get_linewidth()  # the chosen recipe stands out


def test_a_normalised_confusion_matrix_can_carry_each_cells_count_under_its_share():
    confusion = [[90, 10], [5, 15]]
    shares = [text.get_text() for text in plots.confusion_heatmap(confusion, title="t", normalize=True).axes[0].texts]
    assert shares == ["0.90", "0.10", "0.25", "0.75"]
    both = plots.confusion_heatmap(confusion, title="t", normalize=True, with_counts=True)
    assert [text.get_text() for text in both.axes[0].texts] == ["0.90\n(90)", "0.10\n(10)", "0.25\n(5)", "0.75\n(15)"]
    counts = plots.confusion_heatmap(confusion, title="t")
    assert [text.get_text() for text in counts.axes[0].texts] == ["90", "10", "5", "15"]


def test_an_example_caption_carries_its_note_under_the_prediction():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    fig = plots.example_predictions(images, [0, 1], [0.9, 0.8], notes=["7 errors in its sequence", ""])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["true: Rover\npred: Surface (90%)\n7 errors in its sequence", "true: Surface\npred: Surface (80%)"]
    with pytest.raises(ValueError):  # a note for each image, or none
        plots.example_predictions(images, [0, 1], [0.9, 0.8], notes=["one"])


def test_saving_keeps_a_grids_constrained_layout_without_a_warning(tmp_path, recwarn):
    fig = _photograph_grid()
    plots.save_fig(fig, "grid", tmp_path)
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert not [w for w in recwarn if "layout" in str(w.message)]
