"""Figures: photographs are stored and shown as JPEG, charts as PNG, so the committed report stays small."""

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from marsrover import plots


def _photograph_grid():
    rng = np.random.default_rng(0)
    return plots.image_grid([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)],
                            [f"image {i}" for i in range(6)], columns=3)


def _chart():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 1, 4])
    return fig


def test_a_figure_of_photographs_is_saved_as_jpeg_and_a_chart_as_png(tmp_path):
    photo_path = plots.save_fig(_photograph_grid(), "samples", tmp_path)
    chart_path = plots.save_fig(_chart(), "curve", tmp_path)
    assert photo_path == tmp_path / "samples.jpg" and Image.open(photo_path).format == "JPEG"
    assert chart_path == tmp_path / "curve.png" and Image.open(chart_path).format == "PNG"
    plt.close("all")


def test_saving_a_figure_replaces_its_file_in_the_other_format(tmp_path):
    (tmp_path / "samples.png").write_bytes(b"left by an earlier version")
    plots.save_fig(_photograph_grid(), "samples", tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["samples.jpg"]
    plt.close("all")


@pytest.fixture()
def ipython_shell():
    """An IPython shell, as a notebook's kernel has; removed afterwards so no other test sees it."""
    from IPython.core.interactiveshell import InteractiveShell

    yield InteractiveShell.instance()
    InteractiveShell.clear_instance()


def test_notebooks_show_photographs_inline_as_jpeg_and_charts_as_png(ipython_shell):
    shell = ipython_shell
    plots.setup_notebook()
    formatter = shell.display_formatter
    photo, _ = formatter.format(_photograph_grid())
    chart, _ = formatter.format(_chart())
    assert "image/jpeg" in photo and "image/png" not in photo
    assert "image/png" in chart and "image/jpeg" not in chart
    assert base64.b64decode(photo["image/jpeg"])[:2] == b"\xff\xd8"  # a JPEG's start-of-image marker
    plt.close("all")
